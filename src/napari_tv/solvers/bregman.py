r"""Split Bregman (Goldstein–Osher 2009) for L2–TV denoising, isotropic or anisotropic.

The splitting ``d = ∇u`` turns :math:`\min_u \tfrac12\|u-v\|^2 + \beta\,\mathrm{TV}(u)` into
alternating steps on the augmented Lagrangian (scaled form, penalty ρ)::

    u <- argmin ½‖u − v‖² + (ρ/2)‖d − ∇u − b‖²     (I + ρ DᵀD) u = v − ρ div(d − b)
    d <- shrink(∇u + b, β/ρ)                        per voxel (isotropic) or per component
    b <- b + ∇u − d

The linear system is solved approximately by red–black Gauss–Seidel sweeps (Neumann boundary;
parallel, as in Goldstein–Osher and scikit-image) or exactly by a fast cosine (Neumann) or
Fourier (periodic) transform, which diagonalise ``DᵀD``.  Kernels use the padded views and
per-voxel differences of :mod:`napari_tv.solvers._kernels`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.fft as sfft
from numba import prange

from .._config import inline
from .._config import jit_unchecked as jit
from .._validation import check_real
from ..operators import tv_energy
from ._gap import duality_gap
from ._monitor import Monitor
from ._result import TVResult
from ._stencils import (
    as_3d,
    as_4d,
    back_terms,
    fwd_index,
    inv_steps,
    scalar_like,
    threads_for,
)
from ._stencils import divergence as k_divergence
from ._stencils import gradient as k_gradient
from .methods import check_solver_call

__all__ = ["solve_bregman", "skimage_weight", "beta_from_skimage_weight"]

_MU, _TAU = 3.0, 2.0  # residual balancing: imbalance that triggers a change, and its factor


# --------------------------------------------------------------------------------------------
# Kernels (padded views of ``_kernels``: images (n0, n1, n2), fields (K, n0, n1, n2)); per-line
# loops with a branch-free interior and constants in the arrays' dtype, as in ``_kernels``
# --------------------------------------------------------------------------------------------
@inline
def _div_voxel(p, i0, i1, i2, im2, a2, b2, line_terms, h0, h1, h2, K):
    """``(div p)`` at one voxel; ``line_terms = (im0, a0, b0, im1, a1, b1)``."""
    im0, a0, b0, im1, a1, b1 = line_terms
    d = h2 * (a2 * p[K - 1, i0, i1, i2] - b2 * p[K - 1, i0, i1, im2])
    if K >= 2:
        d += h1 * (a1 * p[K - 2, i0, i1, i2] - b1 * p[K - 2, i0, im1, i2])
    if K >= 3:
        d += h0 * (a0 * p[0, i0, i1, i2] - b0 * p[0, im0, i1, i2])
    return d


@inline
def _rhs_line(v, d, b, out, i0, i1, line_terms, consts, periodic, K):
    h0, h1, h2, rho, one, zero = consts
    n2 = v.shape[2]
    for i2 in range(1, n2 - 1):
        div = _div_voxel(d, i0, i1, i2, i2 - 1, one, one, line_terms, h0, h1, h2, K)
        div -= _div_voxel(b, i0, i1, i2, i2 - 1, one, one, line_terms, h0, h1, h2, K)
        out[i0, i1, i2] = v[i0, i1, i2] - rho * div
    for i2 in (0, n2 - 1):
        im2, a2, b2 = back_terms(i2, n2, periodic)
        a2 = one if a2 != 0.0 else zero
        b2 = one if b2 != 0.0 else zero
        div = _div_voxel(d, i0, i1, i2, im2, a2, b2, line_terms, h0, h1, h2, K)
        div -= _div_voxel(b, i0, i1, i2, im2, a2, b2, line_terms, h0, h1, h2, K)
        out[i0, i1, i2] = v[i0, i1, i2] - rho * div


@jit(parallel=True)
def _u_rhs(v, d, b, ih, periodic, rho, out):
    """``out = v − ρ div(d − b)``, the right-hand side of the u-subproblem."""
    n0, n1, n2 = v.shape
    K = d.shape[0]
    one = scalar_like(1.0, v)
    zero = one - one
    consts = (scalar_like(ih[0], v), scalar_like(ih[1], v), scalar_like(ih[2], v),
              scalar_like(rho, v), one, zero)
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        im0, a0, b0 = back_terms(i0, n0, periodic)
        im1, a1, b1 = back_terms(i1, n1, periodic)
        line_terms = (im0, one if a0 != 0.0 else zero, one if b0 != 0.0 else zero,
                      im1, one if a1 != 0.0 else zero, one if b1 != 0.0 else zero)
        if K == 3:
            _rhs_line(v, d, b, out, i0, i1, line_terms, consts, periodic, 3)
        elif K == 2:
            _rhs_line(v, d, b, out, i0, i1, line_terms, consts, periodic, 2)
        else:
            _rhs_line(v, d, b, out, i0, i1, line_terms, consts, periodic, 1)


@jit(parallel=True)
def _gauss_seidel_colour(u, rhs, ih, rho, colour):
    """One colour of a red–black Gauss–Seidel sweep for ``(I + ρ DᵀD) u = rhs`` (Neumann).

    Voxels of one colour (parity of ``i0 + i1 + i2``) have neighbours of the other colour only,
    so the lines can be updated in parallel and the result does not depend on the order.
    """
    n0, n1, n2 = u.shape
    w0 = scalar_like(rho * ih[0] * ih[0], u)
    w1 = scalar_like(rho * ih[1] * ih[1], u)
    w2 = scalar_like(rho * ih[2] * ih[2], u)
    one = scalar_like(1.0, u)
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        for i2 in range((i0 + i1 + colour) % 2, n2, 2):
            num = rhs[i0, i1, i2]
            den = one
            if i0 > 0:
                num += w0 * u[i0 - 1, i1, i2]
                den += w0
            if i0 + 1 < n0:
                num += w0 * u[i0 + 1, i1, i2]
                den += w0
            if i1 > 0:
                num += w1 * u[i0, i1 - 1, i2]
                den += w1
            if i1 + 1 < n1:
                num += w1 * u[i0, i1 + 1, i2]
                den += w1
            if i2 > 0:
                num += w2 * u[i0, i1, i2 - 1]
                den += w2
            if i2 + 1 < n2:
                num += w2 * u[i0, i1, i2 + 1]
                den += w2
            u[i0, i1, i2] = num / den


@inline
def _shrink_voxel(u, b, d, i0, i1, i2, j0, j1, j2, consts, aniso, K):
    """``w = ∇u + b``; ``d = shrink(w, t)``; ``b = w − d`` at one voxel."""
    h0, h1, h2, t, zero = consts
    c = u[i0, i1, i2]
    w2 = h2 * (u[i0, i1, j2] - c) + b[K - 1, i0, i1, i2]
    w1 = h1 * (u[i0, j1, i2] - c) + b[K - 2, i0, i1, i2] if K >= 2 else zero
    w0 = h0 * (u[j0, i1, i2] - c) + b[0, i0, i1, i2] if K >= 3 else zero
    if aniso:
        a = abs(w2)
        s2 = (a - t) / a if a > t else zero
        a = abs(w1)
        s1 = (a - t) / a if a > t else zero
        a = abs(w0)
        s0 = (a - t) / a if a > t else zero
    else:
        a = math.sqrt(w0 * w0 + w1 * w1 + w2 * w2)
        s2 = (a - t) / a if a > t else zero
        s1 = s2
        s0 = s2
    d[K - 1, i0, i1, i2] = s2 * w2
    b[K - 1, i0, i1, i2] = w2 - s2 * w2
    if K >= 2:
        d[K - 2, i0, i1, i2] = s1 * w1
        b[K - 2, i0, i1, i2] = w1 - s1 * w1
    if K >= 3:
        d[0, i0, i1, i2] = s0 * w0
        b[0, i0, i1, i2] = w0 - s0 * w0


@inline
def _shrink_line(u, b, d, i0, i1, j0, j1, consts, periodic, aniso, K):
    n2 = u.shape[2]
    for i2 in range(n2 - 1):
        _shrink_voxel(u, b, d, i0, i1, i2, j0, j1, i2 + 1, consts, aniso, K)
    i2 = n2 - 1
    _shrink_voxel(u, b, d, i0, i1, i2, j0, j1, fwd_index(i2, n2, periodic), consts, aniso, K)


@jit(parallel=True)
def _shrink_update(u, b, d, ih, periodic, thresh, aniso):
    """``w = ∇u + b``; ``d = shrink(w, thresh)``; ``b = w − d`` (so ``|b_s| ≤ thresh``)."""
    n0, n1, n2 = u.shape
    K = d.shape[0]
    consts = (scalar_like(ih[0], u), scalar_like(ih[1], u), scalar_like(ih[2], u),
              scalar_like(thresh, u), scalar_like(0.0, u))
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        j0 = fwd_index(i0, n0, periodic)
        j1 = fwd_index(i1, n1, periodic)
        if K == 3:
            _shrink_line(u, b, d, i0, i1, j0, j1, consts, periodic, aniso, 3)
        elif K == 2:
            _shrink_line(u, b, d, i0, i1, j0, j1, consts, periodic, aniso, 2)
        else:
            _shrink_line(u, b, d, i0, i1, j0, j1, consts, periodic, aniso, 1)


# --------------------------------------------------------------------------------------------
# Exact u-subproblem: DCT-II (Neumann) or FFT (periodic) diagonalise DᵀD
# --------------------------------------------------------------------------------------------
class _SpectralSolver:
    """Solve ``(I + ρ DᵀD) u = rhs`` exactly.

    Along an axis of length n and step h, ``D_lᵀ D_l`` has the eigenvalues
    ``(2 − 2 cos(π k / n)) / h²`` with the DCT-II vectors (Neumann, forward differences) or
    ``(2 − 2 cos(2π k / n)) / h²`` with the Fourier vectors (periodic).
    """

    def __init__(self, shape: Sequence[int], steps: Sequence[float], periodic: bool, rho: float):
        self.periodic = periodic
        spec_shape = list(shape)
        if periodic:
            spec_shape[-1] = shape[-1] // 2 + 1
        eig = np.zeros(spec_shape)
        for axis, (n, h) in enumerate(zip(shape, steps, strict=True)):
            k = np.arange(spec_shape[axis])
            lam = (2.0 - 2.0 * np.cos((2.0 if periodic else 1.0) * np.pi * k / n)) / (h * h)
            eig += lam.reshape((-1,) + (1,) * (len(shape) - axis - 1))
        self.denom = 1.0 + rho * eig

    def solve(self, rhs: np.ndarray, out: np.ndarray) -> None:
        if self.periodic:
            spec = sfft.rfftn(rhs, workers=-1)
            spec /= self.denom
            out[...] = sfft.irfftn(spec, s=rhs.shape, workers=-1)
        else:
            spec = sfft.dctn(rhs, type=2, norm="ortho", workers=-1)
            spec /= self.denom
            out[...] = sfft.idctn(spec, type=2, norm="ortho", workers=-1)


# --------------------------------------------------------------------------------------------
# Parametrisation of scikit-image's denoise_tv_bregman
# --------------------------------------------------------------------------------------------
def skimage_weight(beta: float) -> float:
    r"""The ``weight`` of ``skimage.restoration.denoise_tv_bregman`` equivalent to ``beta``.

    scikit-image's split Bregman iterations are those of
    :math:`\sum_s |\nabla u|_s + \tfrac{w}{2}\sum_s (u_s-v_s)^2` with ``w = weight``: its
    Gauss–Seidel step solves ``(w + 4λ) u = λ(Σ neighbours + div(b − d)) + w v`` with
    ``λ = 2w``, and its anisotropic shrinkage threshold is ``1/λ``.  (Its docstring writes the
    fidelity as ``λ/2`` with ``weight = λ/2``, which would give ``1/(2β)``; the code, and
    the test that compares the two, say ``1/β``.)  Dividing by ``w`` gives our
    :math:`\tfrac12\|u-v\|^2 + \beta\,TV(u)` with ``β = 1/weight``.  A larger weight means
    *less* smoothing.

    Two differences remain, so the solutions agree only approximately: scikit-image keeps
    its ghost boundary cells at the (reflected) data instead of a Neumann boundary, and its
    isotropic shrinkage ``d = w·|w| / (|w| + 1/λ)`` is not the ROF shrinkage
    ``max(|w| − 1/λ, 0)·w/|w|``, so ``isotropic=True`` does not minimise the isotropic energy;
    compare with ``isotropic=False`` (anisotropic TV).

    Examples
    --------
    >>> skimage_weight(0.2)
    5.0
    """
    beta = check_real("beta", beta, minimum=0.0, strict=True)
    return 1.0 / beta


def beta_from_skimage_weight(weight: float) -> float:
    """The ``beta`` equivalent to ``denoise_tv_bregman(weight=...)``: ``1/weight``.

    See :func:`skimage_weight` for the derivation and the caveats.

    Examples
    --------
    >>> w = skimage_weight(0.2)
    >>> beta_from_skimage_weight(w)
    0.2
    """
    weight = check_real("weight", weight, minimum=0.0, strict=True)
    return 1.0 / weight


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def _initial_state(image, init, beta, rho, steps, periodic):
    """``(u, d, b, rho)`` from ``init``: an array, a Bregman result, or any result with ``p``."""
    extra: dict = {}
    u0 = image
    if isinstance(init, TVResult):
        u0, extra = init.u, init.extra
    elif init is not None:
        u0 = init
    if np.shape(u0) != image.shape:
        raise ValueError(f"init must have the image's shape {image.shape}, got {np.shape(u0)}")
    u = np.array(u0, dtype=image.dtype, order="C", copy=True)
    shape = (image.ndim,) + image.shape
    d = np.zeros(shape, dtype=image.dtype)
    b = np.zeros(shape, dtype=image.dtype)
    if "d" in extra and "b" in extra and "rho" in extra:
        if rho is None:
            rho = float(extra["rho"])
        d[...] = extra["d"]
        b[...] = np.asarray(extra["b"]) * (float(extra["rho"]) / rho)
    elif "p" in extra and np.shape(extra["p"]) == shape and rho is not None and beta > 0:
        # a dual solution p of another method: at the fixed point d = ∇u and b = β p / ρ
        b[...] = np.asarray(extra["p"]) * (beta / rho)
        d[...] = k_gradient(u, steps, periodic)
    return u, d, b, rho


def solve_bregman(
    image: np.ndarray,
    beta: float,
    *,
    rho: float | None = None,
    u_solver: str | None = None,
    sweeps: int = 1,
    adapt: bool = True,
    check_every: int = 10,
    **params: Any,
) -> TVResult:
    r"""Minimise :math:`\tfrac12\|u-v\|^2 + \beta\,\mathrm{TV}(u)` by split Bregman.

    The checked entry for direct calls; ``denoise_tv(method="bregman", options={...})``
    reaches the same solver with the same options.

    Parameters
    ----------
    image : ndarray
        The data ``v``: a float32/float64 array, 1-D to 3-D (not modified).
    beta : float
        Regularisation weight ``β ≥ 0``.  scikit-image's ``denoise_tv_bregman(weight=w)``
        corresponds to ``β = 1/w`` (see :func:`skimage_weight`).
    rho : float, optional
        Initial penalty ρ > 0 (default ``2·min(h)²``; adapted by residual balancing).
    u_solver : {"gauss_seidel", "exact"}, optional
        ``sweeps`` red–black Gauss–Seidel sweeps (default for Neumann), or the exact solve
        by DCT (Neumann) / FFT (periodic; the default there, and the only choice).
    sweeps : int
        Gauss–Seidel sweeps per iteration (default 1, as Goldstein–Osher recommend).
    adapt : bool
        Residual balancing of ρ (default True).
    check_every : int
        Iterations between gap evaluations and callbacks (default 10).
    **params
        ``fidelity`` ("l2" only), ``tv``, ``spacing``, ``boundary``, ``max_num_iter``
        (default 2000), ``tol``, ``callback``, as in :func:`napari_tv.denoise_tv`, and
        ``init``: an array (``u``; ``d = b = 0``), a result of this method (``u, d, b, ρ``
        from ``extra``), or a result of another method whose ``extra["p"]`` is a dual field
        (``b = β p / ρ``).  The callback comes after iteration 0 and every ``check_every``
        iterations, with ``info = {"method", "iter", "max_iter", "energy", "gap", "elapsed",
        "fraction"}``.

    Returns
    -------
    TVResult
        ``u`` (image dtype), ``energy = tv_energy(u, image, beta, ...)``, relative ``gap``,
        ``history`` (``iter, energy, gap, elapsed`` per check), ``extra = {"d", "b", "rho",
        "p", "u_solver"}`` with ``p = ρb/β`` the dual candidate.

    Raises
    ------
    ValueError
        ``fidelity`` other than "l2"; unknown ``tv``, ``boundary`` or ``u_solver``;
        ``u_solver="gauss_seidel"`` with periodic boundary; ``beta < 0``, ``tol < 0``,
        ``rho <= 0``; ``init`` of another shape.
    TypeError
        ``image`` not float32/float64; an option of the wrong type; an unknown keyword.

    Notes
    -----
    With the scaled multiplier ``b`` and penalty ρ, one iteration is

    .. math::

        (I + ρ D^\top D)\,u^{k+1} &= v + ρ D^\top (d^k - b^k) \\
        d^{k+1} &= \operatorname{shrink}(D u^{k+1} + b^k,\ β/ρ) \\
        b^{k+1} &= b^k + D u^{k+1} - d^{k+1}.

    With the exact u-step this is ADMM, which converges for every ρ > 0; with Gauss–Seidel
    sweeps it is Goldstein–Osher's inexact variant.  The optimality condition of the
    d-step, :math:`ρ\,b^{k+1} \in β\,\partial|d^{k+1}|`, makes :math:`p = ρ b/β` a feasible
    dual field (:math:`|p_s| \le 1`; projected once more against rounding), and at a fixed
    point :math:`u = v + β \operatorname{div} p`, the ROF optimality condition.  The reported
    gap is that of :func:`napari_tv.solvers._gap.duality_gap` for ``(u, p)``:
    :math:`(P(u) - D(p)) / P(u) \ge (P(u) - P^\star)/P(u)`.  ρ is adapted by residual
    balancing (primal residual :math:`\|Du - d\|`, dual residual
    :math:`ρ\|D^\top(d^{k+1} - d^k)\|`; ρ doubles or halves when one exceeds 3 times the
    other, ``b`` rescaled so ``ρ b`` is kept).

    References
    ----------
    .. [1] T. Goldstein, S. Osher, "The split Bregman method for L1-regularized problems",
           SIAM J. Imaging Sci. 2 (2009) 323–343.
    .. [2] S. Boyd, N. Parikh, E. Chu, B. Peleato, J. Eckstein, "Distributed optimization and
           statistical learning via the alternating direction method of multipliers",
           Found. Trends Mach. Learn. 3 (2011) 1–122, §3.4.1.
    .. [3] P. Getreuer, "Rudin–Osher–Fatemi total variation denoising using split Bregman",
           IPOL 2 (2012) 74–95.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([0.0, 0.0, 1.0, 1.0])
    >>> r = solve_bregman(v, 0.25, tol=1e-8, max_num_iter=5000)
    >>> np.round(r.u, 4)
    array([0.125, 0.125, 0.875, 0.875])
    >>> bool(r.converged)
    True
    """
    options = {"rho": rho, "u_solver": u_solver, "sweeps": sweeps, "adapt": adapt,
               "check_every": check_every}  # fmt: skip
    return _solve_bregman(**check_solver_call("bregman", image, beta, options, params))


def _solve_bregman(
    image, beta, *, fidelity, tv, spacing, boundary, max_num_iter, tol, init, callback, rho,
    u_solver, sweeps, adapt, check_every,
) -> TVResult:  # fmt: skip
    """:func:`solve_bregman` on checked arguments (``spacing`` a tuple): the table's solver."""
    periodic = boundary == "periodic"
    u_solver = u_solver or ("exact" if periodic else "gauss_seidel")
    monitor = Monitor("bregman", max_num_iter, tol, callback, every=check_every, progress="gap")
    rho0 = rho if rho is not None else _default_rho(min(spacing))
    u, d, b, rho = _initial_state(image, init, beta, rho0, spacing, periodic)
    aniso = tv == "anisotropic"
    ih = inv_steps(spacing, image.ndim)
    u3, v3, d4, b4, rhs = as_3d(u), as_3d(image), as_4d(d), as_4d(b), np.empty_like(u)
    spectral = _SpectralSolver(image.shape, spacing, periodic, rho) if u_solver == "exact" else None

    def dual():
        return b * (rho / beta) if beta > 0 else np.zeros_like(b)

    def gap_now():
        return duality_gap(u, image, dual(), beta, isotropic=not aniso, spacing=spacing,
                           periodic=periodic, project=True)  # fmt: skip

    with threads_for(image.size):  # one thread for small images: no fork/join overhead
        done = monitor.check(0, gap_now())
        n_iter = 0
        d_prev, b_prev = np.empty_like(d), np.empty_like(b)
        while not done and n_iter < max_num_iter:
            n = monitor.next_run(n_iter)
            for k in range(n):
                if k == n - 1 and adapt:  # the residuals of the round's last iteration
                    np.copyto(d_prev, d)
                    np.copyto(b_prev, b)
                _u_rhs(v3, d4, b4, ih, periodic, rho, as_3d(rhs))
                if spectral is not None:
                    spectral.solve(rhs, u)
                else:
                    for _ in range(sweeps):
                        _gauss_seidel_colour(u3, as_3d(rhs), ih, rho, 0)
                        _gauss_seidel_colour(u3, as_3d(rhs), ih, rho, 1)
                _shrink_update(u3, b4, d4, ih, periodic, beta / rho, aniso)
            n_iter += n
            done = monitor.check(n_iter, gap_now())
            if not done and adapt:
                factor = _balance_residuals(b, b_prev, d, d_prev, rho, spacing, periodic)
                if factor != 1.0:  # the scaled multiplier b = y/ρ follows ρ
                    rho *= factor
                    b /= factor
                    if spectral is not None:
                        spectral = _SpectralSolver(image.shape, spacing, periodic, rho)
    return TVResult(
        u=u, energy=tv_energy(u, image, beta, tv=tv, boundary=boundary, spacing=spacing),
        n_iter=n_iter, converged=monitor.converged and not monitor.cancelled,
        gap=float(monitor.history[-1]["gap"]), history=monitor.history,
        elapsed=monitor.elapsed(), method="bregman", cancelled=monitor.cancelled,
        extra={"d": d, "b": b, "rho": rho, "p": dual(), "u_solver": u_solver},
    )  # fmt: skip


def _balance_residuals(b, b_prev, d, d_prev, rho, steps, periodic) -> float:
    """Residual balancing (Boyd et al. 2011, §3.4.1): the factor to multiply ρ by.

    Primal residual ``r = ‖∇u − d‖ = ‖b − b_prev‖``, dual residual
    ``s = ρ‖div(d − d_prev)‖``; ρ doubles when ``r > 3 s`` and halves when ``s > 3 r``.
    """
    r = float(np.linalg.norm((b - b_prev).ravel()))
    s = rho * float(np.linalg.norm(k_divergence(d - d_prev, steps, periodic).ravel()))
    if r > _MU * s:
        return _TAU
    if s > _MU * r:
        return 1.0 / _TAU
    return 1.0


def _default_rho(h_min: float) -> float:
    return 2.0 * h_min * h_min


def warm(dtype) -> None:
    """Run split Bregman (both TV kinds, boundaries and u-solvers) on tiny images of
    ``dtype`` (``napari_tv._compile``)."""
    v = np.linspace(0.0, 1.0, 60).reshape(3, 4, 5).astype(dtype)
    runs = (("neumann", "gauss_seidel"), ("neumann", "exact"), ("periodic", "exact"))
    for tv in ("isotropic", "anisotropic"):
        for boundary, u_solver in runs:
            solve_bregman(v, 0.1, tv=tv, boundary=boundary, u_solver=u_solver, max_num_iter=10)
