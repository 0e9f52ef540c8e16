"""The dask side of :mod:`napari_tv.operators`: lazy, block by block, each block extended by
the halo its operator reads.

* :func:`check_dask_array` and :func:`as_float_dask_array`: the checks of
  :func:`~napari_tv._validation.as_float_array` for a dask array, those that need no data now,
  the conversion and the NaN/inf check block by block at compute (also used by
  :mod:`napari_tv.levelsets`);
* ``_HALO``: the halo (rows before, rows after) each operator reads, per scheme;
* :func:`_map_halo`: an in-memory kernel on every block extended by its halo
  (``dask.array.overlap``), trimmed back to the voxels the block owns.

The kernels themselves stay in :mod:`napari_tv.operators`, which passes them in; dask is
imported only when a dask array is passed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import numpy as np

from ._validation import float_dtype

#: The halo (rows before, rows after) each operator needs on every spatial axis, per scheme.
#: A kept voxel must (a) find every value its stencil reads inside the extended block and
#: (b) not be a row that the in-memory Neumann table special-cases at the block's ends (its
#: first and/or last row).  Gradient: (a) alone decides (forward reads f_{i+1} and special-cases
#: the last row, backward f_{i-1} and the first, central both).  Divergence: forward reads only
#: p_{i-1} but its table special-cases both end rows (the last is -p_{n-2}), backward likewise,
#: so one row on each side.  TV gradient (gradient, pointwise normalisation, divergence):
#: f_{i±1} for forward and backward differences, f_{i±2} for central ones, diagonal
#: neighbours included (the isotropic normalisation couples the components).
_HALO = {
    "gradient": {"forward": (0, 1), "backward": (1, 0), "central": (1, 1)},
    "divergence": {"forward": (1, 1), "backward": (1, 1), "central": (1, 1)},
    "tv": {"forward": (1, 1), "backward": (1, 1), "central": (2, 2)},
}


def check_dask_array(x, name: str = "image", *, ndims: Sequence[int] = (1, 2, 3)) -> None:
    """The checks of :func:`~napari_tv._validation.as_float_array` that need no data (dtype,
    number of axes, size), with the same messages, for a dask array ``x``."""
    dtype = np.dtype(x.dtype)
    if dtype.kind == "c":
        raise TypeError(f"{name} must be real-valued, got complex dtype {dtype}")
    if dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {dtype}")
    if x.ndim not in ndims:
        allowed = ", ".join(str(d) for d in ndims)
        raise ValueError(
            f"{name} must have {allowed} dimensions, got {x.ndim} (shape {x.shape})"
        )
    if any(math.isnan(n) for n in x.shape):
        raise ValueError(
            f"{name} has unknown chunk sizes (shape {x.shape}); call compute_chunk_sizes() first"
        )
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")


def _checked_block(block, *, dtype, name, finite):
    arr = np.ascontiguousarray(block, dtype=dtype)
    if finite:
        ok = np.isfinite(arr)
        if not ok.all():
            n_bad = int(arr.size - np.count_nonzero(ok))
            raise ValueError(
                f"{name} must be finite, got {n_bad} NaN or inf value(s) in one of its blocks"
            )
    return arr


def as_float_dask_array(x, name: str = "image", *, ndims: Sequence[int] = (1, 2, 3),
                        finite: bool = True):
    """:func:`~napari_tv._validation.as_float_array` for a dask array, lazily.

    Dtype, number of axes and size are checked now (:func:`check_dask_array`); the conversion
    to the float dtype and, with ``finite``, the NaN/inf check run block by block when the
    result is computed (a non-finite value then raises ``ValueError`` from the compute).
    The chunks are kept.
    """
    check_dask_array(x, name, ndims=ndims)
    work = float_dtype(x.dtype)
    if x.dtype == work and not finite:
        return x
    return x.map_blocks(
        partial(_checked_block, dtype=work, name=name, finite=finite),
        dtype=work,
        meta=np.empty((0,) * x.ndim, dtype=work),
    )


def _merge_small(chunks: tuple[int, ...], size: int) -> tuple[int, ...]:
    """``chunks`` with every chunk smaller than ``size`` merged into a neighbour."""
    out: list[int] = []
    for c in chunks:
        if out and out[-1] < size:
            out[-1] += c
        else:
            out.append(c)
    if len(out) > 1 and out[-1] < size:
        last = out.pop()
        out[-1] += last
    return tuple(out)


def _halo_plan(chunks, halo, boundary):
    """Per spatial axis: the chunks to compute on, the overlap's depth and boundary, and the
    boundary the in-memory kernel applies to the extended block.

    * An axis in one chunk (or merged into one, being shorter than its halo): no halo, and the
      kernel applies the global boundary itself.
    * Neumann: ``boundary="none"``, with the asymmetric halo; at the array's ends no halo is
      added, so the kernel's own Neumann rows are the global ones, and at every cut between
      blocks the rows it treats as an end lie in the halo, which is trimmed.
    * Periodic: ``boundary="periodic"`` with the symmetric halo (dask pads asymmetric halos
      only with "none"): every block, the first and last included, is extended by the wrapped
      neighbours, so the non-periodic kernel sees the periodic neighbourhood of every voxel it
      keeps.
    """
    work, depth, edges, bounds = [], {}, {}, []
    for axis, (c, (lo, hi)) in enumerate(zip(chunks, halo, strict=True)):
        c = _merge_small(tuple(c), max(lo, hi))
        work.append(c)
        if len(c) == 1:
            depth[axis], edges[axis] = 0, "none"
            bounds.append(boundary)
        elif boundary == "periodic":
            depth[axis], edges[axis] = max(lo, hi), "periodic"
            bounds.append("neumann")
        else:
            depth[axis], edges[axis] = (lo, hi), "none"
            bounds.append("neumann")
    return tuple(work), depth, edges, tuple(bounds)


def _map_halo(kernel, x, halo, boundary, *, lead_in, lead_shape, dtype, keep_chunks=True):
    """``kernel(block, bounds=...)`` on every block of the dask array ``x`` extended by its
    halo, trimmed back to the voxels the block owns: lazy, nothing is computed.

    ``x`` has ``lead_in`` (0 or 1) leading non-spatial axes (the vector field's components),
    taken whole: one chunk, no halo; the kernel returns ``lead_shape + extended block shape``
    (an axis dropped or added in front).  ``halo``: (before, after) for every spatial axis.
    Chunks smaller than the halo are merged with a neighbour for the computation; with
    ``keep_chunks`` the result is rechunked back to ``x``'s spatial chunks.
    """
    from dask.array.overlap import overlap, trim_internal

    spatial = x.chunks[lead_in:]
    work, depth, edges, bounds = _halo_plan(spatial, [halo] * len(spatial), boundary)
    lead_in_chunks = tuple((n,) for n in x.shape[:lead_in])
    x = x.rechunk(lead_in_chunks + work)
    ext = overlap(
        x,
        depth={a: 0 for a in range(lead_in)} | {lead_in + a: d for a, d in depth.items()},
        boundary={a: "none" for a in range(lead_in)}
        | {lead_in + a: e for a, e in edges.items()},
        allow_rechunk=False,
    )
    n_lead = len(lead_shape)
    axes_kw = {}
    if lead_in > n_lead:
        axes_kw["drop_axis"] = list(range(n_lead, lead_in))
    elif lead_in < n_lead:
        axes_kw["new_axis"] = list(range(lead_in, n_lead))
    out = ext.map_blocks(
        partial(kernel, bounds=bounds),
        chunks=tuple((n,) for n in lead_shape) + ext.chunks[lead_in:],
        dtype=dtype,
        meta=np.empty((0,) * (n_lead + len(spatial)), dtype=dtype),
        **axes_kw,
    )
    if any(d != 0 for d in depth.values()):
        out = trim_internal(
            out,
            {a: 0 for a in range(n_lead)} | {n_lead + a: d for a, d in depth.items()},
            boundary={a: "none" for a in range(n_lead)}
            | {n_lead + a: e for a, e in edges.items()},
        )
    if keep_chunks and work != tuple(spatial):
        out = out.rechunk(tuple((n,) for n in lead_shape) + tuple(spatial))
    return out
