"""Numba stencils shared by the iterative solvers (Chambolle, primal-dual, Bregman, gradient
descent) and the duality gap: the forward differences, their adjoint and the dual updates.

Layout convention (used by ``chambolle.py`` and ``_chambolle_sweep.py``, ``primal_dual.py``,
``bregman.py``, ``gradient_descent.py``, ``_gap.py`` and ``_quick.py``)
-------------------------------------------------------------------------------------------------
Every kernel works on a **padded 3-D view**: an image of ndim 1, 2 or 3 is seen as
``f3 = as_3d(f)`` of shape ``(n0, n1, n2)`` with leading axes of length 1, and a field of
gradients ``p`` of shape ``(ndim, *shape)`` as ``p4 = as_4d(p)`` of shape ``(ndim, n0, n1, n2)``.
Component ``k`` of ``p`` belongs to padded axis ``a0 + k`` with ``a0 = 3 - ndim`` (padded axes
of length 1 have no component: their differences vanish under both boundaries).

Spacing enters as ``ih = inv_steps(spacing, ndim)``: float64 ``(3,)`` with ``ih[a0 + k] =
1 / spacing[k]`` (0 on padded axes).  ``periodic`` is a bool (False: Neumann).

Discretisation (the one of ``napari_tv.operators``, scheme ``"forward"``)::

    (D_a f)_i = (f_{i+1} - f_i) * ih[a]        for i < n-1
              = 0                              at i = n-1 (neumann)
              = (f_0 - f_{n-1}) * ih[a]        at i = n-1 (periodic)
    (div p)_i = sum_a ih[a] * ([i < n-1] p_{a,i} - [i > 0] p_{a,i-1})       (neumann)
              = sum_a ih[a] * (p_{a,i} - p_{a,(i-1) mod n})                 (periodic)

so that ``<D f, p> = -<f, div p>`` exactly.

Per-voxel helpers (``njit(inline="always")``; call them from your own kernels)
    ``fdiff(f3, i0, i1, i2, axis, periodic) -> float``   unscaled forward difference of f3
    ``bdiff(p4, k, i0, i1, i2, axis, periodic) -> float`` unscaled backward part of div for p4[k]
    ``div_at(p4, a0, ih, periodic, i0, i1, i2) -> float`` (div p) at one voxel
    ``fwd_index(i, n, periodic) -> ip``   index of the forward neighbour along an axis: i+1, or at
                                          the last index 0 (periodic) or i itself (neumann, so
                                          that ``f[ip] - f[i] == 0``): branch-free line kernels
    ``back_terms(i, n, periodic) -> (im, a, b)``  the divergence along an axis at index i is
                                          ``a * p[i] - b * p[im]`` (a, b in {0.0, 1.0})
    ``line_of(line, n1) -> (i0, i1)``     line ``line`` of a ``prange(n0 * n1)`` loop
    ``line_indices(line, n0, n1, periodic) -> (i0, i1, j0, j1)``  and its forward neighbours
    ``scalar_like(x, arr)``, ``steps_like(ih, arr)``  kernel constants in ``arr``'s dtype

Whole-array kernels (parallel over the lines ``(i0, i1)``, i.e. ``prange(n0 * n1)``)
    ``gradient_into(f3, p4, a0, ih, periodic)``           p4 <- D f3
    ``divergence_into(p4, out3, a0, ih, periodic)``       out3 <- div p4
    ``project_ball_into(p4, radius, isotropic)``          in place: |p_s|_2 <= r (isotropic)
                                                          or |p_{k,s}| <= r (anisotropic)
    ``dual_ascent_step(p4, w3, ih, periodic, tau, mode)`` in place, g = D w (one fused pass):
        mode CHAMBOLLE: p <- (p + tau g) / (1 + tau |g|)     (Chambolle 2004, isotropic)
        mode CLIP:      p <- clip(p + tau g, -1, 1)           (anisotropic projection)
        mode PROJECT:   p <- (p + tau g) / max(1, |p + tau g|) (isotropic projection)
    ``rescaled_divergence(p4, v3, w3, ih, periodic, s)``  w3 <- div p4 + s * v3
    (these two are vectorised by LLVM: the component count and the mode are dispatched per
    line as constants, ``_config.jit_unchecked`` (``error_model="numpy"``) removes the
    division check, and the arithmetic is done in the arrays' precision, so float32 uses
    twice the SIMD width)

Python wrappers (allocate, accept arrays of the original shape)
    ``gradient(f, spacing=None, periodic=False) -> (ndim, *f.shape)``
    ``divergence(p, spacing=None, periodic=False) -> p.shape[1:]``
    ``project_dual(p, radius=1.0, isotropic=True) -> p`` (in place, returns p)
    ``dual_norm_bound(spacing, ndim) -> float``  ``L**2 = 4 * sum_a 1/h_a**2 >= ||D||**2``
    ``threads_for(size)``  context manager: run parallel kernels on one thread for arrays below
                           ``PARALLEL_MIN_SIZE`` voxels (launching threads costs more than the
                           work there, and far more on a loaded machine)
"""

from __future__ import annotations

import contextlib
import math

import numba
import numpy as np
from numba import prange

from napari_tv._config import inline, jit_unchecked
from napari_tv._validation import relative_spacing

__all__ = [
    "PARALLEL_MIN_SIZE",
    "threads_for",
    "as_3d",
    "as_4d",
    "inv_steps",
    "dual_norm_bound",
    "fdiff",
    "bdiff",
    "div_at",
    "fwd_index",
    "back_terms",
    "line_of",
    "line_indices",
    "scalar_like",
    "steps_like",
    "CHAMBOLLE",
    "CLIP",
    "PROJECT",
    "dual_ascent_step",
    "rescaled_divergence",
    "gradient_into",
    "divergence_into",
    "project_ball_into",
    "gradient",
    "divergence",
    "project_dual",
]


#: below this many voxels the parallel kernels run on one thread (see ``threads_for``)
PARALLEL_MIN_SIZE = 1 << 15


@contextlib.contextmanager
def threads_for(size: int):
    """Run the enclosed Numba kernels on one thread when ``size < PARALLEL_MIN_SIZE``."""
    if size >= PARALLEL_MIN_SIZE:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def as_3d(f: np.ndarray) -> np.ndarray:
    """View of a 1-, 2- or 3-D array as 3-D with leading axes of length 1."""
    return f.reshape((1,) * (3 - f.ndim) + f.shape)


def as_4d(p: np.ndarray) -> np.ndarray:
    """View of a ``(ndim, *shape)`` field as ``(ndim, n0, n1, n2)``."""
    return p.reshape((p.shape[0],) + (1,) * (4 - p.ndim) + p.shape[1:])


def inv_steps(spacing, ndim: int) -> np.ndarray:
    """float64 ``(3,)``: ``1/spacing`` (relative: ``_validation.relative_spacing``) on the real
    axes of the padded view, 0 on padded axes."""
    ih = np.zeros(3)
    steps = (1.0,) * ndim if spacing is None else relative_spacing([float(s) for s in spacing])
    ih[3 - ndim :] = [1.0 / s for s in steps]
    return ih


def dual_norm_bound(spacing, ndim: int) -> float:
    """``L**2 = 4 * sum_a 1/h_a**2``, an upper bound of ``||D||**2 = ||div||**2``."""
    return float(4.0 * np.sum(inv_steps(spacing, ndim) ** 2))


@inline
def scalar_like(x, arr):
    """``x`` converted to ``arr``'s dtype (for kernel constants: a float64 constant would
    promote float32 arithmetic to float64).  Allocates: call it outside loops."""
    buf = np.empty(1, arr.dtype)
    buf[0] = x
    return buf[0]


@inline
def steps_like(ih, arr):
    """The inverse steps ``(ih[0], ih[1], ih[2])`` in ``arr``'s dtype (see ``scalar_like``)."""
    return scalar_like(ih[0], arr), scalar_like(ih[1], arr), scalar_like(ih[2], arr)


@inline
def fwd_index(i, n, periodic):
    """Forward neighbour index (``i`` itself at a Neumann end, so the difference vanishes)."""
    if i + 1 < n:
        return i + 1
    return 0 if periodic else i


@inline
def line_of(line, n1):
    """``(i0, i1)``: line ``line`` of a ``prange(n0 * n1)`` loop over the padded view."""
    i0 = line // n1
    return i0, line - i0 * n1


@inline
def line_indices(line, n0, n1, periodic):
    """``(i0, i1, j0, j1)``: ``line_of`` and the forward neighbours of ``i0`` and ``i1``."""
    i0, i1 = line_of(line, n1)
    return i0, i1, fwd_index(i0, n0, periodic), fwd_index(i1, n1, periodic)


@inline
def back_terms(i, n, periodic):
    """``(im, a, b)`` with ``(div p)_i = a p_i - b p_im`` along one axis (unscaled)."""
    if periodic:
        return (i - 1 if i > 0 else n - 1), 1.0, 1.0
    return (i - 1 if i > 0 else i), (1.0 if i < n - 1 else 0.0), (1.0 if i > 0 else 0.0)


@inline
def fdiff(f, i0, i1, i2, axis, periodic):
    """Unscaled forward difference ``f[x + e_axis] - f[x]`` (0 / wrap at the last index)."""
    i = i0 if axis == 0 else (i1 if axis == 1 else i2)
    j = i + 1
    if j == f.shape[axis]:
        if not periodic:
            return 0.0
        j = 0
    if axis == 0:
        return f[j, i1, i2] - f[i0, i1, i2]
    if axis == 1:
        return f[i0, j, i2] - f[i0, i1, i2]
    return f[i0, i1, j] - f[i0, i1, i2]


@inline
def bdiff(p, k, i0, i1, i2, axis, periodic):
    """Unscaled ``p_k[x] - p_k[x - e_axis]`` with the boundary rule of the forward scheme."""
    n = p.shape[axis + 1]
    i = i0 if axis == 0 else (i1 if axis == 1 else i2)
    if periodic:
        a = p[k, i0, i1, i2]
        j = i - 1 if i > 0 else n - 1
    else:
        a = p[k, i0, i1, i2] if i < n - 1 else 0.0
        if i == 0:
            return a
        j = i - 1
    if axis == 0:
        return a - p[k, j, i1, i2]
    if axis == 1:
        return a - p[k, i0, j, i2]
    return a - p[k, i0, i1, j]


@inline
def div_at(p, a0, ih, periodic, i0, i1, i2):
    """``(div p)`` at voxel ``(i0, i1, i2)`` of the padded view."""
    d = 0.0
    for k in range(p.shape[0]):
        ax = a0 + k
        d += ih[ax] * bdiff(p, k, i0, i1, i2, ax, periodic)
    return d


@jit_unchecked(parallel=True)
def gradient_into(f, p, a0, ih, periodic):
    """``p[k] <- D_{a0+k} f`` on the padded views."""
    n0, n1, n2 = f.shape
    for line in prange(n0 * n1):
        i0, i1 = line_of(line, n1)
        for i2 in range(n2):
            for k in range(p.shape[0]):
                ax = a0 + k
                p[k, i0, i1, i2] = ih[ax] * fdiff(f, i0, i1, i2, ax, periodic)


@jit_unchecked(parallel=True)
def divergence_into(p, out, a0, ih, periodic):
    """``out <- div p`` on the padded views."""
    n0, n1, n2 = out.shape
    for line in prange(n0 * n1):
        i0, i1 = line_of(line, n1)
        for i2 in range(n2):
            out[i0, i1, i2] = div_at(p, a0, ih, periodic, i0, i1, i2)


@jit_unchecked(parallel=True)
def project_ball_into(p, radius, isotropic):
    """In place: project every ``p_s`` on the ball of ``radius`` (l2 if isotropic, else l-inf)."""
    K, n0, n1, n2 = p.shape
    for line in prange(n0 * n1):
        i0, i1 = line_of(line, n1)
        for i2 in range(n2):
            if isotropic:
                s = 0.0
                for k in range(K):
                    s += p[k, i0, i1, i2] ** 2
                s = math.sqrt(s)
                if s > radius:
                    scale = radius / s
                    for k in range(K):
                        p[k, i0, i1, i2] *= scale
            else:
                for k in range(K):
                    x = p[k, i0, i1, i2]
                    if x > radius:
                        p[k, i0, i1, i2] = radius
                    elif x < -radius:
                        p[k, i0, i1, i2] = -radius


#: modes of ``dual_ascent_step``
CHAMBOLLE, CLIP, PROJECT = 0, 1, 2

# The hot loop below is written once, with the number of components K and the mode passed as
# constants to an inlined line function (so the component indices and the mode's branches fold
# and LLVM vectorises the interior of each line); the last voxel of a line goes through the
# generic ``_dual_voxel``.  A padded axis (K < 3) repeats the next component index with g = 0:
# all new values are computed before writing, and the real component is written last.


@jit_unchecked
def _dual_voxel(p, w, i0, i1, i2, j0, j1, j2, a0, ih, tau, mode):
    """Generic dual update at one voxel (forward neighbours ``j0, j1, j2``)."""
    K = p.shape[0]
    c = w[i0, i1, i2]
    nrm = 0.0
    for k in range(K):
        ax = a0 + k
        nb = w[j0, i1, i2] if ax == 0 else (w[i0, j1, i2] if ax == 1 else w[i0, i1, j2])
        g = ih[ax] * (nb - c)
        q = p[k, i0, i1, i2] + tau * g
        nrm += g * g if mode == CHAMBOLLE else q * q
    if mode == CHAMBOLLE:
        s = 1.0 / (1.0 + tau * math.sqrt(nrm))
    else:
        s = 1.0 / max(1.0, math.sqrt(nrm))
    for k in range(K):
        ax = a0 + k
        nb = w[j0, i1, i2] if ax == 0 else (w[i0, j1, i2] if ax == 1 else w[i0, i1, j2])
        q = p[k, i0, i1, i2] + tau * ih[ax] * (nb - c)
        p[k, i0, i1, i2] = min(1.0, max(-1.0, q)) if mode == CLIP else q * s


@inline
def _dual_line(p, w, i0, i1, j0, j1, h, tau, one, K, mode):
    """The interior of one line of ``dual_ascent_step`` (``K`` and ``mode`` constants)."""
    h0, h1, h2 = h
    k2, k1, k0 = K - 1, max(K - 2, 0), max(K - 3, 0)
    zero = one - one
    for i2 in range(w.shape[2] - 1):
        c = w[i0, i1, i2]
        d0, d1, d2 = w[j0, i1, i2] - c, w[i0, j1, i2] - c, w[i0, i1, i2 + 1] - c
        if mode == CHAMBOLLE:
            g0, g1, g2 = h0 * d0, h1 * d1, h2 * d2
            s = one / (one + tau * math.sqrt(g0 * g0 + g1 * g1 + g2 * g2))
            q0 = (p[k0, i0, i1, i2] + tau * g0) * s
            q1 = (p[k1, i0, i1, i2] + tau * g1) * s
            q2 = (p[k2, i0, i1, i2] + tau * g2) * s
        elif mode == CLIP:
            q0 = min(one, max(-one, p[k0, i0, i1, i2] + tau * h0 * d0))
            q1 = min(one, max(-one, p[k1, i0, i1, i2] + tau * h1 * d1))
            q2 = min(one, max(-one, p[k2, i0, i1, i2] + tau * h2 * d2))
        else:
            # a padded component is a repeat: count it as 0 in the norm
            q0 = p[k0, i0, i1, i2] + tau * h0 * d0 if K == 3 else zero
            q1 = p[k1, i0, i1, i2] + tau * h1 * d1 if K >= 2 else zero
            q2 = p[k2, i0, i1, i2] + tau * h2 * d2
            s = one / max(one, math.sqrt(q0 * q0 + q1 * q1 + q2 * q2))
            q0, q1, q2 = q0 * s, q1 * s, q2 * s
        p[k0, i0, i1, i2] = q0
        p[k1, i0, i1, i2] = q1
        p[k2, i0, i1, i2] = q2


@inline
def _dual_lines(p, w, i0, i1, j0, j1, h, tau, one, mode):
    """``_dual_line`` with the component count as a constant."""
    K = p.shape[0]
    if K == 3:
        _dual_line(p, w, i0, i1, j0, j1, h, tau, one, 3, mode)
    elif K == 2:
        _dual_line(p, w, i0, i1, j0, j1, h, tau, one, 2, mode)
    else:
        _dual_line(p, w, i0, i1, j0, j1, h, tau, one, 1, mode)


@jit_unchecked(parallel=True)
def dual_ascent_step(p, w, ih, periodic, tau, mode):
    """In place on padded views, with ``g = D w``: ``mode == CHAMBOLLE``:
    ``p <- (p + tau g) / (1 + tau |g|)`` (Chambolle's semi-implicit step); ``CLIP``:
    ``p <- clip(p + tau g, -1, 1)``; ``PROJECT``: ``p <- (p + tau g) / max(1, |p + tau g|)``."""
    n0, n1, n2 = w.shape
    one = scalar_like(1.0, p)  # arithmetic in the arrays' precision (float32 SIMD)
    t = scalar_like(tau, p)
    h = steps_like(ih, p)
    j2 = fwd_index(n2 - 1, n2, periodic)
    for line in prange(n0 * n1):
        i0, i1, j0, j1 = line_indices(line, n0, n1, periodic)
        if mode == CHAMBOLLE:  # the mode as a constant in each line loop
            _dual_lines(p, w, i0, i1, j0, j1, h, t, one, CHAMBOLLE)
        elif mode == CLIP:
            _dual_lines(p, w, i0, i1, j0, j1, h, t, one, CLIP)
        else:
            _dual_lines(p, w, i0, i1, j0, j1, h, t, one, PROJECT)
        _dual_voxel(p, w, i0, i1, n2 - 1, j0, j1, j2, 3 - p.shape[0], ih, tau, mode)


@jit_unchecked
def _div_edge(p, v, w, i0, i1, i2, a0, ih, periodic, inv_beta):
    """``w = div p + inv_beta v`` at one voxel (generic)."""
    w[i0, i1, i2] = div_at(p, a0, ih, periodic, i0, i1, i2) + inv_beta * v[i0, i1, i2]


@inline
def _rescaled_divergence_line(p, v, w, i0, i1, im0, a0, b0, im1, a1, b1, h, inv_beta, K):
    """The interior of one line of ``rescaled_divergence`` (``K`` a constant)."""
    h0, h1, h2 = h
    k2, k1 = K - 1, max(K - 2, 0)
    for i2 in range(1, v.shape[2] - 1):
        d = h2 * (p[k2, i0, i1, i2] - p[k2, i0, i1, i2 - 1])
        if K >= 2:
            d += h1 * (a1 * p[k1, i0, i1, i2] - b1 * p[k1, i0, im1, i2])
        if K == 3:
            d += h0 * (a0 * p[0, i0, i1, i2] - b0 * p[0, im0, i1, i2])
        w[i0, i1, i2] = d + inv_beta * v[i0, i1, i2]


@jit_unchecked(parallel=True)
def rescaled_divergence(p, v, w, ih, periodic, inv_beta):
    """``w <- div p + inv_beta * v`` on padded views (Chambolle: ``u = v + beta div p =
    beta w``; primal-dual: ``u + tau beta div p = tau beta w`` with ``inv_beta = 1/(tau beta)``)."""
    K = p.shape[0]
    n0, n1, n2 = v.shape
    one = scalar_like(1.0, w)
    zero = one - one
    ib = scalar_like(inv_beta, w)
    h = steps_like(ih, w)
    for line in prange(n0 * n1):
        i0, i1 = line_of(line, n1)
        im0, a0f, b0f = back_terms(i0, n0, periodic)
        im1, a1f, b1f = back_terms(i1, n1, periodic)
        a0 = one if a0f != 0.0 else zero
        b0 = one if b0f != 0.0 else zero
        a1 = one if a1f != 0.0 else zero
        b1 = one if b1f != 0.0 else zero
        if K == 3:
            _rescaled_divergence_line(p, v, w, i0, i1, im0, a0, b0, im1, a1, b1, h, ib, 3)
        elif K == 2:
            _rescaled_divergence_line(p, v, w, i0, i1, im0, a0, b0, im1, a1, b1, h, ib, 2)
        else:
            _rescaled_divergence_line(p, v, w, i0, i1, im0, a0, b0, im1, a1, b1, h, ib, 1)
        _div_edge(p, v, w, i0, i1, 0, 3 - K, ih, periodic, inv_beta)
        if n2 > 1:
            _div_edge(p, v, w, i0, i1, n2 - 1, 3 - K, ih, periodic, inv_beta)


def gradient(f: np.ndarray, spacing=None, periodic: bool = False) -> np.ndarray:
    """Forward-difference gradient ``(ndim, *f.shape)`` of a float32/float64 array."""
    f = np.ascontiguousarray(f)
    p = np.empty((f.ndim,) + f.shape, dtype=f.dtype)
    gradient_into(as_3d(f), as_4d(p), 3 - f.ndim, inv_steps(spacing, f.ndim), bool(periodic))
    return p


def divergence(p: np.ndarray, spacing=None, periodic: bool = False) -> np.ndarray:
    """Divergence (negative adjoint of :func:`gradient`) of a ``(ndim, *shape)`` field."""
    p = np.ascontiguousarray(p)
    ndim = p.shape[0]
    out = np.empty(p.shape[1:], dtype=p.dtype)
    divergence_into(as_4d(p), as_3d(out), 3 - ndim, inv_steps(spacing, ndim), bool(periodic))
    return out


def project_dual(p: np.ndarray, radius: float = 1.0, isotropic: bool = True) -> np.ndarray:
    """Project a C-contiguous ``(ndim, *shape)`` field on the dual ball, in place; returns it."""
    project_ball_into(as_4d(p), float(radius), bool(isotropic))
    return p
