"""Slow, obviously-correct NumPy oracles for the iterative TV solvers.

Nothing here imports the package's kernels: differences are written with ``np.diff`` /
``np.roll`` and every axis may carry a weight ``w_a`` multiplying its differences (spacing
``h_a`` is ``w_a = 1/h_a``).

* :func:`grad`, :func:`div`         forward differences (0 at the last index, or periodic) and
                                    their negative adjoint
* :func:`primal_energy`             ``Σ f(u, v) + beta TV(u)``
* :func:`dual_value`                ``-Σ f*(beta div p, v)`` (``-inf`` when infeasible)
* :func:`feasible_dual_gap`         ``P(u) - D(c p)`` with the largest feasible scale ``c``
* :func:`rof_fista_dual`            ROF (L2) by FISTA on the dual, run long: the L2 oracle
"""

from __future__ import annotations

import numpy as np


def grad(f, weights=None, periodic=False):
    """``(ndim, *f.shape)``: ``w_a (f[i+1] - f[i])`` along each axis (0 / wrap at the end)."""
    f = np.asarray(f, dtype=np.float64)
    weights = np.ones(f.ndim) if weights is None else np.asarray(weights, dtype=float)
    out = np.zeros((f.ndim,) + f.shape)
    for a in range(f.ndim):
        if periodic:
            out[a] = np.roll(f, -1, axis=a) - f
        else:
            sl = [slice(None)] * f.ndim
            sl[a] = slice(0, -1)
            out[a][tuple(sl)] = np.diff(f, axis=a)
        out[a] *= weights[a]
    return out


def div(p, weights=None, periodic=False):
    """The negative adjoint of :func:`grad`."""
    p = np.asarray(p, dtype=np.float64)
    ndim = p.shape[0]
    weights = np.ones(ndim) if weights is None else np.asarray(weights, dtype=float)
    out = np.zeros(p.shape[1:])
    for a in range(ndim):
        q = p[a].copy()
        if periodic:
            out += weights[a] * (q - np.roll(q, 1, axis=a))
        else:
            sl_last = [slice(None)] * ndim
            sl_last[a] = -1
            q[tuple(sl_last)] = 0.0  # grad is 0 there, so the adjoint ignores p at n-1
            prev = np.roll(q, 1, axis=a)
            sl_first = [slice(None)] * ndim
            sl_first[a] = 0
            prev[tuple(sl_first)] = 0.0
            out += weights[a] * (q - prev)
    return out


def tv(u, kind="isotropic", weights=None, periodic=False):
    g = grad(u, weights, periodic)
    if kind == "isotropic":
        return float(np.sqrt((g**2).sum(axis=0)).sum())
    return float(np.abs(g).sum())


def fidelity(u, v, kind):
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if kind == "l2":
        return float((0.5 * (u - v) ** 2).sum())
    if kind == "l1":
        return float(np.abs(u - v).sum())
    if np.any(u < 0) or np.any((u == 0) & (v > 0)):
        return np.inf
    pos = v > 0
    return float(u.sum() - (v[pos] * np.log(u[pos])).sum())


def primal_energy(u, v, beta, fid="l2", kind="isotropic", weights=None, periodic=False):
    return fidelity(u, v, fid) + beta * tv(u, kind, weights, periodic)


def conjugate(z, v, fid):
    """``Σ_s f*(z_s, v_s)`` (``inf`` outside the domain)."""
    z = np.asarray(z, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if fid == "l2":
        return float((z * v + 0.5 * z**2).sum())
    if fid == "l1":
        return np.inf if np.abs(z).max() > 1 else float((z * v).sum())
    pos = v > 0
    if np.any(z[pos] >= 1) or np.any(z[~pos] > 1):
        return np.inf
    vp, zp = v[pos], z[pos]
    return float((-vp + vp * np.log(vp) - vp * np.log(1 - zp)).sum())


def in_ball(p, kind="isotropic", slack=1e-12):
    if kind == "isotropic":
        return bool(np.sqrt((np.asarray(p) ** 2).sum(axis=0)).max() <= 1 + slack)
    return bool(np.abs(p).max() <= 1 + slack)


def dual_value(p, v, beta, fid="l2", weights=None, periodic=False):
    """``D(p) = -Σ f*(beta div p, v)`` (the caller checks ``p`` is in the dual ball)."""
    return -conjugate(beta * div(p, weights, periodic), v, fid)


def feasible_dual_gap(u, v, p, beta, fid="l2", kind="isotropic", weights=None, periodic=False):
    """``(P(u) - D(c p), c)``: ``p`` is projected on the ball, then scaled by the largest
    ``c`` in (0, 1] that makes ``f*`` finite (found by bisection to 1e-13)."""
    p = np.array(p, dtype=np.float64)
    if kind == "isotropic":
        p /= np.maximum(1.0, np.sqrt((p**2).sum(axis=0)))
    else:
        p = np.clip(p, -1, 1)
    primal = primal_energy(u, v, beta, fid, kind, weights, periodic)

    def dual(c):
        return dual_value(c * p, v, beta, fid, weights, periodic)

    if np.isfinite(dual(1.0)):
        return primal - dual(1.0), 1.0
    lo, hi = 0.0, 1.0  # dual(0) = -Σ f*(0) is finite for every fidelity
    while hi - lo > 1e-13:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.isfinite(dual(mid)) else (lo, mid)
    # the best feasible point: Poisson's f* blows up at the boundary, so also try a margin
    best = max(dual(lo), dual(lo * (1 - 1e-3)))
    return primal - best, lo


def rof_fista_dual(v, beta, kind="isotropic", weights=None, periodic=False, n_iter=20000):
    """ROF ``½||u - v||² + beta TV(u)`` by FISTA on the dual ``min_p ½||v + beta div p||²``,
    ``p`` in the unit ball; returns ``(u, p)`` with ``u = v + beta div p``."""
    v = np.asarray(v, dtype=np.float64)
    ndim = v.ndim
    w = np.ones(ndim) if weights is None else np.asarray(weights, dtype=float)
    lip = beta**2 * 4.0 * float((w**2).sum())
    step = 1.0 / lip

    def project(q):
        if kind == "isotropic":
            return q / np.maximum(1.0, np.sqrt((q**2).sum(axis=0)))
        return np.clip(q, -1.0, 1.0)

    p = np.zeros((ndim,) + v.shape)
    y = p.copy()
    t = 1.0
    for _ in range(n_iter):
        u = v + beta * div(y, w, periodic)
        p_new = project(y + step * beta * grad(u, w, periodic))
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        y = p_new + (t - 1) / t_new * (p_new - p)
        p, t = p_new, t_new
    return v + beta * div(p, w, periodic), p
