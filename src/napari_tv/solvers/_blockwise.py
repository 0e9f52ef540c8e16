"""Kernels of the chunked solve (:mod:`napari_tv.chunked`): primal-dual iterations on one
block extended by its halo, and the duality-gap sums over the voxels a block owns.

Layout: the padded 3-D views of :mod:`napari_tv.solvers._stencils`.  A block arrives extended
by ``depth`` voxels on each side that has a neighbour (none at a Neumann end of the volume:
there the block's edge *is* the volume's edge, and the kernels' Neumann rule is the right
one).  The **owned box** ``[lo, hi)`` (padded-view coordinates, ``int64 (3,)``) is the block
itself inside its extension.

Why a block can run ``n`` iterations alone: one primal-dual iteration reads, at a voxel, only
its neighbours at Chebyshev distance 1 (``D`` looks forward, ``div`` backward, the prox is
pointwise), so the values at distance ``>= n`` from an artificial edge after ``n`` iterations
are the ones the whole-volume iteration computes.  With ``depth >= n + 1`` the owned box and
one more layer are exact, which is what the gap terms read.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from napari_tv._config import jit_unchecked as jit
from napari_tv.fidelity import dual_domain_update
from napari_tv.solvers._gap import REASSOC, _gap_voxel
from napari_tv.solvers._stencils import back_terms, div_at, fwd_index

__all__ = ["box_gap_terms", "box_max_slope", "schedule"]


@jit(parallel=True, fastmath=REASSOC)
def _box_gap_terms(u, v, p, lo, hi, ih, iso, beta, c, code, out):
    """``out[line] =`` the four gap sums of ``_gap._gap_voxel`` over the owned voxels of line
    ``line`` of the box (the extended arrays' edges are Neumann ends)."""
    n0, n1, n2 = u.shape
    m1 = hi[1] - lo[1]
    h = (ih[0], ih[1], ih[2])
    K = p.shape[0]
    for line in prange((hi[0] - lo[0]) * m1):
        i0 = lo[0] + line // m1
        i1 = lo[1] + line % m1
        j0 = fwd_index(i0, n0, False)
        j1 = fwd_index(i1, n1, False)
        im0, a0, b0 = back_terms(i0, n0, False)
        im1, a1, b1 = back_terms(i1, n1, False)
        acc = (0.0, 0.0, 0.0, 0.0)
        for i2 in range(lo[2], hi[2]):
            im2, a2, b2 = back_terms(i2, n2, False)
            acc = _gap_voxel(
                acc, u, v, p, i0, i1, i2, j0, j1, fwd_index(i2, n2, False), im0, im1, im2,
                (a0, a1, a2), (b0, b1, b2), h, False, iso, beta, c, code, K,
            )  # fmt: skip
        for k in range(4):
            out[line, k] = acc[k]


@jit(parallel=True)
def _box_max_slope(v, p, lo, hi, a0, ih, beta, code, out):
    """Per owned line: the maxima of ``z = beta div p`` of ``_gap._max_slope``."""
    m1 = hi[1] - lo[1]
    for line in prange((hi[0] - lo[0]) * m1):
        i0 = lo[0] + line // m1
        i1 = lo[1] + line % m1
        m_pos = -np.inf
        m_zero = -np.inf
        for i2 in range(lo[2], hi[2]):
            z = beta * div_at(p, a0, ih, False, i0, i1, i2)
            m_pos, m_zero = dual_domain_update(m_pos, m_zero, z, v[i0, i1, i2], code)
        out[line, 0] = m_pos
        out[line, 1] = m_zero


def box_gap_terms(u3, v3, p4, lo, hi, ih, isotropic, beta, c, code) -> np.ndarray:
    """float64 ``(4,)``: ``(Σ f(u, v), Σ |Du|, Σ Fenchel-Young, Σ |Du| - c<Du, p>)`` over the
    owned box ``[lo, hi)`` of the extended padded views (see the module docstring)."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    lines = np.empty((int((hi[0] - lo[0]) * (hi[1] - lo[1])), 4))
    _box_gap_terms(u3, v3, p4, lo, hi, ih, bool(isotropic), float(beta), float(c), code, lines)
    return lines.sum(axis=0)


def box_max_slope(v3, p4, lo, hi, a0, ih, beta, code) -> np.ndarray:
    """float64 ``(2,)``: ``(max |z| or max z over v > 0, max z over v == 0)`` of
    ``z = beta div p`` over the owned box (``_gap._dual_scale`` combines them)."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    lines = np.empty((int((hi[0] - lo[0]) * (hi[1] - lo[1])), 2))
    _box_max_slope(v3, p4, lo, hi, a0, ih, float(beta), code, lines)
    return lines.max(axis=0)


def schedule(tau: float, sigma: float, gamma: float, n: int) -> tuple[float, float]:
    """The primal and dual steps after ``n`` iterations from ``(tau, sigma)``: the same
    arithmetic as ``primal_dual._fused_steps`` (every block advances its own copy; the driver
    keeps this one)."""
    for _ in range(n):
        theta = 1.0 / math.sqrt(1.0 + 2.0 * gamma * tau) if gamma > 0.0 else 1.0
        tau, sigma = tau * theta, sigma / theta
    return tau, sigma
