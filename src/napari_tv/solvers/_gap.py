r"""Duality gaps of TV denoising, shared by the iterative solvers.

Stable API (used by ``chambolle.py``, ``primal_dual.py``, ``bregman.py``, ``gradient_descent.py``)
-------------------------------------------------------------------------------------------------
``duality_gap(u, v, p, beta, *, fidelity="l2", isotropic=True, spacing=None, periodic=False,
project=False) -> Gap``
    ``u``, ``v``: arrays of the image's shape (float32/float64, C-contiguous); ``p``: a dual field
    ``(ndim, *shape)`` of the same dtype (not modified; with ``project=True`` a projected copy
    is used, so any field is accepted, e.g. a scaled Bregman variable).
    Returns ``Gap(rel, abs, primal, dual, scale)`` (floats, float64 accumulation).
``fidelity_floor(v, fidelity) -> float``  ``Σ_s min_u f(u, v_s) = Σ_s f(v_s, v_s)``.

The mathematics
---------------
Primal :math:`P(u) = \sum_s f(u_s, v_s) + \beta\,\mathrm{TV}(u)` with
:math:`\mathrm{TV}(u) = \sum_s |(Du)_s|_2` (isotropic) or :math:`\sum_s |(Du)_s|_1`
(anisotropic), :math:`D` the forward differences of ``_kernels``.  Since
:math:`\mathrm{TV}(u) = \max_{p \in B} \langle Du, p\rangle = \max_{p\in B} -\langle u,
\operatorname{div} p\rangle` with :math:`B = \{|p_s|_2 \le 1\}` (isotropic) or
:math:`\{|p_{k,s}| \le 1\}` (anisotropic), the dual is

.. math:: D(p) = -\sum_s f^*\big(z_s, v_s\big),\qquad z = \beta \operatorname{div} p,\ p \in B,

with the convex conjugates :math:`f^*(z) = zv + z^2/2` (L2, so
:math:`D = \tfrac12\|v\|^2 - \tfrac12\|v + \beta\operatorname{div}p\|^2`),
:math:`f^*(z) = zv` for :math:`|z|\le 1` (L1; :math:`+\infty` otherwise) and
:math:`f^*(z) = -v + v\log v - v\log(1-z)` for :math:`z < 1` (Poisson, :math:`v>0`;
:math:`f^*(z) = 0` for :math:`z \le 1` when :math:`v = 0`).  For L1 and Poisson the iterate is
first scaled, :math:`p \to c\,p` with the largest :math:`c \in (0, 1]` making :math:`z` feasible
(:math:`c = \min(1, 1/\max_s|z_s|)` for L1; for Poisson :math:`c = 1` if
:math:`\max_{v_s>0} z_s < 1`, else :math:`(1 - 10^{-3})/\max_{v_s>0} z_s`, then lowered to
:math:`1/\max_{v_s=0} z_s` if that is smaller), which keeps :math:`cp \in B`.  The gap is
accumulated as a sum of non-negative terms (no cancellation), by Fenchel–Young and
Cauchy–Schwarz:

.. math::
    P(u) - D(cp) = \sum_s \big[f(u_s) + f^*(z_s) - z_s u_s\big]
                 + \beta \sum_s \big[|(Du)_s| - c\,\langle (Du)_s, p_s\rangle\big] \ \ge 0 .

The **relative gap** reported by every iterative solver is

.. math:: \mathrm{gap} = \frac{P(u) - D(cp)}{\max\big(P(u) - \sum_s f(v_s, v_s),\ 10^{-300}\big)},

i.e. the absolute gap over the primal energy measured from its fidelity floor
(:math:`\sum_s f(v_s, v_s) = \sum_s \min_u f(u, v_s)`: 0 for L2 and L1,
:math:`\sum_s (v_s - v_s\log v_s)` for Poisson, which makes the ratio invariant to the constant
dropped from the Poisson likelihood).  It bounds the relative suboptimality:
:math:`P(u) - P^\star \le \mathrm{gap}\cdot(P(u) - \sum_s f(v_s, v_s))`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import prange

from napari_tv._compile import ready
from napari_tv._config import inline
from napari_tv._config import jit_unchecked as jit
from napari_tv.fidelity import (
    FIDELITY_CODE,
    dual_domain_update,
    fenchel_young,
    fidelity_value,
    value_scalar,
)
from napari_tv.solvers import _quick
from napari_tv.solvers._stencils import (
    as_3d,
    as_4d,
    back_terms,
    div_at,
    fwd_index,
    inv_steps,
    project_dual,
)

__all__ = ["Gap", "duality_gap", "fidelity_floor"]

#: LLVM may reassociate the float64 sums of the gap (so that they vectorise)
REASSOC = frozenset({"reassoc"})

#: margin that keeps the scaled Poisson dual strictly inside its domain (z < 1)
POISSON_MARGIN = 1e-3


class Gap(NamedTuple):
    """Relative gap, absolute gap, primal ``P(u)``, dual ``D(cp)``, dual scale ``c``."""

    rel: float
    abs: float
    primal: float
    dual: float
    scale: float


@inline
def _gap_voxel(
    acc, u, v, p, i0, i1, i2, j0, j1, j2, im0, im1, im2, a, b, h, periodic, iso, beta, c, code, K
):
    """``acc`` plus the four gap terms at one voxel of the padded view: ``(f(u,v), |Du|,
    Fenchel-Young, |Du| - c<Du,p>)`` in float64.  ``j*`` are the forward neighbours (the
    voxel itself at a Neumann end, where the difference vanishes), ``im*`` the backward ones
    with the divergence's weights ``a = (a0, a1, a2)``, ``b = (b0, b1, b2)`` (``div p =
    Σ_axis h (a p_x - b p_im)``); the last ``K`` axes carry the ``K`` components of ``p``."""
    h0, h1, h2 = h
    a0, a1, a2 = a
    b0, b1, b2 = b
    k2, k1 = K - 1, K - 2
    uc = np.float64(u[i0, i1, i2])
    vs = np.float64(v[i0, i1, i2])
    g2 = h2 * (np.float64(u[i0, i1, j2]) - uc)
    q2 = np.float64(p[k2, i0, i1, i2])
    d = h2 * (a2 * q2 - b2 * np.float64(p[k2, i0, i1, im2]))
    nrm = g2 * g2 if iso else abs(g2)
    dot = g2 * q2
    if K >= 2:
        g1 = h1 * (np.float64(u[i0, j1, i2]) - uc)
        q1 = np.float64(p[k1, i0, i1, i2])
        d += h1 * (a1 * q1 - b1 * np.float64(p[k1, i0, im1, i2]))
        nrm += g1 * g1 if iso else abs(g1)
        dot += g1 * q1
    if K == 3:
        g0 = h0 * (np.float64(u[j0, i1, i2]) - uc)
        q0 = np.float64(p[0, i0, i1, i2])
        d += h0 * (a0 * q0 - b0 * np.float64(p[0, im0, i1, i2]))
        nrm += g0 * g0 if iso else abs(g0)
        dot += g0 * q0
    if iso:
        nrm = math.sqrt(nrm)
    return (
        acc[0] + value_scalar(uc, vs, code),
        acc[1] + nrm,
        acc[2] + fenchel_young(uc, vs, c * beta * d, code),
        acc[3] + (nrm - c * dot),
    )


@inline
def _gap_line(u, v, p, i0, i1, ih, periodic, iso, beta, c, code, K, out, line):
    """``out[line] =`` the sums of ``_gap_voxel`` over the line ``(i0, i1)``."""
    n0, n1, n2 = u.shape
    h = (ih[0], ih[1], ih[2])
    j0 = fwd_index(i0, n0, periodic)
    j1 = fwd_index(i1, n1, periodic)
    im0, a0, b0 = back_terms(i0, n0, periodic)
    im1, a1, b1 = back_terms(i1, n1, periodic)
    acc = (0.0, 0.0, 0.0, 0.0)
    a_in, b_in = (a0, a1, 1.0), (b0, b1, 1.0)
    # fmt: off
    for i2 in range(1, n2 - 1):  # the interior: no boundary test per voxel
        acc = _gap_voxel(acc, u, v, p, i0, i1, i2, j0, j1, i2 + 1, im0, im1, i2 - 1, a_in, b_in,
                         h, periodic, iso, beta, c, code, K)
    for e in range(2 if n2 > 1 else 1):
        i2 = 0 if e == 0 else n2 - 1
        im2, a2, b2 = back_terms(i2, n2, periodic)
        acc = _gap_voxel(acc, u, v, p, i0, i1, i2, j0, j1, fwd_index(i2, n2, periodic), im0, im1,
                         im2, (a0, a1, a2), (b0, b1, b2), h, periodic, iso, beta, c, code, K)
    # fmt: on
    for k in range(4):
        out[line, k] = acc[k]


# The line sums as serial functions: the ROF case (L2, isotropic) of 2-D and 3-D images with
# the fidelity, the norm and the component count as constants, so that the loop over a line
# has no per-voxel branch and vectorises (4x faster than the generic line), and every other
# case.  Reassociation is allowed so that the float64 sums vectorise too.  Each constant
# variant costs compile time (the parallel kernel includes its callees), hence only these.
@jit(fastmath=REASSOC)
def _rof_gap_line(u, v, p, i0, i1, ih, periodic, beta, c, out, line):
    if p.shape[0] == 3:
        _gap_line(u, v, p, i0, i1, ih, periodic, True, beta, c, 0, 3, out, line)
    else:
        _gap_line(u, v, p, i0, i1, ih, periodic, True, beta, c, 0, 2, out, line)


@jit(fastmath=REASSOC)
def _any_gap_line(u, v, p, i0, i1, ih, periodic, isotropic, beta, c, code, out, line):
    _gap_line(u, v, p, i0, i1, ih, periodic, isotropic, beta, c, code, p.shape[0], out, line)


@jit(parallel=True)
def _gap_terms(u, v, p, ih, periodic, isotropic, beta, c, code, out):
    """Per line ``(i0, i1)``: out[line] = (Σ f(u,v), Σ |Du|, Σ Fenchel-Young, Σ |Du| - c<Du,p>),
    with ``div p`` evaluated on the fly: one pass over ``u``, ``v`` and ``p``.  The arrays are
    float32 or float64 (one dtype); every value is widened to float64 as it is read, so the
    terms and the sums are float64 either way."""
    n0, n1, n2 = u.shape
    rof = code == 0 and isotropic and p.shape[0] >= 2
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        if rof:
            _rof_gap_line(u, v, p, i0, i1, ih, periodic, beta, c, out, line)
        else:
            _any_gap_line(u, v, p, i0, i1, ih, periodic, isotropic, beta, c, code, out, line)


@jit(parallel=True)
def _max_slope(v, p, a0, ih, periodic, beta, code, out):
    """Per line, of ``z = beta div p``: ``out[line, 0]`` = max |z| (L1) or max z over v > 0
    (Poisson, where z < 1 is needed); ``out[line, 1]`` = max z over v == 0 (Poisson, z <= 1)."""
    n0, n1, n2 = v.shape
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        m_pos = -np.inf
        m_zero = -np.inf
        for i2 in range(n2):
            z = beta * div_at(p, a0, ih, periodic, i0, i1, i2)
            m_pos, m_zero = dual_domain_update(m_pos, m_zero, z, v[i0, i1, i2], code)
        out[line, 0] = m_pos
        out[line, 1] = m_zero


def fidelity_floor(v: np.ndarray, fidelity: str) -> float:
    """``Σ_s min_u f(u, v_s) = Σ_s f(v_s, v_s)`` (0 for L2 and L1)."""
    return 0.0 if fidelity in ("l2", "l1") else fidelity_value(v, v, fidelity)


def _dual_scale(v3, p4, a0, ih, periodic, beta, code, quick) -> float:
    if code == 0 or beta == 0.0:
        return 1.0
    if quick:
        z_pos, z_zero = _quick.max_slope(v3, p4, ih, periodic, float(beta), code)
    else:
        lines = np.empty((v3.shape[0] * v3.shape[1], 2))
        _max_slope(v3, p4, a0, ih, periodic, float(beta), code, lines)
        z_pos, z_zero = (float(x) for x in lines.max(axis=0))
    return scale_from_slopes(z_pos, z_zero, code)


def scale_from_slopes(z_pos: float, z_zero: float, code: int) -> float:
    """The dual scale ``c`` of the module docstring from the maxima of ``z = beta div p``
    (``_max_slope``: max |z| for L1; max z over v > 0 and over v == 0 for Poisson)."""
    if code == 0:
        return 1.0
    if code == 1:
        return 1.0 if z_pos <= 1.0 else 1.0 / z_pos
    c = 1.0 if z_pos < 1.0 else (1.0 - POISSON_MARGIN) / z_pos
    # (1 - 1e-12): c z == 1 at the largest z over v == 0 could round above 1, where f* = inf
    # (seen as an infinite gap on a 3-D periodic problem every few evaluations)
    return c if z_zero * c <= 1.0 else (1.0 - 1e-12) / z_zero


def duality_gap(
    u: np.ndarray,
    v: np.ndarray,
    p: np.ndarray,
    beta: float,
    *,
    fidelity: str = "l2",
    isotropic: bool = True,
    spacing=None,
    periodic: bool = False,
    project: bool = False,
    floor: float | None = None,
    quick: bool | None = None,
) -> Gap:
    """Duality gap of ``(u, p)`` for ``Σ f(u, v) + beta TV(u)`` (see the module docstring).

    ``floor`` (optional) is ``fidelity_floor(v, fidelity)``, passed by solvers that evaluate
    the gap repeatedly.  ``quick``: evaluate it with the quick serial kernels of ``_quick``
    (True), the fused parallel ones (False), or the fused ones once they are compiled
    (None: :func:`napari_tv._compile.ready`).
    """
    ndim = u.ndim
    a0 = 3 - ndim
    ih = inv_steps(spacing, ndim)
    # read in the arrays' own dtype (float32 or float64: no converted copies of u, v and p,
    # which cost more than the gap itself), every term evaluated and summed in float64
    dt = np.result_type(u, v, p)
    dt = np.float32 if dt == np.float32 else np.float64
    if quick is None:
        quick = not ready("gap", dt)
    u = np.ascontiguousarray(u, dtype=dt)
    v = np.ascontiguousarray(v, dtype=dt)
    if project:  # a small kernel, the same in both tiers
        p = project_dual(np.array(p, dtype=dt, order="C"), 1.0, isotropic)
    else:
        p = np.ascontiguousarray(p, dtype=dt)
    u3, v3, p4 = as_3d(u), as_3d(v), as_4d(p)
    code = FIDELITY_CODE[fidelity]
    c = _dual_scale(v3, p4, a0, ih, bool(periodic), beta, code, quick)
    if quick:
        fid, tv, fy, tg = _quick.gap_terms(
            u3, v3, p4, ih, bool(periodic), bool(isotropic), float(beta), c, code
        )
    else:
        terms = np.empty((u3.shape[0] * u3.shape[1], 4))
        _gap_terms(u3, v3, p4, ih, bool(periodic), bool(isotropic), float(beta), c, code, terms)
        fid, tv, fy, tg = terms.sum(axis=0)
    primal = float(fid + beta * tv)
    gap_abs = float(max(fy + beta * tg, 0.0))
    if floor is None:
        floor = fidelity_floor(v, fidelity)
    denom = max(primal - floor, 1e-300)
    rel = 0.0 if gap_abs == 0.0 else gap_abs / denom
    return Gap(float(rel), gap_abs, primal, primal - gap_abs, c)


def warm(dtype) -> None:
    """Run the fused gap kernels (every fidelity, both TV kinds, projected duals) on a tiny
    problem of ``dtype``: the warm-up and the probe of ``napari_tv._compile``."""
    u = np.linspace(0.5, 2.0, 60).reshape(3, 4, 5).astype(dtype)
    p = np.linspace(-0.8, 0.8, 180).reshape(3, 3, 4, 5).astype(dtype)
    for fidelity, iso in (("l2", True), ("l2", False), ("l1", False), ("poisson", True)):
        duality_gap(u, u[::-1].copy(), p, 0.3, fidelity=fidelity, isotropic=iso, quick=False)
    duality_gap(u, u, p, 0.3, project=True, quick=False)

