"""Iterative solvers: Chambolle against scikit-image, time to a gap, memory traffic.

Run: ``.venv/bin/python benchmarks/bench_iterative.py`` (or through ``benchmarks/bench.py``).

1. ``denoise_tv(method="chambolle")`` against ``skimage.restoration.denoise_tv_chambolle`` at
   equal iterations and dtype (float32), scikit-image's own stop disabled (``eps=0``:
   ``|E_prev - E| < 0`` never holds, so it runs ``max_num_iter`` dual updates; we run the same
   number with ``tol=0``).  Measured alternately, median of nine repetitions; ours with the
   default Numba threads and with one thread; glibc told to keep freed memory
   (``freed_memory_kept``), the state in which scikit-image is fastest.
2. Time to a relative duality gap of 1e-4 for every iterative method, on the 2-D sample.
3. Effective memory traffic of a Chambolle iteration next to ``np.copyto`` bandwidth.
   Bytes-per-iteration model (2-D/3-D: one fused pass per ``L = SWEEP_LEVELS`` iterations,
   ``_chambolle_sweep.FusedDualSweep``; the per-slab w buffers stay in cache): a pass reads ``p``
   (K N) and ``v`` (N) and writes ``p`` (K N): ``(2K + 1) N / L`` values per iteration (K =
   ndim components), times the item size.  Copy bandwidth counts read + write.
4. The fused sweep alone (``FusedDualSweep.step``) in Gvoxel-iterations per second for
   several iterations per pass (``levels``) and chunk sizes (3-D: voxels per chunk of rows of
   a slab; 2-D: voxels per slab of rows), measured alternately (median of rounds): the
   evidence for the defaults ``SWEEP_LEVELS``, ``SWEEP_CHUNK``, ``SWEEP_SLAB_2D`` and
   ``SWEEP_ROW_2D``.
5. The same sweep on one thread with its buffers placed at several byte offsets from a page
   boundary: the evidence for ``SWEEP_W_OFFSET`` (4K aliasing).
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import time

import numba
import numpy as np

from napari_tv.solvers import denoise_tv
from napari_tv.solvers._chambolle_sweep import (
    SWEEP_CHUNK,
    SWEEP_LEVELS,
    SWEEP_ROW_2D,
    SWEEP_SLAB_2D,
    SWEEP_W_OFFSET,
    FusedDualSweep,
)
from napari_tv.solvers._stencils import CHAMBOLLE, inv_steps


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _side_by_side(fns, repeat=3):
    """Median times of several callables, measured alternately (each warmed up once)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def _one_thread(fn):
    def run():
        old = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            fn()
        finally:
            numba.set_num_threads(old)

    return run


def _mallopt(mmap_threshold: int, trim_threshold: int) -> bool:
    """glibc's ``mallopt`` for both thresholds; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(
            libc.mallopt(m_mmap_threshold, mmap_threshold)
            and libc.mallopt(m_trim_threshold, trim_threshold)
        )
    except (OSError, AttributeError, TypeError):  # not glibc
        return False


@contextlib.contextmanager
def freed_memory_kept():
    """glibc only: keep freed memory in the heap (no mmap for blocks up to 32 MiB, no trimming
    below 64 MiB) inside the block; yields whether that applied.  scikit-image allocates its
    temporaries afresh at every iteration; in glibc's default state each 1 MiB temporary is a
    fresh mapping whose pages fault in (about 4 us per 4 KiB page here), and its 512² call
    took 0.42-0.54 s instead of 0.20-0.25 s.  Our sweep maps its own storage, so without this
    setting scikit-image would be measured in its slow state.  Afterwards glibc's default
    thresholds (128 KiB) are set again (its own adjustment of them stays off)."""
    kept = _mallopt(32 << 20, 64 << 20)
    try:
        yield kept
    finally:
        if kept:
            _mallopt(128 << 10, 128 << 10)


def chambolle_vs_skimage(cases=(((512, 512), 200), ((128, 128, 128), 100)), repeat=9):
    from skimage.restoration import denoise_tv_chambolle

    rows = []
    rng = np.random.default_rng(0)
    for shape, n in cases:
        v = rng.random(shape, dtype=np.float32)
        weight = 0.1

        def ours(v=v, weight=weight, n=n):
            return denoise_tv(v, weight, method="chambolle", tol=0.0, max_num_iter=n)

        def sk(v=v, weight=weight, n=n):
            return denoise_tv_chambolle(v, weight=weight, eps=0.0, max_num_iter=n)

        with freed_memory_kept() as kept:
            t_ours, t_one, t_sk = _side_by_side([ours, _one_thread(ours), sk], repeat)
        assert ours().dtype == np.float32 and sk().dtype == np.float32
        rows.append((shape, n, t_sk, t_ours, t_one))
    print("\n## Chambolle vs scikit-image, equal iterations, float32\n")
    print(f"Numba threads: {numba.get_num_threads()} (threading layer {numba.threading_layer()})")
    print(
        "glibc keeps freed memory while this table is measured "
        "(``freed_memory_kept``: scikit-image at its fastest): "
        f"{'yes' if kept else 'no'}\n"
    )
    print("| shape | iterations | skimage [s] | ours [s] | ratio | ours 1 thread [s] | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for shape, n, t_sk, t_ours, t_one in rows:
        print(
            f"| {'x'.join(map(str, shape))} | {n} | {t_sk:.3f} | {t_ours:.3f} | "
            f"{t_sk / t_ours:.1f}x | {t_one:.3f} | {t_sk / t_one:.1f}x |"
        )
    return rows


def time_to_gap(tol=1e-4, beta=None, max_num_iter=10000):
    from napari_tv._sample_data import microscopy_2d

    noisy, _ = microscopy_2d((256, 256), seed=0)
    noisy = noisy.astype(np.float32)
    beta = float(0.1 * noisy.max()) if beta is None else beta
    methods = ["chambolle", "primal_dual", "gradient_descent", "bregman"]
    print(
        f"\n## Time to a relative duality gap < {tol:g} (256x256 float32 sample, beta={beta:.3g})\n"
    )
    print("| method | iterations | time [s] | converged | final gap | energy |")
    print("|---|---:|---:|---|---:|---:|")
    rows = []
    for method in methods:
        try:
            denoise_tv(noisy[:32, :32], beta, method=method, tol=0.0, max_num_iter=20)  # compile
            t0 = time.perf_counter()
            _, res = denoise_tv(
                noisy, beta, method=method, tol=tol, max_num_iter=max_num_iter, return_info=True
            )
            elapsed = time.perf_counter() - t0
        except (ImportError, ValueError) as err:  # a method not available here
            print(f"| {method} | - | - | - | - | ({type(err).__name__}: {err}) |")
            continue
        rows.append((method, res.n_iter, elapsed, res.converged, res.gap, res.energy))
        print(
            f"| {method} | {res.n_iter} | {elapsed:.3f} | {res.converged} | {res.gap:.2e} | "
            f"{res.energy:.6g} |"
        )
    return rows


def memory_traffic(cases=(((512, 512), 200), ((128, 128, 128), 100)), repeat=3):
    big = np.random.default_rng(1).random(1 << 23, dtype=np.float32)  # 32 MiB
    dst = np.empty_like(big)
    t_copy = _median_time(lambda: np.copyto(dst, big), 7)
    copy_bw = 2 * big.nbytes / t_copy / 1e9
    print("\n## Effective memory traffic of a Chambolle iteration (float32)\n")
    print(f"np.copyto bandwidth (read + write, {big.nbytes >> 20} MiB): {copy_bw:.1f} GB/s\n")
    print("| shape | bytes / iteration | ms / iteration | GB/s | fraction of copy bandwidth |")
    print("|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for shape, n in cases:
        v = rng.random(shape, dtype=np.float32)
        k = len(shape)
        # one pass per SWEEP_LEVELS iterations reads and writes p (k values) and reads v
        bytes_per_iter = (2 * k + 1) * v.size * v.itemsize / SWEEP_LEVELS
        denoise_tv(v, 0.1, method="chambolle", tol=0.0, max_num_iter=2)
        t = _median_time(
            lambda v=v, n=n: denoise_tv(v, 0.1, method="chambolle", tol=0.0, max_num_iter=n),
            repeat,
        )
        # subtract the fixed costs (allocation, final energy) measured with 0 iterations
        t0 = _median_time(
            lambda v=v: denoise_tv(v, 0.1, method="chambolle", tol=0.0, max_num_iter=0), repeat
        )
        per_iter = max(t - t0, 1e-12) / n
        bw = bytes_per_iter / per_iter / 1e9
        print(
            f"| {'x'.join(map(str, shape))} | {bytes_per_iter / 1e6:.1f} MB | "
            f"{per_iter * 1e3:.2f} | {bw:.1f} | {bw / copy_bw:.2f} |"
        )


def _sweep_rates(sweeps, n, size, rounds):
    """Gvoxel-iterations/s of each sweep's ``step(n)``: one warm-up step each, then the median
    of ``rounds`` rounds that alternate between the sweeps."""
    for sw in sweeps:
        sw.step(n)  # compile, warm up
    times = [[] for _ in sweeps]
    for _ in range(rounds):
        for i, sw in enumerate(sweeps):
            t0 = time.perf_counter()
            sw.step(n)
            times[i].append(time.perf_counter() - t0)
    return [size * n / float(np.median(t)) / 1e9 for t in times]


def sweep_settings(
    cases=(((512, 512), 400), ((128, 128, 128), 40)),
    settings=((1, None), (2, None), (3, None), (4, None), (5, None), (6, None), (8, None),
              (5, 1024), (5, 4096), (5, 1 << 15)),
    rounds=7,
):  # fmt: skip
    """Gvoxel-iterations/s of ``FusedDualSweep.step(n)`` for (levels, chunk) settings."""
    print("\n## The fused Chambolle sweep: iterations per pass and chunk size (float32)\n")
    print(
        f"Gvoxel-iterations per second, median of {rounds} alternating rounds, "
        f"{numba.get_num_threads()} threads; defaults: levels={SWEEP_LEVELS}; 3-D, "
        f"chunk={SWEEP_CHUNK} voxels per chunk of rows of a slab; 2-D, one row per slab "
        f"(w and update in one loop) for rows of at least {SWEEP_ROW_2D} voxels, else slabs "
        f"of rows up to {SWEEP_SLAB_2D} voxels (a 2-D chunk=N: slabs of N / row length "
        "rows).\n"
    )
    names = [f"L={lv}" + ("" if ch is None else f", chunk={ch}") for lv, ch in settings]
    print("| shape | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    rows = []
    for shape, n in cases:
        v = np.random.default_rng(0).random(shape, dtype=np.float32)
        tau = 1.0 / (2 * v.ndim)
        sweeps = []
        for levels, chunk in settings:
            p = np.zeros((v.ndim,) + shape, dtype=np.float32)
            ih = inv_steps(None, v.ndim)
            sw = FusedDualSweep(p, v, ih, False, tau, 10.0, CHAMBOLLE, levels=levels, chunk=chunk)
            sweeps.append(sw)
        rates = _sweep_rates(sweeps, n, v.size, rounds)
        rows.append((shape, rates))
        print(f"| {'x'.join(map(str, shape))} | " + " | ".join(f"{r:.2f}" for r in rates) + " |")
    return rows


def _placed(sweep, s_offset, w_offset):
    """Move ``sweep``'s storage and w buffers to ``s_offset`` / ``w_offset`` bytes after a
    4 KiB boundary (copies of the same contents)."""
    for name, offset in (("S", s_offset), ("W", w_offset)):
        old = getattr(sweep, name)
        buf = np.zeros(old.size + 2048, old.dtype)
        start = ((offset - buf.ctypes.data) % 4096) // old.itemsize
        new = buf[start : start + old.size]
        new[:] = old
        setattr(sweep, name, new)
    return sweep


def sweep_placement(
    cases=(((512, 512), 200), ((64, 128, 128), 50)),
    offsets=((0, SWEEP_W_OFFSET), (0, 0), (0, 64), (64, 0), (16, 2048), (16, 64), (16, 2960)),
    rounds=7,
):  # fmt: skip
    """Gvoxel-iterations/s of the sweep on one thread with its storage S and w buffers W placed
    at byte offsets from a page boundary (4K aliasing: ``SWEEP_W_OFFSET``)."""
    print("\n## Placement of the sweep's buffers (4K aliasing), float32, one thread\n")
    print(
        f"Gvoxel-iterations per second, median of {rounds} alternating rounds, for the dual's "
        "storage S and the w buffers W at these byte offsets after a 4 KiB boundary (NumPy "
        "puts large arrays at 16); the sweep's own placement is the first column.\n"
    )
    names = [f"S+{s}, W+{w}" for s, w in offsets]
    print("| shape | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    rows = []
    old_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for shape, n in cases:
            v = np.random.default_rng(0).random(shape, dtype=np.float32)
            ih, tau = inv_steps(None, v.ndim), 1.0 / (2 * v.ndim)
            sweeps = []
            for s_off, w_off in offsets:
                sw = FusedDualSweep(None, v, ih, False, tau, 10.0, CHAMBOLLE)
                sweeps.append(_placed(sw, s_off, w_off))
            rates = _sweep_rates(sweeps, n, v.size, rounds)
            rows.append((shape, rates))
            cells = " | ".join(f"{r:.2f}" for r in rates)
            print(f"| {'x'.join(map(str, shape))} | {cells} |")
    finally:
        numba.set_num_threads(old_threads)
    return rows


def main() -> None:
    print("# Iterative solvers")
    chambolle_vs_skimage()
    time_to_gap()
    memory_traffic()
    sweep_settings()
    sweep_placement()


if __name__ == "__main__":
    main()
