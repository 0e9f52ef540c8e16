r"""Chambolle–Pock primal-dual algorithm for TV denoising with any fidelity that has a prox."""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from napari_tv.fidelity import FIDELITY_CODE, prox_scalar
from napari_tv.operators import tv_energy
from napari_tv.solvers._gap import Monitor, duality_gap, fidelity_floor
from napari_tv.solvers._kernels import (
    CLIP,
    PROJECT,
    as_3d,
    as_4d,
    dual_ascent_step,
    dual_norm_bound,
    inv_steps,
    jit,
    rescaled_divergence,
    threads_for,
)
from napari_tv.solvers._result import TVResult

__all__ = ["solve_primal_dual"]

#: strong-convexity modulus used for the accelerated L2 variant (the L2 fidelity has mu = 1)
GAMMA_L2 = 1.0


@jit(parallel=True)
def _prox_extrapolate(w, u, ubar, v, tb, tau, theta, code):
    """``x = tb * w``; ``u_new = prox_{tau f}(x)``; ``ubar = u_new + theta (u_new - u)``;
    ``u = u_new`` (flat arrays)."""
    for s in prange(u.size):
        un = prox_scalar(tb * w[s], v[s], tau, code)
        ubar[s] = un + theta * (un - u[s])
        u[s] = un


def _initial_state(init, image):
    """``(u0, p0)`` from ``init``: an array (primal), a TVResult (primal and ``extra["p"]``)."""
    dual_shape = (image.ndim,) + image.shape
    p0 = None
    if init is None:
        u0 = image
    elif isinstance(init, TVResult):
        u0 = init.u
        p0 = init.extra.get("p")
    else:
        u0 = init
    u0 = np.asarray(u0)
    if u0.shape != image.shape:
        raise ValueError(f"init must have the image's shape {image.shape}, got {u0.shape}")
    u = np.array(u0, dtype=image.dtype, order="C")
    if p0 is None:
        p = np.zeros(dual_shape, dtype=image.dtype)
    else:
        p0 = np.asarray(p0)
        if p0.shape != dual_shape:
            raise ValueError(f"init.extra['p'] must have shape {dual_shape}, got {p0.shape}")
        p = np.array(p0, dtype=image.dtype, order="C")
    return u, p


def solve_primal_dual(
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
    r"""Minimise :math:`\sum_s f(u_s, v_s) + \beta\,\mathrm{TV}(u)` by Chambolle–Pock.

    Takes an already validated C-contiguous float32/float64 ``image`` (see
    :func:`napari_tv.denoise_tv` for the public entry point).

    Parameters
    ----------
    image : ndarray
        The data ``v`` (1-, 2- or 3-D; not modified).  Non-negative for ``"poisson"``.
    beta : float
        Regularisation weight ≥ 0.
    fidelity : {"l2", "l1", "poisson"}
        Any fidelity of :mod:`napari_tv.fidelity`, used through its prox.
    tv : {"isotropic", "anisotropic"}
    spacing : tuple of float, optional
    boundary : {"neumann", "periodic"}
    max_num_iter : int
    tol : float
        Stop when the relative duality gap is below ``tol`` (checked every 10 iterations,
        then every 10 % of the run, at most every 100: ``_gap.check_interval``); ``tol=0``
        runs exactly ``max_num_iter`` iterations.
    init : ndarray or TVResult, optional
        Primal warm start (an array), or primal ``init.u`` and dual ``init.extra["p"]``.
    callback : callable, optional
        ``callback(info) -> bool`` after every gap evaluation; True stops.

    Returns
    -------
    TVResult
        ``extra["tau"]`` is the last primal step (a TVResult of this method passed as
        ``init`` resumes from it, so the accelerated schedule continues); ``extra["p"]`` is
        the dual field (|p_s| ≤ 1; for L2 ``u = v + beta div p`` at the
        optimum, the same convention as :func:`solve_chambolle`, so either warm-starts the
        other).

    Notes
    -----
    With :math:`K = \beta D` and :math:`L^2 = 4\sum_a h_a^{-2} \ge \|D\|^2`, one iteration is

    .. math::
        p &\leftarrow \Pi_B\big(p + \sigma\beta\, D\bar u\big), \\
        u^+ &= \operatorname{prox}_{\tau f}\big(u + \tau\beta \operatorname{div} p\big), \qquad
        \bar u = u^+ + \theta (u^+ - u),

    (:math:`\Pi_B`: projection on :math:`|p_s|_2 \le 1`, or the clip for anisotropic TV), with
    :math:`\tau\sigma\beta^2L^2 = 1`.  For L2 the accelerated variant (Algorithm 2 of [1]_,
    :math:`\gamma = 1`) updates :math:`\theta = 1/\sqrt{1 + 2\gamma\tau}`,
    :math:`\tau \leftarrow \theta\tau`, :math:`\sigma \leftarrow \sigma/\theta`, giving
    :math:`O(1/k^2)`; L1 and Poisson use :math:`\theta = 1`,
    :math:`\tau = \sigma = 1/(\beta L)`.

    Stopping quantity: the relative duality gap of :mod:`napari_tv.solvers._gap` at the
    current pair :math:`(u, p)`,

    .. math:: \mathrm{gap} = \frac{P(u) - D(cp)}{P(u) - \sum_s f(v_s, v_s)},\qquad
              D(q) = -\sum_s f^*\big(\beta(\operatorname{div} q)_s, v_s\big),

    where :math:`c \in (0, 1]` rescales :math:`p` into the domain of :math:`f^*` (always 1
    for L2; for L1 :math:`|z_s| \le 1`, for Poisson :math:`z_s < 1`).

    References
    ----------
    .. [1] A. Chambolle, T. Pock, "A first-order primal-dual algorithm for convex problems
       with applications to imaging", J. Math. Imaging Vis. 40, 120-145 (2011).

    Examples
    --------
    L1 fidelity removes the outlier and keeps the step:

    >>> import numpy as np
    >>> v = np.array([0.0, 0.0, 5.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    >>> res = solve_primal_dual(v, 0.6, fidelity="l1", tol=1e-8, max_num_iter=20000)
    >>> np.round(res.u, 6) + 0.0
    array([0., 0., 0., 0., 0., 1., 1., 1.])
    """
    monitor = Monitor("primal_dual", max_num_iter, tol, callback)
    u, p = _initial_state(init, image)
    # resuming a primal-dual run also resumes its (accelerated) step size
    resume = isinstance(init, TVResult) and init.method == "primal_dual"
    tau0 = init.extra.get("tau") if resume else None
    periodic = boundary == "periodic"
    isotropic = tv == "isotropic"
    if beta == 0:
        u[...] = image
        gap = 0.0
        n_iter = 0
        tau = tau0
        monitor.converged = True
    else:
        with threads_for(image.size):
            n_iter, gap, tau = _iterate(
                image,
                beta,
                u,
                p,
                fidelity,
                isotropic,
                spacing,
                periodic,
                max_num_iter,
                monitor,
                tau0,
            )
    energy = tv_energy(u, image, beta, fidelity=fidelity, tv=tv, boundary=boundary, spacing=spacing)
    return TVResult(
        u=u,
        energy=energy,
        n_iter=n_iter,
        converged=monitor.converged,
        gap=float(gap),
        history=monitor.history,
        elapsed=monitor.elapsed(),
        method="primal_dual",
        cancelled=monitor.cancelled,
        extra={"p": p, "tau": tau},
    )


def _iterate(
    image, beta, u, p, fidelity, isotropic, spacing, periodic, max_num_iter, monitor, tau0
):
    """Run the iterations in place on ``u`` and ``p`` from the primal step ``tau0`` (None:
    ``1/||K||``); return ``(n_iter, gap, tau)``."""
    ndim = image.ndim
    ih = inv_steps(spacing, ndim)
    lip = beta * math.sqrt(dual_norm_bound(spacing, ndim))  # >= ||K||
    code = FIDELITY_CODE[fidelity]
    accelerate = fidelity == "l2"
    tau = 1.0 / lip if tau0 is None else float(tau0)
    sigma = 1.0 / (tau * lip * lip)
    mode = PROJECT if isotropic else CLIP
    floor = fidelity_floor(image, fidelity)
    ubar = u.copy()
    w = np.empty_like(image)
    u3, ubar3, w3, p4 = as_3d(u), as_3d(ubar), as_3d(w), as_4d(p)
    uf, ubarf, wf, vf = u.reshape(-1), ubar.reshape(-1), w.reshape(-1), image.reshape(-1)
    n_iter, gap = 0, math.inf
    while n_iter < max_num_iter:
        n = monitor.next_run(n_iter)
        for _ in range(n):
            dual_ascent_step(p4, ubar3, ih, periodic, sigma * beta, mode)
            rescaled_divergence(p4, u3, w3, ih, periodic, 1.0 / (tau * beta))
            theta = 1.0 / math.sqrt(1.0 + 2.0 * GAMMA_L2 * tau) if accelerate else 1.0
            _prox_extrapolate(wf, uf, ubarf, vf, tau * beta, tau, theta, code)
            if accelerate:
                tau, sigma = tau * theta, sigma / theta
        n_iter += n
        if monitor.wants_gap(n_iter):
            g = duality_gap(
                u,
                image,
                p,
                beta,
                fidelity=fidelity,
                isotropic=isotropic,
                spacing=spacing,
                periodic=periodic,
                floor=floor,
            )
            gap = g.rel
            if monitor.check(n_iter, g):
                break
    if not np.isfinite(gap):  # max_num_iter == 0
        gap = duality_gap(
            u,
            image,
            p,
            beta,
            fidelity=fidelity,
            isotropic=isotropic,
            spacing=spacing,
            periodic=periodic,
            floor=floor,
        ).rel
    return n_iter, gap, tau
