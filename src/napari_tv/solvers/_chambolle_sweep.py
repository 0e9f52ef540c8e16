"""Chambolle's iteration fused into passes over slabs: the kernel of ``chambolle.py``.

``FusedDualSweep(p, v, ih, periodic, tau, inv_beta, mode)`` runs Chambolle's iteration
``w = div p + inv_beta v; p <- update(p, D w)`` (``mode`` CHAMBOLLE or CLIP of
``_stencils.dual_ascent_step``), several iterations per parallel pass, with no stored ``w``;
``step(n)`` runs ``n`` iterations.  The layout and the discretisation are those of
``_stencils``; its storage comes from ``_pages``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from napari_tv._config import inline, jit_unchecked
from napari_tv.solvers._pages import page_arrays
from napari_tv.solvers._stencils import (
    CHAMBOLLE,
    CLIP,
    as_3d,
    as_4d,
    back_terms,
    dual_ascent_step,
    fwd_index,
    rescaled_divergence,
    scalar_like,
    steps_like,
)

__all__ = [
    "SWEEP_CHUNK",
    "SWEEP_LEVELS",
    "SWEEP_ROW_2D",
    "SWEEP_SLAB_2D",
    "SWEEP_W_OFFSET",
    "FusedDualSweep",
]


# ----------------------------------------------------------------------------------------------
# Chambolle's iteration fused into passes over slabs, several iterations per pass: no stored
# w = div p + v/beta.
#
# The image is cut into slabs along its outermost real axis (planes in 3-D, groups of m rows
# in 2-D); a slab is a flat array of m rows of n2 and each block of consecutive slabs is one
# task.  A task streams its slabs keeping the w of two slabs per level in a small per-task
# buffer (cache-resident).  Level 0 computes w of slab i+1 (from the old p of slabs i+1 and i)
# and updates p of slab i from the w of slabs i and i+1, by chunks of rows (``_slab_step``);
# level l does the same l slabs behind, on the values level l-1 has just written (see
# ``_multi_block``).  Per pass of L levels p is read and written once and v read once
# ((2K + 1) N values instead of L (3K + 3) N for L plain two-kernel iterations), in ONE
# parallel region.  The neighbouring blocks' old p (L slabs on each side, whose first
# iterations the task recomputes as ghost slabs) come from halo copies taken at the end of the
# previous pass, double buffered by parity so that no task reads what another is writing.
# ----------------------------------------------------------------------------------------------


# The slab kernels address everything by flat offsets into three 1-D arrays, so that no array
# view is created per slab (creating one is an atomic reference count on the array's memory
# info, contended between the threads: with views per slab, a 2048 x 128 image ran no faster
# on two threads than on one):
#   S  the dual p (component k of slab i at (k n0 + i) M) followed by the halo copies,
#   V  a copy of the image (slab i at i M),   W  the per-task w buffers, which hold tau w
#      (the w functions get the inverse steps and 1/beta times tau, ``hw`` and ``ib``; the
#      update's step tau D w is then the inverse steps ``h`` times differences of W).
# A slab is m rows of n2 (M = m n2 values).  The rows with the same middle-axis terms (3-D) or
# outer-axis terms (2-D, where the rows of a slab are consecutive rows of the image: the first
# row's neighbour above is the previous slab's last row, the last row's neighbour below the
# next slab's first row) are one flat loop each: the first, the interior ones, the last.  A
# flat loop treats every voxel as an interior one of its row; the first and the last voxel of
# every row are then put right by scalar code.  The flat loops index with unsigned integers
# (no negative-index wrap-around check), so LLVM vectorises them.  2-D rows of at least
# ``SWEEP_ROW_2D`` voxels are slabs of their own, and ``_row_step`` does the next row's w and
# this row's update in one loop.


@inline
def _middle_w(r, m, n2, periodic, one):
    """``(o1, a1, b1)``: the middle-axis part of ``div p`` on row ``r`` of a slab of ``m`` rows
    is ``a1 q1[k] - b1 q1[k + o1]`` at flat index ``k``."""
    zero = one - one
    if periodic:
        return (-n2 if r > 0 else (m - 1) * n2), one, one
    return (-n2 if r > 0 else 0), (one if r < m - 1 else zero), (one if r > 0 else zero)


@inline
def _middle_update(r, m, n2, periodic):
    """``o1``: the middle-axis difference of w on row ``r`` is ``w[k + o1] - w[k]``."""
    if r < m - 1:
        return n2
    return -(m - 1) * n2 if periodic else 0


@inline
def _outer_w(r, m, n2, q0, prev, a0, b0, one, K):
    """``(base, a, b)``: the outer-axis part of ``div p`` on row ``r`` of a slab is
    ``a q0[k] - b S[base + k]``.  3-D: the previous slab (``prev``) with the slab's back terms
    ``a0, b0``; 2-D (K == 2, slabs of ``m`` rows of the image): the row above, in this slab
    or, for row 0, the last row of the previous slab, with ``a0`` / ``b0`` at the slab's last
    / first row only."""
    if K == 3:
        return prev, a0, b0
    if r == 0:
        return prev + (m - 1) * n2, (a0 if m == 1 else one), b0
    return q0 - n2, (a0 if r == m - 1 else one), one


@inline
def _outer_update(r, m, n2, wc, wn, K):
    """``base``: the outer-axis difference of w on row ``r`` of a slab is
    ``W[base + k] - W[wc + k]``.  3-D: the next slab's w (``wn``; ``wn == wc`` when there is
    none, so the difference is 0); 2-D (K == 2, slabs of rows): the row below, in this slab
    or, for the last row, the first row of the next slab."""
    if K == 3:
        return wn
    if r < m - 1:
        return wc + n2
    return wc if wn == wc else wn - (m - 1) * n2


@inline
def _flat_w(S, V, W, q, prev, ov, ow, k0, k1, o1, a0, b0, a1, b1, h0, h1, h2, ib, K):
    """``w = div p + ib v`` into ``W[ow + k]`` for ``k`` in ``[k0, k1)`` of a slab whose
    components start at ``q = (q0, q1, q2)`` in ``S`` (``prev``: the outer component of the
    previous slab; ``ov``: the slab of ``V``), with the inner difference ``q2[k] - q2[k - 1]``
    of the interior of a row (at ``k = 0`` it reads the value before the slab's inner
    component, which is in ``S`` since that component is never the first one)."""
    c0, c1, c2 = np.uint64(q[0] + k0), np.uint64(q[1] + k0), np.uint64(q[2] + k0)
    l1, l2 = np.uint64(q[1] + k0 + o1), np.uint64(q[2] + k0 - 1)
    pv, sv, sw = np.uint64(prev + k0), np.uint64(ov + k0), np.uint64(ow + k0)
    for j in range(k1 - k0):
        u = np.uint64(j)
        d = h2 * (S[c2 + u] - S[l2 + u]) + h0 * (a0 * S[c0 + u] - b0 * S[pv + u])
        if K == 3:
            d += h1 * (a1 * S[c1 + u] - b1 * S[l1 + u])
        W[sw + u] = d + ib * V[sv + u]


@inline
def _w_edges(S, V, W, q, prev, ov, ow, r, n2, a0, b0, a1, b1, o1, periodic, h, ib, one, K):
    """The first and the last voxel of row ``r`` of ``w = div p + ib v``."""
    h0, h1, h2 = h
    zero = one - one
    for e in range(2 if n2 > 1 else 1):
        i2 = 0 if e == 0 else n2 - 1
        im2, a2f, b2f = back_terms(i2, n2, periodic)
        k = r * n2 + i2
        km = r * n2 + im2
        d = h2 * ((S[q[2] + k] if a2f != 0.0 else zero) - (S[q[2] + km] if b2f != 0.0 else zero))
        d += h0 * (a0 * S[q[0] + k] - b0 * S[prev + k])
        if K == 3:
            d += h1 * (a1 * S[q[1] + k] - b1 * S[q[1] + k + o1])
        W[ow + k] = d + ib * V[ov + k]


@inline
def _rows_w(S, V, W, q, prev, ov, ow, n2, m, r0, r1, a0, b0, periodic, h, ib, one, K):
    """``w = div p + ib v`` on rows ``[r0, r1)`` of one slab (``q``: the offsets of its outer,
    middle (K == 3) and inner components in ``S``; ``prev``: the outer component of the
    previous slab; ``a0, b0``: the slab's outer back terms, in the arrays' dtype).  The rows
    with the same middle-axis (3-D) or outer-axis (2-D) terms are one flat loop each."""
    h0, h1, h2 = h
    r = r0
    while r < r1:
        re = r + 1 if r == 0 or r >= m - 1 else min(r1, m - 1)
        o1, a1, b1 = _middle_w(r, m, n2, periodic, one)
        pb, ar, br = _outer_w(r, m, n2, q[0], prev, a0, b0, one, K)
        _flat_w(S, V, W, q, pb, ov, ow, r * n2, re * n2, o1, ar, br, a1, b1, h0, h1, h2, ib, K)
        for i in range(r, re):
            _w_edges(S, V, W, q, pb, ov, ow, i, n2, ar, br, a1, b1, o1, periodic, h, ib, one, K)
        r = re


@inline
def _dual_update(x0, x1, x2, t0, t1, t2, one, K, mode):
    """Chambolle's (mode CHAMBOLLE) or the clipped (CLIP) dual update of one voxel's
    ``(x0, x1, x2)`` by the step ``t = tau D w`` (``x1`` and ``t1`` unused unless K == 3): the
    new values."""
    if mode == CHAMBOLLE:
        nrm = t0 * t0 + t2 * t2
        if K == 3:
            nrm += t1 * t1
        s = one / (one + math.sqrt(nrm))
        return (x0 + t0) * s, (x1 + t1) * s, (x2 + t2) * s
    return (
        min(one, max(-one, x0 + t0)),
        min(one, max(-one, x1 + t1)),
        min(one, max(-one, x2 + t2)),
    )


@inline
def _flat_update(S, W, q, wc, wn, k0, k1, o1, h0, h1, h2, one, K, mode):
    """Update p (components at ``q`` in ``S``) on the flat indices ``[k0, k1)`` from the w of
    this slab (at ``wc`` in ``W``) and of the next one (``wn``), with the inner difference
    ``w[k + 1] - w[k]`` of the interior of a row (at the slab's last voxel it reads the value
    after the buffer, which is in ``W``: it has one more element)."""
    zero = one - one
    c0, c1, c2 = np.uint64(q[0] + k0), np.uint64(q[1] + k0), np.uint64(q[2] + k0)
    sc, sr, sm = np.uint64(wc + k0), np.uint64(wc + k0 + 1), np.uint64(wc + k0 + o1)
    sn = np.uint64(wn + k0)
    for j in range(k1 - k0):
        u = np.uint64(j)
        x = W[sc + u]
        g1 = h1 * (W[sm + u] - x) if K == 3 else zero
        g0, g2 = h0 * (W[sn + u] - x), h2 * (W[sr + u] - x)
        r0, r1, r2 = _dual_update(S[c0 + u], S[c1 + u], S[c2 + u], g0, g1, g2, one, K, mode)
        S[c0 + u] = r0
        if K == 3:
            S[c1 + u] = r1
        S[c2 + u] = r2


@inline
def _rows_update(S, W, E, q, wc, wn, n2, m, r0, r1, periodic, h, one, K, mode):
    """Update p on rows ``[r0, r1)`` of one slab from the w of this slab (at ``wc``) and of the
    next one (``wn``): the last voxel of every row first into ``E`` (from the old p), then the
    rows with the same middle- (3-D) or outer-axis (2-D) difference as flat loops over whole
    rows (so that their length is a multiple of the row length, with no vector remainder when
    that is a multiple of the vector width), then ``E`` back."""
    h0, h1, h2 = h
    zero = one - one
    i2 = n2 - 1
    j2 = fwd_index(i2, n2, periodic)
    for r in range(r0, r1):
        k = r * n2 + i2
        x = W[wc + k]
        g1 = h1 * (W[wc + fwd_index(r, m, periodic) * n2 + i2] - x) if K == 3 else zero
        g0 = h0 * (W[_outer_update(r, m, n2, wc, wn, K) + k] - x)
        g2 = h2 * (W[wc + r * n2 + j2] - x)
        x0, x1, x2 = S[q[0] + k], S[q[1] + k], S[q[2] + k]
        E[0, r], E[1, r], E[2, r] = _dual_update(x0, x1, x2, g0, g1, g2, one, K, mode)
    r = r0
    while r < r1:
        re = min(r1, m - 1) if r < m - 1 else r + 1
        o1 = _middle_update(r, m, n2, periodic)
        wo = _outer_update(r, m, n2, wc, wn, K)
        _flat_update(S, W, q, wc, wo, r * n2, re * n2, o1, h0, h1, h2, one, K, mode)
        r = re
    for r in range(r0, r1):
        k = r * n2 + i2
        S[q[0] + k] = E[0, r]
        if K == 3:
            S[q[1] + k] = E[1, r]
        S[q[2] + k] = E[2, r]


@jit_unchecked
def _slab_w(S, V, W, q, prev, ov, ow, n2, m, a0, b0, periodic, h, ib, one, K):
    """``w = div p + ib v`` on one slab (see ``_rows_w``)."""
    _rows_w(S, V, W, q, prev, ov, ow, n2, m, 0, m, a0, b0, periodic, h, ib, one, K)


@jit_unchecked
def _slab_update(S, W, E, q, wc, wn, n2, m, periodic, h, one, K, mode):
    """Update p on one slab from the w of this slab (``wc``) and of the next one (``wn``)."""
    _rows_update(S, W, E, q, wc, wn, n2, m, 0, m, periodic, h, one, K, mode)


@jit_unchecked
def _slab_step(S, V, W, E, qn, ov, wn, a0, b0, q, wc, n2, m, cr, periodic, h, hw, ib, one, K, mode):
    """``_slab_w`` of the next slab (components ``qn``, data at ``ov``, into ``wn``; its
    previous slab is this one) and ``_slab_update`` of this slab (components ``q``),
    interleaved by chunks of ``cr`` rows: rows ``[r0, r1)`` of the next w need the old rows
    ``[r0, r1)`` of this slab's outer component, and the update of those rows needs only rows
    ``[r0, r1)`` of the next w and ``[r0, r1]`` of this one, so each chunk of this slab is
    read once for both while it is in cache."""
    for r0 in range(0, m, cr):
        r1 = min(r0 + cr, m)
        _rows_w(S, V, W, qn, q[0], ov, wn, n2, m, r0, r1, a0, b0, periodic, hw, ib, one, K)
        _rows_update(S, W, E, q, wc, wn, n2, m, r0, r1, periodic, h, one, K, mode)


@inline
def _row_step(S, V, W, qn, ov, wn, a0, b0, q, wc, n2, periodic, h, hw, ib, one, mode):
    """2-D slabs of one row: the w of the next row (components ``qn``, data at ``ov``, into
    ``wn``; its row above is this one) and the update of this row (components ``q``, its w at
    ``wc``) in one loop over the interior voxels, so that the w arithmetic (loads and stores)
    overlaps the update's square root and division, and each voxel of this row's outer
    component is read once for both.  The row ends first, by scalar code: the next row's w
    there (from the old p), then this row's update there.  Inlined into ``_multi_block``
    (a call per row and level cost 6 %), which contracts multiply-adds: this loop is bound by
    the multiply pipes as much as by the divider (7 %)."""
    h0, _, h2 = h
    zero = one - one
    _w_edges(S, V, W, qn, q[0], ov, wn, 0, n2, a0, b0, zero, zero, 0, periodic, hw, ib, one, 2)
    for e in range(2 if n2 > 1 else 1):
        j = 0 if e == 0 else n2 - 1
        x = W[wc + j]
        t0 = h0 * (W[wn + j] - x)
        t2 = h2 * (W[wc + fwd_index(j, n2, periodic)] - x)
        r0, _, r2 = _dual_update(S[q[0] + j], zero, S[q[2] + j], t0, zero, t2, one, 2, mode)
        S[q[0] + j], S[q[2] + j] = r0, r2
    w2, wa, wb = hw[2], hw[0] * a0, hw[0] * b0
    c0, c2 = np.uint64(q[0] + 1), np.uint64(q[2] + 1)
    n0, nc, nl = np.uint64(qn[0] + 1), np.uint64(qn[2] + 1), np.uint64(qn[2])
    sv, sn, sc, sr = np.uint64(ov + 1), np.uint64(wn + 1), np.uint64(wc + 1), np.uint64(wc + 2)
    for j in range(n2 - 2):
        u = np.uint64(j)
        x0, x2 = S[c0 + u], S[c2 + u]
        y = w2 * (S[nc + u] - S[nl + u]) + (wa * S[n0 + u] - wb * x0) + ib * V[sv + u]
        W[sn + u] = y
        x = W[sc + u]
        t0, t2 = h0 * (y - x), h2 * (W[sr + u] - x)
        r0, _, r2 = _dual_update(x0, zero, x2, t0, zero, t2, one, 2, mode)
        S[c0 + u] = r0
        S[c2 + u] = r2


@inline
def _outer_terms(i, n, periodic, one):
    """``(a, b)`` of the outer axis at slab ``i`` in the arrays' dtype."""
    zero = one - one
    if periodic:
        return one, one
    return (one if i < n - 1 else zero), (one if i > 0 else zero)


@inline
def _slab_offsets(i, a, b, n0, M, K, H, lo, hi):
    """Offsets in ``S`` of the (outer, middle, inner) components of slab ``i`` of a block
    ``[a, b)``: its own slabs in p, the ghost slabs ``a - H .. a - 1`` in the halo copies at
    ``lo``, ``b .. b + H - 1`` in those at ``hi`` (``i`` is a virtual index: it may be
    negative or reach past ``n0`` with periodic wrap)."""
    if a <= i < b:
        return i * M, (n0 + i) * M, ((K - 1) * n0 + i) * M
    base = lo + (H + i - a) * K * M if i < a else hi + (i - b) * K * M
    return base, base + M, base + (K - 1) * M


@inline
def _copy_slab(S, i, dst, n0, M, K):
    """Copy the K components of slab ``i`` of p to ``S[dst:dst + K M]``."""
    for k in range(K):
        src, d = np.uint64((k * n0 + i) * M), np.uint64(dst + k * M)
        for j in range(M):
            u = np.uint64(j)
            S[d + u] = S[src + u]


# fused multiply-adds (``_row_step``); exact IEEE otherwise
@jit_unchecked(fastmath={"contract"})
def _multi_block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, K, mode):
    """``levels`` iterations on the block ``[a, b) = bounds[t:t + 2]`` in one pass over its slabs
    (``geo = (n0, m, n2, cr, K, H)``: slabs, rows per slab, row length, rows per chunk,
    components, halo depth).

    Level ``l`` (iteration k + l -> k + l + 1) runs ``l`` slabs behind level 0: at time ``i`` it
    computes the w of slab ``i - l + 1`` (from level ``l - 1``'s values of slabs ``i - l + 1``
    and ``i - l``, just written) and updates slab ``i - l``, which is still in cache.  The last
    level needs the values of level ``l`` on ``levels - 1 - l`` slabs on each side of the block,
    so the task recomputes them itself (ghost slabs, from copies of the ``H`` slabs beside the
    block that their owners took during the previous pass: ``hl[par, t - 1]``,
    ``hf[par, t + 1]``, double buffered by parity, and each read and overwritten by this task
    only).  The pass takes this block's own copies (its first and last ``H`` slabs) for the
    next pass, each as soon as its last level is done (while it is in cache)."""
    n0, m, n2, cr, _, H = geo
    M = m * n2
    nb = bounds.shape[0] - 1
    a, b = bounds[t], bounds[t + 1]
    tp = t - 1 if t > 0 else nb - 1
    tn = t + 1 if t + 1 < nb else 0
    blk = H * K * M  # one block's halo copies; S holds p, then hf[2, nb], then hl[2, nb]
    hf0 = K * n0 * M
    hl0 = hf0 + 2 * nb * blk
    lo, hi = hl0 + (par * nb + tp) * blk, hf0 + (par * nb + tn) * blk
    out_f, out_l = hf0 + ((1 - par) * nb + t) * blk, hl0 + ((1 - par) * nb + t) * blk
    glo = levels - 1 if periodic or a > 0 else 0  # ghost slabs of level 0 below a
    ghi = levels - 1 if periodic or b < n0 else 0  # and from b up
    # bit l: which of level l's two w buffers holds its current slab (2 l + bit); a scalar, not
    # an array: the tasks' small arrays may share a cache line, written at every step
    flips = 0
    E = np.empty((3, m), dtype=S.dtype)  # scratch of ``_rows_update``
    w0 = t * 2 * H * M
    for i in range(a - glo - 1, b + levels - 1):
        for lv in range(levels):
            s = i - lv  # level lv updates slab s and computes the w of slab s + 1
            first = a - max(glo - lv, 0)
            last = b - 1 + max(ghi - lv, 0)
            cur = (flips >> lv) & 1
            wc = w0 + (2 * lv + cur) * M
            wn = w0 + (2 * lv + 1 - cur) * M
            rn = (s + 1 + n0) % n0
            a0, b0 = _outer_terms(rn, n0, periodic, one)
            # fmt: off
            if s + 1 == first:  # the level starts: w of its first slab only
                qn = _slab_offsets(s + 1, a, b, n0, M, K, H, lo, hi)
                prev = qn[0]  # (unused: b0 == 0) when there is no slab below
                if periodic or rn > 0:
                    prev = _slab_offsets(s, a, b, n0, M, K, H, lo, hi)[0]
                _slab_w(S, V, W, qn, prev, rn * M, wc, n2, m, a0, b0, periodic, hw, ib, one, K)
            elif first <= s <= last:
                q = _slab_offsets(s, a, b, n0, M, K, H, lo, hi)
                if periodic or rn > 0:  # w of slab s + 1, update of slab s
                    qn = _slab_offsets(s + 1, a, b, n0, M, K, H, lo, hi)
                    if K == 2 and m == 1:
                        _row_step(S, V, W, qn, rn * M, wn, a0, b0, q, wc, n2, periodic, h, hw,
                                  ib, one, mode)
                    else:
                        _slab_step(S, V, W, E, qn, rn * M, wn, a0, b0, q, wc, n2, m, cr,
                                   periodic, h, hw, ib, one, K, mode)
                    flips ^= 1 << lv
                else:  # Neumann: no outer difference at the last slab
                    _slab_update(S, W, E, q, wc, wc, n2, m, periodic, h, one, K, mode)
            # fmt: on
        s = i - levels + 1  # the last level is done with slab s: copy it for the next pass
        if a <= s < b:
            if s - a < H:
                _copy_slab(S, s, out_f + (s - a) * K * M, n0, M, K)
            if s >= b - H:
                _copy_slab(S, s, out_l + (s - b + H) * K * M, n0, M, K)


# The block body is a serial function that passes the component count and the mode to
# ``_multi_block`` as constants: inlined into the parallel kernel it made Numba's parfor passes
# take a minute per dtype.
@jit_unchecked
def _block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, mode):
    b, g, pe = bounds, geo, periodic
    if geo[4] == 3 and mode == CHAMBOLLE:
        _multi_block(t, S, V, W, b, par, levels, g, pe, h, hw, ib, one, 3, CHAMBOLLE)
    elif geo[4] == 3:
        _multi_block(t, S, V, W, b, par, levels, g, pe, h, hw, ib, one, 3, CLIP)
    elif mode == CHAMBOLLE:
        _multi_block(t, S, V, W, b, par, levels, g, pe, h, hw, ib, one, 2, CHAMBOLLE)
    else:
        _multi_block(t, S, V, W, b, par, levels, g, pe, h, hw, ib, one, 2, CLIP)


@jit_unchecked(parallel=True)
def _sweep(S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, mode):
    for blk in prange(bounds.shape[0] - 1):
        _block(blk, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, mode)


@inline
def _sweep_constants(S, ih, tau, inv_beta):
    """``(h, hw, ib, one)`` in ``S``'s dtype: the inverse steps, the inverse steps times tau
    and tau / beta (for the w buffers, which hold tau w), and 1."""
    hw = (scalar_like(tau * ih[0], S), scalar_like(tau * ih[1], S), scalar_like(tau * ih[2], S))
    return steps_like(ih, S), hw, scalar_like(tau * inv_beta, S), scalar_like(1.0, S)


@jit_unchecked
def _sweeps(S, V, W, bounds, par, geo, periodic, ih, tau, inv_beta, mode, n):
    """``n`` iterations, ``H`` (the halo depth) per pass, from compiled code (no Python call
    between parallel regions); returns the parity of the halo copies to read next."""
    h, hw, ib, one = _sweep_constants(S, ih, tau, inv_beta)
    while n > 0:
        levels = min(n, geo[5])
        _sweep(S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, mode)
        par = 1 - par
        n -= levels
    return par


#: iterations per parallel pass of ``FusedDualSweep``: 4 to 8 run equally fast on our 2-core
#: machine and 1 to 3 up to 1.5x slower (``benchmarks/bench_iterative.py``); 5 divides the
#: solvers' gap-check intervals (multiples of 10) into whole passes
SWEEP_LEVELS = 5
#: voxels per chunk of rows of a slab in ``FusedDualSweep`` (the next slab's w and this slab's
#: update are computed chunk by chunk)
SWEEP_CHUNK = 8192
#: voxels per slab of a 2-D image at most, for rows shorter than ``SWEEP_ROW_2D`` (a slab is
#: a group of rows: one flat loop over a few short rows costs less than a loop per row; each
#: level recomputes up to ``levels - 1`` ghost slabs per side, so slabs stay small)
SWEEP_SLAB_2D = 2048
#: rows at least this long are slabs of their own (``_row_step``: w and update in one loop;
#: 10-14 % faster per thread from 512 voxels per row, even at 384, slower at 256)
SWEEP_ROW_2D = 384
#: byte offset of the w buffers from the dual's storage modulo 4 KiB (both start on a page):
#: a load whose address matches an older, still buffered store in its low 12 bits waits for
#: it ("4K aliasing"); placed as NumPy's allocator happened to, the sweep ran up to 1.4x
#: slower (``benchmarks/bench_iterative.py``, placement table); 1024 was never slow
SWEEP_W_OFFSET = 1024


def _sweep_storage(sizes, dtype):
    """The sweep's zeroed arrays of ``dtype`` and the given lengths, in one page-placed
    allocation (``_pages.page_arrays``), the last (the w buffers) ``SWEEP_W_OFFSET`` bytes
    after a page boundary."""
    return page_arrays(sizes, dtype, last_offset=SWEEP_W_OFFSET, what="the sweep")


class FusedDualSweep:
    """Chambolle's iteration ``w = div p + inv_beta v; p <- update(p, D w)`` with ``mode``
    CHAMBOLLE or CLIP, on ``blocks`` tasks (default: Numba's thread count), ``levels``
    iterations per pass (default ``SWEEP_LEVELS``), 3-D slabs processed by chunks of ``chunk``
    voxels (default ``SWEEP_CHUNK``), 2-D slabs of at most ``chunk`` voxels (at least one row;
    default: one row if it has at least ``SWEEP_ROW_2D`` voxels, else ``SWEEP_SLAB_2D``).

    The dual starts from a copy of ``p`` (shape ``(ndim, *v.shape)``; None: zeros) and lives in
    ``self.p`` (``v``'s dtype; 2-D and 3-D: a view of the sweep's own storage, next to the
    halo copies; the storage, the w buffers and a copy of ``v`` are placed on pages, see
    ``SWEEP_W_OFFSET``).  2-D and 3-D: ``levels`` iterations per parallel pass over the slabs
    (``_multi_block``): per pass ``p`` is read and written once and ``v`` read once.  1-D
    images use the plain two-kernel iteration.  ``step(n)`` runs ``n`` iterations; call
    ``sync()`` after changing ``self.p`` from outside."""

    def __init__(
        self, p, v, ih, periodic, tau, inv_beta, mode, blocks=None, levels=None, chunk=None
    ):
        ndim = v.ndim
        if ndim not in (1, 2, 3):
            raise ValueError("FusedDualSweep needs a 1-D, 2-D or 3-D image")
        self.periodic, self.tau, self.inv_beta = bool(periodic), float(tau), float(inv_beta)
        self.mode = int(mode)
        self.fused = ndim >= 2
        shape = (ndim,) + v.shape
        if not self.fused:  # the plain iteration
            self.p = np.zeros(shape, v.dtype) if p is None else np.array(p, v.dtype, order="C")
            self.v, self.ih, self.w = v, np.asarray(ih, dtype=np.float64), np.empty_like(v)
            return
        # slabs of m rows of n2 (flat): 3-D, the planes; 2-D, groups of m rows (the largest
        # divisor of the row count with m n2 <= chunk)
        if ndim == 3:
            n0, m, n2 = v.shape
            rows = max(1, (SWEEP_CHUNK if chunk is None else int(chunk)) // n2)
        else:
            n1, n2 = v.shape
            if chunk is None:
                chunk = n2 if n2 >= SWEEP_ROW_2D else SWEEP_SLAB_2D
            limit = min(n1, max(1, int(chunk) // n2))
            m = max(d for d in range(1, limit + 1) if n1 % d == 0)
            n0, rows = n1 // m, m
        M, K, dt = m * n2, ndim, v.dtype
        self.ih = np.array(ih if ndim == 3 else [ih[1], 0.0, ih[2]], dtype=np.float64)
        depth = max(1, min(SWEEP_LEVELS if levels is None else int(levels), n0))
        nb = numba.get_num_threads() if blocks is None else int(blocks)
        nb = max(1, min(nb, n0 // depth))  # every block has at least ``depth`` slabs
        self.bounds = np.linspace(0, n0, nb + 1).round().astype(np.int64)
        self.geo = (n0, m, n2, rows, K, depth)
        # S: p and the halo copies; V: a copy of v; W: w buffers (+ 1: see ``_flat_update``)
        self.S, self.V, self.W = _sweep_storage(
            (K * n0 * M + 4 * nb * depth * K * M, v.size, nb * 2 * depth * M + 1), dt
        )
        self.p = self.S[: K * n0 * M].reshape(shape)
        if p is not None:
            self.p[...] = p
        self.halo = self.S[K * n0 * M :].reshape(2, 2, nb, depth, K, M)  # [hf | hl, parity, t]
        self.V.reshape(v.shape)[...] = v
        self.sync()

    def sync(self):
        """Take the halo copies from ``self.p`` (after it was changed from outside)."""
        if not self.fused:
            return
        self.par = 0
        n0, M, K, depth = self.geo[0], self.geo[1] * self.geo[2], self.geo[4], self.geo[5]
        slabs = self.p.reshape(K, n0, M)
        for t in range(self.bounds.size - 1):
            a, b = self.bounds[t], self.bounds[t + 1]
            self.halo[0, 0, t] = np.moveaxis(slabs[:, a : a + depth], 1, 0)
            self.halo[1, 0, t] = np.moveaxis(slabs[:, b - depth : b], 1, 0)

    def _plain(self):
        """One iteration by the two plain kernels (divergence, then the dual update)."""
        p4, v3, w3, ih = as_4d(self.p), as_3d(self.v), as_3d(self.w), self.ih
        rescaled_divergence(p4, v3, w3, ih, self.periodic, self.inv_beta)
        dual_ascent_step(p4, w3, ih, self.periodic, self.tau, self.mode)

    def step(self, n=1):
        """Run ``n`` iterations."""
        n = int(n)
        if not self.fused:
            for _ in range(n):
                self._plain()
            return
        if n > 0:
            self.par = _sweeps(
                self.S,
                self.V,
                self.W,
                self.bounds,
                self.par,
                self.geo,
                self.periodic,
                self.ih,
                self.tau,
                self.inv_beta,
                self.mode,
                n,
            )
