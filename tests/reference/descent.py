"""Slow, obviously-correct NumPy oracles for the descent-type solvers (gradient descent, Bregman).

Everything here is plain NumPy on top of ``np.roll``-free forward differences written out per
axis, independent of the package's Numba kernels:

* :func:`forward_gradient`, :func:`divergence` — forward differences (Neumann: 0 at the last
  sample; periodic: wrap) and their exact negative adjoint;
* :func:`rof_dual_fista` — the L2–TV minimiser by FISTA on the dual (Beck–Teboulle's fast
  gradient projection), run long, with its own duality gap;
* :func:`tv_primal_dual` — any fidelity with a prox (L2, L1, Poisson) by Chambolle–Pock;
* :func:`smoothed_descent` — plain gradient descent with step 1/L on the ε-smoothed energy;
* :func:`energy`, :func:`smoothed_energy` — the energies, written from their definitions.
"""

from __future__ import annotations

import numpy as np

from napari_tv.fidelity import fidelity_prox, fidelity_value


def _steps(spacing, ndim):
    """The package's convention: spacing is relative (divided by its smallest entry)."""
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        return (1.0,) * ndim
    steps = np.asarray(spacing, dtype=float)
    return tuple(steps / steps.min())


def forward_gradient(u, spacing=None, boundary="neumann"):
    """``g[l] = (u[i+1] − u[i]) / h_l`` along axis l; last sample 0 (Neumann) or wrapped."""
    h = _steps(spacing, u.ndim)
    g = np.zeros((u.ndim,) + u.shape)
    for axis in range(u.ndim):
        um = np.moveaxis(u, axis, 0).astype(np.float64)
        gm = np.moveaxis(g[axis], axis, 0)
        gm[:-1] = (um[1:] - um[:-1]) / h[axis]
        if boundary == "periodic":
            gm[-1] = (um[0] - um[-1]) / h[axis]
    return g


def divergence(p, spacing=None, boundary="neumann"):
    """Negative adjoint of :func:`forward_gradient`: ``<∇u, p> = −<u, div p>``."""
    ndim = p.shape[0]
    h = _steps(spacing, ndim)
    out = np.zeros(p.shape[1:])
    for axis in range(ndim):
        pm = np.moveaxis(p[axis], axis, 0)
        om = np.moveaxis(out, axis, 0)
        if boundary == "periodic":
            om += (pm - np.concatenate([pm[-1:], pm[:-1]])) / h[axis]
        else:
            om[:-1] += pm[:-1] / h[axis]
            om[1:] -= pm[:-1] / h[axis]
    return out


def _tv(g, tv):
    return np.sqrt((g**2).sum(0)).sum() if tv == "isotropic" else np.abs(g).sum()


def _project(p, tv):
    if tv == "isotropic":
        return p / np.maximum(1.0, np.sqrt((p**2).sum(0)))
    return np.clip(p, -1.0, 1.0)


def energy(u, v, beta, fidelity="l2", tv="isotropic", spacing=None, boundary="neumann"):
    """``Σ f(u, v) + β TV(u)``, from the definitions."""
    return fidelity_value(u, v, fidelity) + beta * _tv(forward_gradient(u, spacing, boundary), tv)


def smoothed_energy(u, v, beta, eps, tv="isotropic", spacing=None, boundary="neumann"):
    """L2 fidelity + β Σ sqrt(|∇u|² + ε²) (anisotropic: per component)."""
    g = forward_gradient(u, spacing, boundary)
    s = (g**2).sum(0) if tv == "isotropic" else g**2
    return 0.5 * ((u - v) ** 2).sum() + beta * np.sqrt(s + eps**2).sum()


def rof_dual_fista(v, beta, tv="isotropic", spacing=None, boundary="neumann", n_iter=20000):
    """L2–TV minimiser: FISTA on ``min_{|p|≤1} ½‖v + β div p‖²``; returns ``(u, gap)``.

    ``u = v + β div p``; ``gap = P(u) − D(p)`` (absolute), ``D(p) = ½‖v‖² − ½‖u‖²``.
    """
    v = np.asarray(v, dtype=np.float64)
    h = _steps(spacing, v.ndim)
    step = 1.0 / (beta * 4.0 * sum(1.0 / s**2 for s in h))
    p = np.zeros((v.ndim,) + v.shape)
    q, t = p.copy(), 1.0
    for _ in range(n_iter):
        u = v + beta * divergence(q, spacing, boundary)
        p_new = _project(q + step * forward_gradient(u, spacing, boundary), tv)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        q = p_new + (t - 1.0) / t_new * (p_new - p)
        p, t = p_new, t_new
    u = v + beta * divergence(p, spacing, boundary)
    dual = 0.5 * (v**2).sum() - 0.5 * (u**2).sum()
    return u, energy(u, v, beta, "l2", tv, spacing, boundary) - dual


def tv_primal_dual(v, beta, fidelity, tv="isotropic", spacing=None, boundary="neumann",
                   n_iter=20000):
    """Chambolle–Pock for ``Σ f(u, v) + β TV(u)`` with τσ‖D‖² ≤ 1; returns the ergodic-free
    last primal iterate."""
    v = np.asarray(v, dtype=np.float64)
    h = _steps(spacing, v.ndim)
    norm = np.sqrt(4.0 * sum(1.0 / s**2 for s in h))
    tau = sigma = 0.99 / norm
    u = np.where(v > 0, v, 0.1) if fidelity == "poisson" else v.copy()
    u_bar, p = u.copy(), np.zeros((v.ndim,) + v.shape)
    for _ in range(n_iter):
        p = beta * _project((p + sigma * forward_gradient(u_bar, spacing, boundary)) / beta, tv)
        u_new = fidelity_prox(u + tau * divergence(p, spacing, boundary), v, tau, fidelity)
        u_bar = 2.0 * u_new - u
        u = u_new
    return u


def smoothed_descent(v, beta, eps, tv="isotropic", spacing=None, boundary="neumann",
                     n_iter=20000):
    """Plain gradient descent, step 1/L, on :func:`smoothed_energy` (L2 fidelity)."""
    v = np.asarray(v, dtype=np.float64)
    h = _steps(spacing, v.ndim)
    lipschitz = 1.0 + beta * 4.0 * sum(1.0 / s**2 for s in h) / eps
    u = v.copy()
    for _ in range(n_iter):
        g = forward_gradient(u, spacing, boundary)
        norm = np.sqrt((g**2).sum(0) + eps**2) if tv == "isotropic" else np.sqrt(g**2 + eps**2)
        grad = (u - v) - beta * divergence(g / norm, spacing, boundary)
        u = u - grad / lipschitz
    return u
