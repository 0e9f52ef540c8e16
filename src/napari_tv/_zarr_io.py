"""Zarr and OME-Zarr images for the command line: volumes larger than memory.

:func:`read_zarr` opens ``X.zarr`` lazily as a dask array (never the whole array in memory):
a plain zarr array (zarr format 2 or 3), or an OME-Zarr image group (OME-NGFF 0.4, zarr v2
with ``.zattrs`` ``multiscales``; 0.5, zarr v3 with ``{"ome": {"multiscales": ...}}``), of
which the first (full-resolution) level is read, with its axes and voxel size.
:class:`ZarrOutput` creates the output in a temporary directory beside OUT
(:func:`zarr_output`), written chunk by chunk and published by :func:`publish_dir` at the
end (never over an existing OUT unless asked, the old one removed only once the new one is
complete).  ``zarr`` and ``dask`` are imported when a zarr file is touched; no ome-zarr-py.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_tv._io import (
    PARTIAL_PREFIX,
    ImageFile,
    ImageFileError,
    OutputError,
    _os_message,
    _signals_held,
    check_writable,
)

ZARR_SUFFIX = ".zarr"
#: OME-NGFF versions read and written, with the zarr format each lives in
OME_VERSIONS = {"0.4": 2, "0.5": 3}
#: the version an ``*.ome.zarr`` OUT of a non-OME input is written in
DEFAULT_OME_VERSION = "0.5"
#: voxels per chunk chosen when neither the input nor ``--chunks`` says (16 MiB of float32)
DEFAULT_CHUNK_VOXELS = 1 << 22
#: at most this many 2x-downsampled levels below level 0 in an OME-Zarr output
MAX_PYRAMID_LEVELS = 4

_AXIS_LETTER = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
_TYPE_LETTER = {"time": "T", "channel": "C"}
#: OME-NGFF unit names -> the symbols OME-TIFF and ImageJ use
_UNIT_SYMBOL = {
    "micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm",
    "meter": "m", "angstrom": "Å", "picometer": "pm",
}  # fmt: skip
_SYMBOL_UNIT = {v: k for k, v in _UNIT_SYMBOL.items()} | {
    "um": "micrometer",
    "micron": "micrometer",
}


def is_zarr(path) -> bool:
    """``path`` names a zarr store (``.zarr``, any case)."""
    return Path(path).suffix.lower() == ZARR_SUFFIX


def is_ome_name(path) -> bool:
    """``*.ome.zarr``: an OME-Zarr image is written even for a non-OME input."""
    return Path(path).name.lower().endswith(".ome" + ZARR_SUFFIX)


@dataclass
class ZarrImage(ImageFile):
    """An image read from a zarr store: ``data`` is a dask array (nothing read yet)."""

    chunks: tuple[int, ...] = ()  # the stored chunk shape of ``data``
    zarr_format: int = 3
    ome: str | None = None  # "0.4" or "0.5" for an OME-Zarr image, else None
    ome_axes: list = field(default_factory=list)  # the metadata's axes, written back
    scale: tuple[float, ...] | None = None  # level 0's voxel size on every axis (combined)
    transforms: dict = field(default_factory=dict)  # as read: "dataset", "top" (lists)
    extra_attrs: dict = field(default_factory=dict)  # "omero", "name": copied to OUT


def _fail(path: Path, why: str) -> ImageFileError:
    return ImageFileError(f"cannot read {path}: {why}")


def _scale_of(transforms, ndim: int, path: Path, where: str) -> list[float] | None:
    if transforms is None:
        return None
    if not isinstance(transforms, list):
        raise _fail(path, f"OME-Zarr coordinateTransformations of {where} must be a list")
    scale = None
    for t in transforms:
        if isinstance(t, dict) and t.get("type") == "scale":
            values = t.get("scale")
            if not isinstance(values, list) or len(values) != ndim:
                raise _fail(
                    path, f"the OME-Zarr scale of {where} must have {ndim} numbers, got {values!r}"
                )
            try:
                scale = [float(v) for v in values]
            except (TypeError, ValueError):
                why = f"the OME-Zarr scale of {where} is not numeric: {values!r}"
                raise _fail(path, why) from None
            if not all(math.isfinite(v) and v > 0 for v in scale):
                raise _fail(path, f"the OME-Zarr scale of {where} must be > 0, got {values!r}")
    return scale


def _axes_of(raw, ndim: int, path: Path) -> list[dict]:
    if raw is None:
        raise _fail(path, "OME-Zarr multiscales without axes")
    axes = []
    for a in raw:
        if isinstance(a, str):  # OME-NGFF 0.3: names only
            a = {"name": a}
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise _fail(path, f"an OME-Zarr axis must have a name, got {a!r}")
        axes.append(dict(a))
    if len(axes) != ndim:
        raise _fail(path, f"the OME-Zarr metadata has {len(axes)} axes for a {ndim}-D array")
    return axes


def _letter(axis: dict) -> str:
    name, kind = axis["name"].lower(), str(axis.get("type", "")).lower()
    if name in _AXIS_LETTER:
        return _AXIS_LETTER[name]
    return _TYPE_LETTER.get(kind, "Q")


def read_zarr(path) -> ZarrImage:
    """Open a zarr array or an OME-Zarr image lazily.

    Parameters
    ----------
    path : str or Path
        A ``.zarr`` directory: a zarr array (format 2 or 3), or an OME-Zarr image group
        (OME-NGFF 0.4 or 0.5), of which level 0 (the first dataset) is read.

    Returns
    -------
    ZarrImage
        ``data`` a dask array over the stored chunks; for OME-Zarr the axis letters
        (``t, c, z, y, x`` upper-cased; other axes ``Q``, or ``T``/``C`` by their type), the
        voxel size per axis (level 0's scale times the top-level one) in ``scale`` and, for
        the spatial axes, ``sizes``/``units``.

    Raises
    ------
    ImageFileError
        A missing path, a file, not a zarr store, a group that is not an OME-Zarr image, or
        metadata that does not fit the array.
    """
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise _fail(path, "a zarr store is a directory; this is a file")
    import dask.array as da
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - any failure means "not a zarr store"
        raise _fail(path, f"not a zarr array or group ({str(exc) or type(exc).__name__})") from None
    zarr_format = int(node.metadata.zarr_format)
    if isinstance(node, zarr.Array):
        img = ZarrImage(data=None, flavour="zarr", chunks=tuple(node.chunks),
                        zarr_format=zarr_format)  # fmt: skip
        array = node
    else:
        img, array = _read_ome(path, node, zarr_format)
    if array.ndim == 0 or array.size == 0:
        raise _fail(path, f"the array is empty (shape {array.shape})")
    if np.dtype(array.dtype).kind not in "biuf":
        raise _fail(path, f"the array's dtype {array.dtype} is not a real number type")
    img.data = da.from_zarr(array)
    img.chunks = tuple(int(c) for c in array.chunks)
    if not img.axes:
        from napari_tv._io import _default_axes

        img.axes = _default_axes(array.ndim)
    return img


def _read_ome(path: Path, group, zarr_format: int):
    import zarr

    attrs = dict(group.attrs)
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        multiscales, version = ome["multiscales"], str(ome.get("version", "0.5"))
        extra = {k: ome[k] for k in ("omero",) if k in ome}
    elif "multiscales" in attrs:
        multiscales = attrs["multiscales"]
        first = multiscales[0] if isinstance(multiscales, list) and multiscales else {}
        version = str(first.get("version", "0.4")) if isinstance(first, dict) else "0.4"
        extra = {k: attrs[k] for k in ("omero",) if k in attrs}
    else:
        raise _fail(
            path,
            "a zarr group without OME-Zarr multiscales metadata (give a zarr array, or an "
            "OME-Zarr image)",
        )
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise _fail(path, "OME-Zarr multiscales must be a non-empty list")
    ms = multiscales[0]
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise _fail(path, "OME-Zarr multiscales without datasets")
    level0 = datasets[0].get("path")
    try:
        array = group[str(level0)]
    except Exception:  # noqa: BLE001
        raise _fail(path, f"the OME-Zarr level 0 {level0!r} is missing") from None
    if not isinstance(array, zarr.Array):
        raise _fail(path, f"the OME-Zarr level 0 {level0!r} is not an array")
    ndim = array.ndim
    axes = _axes_of(ms.get("axes"), ndim, path)
    ds_t = datasets[0].get("coordinateTransformations")
    top_t = ms.get("coordinateTransformations")
    ds_scale = _scale_of(ds_t, ndim, path, f"dataset {level0!r}")
    top_scale = _scale_of(top_t, ndim, path, "the multiscale")
    scale = None
    if ds_scale is not None or top_scale is not None:
        scale = tuple(
            a * b for a, b in zip(ds_scale or [1.0] * ndim, top_scale or [1.0] * ndim,
                                  strict=True)
        )  # fmt: skip
    letters = "".join(_letter(a) for a in axes)
    img = ZarrImage(
        data=None, flavour="ome-zarr", axes=letters, zarr_format=zarr_format,
        ome=version if version in OME_VERSIONS else ("0.5" if zarr_format == 3 else "0.4"),
        ome_axes=axes, scale=scale,
        transforms={"dataset": ds_t or [], "top": top_t or []},
        extra_attrs={**extra, **({"name": ms["name"]} if "name" in ms else {})},
    )  # fmt: skip
    if scale is not None:
        for i, a in enumerate(axes):
            if _is_spatial(a, letters[i]) and letters[i] in "ZYX":
                img.sizes[letters[i]] = scale[i]
                unit = a.get("unit")
                img.units[letters[i]] = _UNIT_SYMBOL.get(str(unit), str(unit or "µm"))
    return img, array


def _is_spatial(axis: dict, letter: str) -> bool:
    return str(axis.get("type", "")).lower() == "space" or letter in "ZYX"


def spatial_spacing(img: ImageFile, batch: tuple[int, ...]) -> tuple[float, ...] | None:
    """The voxel size of the axes not in ``batch`` (channels, time points), from an OME-Zarr
    scale; None for a plain zarr array (or an image without one)."""
    if isinstance(img, ZarrImage):
        if img.scale is None:
            return None
        return tuple(float(h) for i, h in enumerate(img.scale) if i not in batch)
    from napari_tv._io import metadata_spacing

    return metadata_spacing(img, batch[0] if batch else None)


def tiff_like(img: ImageFile) -> ImageFile:
    """What a TIFF OUT of a zarr input carries: an OME-Zarr's axes and voxel size (written
    as OME-TIFF when its axes are t, c, z, y, x, else as ImageJ metadata when they allow),
    nothing for a plain array."""
    if not isinstance(img, ZarrImage):
        return img
    flavour = "ome" if img.ome and set(img.axes) <= set("TCZYX") else "tiff"
    if flavour == "tiff" and img.sizes:
        flavour = "imagej"
    return ImageFile(data=img.data, flavour=flavour, axes=img.axes, sizes=dict(img.sizes),
                     units=dict(img.units))  # fmt: skip


# ---------------------------------------------------------------------------- chunks


def parse_chunks(text: str) -> tuple[int, ...]:
    """``64,256,256`` (or one number for every axis) -> a tuple of whole numbers >= 1.

    Raises ``ValueError`` with a message naming the offending value."""
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError(f"expected whole numbers such as 64,256,256, got {text!r}")
    values = []
    for p in parts:
        try:
            v = int(p)
        except ValueError:
            raise ValueError(f"expected whole numbers such as 64,256,256, got {text!r}") from None
        if v < 1:
            raise ValueError(f"chunk sizes must be >= 1, got {text!r}")
        values.append(v)
    return tuple(values)


def output_chunks(
    shape: tuple[int, ...],
    batch: tuple[int, ...],
    given: tuple[int, ...] | None,
    stored: tuple[int, ...] | None,
) -> tuple[int, ...]:
    """The chunk shape of OUT: ``given`` (``--chunks``: one per axis, one per spatial axis
    (batch axes get 1), or one for every spatial axis), else the input's ``stored`` chunks,
    else about :data:`DEFAULT_CHUNK_VOXELS` voxels per chunk; clipped to the shape.

    Raises ``ValueError`` (naming ``--chunks``) for a count that fits neither."""
    ndim = len(shape)
    spatial = [i for i in range(ndim) if i not in batch]
    if given is not None:
        if len(given) == ndim:
            chunks = list(given)
        elif len(given) in (1, len(spatial)):
            values = given * len(spatial) if len(given) == 1 else given
            chunks = [1] * ndim
            for i, c in zip(spatial, values, strict=True):
                chunks[i] = c
        else:
            got = ",".join(map(str, given))
            raise ValueError(
                f"--chunks needs 1, {len(spatial)} (the spatial axes) or {ndim} (every axis) "
                f"sizes for an image of shape {shape}, got {len(given)} ({got})"
            )
    elif stored:
        chunks = list(stored)
    else:
        chunks = [1] * ndim
        edge = max(int(round(DEFAULT_CHUNK_VOXELS ** (1 / max(len(spatial), 1)))), 1)
        for i in spatial:
            chunks[i] = edge
    return tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape, strict=True))


# ---------------------------------------------------------------------- the output


def _ome_axis(letter: str, unit: str | None) -> dict:
    if letter == "T":
        return {"name": "t", "type": "time"}
    if letter in "CS":
        return {"name": "c", "type": "channel"}
    axis = {"name": letter.lower(), "type": "space"}
    if unit:
        axis["unit"] = _SYMBOL_UNIT.get(unit, unit)
    return axis


def _ome_from_tiff(like: ImageFile, shape, spacing, batch) -> tuple[list[dict], list[float]]:
    """Axes and scale for an ``*.ome.zarr`` OUT of a TIFF/npy/plain-zarr input."""
    from napari_tv._io import _default_axes, _sizes_from_spacing

    axes = like.axes if len(like.axes) == len(shape) else _default_axes(len(shape))
    axes = "".join("Z" if a in "QI" and i not in batch else a for i, a in enumerate(axes))
    order = "TCZYX"
    normal = "".join("C" if a == "S" else a for a in axes)
    pos = [order.find(a) for a in normal]
    if min(pos) < 0 or pos != sorted(pos) or len(set(normal)) != len(normal):
        raise OutputError(
            f"cannot write an OME-Zarr image with axes {axes}: OME-NGFF needs axes in the "
            "order t, c, z, y, x (write a plain .zarr instead)"
        )
    sizes = like.sizes or _sizes_from_spacing(axes, spacing, batch[0] if batch else None)
    ome_axes = [_ome_axis(a, like.units.get(a, "µm") if a in sizes else None) for a in normal]
    scale = [float(sizes.get(a, 1.0)) if a in "ZYX" else 1.0 for a in normal]
    return ome_axes, scale


def _pyramid_shapes(shape, chunks, axes: list[int]) -> list[tuple[int, ...]]:
    """Shapes of the 2x-downsampled levels (over ``axes``, the in-plane axes): one more
    while the level spans more than one chunk in-plane."""
    levels = []
    current = tuple(shape)
    while len(levels) < MAX_PYRAMID_LEVELS and axes and any(current[i] > chunks[i] for i in axes):
        nxt = tuple(n // 2 if i in axes else n for i, n in enumerate(current))
        if any(nxt[i] < 1 for i in axes):
            break
        levels.append(nxt)
        current = nxt
    return levels


class ZarrOutput:
    """The output image in ``root`` (an empty directory): level 0 is :attr:`array`, of
    ``shape`` and ``dtype`` in ``chunks``; an OME-Zarr image (with ``like``'s axes and voxel
    size, its version) when ``like`` is OME-Zarr or ``ome`` is set, else a plain array (in
    ``like``'s zarr format, or 3).  :meth:`write_pyramid` fills the downsampled levels of an
    OME-Zarr output from level 0 once it is complete."""

    def __init__(self, root: Path, like: ImageFile, shape, dtype, chunks, *, ome: bool = False,
                 spacing=None, batch: tuple[int, ...] = ()):  # fmt: skip
        import zarr

        self.root, self.shape, self.dtype = Path(root), tuple(shape), np.dtype(dtype)
        self.chunks = tuple(chunks)
        #: where a chunked solve keeps its state on disk: beside ``root`` (on OUT's
        #: filesystem, not a RAM-backed /tmp), removed with it by :func:`zarr_output`
        self.state_dir = state_dir_of(self.root)
        zlike = like if isinstance(like, ZarrImage) else None
        self.version = zlike.ome if zlike is not None and zlike.ome else None
        if self.version is None and ome:
            self.version = DEFAULT_OME_VERSION
        self.levels: list = []
        if self.version is None:
            fmt = zlike.zarr_format if zlike is not None else 3
            self.array = zarr.create_array(
                store=str(self.root), zarr_format=fmt, **self._array_kwargs(fmt, None)
            )
            return
        fmt = OME_VERSIONS[self.version]
        if zlike is not None and zlike.ome:
            axes = [dict(a) for a in zlike.ome_axes]
            ds_t = [dict(t) for t in zlike.transforms["dataset"]] or [
                {"type": "scale", "scale": [1.0] * len(self.shape)}
            ]
            top_t = [dict(t) for t in zlike.transforms["top"]]
            extra = dict(zlike.extra_attrs)
        else:
            axes, scale = _ome_from_tiff(like, self.shape, spacing, batch)
            ds_t, top_t, extra = [{"type": "scale", "scale": scale}], [], {}
        letters = [_letter(a) for a in axes]
        inplane = [i for i, a in enumerate(axes) if _is_spatial(a, letters[i])][-2:]
        shapes = [self.shape, *_pyramid_shapes(self.shape, self.chunks, inplane)]
        datasets = []
        for k, _ in enumerate(shapes):
            t = []
            for tr in ds_t:
                tr = dict(tr)
                factor = [2.0**k if i in inplane else 1.0 for i in range(len(self.shape))]
                if tr.get("type") == "scale":
                    base = list(tr["scale"])
                    tr["scale"] = [s * f for s, f in zip(base, factor, strict=True)]
                elif tr.get("type") == "translation" and k:
                    scale0 = next(
                        (x["scale"] for x in ds_t if x.get("type") == "scale"),
                        [1.0] * len(self.shape),
                    )
                    tr["translation"] = [
                        o + (f - 1) / 2 * s
                        for o, f, s in zip(tr["translation"], factor, scale0, strict=True)
                    ]
                t.append(tr)
            datasets.append({"path": str(k), "coordinateTransformations": t})
        multiscale = {"axes": axes, "datasets": datasets}
        if "name" in extra:
            multiscale["name"] = extra.pop("name")
        if top_t:
            multiscale["coordinateTransformations"] = top_t
        if len(shapes) > 1:
            multiscale["type"] = "mean"  # of 2x2 in-plane voxels
        if self.version == "0.4":
            attrs = {"multiscales": [{"version": "0.4", **multiscale}], **extra}
        else:
            attrs = {"ome": {"version": self.version, "multiscales": [multiscale], **extra}}
        group = zarr.open_group(store=str(self.root), mode="w", zarr_format=fmt,
                                attributes=attrs)  # fmt: skip
        names = [a["name"] for a in axes]
        for k, s in enumerate(shapes):
            self.levels.append(group.create_array(str(k), **self._array_kwargs(fmt, names, s)))
        self.array = self.levels[0]
        self.inplane = inplane

    def _array_kwargs(self, fmt: int, names, shape=None) -> dict:
        shape = self.shape if shape is None else shape
        chunks = tuple(min(c, n) for c, n in zip(self.chunks, shape, strict=True))
        kwargs = {"shape": shape, "chunks": chunks, "dtype": self.dtype, "fill_value": 0}
        if fmt == 2:
            kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        elif names is not None:
            kwargs["dimension_names"] = names
        return kwargs

    def write_pyramid(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Fill the downsampled levels (each the 2x2 in-plane mean of the one above),
        chunk by chunk, reading the level above (only its region of each chunk)."""
        for k in range(1, len(self.levels)):
            src, dst = self.levels[k - 1], self.levels[k]
            for region in chunk_regions(dst.shape, dst.chunks):
                if cancelled():
                    return
                src_region = tuple(
                    slice(2 * r.start, 2 * r.stop) if i in self.inplane else r
                    for i, r in enumerate(region)
                )
                block = np.asarray(src[src_region], dtype=np.float64)
                dst[region] = _mean2(block, self.inplane).astype(self.dtype)


def _mean2(block: np.ndarray, axes) -> np.ndarray:
    """The mean over 2-voxel bins along ``axes`` (a last odd voxel dropped)."""
    shape, reduce = [], []
    for i, n in enumerate(block.shape):
        if i in axes:
            block = block[(slice(None),) * i + (slice(0, n - n % 2),)]
            shape += [n // 2, 2]
            reduce.append(len(shape) - 1)
        else:
            shape.append(n)
    return block.reshape(shape).mean(axis=tuple(reduce))


def chunk_regions(shape, chunks) -> Iterator[tuple[slice, ...]]:
    """The regions of the chunk grid of ``shape``, in C order."""
    counts = [max(1, -(-n // c)) for n, c in zip(shape, chunks, strict=True)]
    for idx in np.ndindex(*counts):
        yield tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, shape, strict=True)
        )


def store_blocks(source, target, region=(), callback: Callable[[float], bool] | None = None):
    """Write ``source`` (a NumPy, dask or zarr array) into ``target`` (a zarr array) at
    ``region`` (leading indices, e.g. a channel's), one chunk of ``target`` at a time;
    ``callback(fraction)`` after each (True stops)."""
    shape = tuple(source.shape)
    chunks = tuple(target.chunks[len(region) :])
    regions = list(chunk_regions(shape, chunks))
    for k, r in enumerate(regions):
        block = source[r]
        if hasattr(block, "compute"):
            block = block.compute()
        target[(*region, *r)] = np.asarray(block, dtype=target.dtype)
        if callback is not None and callback((k + 1) / len(regions)):
            return


def result_bytes(shape, dtype, pyramid: bool = False) -> int:
    """Bytes of the result, uncompressed (what the space check asks for); with the pyramid
    levels of an OME-Zarr output (a third more at most)."""
    n = math.prod(int(s) for s in shape) * np.dtype(dtype).itemsize
    return n + (n // 3 if pyramid else 0)


# ------------------------------------------------------------------- the directory


def _partial_dir(out: Path) -> Path:
    stem = out.name[:80]
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{PARTIAL_PREFIX}{stem}.",
                                 suffix=".partial"))  # fmt: skip


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a directory or a file) entirely, best effort, even if a signal
    arrives meanwhile (the removal resumes; the signal's exception is raised once done)."""
    pending: BaseException | None = None
    for _ in range(100):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            if not os.path.lexists(path):
                break
            time.sleep(0.01)  # a writer still finishing a chunk: once more
        except OSError:
            break
        except BaseException as exc:  # Ctrl-C, the command line's SIGTERM (``Terminated``)
            pending = exc
    if pending is not None:
        raise pending


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux ``renameat2``: True if done, False where it does not exist (other systems, old
    kernels, file systems without the flag); OSError for a refusal (EEXIST, ...)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _appeared(out: Path) -> OutputError:
    return OutputError(
        f"{out} appeared while it was being computed; it was not replaced (use --force to "
        "replace it)"
    )


def publish_dir(tmp: Path, out: Path, replace: bool) -> None:
    """Give the complete directory ``tmp`` the name ``out``.

    Without ``replace`` an existing ``out`` (even an empty directory, which ``os.rename``
    would replace) is never touched: :class:`OutputError`.  With ``replace`` the old ``out``
    is swapped with ``tmp`` in one step where the system can (Linux ``RENAME_EXCHANGE``), else
    moved aside first; either way it ends up at ``tmp``, removed by the caller, and is only
    touched once the new one is complete."""
    if not replace:
        try:
            if _renameat2(tmp, out, _RENAME_NOREPLACE):
                return
        except FileExistsError:
            raise _appeared(out) from None
        if os.path.lexists(out):
            raise _appeared(out)
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise _appeared(out) from None
            raise
        return
    if not os.path.lexists(out):
        publish_dir(tmp, out, False)
        return
    if _renameat2(tmp, out, _RENAME_EXCHANGE):
        return
    aside = Path(f"{tmp}.old")
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside, out)
        raise
    os.rename(aside, tmp)


def state_dir_of(root: Path) -> Path:
    """The scratch directory of a solve writing into ``root`` (``zarr_output`` removes it)."""
    return root.with_name(root.name + ".state")


@contextlib.contextmanager
def zarr_output(out: Path, nbytes: int, replace: bool, *, publish: bool = True) -> Iterator[Path]:
    """An empty temporary directory beside ``out`` (``.napari-tv-OUT.XXXX.partial``) to
    write the zarr store in; published as ``out`` on success (:func:`publish_dir`) and
    removed whatever happens (an error, Ctrl-C, SIGTERM).  ``publish=False``: a scratch
    store, always removed.  The space (``nbytes``) and writability are checked first; an
    ``OSError`` becomes :class:`OutputError`."""
    check_writable(out, nbytes)
    tmp = None
    try:
        try:
            with _signals_held():  # an interruption cannot come before ``tmp`` is known
                tmp = _partial_dir(out)
            yield tmp
            if publish:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(tmp, 0o777 & ~umask)
                with _signals_held():
                    publish_dir(tmp, out, replace)
        except OSError as exc:
            raise OutputError(_os_message(out, exc)) from None
    finally:
        if tmp is not None:
            remove_tree(tmp)
            remove_tree(state_dir_of(tmp))
