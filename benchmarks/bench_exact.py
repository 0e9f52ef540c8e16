"""Exact TV (Darbon–Sigelle dichotomy): our Numba grid max-flow vs the same dichotomy on PyMaxflow.

The PyMaxflow variant is what a user would write: one ``maxflow.Graph`` per round over the whole
image, ``add_grid_edges`` (capacity β·w inside a group of pixels sharing an interval, 0 across
groups) and ``add_grid_tedges`` (the level cost plus β·w per neighbour already known to lie
above/below), the per-round arrays computed with vectorised NumPy.  Both produce exact
minimisers; the energies are printed to show they agree.

Ours runs with one thread and with two (``exact.THREADS``), alternating with PyMaxflow (one
thread), so that neither ratio is all parallelism.  Then: the peak memory of one solve per voxel
(160³ uint8, a fresh process, as ``bench_memory.py``), and the chunked exact solve
(:mod:`napari_tv._exact_chunked`) on the 128³ volume against the in-memory one.

Run: ``python benchmarks/bench_exact.py [--quick]`` (or through ``benchmarks/bench.py``);
``--quick`` skips the 128³ rows and the chunked solve.
"""

from __future__ import annotations

import time

import numpy as np

from napari_tv.operators import level_grid, neighbour_offsets, resolve_weights, tv_energy
from napari_tv.solvers.exact import solve_exact


def _slopes(v, x0, x1, fidelity):
    """Secant slope (f(x1) - f(x0)) / (x1 - x0), vectorised (±inf where Poisson forbids)."""
    if fidelity == "l2":
        return 0.5 * (x0 + x1) - v
    if fidelity == "l1":
        return np.clip((x0 + x1 - 2.0 * v) / (x1 - x0), -1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 1.0 - v * (np.log(x1) - np.log(np.where(x0 > 0, x0, 1.0))) / (x1 - x0)
    s = np.where(v == 0, 1.0, s)
    return np.where((x0 < 0) | ((x0 == 0) & (v > 0)), -np.inf, s)


def _pair_slices(o, shape):
    """(slices of s, slices of s + o) over the pairs with both ends inside."""
    a = tuple(slice(max(-c, 0), n - max(c, 0)) for c, n in zip(o, shape, strict=True))
    b = tuple(slice(max(c, 0), n + min(c, 0)) for c, n in zip(o, shape, strict=True))
    return a, b


def pymaxflow_dichotomy(image, beta, *, fidelity="l2", connectivity=1, weights=None,
                        levels=None):  # fmt: skip
    """The same exact dichotomy, one PyMaxflow graph per round. Returns (u, rounds)."""
    import maxflow

    v = np.asarray(image, dtype=np.float64)
    grid = level_grid(image, levels)
    offs = neighbour_offsets(v.ndim, connectivity)
    bw = beta * resolve_weights(v.ndim, connectivity, weights)
    lo = np.zeros(v.shape, dtype=np.int64)
    hi = np.full(v.shape, len(grid) - 1, dtype=np.int64)
    rounds = 0
    while (und := lo < hi).any():
        rounds += 1
        m = (lo + hi) // 2
        mm = np.minimum(m, len(grid) - 2)
        a = np.where(und, _slopes(v, grid[mm], grid[mm + 1], fidelity), 0.0)
        g = maxflow.Graph[float]()
        ids = g.add_grid_nodes(v.shape)
        total = 0.0
        for o, w in zip(offs, bw, strict=True):
            s, t = _pair_slices(o, v.shape)
            same = und[s] & (lo[s] == lo[t])
            cap = np.zeros(v.shape)
            cap[s] = np.where(same, w, 0.0)
            total += 2 * cap.sum()
            structure = np.zeros((3,) * v.ndim)
            structure[tuple(np.asarray(o) + 1)] = 1.0
            g.add_grid_edges(ids, weights=cap, structure=structure, symmetric=True)
            t_above = lo[t] > hi[s]  # t's interval lies above s's
            s_above = lo[s] > hi[t]
            a[s] += np.where(und[s], w * (s_above.astype(float) - t_above), 0.0)
            a[t] += np.where(und[t], w * (t_above.astype(float) - s_above), 0.0)
        finite = np.isfinite(a)
        big = 2.0 * (total + np.abs(a[finite]).sum()) + 1.0
        a = np.where(finite, a, np.sign(a) * big)
        g.add_grid_tedges(ids, np.maximum(-a, 0.0), np.maximum(a, 0.0))
        g.maxflow()
        below = g.get_grid_segments(ids)  # sink side: u <= grid[m]
        lo = np.where(und & ~below, m + 1, lo)
        hi = np.where(und & below, m, hi)
    return grid[lo], rounds


def _best_of_interleaved(fns, repeat):
    """Best-of-``repeat`` seconds of several functions timed alternately (fair under load)."""
    best, out = [np.inf] * len(fns), [None] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            out[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best, out


def _cases(include_3d: bool):
    import skimage.data

    from napari_tv._sample_data import microscopy_3d, noisy_camera

    camera = skimage.data.camera()
    cam256 = noisy_camera(seed=0)[::2, ::2]
    ds = {1.0: 1.56, 2.0: 2.24, 3.0: 2.84}  # Darbon–Sigelle 2005, Pentium 4 3 GHz, 512² Lena
    for beta in (1.0, 2.0, 3.0):
        kw = {"fidelity": "l1", "connectivity": 1, "weights": 0.26}
        yield f"camera 512² L1 βw={0.26 * beta:.2f}", camera, beta, kw, 5, ds[beta]
    yield "camera 256² L2 β=20", cam256, 20.0, {"fidelity": "l2", "levels": 256}, 5, None
    yield "camera 256² L2 β=20 conn 2", cam256, 20.0, {"fidelity": "l2", "connectivity": 2,
                                                      "levels": 256}, 5, None  # fmt: skip
    vol64 = microscopy_3d(shape=(64, 64, 64), seed=0)[0]
    for conn in (1, 2):
        yield (f"microscopy 64³ L2 β=2 conn {conn}", vol64, 2.0,
               {"fidelity": "l2", "levels": 256, "connectivity": conn}, 3, None)  # fmt: skip
    if include_3d:
        vol = microscopy_3d(shape=(128, 128, 128), seed=0)[0]
        for conn in (1, 2):
            yield (f"microscopy 128³ L2 β=2 conn {conn}", vol, 2.0,
                   {"fidelity": "l2", "levels": 256, "connectivity": conn}, 1, None)  # fmt: skip


def _threads(n, fn):
    """``fn`` with the exact solver on ``n`` threads."""
    from napari_tv.solvers import exact

    def run():
        saved, exact.THREADS = exact.THREADS, n
        try:
            return fn()
        finally:
            exact.THREADS = saved

    return run


def bytes_per_voxel(shape="160x160x160", dtype="uint8") -> float:
    """Peak RSS growth of one exact solve per voxel, in a fresh process (``bench_memory``)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_memory import CHILD

    out = subprocess.run([sys.executable, "-c", CHILD, "exact", "l2", dtype, shape],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])["measured"]


def chunked_row() -> None:
    """The chunked exact solve of the 128³ volume (default blocks, threads) vs in memory."""
    import dask.array as da

    from napari_tv._exact_chunked import solve_exact_chunked
    from napari_tv._sample_data import microscopy_3d

    vol = microscopy_3d(shape=(128, 128, 128), seed=0)[0]
    t0 = time.perf_counter()
    ref = solve_exact(vol, 2.0, fidelity="l2", levels=256)
    t_mem = time.perf_counter() - t0
    for chunks in (None, 64, (64, 128, 128)):  # None: it fits, so it is solved at once
        t0 = time.perf_counter()
        res = solve_exact_chunked(da.from_array(vol, chunks=64), 2.0, fidelity="l2",
                                  levels=256, chunks=chunks)  # fmt: skip
        t_ch = time.perf_counter() - t0
        blocks = "x".join(str(max(c)) for c in res.chunks)
        undecided = " → ".join(str(h["undecided"]) for h in res.history) or "-"
        how = "at once (fits)" if res.extra["in_memory"] else f"blocks {blocks}"
        print(f"chunked exact, microscopy 128³ L2 β=2, {how}, overlap {res.extra['overlap']}: "
              f"{res.rounds} passes (undecided after each: {undecided}), "
              f"{res.extra['remainder_voxels']} voxels solved at once; {t_ch:.2f} s vs "
              f"{t_mem:.2f} s in memory ({t_ch / t_mem:.2f}x); energy {res.energy:.10g} / "
              f"{ref.energy:.10g}; certified {res.converged}", flush=True)  # fmt: skip


def main(include_3d: bool = True) -> list:
    """Print the side-by-side table (seconds, best of a few alternating runs).

    ``include_3d=False`` (``--quick``) skips the 128³ volume (minutes with PyMaxflow)."""
    solve_exact(np.arange(12.0).reshape(3, 4), 1.0, levels=4)  # compile / load the cache
    rows = []
    header = (f"{'case':32s} {'L':>4s} {'rounds':>6s} {'1 thread':>9s} {'2 threads':>9s} "
              f"{'PyMaxflow':>10s} {'ratio 1t':>8s} {'ratio 2t':>8s} {'D-S 2005':>8s}  "
              "energies (ours / PyMaxflow)")  # fmt: skip
    print(header)
    print("-" * len(header))
    for name, img, beta, kw, repeat, ds in _cases(include_3d):
        def ours(img=img, beta=beta, kw=kw):
            return solve_exact(img, beta, **kw)

        (t1, t2, t_pmf), (res, _, (u_pmf, _)) = _best_of_interleaved(
            [_threads(1, ours), _threads(2, ours),
             lambda img=img, beta=beta, kw=kw: pymaxflow_dichotomy(img, beta, **kw)],
            repeat,
        )  # fmt: skip
        e_pmf = tv_energy(u_pmf, np.asarray(img, dtype=np.float64), beta,
                          fidelity=kw["fidelity"], connectivity=kw.get("connectivity", 1),
                          weights=kw.get("weights"))  # fmt: skip
        ds_txt = f"{ds:8.2f}" if ds else f"{'':8s}"
        print(f"{name:32s} {len(res.extra['levels']):4d} {res.n_iter:6d} {t1:9.3f} {t2:9.3f} "
              f"{t_pmf:10.3f} {t_pmf / t1:8.2f} {t_pmf / t2:8.2f} {ds_txt}  "
              f"{res.energy:.10g} / {e_pmf:.10g}", flush=True)  # fmt: skip
        rows.append((name, t1, t2, t_pmf))
    print(f"\nmemory: {bytes_per_voxel():.1f} B per voxel (peak RSS growth of one solve, 160³ "
          "uint8, L2, levels = the 50 integer values)", flush=True)  # fmt: skip
    if include_3d:
        chunked_row()
    return rows


if __name__ == "__main__":
    import sys

    main(include_3d="--quick" not in sys.argv)
