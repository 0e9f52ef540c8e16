"""Fused Numba primitives shared by the iterative solvers (Chambolle, primal-dual, Bregman, ...).

Layout convention (stable API, used by ``chambolle.py``, ``primal_dual.py``, ``bregman.py``,
``gradient_descent.py`` and ``_gap.py``)
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

Whole-array kernels (parallel over the lines ``(i0, i1)``, i.e. ``prange(n0 * n1)``)
    ``gradient_into(f3, p4, a0, ih, periodic)``           p4 <- D f3
    ``divergence_into(p4, out3, a0, ih, periodic)``       out3 <- div p4
    ``project_ball_into(p4, radius, isotropic)``          in place: |p_s|_2 <= r (isotropic)
                                                          or |p_{k,s}| <= r (anisotropic)
    ``dual_ascent_step(p4, w3, ih, periodic, tau, mode)`` in place, g = D w (one fused pass;
    a Python dispatcher to one parallel kernel per mode):
        mode CHAMBOLLE: p <- (p + tau g) / (1 + tau |g|)     (Chambolle 2004, isotropic)
        mode CLIP:      p <- clip(p + tau g, -1, 1)           (anisotropic projection)
        mode PROJECT:   p <- (p + tau g) / max(1, |p + tau g|) (isotropic projection)
    ``rescaled_divergence(p4, v3, w3, ih, periodic, s)``  w3 <- div p4 + s * v3
    (these two are vectorised by LLVM: the component count is dispatched per line as a
    constant, ``error_model="numpy"`` removes the division check, and the arithmetic is done
    in the arrays' precision, so float32 uses twice the SIMD width)
    ``scalar_like(x, arr)``  (inline) ``x`` in ``arr``'s dtype, for kernel constants
    ``jit``  ``napari_tv._config.jit`` plus ``error_model="numpy"``

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
import mmap
from functools import partial

import numba
import numpy as np
from numba import prange

from napari_tv import _config
from napari_tv._config import inline
from napari_tv._validation import relative_spacing

#: the project's flags with ``error_model="numpy"`` (no division check, so loops vectorise)
jit = partial(_config.jit, error_model="numpy")

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
    "inline",
    "jit",
    "scalar_like",
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
def fwd_index(i, n, periodic):
    """Forward neighbour index (``i`` itself at a Neumann end, so the difference vanishes)."""
    if i + 1 < n:
        return i + 1
    return 0 if periodic else i


@inline
def back_terms(i, n, periodic):
    """``(im, a, b)`` with ``(div p)_i = a p_i - b p_im`` along one axis (unscaled)."""
    if periodic:
        return (i - 1 if i > 0 else n - 1), 1.0, 1.0
    return (i - 1 if i > 0 else i), (1.0 if i < n - 1 else 0.0), (1.0 if i > 0 else 0.0)


@inline
def fdiff(f, i0, i1, i2, axis, periodic):
    """Unscaled forward difference ``f[x + e_axis] - f[x]`` (0 / wrap at the last index)."""
    n0, n1, n2 = f.shape
    if axis == 0:
        j = i0 + 1
        if j == n0:
            if not periodic:
                return 0.0
            j = 0
        return f[j, i1, i2] - f[i0, i1, i2]
    if axis == 1:
        j = i1 + 1
        if j == n1:
            if not periodic:
                return 0.0
            j = 0
        return f[i0, j, i2] - f[i0, i1, i2]
    j = i2 + 1
    if j == n2:
        if not periodic:
            return 0.0
        j = 0
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


@jit(parallel=True)
def gradient_into(f, p, a0, ih, periodic):
    """``p[k] <- D_{a0+k} f`` on the padded views."""
    n0, n1, n2 = f.shape
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        for i2 in range(n2):
            for k in range(p.shape[0]):
                ax = a0 + k
                p[k, i0, i1, i2] = ih[ax] * fdiff(f, i0, i1, i2, ax, periodic)


@jit(parallel=True)
def divergence_into(p, out, a0, ih, periodic):
    """``out <- div p`` on the padded views."""
    n0, n1, n2 = out.shape
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        for i2 in range(n2):
            out[i0, i1, i2] = div_at(p, a0, ih, periodic, i0, i1, i2)


@jit(parallel=True)
def project_ball_into(p, radius, isotropic):
    """In place: project every ``p_s`` on the ball of ``radius`` (l2 if isotropic, else l-inf)."""
    K, n0, n1, n2 = p.shape
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
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

# The hot loops below are written once per mode, with the number of components K passed as a
# constant to an inlined line function (so the component indices fold and LLVM vectorises the
# interior of each line); the last voxel of a line goes through the generic ``_dual_voxel``.
# A padded axis (K < 3) repeats the next component index with g = 0: all new values are
# computed before writing, and the real component is written last.


@jit
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
def _chambolle_line(p, w, i0, i1, j0, j1, h0, h1, h2, tau, one, K):
    k2, k1, k0 = K - 1, max(K - 2, 0), max(K - 3, 0)
    for i2 in range(w.shape[2] - 1):
        c = w[i0, i1, i2]
        g0 = h0 * (w[j0, i1, i2] - c)
        g1 = h1 * (w[i0, j1, i2] - c)
        g2 = h2 * (w[i0, i1, i2 + 1] - c)
        s = one / (one + tau * math.sqrt(g0 * g0 + g1 * g1 + g2 * g2))
        q0 = (p[k0, i0, i1, i2] + tau * g0) * s
        q1 = (p[k1, i0, i1, i2] + tau * g1) * s
        q2 = (p[k2, i0, i1, i2] + tau * g2) * s
        p[k0, i0, i1, i2] = q0
        p[k1, i0, i1, i2] = q1
        p[k2, i0, i1, i2] = q2


@inline
def _clip_line(p, w, i0, i1, j0, j1, h0, h1, h2, tau, one, K):
    k2, k1, k0 = K - 1, max(K - 2, 0), max(K - 3, 0)
    for i2 in range(w.shape[2] - 1):
        c = w[i0, i1, i2]
        q0 = min(one, max(-one, p[k0, i0, i1, i2] + tau * h0 * (w[j0, i1, i2] - c)))
        q1 = min(one, max(-one, p[k1, i0, i1, i2] + tau * h1 * (w[i0, j1, i2] - c)))
        q2 = min(one, max(-one, p[k2, i0, i1, i2] + tau * h2 * (w[i0, i1, i2 + 1] - c)))
        p[k0, i0, i1, i2] = q0
        p[k1, i0, i1, i2] = q1
        p[k2, i0, i1, i2] = q2


@inline
def _project_line(p, w, i0, i1, j0, j1, h0, h1, h2, tau, one, K):
    k2, k1, k0 = K - 1, max(K - 2, 0), max(K - 3, 0)
    zero = one - one
    for i2 in range(w.shape[2] - 1):
        c = w[i0, i1, i2]
        # a padded component is a repeat: count it as 0 in the norm
        q0 = p[k0, i0, i1, i2] + tau * h0 * (w[j0, i1, i2] - c) if K == 3 else zero
        q1 = p[k1, i0, i1, i2] + tau * h1 * (w[i0, j1, i2] - c) if K >= 2 else zero
        q2 = p[k2, i0, i1, i2] + tau * h2 * (w[i0, i1, i2 + 1] - c)
        s = one / max(one, math.sqrt(q0 * q0 + q1 * q1 + q2 * q2))
        p[k0, i0, i1, i2] = q0 * s
        p[k1, i0, i1, i2] = q1 * s
        p[k2, i0, i1, i2] = q2 * s


@jit(parallel=True)
def _chambolle_step(p, w, ih, periodic, tau):
    K = p.shape[0]
    n0, n1, n2 = w.shape
    one = scalar_like(1.0, p)  # arithmetic in the arrays' precision (float32 SIMD)
    t = scalar_like(tau, p)
    h0, h1, h2 = scalar_like(ih[0], p), scalar_like(ih[1], p), scalar_like(ih[2], p)
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        j0 = fwd_index(i0, n0, periodic)
        j1 = fwd_index(i1, n1, periodic)
        if K == 3:
            _chambolle_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 3)
        elif K == 2:
            _chambolle_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 2)
        else:
            _chambolle_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 1)
        j2 = fwd_index(n2 - 1, n2, periodic)
        _dual_voxel(p, w, i0, i1, n2 - 1, j0, j1, j2, 3 - K, ih, tau, CHAMBOLLE)


@jit(parallel=True)
def _clip_step(p, w, ih, periodic, tau):
    K = p.shape[0]
    n0, n1, n2 = w.shape
    one = scalar_like(1.0, p)
    t = scalar_like(tau, p)
    h0, h1, h2 = scalar_like(ih[0], p), scalar_like(ih[1], p), scalar_like(ih[2], p)
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        j0 = fwd_index(i0, n0, periodic)
        j1 = fwd_index(i1, n1, periodic)
        if K == 3:
            _clip_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 3)
        elif K == 2:
            _clip_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 2)
        else:
            _clip_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 1)
        j2 = fwd_index(n2 - 1, n2, periodic)
        _dual_voxel(p, w, i0, i1, n2 - 1, j0, j1, j2, 3 - K, ih, tau, CLIP)


@jit(parallel=True)
def _project_step(p, w, ih, periodic, tau):
    K = p.shape[0]
    n0, n1, n2 = w.shape
    one = scalar_like(1.0, p)
    t = scalar_like(tau, p)
    h0, h1, h2 = scalar_like(ih[0], p), scalar_like(ih[1], p), scalar_like(ih[2], p)
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
        j0 = fwd_index(i0, n0, periodic)
        j1 = fwd_index(i1, n1, periodic)
        if K == 3:
            _project_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 3)
        elif K == 2:
            _project_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 2)
        else:
            _project_line(p, w, i0, i1, j0, j1, h0, h1, h2, t, one, 1)
        j2 = fwd_index(n2 - 1, n2, periodic)
        _dual_voxel(p, w, i0, i1, n2 - 1, j0, j1, j2, 3 - K, ih, tau, PROJECT)


def dual_ascent_step(p, w, ih, periodic: bool, tau: float, mode: int) -> None:
    """In place on padded views, with ``g = D w``: ``mode == CHAMBOLLE``:
    ``p <- (p + tau g) / (1 + tau |g|)`` (Chambolle's semi-implicit step); ``CLIP``:
    ``p <- clip(p + tau g, -1, 1)``; ``PROJECT``: ``p <- (p + tau g) / max(1, |p + tau g|)``."""
    step = _chambolle_step if mode == CHAMBOLLE else (_clip_step if mode == CLIP else _project_step)
    step(p, w, ih, bool(periodic), float(tau))


@jit
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


@jit(parallel=True)
def rescaled_divergence(p, v, w, ih, periodic, inv_beta):
    """``w <- div p + inv_beta * v`` on padded views (Chambolle: ``u = v + beta div p =
    beta w``; primal-dual: ``u + tau beta div p = tau beta w`` with ``inv_beta = 1/(tau beta)``)."""
    K = p.shape[0]
    n0, n1, n2 = v.shape
    one = scalar_like(1.0, w)
    zero = one - one
    ib = scalar_like(inv_beta, w)
    h = (scalar_like(ih[0], w), scalar_like(ih[1], w), scalar_like(ih[2], w))
    for line in prange(n0 * n1):
        i0 = line // n1
        i1 = line - i0 * n1
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


@jit
def _slab_w(S, V, W, q, prev, ov, ow, n2, m, a0, b0, periodic, h, ib, one, K):
    """``w = div p + ib v`` on one slab (see ``_rows_w``)."""
    _rows_w(S, V, W, q, prev, ov, ow, n2, m, 0, m, a0, b0, periodic, h, ib, one, K)


@jit
def _slab_update(S, W, E, q, wc, wn, n2, m, periodic, h, one, K, mode):
    """Update p on one slab from the w of this slab (``wc``) and of the next one (``wn``)."""
    _rows_update(S, W, E, q, wc, wn, n2, m, 0, m, periodic, h, one, K, mode)


@jit
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
@jit(fastmath={"contract"})
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


# The block bodies are serial functions with the component count and the mode as constants:
# inlined into the parallel kernels they made Numba's parfor passes take a minute per dtype.
@jit
def _chambolle_block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one):
    if geo[4] == 3:
        _multi_block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, 3, 0)
    else:
        _multi_block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, 2, 0)


@jit
def _clip_block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one):
    if geo[4] == 3:
        _multi_block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, 3, 1)
    else:
        _multi_block(t, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one, 2, 1)


@jit(parallel=True)
def _chambolle_sweep(S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one):
    for blk in prange(bounds.shape[0] - 1):
        _chambolle_block(blk, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one)


@jit(parallel=True)
def _clip_sweep(S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one):
    for blk in prange(bounds.shape[0] - 1):
        _clip_block(blk, S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one)


@inline
def _sweep_constants(S, ih, tau, inv_beta):
    """``(h, hw, ib, one)`` in ``S``'s dtype: the inverse steps, the inverse steps times tau
    and tau / beta (for the w buffers, which hold tau w), and 1."""
    h = (scalar_like(ih[0], S), scalar_like(ih[1], S), scalar_like(ih[2], S))
    hw = (scalar_like(tau * ih[0], S), scalar_like(tau * ih[1], S), scalar_like(tau * ih[2], S))
    return h, hw, scalar_like(tau * inv_beta, S), scalar_like(1.0, S)


@jit
def _chambolle_sweeps(S, V, W, bounds, par, geo, periodic, ih, tau, inv_beta, n):
    """``n`` iterations, ``H`` (the halo depth) per pass, from compiled code (no Python call
    between parallel regions); returns the parity of the halo copies to read next."""
    h, hw, ib, one = _sweep_constants(S, ih, tau, inv_beta)
    while n > 0:
        levels = min(n, geo[5])
        _chambolle_sweep(S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one)
        par = 1 - par
        n -= levels
    return par


@jit
def _clip_sweeps(S, V, W, bounds, par, geo, periodic, ih, tau, inv_beta, n):
    """``n`` iterations, ``H`` (the halo depth) per pass, from compiled code (no Python call
    between parallel regions); returns the parity of the halo copies to read next."""
    h, hw, ib, one = _sweep_constants(S, ih, tau, inv_beta)
    while n > 0:
        levels = min(n, geo[5])
        _clip_sweep(S, V, W, bounds, par, levels, geo, periodic, h, hw, ib, one)
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


_HUGE = 1 << 21


def _zeroed_pages(nbytes):
    """``nbytes`` zero bytes starting on a page boundary; from 2 MiB on, on a 2 MiB boundary in
    whole huge pages (Linux: advised).  Every solve allocates its storage afresh, and a 4 KiB
    page fault costs about 4 us here: at 512^2 that was 5-6 ms of a 16 ms Chambolle solve
    whenever the C library had returned the memory to the OS in between (e.g. after
    scikit-image ran).  Smaller storage stays on small pages (a huge page would be mostly
    waste, and a result's dual keeps its storage alive)."""
    if nbytes >= _HUGE and hasattr(mmap, "MADV_HUGEPAGE"):
        size = -(-nbytes // _HUGE) * _HUGE  # whole huge pages (a partial one gets small pages)
        # private (shared anonymous memory is shmem, which gets no huge pages), anonymous:
        # lazily zeroed, page aligned
        try:
            region = mmap.mmap(-1, size + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError as err:  # as NumPy would say it
            raise MemoryError(f"cannot map {size + _HUGE} bytes for the sweep") from err
        buf = np.frombuffer(region, np.uint8)
        start = -buf.ctypes.data % _HUGE
        with contextlib.suppress(OSError):
            region.madvise(mmap.MADV_HUGEPAGE, start, size)
    else:
        buf = np.zeros(nbytes + 4096, np.uint8)
        start = -buf.ctypes.data % 4096
    return buf[start : start + nbytes]


def _sweep_storage(sizes, dtype):
    """Zeroed arrays of ``dtype`` and the given lengths, in one allocation (``_zeroed_pages``),
    each starting on a 4 KiB boundary, and the last (the w buffers) ``SWEEP_W_OFFSET`` bytes
    after one."""
    itemsize = np.dtype(dtype).itemsize
    starts, end = [], 0
    for i, n in enumerate(sizes):
        start = -end % 4096 + (SWEEP_W_OFFSET if i == len(sizes) - 1 else 0)
        starts.append(end + start)
        end += start + n * itemsize
    buf = _zeroed_pages(end)
    return [buf[a : a + n * itemsize].view(dtype) for a, n in zip(starts, sizes, strict=True)]


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
        self.mode = mode
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
        self.kernel = _chambolle_sweeps if mode == CHAMBOLLE else _clip_sweeps
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
            self.par = self.kernel(
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
                n,
            )
