r"""Chambolle's dual projection algorithm for L2 (ROF) total-variation denoising."""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from napari_tv.operators import tv_energy
from napari_tv.solvers._gap import CHECK_EVERY, Monitor, duality_gap
from napari_tv.solvers._kernels import (
    as_3d,
    as_4d,
    back_terms,
    fwd_index,
    inline,
    inv_steps,
    jit,
    threads_for,
)
from napari_tv.solvers._result import TVResult

__all__ = ["solve_chambolle"]


@inline
def _iso_update(p, k0, k1, k2, i0, i1, i2, g0, g1, g2, tau):
    """Chambolle's semi-implicit step at one voxel.  Components ``(k0, k1, k2)`` pair with the
    padded axes; a padded axis repeats the next component index and has ``g = 0``: all new
    values are computed before writing, and the real component is written last."""
    s = 1.0 / (1.0 + tau * math.sqrt(g0 * g0 + g1 * g1 + g2 * g2))
    q0 = (p[k0, i0, i1, i2] + tau * g0) * s
    q1 = (p[k1, i0, i1, i2] + tau * g1) * s
    q2 = (p[k2, i0, i1, i2] + tau * g2) * s
    p[k0, i0, i1, i2] = q0
    p[k1, i0, i1, i2] = q1
    p[k2, i0, i1, i2] = q2


@inline
def _aniso_update(p, k0, k1, k2, i0, i1, i2, g0, g1, g2, tau):
    """Projected-gradient step ``clip(p + tau g, -1, 1)`` at one voxel (see ``_iso_update``)."""
    q0 = min(1.0, max(-1.0, p[k0, i0, i1, i2] + tau * g0))
    q1 = min(1.0, max(-1.0, p[k1, i0, i1, i2] + tau * g1))
    q2 = min(1.0, max(-1.0, p[k2, i0, i1, i2] + tau * g2))
    p[k0, i0, i1, i2] = q0
    p[k1, i0, i1, i2] = q1
    p[k2, i0, i1, i2] = q2


@inline
def _dual_line(p, w, i0, i1, j0, j1, n2, h0, h1, h2, tau, periodic, isotropic, K):
    """``_dual_step`` on the line ``(i0, i1)``; ``j0``, ``j1`` are the forward neighbours.
    ``K`` (the number of components) is passed as a constant so that the component indices
    fold and LLVM vectorises the loop."""
    k2 = K - 1
    k1 = max(K - 2, 0)
    k0 = max(K - 3, 0)
    if isotropic:
        for i2 in range(n2 - 1):
            c = w[i0, i1, i2]
            g0 = h0 * (w[j0, i1, i2] - c)
            g1 = h1 * (w[i0, j1, i2] - c)
            g2 = h2 * (w[i0, i1, i2 + 1] - c)
            _iso_update(p, k0, k1, k2, i0, i1, i2, g0, g1, g2, tau)
    else:
        for i2 in range(n2 - 1):
            c = w[i0, i1, i2]
            g0 = h0 * (w[j0, i1, i2] - c)
            g1 = h1 * (w[i0, j1, i2] - c)
            g2 = h2 * (w[i0, i1, i2 + 1] - c)
            _aniso_update(p, k0, k1, k2, i0, i1, i2, g0, g1, g2, tau)
    i2 = n2 - 1
    c = w[i0, i1, i2]
    g0 = h0 * (w[j0, i1, i2] - c)
    g1 = h1 * (w[i0, j1, i2] - c)
    g2 = h2 * (w[i0, i1, fwd_index(i2, n2, periodic)] - c)
    if isotropic:
        _iso_update(p, k0, k1, k2, i0, i1, i2, g0, g1, g2, tau)
    else:
        _aniso_update(p, k0, k1, k2, i0, i1, i2, g0, g1, g2, tau)


@jit(parallel=True)
def _dual_step(p, w, ih, periodic, tau, isotropic):
    """``p <- (p + tau D w) / (1 + tau |D w|)`` (isotropic, Chambolle's semi-implicit step) or
    ``p <- clip(p + tau D w, -1, 1)`` (anisotropic, projected gradient), on padded views."""
    K = p.shape[0]
    n0, n1, n2 = w.shape
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        j0 = fwd_index(i0, n0, periodic)
        j1 = fwd_index(i1, n1, periodic)
        h0, h1, h2 = ih[0], ih[1], ih[2]
        if K == 3:
            _dual_line(p, w, i0, i1, j0, j1, n2, h0, h1, h2, tau, periodic, isotropic, 3)
        elif K == 2:
            _dual_line(p, w, i0, i1, j0, j1, n2, h0, h1, h2, tau, periodic, isotropic, 2)
        else:
            _dual_line(p, w, i0, i1, j0, j1, n2, h0, h1, h2, tau, periodic, isotropic, 1)


@inline
def _div_line_term(p, k, i0, i1, im0, a0, b0, im1, a1, b1, i2, h0, h1, K):
    """The axis-0 and axis-1 parts of ``div p`` at ``(i0, i1, i2)`` (padded views)."""
    d = 0.0
    if K == 3:
        d += h0 * (a0 * p[0, i0, i1, i2] - b0 * p[0, im0, i1, i2])
    if K >= 2:
        d += h1 * (a1 * p[K - 2, i0, i1, i2] - b1 * p[K - 2, i0, im1, i2])
    return d


@jit(parallel=True)
def _rescaled_divergence(p, v, w, ih, periodic, inv_beta):
    """``w <- div p + v / beta`` (so that ``u = v + beta div p = beta w``), on padded views."""
    K = p.shape[0]
    n0, n1, n2 = v.shape
    h0, h1, h2 = ih[0], ih[1], ih[2]
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        im0, a0, b0 = back_terms(i0, n0, periodic)
        im1, a1, b1 = back_terms(i1, n1, periodic)
        terms = (i0, i1, im0, a0, b0, im1, a1, b1, h0, h1, h2, inv_beta, periodic)
        if K == 3:
            _rescaled_divergence_line(p, v, w, terms, 3)
        elif K == 2:
            _rescaled_divergence_line(p, v, w, terms, 2)
        else:
            _rescaled_divergence_line(p, v, w, terms, 1)


@inline
def _rescaled_divergence_line(p, v, w, terms, K):
    """``_rescaled_divergence`` on one line (``K`` a constant, see ``_dual_line``)."""
    i0, i1, im0, a0, b0, im1, a1, b1, h0, h1, h2, inv_beta, periodic = terms
    n2 = v.shape[2]
    k2 = K - 1
    for i2 in range(1, n2 - 1):
        d = _div_line_term(p, 0, i0, i1, im0, a0, b0, im1, a1, b1, i2, h0, h1, K)
        d += h2 * (p[k2, i0, i1, i2] - p[k2, i0, i1, i2 - 1])
        w[i0, i1, i2] = d + inv_beta * v[i0, i1, i2]
    for i2 in (0, n2 - 1):
        im2, a2, b2 = back_terms(i2, n2, periodic)
        d = _div_line_term(p, 0, i0, i1, im0, a0, b0, im1, a1, b1, i2, h0, h1, K)
        d += h2 * (a2 * p[k2, i0, i1, i2] - b2 * p[k2, i0, i1, im2])
        w[i0, i1, i2] = d + inv_beta * v[i0, i1, i2]


def _initial_dual(init, image: np.ndarray) -> np.ndarray:
    """The dual warm start: ``init.extra["p"]`` of a TVResult, else zeros."""
    shape = (image.ndim,) + image.shape
    p0 = getattr(init, "extra", {}).get("p") if init is not None else None
    if p0 is None:
        return np.zeros(shape, dtype=image.dtype)
    p0 = np.asarray(p0)
    if p0.shape != shape:
        raise ValueError(f"init.extra['p'] must have shape {shape}, got {p0.shape}")
    return np.array(p0, dtype=image.dtype, order="C")


def solve_chambolle(
    image: np.ndarray,
    beta: float,
    *,
    fidelity: str = "l2",
    tv: str = "isotropic",
    spacing=None,
    boundary: str = "neumann",
    max_num_iter: int = 500,
    tol: float = 1e-4,
    init=None,
    callback=None,
) -> TVResult:
    r"""Minimise :math:`\tfrac12\|u - v\|^2 + \beta\,\mathrm{TV}(u)` by Chambolle's algorithm.

    Takes an already validated C-contiguous float32/float64 ``image`` (see
    :func:`napari_tv.denoise_tv` for the public entry point and the parameters).

    Parameters
    ----------
    image : ndarray
        The data ``v`` (1-, 2- or 3-D, float32 or float64, C-contiguous; not modified).
    beta : float
        Regularisation weight ≥ 0 (scikit-image's ``weight``).
    fidelity : {"l2"}
        Chambolle's algorithm is specific to the quadratic fidelity.
    tv : {"isotropic", "anisotropic"}
        Isotropic uses Chambolle's semi-implicit step; anisotropic the projected gradient.
    spacing : tuple of float, optional
        Voxel size per axis (forward differences divided by it).
    boundary : {"neumann", "periodic"}
    max_num_iter : int
        Iterations at most.
    tol : float
        Stop when the relative duality gap is below ``tol`` (checked every
        ``CHECK_EVERY`` iterations); ``tol=0`` runs exactly ``max_num_iter`` iterations.
    init : TVResult, optional
        Warm start from ``init.extra["p"]`` (the dual).  A bare array cannot seed a dual
        method and is ignored.
    callback : callable, optional
        ``callback(info) -> bool`` after every gap evaluation; True stops.

    Returns
    -------
    TVResult
        ``extra["p"]`` holds the dual field ``p`` (shape ``(ndim, *image.shape)``) with
        ``u = v + beta div p``.

    Notes
    -----
    With :math:`w = \operatorname{div} p + v/\beta` (so that :math:`u = \beta w`), one
    iteration is

    .. math:: p \leftarrow \frac{p + \tau D w}{1 + \tau |D w|}\ \text{(isotropic)},\qquad
              p \leftarrow \operatorname{clip}(p + \tau D w, -1, 1)\ \text{(anisotropic)},

    with :math:`\tau = 2/L^2`, :math:`L^2 = 4\sum_a h_a^{-2} \ge \|D\|^2` (1/4 in 2-D and 1/6 in
    3-D for unit spacing, the step of ``skimage.restoration.denoise_tv_chambolle``).  Each
    iteration is two fused parallel passes (the rescaled divergence, then the difference and
    the projection).  The stopping quantity is the relative duality gap of
    :mod:`napari_tv.solvers._gap` at :math:`u = v + \beta\operatorname{div}p`:

    .. math:: \mathrm{gap} = \frac{P(u) - D(p)}{P(u)}
              = \frac{\beta \sum_s \big(|(Du)_s| - \langle (Du)_s, p_s\rangle\big)}{P(u)},
              \qquad D(p) = \tfrac12\|v\|^2 - \tfrac12\|v + \beta \operatorname{div} p\|^2 .

    References
    ----------
    .. [1] A. Chambolle, "An algorithm for total variation minimization and applications",
       J. Math. Imaging Vis. 20, 89-97 (2004).
    """
    if fidelity != "l2":
        raise ValueError(f"method='chambolle' supports fidelity='l2' only, got {fidelity!r}")
    monitor = Monitor("chambolle", max_num_iter, tol, callback)
    p = _initial_dual(init, image)
    u = np.empty_like(image)
    periodic = boundary == "periodic"
    if beta == 0:
        u[...] = image
        gap = 0.0
        n_iter = 0
        monitor.converged = True
    else:
        with threads_for(image.size):
            n_iter, gap = _iterate(
                image, beta, p, u, tv == "isotropic", spacing, periodic, max_num_iter, monitor
            )
    energy = tv_energy(u, image, beta, fidelity="l2", tv=tv, boundary=boundary, spacing=spacing)
    return TVResult(
        u=u,
        energy=energy,
        n_iter=n_iter,
        converged=monitor.converged,
        gap=float(gap),
        history=monitor.history,
        elapsed=monitor.elapsed(),
        method="chambolle",
        cancelled=monitor.cancelled,
        extra={"p": p},
    )


def _iterate(image, beta, p, u, isotropic, spacing, periodic, max_num_iter, monitor):
    """Run the iterations in place on ``p``; leave ``u = v + beta div p``; return (n, gap)."""
    ih = inv_steps(spacing, image.ndim)
    tau = 2.0 / float(4.0 * np.sum(ih**2))
    w = np.empty_like(image)
    v3, w3, p4 = as_3d(image), as_3d(w), as_4d(p)
    inv_beta = 1.0 / beta
    _rescaled_divergence(p4, v3, w3, ih, periodic, inv_beta)
    n_iter, gap = 0, math.inf
    while n_iter < max_num_iter:
        n = min(CHECK_EVERY, max_num_iter - n_iter)
        for _ in range(n):
            _dual_step(p4, w3, ih, periodic, tau, isotropic)
            _rescaled_divergence(p4, v3, w3, ih, periodic, inv_beta)
        n_iter += n
        if monitor.wants_gap(n_iter):
            np.multiply(w, beta, out=u)
            g = duality_gap(
                u,
                image,
                p,
                beta,
                isotropic=isotropic,
                spacing=spacing,
                periodic=periodic,
                floor=0.0,
            )
            gap = g.rel
            if monitor.check(n_iter, g):
                break
    np.multiply(w, beta, out=u)
    if not np.isfinite(gap):  # max_num_iter == 0
        gap = duality_gap(
            u, image, p, beta, isotropic=isotropic, spacing=spacing, periodic=periodic, floor=0.0
        ).rel
    return n_iter, gap
