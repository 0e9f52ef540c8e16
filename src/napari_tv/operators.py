"""The discrete objects that define "the TV norm" everywhere in napari-tv.

One home for each of them (seeds 000 and 001, ``docs/maths.md``):

* the finite differences ``D_l`` along each axis (forward, backward or central; Neumann or
  periodic boundary; divided by the voxel spacing ``h_l``) — :func:`gradient`;
* their exact negative adjoint — :func:`divergence`, ``<D f, p> = -<f, div p>``;
* the explicit sparse matrix ``R`` of seed 001 — :func:`difference_matrix`;
* the isotropic and anisotropic TV norms and the TV gradient of seed 000 —
  :func:`tv_norm`, :func:`tv_gradient`;
* the graph TV used by the exact solver and the level sets — :func:`neighbour_offsets`,
  :func:`edge_weights`, :func:`resolve_weights`, :func:`graph_tv`;
* the grid of grey levels of the exact solver and the level sets — :func:`level_grid`;
* the energy every solver minimises — :func:`tv_energy`.

Implementation: each 1-D difference operator is a table of at most three (index, coefficient)
pairs per output sample (built in NumPy from the definition, O(n)); the divergence table is the
negated transpose of the same 1-D matrix, so the adjoint identity holds by construction to
rounding.  A parallel Numba kernel applies a table along one axis of a 3-D view of the array
(1-D and 2-D arrays are viewed with leading singleton axes).

Dask arrays (volumes larger than memory): :func:`gradient`, :func:`divergence`,
:func:`tv_gradient` and :func:`tv_norm` return lazy dask arrays (0-d for ``tv_norm``), computed
block by block: each block is extended by the halo its operator reads (``dask.array.overlap``),
the same kernels run on it, and the halo is trimmed (the machinery: :mod:`napari_tv._dask_ops`).
:func:`is_dask_array` tells a dask array without importing dask, which is imported only when
one is passed.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence
from functools import lru_cache, partial

import numpy as np
import scipy.sparse as sp
from numba import prange
from scipy.spatial import SphericalVoronoi

from napari_tv._memory import require

from ._config import jit
from ._dask_ops import _HALO, _map_halo, as_float_dask_array
from ._validation import (
    as_float_array,
    check_choice,
    check_int,
    check_real,
    check_spacing,
    is_dask_array,
)
from .fidelity import check_fidelity_data, fidelity_value

__all__ = [
    "SCHEMES",
    "BOUNDARIES",
    "TV_KINDS",
    "gradient",
    "divergence",
    "difference_matrix",
    "tv_norm",
    "tv_gradient",
    "neighbour_offsets",
    "edge_weights",
    "resolve_weights",
    "graph_tv",
    "level_grid",
    "tv_energy",
]

SCHEMES = ("forward", "backward", "central")
BOUNDARIES = ("neumann", "periodic")
TV_KINDS = ("isotropic", "anisotropic")


# --------------------------------------------------------------------------------------------
# 1-D difference matrices and their (index, coefficient) tables
# --------------------------------------------------------------------------------------------
def _difference_1d(n: int, scheme: str, boundary: str, h: float) -> sp.csr_matrix:
    """The n×n matrix of one axis's differences, divided by the step ``h``.

    Row ``i`` is ``c·(e_hi − e_lo)`` with ``c = 1/h`` (``1/(2h)`` for central differences):

    ========  =====================  ================================================
    scheme    (hi, lo)               at the boundary
    ========  =====================  ================================================
    forward   (i+1, i)               Neumann: last row 0; periodic: hi = 0
    backward  (i, i−1)               Neumann: first row 0; periodic: lo = n−1
    central   (i+1, i−1)             Neumann: reflect (hi ≤ n−1, lo ≥ 0); periodic: wrap
    ========  =====================  ================================================

    A row with hi == lo is zero (the Neumann rows, and every row when n == 1).
    """
    i = np.arange(n)
    periodic = boundary == "periodic"
    if scheme == "forward":
        hi, lo, c = i + 1, i.copy(), 1.0 / h
    elif scheme == "backward":
        hi, lo, c = i.copy(), i - 1, 1.0 / h
    else:
        hi, lo, c = i + 1, i - 1, 0.5 / h
    if periodic:
        hi, lo = hi % n, lo % n
    else:
        hi, lo = np.minimum(hi, n - 1), np.maximum(lo, 0)
    live = hi != lo
    rows = np.concatenate([i[live], i[live]])
    cols = np.concatenate([hi[live], lo[live]])
    vals = np.concatenate([np.full(live.sum(), c), np.full(live.sum(), -c)])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def _stencil_table(mat: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a sparse n×n matrix as padded (n, 3) index and coefficient tables."""
    mat = mat.tocsr()
    mat.sum_duplicates()
    n = mat.shape[0]
    counts = np.diff(mat.indptr)
    if counts.max(initial=0) > 3:  # cannot happen for first-order differences
        raise AssertionError("difference stencil wider than 3")
    idx = np.repeat(np.arange(n, dtype=np.int64)[:, None], 3, axis=1)  # padding: self, coef 0
    coef = np.zeros((n, 3), dtype=np.float64)
    for r in range(n):
        lo, hi = mat.indptr[r], mat.indptr[r + 1]
        idx[r, : hi - lo] = mat.indices[lo:hi]
        coef[r, : hi - lo] = mat.data[lo:hi]
    return idx, coef


@lru_cache(maxsize=64)
def _tables(n: int, scheme: str, boundary: str, h: float, adjoint: bool):
    d = _difference_1d(n, scheme, boundary, h)
    return _stencil_table(-d.T if adjoint else d)


@lru_cache(maxsize=64)
def _band(n: int, scheme: str, boundary: str, h: float, adjoint: bool):
    """The interior rows ``j0 <= j < j1`` where the table is one constant stencil
    (``idx[j] = j + off``, ``coef[j] = bc``), so kernels can run them without gathers."""
    idx, coef = _tables(n, scheme, boundary, h, adjoint)
    m = n // 2
    off, bc = idx[m] - m, coef[m]
    same = np.all((idx - np.arange(n)[:, None] == off) & (coef == bc), axis=1)
    j0, j1 = m, m
    while j0 > 0 and same[j0 - 1]:
        j0 -= 1
    while j1 < n and same[j1]:
        j1 += 1
    return off, bc, j0, j1


# --------------------------------------------------------------------------------------------
# Kernels: out[..., j, ...] (+)= Σ_m coef[j, m] · inp[..., idx[j, m], ...] along one axis
# --------------------------------------------------------------------------------------------
@jit(parallel=True)
def _apply_last_axis(inp, idx, coef, off, bc, j0, j1, out, accumulate):
    """Along the last, contiguous axis of a 2-D ``(lines, n)`` view."""
    lines, n = inp.shape
    o0, o1, o2 = off[0], off[1], off[2]
    b0, b1, b2 = bc[0], bc[1], bc[2]
    m = j1 - j0
    for a in prange(lines):
        src, dst = inp[a], out[a]
        # banded interior: constant stencil on shifted slices (non-negative indices vectorise)
        s0, s1, s2 = src[j0 + o0 : j1 + o0], src[j0 + o1 : j1 + o1], src[j0 + o2 : j1 + o2]
        d = dst[j0:j1]
        if accumulate:
            for k in range(m):
                d[k] += b0 * s0[k] + b1 * s1[k] + b2 * s2[k]
        else:
            for k in range(m):
                d[k] = b0 * s0[k] + b1 * s1[k] + b2 * s2[k]
        for t in range(n - m):  # the few boundary rows, from the table
            j = t if t < j0 else t + m
            val = coef[j, 0] * src[idx[j, 0]] + coef[j, 1] * src[idx[j, 1]]
            val += coef[j, 2] * src[idx[j, 2]]
            dst[j] = dst[j] + val if accumulate else val


@jit
def _apply_row(inp, a, j, idx, coef, out, accumulate):
    c0, c1, c2 = coef[j, 0], coef[j, 1], coef[j, 2]
    src0, src1, src2 = inp[a, idx[j, 0]], inp[a, idx[j, 1]], inp[a, idx[j, 2]]
    dst = out[a, j]
    if accumulate:
        for c in range(dst.shape[0]):
            dst[c] += c0 * src0[c] + c1 * src1[c] + c2 * src2[c]
    else:
        for c in range(dst.shape[0]):
            dst[c] = c0 * src0[c] + c1 * src1[c] + c2 * src2[c]


@jit(parallel=True)
def _apply_inner_axis(inp, idx, coef, out, accumulate):
    """Along the middle axis of a 3-D ``(pre, n, post)`` view: whole contiguous rows."""
    pre, n, _ = inp.shape
    if pre >= n:
        for a in prange(pre):
            for j in range(n):
                _apply_row(inp, a, j, idx, coef, out, accumulate)
    else:
        for j in prange(n):
            for a in range(pre):
                _apply_row(inp, a, j, idx, coef, out, accumulate)


def _check_op_args(scheme, boundary, spacing, ndim):
    check_choice("scheme", scheme, SCHEMES)
    check_choice("boundary", boundary, BOUNDARIES)
    return check_spacing(spacing, ndim)


def _apply_axis(f: np.ndarray, axis: int, scheme, boundary, h, out, *, adjoint=False,
                accumulate=False) -> None:
    """Write (or, with ``accumulate``, add) one axis's differences of ``f`` into ``out``;
    with ``adjoint``, their negated transpose (one term of the divergence)."""
    n = f.shape[axis]
    key = (n, scheme, boundary, float(h), adjoint)
    idx, coef = _tables(*key)
    coef = coef.astype(f.dtype)
    pre, post = math.prod(f.shape[:axis]), math.prod(f.shape[axis + 1 :])
    if post == 1:
        off, bc, j0, j1 = _band(*key)
        _apply_last_axis(
            f.reshape(pre, n), idx, coef, off, bc.astype(f.dtype), j0, j1,
            out.reshape(pre, n), accumulate,
        )
    else:
        _apply_inner_axis(
            f.reshape(pre, n, post), idx, coef, out.reshape(pre, n, post), accumulate
        )


@jit(parallel=True)
def _norm_sum(g, isotropic, eps):
    """Σ_s |∇f|_ε over a (d, N) gradient, accumulated in float64."""
    d, n = g.shape
    total = 0.0
    e2 = eps * eps
    for s in prange(n):
        if isotropic:
            acc = e2
            for l in range(d):
                acc += np.float64(g[l, s]) ** 2
            total += np.sqrt(acc)
        else:
            for l in range(d):
                total += np.sqrt(np.float64(g[l, s]) ** 2 + e2)
    return total


@jit(parallel=True)
def _normalise(g, isotropic, eps):
    """In place: g ← g / |∇f|_ε, and 0 where the norm vanishes."""
    d, n = g.shape
    e2 = eps * eps
    for s in prange(n):
        if isotropic:
            acc = e2
            for l in range(d):
                acc += np.float64(g[l, s]) ** 2
            inv = 1.0 / np.sqrt(acc) if acc > 0 else 0.0
            for l in range(d):
                g[l, s] = g[l, s] * inv
        else:
            for l in range(d):
                nrm = np.sqrt(np.float64(g[l, s]) ** 2 + e2)
                g[l, s] = g[l, s] / nrm if nrm > 0 else 0.0


# --------------------------------------------------------------------------------------------
# In-memory cores: checked C-contiguous float arrays, one boundary per axis
# --------------------------------------------------------------------------------------------
def _gradient_core(f, *, scheme, bounds, steps):
    f = np.ascontiguousarray(f)
    out = np.empty((f.ndim, *f.shape), dtype=f.dtype)
    for axis in range(f.ndim):
        _apply_axis(f, axis, scheme, bounds[axis], steps[axis], out[axis])
    return out


def _divergence_core(p, *, scheme, bounds, steps):
    out = np.zeros(p.shape[1:], dtype=p.dtype)
    for axis in range(p.ndim - 1):
        comp = np.ascontiguousarray(p[axis])
        _apply_axis(comp, axis, scheme, bounds[axis], steps[axis], out, adjoint=True,
                    accumulate=True)
    return out


def _tv_gradient_core(f, *, kind, scheme, bounds, steps, eps):
    g = _gradient_core(f, scheme=scheme, bounds=bounds, steps=steps)
    _normalise(g.reshape(g.shape[0], -1), kind == "isotropic", eps)
    out = _divergence_core(g, scheme=scheme, bounds=bounds, steps=steps)
    np.negative(out, out=out)
    out += 0.0  # no signed zeros
    return out


def _block_tv_sum(g, *, isotropic, eps):
    """:func:`tv_norm`'s sum over one block of a gradient, as a ``(1, ..., 1)`` array."""
    g = np.ascontiguousarray(g)
    return np.full((1,) * g.ndim, _norm_sum(g.reshape(g.shape[0], -1), isotropic, eps))


# --------------------------------------------------------------------------------------------
# Public operators
# --------------------------------------------------------------------------------------------
def gradient(
    f,
    *,
    scheme: str = "forward",
    boundary: str = "neumann",
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    r"""Finite-difference gradient ``(D_0 f, ..., D_{d-1} f)`` of a 1-D, 2-D or 3-D array.

    Parameters
    ----------
    f : array_like or dask array
        The image, 1-D to 3-D (dtypes as in :func:`napari_tv.denoise_tv`).  A dask array gives
        a lazy dask array (see Notes).
    scheme : {"forward", "backward", "central"}
        Forward ``(f_{i+1} − f_i)/h``, backward ``(f_i − f_{i−1})/h`` or central
        ``(f_{i+1} − f_{i−1})/(2h)`` differences.
    boundary : {"neumann", "periodic"}
        Neumann: the difference that would leave the array is 0 (forward: last sample; backward:
        first sample; central: the missing neighbour is reflected, ``f_{−1} = f_0``).
        Periodic: indices wrap around.
    spacing : float or sequence of float, optional
        The voxel size along each axis (default 1), relative: each axis's differences are
        divided by ``h_l = spacing[l] / min(spacing)``, so µm, nm or pixels give the same
        result and only the anisotropy counts (a scalar spacing changes nothing).

    Returns
    -------
    ndarray, shape ``(f.ndim, *f.shape)``
        ``out[l] = D_l f``, in f's float dtype.  For a dask ``f``, a dask array chunked like
        ``f`` along the spatial axes and in one chunk along the component axis.

    Raises
    ------
    ValueError
        Unknown scheme or boundary, bad spacing, 0-d or >3-d, empty or non-finite input.
    TypeError
        Complex or non-numeric input.

    Notes
    -----
    Central differences do not see the value at the sample itself: on a checkerboard
    ``f_{ij} = (−1)^{i+j}`` every central difference vanishes (with periodic boundaries and even
    sizes, everywhere), so a TV built on them is blind to the finest oscillation.  Forward and
    backward differences do not have this null space beyond constants.

    *Dask arrays* (the dask convention, as in dask-image): the result is built without
    computing anything, with ``dask.array.overlap`` and ``map_blocks``.  Each block is extended
    by exactly the halo the differences read (forward: one row after, backward: one row before,
    central: one on each side, along every axis), the in-memory kernel runs on the extended
    block and the halo is trimmed, so every value equals the in-memory result.  Neumann
    boundaries add no halo at the array's ends (the kernel applies them there); periodic ones
    wrap (one row on each side).  Chunks smaller than the halo are merged with a neighbour for
    the computation, and the result is rechunked back to ``f``'s chunks.  Dtype, number of
    axes and size are checked at the call; NaN and inf are checked block by block when the
    result is computed, which then raises ``ValueError``.  ``f`` is never modified.

    Examples
    --------
    >>> import numpy as np
    >>> gradient(np.array([0.0, 1.0, 3.0]))
    array([[1., 2., 0.]])
    >>> gradient(np.array([0.0, 1.0, 3.0]), scheme="backward")
    array([[0., 1., 2.]])
    >>> gradient(np.array([[0.0, 1.0], [2.0, 4.0]]), spacing=(1.0, 0.5))  # µm: z step 2x
    array([[[1. , 1.5],
            [0. , 0. ]],
    <BLANKLINE>
           [[1. , 0. ],
            [2. , 0. ]]])
    """
    if is_dask_array(f):
        f = as_float_dask_array(f, "f")
        steps = _check_op_args(scheme, boundary, spacing, f.ndim)
        return _map_halo(
            partial(_gradient_core, scheme=scheme, steps=steps), f, _HALO["gradient"][scheme],
            boundary, lead_in=0, lead_shape=(f.ndim,), dtype=f.dtype,
        )
    f = as_float_array(f, "f")
    steps = _check_op_args(scheme, boundary, spacing, f.ndim)
    return _gradient_core(f, scheme=scheme, bounds=(boundary,) * f.ndim, steps=steps)


def divergence(
    p,
    *,
    scheme: str = "forward",
    boundary: str = "neumann",
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    r"""The exact negative adjoint of :func:`gradient`: ``div p = −Σ_l D_lᵀ p_l``.

    Parameters
    ----------
    p : array_like or dask array, shape ``(d, *shape)`` with ``d = len(shape)`` in 1..3
        A vector field, one component per axis (axis-0 component first).
    scheme, boundary, spacing
        As in :func:`gradient`; they must match the gradient whose adjoint is wanted.

    Returns
    -------
    ndarray, shape ``p.shape[1:]``
        For a dask ``p``, a lazy dask array chunked like ``p``'s spatial axes.

    Notes
    -----
    For every ``f`` and ``p``, :math:`\langle \nabla f, p\rangle = -\langle f, \operatorname{div}
    p\rangle` holds to rounding, because the 1-D tables used here are the negated transpose of
    the very matrices :func:`gradient` applies.  For forward differences with Neumann boundary
    this is the familiar ``(div p)_i = p_i − p_{i−1}`` with ``p_{−1} = p_{n−1} = 0``.

    A dask ``p`` is handled as in :func:`gradient`: lazily, its component axis taken in one
    chunk, each block extended by one row on each side of every spatial axis (the stencil reads
    ``p_{i−1}`` (forward), ``p_{i+1}`` (backward) or both (central); the second row keeps out of
    the kept voxels the end row that the in-memory Neumann table special-cases,
    ``−p_{n−2}`` for forward differences), which is exact.

    Examples
    --------
    >>> import numpy as np
    >>> divergence(np.array([[1.0, 2.0, 5.0]]))
    array([ 1.,  1., -2.])
    """
    lazy = is_dask_array(p)
    p = (as_float_dask_array if lazy else as_float_array)(p, "p", ndims=(2, 3, 4))
    ndim = p.ndim - 1
    if p.shape[0] != ndim:
        raise ValueError(
            f"p must have shape (ndim, *shape) with ndim = {ndim}, got shape {p.shape}"
        )
    steps = _check_op_args(scheme, boundary, spacing, ndim)
    if lazy:
        return _map_halo(
            partial(_divergence_core, scheme=scheme, steps=steps), p,
            _HALO["divergence"][scheme], boundary, lead_in=1, lead_shape=(), dtype=p.dtype,
        )
    return _divergence_core(p, scheme=scheme, bounds=(boundary,) * ndim, steps=steps)


def difference_matrix(
    shape: Sequence[int],
    *,
    scheme: str = "forward",
    boundary: str = "neumann",
    spacing: float | Sequence[float] | None = None,
) -> sp.csr_matrix:
    r"""The explicit sparse matrix ``R`` of seed 001, shape ``(ndim·N, N)``.

    ``R @ f.ravel() == gradient(f).ravel()`` (C order, axis-0 block first) and
    ``R.T @ p.ravel() == −divergence(p).ravel()``.

    Parameters
    ----------
    shape : sequence of int
        The image shape (1 to 3 axes, each ≥ 1).
    scheme, boundary, spacing
        As in :func:`gradient`.

    Returns
    -------
    scipy.sparse.csr_matrix

    Notes
    -----
    With C-order vectorisation, axis ``l``'s block is the Kronecker product
    :math:`I_{n_0} \otimes \dots \otimes D^{(l)} \otimes \dots \otimes I_{n_{d-1}}`.  With
    backward differences and periodic boundaries, :math:`D^{(l)}` is the circulant matrix
    :math:`R_I` of seed 001 (1 on the diagonal, −1 below it and in the top-right corner), so
    ``R`` is exactly the matrix of that derivation.  The solvers never build it; it exists for
    analysis and tests.

    Examples
    --------
    >>> difference_matrix((3,), scheme="backward", boundary="periodic").toarray()
    array([[ 1.,  0., -1.],
           [-1.,  1.,  0.],
           [ 0., -1.,  1.]])
    """
    try:
        shape = tuple(check_int("shape", operator.index(n), minimum=1) for n in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of positive integers, got {shape!r}") from None
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"shape must have 1, 2 or 3 axes, got {shape!r}")
    steps = _check_op_args(scheme, boundary, spacing, len(shape))
    blocks = []
    for axis, n in enumerate(shape):
        block = sp.identity(1, format="csr")
        for other, m in enumerate(shape):
            factor = (
                _difference_1d(n, scheme, boundary, steps[axis])
                if other == axis
                else sp.identity(m, format="csr")
            )
            block = sp.kron(block, factor, format="csr")
        blocks.append(block)
    return sp.vstack(blocks, format="csr")


def _checked_tv_args(f, kind, scheme, boundary, spacing, eps):
    """``(f, steps, eps)`` after checking the arguments of ``tv_norm``/``tv_gradient``; ``f``
    stays a (lazily checked) dask array if it is one."""
    f = as_float_dask_array(f, "f") if is_dask_array(f) else as_float_array(f, "f")
    check_choice("kind", kind, TV_KINDS)
    eps = check_real("eps", eps, minimum=0.0)
    return f, _check_op_args(scheme, boundary, spacing, f.ndim), eps


def tv_norm(
    f,
    *,
    kind: str = "isotropic",
    scheme: str = "forward",
    boundary: str = "neumann",
    spacing: float | Sequence[float] | None = None,
    eps: float = 0.0,
) -> float:
    r"""The total variation of ``f``.

    Parameters
    ----------
    f : array_like or dask array
        1-D to 3-D image.
    kind : {"isotropic", "anisotropic"}
        Isotropic :math:`\sum_s \sqrt{\sum_l (D_l f)_s^2 + \varepsilon^2}`; anisotropic
        :math:`\sum_s \sum_l \sqrt{(D_l f)_s^2 + \varepsilon^2}` (with ε = 0,
        :math:`\sum_l \|D_l f\|_1 = \|Rf\|_1`, seed 001).
    scheme, boundary, spacing
        As in :func:`gradient`.
    eps : float
        Smoothing ε ≥ 0 (0: the exact, non-smooth TV).

    Returns
    -------
    float
        Accumulated in float64.  For a dask ``f``: a lazy 0-d dask array of float64 (call
        ``float()`` or ``.compute()`` on it).

    Notes
    -----
    For a dask ``f`` nothing is computed at the call.  The gradient is built block by block as
    in :func:`gradient` (each block extended by the halo its differences read, the halo
    trimmed), each block sums :math:`|\nabla f|_\varepsilon` over the voxels it owns only, and
    the result is the sum of these per-block sums (equal to the in-memory value up to the order
    of the float64 additions).  NaN and inf raise ``ValueError`` when it is computed.

    Examples
    --------
    A square of side 2 and height 3 in a zero background has anisotropic TV 4·2·3:

    >>> import numpy as np
    >>> f = np.zeros((6, 6)); f[2:4, 2:4] = 3.0
    >>> tv_norm(f, kind="anisotropic")
    24.0
    """
    f, steps, eps = _checked_tv_args(f, kind, scheme, boundary, spacing, eps)
    isotropic = kind == "isotropic"
    if is_dask_array(f):
        g = _map_halo(
            partial(_gradient_core, scheme=scheme, steps=steps), f, _HALO["gradient"][scheme],
            boundary, lead_in=0, lead_shape=(f.ndim,), dtype=f.dtype, keep_chunks=False,
        )
        sums = g.map_blocks(
            partial(_block_tv_sum, isotropic=isotropic, eps=eps),
            chunks=tuple((1,) * len(c) for c in g.chunks),
            dtype=np.float64,
            meta=np.empty((0,) * g.ndim, dtype=np.float64),
        )
        return sums.sum()
    g = _gradient_core(f, scheme=scheme, bounds=(boundary,) * f.ndim, steps=steps)
    return float(_norm_sum(g.reshape(f.ndim, -1), isotropic, eps))


def tv_gradient(
    f,
    *,
    kind: str = "isotropic",
    scheme: str = "forward",
    boundary: str = "neumann",
    spacing: float | Sequence[float] | None = None,
    eps: float = 0.0,
) -> np.ndarray:
    r"""The gradient of :func:`tv_norm` with respect to the voxel values (seed 000).

    .. math::

        \nabla_f \mathrm{TV}_\varepsilon(f) = \sum_l D_l^\top \frac{D_l f}{|\nabla f|_\varepsilon}
        = -\operatorname{div}\Big(\frac{\nabla f}{|\nabla f|_\varepsilon}\Big),

    with :math:`|\nabla f|_\varepsilon = \sqrt{\sum_l (D_l f)^2 + \varepsilon^2}` (isotropic) or
    :math:`\sqrt{(D_l f)^2 + \varepsilon^2}` per component (anisotropic).  At ε = 0 the terms
    where the norm vanishes contribute 0 (the minimal-norm choice of subgradient there).

    Parameters
    ----------
    f : array_like or dask array
        1-D to 3-D image.
    kind, scheme, boundary, spacing, eps
        As in :func:`tv_norm`.

    Returns
    -------
    ndarray like ``f`` (float dtype kept)
        For a dask ``f``, a lazy dask array with ``f``'s chunks.

    Notes
    -----
    A dask ``f`` is handled as in :func:`gradient`, in one pass per block: gradient,
    normalisation and divergence run on the block extended by two rows on each side of every
    axis for central differences and one for forward and backward ones.  That is exact: the
    divergence at voxel ``i`` reads the normalised gradient at ``i−1`` (forward differences),
    ``i+1`` (backward) or ``i±1`` (central), which reads the image at its own ``+1``, ``−1`` or
    ``±1`` neighbours along every axis (all components, for the isotropic norm): ``f`` within
    one row of ``i`` (diagonal neighbours included) for forward and backward differences, two
    for central ones.  Chunking, boundaries and NaN checks as in :func:`gradient`.

    Examples
    --------
    >>> import numpy as np
    >>> tv_gradient(np.array([0.0, 0.0, 1.0, 1.0]))
    array([ 0., -1.,  1.,  0.])
    """
    f, steps, eps = _checked_tv_args(f, kind, scheme, boundary, spacing, eps)
    core = partial(_tv_gradient_core, kind=kind, scheme=scheme, steps=steps, eps=eps)
    if is_dask_array(f):
        return _map_halo(
            core, f, _HALO["tv"][scheme], boundary, lead_in=0, lead_shape=(), dtype=f.dtype
        )
    return core(f, bounds=(boundary,) * f.ndim)


# --------------------------------------------------------------------------------------------
# Graph TV: neighbourhoods and edge weights
# --------------------------------------------------------------------------------------------
def _check_ndim_connectivity(ndim, connectivity) -> tuple[int, int]:
    ndim = check_int("ndim", ndim, minimum=1)
    if ndim > 3:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}")
    connectivity = check_int("connectivity", connectivity, minimum=1)
    if connectivity > ndim:
        raise ValueError(f"connectivity must be between 1 and ndim={ndim}, got {connectivity}")
    return ndim, connectivity


@lru_cache(maxsize=16)
def _offsets(ndim: int, connectivity: int) -> np.ndarray:
    offs = [
        o
        for o in itertools.product((-1, 0, 1), repeat=ndim)
        if 1 <= sum(map(abs, o)) <= connectivity and next(x for x in o if x) > 0
    ]
    # axis-aligned first (in axis order), then 2-, then 3-non-zero; lexicographic within
    offs.sort(key=lambda o: (sum(map(abs, o)), [-x for x in o]))
    out = np.array(offs, dtype=np.int64).reshape(-1, ndim)
    out.flags.writeable = False
    return out


def neighbour_offsets(ndim: int, connectivity: int = 1) -> np.ndarray:
    """Half-neighbourhood offsets: one per unordered pair of neighbours.

    Parameters
    ----------
    ndim : int
        1, 2 or 3.
    connectivity : int
        As in :func:`scipy.ndimage.generate_binary_structure`: neighbours differ by at most 1 on
        every axis and on at most ``connectivity`` axes (2-D: 1 → 4 neighbours, 2 → 8;
        3-D: 1 → 6, 2 → 18, 3 → 26).

    Returns
    -------
    ndarray of int64, shape ``(K, ndim)``
        ``K`` = half the neighbourhood size; each offset's first non-zero entry is +1.
        Axis-aligned offsets come first, in axis order.

    Examples
    --------
    >>> neighbour_offsets(2, 2)
    array([[ 1,  0],
           [ 0,  1],
           [ 1,  1],
           [ 1, -1]])
    """
    return _offsets(*_check_ndim_connectivity(ndim, connectivity)).copy()


@lru_cache(maxsize=32)
def _crofton_weights(ndim: int, connectivity: int, spacing: tuple[float, ...]) -> np.ndarray:
    offs = _offsets(ndim, connectivity).astype(np.float64)
    vecs = offs * np.asarray(spacing)  # physical edge vectors
    lengths = np.linalg.norm(vecs, axis=1)
    cell = float(np.prod(spacing))
    both = np.concatenate([vecs, -vecs]) / np.concatenate([lengths, lengths])[:, None]
    k = len(offs)
    if ndim == 2:
        ang = np.arctan2(both[:, 1], both[:, 0])
        order = np.argsort(ang)
        a = ang[order]
        gaps = np.diff(np.concatenate([a, a[:1] + 2 * math.pi]))
        # Voronoi cell of direction j on the circle: half the gap on each side
        share = np.empty(2 * k)
        share[order] = 0.5 * (gaps + np.roll(gaps, 1))
        dphi = share[:k] + share[k:]  # both orientations of one edge
        return cell * dphi / (4.0 * lengths)
    # 3-D: exact solid angles of the spherical Voronoi cells of ±e_k
    solid = SphericalVoronoi(both).calculate_areas()
    dtheta = solid[:k] + solid[k:]
    return cell * dtheta / (2.0 * math.pi * lengths)


def edge_weights(
    ndim: int,
    connectivity: int = 1,
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    r"""Default weights of the graph TV, one per offset of :func:`neighbour_offsets`.

    Parameters
    ----------
    ndim, connectivity
        As in :func:`neighbour_offsets`.
    spacing : float or sequence of float, optional
        Voxel size per axis (default 1), relative (divided by its smallest entry).

    Returns
    -------
    ndarray of float64, shape ``(K,)``

    Notes
    -----
    *Connectivity 1*: :math:`w_l = 1/h_l`, so that
    :math:`\sum_{s\sim t} w_{st}|u_s-u_t| = \sum_l \|D_l u\|_1` is exactly the anisotropic
    :func:`tv_norm` (forward differences, Neumann boundary) with the same spacing.

    *Connectivity ≥ 2*: Cauchy–Crofton weights (Boykov & Kolmogorov 2003), which make the cut
    cost approximate the Euclidean perimeter (surface area in 3-D), hence the graph TV
    approximates the isotropic TV in scale.  With :math:`e_k` the physical edge vector
    (offset × spacing), :math:`V = \prod_l h_l` the voxel size and :math:`\Delta\phi_k` the
    angle (2-D) or :math:`\Delta\Phi_k` the solid angle (3-D) of the Voronoi cells of
    :math:`\pm e_k/|e_k|` on the unit circle or sphere (both orientations together),

    .. math::

        w_k = \frac{V\,\Delta\phi_k}{4|e_k|} \ \text{(2-D)}, \qquad
        w_k = \frac{V\,\Delta\Phi_k}{2\pi |e_k|} \ \text{(3-D)},

    the discretised Cauchy–Crofton formulas :math:`\int_0^{2\pi}|\cos\theta|\,d\theta = 4` and
    :math:`\int_{S^2}|\cos\theta|\,d\Omega = 2\pi`, so that
    :math:`\sum_k w_k |e_k\cdot n| \approx V` for every unit normal ``n``: a straight edge of
    length ``ℓ`` (a plane of area ``A``) crosses ``ℓ|e_k·n|/V`` edges of type ``k`` and costs
    about ``ℓ`` (``A``).  2-D unit grid, 8-neighbourhood: ``w = π/8`` for axis edges and
    ``π/(8√2)`` for diagonals.  3-D solid angles are the exact areas of the spherical Voronoi cells
    (:class:`scipy.spatial.SphericalVoronoi`); unit grid, 26-neighbourhood: ``w ≈ 0.1831``
    (axis), ``0.1046`` (face diagonals), ``0.0813`` (body diagonals).

    References
    ----------
    Y. Boykov, V. Kolmogorov, "Computing geodesics and minimal surfaces via graph cuts",
    ICCV 2003.

    Examples
    --------
    >>> edge_weights(2, 1, spacing=(2.0, 1.0))
    array([0.5, 1. ])
    >>> np.round(edge_weights(2, 2), 4)
    array([0.3927, 0.3927, 0.2777, 0.2777])
    """
    ndim, connectivity = _check_ndim_connectivity(ndim, connectivity)
    steps = check_spacing(spacing, ndim)
    if connectivity == 1:
        return 1.0 / np.asarray(steps, dtype=np.float64)
    return _crofton_weights(ndim, connectivity, steps).copy()


def resolve_weights(
    ndim: int,
    connectivity: int = 1,
    weights=None,
    spacing: float | Sequence[float] | None = None,
) -> np.ndarray:
    """The K edge weights of a graph TV: defaults, a scalar for all, or one per offset.

    Parameters
    ----------
    ndim, connectivity
        As in :func:`neighbour_offsets`.
    weights : None, float or sequence of float
        None: :func:`edge_weights` (which follow ``spacing``); a scalar: that weight on every
        edge; a sequence: one weight per offset of ``neighbour_offsets(ndim, connectivity)``.
        Weights must be finite and ≥ 0.
    spacing
        Used only when ``weights`` is None.

    Returns
    -------
    ndarray of float64, shape ``(K,)``

    Examples
    --------
    >>> resolve_weights(2, 1, weights=0.26)
    array([0.26, 0.26])
    """
    ndim, connectivity = _check_ndim_connectivity(ndim, connectivity)
    if weights is None:
        return edge_weights(ndim, connectivity, spacing)
    k = len(_offsets(ndim, connectivity))
    w = np.asarray(weights)
    if w.dtype.kind not in "iuf" or w.ndim > 1:
        raise TypeError(f"weights must be None, a number or a sequence of {k} numbers, "
                        f"got {weights!r}")
    w = np.broadcast_to(w.astype(np.float64), (k,)) if w.ndim == 0 else w.astype(np.float64)
    if w.shape != (k,):
        raise ValueError(
            f"weights must have {k} entries for ndim={ndim}, connectivity={connectivity} "
            f"(one per neighbour offset), got {len(w)}"
        )
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise ValueError(f"weights must be finite and >= 0, got {weights!r}")
    return np.array(w)


def edge_slices(shape: tuple[int, ...], offset) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices selecting ``s`` and ``s + offset`` over every pair with both ends inside an
    array of ``shape`` (the edges of one offset of the graph TV)."""
    src, dst = [], []
    for n, o in zip(shape, offset, strict=True):
        o = int(o)
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    return tuple(src), tuple(dst)


def _graph_tv_sum(u3: np.ndarray, offsets: np.ndarray, weights: np.ndarray) -> float:
    """``Σ_k w_k Σ_s |u_s - u_{s+o_k}|`` over the pairs inside the padded 3-D view, each
    difference taken in float64.  NumPy, one pass per offset: nothing to compile (the exact
    solver's energy; a Numba kernel cost a second of compilation for ~10 ms a volume)."""
    total = 0.0
    for off, w in zip(offsets, weights, strict=True):
        lo, hi = edge_slices(u3.shape, off)
        diff = np.subtract(u3[hi], u3[lo], dtype=np.float64)
        total += float(w) * float(np.abs(diff, out=diff).sum())
    return total


def graph_tv(
    u,
    *,
    connectivity: int = 1,
    weights=None,
    spacing: float | Sequence[float] | None = None,
) -> float:
    r"""The graph total variation :math:`\sum_{s\sim t} w_{st}\,|u_s - u_t|`.

    Every unordered pair of neighbours (offsets of :func:`neighbour_offsets`, both voxels inside
    the array) counts once.  With ``connectivity=1`` and default weights this equals
    ``tv_norm(u, kind="anisotropic")`` (forward differences, Neumann boundary, same spacing).

    Parameters
    ----------
    u : array_like
        1-D to 3-D image.
    connectivity, weights, spacing
        As in :func:`resolve_weights`.

    Returns
    -------
    float (accumulated in float64)

    Examples
    --------
    >>> import numpy as np
    >>> graph_tv(np.array([[0.0, 1.0], [1.0, 3.0]]))
    6.0
    """
    u = as_float_array(u, "u")
    w = resolve_weights(u.ndim, connectivity, weights, spacing)
    offs = np.zeros((len(w), 3), dtype=np.int64)
    offs[:, 3 - u.ndim :] = _offsets(u.ndim, connectivity)
    # here, not at the top: importing the solvers package imports this module
    from napari_tv.solvers._stencils import as_3d

    return _graph_tv_sum(as_3d(u), offs, w)


def level_count(image, levels=None) -> int:
    """The number of levels :func:`level_grid` makes (an upper bound for a sequence with
    duplicates), computed without making them; ``image`` may be the raw data."""
    if levels is None:
        raw = np.asarray(image)
        if raw.dtype.kind in "biu":
            return int(np.max(raw)) - int(np.min(raw)) + 1
        return 256
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        return check_int("levels", levels, minimum=2)
    return int(np.size(levels))


def level_grid(image, levels=None) -> np.ndarray:
    """The grid of grey levels the exact solver and the level sets work on.

    Parameters
    ----------
    image : array_like
        The image; its dtype decides the default grid.
    levels : None, int or sequence of float
        None: every integer from min to max for bool and integer images, 256 evenly spaced
        values over [min, max] for float images; an int ``L ≥ 2``: ``L`` evenly spaced values
        over [min, max]; a sequence: exactly those values (sorted, duplicates removed).  A
        constant image gives a one-value grid (for None and int).

    Returns
    -------
    ndarray of float64, 1-D, strictly increasing

    Examples
    --------
    >>> import numpy as np
    >>> level_grid(np.array([[2, 5]], dtype=np.uint8))
    array([2., 3., 4., 5.])
    >>> level_grid(np.array([0.0, 1.0]), levels=5)
    array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    raw = np.asarray(image)
    arr = as_float_array(raw, "image")
    lo, hi = float(arr.min()), float(arr.max())
    n = level_count(raw, levels)
    require(8 * n, f"a grid of {n} grey levels", "pass levels=<a count> (e.g. 4096)")
    if levels is None and raw.dtype.kind in "biu":
        return np.arange(lo, hi + 1.0, dtype=np.float64)
    if levels is None or (isinstance(levels, (int, np.integer)) and not isinstance(levels, bool)):
        return np.array([lo]) if lo == hi else np.linspace(lo, hi, n)
    grid = np.asarray(levels)
    if grid.ndim != 1 or grid.size == 0 or grid.dtype.kind not in "iuf":
        raise TypeError(f"levels must be None, an int >= 2 or a 1-D sequence of numbers, "
                        f"got {levels!r}")
    grid = grid.astype(np.float64)
    if not np.isfinite(grid).all():
        raise ValueError(f"levels must be finite, got {levels!r}")
    return np.unique(grid)


def tv_energy(
    u,
    image,
    beta: float,
    *,
    fidelity: str = "l2",
    tv: str = "isotropic",
    boundary: str = "neumann",
    spacing: float | Sequence[float] | None = None,
    connectivity: int | None = None,
    weights=None,
) -> float:
    r"""The energy every solver minimises, :math:`E(u) = \sum_s f(u_s, v_s) + \beta\,TV(u)`.

    Parameters
    ----------
    u : array_like
        The candidate solution.
    image : array_like
        The data ``v`` (same shape as ``u``).
    beta : float
        Regularisation weight ≥ 0.
    fidelity : {"l2", "l1", "poisson"}
        ``½(u−v)²``, ``|u−v|`` or ``u − v·log u`` (see :mod:`napari_tv.fidelity`).
    tv : {"isotropic", "anisotropic"}
        The TV of the iterative solvers: ``tv_norm(u, kind=tv, scheme="forward", boundary,
        spacing)``.  Ignored when ``connectivity`` is given.
    boundary, spacing
        As in :func:`tv_norm`.
    connectivity : int, optional
        If given, the graph TV of the exact solver: ``graph_tv(u, connectivity, weights,
        spacing)``.
    weights
        Edge weights of the graph TV (see :func:`resolve_weights`).

    Returns
    -------
    float
        Accumulated in float64; ``inf`` for a Poisson fidelity with ``u ≤ 0 < v`` somewhere.

    Examples
    --------
    >>> import numpy as np
    >>> tv_energy(np.zeros(3), np.array([0.0, 1.0, 0.0]), 2.0)
    0.5
    >>> tv_energy(np.array([0.0, 1.0, 0.0]), np.zeros(3), 2.0, connectivity=1)
    4.5
    """
    u = as_float_array(u, "u")
    image = as_float_array(image, "image")
    if u.shape != image.shape:
        raise ValueError(f"u must have the image's shape {image.shape}, got {u.shape}")
    beta = check_real("beta", beta, minimum=0.0)
    check_fidelity_data(image, fidelity)
    data = fidelity_value(u, image, fidelity)
    if connectivity is None:
        reg = tv_norm(u, kind=tv, scheme="forward", boundary=boundary, spacing=spacing)
    else:
        reg = graph_tv(u, connectivity=connectivity, weights=weights, spacing=spacing)
    return float(data + beta * reg) if beta > 0 else float(data)


def warm(dtype) -> None:
    """Run the operators' kernels (every scheme, boundary and TV kind; graph TV) on tiny
    arrays of ``dtype`` (``napari_tv._compile``)."""
    for shape in ((6, 5), (3, 4, 5)):
        f = np.linspace(0.0, 1.0, int(np.prod(shape))).reshape(shape).astype(dtype)
        for scheme in SCHEMES:
            for boundary in BOUNDARIES:
                for kind in TV_KINDS:
                    kw = {"scheme": scheme, "boundary": boundary, "kind": kind}
                    tv_gradient(f, eps=0.1, **kw)
                    tv_norm(f, **kw)
        for connectivity in range(1, len(shape) + 1):
            graph_tv(f, connectivity=connectivity)
