r"""A coarse-to-fine start for the iterative solvers (``denoise_tv(init="coarse")``).

The problem is solved first on the image averaged over 2×…×2 blocks, the result repeated back
onto the full grid (primal ``u`` and dual ``p``), and the full problem started from it.  The
coarse energy that matches the fine one: with the fine spacing made relative (smallest step
1), the coarse grid has steps ``f_a s_a`` (``f_a`` = 2 on the axes that are halved), voxels
``V_c = Π f_a`` times larger, and ``Σ_c |D u_c / s'_a|`` (``s'`` the coarse spacing made
relative by ``m = min_a f_a s_a``) equals ``m`` times the physical TV per coarse voxel, so

.. math:: E_c(u_c) = \sum_c f(u_c, v_c) + \frac{\beta}{m}\,\mathrm{TV}_c(u_c)

approximates :math:`E(u) / V_c` (``m = 2`` when every axis is halved).  The dual is
dimensionless (``|p| <= 1``) and carries over as it is.

Measured on a 64×256×256 volume, primal–dual to a 1e-3 gap (``benchmarks/bench_gui.py``'s
release, ``docs/benchmarks.md``): β at 3, 5, 12 and 25 % of the range took 30, 70, 240 and 460
iterations (0.21, 0.43, 1.32, 2.67 s) from the data, and with two coarse levels 30, 60, 100
and 120 fine iterations (0.28, 0.50, 0.77, 0.92 s, the coarse solves included): the more
smoothing, the more it saves; at little smoothing it costs a few tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from napari_tv.solvers._result import TVResult

__all__ = ["COARSE_LEVELS", "MIN_COARSE_AXIS", "coarse_start"]

#: how many times the image is halved at most
COARSE_LEVELS = 2
#: an axis is halved only while it keeps at least this many samples
MIN_COARSE_AXIS = 8


def _factors(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(2 if n // 2 >= MIN_COARSE_AXIS else 1 for n in shape)


def _restrict(a: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Block means over ``factors`` (an odd last sample is dropped)."""
    cut = tuple(slice(0, n - n % f) for n, f in zip(a.shape, factors, strict=True))
    a = a[cut]
    shape = []
    for n, f in zip(a.shape, factors, strict=True):
        shape += [n // f, f]
    axes = tuple(range(1, 2 * a.ndim, 2))
    return a.reshape(shape).mean(axis=axes, dtype=np.float64).astype(a.dtype)


def _prolong(a: np.ndarray, factors: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Repeat the coarse samples back onto ``shape`` (the last axes of ``a``; a sample left
    over by an odd length repeats its neighbour)."""
    lead = a.ndim - len(shape)
    for axis, (f, n) in enumerate(zip(factors, shape, strict=True)):
        ax = lead + axis
        if f > 1:
            a = np.repeat(a, f, axis=ax)
        if a.shape[ax] < n:
            edge = np.take(a, [-1] * (n - a.shape[ax]), axis=ax)
            a = np.concatenate([a, edge], axis=ax)
    return np.ascontiguousarray(a)


def coarse_start(
    image: np.ndarray,
    beta: float,
    spacing: tuple[float, ...],
    solve: Callable[..., TVResult],
    levels: int = COARSE_LEVELS,
) -> TVResult | None:
    """A warm start for ``solve(image, beta, spacing=..., init=...)`` from the same problem
    on a coarser grid (recursively ``levels`` deep); None when the image is too small to
    coarsen.  ``solve(image, beta, spacing, init)`` runs the method with its other options.
    """
    factors = _factors(image.shape)
    if levels < 1 or all(f == 1 for f in factors):
        return None
    steps = np.asarray(spacing, dtype=float) / min(spacing)
    coarse_steps = steps * np.asarray(factors)
    m = float(coarse_steps.min())
    coarse = _restrict(image, factors)
    init = coarse_start(coarse, beta / m, tuple(coarse_steps), solve, levels - 1)
    res = solve(coarse, beta / m, tuple(coarse_steps), init)
    p = res.extra.get("p")
    return TVResult(
        u=_prolong(res.u, factors, image.shape),
        energy=float("nan"),
        n_iter=0,
        converged=False,
        gap=float("inf"),
        method=res.method,
        extra={} if p is None else {"p": _prolong(p, factors, image.shape)},
    )
