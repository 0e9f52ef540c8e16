"""The chunked solve on dask (issue 17) against the in-memory one, side by side.

Sections (each prints a table; ``all`` runs them in turn):

``speed``    a 256³ float32 volume that fits: in-memory ``denoise_tv`` (primal-dual) against
             ``denoise_tv_chunked`` on the threaded scheduler, for several chunkings and
             iterations per round; the two are alternated (in-memory, chunked, in-memory, ...)
             and the ratio is of medians.  Same iterations, same gap (the iterates are equal).
``workers``  the same chunked solve on 1 and 2 dask threads (numba on one thread per task)
             and on a ``distributed.LocalCluster`` of 1 and 2 worker processes.
``memory``   peak resident memory of a chunked solve with its state on disk, reading a zarr
             volume and writing a zarr result, against the volume's size (fresh process per
             size, 2 rounds + a gap: the peak is reached in the first round).
``rounds``   rounds and time to tol=1e-4 against chunk size and iterations per round (a
             round never runs past a gap evaluation: every 10 iterations for the first 200,
             so more than 10 per round only helps long runs).

Run: ``python benchmarks/bench_chunked.py [speed|workers|memory|rounds|all]`` (all: ~10 min;
``memory`` writes up to 1.3 GB of zarr to a temporary directory).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


def _volume(n: int, dtype=np.float32) -> np.ndarray:
    """A noisy piecewise-constant volume (a ball, a slab, a coarse checkerboard)."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:n, :n, :n]
    clean = (
        ((z - n * 0.3) ** 2 + (y - n * 0.3) ** 2 + (x - n * 0.35) ** 2 < (n * 0.2) ** 2) * 1.0
        + (x > n * 0.5) * 0.5
        + ((x // 16 + y // 16 + z // 16) % 2) * 0.3
    )
    return (clean + 0.2 * rng.standard_normal((n, n, n))).astype(dtype)


def _timed(fn, repeat: int):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def speed(n: int = 256, beta: float = 0.15, repeat: int = 3) -> None:
    import dask.array as da

    from napari_tv import denoise_tv
    from napari_tv.chunked import denoise_tv_chunked

    v = _volume(n)
    _, ref = denoise_tv(v, beta, method="primal_dual", return_info=True)
    print(f"\n## Chunked vs in-memory, {n}³ float32, β={beta}, threads "
          f"(in memory: {ref.n_iter} iterations, gap {ref.gap:.2g})\n")  # fmt: skip
    print("| input chunks | solved on | state | iterations per round | rounds | in-memory s | "
          "chunked s | ratio | max abs Δu |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    half = (n // 2,) * 3
    cases = [  # (input chunks, chunks to solve on: None = the default blocks, state, K)
        (half, None, "memory", 10), (half, None, "memory", 20), (half, None, "disk", 10),
        (half, half, "memory", 10), ((n // 4, n, n), (n // 4, n, n), "memory", 10),
    ]
    for in_chunks, solve, state, k in cases:
        x = da.from_array(v, chunks=in_chunks)
        mem, chk = [], []
        res = None
        for _ in range(repeat):
            mem += _timed(lambda: denoise_tv(v, beta, method="primal_dual"), 1)
            t = time.perf_counter()
            res = denoise_tv_chunked(x, beta, iterations_per_round=k, state=state, chunks=solve)
            res.u.compute()
            chk.append(time.perf_counter() - t)
        du = float(np.abs(res.u.compute() - denoise_tv(v, beta, method="primal_dual")).max())
        m, c = statistics.median(mem), statistics.median(chk)
        blocks = "x".join(map(str, (max(c_) for c_ in res.chunks)))
        count = int(np.prod([len(c_) for c_ in res.chunks]))
        print(f"| {'x'.join(map(str, in_chunks))} | {blocks} ({count}) | {state} | {k} | "
              f"{res.rounds} | {m:.2f} | {c:.2f} | {c / m:.2f} | {du:.1g} |")  # fmt: skip


def workers(n: int = 192, beta: float = 0.15) -> None:
    import dask
    import dask.array as da

    from napari_tv.chunked import denoise_tv_chunked

    v = _volume(n)
    tmp = tempfile.mkdtemp()
    da.from_array(v, chunks=(n // 4, n, n)).to_zarr(f"{tmp}/v.zarr")
    x = da.from_zarr(f"{tmp}/v.zarr")  # the workers read it (no data in the graph)
    kw = dict(tol=0, max_num_iter=100, iterations_per_round=10, chunks=x.chunks)
    print(f"\n## Scaling with workers, {n}³ float32 in {n // 4}x{n}x{n} blocks (4), 100 "
          "iterations\n")  # fmt: skip
    print("| scheduler | workers | s | speed-up |")
    print("|---|---:|---:|---:|")
    os.environ["NAPARI_TV_TASK_THREADS"] = "1"
    base = None
    try:
        for w in (1, 2):
            with dask.config.set(num_workers=w):
                t = statistics.median(_timed(
                    lambda: denoise_tv_chunked(x, beta, scheduler="threads", **kw).u.compute(), 3
                ))  # fmt: skip
            base = base or t
            print(f"| threads (numba: 1 per task) | {w} | {t:.2f} | {base / t:.2f} |")
    finally:
        del os.environ["NAPARI_TV_TASK_THREADS"]
    from distributed import Client, LocalCluster

    base = None
    for w in (1, 2):
        with (
            LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                         dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):  # fmt: skip
            denoise_tv_chunked(x[:16, :32, :32], beta, scheduler=client, max_num_iter=10)
            t = statistics.median(_timed(
                lambda: denoise_tv_chunked(x, beta, scheduler=client, **kw).u.compute(), 3
            ))  # fmt: skip
        base = base or t
        print(f"| distributed.LocalCluster (processes) | {w} | {t:.2f} | {base / t:.2f} |")


CHILD = r"""
import json, os, sys, threading, time
import numpy as np, dask.array as da, zarr
from napari_tv.chunked import denoise_tv_chunked
src, dst, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
denoise_tv_chunked(da.ones((12, 12, 12), chunks=6) + da.random.random((12, 12, 12), chunks=6),
                   0.1, max_num_iter=10)   # load the kernels
start = rss()
peak = [start]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.005)
t = threading.Thread(target=sample); t.start()
t0 = time.perf_counter()
x = da.from_zarr(src)
res = denoise_tv_chunked(x, 0.15, state="disk", out=dst, tol=0, max_num_iter=20)
done.set(); t.join()
print(json.dumps({"peak": peak[0], "start": start, "voxels": x.size,
                  "seconds": time.perf_counter() - t0, "rounds": res.rounds}))
"""


def memory(sizes=(128, 256, 400, 544), chunk: int = 128) -> None:
    import dask.array as da

    print(f"\n## Peak memory of a chunked solve, state on disk, {chunk}³ chunks, zarr in and "
          "out, float32\n")  # fmt: skip
    print("| volume | data | peak RSS (process) | growth during the solve | s (2 rounds) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for n in sizes:
            src = os.path.join(tmp, f"v{n}.zarr")
            rng = da.random.default_rng(0)
            vol = rng.standard_normal((n, n, n), chunks=chunk, dtype=np.float32)
            vol.to_zarr(src, overwrite=True)  # chunk by chunk: never whole in memory
            dst = os.path.join(tmp, f"u{n}.zarr")
            out = subprocess.run([sys.executable, "-c", CHILD, src, dst, str(chunk)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            mib = 2**20
            print(f"| {n}³ | {n**3 * 4 / mib:.0f} MiB | {r['peak'] / mib:.0f} MiB | "
                  f"{(r['peak'] - r['start']) / mib:.0f} MiB | {r['seconds']:.1f} |")


def rounds(n: int = 192, beta: float = 0.15) -> None:
    import dask.array as da

    from napari_tv.chunked import denoise_tv_chunked

    v = _volume(n)
    print(f"\n## Rounds to tol=1e-4 against chunk size, {n}³ float32, β={beta}\n")
    print("| chunks | iterations per round | blocks | rounds | iterations | halo work | s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c in (48, 64, 96, 192):
        for k in (5, 10):
            x = da.from_array(v, chunks=c)
            t = time.perf_counter()
            res = denoise_tv_chunked(x, beta, iterations_per_round=k, state="memory",
                                     chunks=x.chunks)  # fmt: skip
            res.u.compute()
            dt = time.perf_counter() - t
            nb = int(np.prod(x.numblocks))
            # voxels each round iterates on (blocks with their halos) over the volume
            ext = 0  # voxels iterated per round (blocks with their halos) over the volume
            for loc in np.ndindex(*[len(cs) for cs in res.chunks]):
                ext += np.prod([cs[i] + (k + 1) * ((i > 0) + (i < len(cs) - 1))
                                for cs, i in zip(res.chunks, loc, strict=True)])  # fmt: skip
            ext /= v.size
            print(f"| {c}³ | {k} | {nb} | {res.rounds} | {res.n_iter} | {ext:.2f}x | {dt:.2f} |")


def main(argv) -> None:
    from napari_tv._compile import compile_notice  # noqa: F401  (kernels load at first use)

    sections = {"speed": speed, "workers": workers, "memory": memory, "rounds": rounds}
    wanted = argv or ["all"]
    for name, fn in sections.items():
        if "all" in wanted or name in wanted:
            fn()


if __name__ == "__main__":
    main(sys.argv[1:])
