"""Volumes larger than memory in the dock widgets: the chunked path, the memory estimate, and
"Save to zarr".

* :func:`memory_estimate`: what an in-memory ``denoise_tv`` run on a layer would need, from
  :mod:`napari_tv._memory` (the figures of the library's own guard), against what is
  available -- the TV denoise widget shows it and switches to the chunked path when it does
  not fit;
* :func:`denoise_chunked` (worker thread): ``napari_tv.chunked.denoise_tv_chunked`` on the
  layer's data as a dask array (level 0 of a multiscale layer), one time point after another,
  each result written to a temporary zarr store; the results' ``u`` are lazy dask arrays
  reading it chunk by chunk (an output layer reads only the chunks it shows);
* :func:`pyramid`: coarser levels of a lazy result like the input's (2x averages, typically),
  built lazily (dask ``coarsen``), for a multiscale output;
* :func:`save_zarr` (worker thread): a layer's data written block by block to a ``.zarr``
  directory, through a temporary directory beside it renamed at the end (Cancel or an error
  leaves nothing behind).

dask and zarr are imported inside the functions: the widgets' import stays light.
"""

from __future__ import annotations

import atexit
import inspect
import math
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._layers import ImageInfo, LayerError
from ._tasks import Cancelled

#: the arguments of ``denoise_tv`` the chunked solver does not take, when left at these values
_IGNORABLE = {"connectivity": 1, "levels": None, "options": None}
#: the share of a chunked run's progress bar given to the solve (the rest: writing the result)
SOLVE_SHARE = 0.9

_RESULT_ROOT: Path | None = None
_ROOT_LOCK = threading.Lock()


def result_dir() -> Path:
    """A fresh directory for a chunked result, under this process's temporary root (removed
    at exit)."""
    global _RESULT_ROOT
    with _ROOT_LOCK:
        if _RESULT_ROOT is None:
            _RESULT_ROOT = Path(tempfile.mkdtemp(prefix="napari-tv-widget-"))
            atexit.register(shutil.rmtree, _RESULT_ROOT, True)
    return Path(tempfile.mkdtemp(prefix="result-", dir=_RESULT_ROOT))


# --------------------------------------------------------------------------------------------
# the memory estimate


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes an in-memory run needs (``needed``) and may use (``available``, None: unknown)."""

    needed: int
    available: int | None

    @property
    def fits(self) -> bool:
        """The library's guard would let the run start (within ``HEADROOM`` of available)."""
        from napari_tv._memory import HEADROOM

        return self.available is None or self.needed <= HEADROOM * self.available

    def describe(self) -> str:
        from napari_tv._io import human_bytes

        if self.available is None:
            return f"needs about {human_bytes(self.needed)}"
        return f"needs about {human_bytes(self.needed)} of {human_bytes(self.available)} available"


def memory_estimate(
    info: ImageInfo, method: str, fidelity: str, *, levels: int | None = None,
    all_frames: bool = False, connectivity: int = 1,
) -> MemoryEstimate:  # fmt: skip
    """The peak memory of ``denoise_tv`` on the layer, as ``solvers.api._guard_memory`` counts
    it: the method's working words per voxel (:data:`napari_tv._memory.WORDS_PER_VOXEL`), the
    result, a converted input, and the input itself when it must be computed first (dask,
    zarr, multiscale).  One time point, or all of them with ``all_frames``."""
    from napari_tv._memory import available_bytes, estimate_bytes
    from napari_tv._validation import float_dtype

    shape = info.shape
    channels = 1
    if info.time_axis is not None:
        channels = shape[0] if all_frames else 1
        shape = shape[1:]
    dtype = np.dtype(info.data.dtype)
    work = float_dtype(dtype)
    n_levels = (levels or 256) if method == "exact" else 0
    try:
        needed = estimate_bytes(
            method, fidelity, shape, work.itemsize, n_levels=n_levels, channels=channels,
            converted=work != dtype, connectivity=connectivity,
        )  # fmt: skip
    except KeyError:  # a fidelity the method does not take: the run says so
        needed = 0
    if info.lazy:
        needed += math.prod(shape) * channels * dtype.itemsize  # computed first
    return MemoryEstimate(int(needed), available_bytes())


# --------------------------------------------------------------------------------------------
# the chunked run


def as_dask(array):
    """``array`` as a dask array, without computing or copying it (a zarr array keeps its
    chunks; a NumPy array gets dask's automatic chunks)."""
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    chunks = getattr(array, "chunks", None)
    if not (isinstance(chunks, tuple) and chunks and all(isinstance(c, int) for c in chunks)):
        chunks = "auto"
    return da.from_array(array, chunks=chunks)


def chunked_kwargs(params: dict[str, Any], solver) -> dict[str, Any]:
    """``params`` (the denoise widget's ``denoise_tv`` arguments, without β) for ``solver``:
    raises :class:`LayerError` for one it does not take that matters."""
    accepted = inspect.signature(solver).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    out = {}
    for key, value in params.items():
        if key == "beta":
            continue
        if takes_any or key in accepted:
            out[key] = value
        elif key in _IGNORABLE and value in (_IGNORABLE[key], {}):
            continue
        else:
            raise LayerError(
                f"the chunked (dask) path does not take {key}={value!r}; untick 'chunked' for "
                "an in-memory run, or change it"
            )
    return out


def denoise_chunked(info: ImageInfo, frames: list[int] | None, params: dict[str, Any],
                    callback=None) -> list:  # fmt: skip
    """``denoise_tv_chunked`` on the layer's data (worker thread): the whole array, or each of
    ``frames`` (time points) in turn, each result written block by block to a zarr store of
    its own (a temporary directory, removed at exit).

    Returns the results, their ``u`` lazy dask arrays reading those stores
    (``extra["store"]``: the directory).  A cancelled run (the solve or the write) raises
    :class:`~._tasks.Cancelled`; then, as after an error, no store is left.
    """
    import dataclasses

    import dask.array as da
    import zarr

    from napari_tv.chunked import denoise_tv_chunked

    data = as_dask(info.data)
    kwargs = chunked_kwargs(params, denoise_tv_chunked)
    steps = [None] if frames is None else list(frames)
    results, made = [], []

    def report(k: int, fraction: float, extra: dict) -> bool:
        if callback is None:
            return False
        return bool(callback({**extra, "fraction": (k + fraction) / len(steps)}))

    try:
        for k, t in enumerate(steps):
            image = data if t is None else data[t]

            def solving(info_, k=k):
                return report(k, SOLVE_SHARE * float(info_.get("fraction") or 0.0), info_)

            result = denoise_tv_chunked(image, params["beta"], callback=solving, **kwargs)
            if result.cancelled:
                raise Cancelled
            if result.method == "exact" and not result.converged:
                raise LayerError("the chunked exact solve is not certified: "
                                 f"{result.extra['note']}")  # fmt: skip
            folder = result_dir()
            made.append(folder)
            u = result.u
            target = zarr.create_array(
                store=str(folder / "u.zarr"), shape=u.shape, dtype=u.dtype,
                chunks=tuple(max(c) for c in u.chunks),
            )  # fmt: skip

            def writing(fraction, k=k):
                share = SOLVE_SHARE + (1.0 - SOLVE_SHARE) * fraction
                return report(k, share, {"stage": "writing the result"})

            write_blocks(u, target, writing)
            stored = da.from_zarr(target, chunks=u.chunks)
            extra = {**result.extra, "store": str(folder)}
            results.append(dataclasses.replace(result, u=stored, extra=extra))
    except BaseException:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return results


def _store(u, name: str, folder: Path, callback=None):
    """``u`` written to ``folder/name`` (zarr, chunked like ``u``); the dask array reading it."""
    import dask.array as da
    import zarr

    target = zarr.create_array(store=str(folder / name), shape=u.shape, dtype=u.dtype,
                               chunks=tuple(max(c) for c in u.chunks))  # fmt: skip
    write_blocks(u, target, callback)
    return da.from_zarr(target, chunks=u.chunks)


def exact_chunked(info: ImageInfo, t: int | None, params: dict[str, Any], callback=None):
    """The chunked exact solve of the layer's data (the time point ``t`` of a series) for the
    Level sets widget (worker thread): ``napari_tv._exact_chunked.solve_exact_chunked`` with
    the pass that decided each voxel recorded; both written to a zarr store of their own.

    Returns the result, with ``u`` and ``extra["decided_at"]`` lazy arrays reading the store
    (``extra["store"]``).  Cancel raises :class:`~._tasks.Cancelled`, a solve that is not
    certified :class:`LayerError` (with its reason); then no store is left.
    """
    import dataclasses

    from napari_tv._exact_chunked import solve_exact_chunked

    data = as_dask(info.data)
    image = data if t is None else data[t]

    def solving(info_):
        if callback is None:
            return False
        return bool(callback({**info_, "fraction": SOLVE_SHARE * float(info_["fraction"])}))

    result = solve_exact_chunked(image, params["beta"], fidelity=params["fidelity"],
                                 connectivity=params["connectivity"], levels=params["levels"],
                                 spacing=params["spacing"], callback=solving,
                                 record=True)  # fmt: skip
    if result.cancelled:
        raise Cancelled
    if not result.converged:
        raise LayerError(f"the chunked exact solve is not certified: {result.extra['note']}")
    folder = result_dir()
    try:
        def writing(fraction, share):
            if callback is None:
                return False
            done = SOLVE_SHARE + (1.0 - SOLVE_SHARE) * (share + fraction) / 2
            return bool(callback({"fraction": done, "stage": "writing the result"}))

        u = _store(result.u, "u.zarr", folder, lambda f: writing(f, 0.0))
        decided = _store(result.extra["decided_at"], "decided.zarr", folder,
                         lambda f: writing(f, 1.0))  # fmt: skip
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:  # the solve's own files (state on disk): copied, no longer read
        if result.extra.get("state_dir"):
            shutil.rmtree(result.extra["state_dir"], ignore_errors=True)
    extra = {**result.extra, "decided_at": decided, "store": str(folder), "state_dir": None}
    return dataclasses.replace(result, u=u, extra=extra)


def remove_stores(results) -> None:
    """Remove the stores of results of :func:`denoise_chunked` (a layer no longer reads)."""
    for result in results or ():
        folder = result.extra.get("store")
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def certificate(result) -> str:
    """The chunked result's certificate line: its relative duality gap (over the whole
    volume), iterations and rounds over the blocks; for the exact solver, how it was
    certified."""
    rounds = getattr(result, "rounds", None)
    if result.method == "exact":
        extra = result.extra
        if extra.get("in_memory"):
            return (f"exact minimiser on a {len(extra['levels'])}-level grid (solved at once: "
                    "it fits in memory)")  # fmt: skip
        text = (f"exact minimiser on a {len(extra['levels'])}-level grid, certified voxel by "
                f"voxel in {rounds} pass{'es' if rounds != 1 else ''} over the blocks")
        if extra.get("remainder_voxels"):
            text += f" and {extra['remainder_voxels']} voxels solved at once"
        return text + " (chunked)"
    text = f"relative duality gap {result.gap:.3g} after {result.n_iter} iterations"
    if rounds is not None:
        text += f" in {rounds} round{'s' if rounds != 1 else ''} over the blocks"
    text += " (chunked"
    text += ", converged)" if result.converged else "; not converged: raise iterations)"
    return text


def pyramid(u, shapes, spatial_ndim: int) -> list:
    """``u`` and coarser levels like a multiscale input's (``shapes``, level 0 first): each
    level the previous one averaged over blocks of the input's ratio of the two levels' sizes
    (rounded; 1 on the time axis), lazily (dask ``coarsen``).  Stops at a level that would
    not be smaller."""
    import dask.array as da

    levels = [u]
    for prev_shape, shape in zip(shapes[:-1], shapes[1:], strict=True):
        prev = levels[-1]
        axes = {}
        for a in range(u.ndim - spatial_ndim, u.ndim):
            factor = max(1, round(int(prev_shape[a]) / max(int(shape[a]), 1)))
            if factor > 1 and prev.shape[a] >= factor:
                axes[a] = factor
        if not axes:
            break
        levels.append(da.coarsen(np.mean, prev, axes, trim_excess=True).astype(u.dtype))
    return levels


# --------------------------------------------------------------------------------------------
# Save to zarr


def zarr_path(path) -> Path:
    """The directory a store is written to: ``path``, with ``.zarr`` appended if it has no
    suffix of that name."""
    path = Path(path).expanduser()
    if path.suffix != ".zarr":
        path = path.with_name(path.name + ".zarr")
    return path.absolute()


def write_blocks(source, target, callback=None) -> None:
    """Write ``source`` (NumPy or dask) into the zarr array ``target`` one chunk of ``target``
    at a time (a few computed together, on dask's threads); ``callback(fraction)`` after each
    batch, True raises :class:`~._tasks.Cancelled`."""
    import dask

    shape, chunks = tuple(source.shape), tuple(target.chunks)
    grid = [max(1, -(-n // c)) for n, c in zip(shape, chunks, strict=True)]
    regions = [
        tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, shape, strict=True))
        for idx in np.ndindex(*grid)
    ]
    batch = max(os.cpu_count() or 1, 1)
    for first in range(0, len(regions), batch):
        group = regions[first : first + batch]
        values = dask.compute(*(source[r] for r in group))
        for region, value in zip(group, values, strict=True):
            target[region] = np.asarray(value, dtype=target.dtype)
        done = first + len(group)
        if callback is not None and callback(done / len(regions)):
            raise Cancelled


def save_zarr(data, path, attrs: dict | None = None, callback=None) -> Path:
    """Write ``data`` (a NumPy or dask array) to the zarr directory ``path``, chunk by chunk
    (worker thread).

    The chunks are written to a temporary directory beside ``path`` that is renamed to it at
    the end (an existing store there is replaced only then); ``callback({"fraction": ...})``
    returning True stops the write and removes the temporary directory (raises
    :class:`~._tasks.Cancelled`), as does any error.  Returns the path written.
    """
    import zarr

    path = zarr_path(path)
    if path.exists() and not path.is_dir():
        raise LayerError(f"{path} exists and is not a directory (a zarr store)")
    path.parent.mkdir(parents=True, exist_ok=True)
    array = as_dask(data)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        store = zarr.create_array(
            store=str(tmp), shape=array.shape, dtype=array.dtype,
            chunks=tuple(max(c) for c in array.chunks),
        )  # fmt: skip
        if attrs:
            store.attrs.update(attrs)

        def progress(fraction):
            return callback is not None and callback({"fraction": fraction, "stage": "saving"})

        write_blocks(array, store, progress)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def json_safe(value):
    """``value`` with tuples as lists and NumPy scalars as Python numbers (zarr attributes)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
