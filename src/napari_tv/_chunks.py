"""What the chunked solves share (:mod:`napari_tv.chunked`, iterative, and
:mod:`napari_tv._exact_chunked`, exact): the result type, the dask input, the blocks to solve
on, the output array, and how many tasks the scheduler runs side by side.  dask and zarr are
imported inside the functions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_tv._validation import is_dask_array
from napari_tv.solvers._result import TVResult

__all__ = ["ChunkedResult"]


@dataclass(repr=False)
class ChunkedResult(TVResult):
    """A :class:`~napari_tv.solvers._result.TVResult` whose ``u`` is a dask array.

    Attributes (besides TVResult's)
    -------------------------------
    rounds : int
        Rounds of block solves run (each ``iterations_per_round`` iterations, halo as wide);
        for the exact solver, passes over the blocks.
    chunks : tuple
        The chunks the solve ran on (those of ``u``).
    """

    rounds: int = 0
    chunks: tuple = ()

    def __repr__(self) -> str:
        text = super().__repr__()[:-1] + f", rounds={self.rounds})"
        return "ChunkedResult" + text[len("TVResult") :]


def _as_dask(image, chunks):
    import dask.array as da

    if is_dask_array(image):
        x = image
    elif type(image).__module__.split(".")[0] == "zarr":
        x = da.from_zarr(image)
    else:
        x = da.from_array(np.asarray(image), chunks="auto" if chunks is None else chunks)
    if chunks is not None and is_dask_array(image):
        x = x.rechunk(chunks)
    if x.dtype.kind == "c":
        raise TypeError(f"image must be real-valued, got complex dtype {x.dtype}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"image must be a numeric array, got dtype {x.dtype}")
    if x.ndim not in (1, 2, 3):
        raise ValueError(f"image must have 1, 2, 3 dimensions, got {x.ndim} (shape {x.shape})")
    if any(math.isnan(n) for n in x.shape):
        raise ValueError(f"image must have a known shape, got {x.shape}")
    if x.size == 0:
        raise ValueError(f"image must not be empty, got shape {x.shape}")
    return x


def solve_chunks(chunks: tuple, target: int, min_blocks: int = 1) -> tuple:
    """Blocks to solve on: the storage ``chunks`` merged, last axis first (long contiguous
    lines), into blocks of at most ``target`` voxels (or a ``min_blocks``-th of the volume,
    if smaller, so that every worker has one).  Each block is a union of whole chunks, so
    reading one reads whole chunks.  The halo's share of the work falls as blocks grow
    (``(c + 2K + 2) / c`` per split axis), so blocks are as big as memory lets them be."""
    volume = math.prod(sum(c) for c in chunks)
    target = max(1, min(target, volume // max(1, min_blocks)))
    out = [list(c) for c in chunks]
    for a in reversed(range(len(out))):
        others = math.prod(max(out[b]) for b in range(len(out)) if b != a)
        cap = max(1, target // others)  # the longest block this axis may have
        merged: list[int] = []
        for c in out[a]:
            if merged and merged[-1] + c <= cap:
                merged[-1] += c
            else:
                merged.append(c)
        out[a] = merged
    return tuple(tuple(c) for c in out)


def _fit_chunks(chunks: tuple, depth: int, periodic: bool) -> tuple:
    """Chunks of at least ``depth`` voxels along every axis with more than one (a halo comes
    from the neighbours only): short chunks are merged into the one before."""
    out = []
    for axis_chunks in chunks:
        if len(axis_chunks) == 1 and not periodic:
            out.append(axis_chunks)
            continue
        merged: list[int] = []
        for c in axis_chunks:
            if merged and (merged[-1] < depth or c < depth):
                merged[-1] += c
            else:
                merged.append(c)
        out.append(tuple(merged))
    return tuple(out)


def _open_out(out, shape, dtype, chunks):
    """``out`` as a zarr array of ``shape`` and ``dtype`` (a path: created, must not exist)."""
    import zarr

    if out is None:
        return None
    if isinstance(out, str | Path):
        return zarr.create_array(
            store=str(out), shape=shape, dtype=dtype, chunks=tuple(max(c) for c in chunks),
            fill_value=0,
        )  # fmt: skip
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out must have the image's shape {shape}, got {tuple(out.shape)}")
    if np.dtype(out.dtype) != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {np.dtype(out.dtype)}")
    return out


def _parallel_tasks(scheduler) -> int:
    """Tasks that run side by side: a ``dask.distributed`` client's threads, else the local
    pool's."""
    nthreads = getattr(scheduler, "nthreads", None)
    if callable(nthreads):
        try:
            return max(1, sum(nthreads().values()))
        except Exception:  # noqa: BLE001 - a client that cannot answer: assume one
            return 1
    return _local_pool_size(scheduler)


def _host_tasks(scheduler) -> tuple:
    """A ``dask.distributed`` client's worker threads per host (empty otherwise)."""
    info = getattr(scheduler, "scheduler_info", None)
    if not callable(info):
        return ()
    try:
        workers = info()["workers"]
    except Exception:  # noqa: BLE001 - no answer: the tasks count their worker's threads
        return ()
    hosts: dict[str, int] = {}
    for address, w in workers.items():
        host = address.rsplit("://", 1)[-1].rsplit(":", 1)[0]
        hosts[host] = hosts.get(host, 0) + int(w.get("nthreads", 1))
    return tuple(sorted(hosts.items()))


def _local_pool_size(scheduler) -> int:
    """Tasks the local dask scheduler runs side by side: 1 (synchronous), else its threads
    or worker processes (``num_workers``, default the CPU count)."""
    import dask
    from dask.system import CPU_COUNT

    name = scheduler if isinstance(scheduler, str) else dask.config.get("scheduler", None)
    if name in ("synchronous", "sync", "single-threaded"):
        return 1
    return int(dask.config.get("num_workers", None) or CPU_COUNT)
