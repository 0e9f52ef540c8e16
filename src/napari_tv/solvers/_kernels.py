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
from functools import partial

import numba
import numpy as np
from numba import prange

from napari_tv import _config
from napari_tv._config import inline

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
    """float64 ``(3,)``: ``1/spacing`` on the real axes of the padded view, 0 on padded axes."""
    ih = np.zeros(3)
    steps = (1.0,) * ndim if spacing is None else tuple(float(s) for s in spacing)
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
# Chambolle's iteration fused into sweeps over slabs, two iterations per sweep: no stored
# w = div p + v/beta.
#
# The image is cut into slabs along its outermost real axis (planes in 3-D, rows in 2-D, seen
# as ``(n1, 1, n2)`` so that a slab is always 2-D ``(m, n2)``); each block of consecutive slabs
# is one task.  A task streams its slabs keeping the w of two slabs per level in a small
# per-task buffer (L2-resident).  Level 1 computes w of slab i+1 (from the old p of slabs i+1
# and i) and updates p of slab i from the w of slabs i and i+1, row by row (``_slab_step``);
# level 2 then does the same one slab behind, on the values level 1 has just written (see
# ``_double_block``).  Per two iterations p is read and written once and v read once
# ((2K + 1) N values instead of 2 (3K + 3) N for two plain two-kernel iterations), in ONE
# parallel region.  The neighbouring blocks' old p (two slabs on each side, whose first
# iteration the task recomputes as ghost slabs) come from halo copies taken at the end of the
# previous sweep, double buffered by parity so that no task reads what another is writing.
# ----------------------------------------------------------------------------------------------


@inline
def _row_w(q0, q1, q2, prev, vs, out, i1, a0, b0, periodic, h0, h1, h2, ib, one, K):
    """``out <- div p + ib v`` on row ``i1`` of one slab: ``q0`` outer, ``q1`` middle (K == 3),
    ``q2`` inner components of the slab; ``prev`` the outer component of the previous slab;
    ``a0, b0`` the outer back terms (in the arrays' dtype)."""
    m, n2 = vs.shape
    zero = one - one
    im1, a1f, b1f = back_terms(i1, m, periodic)
    a1 = one if a1f != 0.0 else zero
    b1 = one if b1f != 0.0 else zero
    for i2 in range(1, n2 - 1):
        d = h2 * (q2[i1, i2] - q2[i1, i2 - 1]) + h0 * (a0 * q0[i1, i2] - b0 * prev[i1, i2])
        if K == 3:
            d += h1 * (a1 * q1[i1, i2] - b1 * q1[im1, i2])
        out[i1, i2] = d + ib * vs[i1, i2]
    for e in range(2 if n2 > 1 else 1):
        i2 = 0 if e == 0 else n2 - 1
        im2, a2f, b2f = back_terms(i2, n2, periodic)
        d = h2 * ((q2[i1, i2] if a2f != 0.0 else zero) - (q2[i1, im2] if b2f != 0.0 else zero))
        d += h0 * (a0 * q0[i1, i2] - b0 * prev[i1, i2])
        if K == 3:
            d += h1 * (a1 * q1[i1, i2] - b1 * q1[im1, i2])
        out[i1, i2] = d + ib * vs[i1, i2]


@inline
def _voxel_update(q0, q1, q2, i1, i2, g0, g1, g2, tau, one, K, mode):
    """Chambolle's (mode CHAMBOLLE) or the clipped (CLIP) dual update at one voxel."""
    if mode == CHAMBOLLE:
        nrm = g0 * g0 + g2 * g2
        if K == 3:
            nrm += g1 * g1
        s = one / (one + tau * math.sqrt(nrm))
        r0 = (q0[i1, i2] + tau * g0) * s
        r2 = (q2[i1, i2] + tau * g2) * s
        if K == 3:
            q1[i1, i2] = (q1[i1, i2] + tau * g1) * s
    else:
        r0 = min(one, max(-one, q0[i1, i2] + tau * g0))
        r2 = min(one, max(-one, q2[i1, i2] + tau * g2))
        if K == 3:
            q1[i1, i2] = min(one, max(-one, q1[i1, i2] + tau * g1))
    q0[i1, i2] = r0
    q2[i1, i2] = r2


@inline
def _row_update(q0, q1, q2, wc, wn, i1, periodic, h0, h1, h2, tau, one, K, mode):
    """Update p on row ``i1`` of one slab from the w of this slab (``wc``) and of the next
    one (``wn``)."""
    m, n2 = wc.shape
    zero = one - one
    j1 = fwd_index(i1, m, periodic)
    for i2 in range(n2 - 1):
        c = wc[i1, i2]
        g1 = h1 * (wc[j1, i2] - c) if K == 3 else zero
        _voxel_update(
            q0,
            q1,
            q2,
            i1,
            i2,
            h0 * (wn[i1, i2] - c),
            g1,
            h2 * (wc[i1, i2 + 1] - c),
            tau,
            one,
            K,
            mode,
        )
    i2 = n2 - 1
    c = wc[i1, i2]
    g1 = h1 * (wc[j1, i2] - c) if K == 3 else zero
    g2 = h2 * (wc[i1, fwd_index(i2, n2, periodic)] - c)
    _voxel_update(q0, q1, q2, i1, i2, h0 * (wn[i1, i2] - c), g1, g2, tau, one, K, mode)


@jit
def _slab_w(q0, q1, q2, prev, vs, out, a0, b0, periodic, h0, h1, h2, ib, one, K):
    """``out <- div p + ib v`` on one slab (see ``_row_w``)."""
    for i1 in range(vs.shape[0]):
        _row_w(q0, q1, q2, prev, vs, out, i1, a0, b0, periodic, h0, h1, h2, ib, one, K)


@jit
def _slab_update(q0, q1, q2, wc, wn, periodic, h0, h1, h2, tau, one, K, mode):
    """Update p on one slab from the w of this slab (``wc``) and of the next one (``wn``)."""
    for i1 in range(wc.shape[0]):
        _row_update(q0, q1, q2, wc, wn, i1, periodic, h0, h1, h2, tau, one, K, mode)


@jit
def _slab_step(
    n0, n1, n2, vn, wn, a0, b0, q0, q1, q2, wc, periodic, h0, h1, h2, tau, ib, one, K, mode
):
    """``_slab_w`` of the next slab (components ``n0, n1, n2``, data ``vn``, into ``wn``; its
    previous slab is this one) and ``_slab_update`` of this slab, interleaved row by row:
    row ``i1`` of ``wn`` needs the old row ``i1`` of ``q0``, and the update of that row needs
    only rows ``i1`` of ``wn`` and ``i1, i1 + 1`` of ``wc``, so each row of this slab is read
    once for both while it is in L1."""
    for i1 in range(wc.shape[0]):
        _row_w(n0, n1, n2, q0, vn, wn, i1, a0, b0, periodic, h0, h1, h2, ib, one, K)
        _row_update(q0, q1, q2, wc, wn, i1, periodic, h0, h1, h2, tau, one, K, mode)


@inline
def _outer_terms(i, n, periodic, one):
    """``(a, b)`` of the outer axis at slab ``i`` in the arrays' dtype."""
    zero = one - one
    if periodic:
        return one, one
    return (one if i < n - 1 else zero), (one if i > 0 else zero)


@inline
def _slab_arrays(p, i, lo, hi0, hi1, a, b, K):
    """The (outer, middle, inner) components of slab ``i`` of a block ``[a, b)``: its own slabs
    from ``p``, the ghost slabs ``a - 1``, ``b``, ``b + 1`` from their buffers (``i`` is a
    virtual index: ``a - 1`` may be -1 and ``b`` may be ``n0`` with periodic wrap)."""
    if a <= i < b:
        return p[0, i], p[1, i], p[K - 1, i]
    g = lo if i == a - 1 else (hi0 if i == b else hi1)
    return g[0], g[1], g[K - 1]


@jit
def _double_block(t, p, v, hf, hl, wb, bounds, par, periodic, h, tau, ib, one, K, mode):
    """Two iterations on the block ``[a, b) = bounds[t:t + 2]`` in one pass over its slabs.

    Level 1 (iteration k -> k + 1) runs one slab ahead of level 2 (k + 1 -> k + 2): after
    level 1 has updated slab i, level 2 computes w' of slab i (from the new slabs i and i - 1)
    and updates slab i - 1, which is still in cache.  The block's second iteration needs the
    first iteration's values on the neighbouring slabs a - 1 and b, so the task recomputes
    them itself (ghost slabs, from copies of slabs a - 2 .. a - 1 and b .. b + 1 that their
    owners took at the end of the previous pass: ``hl[par, t - 1]``, ``hf[par, t + 1]``, double
    buffered by parity, and each read and overwritten by this task only)."""
    h0, h1, h2 = h
    n0 = v.shape[0]
    nb = bounds.shape[0] - 1
    a, b = bounds[t], bounds[t + 1]
    tp = t - 1 if t > 0 else nb - 1
    tn = t + 1 if t + 1 < nb else 0
    rd, wr = par, 1 - par
    ghost_lo = periodic or a > 0
    ghost_hi = periodic or b < n0
    lo, lo_prev = hl[rd, tp, 1], hl[rd, tp, 0, 0]  # p(a - 1); outer component of p(a - 2)
    hi0, hi1 = hf[rd, tn, 0], hf[rd, tn, 1]  # p(b), p(b + 1)
    first = a - 1 if ghost_lo else a
    last = b if ghost_hi else b - 1
    # fmt: off
    r0, r1, r2 = _slab_arrays(p, first, lo, hi0, hi1, a, b, K)
    rf = (first + n0) % n0
    a0, b0 = _outer_terms(rf, n0, periodic, one)
    _slab_w(r0, r1, r2, lo_prev, v[rf], wb[t, 0], a0, b0, periodic, h0, h1, h2, ib, one, K)
    c1, c2 = 0, 2  # the current w of level 1 is wb[t, c1], of level 2 wb[t, c2]
    for i in range(first, last + 1):
        ri = (i + n0) % n0
        q0, q1, q2 = _slab_arrays(p, i, lo, hi0, hi1, a, b, K)
        if periodic or ri + 1 < n0:  # level 1: w of slab i + 1, update of slab i
            rj = (ri + 1) % n0
            r0, r1, r2 = _slab_arrays(p, i + 1, lo, hi0, hi1, a, b, K)
            a0, b0 = _outer_terms(rj, n0, periodic, one)
            _slab_step(r0, r1, r2, v[rj], wb[t, 1 - c1], a0, b0, q0, q1, q2, wb[t, c1],
                       periodic, h0, h1, h2, tau, ib, one, K, mode)
        else:  # Neumann: no outer difference at the last slab
            _slab_update(q0, q1, q2, wb[t, c1], wb[t, c1], periodic, h0, h1, h2, tau, one, K, mode)
        c1 = 1 - c1
        if i < a:
            continue
        a0, b0 = _outer_terms(ri, n0, periodic, one)
        if i == a:  # level 2 starts: w' of slab a (from the ghost's new outer component)
            _slab_w(q0, q1, q2, lo[0] if ghost_lo else lo_prev, v[ri], wb[t, c2], a0, b0,
                    periodic, h0, h1, h2, ib, one, K)
        else:  # level 2: w' of slab i, update of slab i - 1
            _slab_step(q0, q1, q2, v[ri], wb[t, 5 - c2], a0, b0, p[0, i - 1], p[1, i - 1],
                       p[K - 1, i - 1], wb[t, c2], periodic, h0, h1, h2, tau, ib, one, K, mode)
            c2 = 5 - c2
    if not ghost_hi:  # Neumann: level 2 of the last slab
        i = b - 1
        _slab_update(p[0, i], p[1, i], p[K - 1, i], wb[t, c2], wb[t, c2], periodic, h0, h1, h2,
                     tau, one, K, mode)
    # fmt: on
    hf[wr, t, 0] = p[:, a]
    hf[wr, t, 1] = p[:, a + 1]
    hl[wr, t, 0] = p[:, b - 2]
    hl[wr, t, 1] = p[:, b - 1]


# The block bodies are serial functions with the component count and the mode as constants:
# inlined into the parallel kernels they made Numba's parfor passes take a minute per dtype.
@jit
def _chambolle_block(t, p, v, hf, hl, wb, bounds, par, periodic, h, tau, ib, one):
    if p.shape[0] == 3:
        _double_block(t, p, v, hf, hl, wb, bounds, par, periodic, h, tau, ib, one, 3, 0)
    else:
        _double_block(t, p, v, hf, hl, wb, bounds, par, periodic, h, tau, ib, one, 2, 0)


@jit
def _clip_block(t, p, v, hf, hl, wb, bounds, par, periodic, h, tau, ib, one):
    if p.shape[0] == 3:
        _double_block(t, p, v, hf, hl, wb, bounds, par, periodic, h, tau, ib, one, 3, 1)
    else:
        _double_block(t, p, v, hf, hl, wb, bounds, par, periodic, h, tau, ib, one, 2, 1)


@jit(parallel=True)
def _chambolle_sweep(p, v, hf, hl, wb, bounds, par, periodic, ih, tau, inv_beta):
    h = (scalar_like(ih[0], p), scalar_like(ih[1], p), scalar_like(ih[2], p))
    t, ib, one = scalar_like(tau, p), scalar_like(inv_beta, p), scalar_like(1.0, p)
    for blk in prange(bounds.shape[0] - 1):
        _chambolle_block(blk, p, v, hf, hl, wb, bounds, par, periodic, h, t, ib, one)


@jit(parallel=True)
def _clip_sweep(p, v, hf, hl, wb, bounds, par, periodic, ih, tau, inv_beta):
    h = (scalar_like(ih[0], p), scalar_like(ih[1], p), scalar_like(ih[2], p))
    t, ib, one = scalar_like(tau, p), scalar_like(inv_beta, p), scalar_like(1.0, p)
    for blk in prange(bounds.shape[0] - 1):
        _clip_block(blk, p, v, hf, hl, wb, bounds, par, periodic, h, t, ib, one)


@jit
def _chambolle_sweeps(p, v, hf, hl, wb, bounds, par, periodic, ih, tau, inv_beta, n):
    """``n`` double sweeps from compiled code (no Python call between parallel regions)."""
    for _ in range(n):
        _chambolle_sweep(p, v, hf, hl, wb, bounds, par, periodic, ih, tau, inv_beta)
        par = 1 - par
    return par


@jit
def _clip_sweeps(p, v, hf, hl, wb, bounds, par, periodic, ih, tau, inv_beta, n):
    """``n`` double sweeps from compiled code (no Python call between parallel regions)."""
    for _ in range(n):
        _clip_sweep(p, v, hf, hl, wb, bounds, par, periodic, ih, tau, inv_beta)
        par = 1 - par
    return par


class FusedDualSweep:
    """Chambolle's iteration ``w = div p + inv_beta v; p <- update(p, D w)`` (``p`` of shape
    ``(ndim, *v.shape)``, C-contiguous, updated in place), ``mode`` CHAMBOLLE or CLIP,
    ``blocks`` tasks (default: Numba's thread count).

    2-D and 3-D: two iterations per parallel pass over the slabs (``_double_block``): ``p`` is
    read and written once and ``v`` read once per two iterations.  An odd iteration, 1-D
    images and images too thin for blocks of two slabs use the plain two-kernel iteration.
    ``step(n)`` runs ``n`` iterations; call ``sync()`` after changing ``p`` from outside."""

    def __init__(self, p, v, ih, periodic, tau, inv_beta, mode, blocks=None):
        ndim = v.ndim
        if ndim not in (1, 2, 3):
            raise ValueError("FusedDualSweep needs a 1-D, 2-D or 3-D image")
        # the arrays as given, for the plain iteration (``ih``: 1/spacing on the padded axes)
        self.p_orig, self.v_orig, self.ih_orig = p, v, np.asarray(ih, dtype=np.float64)
        self.periodic, self.tau, self.inv_beta = bool(periodic), float(tau), float(inv_beta)
        self.mode = mode
        self.w = None  # scratch of the plain iteration
        self.fused = ndim >= 2 and v.shape[0] >= 2  # every block has at least two slabs
        if not self.fused:
            return
        if ndim == 3:
            self.p, self.v = p, v
            self.ih = np.array(ih, dtype=np.float64)
        else:  # rows as slabs of shape (1, n2)
            n1, n2 = v.shape
            self.p, self.v = p.reshape(2, n1, 1, n2), v.reshape(n1, 1, n2)
            self.ih = np.array([ih[1], 0.0, ih[2]], dtype=np.float64)
        n0, m, n2 = self.v.shape
        nb = numba.get_num_threads() if blocks is None else int(blocks)
        nb = max(1, min(nb, n0 // 2))
        self.bounds = np.linspace(0, n0, nb + 1).round().astype(np.int64)
        K, dt = ndim, v.dtype
        self.hf = np.zeros((2, nb, 2, K, m, n2), dtype=dt)
        self.hl = np.zeros((2, nb, 2, K, m, n2), dtype=dt)
        self.wb = np.empty((nb, 4, m, n2), dtype=dt)
        self.kernel = _chambolle_sweeps if mode == CHAMBOLLE else _clip_sweeps
        self.sync()

    def sync(self):
        """Take the halo copies from ``p`` (after ``p`` was changed from outside)."""
        if not self.fused:
            return
        self.par = 0
        for t in range(self.bounds.size - 1):
            a, b = self.bounds[t], self.bounds[t + 1]
            self.hf[0, t] = np.moveaxis(self.p[:, a : a + 2], 1, 0)
            self.hl[0, t] = np.moveaxis(self.p[:, b - 2 : b], 1, 0)

    def _plain(self):
        """One iteration by the two plain kernels (divergence, then the dual update)."""
        if self.w is None:
            self.w = np.empty_like(self.v_orig)
        p4, v3, w3, ih = as_4d(self.p_orig), as_3d(self.v_orig), as_3d(self.w), self.ih_orig
        rescaled_divergence(p4, v3, w3, ih, self.periodic, self.inv_beta)
        dual_ascent_step(p4, w3, ih, self.periodic, self.tau, self.mode)

    def step(self, n=1):
        """Run ``n`` iterations."""
        n = int(n)
        if not self.fused:
            for _ in range(n):
                self._plain()
            return
        if n >= 2:
            self.par = self.kernel(
                self.p,
                self.v,
                self.hf,
                self.hl,
                self.wb,
                self.bounds,
                self.par,
                self.periodic,
                self.ih,
                self.tau,
                self.inv_beta,
                n // 2,
            )
        if n % 2:
            self._plain()
            self.sync()
