r"""Quick kernels: plain serial loops that compile in about a second each.

The fused, parallel kernels of ``_stencils``, ``_chambolle_sweep`` and ``_gap`` are fast but
take 15-45 s to compile (the Chambolle sweep, the duality gap); a new user, a new dtype or a
Numba upgrade would wait that long, silently, for a first result.  These twins compute the
same quantities with the same discretisation (``_stencils``' layout: padded 3-D views,
``ih = inv_steps(spacing)``, ``periodic`` a bool) in straightforward loops, so Numba compiles
them in a second or two.  A solver takes them while :func:`napari_tv._compile.ready` says the
fused family is not compiled yet (it is then compiling in a background process), and the
fused kernels once it is: the iterates agree to rounding (``tests/test_compile.py``).

The gap widens every value to float64 as it is read and sums in float64, as ``_gap`` does (so
the two agree to summation order); the iteration kernels work in the arrays' precision with
float64 constants, and agree with the fused ones to float32 rounding.  Everything here is
serial: a first result on one core while the other compiles the fused kernels.

``dual_step(p4, w3, ih, periodic, tau, mode)``     in place, the three modes of
                                                   ``_stencils.dual_ascent_step``
``rescaled_divergence(p4, v3, w3, ih, periodic, s)``  ``w3 <- div p4 + s v3``
``chambolle_steps(p4, v3, w3, ih, periodic, tau, inv_beta, mode, n)``  n Chambolle iterations
``prox_extrapolate(w, u, ubar, v, tb, tau, theta, code)``  primal-dual's primal step (flat)
``primal_dual_steps(...)``                         n primal-dual iterations (as
                                                   ``primal_dual._fused_steps``)
``max_slope(v3, p4, ih, periodic, beta, code) -> (m_pos, m_zero)``  as ``_gap._max_slope``
``gap_terms(u3, v3, p4, ih, periodic, iso, beta, c, code) -> (fid, tv, fy, tg)``  as
                                                   ``_gap._gap_terms``, summed
"""

from __future__ import annotations

import math

import numpy as np

from napari_tv._config import jit_unchecked
from napari_tv.fidelity import dual_domain_update, fenchel_young, prox_scalar, value_scalar
from napari_tv.solvers._stencils import CHAMBOLLE, CLIP, as_3d, as_4d, fwd_index

__all__ = [
    "QuickSweep",
    "chambolle_steps",
    "dual_step",
    "gap_terms",
    "max_slope",
    "primal_dual_steps",
    "prox_extrapolate",
    "rescaled_divergence",
]

@jit_unchecked
def _prev(i, n, periodic):
    """Backward neighbour (``i`` itself at a Neumann start)."""
    if i > 0:
        return i - 1
    return n - 1 if periodic else i


@jit_unchecked
def _div_line(p, ih, periodic, i0, i1, out):
    """``out[i2] = (div p)[i0, i1, i2]`` along one line of the padded view (component ``k``
    on axis ``3 - K + k``; Neumann: ``a p[i] - b p[i-1]`` with ``a = [i < n-1]``,
    ``b = [i > 0]``)."""
    K, n0, n1, n2 = p.shape
    k0, k1, k2 = 0, K - 2, K - 1
    h0, h1, h2 = ih[0], ih[1], ih[2]
    m0, m1 = _prev(i0, n0, periodic), _prev(i1, n1, periodic)
    a0 = 1.0 if periodic or i0 < n0 - 1 else 0.0
    b0 = 1.0 if periodic or i0 > 0 else 0.0
    a1 = 1.0 if periodic or i1 < n1 - 1 else 0.0
    b1 = 1.0 if periodic or i1 > 0 else 0.0
    for i2 in range(n2):
        m2 = _prev(i2, n2, periodic)
        a2 = 1.0 if periodic or i2 < n2 - 1 else 0.0
        b2 = 1.0 if periodic or i2 > 0 else 0.0
        d = h2 * (a2 * p[k2, i0, i1, i2] - b2 * p[k2, i0, i1, m2])
        if K >= 2:
            d += h1 * (a1 * p[k1, i0, i1, i2] - b1 * p[k1, i0, m1, i2])
        if K == 3:
            d += h0 * (a0 * p[k0, i0, i1, i2] - b0 * p[k0, m0, i1, i2])
        out[i2] = d


@jit_unchecked
def _update(q0, q1, q2, g0, g1, g2, tau, mode):
    """The dual update of one voxel from ``q = p + tau g`` and ``g``."""
    if mode == CLIP:
        return min(1.0, max(-1.0, q0)), min(1.0, max(-1.0, q1)), min(1.0, max(-1.0, q2))
    if mode == CHAMBOLLE:
        s = 1.0 / (1.0 + tau * math.sqrt(g0 * g0 + g1 * g1 + g2 * g2))
    else:
        s = 1.0 / max(1.0, math.sqrt(q0 * q0 + q1 * q1 + q2 * q2))
    return q0 * s, q1 * s, q2 * s


@jit_unchecked
def dual_step(p, w, ih, periodic, tau, mode):
    """In place, with ``g = D w``: CHAMBOLLE ``p <- (p + tau g) / (1 + tau |g|)``; CLIP
    ``p <- clip(p + tau g, -1, 1)``; PROJECT ``p <- (p + tau g) / max(1, |p + tau g|)``.
    Component ``k`` is on axis ``3 - K + k``; a padded axis has ``g = 0`` (``ih`` is 0)."""
    K, n0, n1, n2 = p.shape
    k0, k1, k2 = 0, max(K - 2, 0), K - 1  # a missing component repeats one (written last)
    h0, h1, h2 = ih[0], ih[1], ih[2]
    last = fwd_index(n2 - 1, n2, periodic)
    for i0 in range(n0):
        j0 = fwd_index(i0, n0, periodic)
        for i1 in range(n1):
            j1 = fwd_index(i1, n1, periodic)
            for i2 in range(n2):
                j2 = i2 + 1 if i2 + 1 < n2 else last
                c = w[i0, i1, i2]
                g0 = h0 * (w[j0, i1, i2] - c)
                g1 = h1 * (w[i0, j1, i2] - c)
                g2 = h2 * (w[i0, i1, j2] - c)
                q0, q1, q2 = _update(
                    p[k0, i0, i1, i2] + tau * g0 if K == 3 else 0.0,
                    p[k1, i0, i1, i2] + tau * g1 if K >= 2 else 0.0,
                    p[k2, i0, i1, i2] + tau * g2,
                    g0,
                    g1,
                    g2,
                    tau,
                    mode,
                )
                p[k0, i0, i1, i2] = q0
                p[k1, i0, i1, i2] = q1
                p[k2, i0, i1, i2] = q2


@jit_unchecked
def rescaled_divergence(p, v, w, ih, periodic, inv_beta):
    """``w <- div p + inv_beta v``."""
    n0, n1, n2 = v.shape
    line = np.empty(n2)
    for i0 in range(n0):
        for i1 in range(n1):
            _div_line(p, ih, periodic, i0, i1, line)
            for i2 in range(n2):
                w[i0, i1, i2] = line[i2] + inv_beta * v[i0, i1, i2]


@jit_unchecked
def chambolle_steps(p, v, w, ih, periodic, tau, inv_beta, mode, n):
    """``n`` iterations of Chambolle's ``w = div p + v / beta; p <- update(p, D w)``."""
    for _ in range(n):
        rescaled_divergence(p, v, w, ih, periodic, inv_beta)
        dual_step(p, w, ih, periodic, tau, mode)


@jit_unchecked
def prox_extrapolate(w, u, ubar, v, tb, tau, theta, code):
    """Flat arrays: ``u+ = prox_{tau f}(tb w)``, ``ubar = u+ + theta (u+ - u)``, ``u = u+``."""
    for s in range(u.size):
        un = prox_scalar(tb * w[s], v[s], tau, code)
        ubar[s] = un + theta * (un - u[s])
        u[s] = un


@jit_unchecked
def primal_dual_steps(
    p, u, ubar, w, uf, ubarf, wf, vf, ih, periodic, mode, code, beta, tau, sigma, gamma, n
):
    """``n`` primal-dual iterations (``primal_dual._fused_steps`` on the quick kernels)."""
    for _ in range(n):
        dual_step(p, ubar, ih, periodic, sigma * beta, mode)
        rescaled_divergence(p, u, w, ih, periodic, 1.0 / (tau * beta))
        theta = 1.0 / math.sqrt(1.0 + 2.0 * gamma * tau) if gamma > 0.0 else 1.0
        prox_extrapolate(wf, uf, ubarf, vf, tau * beta, tau, theta, code)
        tau, sigma = tau * theta, sigma / theta
    return tau, sigma


@jit_unchecked
def max_slope(v, p, ih, periodic, beta, code):
    """Of ``z = beta div p``: ``(max |z|, -inf)`` (L1) or ``(max z over v > 0, max z over
    v == 0)`` (Poisson)."""
    n0, n1, n2 = v.shape
    m_pos = -math.inf
    m_zero = -math.inf
    line = np.empty(n2)
    for i0 in range(n0):
        for i1 in range(n1):
            _div_line(p, ih, periodic, i0, i1, line)
            for i2 in range(n2):
                z = beta * line[i2]
                m_pos, m_zero = dual_domain_update(m_pos, m_zero, z, v[i0, i1, i2], code)
    return m_pos, m_zero


@jit_unchecked
def gap_terms(u, v, p, ih, periodic, iso, beta, c, code):
    """``(Σ f(u, v), Σ |Du|, Σ Fenchel-Young(u, c beta div p), Σ |Du| - c <Du, p>)`` in
    float64 (see ``_gap``)."""
    K, n0, n1, n2 = p.shape
    h0, h1, h2 = ih[0], ih[1], ih[2]
    fid = 0.0
    tv = 0.0
    fy = 0.0
    tg = 0.0
    line = np.empty(n2)
    for i0 in range(n0):
        j0 = fwd_index(i0, n0, periodic)
        for i1 in range(n1):
            j1 = fwd_index(i1, n1, periodic)
            _div_line(p, ih, periodic, i0, i1, line)
            for i2 in range(n2):
                uc = np.float64(u[i0, i1, i2])
                vs = np.float64(v[i0, i1, i2])
                g0 = h0 * (u[j0, i1, i2] - uc)
                g1 = h1 * (u[i0, j1, i2] - uc)
                g2 = h2 * (u[i0, i1, fwd_index(i2, n2, periodic)] - uc)
                if iso:
                    nrm = math.sqrt(g0 * g0 + g1 * g1 + g2 * g2)
                else:
                    nrm = abs(g0) + abs(g1) + abs(g2)
                dot = g2 * p[K - 1, i0, i1, i2]
                if K >= 2:
                    dot += g1 * p[K - 2, i0, i1, i2]
                if K == 3:
                    dot += g0 * p[0, i0, i1, i2]
                fid += value_scalar(uc, vs, code)
                tv += nrm
                fy += fenchel_young(uc, vs, c * beta * line[i2], code)
                tg += nrm - c * dot
    return fid, tv, fy, tg


class QuickSweep:
    """Chambolle's iteration on the quick kernels, with the interface of
    ``_chambolle_sweep.FusedDualSweep`` that ``chambolle.py`` uses (``p``, ``step(n)``)."""

    def __init__(self, p, v, ih, periodic, tau, inv_beta, mode):
        shape = (v.ndim,) + v.shape
        self.p = np.zeros(shape, v.dtype) if p is None else np.array(p, v.dtype, order="C")
        self.v, self.w = v, np.empty_like(v)
        self.ih, self.periodic = np.asarray(ih, dtype=np.float64), bool(periodic)
        self.tau, self.inv_beta, self.mode = float(tau), float(inv_beta), int(mode)

    def step(self, n=1):
        """Run ``n`` iterations."""
        p4, v3, w3 = as_4d(self.p), as_3d(self.v), as_3d(self.w)
        chambolle_steps(
            p4, v3, w3, self.ih, self.periodic, self.tau, self.inv_beta, self.mode, int(n)
        )
