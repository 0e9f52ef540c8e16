"""Level sets of an image, their perimeters, and the discrete coarea formula.

An image ``u`` with values on a grid :math:`\\lambda_0 < \\dots < \\lambda_{L-1}` is the stack
of its lower level sets :math:`u^{\\lambda} = \\mathbb{1}[u \\le \\lambda]` (Darbon and Sigelle),
and its graph total variation is the weighted sum of their perimeters (the discrete coarea
formula).  This module computes both directions of ``u <-> {u^λ}``, the perimeters, the coarea
TV, and the partition of the image after each round of the exact solver's dichotomy.

Every perimeter uses the graph of :mod:`napari_tv.operators` (``neighbour_offsets``,
``resolve_weights``, ``graph_tv``): there is one definition of the edge weights.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from napari_tv._dask_ops import as_float_dask_array, check_dask_array
from napari_tv._validation import as_float_array
from napari_tv.operators import (
    edge_slices,
    graph_tv,
    is_dask_array,
    level_grid,
    neighbour_offsets,
    resolve_weights,
)

__all__ = [
    "level_sets",
    "level_set",
    "from_level_sets",
    "perimeter",
    "level_perimeters",
    "coarea_tv",
    "dichotomy_partition",
]

_NDIMS = (1, 2, 3)


def _as_real_array(u, name: str = "u") -> np.ndarray:
    """Check ``u`` like :func:`as_float_array` but keep bool/integer dtypes (no float copy).

    Thresholding a 16-bit volume needs no float64 copy of it (four times its size).
    """
    arr = np.asarray(u)
    if arr.dtype.kind in "biu":
        if arr.ndim not in _NDIMS:
            raise ValueError(
                f"{name} must have 1, 2, 3 dimensions, got {arr.ndim} (shape {arr.shape})"
            )
        if arr.size == 0:
            raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
        return arr
    return as_float_array(arr, name, ndims=_NDIMS)


def _as_real_dask(u, name: str = "u", *, finite: bool = True):
    """:func:`_as_real_array` for a dask array, lazily: dtype, axes and size checked now;
    floats converted (and, with ``finite``, checked for NaN/inf) block by block at compute."""
    if np.dtype(u.dtype).kind in "biu":
        check_dask_array(u, name, ndims=_NDIMS)
        return u
    return as_float_dask_array(u, name, ndims=_NDIMS, finite=finite)


def _below_levels(block: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """``block <= lam`` for each ``lam``, stacked on a new leading axis."""
    return block[None, ...] <= lams.reshape((-1,) + (1,) * block.ndim)


def _check_lam(lam) -> None:
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be a real number, got {lam!r}")
    if np.isnan(lam):
        raise ValueError(f"lam must not be NaN, got {lam!r}")


def _grid_indices(u: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the first level ``>= u_s`` for every pixel (``len(grid)`` above the top).

    ``u_s <= grid[j]`` exactly when ``j >= index_s``, so pixel ``s`` belongs to the level
    sets ``u^{grid[j]}`` for ``j >= index_s``.
    """
    return np.searchsorted(grid, u, side="left")


def level_set(u, lam: float) -> np.ndarray:
    """One lower level set ``u <= lam`` of ``u``, as a bool array.

    Parameters
    ----------
    u : array_like or dask array, 1-D, 2-D or 3-D
        Image or volume (any real dtype; integers are not converted).
    lam : float
        The level :math:`\\lambda`.

    Returns
    -------
    ndarray of bool, shape ``u.shape``
        :math:`u^{\\lambda}_s = \\mathbb{1}[u_s \\le \\lambda]`.  For a dask ``u``, a lazy
        dask array with ``u``'s chunks (one comparison per block, no halo).

    Raises
    ------
    TypeError
        If ``u`` is complex or not numeric, or ``lam`` is not a real number.
    ValueError
        If ``u`` is empty, has NaN/inf or more than 3 dimensions, or ``lam`` is NaN.

    Notes
    -----
    Use this in a loop over levels when the whole stack of :func:`level_sets` does not fit
    in memory (a 16-bit volume has up to 65 535 level sets).

    For a dask ``u`` nothing is computed at the call: dtype, number of axes and size are
    checked then, and a float ``u`` is checked for NaN/inf block by block when the result is
    computed (``ValueError`` from the compute).

    Examples
    --------
    >>> import numpy as np
    >>> level_set(np.array([0, 3, 1, 2]), 1)
    array([ True, False,  True, False])
    """
    arr = _as_real_dask(u) if is_dask_array(u) else _as_real_array(u)
    _check_lam(lam)
    return arr <= lam


def level_sets(u, levels=None) -> np.ndarray:
    """The stack of lower level sets :math:`u^{\\lambda} = \\mathbb{1}[u \\le \\lambda]`.

    Parameters
    ----------
    u : array_like or dask array, 1-D, 2-D or 3-D
        Image or volume.
    levels : None, int or sequence of float, optional
        The grid :math:`\\lambda_0 < \\dots < \\lambda_{L-1}`, as in
        :func:`napari_tv.operators.level_grid`: every integer from ``min`` to ``max`` for
        bool/integer ``u``, 256 evenly spaced levels over ``[min, max]`` for floats; an int
        ``L``: ``L`` evenly spaced levels; a sequence: those levels.

    Returns
    -------
    ndarray of bool, shape ``(L - 1, *u.shape)``
        ``stack[k] = u <= grid[k]`` for ``k = 0 .. L-2``.  The last level is left out: when
        the grid covers ``u`` its level set is the whole domain.  For a dask ``u``, a lazy
        dask array chunked like ``u`` along its axes and one level per chunk along the new
        leading axis (computing one level reads ``u`` once and holds one bool block per block
        of ``u``).

    Raises
    ------
    TypeError, ValueError
        For an invalid ``u`` or ``levels``.

    See Also
    --------
    level_set : one level at a time, for volumes whose stack does not fit in memory.
    from_level_sets : the inverse.

    Notes
    -----
    The stack is non-increasing in ``u`` and nested in :math:`\\lambda`:
    :math:`u^{\\lambda} \\le u^{\\mu}` for :math:`\\lambda < \\mu`.  ``u`` is recovered by
    :math:`u_s = \\min\\{\\lambda : u^{\\lambda}_s = 1\\}` (:func:`from_level_sets`).

    *Dask arrays*: with ``levels`` a sequence of values the grid is known and nothing is
    computed at the call; a float ``u`` is then checked for NaN/inf block by block when the
    stack is computed (``ValueError`` from the compute).  With ``levels`` None or an int the
    grid (and the stack's length) depends on the data: ``u.min()`` and ``u.max()`` are
    computed at the call, in one pass over ``u`` (a NaN or inf there raises ``ValueError``
    at once); the comparisons stay lazy.

    References
    ----------
    .. [1] J. Darbon and M. Sigelle, "Image restoration with discrete constrained total
       variation. Part I: fast and exact optimization", J. Math. Imaging Vis. 26(3), 2006.

    Examples
    --------
    >>> import numpy as np
    >>> level_sets(np.array([0, 2, 1])).astype(int)
    array([[1, 0, 0],
           [1, 0, 1]])
    """
    if is_dask_array(u):
        return _level_sets_dask(u, levels)
    arr = _as_real_array(u)
    grid = level_grid(arr, levels)
    return _below_levels(arr, grid[:-1])


def _level_sets_dask(u, levels):
    """:func:`level_sets` of a dask array (see its Notes)."""
    import dask
    import dask.array as da

    explicit = levels is not None and (
        isinstance(levels, bool) or not isinstance(levels, (int, np.integer))
    )
    arr = _as_real_dask(u, finite=explicit)
    if explicit:  # the grid is the given values: nothing to compute
        grid = level_grid(np.zeros(1, dtype=arr.dtype), levels)
    else:
        lo, hi = dask.compute(arr.min(), arr.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("u must be finite, got NaN or inf value(s)")
        grid = level_grid(np.array([lo, hi], dtype=arr.dtype), levels)
    lams = grid[:-1]
    axes = "ijk"[: arr.ndim]
    return da.blockwise(
        _below_levels, "l" + axes,
        arr, axes,
        da.from_array(lams, chunks=1) if lams.size else da.from_array(lams),
        "l",
        align_arrays=False,  # no index is shared: nothing to align (and no chunk warning)
        dtype=bool,
        meta=np.empty((0,) * (arr.ndim + 1), dtype=bool),
    )


def from_level_sets(stack, grid) -> np.ndarray:
    """Rebuild ``u`` from its level sets: :math:`u_s = \\min\\{\\lambda : u^{\\lambda}_s = 1\\}`.

    Parameters
    ----------
    stack : array_like of bool, shape ``(L - 1, *shape)``
        Level sets as returned by :func:`level_sets` (non-zero means 1).
    grid : array_like of float, shape ``(L,)``
        The levels, strictly increasing.

    Returns
    -------
    ndarray of float64, shape ``shape``
        ``grid[k]`` for the first ``k`` with ``stack[k]`` set, ``grid[-1]`` where no level is
        set.  For ``u`` on the grid, ``from_level_sets(level_sets(u, grid), grid) == u``.

    Raises
    ------
    ValueError
        If ``grid`` is not 1-D, finite and strictly increasing, or ``len(stack) != len(grid) - 1``.

    Notes
    -----
    For a stack that is not nested (not the level sets of any image) the first set level
    still defines ``u``; nesting is what makes the map a bijection.

    Examples
    --------
    >>> import numpy as np
    >>> grid = np.array([0.0, 0.5, 1.0])
    >>> u = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> from_level_sets(level_sets(u, grid), grid)
    array([[1. , 0. ],
           [0.5, 0.5]])
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"grid must be a non-empty 1-D array, got shape {grid.shape}")
    if not np.isfinite(grid).all() or np.any(np.diff(grid) <= 0):
        raise ValueError("grid must be finite and strictly increasing")
    stack = np.asarray(stack)
    if stack.ndim < 1 or stack.shape[0] != grid.size - 1:
        raise ValueError(
            f"stack must have len(grid) - 1 = {grid.size - 1} levels on its first axis, "
            f"got shape {stack.shape}"
        )
    if stack.dtype != np.bool_:
        stack = stack != 0
    shape = stack.shape[1:]
    if stack.shape[0] == 0:
        return np.full(shape, grid[-1])
    first = np.argmax(stack, axis=0)
    first[~stack.any(axis=0)] = grid.size - 1
    return grid[first]


def perimeter(mask, connectivity: int = 1, weights=None, spacing=None) -> float:
    """Weighted perimeter of a binary image on the neighbourhood graph.

    Parameters
    ----------
    mask : array_like of bool (or 0/1), 1-D, 2-D or 3-D
        The set :math:`x`.
    connectivity : int, optional
        Neighbourhood as in ``scipy.ndimage.generate_binary_structure``: 1 (faces), up to
        ``ndim`` (faces, edges and corners).
    weights : None, float or sequence of float, optional
        Edge weights per neighbour offset; ``None``: the defaults of
        :func:`napari_tv.operators.edge_weights` (``1/h`` per axis for connectivity 1,
        Cauchy–Crofton weights otherwise).
    spacing : None, float or sequence of float, optional
        Voxel size per axis, relative (divided by its smallest entry).

    Returns
    -------
    float
        :math:`P(x) = \\sum_{s \\sim t} w_{st} |x_s - x_t|`, each unordered pair once.

    Raises
    ------
    TypeError, ValueError
        For an invalid mask (values other than 0/1) or invalid graph parameters.

    Notes
    -----
    This is :func:`napari_tv.operators.graph_tv` of the mask, so the perimeters of the level
    sets add up to the graph TV (:func:`coarea_tv`).  With connectivity 1 and unit spacing it
    counts the faces between the set and its complement (a Manhattan length/area); the
    Cauchy–Crofton weights of higher connectivities approximate the Euclidean one [1]_.

    References
    ----------
    .. [1] Y. Boykov and V. Kolmogorov, "Computing geodesics and minimal surfaces via graph
       cuts", ICCV 2003.

    Examples
    --------
    >>> import numpy as np
    >>> square = np.zeros((4, 4), bool)
    >>> square[1:3, 1:3] = True
    >>> perimeter(square)
    8.0
    """
    arr = np.asarray(mask)
    if arr.dtype != np.bool_:
        arr = as_float_array(arr, "mask", ndims=_NDIMS)
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("mask must be boolean or hold only 0 and 1")
    mask01 = arr.astype(np.float64)
    return float(graph_tv(mask01, connectivity=connectivity, weights=weights, spacing=spacing))


def level_perimeters(
    u,
    levels=None,
    connectivity: int = 1,
    weights=None,
    spacing=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Perimeter of every level set :math:`u^{\\lambda}`, all levels in one pass.

    Parameters
    ----------
    u : array_like, 1-D, 2-D or 3-D
        Image or volume.
    levels : None, int or sequence of float, optional
        The grid, as in :func:`level_sets`.
    connectivity, weights, spacing
        The neighbourhood graph, as in :func:`perimeter`.

    Returns
    -------
    lambdas : ndarray of float64, shape ``(L - 1,)``
        ``grid[:-1]``, the levels whose sets are measured.
    perimeters : ndarray of float64, shape ``(L - 1,)``
        ``perimeters[k] == perimeter(level_set(u, grid[k]), ...)``.

    Raises
    ------
    TypeError, ValueError
        For an invalid ``u``, ``levels`` or graph parameters.

    Notes
    -----
    An edge :math:`(s, t)` of weight :math:`w_{st}` separates :math:`u^{\\lambda}` exactly
    when :math:`\\min(u_s, u_t) \\le \\lambda < \\max(u_s, u_t)`.  With :math:`i_s` the index
    of the first level :math:`\\ge u_s`, it adds :math:`w_{st}` to every level index in
    :math:`[\\min(i_s, i_t), \\max(i_s, i_t))`: a difference array (``+w`` at the start,
    ``-w`` at the end, counted per offset with ``np.bincount``) and one cumulative sum give
    all :math:`L - 1` perimeters in :math:`O(KN + L)` for :math:`K` offsets and
    :math:`N` pixels, instead of :math:`L` passes over the image.

    Examples
    --------
    >>> import numpy as np
    >>> lambdas, p = level_perimeters(np.array([[0, 1], [2, 2]]))
    >>> lambdas, p
    (array([0., 1.]), array([2., 2.]))
    """
    arr = _as_real_array(u)
    grid = level_grid(arr, levels)
    w = resolve_weights(arr.ndim, connectivity, weights, spacing)
    offsets = neighbour_offsets(arr.ndim, connectivity)
    n_levels = grid.size
    index = _grid_indices(arr, grid)
    # crossings[k, j]: edges of offset k that separate the level set of grid[j] (exact integers)
    crossings = np.zeros((len(offsets), n_levels + 1), dtype=np.int64)
    for k, offset in enumerate(offsets):
        src, dst = edge_slices(arr.shape, offset)
        a, b = index[src], index[dst]
        if a.size == 0:
            continue
        crossings[k] += np.bincount(np.minimum(a, b).ravel(), minlength=n_levels + 1)
        crossings[k] -= np.bincount(np.maximum(a, b).ravel(), minlength=n_levels + 1)
    np.cumsum(crossings, axis=1, out=crossings)
    perimeters = w @ crossings[:, : n_levels - 1].astype(np.float64)
    return grid[:-1].copy(), perimeters


def coarea_tv(u, levels=None, connectivity: int = 1, weights=None, spacing=None) -> float:
    """Graph TV by the discrete coarea formula: :math:`\\sum_k \\Delta\\lambda_k P(u^{\\lambda_k})`.

    Parameters
    ----------
    u : array_like, 1-D, 2-D or 3-D
        Image or volume.
    levels : None, int or sequence of float, optional
        The grid, as in :func:`level_sets`.
    connectivity, weights, spacing
        The neighbourhood graph, as in :func:`perimeter`.

    Returns
    -------
    float
        :math:`\\sum_{k=0}^{L-2} (\\lambda_{k+1} - \\lambda_k)\\, P(u^{\\lambda_k})`.

    Raises
    ------
    TypeError, ValueError
        For an invalid ``u``, ``levels`` or graph parameters.

    Notes
    -----
    For :math:`u` with values on the grid, each edge crosses the levels between
    :math:`\\min(u_s,u_t)` and :math:`\\max(u_s,u_t)`, whose steps add up to
    :math:`|u_s - u_t|`, so

    .. math:: \\sum_{k=0}^{L-2} (\\lambda_{k+1}-\\lambda_k) P(u^{\\lambda_k})
              = \\sum_{s \\sim t} w_{st} |u_s - u_t| = \\mathrm{TV}_w(u),

    the discrete coarea formula (with connectivity 1 and unit weights, the anisotropic
    ``tv_norm``).  For ``u`` off the grid it is the TV of ``u`` rounded up to the grid.

    References
    ----------
    .. [1] J. Darbon and M. Sigelle, "Image restoration with discrete constrained total
       variation. Part I: fast and exact optimization", J. Math. Imaging Vis. 26(3), 2006.
    .. [2] H. Federer, *Geometric Measure Theory*, Springer, 1969 (the coarea formula).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_tv.operators import graph_tv
    >>> u = np.array([[0, 3], [1, 1]])
    >>> coarea_tv(u), graph_tv(u)
    (6.0, 6.0)
    """
    arr = _as_real_array(u)
    grid = level_grid(arr, levels)
    _, perimeters = level_perimeters(arr, grid, connectivity, weights, spacing)
    return float(np.dot(np.diff(grid), perimeters))


def dichotomy_partition(
    image,
    beta: float,
    *,
    fidelity: str = "l2",
    connectivity: int = 1,
    weights=None,
    spacing=None,
    levels=None,
    callback: Callable[[dict], bool] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The partition of the image after each round of the exact solver's dichotomy.

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D
        The noisy image :math:`v`.
    beta : float
        Regularisation weight (>= 0).
    fidelity : {"l2", "l1", "poisson"}, optional
        The data term, as in :func:`napari_tv.solvers.exact.solve_exact`.
    connectivity, weights, spacing
        The neighbourhood graph of the TV, as in :func:`perimeter`.
    levels : None, int or sequence of float, optional
        The grid, as in :func:`napari_tv.operators.level_grid` (decided by ``image``'s dtype).
    callback : callable, optional
        ``callback(info) -> bool``, passed to :func:`napari_tv.solvers.exact.solve_exact`:
        called once after each max-flow round with ``info["iter"]`` (the round, from 1),
        ``info["max_iter"]`` (the number of rounds, :math:`\\lceil \\log_2 L \\rceil`) and
        ``info["fraction"]`` (``iter / max_iter``, 1.0 after the last round; a single-level
        grid gives one call with fraction 1.0).  Returning True after round :math:`r` stops
        the dichotomy there: the result then holds the :math:`r` rounds completed (see
        Returns).  Returning True after the last round changes nothing.

    Returns
    -------
    labels : ndarray of int32, shape ``(depth, *image.shape)``
        ``labels[d, s]``: the interval pixel ``s`` is known to lie in after round ``d + 1``,
        numbered ``0, 1, ...`` in increasing order of the intervals.  ``depth`` is the
        number of rounds, :math:`\\lceil \\log_2 L \\rceil` for a grid of :math:`L` levels, or
        the rounds completed when ``callback`` stopped the run early (then the last
        partition is in general not yet made of single levels).
    intervals : list of ndarray of int64, shape ``(n_d, 2)``
        Per round, the ``[lo, hi]`` grid indices (inclusive) of each label:
        :math:`\\hat u_s \\in [\\lambda_{lo}, \\lambda_{hi}]` for ``labels[d, s]`` pointing at
        ``[lo, hi]``.  The last round holds single levels: ``lo == hi`` is the grid index
        of the exact minimiser (unless ``callback`` stopped the run early).

    Raises
    ------
    TypeError, ValueError
        For invalid data or parameters (as :func:`napari_tv.solvers.exact.solve_exact`).

    Notes
    -----
    For a convex fidelity the minimisers of the binary problems nest,
    :math:`\\hat u^{\\lambda} \\le \\hat u^{\\mu}` for :math:`\\lambda < \\mu`, so one cut at
    the middle level of an interval sends each of its pixels to the lower or the upper half,
    and the halves are never reconsidered.  After round :math:`d` every pixel lies in one of
    the at most :math:`2^d` intervals; each round refines the previous partition, and after
    about :math:`\\log_2 L` rounds every interval is one level.  These partitions are the
    data of figure 1 of Darbon and Sigelle [1]_.

    References
    ----------
    .. [1] J. Darbon and M. Sigelle, "Image restoration with discrete constrained total
       variation. Part I: fast and exact optimization", J. Math. Imaging Vis. 26(3), 2006.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([[0, 0, 7, 7], [0, 1, 6, 7]], dtype=np.uint8)
    >>> labels, intervals = dichotomy_partition(v, beta=1.0)
    >>> labels[0]  # after the first cut (at level 3): [0, 3] and [4, 7]
    array([[0, 0, 1, 1],
           [0, 0, 1, 1]], dtype=int32)
    >>> [iv.tolist() for iv in intervals]
    [[[0, 3], [4, 7]], [[0, 1], [6, 7]], [[1, 1], [6, 6]]]
    >>> intervals[-1][labels[-1], 0]  # grid index of the exact minimiser
    array([[1, 1, 6, 6],
           [1, 1, 6, 6]])
    >>> stop_after_one = lambda info: info["iter"] >= 1  # e.g. a Cancel button
    >>> len(dichotomy_partition(v, beta=1.0, callback=stop_after_one)[1])
    1
    """
    from napari_tv.solvers.exact import solve_exact  # the solver imports this module's peers

    raw = np.asarray(image)
    grid = level_grid(raw, levels)
    img = as_float_array(raw, "image", ndims=_NDIMS)
    result = solve_exact(
        img,
        beta,
        fidelity=fidelity,
        connectivity=connectivity,
        weights=weights,
        spacing=spacing,
        levels=grid,
        callback=callback,
        trace=True,
    )
    n_levels = np.int64(grid.size)
    trace = result.extra.get("trace") or []
    labels = np.empty((len(trace), *img.shape), dtype=np.int32)
    intervals = []
    for depth, (lo, hi) in enumerate(trace):
        key = np.asarray(lo, dtype=np.int64) * n_levels + np.asarray(hi, dtype=np.int64)
        unique, inverse = np.unique(key.ravel(), return_inverse=True)
        labels[depth] = inverse.reshape(img.shape)
        intervals.append(np.stack([unique // n_levels, unique % n_levels], axis=1))
    return labels, intervals
