r"""Accelerated gradient descent on the ε-smoothed TV energy (seed 000), with continuation in ε.

The energy :math:`E(u) = \sum_s f(u_s, v_s) + \beta\,\mathrm{TV}(u)` is not differentiable where
:math:`\nabla u` vanishes, so we descend on its smoothed version

.. math::

    E_\varepsilon(u) = \sum_s f_\varepsilon(u_s, v_s)
        + \beta \sum_s \sqrt{\textstyle\sum_l (D_l u)_s^2 + \varepsilon^2},

whose gradient is seed 000's :math:`\nabla f_\varepsilon + \beta \sum_l D_l^\top
(D_l u / |\nabla u|_\varepsilon)`, and we let ε decrease geometrically (warm-started) until the
*unsmoothed* problem's duality gap is below ``tol``.  Kernels work on the padded 3-D views of
:mod:`napari_tv.solvers._kernels` (whose per-voxel differences and divergence they reuse), so
one compiled kernel per dtype serves 1-D to 3-D.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange

from .._config import inline
from .._config import jit_unchecked as jit
from ..fidelity import FIDELITY_CODE
from ..operators import tv_energy
from ._gap import duality_gap, fidelity_floor
from ._monitor import Monitor
from ._result import TVResult
from ._stencils import (
    as_3d,
    as_4d,
    back_terms,
    dual_norm_bound,
    fwd_index,
    inv_steps,
    scalar_like,
    threads_for,
)
from .methods import check_solver_call

__all__ = ["solve_gradient_descent"]

_EPS_FACTOR = 0.2
_PATIENCE = 20  # checks without a 1 % gap improvement before ε is decreased anyway


# --------------------------------------------------------------------------------------------
# Kernels (padded views of ``_kernels``: images (n0, n1, n2), fields (K, n0, n1, n2)).  As in
# ``_kernels``: per-line loops whose interior has no boundary branch, constants in the arrays'
# dtype (float32 stays float32 and vectorises), the component count K a compile-time constant.
# --------------------------------------------------------------------------------------------
@inline
def _flux_voxel(u, q, i0, i1, i2, j0, j1, j2, h0, h1, h2, e2, one, aniso, K):
    """``q_s = ∇u_s / |∇u_s|_ε`` at one voxel (``j*``: forward neighbours)."""
    c = u[i0, i1, i2]
    g0 = h0 * (u[j0, i1, i2] - c)
    g1 = h1 * (u[i0, j1, i2] - c)
    g2 = h2 * (u[i0, i1, j2] - c)
    if aniso:
        q[K - 1, i0, i1, i2] = g2 / math.sqrt(g2 * g2 + e2)
        if K >= 2:
            q[K - 2, i0, i1, i2] = g1 / math.sqrt(g1 * g1 + e2)
        if K >= 3:
            q[0, i0, i1, i2] = g0 / math.sqrt(g0 * g0 + e2)
    else:
        inv = one / math.sqrt(g0 * g0 + g1 * g1 + g2 * g2 + e2)
        q[K - 1, i0, i1, i2] = g2 * inv
        if K >= 2:
            q[K - 2, i0, i1, i2] = g1 * inv
        if K >= 3:
            q[0, i0, i1, i2] = g0 * inv


@inline
def _flux_line(u, q, i0, i1, j0, j1, consts, periodic, aniso, K):
    h0, h1, h2, e2, one = consts
    n2 = u.shape[2]
    for i2 in range(n2 - 1):
        _flux_voxel(u, q, i0, i1, i2, j0, j1, i2 + 1, h0, h1, h2, e2, one, aniso, K)
    i2 = n2 - 1
    j2 = fwd_index(i2, n2, periodic)
    _flux_voxel(u, q, i0, i1, i2, j0, j1, j2, h0, h1, h2, e2, one, aniso, K)


@jit(parallel=True)
def _smoothed_flux(u, ih, periodic, eps, aniso, q):
    """``q = ∇u / |∇u|_ε`` (per component when ``aniso``); ``|q| < 1`` when ε > 0."""
    n0, n1, n2 = u.shape
    K = q.shape[0]
    consts = (scalar_like(ih[0], u), scalar_like(ih[1], u), scalar_like(ih[2], u),
              scalar_like(eps * eps, u), scalar_like(1.0, u))
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        j0 = fwd_index(i0, n0, periodic)
        j1 = fwd_index(i1, n1, periodic)
        if K == 3:
            _flux_line(u, q, i0, i1, j0, j1, consts, periodic, aniso, 3)
        elif K == 2:
            _flux_line(u, q, i0, i1, j0, j1, consts, periodic, aniso, 2)
        else:
            _flux_line(u, q, i0, i1, j0, j1, consts, periodic, aniso, 1)


@inline
def _step_voxel(y, q, v, out, i0, i1, i2, im2, a2, b2, line_terms, consts, code, K):
    """``out = y − step (f_ε'(y) − β div q)`` at one voxel (projected on ≥ 0 for Poisson)."""
    im0, a0, b0, im1, a1, b1 = line_terms
    h0, h1, h2, beta, step, ef2, one, zero = consts
    d = h2 * (a2 * q[K - 1, i0, i1, i2] - b2 * q[K - 1, i0, i1, im2])
    if K >= 2:
        d += h1 * (a1 * q[K - 2, i0, i1, i2] - b1 * q[K - 2, i0, im1, i2])
    if K >= 3:
        d += h0 * (a0 * q[0, i0, i1, i2] - b0 * q[0, im0, i1, i2])
    ys = y[i0, i1, i2]
    vs = v[i0, i1, i2]
    if code == 0:
        g = ys - vs
    elif code == 1:
        g = (ys - vs) / math.sqrt((ys - vs) * (ys - vs) + ef2)
    else:
        g = one - vs / ys if vs > zero else one
    x = ys - step * (g - beta * d)
    if code == 2 and x < zero:
        x = zero
    out[i0, i1, i2] = x


@inline
def _step_line(y, q, v, out, line_terms, consts, periodic, code, K, i0, i1):
    one, zero = consts[6], consts[7]
    n2 = y.shape[2]
    for i2 in range(1, n2 - 1):
        _step_voxel(y, q, v, out, i0, i1, i2, i2 - 1, one, one, line_terms, consts, code, K)
    for i2 in (0, n2 - 1):
        im2, a2, b2 = back_terms(i2, n2, periodic)
        a2 = one if a2 != 0.0 else zero
        b2 = one if b2 != 0.0 else zero
        _step_voxel(y, q, v, out, i0, i1, i2, im2, a2, b2, line_terms, consts, code, K)


@jit(parallel=True)
def _descent_step(y, q, v, ih, periodic, beta, step, eps_f, code, out):
    """``out = y − step·(∇f_ε(y) − β div q)``, projected on ``out ≥ 0`` for Poisson."""
    n0, n1, n2 = y.shape
    K = q.shape[0]
    one = scalar_like(1.0, y)
    zero = one - one
    consts = (scalar_like(ih[0], y), scalar_like(ih[1], y), scalar_like(ih[2], y),
              scalar_like(beta, y), scalar_like(step, y), scalar_like(eps_f * eps_f, y),
              one, zero)
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        im0, a0, b0 = back_terms(i0, n0, periodic)
        im1, a1, b1 = back_terms(i1, n1, periodic)
        line_terms = (im0, one if a0 != 0.0 else zero, one if b0 != 0.0 else zero,
                      im1, one if a1 != 0.0 else zero, one if b1 != 0.0 else zero)
        if K == 3:
            _step_line(y, q, v, out, line_terms, consts, periodic, code, 3, i0, i1)
        elif K == 2:
            _step_line(y, q, v, out, line_terms, consts, periodic, code, 2, i0, i1)
        else:
            _step_line(y, q, v, out, line_terms, consts, periodic, code, 1, i0, i1)


@jit(parallel=True)
def _extrapolate(x, x_prev, theta, code, out):
    """``out = x + θ (x − x_prev)``; for Poisson kept ≥ x/2 so ``1 − v/y`` stays finite."""
    n0, n1, n2 = x.shape
    theta = scalar_like(theta, x)
    half = scalar_like(0.5, x)
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        for i2 in range(n2):
            y = x[i0, i1, i2] + theta * (x[i0, i1, i2] - x_prev[i0, i1, i2])
            if code == 2 and y < half * x[i0, i1, i2]:
                y = half * x[i0, i1, i2]
            out[i0, i1, i2] = y


@inline
def _fidelity_values(u, v, eps_f, code):
    """``(f(u, v), f_ε(u, v))`` in float64; Poisson is +inf for ``u < 0`` or ``u = 0 < v``."""
    d = u - v
    if code == 0:
        f = 0.5 * d * d
        return f, f
    if code == 1:
        return abs(d), math.sqrt(d * d + eps_f * eps_f)
    if u < 0.0 or (u == 0.0 and v > 0.0):
        return np.inf, np.inf
    f = u - v * math.log(u) if v > 0.0 else u
    return f, f


@inline
def _energy_voxel(u, v, i0, i1, i2, j0, j1, j2, a0, ih, e2, eps_f, code, aniso, full, acc):
    """Add this voxel's ``(f, f_ε, |∇u|, |∇u|_ε, |∇u|²/|∇u|_ε)`` to ``acc`` (float64)."""
    c = np.float64(u[i0, i1, i2])
    f, fe = _fidelity_values(c, np.float64(v[i0, i1, i2]), eps_f, code)
    g = (ih[0] * (np.float64(u[j0, i1, i2]) - c), ih[1] * (np.float64(u[i0, j1, i2]) - c),
         ih[2] * (np.float64(u[i0, i1, j2]) - c))  # 0 on padded axes
    tv = 0.0
    tv_eps = 0.0
    tv_dot = 0.0
    if aniso:
        for k in range(a0, 3):
            s = g[k] * g[k]
            d = math.sqrt(s + e2)
            tv_eps += d
            if full:
                tv += math.sqrt(s)
                tv_dot += s / d if d > 0.0 else 0.0
    else:
        s = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
        d = math.sqrt(s + e2)
        tv_eps += d
        if full:
            tv += math.sqrt(s)
            tv_dot += s / d if d > 0.0 else 0.0
    return (acc[0] + f, acc[1] + fe, acc[2] + tv, acc[3] + tv_eps, acc[4] + tv_dot)


@inline
def _energy_line(u, v, i0, i1, j0, j1, a0, ih, e2, eps_f, code, aniso, full, periodic):
    n2 = u.shape[2]
    acc = (0.0, 0.0, 0.0, 0.0, 0.0)
    for i2 in range(n2 - 1):
        acc = _energy_voxel(u, v, i0, i1, i2, j0, j1, i2 + 1, a0, ih, e2, eps_f, code, aniso,
                            full, acc)
    i2 = n2 - 1
    j2 = fwd_index(i2, n2, periodic)
    return _energy_voxel(u, v, i0, i1, i2, j0, j1, j2, a0, ih, e2, eps_f, code, aniso, full, acc)


@jit(parallel=True)
def _energy_terms(u, v, a0, ih, periodic, eps, eps_f, code, aniso, full):
    """Sums ``(Σ f, Σ f_ε, Σ |∇u|, Σ |∇u|_ε, Σ |∇u|²/|∇u|_ε)`` (per component if aniso),
    accumulated in float64.  With ``full=False`` only ``Σ f``, ``Σ f_ε``, ``Σ |∇u|_ε``."""
    n0, n1, n2 = u.shape
    e2 = eps * eps
    parts = np.zeros((n0 * n1, 5))
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        j0 = fwd_index(i0, n0, periodic)
        j1 = fwd_index(i1, n1, periodic)
        acc = _energy_line(u, v, i0, i1, j0, j1, a0, ih, e2, eps_f, code, aniso, full, periodic)
        for m in range(5):
            parts[line, m] = acc[m]
    return parts.sum(axis=0)


# --------------------------------------------------------------------------------------------
# Python side
# --------------------------------------------------------------------------------------------
class _Problem:
    """Everything the iterations need, resolved once: padded views, flags, constants."""

    def __init__(self, image, beta, fidelity, tv, spacing, boundary):
        self.shape = image.shape
        self.ndim = image.ndim
        self.a0 = 3 - image.ndim
        self.spacing = spacing
        self.ih = inv_steps(spacing, image.ndim)
        self.periodic = boundary == "periodic"
        self.aniso = tv == "anisotropic"
        self.code = FIDELITY_CODE[fidelity]
        self.fidelity = fidelity
        self.beta = float(beta)
        self.v = image
        self.v3 = as_3d(image)
        self.norm_d = dual_norm_bound(spacing, image.ndim)  # >= ||D||^2
        self.h_min = 1.0 / float(self.ih.max())
        self.floor = fidelity_floor(image, fidelity)

    def eps_f(self, eps):
        """Smoothing of the L1 fidelity, in intensity units (ε times the smallest step)."""
        return eps * self.h_min if self.code == 1 else 0.0

    def lipschitz(self, eps):
        """Lipschitz constant of ∇E_ε: f_ε'' ≤ 1 (l2), 1/ε_f (l1); TV_ε'' ≤ ‖D‖²/ε."""
        fid = 1.0 if self.code == 0 else (1.0 / self.eps_f(eps) if self.code == 1 else 1.0)
        return fid + self.beta * self.norm_d / eps

    def terms(self, x3, eps, full=True):
        """``(Σf, Σf_ε, TV, TV_ε, Σ|∇u|²/|∇u|_ε)`` of the padded iterate ``x3``."""
        return _energy_terms(
            x3, self.v3, self.a0, self.ih, self.periodic, eps, self.eps_f(eps), self.code,
            self.aniso, full,
        )

    def smoothed_energy(self, x3, eps):
        t = self.terms(x3, eps, full=False)
        return float(t[1] + self.beta * t[3])

    def flux(self, x3, eps, q4):
        _smoothed_flux(x3, self.ih, self.periodic, eps, self.aniso, q4)

    def step(self, y3, q4, step, eps, out3):
        _descent_step(
            y3, q4, self.v3, self.ih, self.periodic, self.beta, step, self.eps_f(eps),
            self.code, out3,
        )


def _initial_iterate(image: np.ndarray, init, fidelity: str) -> tuple[np.ndarray, dict]:
    """A fresh copy of the warm start (``image`` by default), in the image's dtype."""
    extra: dict = {}
    if init is None:
        x = image
    elif isinstance(init, TVResult):
        x, extra = init.u, dict(init.extra)
    else:
        x = init
    if np.shape(x) != image.shape:
        raise ValueError(f"init must have the image's shape {image.shape}, got {np.shape(x)}")
    x = np.array(x, dtype=image.dtype, order="C", copy=True)
    if fidelity == "poisson":  # the iterate must lie in the domain: u >= 0, u > 0 where v > 0
        np.maximum(x, 0, out=x)
        bad = (x <= 0) & (image > 0)
        x[bad] = image[bad]
    return x, extra


class _Iterates:
    """Buffers of the monotone accelerated scheme (padded views of C-contiguous arrays)."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.x_prev = x.copy()
        self.y = np.empty_like(x)
        self.z = np.empty_like(x)
        self.q = np.zeros((x.ndim,) + x.shape, dtype=x.dtype)

    def accept(self):
        """``z`` becomes the iterate, the old iterate the previous one."""
        self.x_prev, self.x, self.z = self.x, self.z, self.x_prev

    def restart(self):
        """Forget the momentum."""
        np.copyto(self.x_prev, self.x)


def _momentum_step(prob: _Problem, it: _Iterates, theta: float, L: float, eps: float) -> float:
    """FISTA candidate ``z = y − ∇E_ε(y)/L`` at ``y = x + θ(x − x_prev)``; returns ``E_ε(z)``."""
    _extrapolate(as_3d(it.x), as_3d(it.x_prev), theta, prob.code, as_3d(it.y))
    prob.flux(as_3d(it.y), eps, as_4d(it.q))
    prob.step(as_3d(it.y), as_4d(it.q), 1.0 / L, eps, as_3d(it.z))
    return prob.smoothed_energy(as_3d(it.z), eps)


def _descent_from_x(prob: _Problem, it: _Iterates, L: float, eps: float, e_x: float):
    """Plain (projected) gradient step from ``x`` with Armijo backtracking on ``L``.

    Accepts ``z = P(x − ∇E_ε(x)/L)`` once ``E_ε(z) ≤ E_ε(x) − (L/2)‖z − x‖²`` (sufficient
    decrease; true at once for l2/l1, whose L is a proven Lipschitz bound).  Returns
    ``(E_ε(z), L)``, or ``(None, L)`` when rounding leaves no decrease to make.
    """
    x3, z3, q4 = as_3d(it.x), as_3d(it.z), as_4d(it.q)
    prob.flux(x3, eps, q4)
    for _ in range(60):
        prob.step(x3, q4, 1.0 / L, eps, z3)
        e_z = prob.smoothed_energy(z3, eps)
        d = it.z.astype(np.float64) - it.x
        d2 = float(np.vdot(d, d))
        if e_z <= e_x - 0.5 * L * d2 or (prob.code != 2 and e_z <= e_x):
            return e_z, L
        if prob.code != 2:  # a proven L: only rounding can make the step fail
            return None, L
        L *= 2.0
    return None, L


def solve_gradient_descent(
    image: np.ndarray,
    beta: float,
    *,
    eps: float | None = None,
    check_every: int = 10,
    **params: Any,
) -> TVResult:
    r"""Minimise the TV energy by accelerated gradient descent on its ε-smoothed version.

    The checked entry for direct calls; ``denoise_tv(method="gradient_descent",
    options={...})`` reaches the same solver with the same options.

    Parameters
    ----------
    image : ndarray
        The data ``v``: a float32/float64 array, 1-D to 3-D (not modified).
    beta : float
        Regularisation weight ``β ≥ 0``.
    eps : float, optional
        A fixed smoothing ε > 0 (gradient units): minimise :math:`E_ε` itself, no
        continuation, and stop when the relative duality gap of the smoothed problem is
        ``< tol``.  Default: continuation from ``0.1·ptp(v)/min h`` down by factors of 5.
    check_every : int
        Iterations between gap evaluations and callbacks (default 10).
    **params
        ``fidelity``, ``tv``, ``spacing``, ``boundary``, ``max_num_iter`` (default 3000; one
        iteration costs about four passes over the image), ``tol``, ``callback``, as in
        :func:`napari_tv.denoise_tv`, and ``init`` (default ``image``; a ``TVResult`` of this
        method also passes its final ε, ``extra["eps"]``, so continuation resumes where it
        stopped).  ``fidelity="l1"`` is smoothed as :math:`\sqrt{(u−v)^2 + ε_f^2}`,
        ``ε_f = ε·min h``; ``"poisson"`` is not smoothed (the iterate is kept ``≥ 0`` by
        projection and ``> 0`` where ``v > 0`` by backtracking).  ``tol=0`` runs exactly
        ``max_num_iter`` iterations (unless rounding leaves no decrease to make, reported as
        ``extra["stalled"]``).  The callback comes after iteration 0 and every
        ``check_every`` iterations, with ``info = {"method", "iter", "max_iter", "energy",
        "gap", "elapsed", "fraction", "eps", "smoothed_energy", "smoothed_gap"}``.

    Returns
    -------
    TVResult
        ``u`` (image dtype), ``energy = tv_energy(u, image, beta, ...)`` (unsmoothed), ``gap``
        (relative, unsmoothed), ``history`` (one dict per check: ``iter, energy, gap, elapsed,
        eps, smoothed_energy, smoothed_gap``), ``extra = {"eps", "p", "lipschitz", "stalled",
        "smoothed_gap"}`` with ``p = ∇u/|∇u|_ε`` the dual candidate (``|p| < 1``).

    Raises
    ------
    ValueError
        Unknown ``fidelity`` (supported: "l2", "l1", "poisson"), ``tv`` or ``boundary``;
        ``beta < 0``, ``tol < 0``, ``eps <= 0``; negative data with ``fidelity="poisson"``;
        ``init`` of another shape.
    TypeError
        ``image`` not float32/float64; an option of the wrong type; an unknown keyword.

    Notes
    -----
    **Smoothed energy and its gradient** (seed 000).  With forward differences :math:`D_l`,

    .. math::

        E_ε(u) = \sum_s f_ε(u_s, v_s) + β \sum_s |\nabla u|_{ε,s},\qquad
        \nabla E_ε(u) = f_ε'(u, v) + β \sum_l D_l^\top \frac{D_l u}{|\nabla u|_ε},

    :math:`|\nabla u|_ε = \sqrt{\sum_l (D_l u)^2 + ε^2}` (anisotropic: per component).
    Since :math:`|a| \le \sqrt{a^2+ε^2} \le |a| + ε`, :math:`E \le E_ε \le E + βNε`, and
    :math:`E_ε(u)` decreases when ε does.

    **Step rule.**  The Hessian of :math:`\sqrt{|g|^2+ε^2}` has norm :math:`\le 1/ε` and
    :math:`\|D\|^2 \le 4\sum_l h_l^{-2}`, so :math:`\nabla E_ε` is Lipschitz with
    :math:`L = c_f + 4β\sum_l h_l^{-2}/ε`, :math:`c_f = 1` (l2) or :math:`1/ε_f` (l1); the
    step :math:`1/L` decreases :math:`E_ε` by at least :math:`\|\nabla E_ε\|^2/(2L)`.  Poisson
    has no global L: its projected step is accepted by Armijo backtracking
    (:math:`E_ε(z) \le E_ε(x) - \tfrac L2\|z-x\|^2`, doubling L), and L shrinks by 0.9 per
    iteration.  Acceleration is **monotone FISTA with restart**: the accelerated candidate
    :math:`z = y - \nabla E_ε(y)/L`, :math:`y = x_k + θ_k(x_k - x_{k-1})`, is taken only if
    :math:`E_ε(z) \le E_ε(x_k)`; otherwise the momentum restarts with the plain step from
    :math:`x_k` above.  So :math:`E_ε(x_k)` never increases, at a fixed ε and — because
    :math:`E_ε` decreases with ε — across the continuation too.

    **Stopping rule and continuation.**  Every ``check_every`` iterations the dual candidate
    :math:`p = \nabla u/|\nabla u|_ε` (:math:`|p_s| < 1`, feasible; scaled for l1/Poisson as
    in :mod:`napari_tv.solvers._gap`) gives the unsmoothed duality gap
    :math:`G = P(u) - D(p) \ge P(u) - P^\star`, reported relative to
    :math:`P(u) - \sum_s f(v_s, v_s)`; the run stops when it is ``< tol``.  For l2,
    :math:`G = \tfrac12\|\nabla E_ε(u)\|^2 + S` exactly, with the smoothing part
    :math:`S = β\sum_s (|\nabla u| - |\nabla u|^2/|\nabla u|_ε) \ge 0` (plus
    :math:`\sum_s (f_ε - f)` for l1); :math:`G - S` is the duality gap of the smoothed problem
    (exactly for l2, an estimate for l1/Poisson).  When :math:`G \le 2S`, i.e. the smoothing
    error dominates (or when the gap has not improved by 1 % over 20 checks at this ε), ε is
    divided by 5 (warm start, momentum restart).

    References
    ----------
    .. [1] A. Beck, M. Teboulle, "Fast gradient-based algorithms for constrained total
           variation image denoising and deblurring problems", IEEE TIP 18 (2009) 2419–2434
           (monotone FISTA).
    .. [2] B. O'Donoghue, E. Candès, "Adaptive restart for accelerated gradient schemes",
           Found. Comput. Math. 15 (2015) 715–732.
    .. [3] Y. Nesterov, "Smooth minimization of non-smooth functions", Math. Program. 103
           (2005) 127–152 (smoothing and continuation).

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([0.0, 0.0, 1.0, 1.0])
    >>> r = solve_gradient_descent(v, 0.25, tol=1e-4)
    >>> np.round(r.u, 2)
    array([0.12, 0.12, 0.88, 0.88])
    >>> bool(r.converged), r.gap < 1e-4
    (True, True)
    """
    options = {"eps": eps, "check_every": check_every}
    return _solve_gradient_descent(
        **check_solver_call("gradient_descent", image, beta, options, params)
    )


class _Continuation:
    """The stage at one ε ends when the smoothing error dominates the gap, or when the gap has
    stopped improving at this ε (it may have a floor of its own, e.g. from the scaling that
    makes an l1/Poisson dual candidate feasible)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.best_gap, self.since_best, self.done = np.inf, 0, False

    def update(self, gap, smoothing: float) -> None:
        if gap.rel < 0.99 * self.best_gap:
            self.best_gap, self.since_best = gap.rel, 0
        else:
            self.since_best += 1
        self.done = gap.abs <= 2 * smoothing or self.since_best >= _PATIENCE


def _fista_iteration(prob: _Problem, it: _Iterates, t_mom: float, e_x: float, L: float,
                     eps: float):  # fmt: skip
    """One monotone FISTA iteration at ``eps``: ``(t_mom, E_ε(x), L, stalled)`` after it."""
    t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t_mom * t_mom))
    theta = (t_mom - 1.0) / t_next
    e_z = _momentum_step(prob, it, theta, L, eps) if theta > 0 else np.inf
    stalled = False
    if e_z <= e_x:  # monotone: the accelerated candidate is kept only if it decreases E_ε
        it.accept()
        t_mom, e_x = t_next, e_z
    else:  # (re)start the momentum with a guaranteed-decrease step from x
        e_z, L = _descent_from_x(prob, it, L, eps, e_x)
        if e_z is None:
            stalled = True
        else:
            it.accept()
            e_x = e_z
        t_mom = 0.5 * (1.0 + math.sqrt(5.0))  # FISTA's t_1 after the plain step
    if prob.code == 2:
        L = max(0.9 * L, prob.lipschitz(eps) * 1e-3)
    return t_mom, e_x, L, stalled


def _solve_gradient_descent(
    image, beta, *, fidelity, tv, spacing, boundary, max_num_iter, tol, init, callback, eps,
    check_every,
) -> TVResult:  # fmt: skip
    """:func:`solve_gradient_descent` on checked arguments (``spacing`` a tuple): the table's
    solver."""
    monitor = Monitor("gradient_descent", max_num_iter, tol, callback, every=check_every,
                      progress="gap")  # fmt: skip
    prob = _Problem(image, beta, fidelity, tv, spacing, boundary)
    x, init_extra = _initial_iterate(image, init, fidelity)
    scale = float(np.ptp(image)) / prob.h_min  # the largest jump of the data, as a gradient
    if beta == 0.0 or scale == 0.0:  # u = v minimises the fidelity and has TV = 0
        np.copyto(x, image)
        scale = 1.0
    fixed = eps is not None
    if not fixed:
        eps = float(init_extra.get("eps", 0.1 * scale))
    eps_min = 1e-9 * scale
    it = _Iterates(x)
    stage = _Continuation()

    def measure(eps: float):
        """The gap at ``x`` with the dual candidate ``q = ∇x/|∇x|_ε``, and what ε adds."""
        prob.flux(as_3d(it.x), eps, as_4d(it.q))
        gap = duality_gap(
            it.x, image, it.q, beta, fidelity=fidelity, isotropic=not prob.aniso,
            spacing=spacing, periodic=prob.periodic, floor=prob.floor,
        )
        t = prob.terms(as_3d(it.x), eps)
        smoothing = beta * (t[2] - t[4]) + (t[1] - t[0])  # ≥ 0: the part ε costs the gap
        smoothed_gap = max(gap.abs - smoothing, 0.0) / max(gap.primal - prob.floor, 1e-300)
        stage.update(gap, smoothing)
        return gap, {"eps": eps, "smoothed_energy": float(t[1] + beta * t[3]),
                     "smoothed_gap": smoothed_gap}  # fmt: skip

    def report(n_iter: int, eps: float) -> bool:
        gap, extra = measure(eps)
        stop_on = extra["smoothed_gap"] if fixed else None
        return monitor.check(n_iter, gap, stop_on=stop_on, extra=extra)

    with threads_for(image.size):  # one thread for small images: no fork/join overhead
        if not fixed:  # a warm start may already be better than the first levels resolve
            gap, _ = measure(eps)
            while not gap.rel < tol and stage.done and eps > eps_min:
                eps *= _EPS_FACTOR
                stage.reset()
                gap, _ = measure(eps)
            stage.reset()
        done = report(0, eps)
        L = prob.lipschitz(eps)
        e_x = prob.smoothed_energy(as_3d(it.x), eps)
        t_mom, n_iter, stalled = 1.0, 0, False
        while not done and n_iter < max_num_iter:
            for _ in range(monitor.next_run(n_iter)):
                n_iter += 1
                t_mom, e_x, L, stalled = _fista_iteration(prob, it, t_mom, e_x, L, eps)
                if stalled:
                    break
            done = report(n_iter, eps) or stalled
            if not done and n_iter < max_num_iter and not fixed and stage.done and eps > eps_min:
                eps *= _EPS_FACTOR  # E_ε(x) only decreases when ε does
                L = prob.lipschitz(eps) if prob.code != 2 else L / _EPS_FACTOR
                e_x = prob.smoothed_energy(as_3d(it.x), eps)
                stage.reset()
                it.restart()
                t_mom = 1.0
    u, last = it.x, monitor.history[-1]
    energy = tv_energy(u, image, beta, fidelity=fidelity, tv=tv, boundary=boundary,
                       spacing=spacing)  # fmt: skip
    return TVResult(
        u=u, energy=energy, n_iter=n_iter, converged=monitor.converged and not monitor.cancelled,
        gap=float(last["gap"]), history=monitor.history, elapsed=monitor.elapsed(),
        method="gradient_descent", cancelled=monitor.cancelled,
        extra={"eps": eps, "p": it.q, "lipschitz": L, "stalled": stalled,
               "smoothed_gap": last["smoothed_gap"]},
    )  # fmt: skip


def warm(dtype) -> None:
    """Run gradient descent (every fidelity, both TV kinds and boundaries) on tiny images of
    ``dtype`` (``napari_tv._compile``)."""
    v = np.linspace(0.1, 1.0, 60).reshape(3, 4, 5).astype(dtype)
    for fidelity in ("l2", "l1", "poisson"):
        for tv in ("isotropic", "anisotropic"):
            for boundary in ("neumann", "periodic"):
                solve_gradient_descent(
                    v, 0.1, fidelity=fidelity, tv=tv, boundary=boundary, max_num_iter=10
                )
