"""Peak memory of each method, per voxel, against the memory guard's estimate.

Every case runs in a **fresh Python process**: it loads the kernels on a tiny image first,
then samples its resident set size every 2 ms (``/proc/self/statm``) while ``denoise_tv``
runs on a random volume; the peak minus the size before the call, divided by the voxels, is
the measured cost (the input itself is not counted, the result is).  The estimate is
:func:`napari_tv._memory.estimate_bytes` (the table the guard uses); ``ratio`` =
estimate / measured must stay >= 1 for the guard to be on the safe side.

Run: ``python benchmarks/bench_memory.py [--shape 96x96x96]`` (Linux; a minute or two).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys, threading, time, warnings
import numpy as np
warnings.simplefilter("ignore")
from napari_tv import denoise_tv
from napari_tv._memory import estimate_bytes

method, fidelity, dtype, shape = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
shape = tuple(int(n) for n in shape.split("x"))
rng = np.random.default_rng(0)
kw = {"method": method, "fidelity": fidelity}
if method != "exact":
    kw.update(max_num_iter=30, tol=0)
denoise_tv((rng.random((8,) * len(shape)) * 50).astype(dtype), 5.0, **kw)  # load kernels
v = (rng.random(shape) * 50).astype(dtype)
page = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page

start = rss()
peak = [start]
done = threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)

t = threading.Thread(target=sample)
t.start()
u = denoise_tv(v, 5.0, **kw)
done.set()
t.join()
n_levels = 256 if method == "exact" else 0
est = estimate_bytes(method, fidelity, shape, v.itemsize, n_levels=n_levels)
print(json.dumps({"measured": (peak[0] - start) / v.size, "estimate": est / v.size}))
"""

CASES = [
    ("primal_dual", "l2"), ("primal_dual", "l1"), ("primal_dual", "poisson"),
    ("chambolle", "l2"), ("bregman", "l2"),
    ("gradient_descent", "l2"), ("gradient_descent", "l1"), ("gradient_descent", "poisson"),
    ("exact", "l2"),
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="96x96x96")
    args = parser.parse_args()
    print(f"{args.shape} voxels")
    print("| method | fidelity | dtype | measured B/voxel | estimate B/voxel | ratio |")
    print("|---|---|---|---:|---:|---:|")
    for method, fidelity in CASES:
        for dtype in ("float32", "float64"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, method, fidelity, dtype, args.shape],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            ratio = row["estimate"] / max(row["measured"], 1e-9)
            print(f"| {method} | {fidelity} | {dtype} | {row['measured']:.1f} | "
                  f"{row['estimate']:.1f} | {ratio:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
