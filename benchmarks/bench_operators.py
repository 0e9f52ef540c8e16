"""Operators against plain NumPy (``np.diff`` and friends), side by side in one run.

Run: ``.venv/bin/python benchmarks/bench_operators.py`` (or through ``benchmarks/bench.py``).
Prints the median of several repetitions and the ratio NumPy time / napari-tv time (> 1 means
napari-tv is faster).
"""

from __future__ import annotations

import time

import numpy as np

from napari_tv import divergence, gradient, tv_gradient, tv_norm


def timeit(fn, repeat=7):
    fn()  # compile / warm caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def np_gradient(f):
    """Forward differences with Neumann boundary in NumPy: np.diff and a zero last slice."""
    out = np.zeros((f.ndim, *f.shape), dtype=f.dtype)
    for ax in range(f.ndim):
        sl = [slice(None)] * f.ndim
        sl[ax] = slice(0, -1)
        out[ax][tuple(sl)] = np.diff(f, axis=ax)
    return out


def np_divergence(p):
    """Its negative adjoint (the usual ROF divergence) in NumPy."""
    out = np.zeros(p.shape[1:], dtype=p.dtype)
    for ax in range(p.shape[0]):
        q = np.moveaxis(p[ax], ax, 0)
        o = np.moveaxis(out, ax, 0)
        o[0] += q[0]
        o[1:-1] += q[1:-1] - q[:-2]
        o[-1] -= q[-2]
    return out


def np_tv_norm(f):
    g = np_gradient(f)
    return float(np.sqrt((g.astype(np.float64) ** 2).sum(axis=0)).sum())


def np_tv_gradient(f):
    g = np_gradient(f)
    norm = np.sqrt((g**2).sum(axis=0))
    q = np.where(norm > 0, g / np.where(norm > 0, norm, 1), 0).astype(f.dtype)
    return -np_divergence(q)


def rows():
    rng = np.random.default_rng(0)
    for shape in [(512, 512), (128, 128, 128)]:
        f = rng.normal(size=shape).astype(np.float32)
        p = rng.normal(size=(len(shape), *shape)).astype(np.float32)
        np.testing.assert_allclose(gradient(f), np_gradient(f), atol=1e-5)
        np.testing.assert_allclose(divergence(p), np_divergence(p), atol=1e-5)
        cases = [
            ("gradient", gradient, np_gradient, f),
            ("divergence", divergence, np_divergence, p),
            ("tv_norm", tv_norm, np_tv_norm, f),
            ("tv_gradient", tv_gradient, np_tv_gradient, f),
        ]
        for name, ours, theirs, arg in cases:
            t_ours = timeit(lambda fn=ours, x=arg: fn(x))
            t_np = timeit(lambda fn=theirs, x=arg: fn(x))
            yield ("x".join(map(str, shape)) + " f32", name, t_ours, t_np)


def main():
    print("## Operators vs plain NumPy (np.diff), float32, median of 7")
    print()
    print("| shape | operator | napari-tv (ms) | NumPy (ms) | NumPy / napari-tv |")
    print("|---|---|---:|---:|---:|")
    for shape, name, t_ours, t_np in rows():
        print(f"| {shape} | {name} | {t_ours*1e3:.2f} | {t_np*1e3:.2f} | {t_np/t_ours:.2f}× |")
    print()


if __name__ == "__main__":
    main()
