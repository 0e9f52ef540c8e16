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
# Chambolle's iteration fused into passes over slabs, several iterations per pass: no stored
# w = div p + v/beta.
#
# The image is cut into slabs along its outermost real axis (planes in 3-D, rows in 2-D); a
# slab is a flat array of m rows of n2 (m = 1 in 2-D) and each block of consecutive slabs is
# one task.  A task streams its slabs keeping the w of two slabs per level in a small per-task
# buffer (cache-resident).  Level 0 computes w of slab i+1 (from the old p of slabs i+1 and i)
# and updates p of slab i from the w of slabs i and i+1, by chunks of rows (``_slab_step``);
# level l does the same l slabs behind, on the values level l-1 has just written (see
# ``_multi_block``).  Per pass of L levels p is read and written once and v read once
# ((2K + 1) N values instead of L (3K + 3) N for L plain two-kernel iterations), in ONE
# parallel region.  The neighbouring blocks' old p (L slabs on each side, whose first
# iterations the task recomputes as ghost slabs) come from halo copies taken at the end of the
# previous pass, double buffered by parity so that no task reads what another is writing.
# ----------------------------------------------------------------------------------------------


# The slab kernels see a slab as a flat 1-D array of ``m`` rows of ``n2`` (C order).  The
# rows with the same middle-axis terms (the first, the interior ones, the last) are one flat
# loop each, which treats every voxel as an interior one of its row; the first and the last
# voxel of every row are then put right by scalar code.  The flat loops index with unsigned
# integers: no views to create (creating one is an atomic reference count, contended between
# threads) and no negative-index wrap-around check, so LLVM vectorises them.


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
def _flat_w(q0, q1, q2, prev, vs, out, k0, k1, o1, a0, b0, a1, b1, h0, h1, h2, ib, K):
    """``out <- div p + ib v`` on the flat indices ``[k0, k1)`` (``k0 >= 1``) with the inner
    difference ``q2[k] - q2[k - 1]`` of the interior of a row."""
    s0, sl, sm = np.uint64(k0), np.uint64(k0 - 1), np.uint64(k0 + o1)
    for j in range(k1 - k0):
        u = np.uint64(j)
        k = s0 + u
        d = h2 * (q2[k] - q2[sl + u]) + h0 * (a0 * q0[k] - b0 * prev[k])
        if K == 3:
            d += h1 * (a1 * q1[k] - b1 * q1[sm + u])
        out[k] = d + ib * vs[k]


@inline
def _w_edges(
    q0, q1, q2, prev, vs, out, r, n2, a0, b0, a1, b1, o1, periodic, h0, h1, h2, ib, one, K
):
    """The first and the last voxel of row ``r`` of ``out <- div p + ib v``."""
    zero = one - one
    for e in range(2 if n2 > 1 else 1):
        i2 = 0 if e == 0 else n2 - 1
        im2, a2f, b2f = back_terms(i2, n2, periodic)
        k = r * n2 + i2
        km = r * n2 + im2
        d = h2 * ((q2[k] if a2f != 0.0 else zero) - (q2[km] if b2f != 0.0 else zero))
        d += h0 * (a0 * q0[k] - b0 * prev[k])
        if K == 3:
            d += h1 * (a1 * q1[k] - b1 * q1[k + o1])
        out[k] = d + ib * vs[k]


@inline
def _rows_w(q0, q1, q2, prev, vs, out, n2, r0, r1, a0, b0, periodic, h0, h1, h2, ib, one, K):
    """``out <- div p + ib v`` on rows ``[r0, r1)`` of one slab (flat, rows of ``n2``): ``q0``
    outer, ``q1`` middle (K == 3), ``q2`` inner components of the slab; ``prev`` the outer
    component of the previous slab; ``a0, b0`` the outer back terms (in the arrays' dtype)."""
    m = vs.shape[0] // n2
    r = r0
    while r < r1:
        re = r + 1 if r == 0 or r >= m - 1 else min(r1, m - 1)
        o1, a1, b1 = _middle_w(r, m, n2, periodic, one)
        # fmt: off
        _flat_w(q0, q1, q2, prev, vs, out, max(r * n2, 1), re * n2, o1, a0, b0, a1, b1, h0, h1,
                h2, ib, K)
        for i in range(r, re):
            _w_edges(q0, q1, q2, prev, vs, out, i, n2, a0, b0, a1, b1, o1, periodic, h0, h1, h2,
                     ib, one, K)
        # fmt: on
        r = re


@inline
def _dual_update(x0, x1, x2, g0, g1, g2, tau, one, K, mode):
    """Chambolle's (mode CHAMBOLLE) or the clipped (CLIP) dual update of one voxel's
    ``(x0, x1, x2)`` (``x1`` and ``g1`` unused unless K == 3): the new values."""
    if mode == CHAMBOLLE:
        nrm = g0 * g0 + g2 * g2
        if K == 3:
            nrm += g1 * g1
        s = one / (one + tau * math.sqrt(nrm))
        return (x0 + tau * g0) * s, (x1 + tau * g1) * s, (x2 + tau * g2) * s
    return (
        min(one, max(-one, x0 + tau * g0)),
        min(one, max(-one, x1 + tau * g1)),
        min(one, max(-one, x2 + tau * g2)),
    )


@inline
def _flat_update(q0, q1, q2, wc, wn, k0, k1, o1, h0, h1, h2, tau, one, K, mode):
    """Update p on the flat indices ``[k0, k1)`` from the w of this slab (``wc``) and of the
    next one (``wn``), with the inner difference ``wc[k + 1] - wc[k]`` of the interior of a
    row."""
    zero = one - one
    s0, s1, sm = np.uint64(k0), np.uint64(k0 + 1), np.uint64(k0 + o1)
    for j in range(k1 - k0):
        u = np.uint64(j)
        k = s0 + u
        x = wc[k]
        g1 = h1 * (wc[sm + u] - x) if K == 3 else zero
        g0, g2 = h0 * (wn[k] - x), h2 * (wc[s1 + u] - x)
        r0, r1, r2 = _dual_update(q0[k], q1[k], q2[k], g0, g1, g2, tau, one, K, mode)
        q0[k] = r0
        if K == 3:
            q1[k] = r1
        q2[k] = r2


@inline
def _rows_update(q0, q1, q2, wc, wn, ends, n2, r0, r1, periodic, h0, h1, h2, tau, one, K, mode):
    """Update p on rows ``[r0, r1)`` of one slab from the w of this slab (``wc``) and of the
    next one (``wn``): the last voxel of every row first into ``ends`` (from the old p), then
    the rows with the same middle-axis difference as flat loops, then ``ends`` back."""
    m = wc.shape[0] // n2
    zero = one - one
    i2 = n2 - 1
    j2 = fwd_index(i2, n2, periodic)
    for r in range(r0, r1):
        k = r * n2 + i2
        x = wc[k]
        g1 = h1 * (wc[fwd_index(r, m, periodic) * n2 + i2] - x) if K == 3 else zero
        g0, g2 = h0 * (wn[k] - x), h2 * (wc[r * n2 + j2] - x)
        e0, e1, e2 = _dual_update(q0[k], q1[k], q2[k], g0, g1, g2, tau, one, K, mode)
        ends[0, r], ends[1, r], ends[2, r] = e0, e1, e2
    r = r0
    while r < r1:
        re = min(r1, m - 1) if r < m - 1 else r + 1
        o1 = _middle_update(r, m, n2, periodic)
        # (the last voxel of the slab is left out: its wc[k + 1] is past the end)
        _flat_update(q0, q1, q2, wc, wn, r * n2, min(re * n2, m * n2 - 1), o1, h0, h1, h2, tau,
                     one, K, mode)  # fmt: skip
        r = re
    for r in range(r0, r1):
        k = r * n2 + i2
        q0[k] = ends[0, r]
        if K == 3:
            q1[k] = ends[1, r]
        q2[k] = ends[2, r]


@jit
def _slab_w(q0, q1, q2, prev, vs, out, n2, a0, b0, periodic, h0, h1, h2, ib, one, K):
    """``out <- div p + ib v`` on one slab (see ``_rows_w``)."""
    m = vs.shape[0] // n2
    _rows_w(q0, q1, q2, prev, vs, out, n2, 0, m, a0, b0, periodic, h0, h1, h2, ib, one, K)


@jit
def _slab_update(q0, q1, q2, wc, wn, ends, n2, periodic, h0, h1, h2, tau, one, K, mode):
    """Update p on one slab from the w of this slab (``wc``) and of the next one (``wn``)."""
    m = wc.shape[0] // n2
    # fmt: off
    _rows_update(q0, q1, q2, wc, wn, ends, n2, 0, m, periodic, h0, h1, h2, tau, one, K, mode)
    # fmt: on


@jit
def _slab_step(
    n0,
    n1,
    n2,
    vn,
    wn,
    a0,
    b0,
    q0,
    q1,
    q2,
    wc,
    ends,
    rl,
    cr,
    periodic,
    h0,
    h1,
    h2,
    tau,
    ib,
    one,
    K,
    mode,
):
    """``_slab_w`` of the next slab (components ``n0, n1, n2``, data ``vn``, into ``wn``; its
    previous slab is this one) and ``_slab_update`` of this slab (rows of ``rl``),
    interleaved by chunks of ``cr`` rows: rows ``[r0, r1)`` of ``wn`` need the old rows
    ``[r0, r1)`` of ``q0``, and the update of those rows needs only rows ``[r0, r1)`` of
    ``wn`` and ``[r0, r1]`` of ``wc``, so each chunk of this slab is read once for both
    while it is in cache."""
    m = wc.shape[0] // rl
    for r0 in range(0, m, cr):
        r1 = min(r0 + cr, m)
        # fmt: off
        _rows_w(n0, n1, n2, q0, vn, wn, rl, r0, r1, a0, b0, periodic, h0, h1, h2, ib, one, K)
        _rows_update(q0, q1, q2, wc, wn, ends, rl, r0, r1, periodic, h0, h1, h2, tau, one, K,
                     mode)
        # fmt: on


@inline
def _outer_terms(i, n, periodic, one):
    """``(a, b)`` of the outer axis at slab ``i`` in the arrays' dtype."""
    zero = one - one
    if periodic:
        return one, one
    return (one if i < n - 1 else zero), (one if i > 0 else zero)


@inline
def _slab_arrays(p, i, lo, hi, a, b, K):
    """The (outer, middle, inner) components of slab ``i`` of a block ``[a, b)``: its own slabs
    from ``p``, the ghost slabs ``a - H .. a - 1`` from ``lo[H + i - a]`` and ``b .. b + H - 1``
    from ``hi[i - b]`` (``H`` the halo depth; ``i`` is a virtual index: it may be negative or
    reach past ``n0`` with periodic wrap)."""
    if a <= i < b:
        return p[0, i], p[1, i], p[K - 1, i]
    g = lo[lo.shape[0] + i - a] if i < a else hi[i - b]
    return g[0], g[1], g[K - 1]


@jit
def _multi_block(
    t, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, tau, ib, one, K, mode
):
    """``levels`` iterations on the block ``[a, b) = bounds[t:t + 2]`` in one pass over its slabs.

    Level ``l`` (iteration k + l -> k + l + 1) runs ``l`` slabs behind level 0: at time ``i`` it
    computes the w of slab ``i - l + 1`` (from level ``l - 1``'s values of slabs ``i - l + 1``
    and ``i - l``, just written) and updates slab ``i - l``, which is still in cache.  The last
    level needs the values of level ``l`` on ``levels - 1 - l`` slabs on each side of the block,
    so the task recomputes them itself (ghost slabs, from copies of the ``H`` slabs beside the
    block that their owners took at the end of the previous pass: ``hl[par, t - 1]``,
    ``hf[par, t + 1]``, double buffered by parity, and each read and overwritten by this task
    only).  The pass ends by taking this block's own copies (its first and last ``H`` slabs)
    for the next pass, each as soon as its last level is done (while it is in cache)."""
    h0, h1, h2 = h
    n0 = v.shape[0]
    nb = bounds.shape[0] - 1
    H = hf.shape[2]
    a, b = bounds[t], bounds[t + 1]
    tp = t - 1 if t > 0 else nb - 1
    tn = t + 1 if t + 1 < nb else 0
    lo, hi = hl[par, tp], hf[par, tn]
    glo = levels - 1 if periodic or a > 0 else 0  # ghost slabs of level 0 below a
    ghi = levels - 1 if periodic or b < n0 else 0  # and from b up
    cur = np.zeros(levels, dtype=np.int64)  # level l's w of its current slab: wb[t, 2 l + cur]
    ends = np.empty((3, v.shape[1] // rl), dtype=p.dtype)  # scratch of ``_rows_update``
    for i in range(a - glo - 1, b + levels - 1):
        for lv in range(levels):
            s = i - lv  # level lv updates slab s and computes the w of slab s + 1
            first = a - max(glo - lv, 0)
            last = b - 1 + max(ghi - lv, 0)
            wc = wb[t, 2 * lv + cur[lv]]
            wn = wb[t, 2 * lv + 1 - cur[lv]]
            rn = (s + 1 + n0) % n0
            a0, b0 = _outer_terms(rn, n0, periodic, one)
            # fmt: off
            if s + 1 == first:  # the level starts: w of its first slab only
                r0, r1, r2 = _slab_arrays(p, s + 1, lo, hi, a, b, K)
                prev = r0  # (unused: b0 == 0) when there is no slab below
                if periodic or rn > 0:
                    prev = _slab_arrays(p, s, lo, hi, a, b, K)[0]
                _slab_w(r0, r1, r2, prev, v[rn], wc, rl, a0, b0, periodic, h0, h1, h2, ib, one,
                        K)
            elif first <= s <= last:
                q0, q1, q2 = _slab_arrays(p, s, lo, hi, a, b, K)
                if periodic or rn > 0:  # w of slab s + 1, update of slab s
                    r0, r1, r2 = _slab_arrays(p, s + 1, lo, hi, a, b, K)
                    _slab_step(r0, r1, r2, v[rn], wn, a0, b0, q0, q1, q2, wc, ends, rl, cr,
                               periodic, h0, h1, h2, tau, ib, one, K, mode)
                    cur[lv] = 1 - cur[lv]
                else:  # Neumann: no outer difference at the last slab
                    _slab_update(q0, q1, q2, wc, wc, ends, rl, periodic, h0, h1, h2, tau, one,
                                 K, mode)
            # fmt: on
        s = i - levels + 1  # the last level is done with slab s: copy it for the next pass
        if a <= s < b:
            if s - a < H:
                hf[1 - par, t, s - a] = p[:, s]
            if s >= b - H:
                hl[1 - par, t, s - b + H] = p[:, s]


# The block bodies are serial functions with the component count and the mode as constants:
# inlined into the parallel kernels they made Numba's parfor passes take a minute per dtype.
@jit
def _chambolle_block(t, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, tau, ib, one):
    if p.shape[0] == 3:
        _multi_block(
            t, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, tau, ib, one, 3, 0
        )
    else:
        _multi_block(
            t, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, tau, ib, one, 2, 0
        )


@jit
def _clip_block(t, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, tau, ib, one):
    if p.shape[0] == 3:
        _multi_block(
            t, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, tau, ib, one, 3, 1
        )
    else:
        _multi_block(
            t, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, tau, ib, one, 2, 1
        )


@jit(parallel=True)
def _chambolle_sweep(p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, ih, tau, inv_beta):
    h = (scalar_like(ih[0], p), scalar_like(ih[1], p), scalar_like(ih[2], p))
    t, ib, one = scalar_like(tau, p), scalar_like(inv_beta, p), scalar_like(1.0, p)
    for blk in prange(bounds.shape[0] - 1):
        _chambolle_block(
            blk, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, t, ib, one
        )


@jit(parallel=True)
def _clip_sweep(p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, ih, tau, inv_beta):
    h = (scalar_like(ih[0], p), scalar_like(ih[1], p), scalar_like(ih[2], p))
    t, ib, one = scalar_like(tau, p), scalar_like(inv_beta, p), scalar_like(1.0, p)
    for blk in prange(bounds.shape[0] - 1):
        _clip_block(blk, p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, h, t, ib, one)


@jit
def _chambolle_sweeps(p, v, hf, hl, wb, bounds, par, rl, cr, periodic, ih, tau, inv_beta, n):
    """``n`` iterations, ``H`` (the halo depth) per pass, from compiled code (no Python call
    between parallel regions); returns the parity of the halo copies to read next."""
    while n > 0:
        levels = min(n, hf.shape[2])
        _chambolle_sweep(p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, ih, tau, inv_beta)
        par = 1 - par
        n -= levels
    return par


@jit
def _clip_sweeps(p, v, hf, hl, wb, bounds, par, rl, cr, periodic, ih, tau, inv_beta, n):
    """``n`` iterations, ``H`` (the halo depth) per pass, from compiled code (no Python call
    between parallel regions); returns the parity of the halo copies to read next."""
    while n > 0:
        levels = min(n, hf.shape[2])
        _clip_sweep(p, v, hf, hl, wb, bounds, par, levels, rl, cr, periodic, ih, tau, inv_beta)
        par = 1 - par
        n -= levels
    return par


#: iterations per parallel pass of ``FusedDualSweep`` (``benchmarks/bench_iterative.py``
#: measures the choice)
SWEEP_LEVELS = 4
#: voxels per chunk of rows of a slab in ``FusedDualSweep`` (the next slab's w and this slab's
#: update are computed chunk by chunk)
SWEEP_CHUNK = 8192


class FusedDualSweep:
    """Chambolle's iteration ``w = div p + inv_beta v; p <- update(p, D w)`` (``p`` of shape
    ``(ndim, *v.shape)``, C-contiguous, updated in place), ``mode`` CHAMBOLLE or CLIP,
    ``blocks`` tasks (default: Numba's thread count), ``levels`` iterations per pass
    (default ``SWEEP_LEVELS``), slabs processed by chunks of ``chunk`` voxels (default
    ``SWEEP_CHUNK``, at least one row).

    2-D and 3-D: ``levels`` iterations per parallel pass over the slabs (``_multi_block``): per
    pass ``p`` is read and written once and ``v`` read once.  1-D images use the plain
    two-kernel iteration.  ``step(n)`` runs ``n`` iterations; call ``sync()`` after changing
    ``p`` from outside."""

    def __init__(
        self, p, v, ih, periodic, tau, inv_beta, mode, blocks=None, levels=None, chunk=None
    ):
        ndim = v.ndim
        if ndim not in (1, 2, 3):
            raise ValueError("FusedDualSweep needs a 1-D, 2-D or 3-D image")
        # the arrays as given, for the plain iteration (``ih``: 1/spacing on the padded axes)
        self.p_orig, self.v_orig, self.ih_orig = p, v, np.asarray(ih, dtype=np.float64)
        self.periodic, self.tau, self.inv_beta = bool(periodic), float(tau), float(inv_beta)
        self.mode = mode
        self.w = None  # scratch of the plain iteration
        self.fused = ndim >= 2
        if not self.fused:
            return
        # slabs as flat rows of n2: (n0, m * n2); a 2-D image has slabs of one row
        n0, m, n2 = v.shape if ndim == 3 else (v.shape[0], 1, v.shape[1])
        self.p, self.v = p.reshape(ndim, n0, m * n2), v.reshape(n0, m * n2)
        self.ih = np.array(ih if ndim == 3 else [ih[1], 0.0, ih[2]], dtype=np.float64)
        self.n2 = n2
        self.chunk_rows = max(1, (SWEEP_CHUNK if chunk is None else int(chunk)) // n2)
        depth = max(1, min(SWEEP_LEVELS if levels is None else int(levels), n0))
        nb = numba.get_num_threads() if blocks is None else int(blocks)
        nb = max(1, min(nb, n0 // depth))  # every block has at least ``depth`` slabs
        self.bounds = np.linspace(0, n0, nb + 1).round().astype(np.int64)
        K, dt = ndim, v.dtype
        self.hf = np.zeros((2, nb, depth, K, m * n2), dtype=dt)
        self.hl = np.zeros((2, nb, depth, K, m * n2), dtype=dt)
        self.wb = np.empty((nb, 2 * depth, m * n2), dtype=dt)
        self.kernel = _chambolle_sweeps if mode == CHAMBOLLE else _clip_sweeps
        self.sync()

    def sync(self):
        """Take the halo copies from ``p`` (after ``p`` was changed from outside)."""
        if not self.fused:
            return
        self.par = 0
        depth = self.hf.shape[2]
        for t in range(self.bounds.size - 1):
            a, b = self.bounds[t], self.bounds[t + 1]
            self.hf[0, t] = np.moveaxis(self.p[:, a : a + depth], 1, 0)
            self.hl[0, t] = np.moveaxis(self.p[:, b - depth : b], 1, 0)

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
        if n > 0:
            self.par = self.kernel(
                self.p,
                self.v,
                self.hf,
                self.hl,
                self.wb,
                self.bounds,
                self.par,
                self.n2,
                self.chunk_rows,
                self.periodic,
                self.ih,
                self.tau,
                self.inv_beta,
                n,
            )
