"""Image files for the command line and the viewer: TIFF (plain, ImageJ, OME) and ``.npy``.

:func:`read_image` returns the array with its voxel-size metadata (:class:`ImageFile`),
:func:`metadata_spacing` turns that into a ``spacing``, and :func:`write_image` /
:func:`write_level_stack` write results back with the input's flavour and voxel sizes
(:func:`write_image` also streams a zarr array, a result larger than memory, one row of chunks
at a time; zarr itself is :mod:`napari_tv._zarr_io`).  Every output goes to a temporary file
beside it and is renamed onto it at the end, so it is never left half-written.  No Qt or
napari here; ``tifffile`` is imported when a TIFF is touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUFFIXES = (".tif", ".tiff", ".npy")
_IMAGEJ_ORDER = "TZCYXS"


class ImageFileError(Exception):
    """A file that cannot be read (missing, a directory, another format or unparsable), or an
    output that cannot be written (:class:`OutputError`)."""


class OutputError(ImageFileError):
    """OUT cannot be written: no space, a read-only or missing directory, a name too long, or
    it appeared while it was being computed (and ``replace`` was not given)."""


#: the prefix of the temporary file an output is written to before it is published
PARTIAL_PREFIX = ".napari-tv-"
#: free space kept beyond an output's size (headers, metadata, the file system's own)
SPACE_MARGIN = 1 << 20


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _os_message(out: Path, exc: OSError) -> str:
    why = {
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENAMETOOLONG: "the file name is too long",
        errno.ENOENT: "no such directory",
    }.get(exc.errno, exc.strerror or str(exc))
    return f"cannot write {out}: {why}"


def check_name(out: Path) -> None:
    """Raise :class:`OutputError` if ``out``'s name is longer than its file system allows."""
    try:
        limit = os.pathconf(out.parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    if len(os.fsencode(out.name)) > limit:
        raise OutputError(f"cannot write {out}: the file name is longer than {limit} bytes")


def check_writable(out: Path, nbytes: int = 0) -> None:
    """Raise :class:`OutputError` now, before any work, if ``out`` could not be written: its
    name too long, its directory read-only or without ``nbytes`` (plus a margin) free."""
    out = Path(out)
    check_name(out)
    probe = None
    try:
        with _signals_held():  # Ctrl-C or SIGTERM cannot come before ``probe`` is known
            fd, probe = tempfile.mkstemp(dir=out.parent, prefix=PARTIAL_PREFIX, suffix=".probe")
            os.close(fd)
    except OSError as exc:
        raise OutputError(_os_message(out, exc)) from None
    finally:
        if probe is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(probe)
    _check_space(out, nbytes)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (delivered on leaving) where a file is created and must be
    known to the code that removes it; a no-op where signal masks do not exist."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # pragma: no cover - Windows
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = mask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def _check_space(out: Path, nbytes: int) -> None:
    if nbytes <= 0:
        return
    try:
        free = shutil.disk_usage(out.parent).free
    except OSError:  # pragma: no cover - no statvfs: the writes will tell
        return
    if free < nbytes + SPACE_MARGIN:
        raise OutputError(
            f"not enough space for {out}: it needs {human_bytes(nbytes)}, "
            f"{out.parent} has {human_bytes(free)} free"
        )


@dataclass
class ImageFile:
    """An image read from disk with the voxel-size metadata to write back."""

    data: np.ndarray
    flavour: str = "npy"  # "npy", "tiff" (plain), "imagej" or "ome"
    axes: str = ""  # one letter per axis of ``data`` (tifffile's series axes)
    sizes: dict[str, float] = field(default_factory=dict)  # physical size per axis letter
    units: dict[str, str] = field(default_factory=dict)  # unit per axis letter
    resolution: tuple | None = None  # plain TIFF resolution tags, kept as they are
    resolutionunit: int | None = None


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _is_ome_name(path: Path) -> bool:
    return path.name.lower().endswith((".ome.tif", ".ome.tiff"))


def _default_axes(ndim: int, channel_axis: int | None = None) -> str:
    axes = list("QZYX"[-ndim:]) if ndim <= 4 else ["Q"] * ndim
    if channel_axis is not None:
        axes[channel_axis] = "C"
    return "".join(axes)


def _ome_pixels(xml: str) -> dict:
    import tifffile

    image = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    if isinstance(image, list):
        image = image[0] if image else {}
    return image.get("Pixels", {})


@contextlib.contextmanager
def _tifffile_quiet() -> Iterator[list[str]]:
    """tifffile reports a damaged file through ``logging`` (several lines on stderr); collect
    them instead, for one message."""
    import logging

    logger = logging.getLogger("tifffile")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with _tifffile_quiet() as problems, tifffile.TiffFile(path) as tf:
        if not tf.series:
            raise ImageFileError(f"no image in it ({_first(problems, 'no series')})")
        series = tf.series[0]
        data = series.asarray()
        if data.size == 0:
            raise ImageFileError(
                f"no image data in it; the file is damaged ({_first(problems, 'empty')})"
            )
        img = ImageFile(data=data, flavour="tiff", axes=series.axes)
        page = tf.pages.first
        if tf.is_ome:
            img.flavour = "ome"
            pixels = _ome_pixels(tf.ome_metadata)
            for ax in "XYZ":
                if f"PhysicalSize{ax}" in pixels:
                    img.sizes[ax] = float(pixels[f"PhysicalSize{ax}"])
                    img.units[ax] = str(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        elif tf.is_imagej:
            img.flavour = "imagej"
            meta = tf.imagej_metadata or {}
            unit = str(meta.get("unit", "pixel"))
            xres, yres = page.resolution
            if xres > 0 and yres > 0:
                img.sizes.update(X=1.0 / xres, Y=1.0 / yres)
            if "spacing" in meta:
                img.sizes["Z"] = float(meta["spacing"])
            img.units = dict.fromkeys(img.sizes, unit)
        else:
            if "XResolution" in page.tags:
                img.resolution = page.resolution
                img.resolutionunit = int(page.resolutionunit)
    if len(img.axes) != img.data.ndim:
        img.axes = _default_axes(img.data.ndim)
    return img


def _first(problems: list[str], default: str) -> str:
    return problems[0] if problems else default


def read_image(path) -> ImageFile:
    """Read a TIFF or ``.npy`` image with its voxel-size metadata.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` (plain, ImageJ or OME) or ``.npy`` file (no pickles).

    Returns
    -------
    ImageFile
        The array (first TIFF series, as stored) and its metadata: ``axes`` (tifffile's axis
        letters, guessed ``"YX"``/``"ZYX"`` for ``.npy``), physical ``sizes`` and ``units``
        per axis letter (ImageJ resolution tags and ``spacing``, or OME ``PhysicalSize*``),
        and a plain TIFF's resolution tags.

    Raises
    ------
    ImageFileError
        A missing file, a directory, another extension, or any failure to parse the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> np.save(path, np.zeros((2, 3)))
    >>> img = read_image(path)
    >>> img.data.shape, img.axes, img.sizes
    ((2, 3), 'YX', {})
    """
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"{path}: no such file")
    if path.is_dir():
        raise ImageFileError(f"{path}: is a directory, not an image file")
    suffix = _suffix(path)
    if suffix not in SUFFIXES:
        raise ImageFileError(
            f"cannot read {path}: unsupported format {suffix or '(none)'!r} "
            f"(use .tif, .tiff or .npy)"
        )
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
            return ImageFile(data=data, axes=_default_axes(data.ndim))
        return _read_tiff(path)
    except Exception as exc:  # a corrupt file can fail in any way; all mean "unreadable"
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, IndexError | KeyError | StopIteration):  # tifffile's internals
            detail = f"the file is damaged ({type(exc).__name__}: {detail})"
        raise ImageFileError(f"cannot read {path}: {detail}") from None


def metadata_spacing(img: ImageFile, channel_axis: int | None = None) -> tuple[float, ...] | None:
    """The voxel size of the spatial axes (all but ``channel_axis``) from the file's metadata.

    Parameters
    ----------
    img : ImageFile
        As returned by :func:`read_image`.
    channel_axis : int, optional
        An axis to leave out (channels have no spacing).

    Returns
    -------
    tuple of float or None
        One step per remaining axis, in array order (``Z``, ``I`` and ``Q`` axes take the z
        step, axes without a size 1.0); None when the file records no voxel size.

    Examples
    --------
    >>> img = ImageFile(np.zeros((4, 5, 6)), "imagej", "ZYX", {"Z": 2.0, "Y": 0.5, "X": 0.5})
    >>> metadata_spacing(img)
    (2.0, 0.5, 0.5)
    """
    if not img.sizes or len(img.axes) != img.data.ndim:
        return None
    steps = []
    for i, letter in enumerate(img.axes):
        if i == channel_axis:
            continue
        key = "Z" if letter in "ZIQ" else letter
        steps.append(float(img.sizes.get(key, 1.0)))
    return tuple(steps)


def _sizes_from_spacing(axes: str, spacing, channel_axis: int | None) -> dict[str, float]:
    """Voxel sizes per axis letter from an explicit ``--spacing`` (for files without any)."""
    if spacing is None:
        return {}
    spatial = [a for i, a in enumerate(axes) if i != channel_axis]
    steps = (spacing,) * len(spatial) if np.isscalar(spacing) else tuple(spacing)
    return {a: float(h) for a, h in zip(spatial, steps, strict=False) if a in "XYZ"}


def _imagej_ok(axes: str) -> bool:
    pos = [_IMAGEJ_ORDER.find(a) for a in axes]
    return (
        len(axes) >= 2
        and min(pos) >= 0
        and pos == sorted(pos)
        and len(set(axes)) == len(axes)
        and axes.rstrip("S").endswith("YX")
    )


def _tiff_kwargs(out: Path, like: ImageFile, axes: str, sizes: dict, units: dict, dtype):
    """``tifffile`` keyword arguments and the dtype to store for OUT, following the input."""
    if like.flavour == "ome" or _is_ome_name(out):
        meta = {"axes": axes}
        for ax, h in sizes.items():
            meta[f"PhysicalSize{ax}"] = h
            meta[f"PhysicalSize{ax}Unit"] = units.get(ax, "µm")
        return {"ome": True, "metadata": meta}, dtype
    if sizes and _imagej_ok(axes):  # ImageJ stores uint8, uint16 and float32 only
        store = dtype if dtype in (np.uint8, np.uint16, np.float32) else np.dtype(np.float32)
        unit = next(iter(units.values()), "micron") if units else "micron"
        meta = {"axes": axes, "unit": "micron" if unit in ("µm", "um") else unit}
        if "Z" in sizes and "Z" in axes:
            meta["spacing"] = sizes["Z"]
        kwargs = {"imagej": True, "metadata": meta}
        kwargs["resolution"] = (1.0 / sizes.get("X", 1.0), 1.0 / sizes.get("Y", 1.0))
        return kwargs, store
    kwargs: dict = {"ome": False, "imagej": False, "metadata": None}
    if like.resolution is not None:
        kwargs.update(resolution=like.resolution, resolutionunit=like.resolutionunit)
    return kwargs, dtype


@contextlib.contextmanager
def _atomic_output(out: Path, nbytes: int, replace: bool) -> Iterator[Path]:
    """A temporary file beside ``out`` to write; published as ``out`` on success (never over
    a file that appeared meanwhile unless ``replace``) and removed otherwise, whatever
    happens (an error, Ctrl-C, SIGTERM through the command line's handler).  An ``OSError``
    while writing (a full disk, ...) becomes :class:`OutputError`."""
    check_writable(out, nbytes)
    tmp = None
    try:
        try:
            with _signals_held():  # an interruption cannot come before ``tmp`` is known
                fd, name = tempfile.mkstemp(
                    dir=out.parent, prefix=PARTIAL_PREFIX, suffix=".partial"
                )
                os.close(fd)
                tmp = Path(name)
            yield tmp
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            _publish(tmp, out, replace)
        except OSError as exc:
            raise OutputError(_os_message(out, exc)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _publish(tmp: Path, out: Path, replace: bool) -> None:
    """Give the written file its name: ``os.replace`` with ``replace``, else a hard link that
    fails if ``out`` exists (no window for another writer), or, on a file system without
    hard links, a check just before the rename."""
    if replace:
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise OutputError(
            f"{out} appeared while it was being computed; it was not replaced (use --force to "
            "replace it)"
        ) from None
    except OSError as exc:
        if exc.errno not in (
            errno.EPERM,
            errno.ENOTSUP,
            errno.EOPNOTSUPP,
            errno.EXDEV,
            errno.EMLINK,
        ):
            raise
        if out.exists():
            raise OutputError(
                f"{out} appeared while it was being computed; it was not replaced (use "
                "--force to replace it)"
            ) from None
        os.replace(tmp, out)


def _reserve(fh, nbytes: int) -> None:
    """Allocate ``nbytes`` of the open file now (a full disk fails here with ENOSPC, not later
    as SIGBUS in a memory map)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fh.fileno(), 0, nbytes)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                raise
    fh.truncate(nbytes)  # pragma: no cover - file systems without fallocate


def write_image(
    out: Path,
    data: np.ndarray,
    like: ImageFile,
    *,
    axes: str | None = None,
    spacing=None,
    channel_axis: int | None = None,
    replace: bool = False,
) -> None:
    """Write ``data`` to ``out`` atomically, with ``like``'s voxel sizes (or ``spacing``'s).

    Parameters
    ----------
    out : Path
        ``.npy`` or ``.tif``/``.tiff``; written to a temporary file beside it and renamed.
    data : ndarray or zarr array
        The array to store; a zarr array (a result larger than memory) is read and written
        one row of chunks of its first axis at a time.
    like : ImageFile
        The input it derives from: its flavour (OME in, OME out; ImageJ in, ImageJ out; a
        plain TIFF keeps its resolution tags) and voxel sizes are written back.
    axes : str, optional
        Axis letters of ``data`` (default ``like.axes``).
    spacing : float or sequence of float, optional
        Written as ImageJ metadata when ``like`` has no voxel size of its own.
    channel_axis : int, optional
        The axis ``spacing`` skips.
    replace : bool
        Replace ``out`` if it exists by the time the file is complete (``--force``); else
        :class:`OutputError`.

    Raises
    ------
    OutputError
        No space (checked first, against the array's size), a read-only or missing
        directory, a name too long, a write error, ``out`` appeared meanwhile.  Nothing is
        left behind.

    Notes
    -----
    ImageJ TIFFs hold uint8, uint16 and float32 only: other dtypes are stored as float32.
    """
    axes = axes or like.axes or _default_axes(data.ndim)
    sizes, units = like.sizes, like.units
    if not sizes:
        sizes = _sizes_from_spacing(axes, spacing, channel_axis)
    streamed = not isinstance(data, np.ndarray) and hasattr(data, "chunks")
    shape, dtype = tuple(int(n) for n in data.shape), np.dtype(data.dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    with _atomic_output(out, nbytes, replace) as tmp:
        if _suffix(out) == ".npy":
            if streamed:
                _write_npy_slabs(tmp, data, shape, dtype)
                return
            with open(tmp, "wb") as fh:
                np.save(fh, data, allow_pickle=False)
            return
        import tifffile

        kwargs, store = _tiff_kwargs(out, like, axes, sizes, units, dtype)
        with open(tmp, "wb") as fh:
            if not streamed or len(shape) < 2:
                tifffile.imwrite(fh, np.asarray(data, dtype=store), **kwargs)
                return
            imagej, ome = kwargs.pop("imagej", False), kwargs.pop("ome", None)
            big = not imagej and nbytes > 2**32 - 2**25
            pages = (
                page
                for slab in _slabs(data)
                for page in slab.astype(store, copy=False).reshape(-1, *shape[-2:])
            )
            with tifffile.TiffWriter(fh, imagej=imagej, ome=ome, bigtiff=big) as tw:
                tw.write(pages, shape=shape, dtype=store, **kwargs)


def _slabs(data) -> Iterator[np.ndarray]:
    """``data`` (a zarr array) as NumPy slabs, one row of chunks of its first axis at a time."""
    step = max(int(data.chunks[0]), 1)
    for k in range(0, int(data.shape[0]), step):
        yield np.asarray(data[k : k + step])


def _write_npy_slabs(tmp: Path, data, shape, dtype) -> None:
    """A ``.npy`` filled slab by slab through a memory map (allocated first: a full disk is
    ENOSPC here, not a bus error later)."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": shape}  # fmt: skip
    with open(tmp, "r+b") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        offset = fh.tell()
        _reserve(fh, offset + int(np.prod(shape)) * dtype.itemsize)
    target = np.memmap(tmp, dtype=dtype, mode="r+", offset=offset, shape=shape)
    k = 0
    for slab in _slabs(data):
        target[k : k + len(slab)] = slab
        k += len(slab)
    target.flush()
    del target


def _level_pages(data: np.ndarray, grid: np.ndarray) -> Iterator[np.ndarray]:
    """The level sets as uint8 2-D TIFF pages, one level at a time (never the whole stack)."""
    from napari_tv.levelsets import level_set

    for lam in grid[:-1]:
        mask = level_set(data, float(lam)).view(np.uint8)
        yield from mask.reshape(-1, *mask.shape[-2:])


def level_stack_bytes(like: ImageFile, grid: np.ndarray) -> int:
    """The size of the level-set stack of ``like`` on ``grid``: one byte per voxel and level
    but the last."""
    return max(len(grid) - 1, 0) * int(like.data.size)


def write_level_stack(
    out: Path, like: ImageFile, grid: np.ndarray, *, spacing=None, replace: bool = False
) -> None:
    """Write the level sets ``1[u <= λ]`` of ``like.data`` to ``out`` as a uint8 stack.

    Parameters
    ----------
    out : Path
        ``.npy`` or ``.tif``/``.tiff``; written to a temporary file beside it and renamed.
    like : ImageFile
        The image (1, 2 or 3 dimensions); its flavour and voxel sizes are written back.
    grid : ndarray
        The levels; one set per level but the last (``grid[:-1]``), stacked on a new first
        axis ``T``.
    spacing : float or sequence of float, optional
        Written as ImageJ metadata when ``like`` has no voxel size of its own.
    replace : bool
        As in :func:`write_image`.

    Raises
    ------
    OutputError
        As :func:`write_image`; the space is checked before anything is written, and the
        ``.npy`` is allocated before it is memory-mapped (a full disk is an error, not a bus
        error).

    Notes
    -----
    One level set is in memory at a time: the ``.npy`` is filled through a memory map and the
    TIFF is written page by page.
    """
    data = like.data
    shape = (len(grid) - 1, *data.shape)
    if like.axes and "T" not in like.axes:
        axes = "T" + like.axes
    else:
        axes = _default_axes(len(shape))
    with _atomic_output(out, level_stack_bytes(like, grid), replace) as tmp:
        if _suffix(out) == ".npy":
            from napari_tv.levelsets import level_set

            header = {"descr": "|u1", "fortran_order": False, "shape": shape}
            with open(tmp, "r+b") as fh:
                np.lib.format.write_array_header_1_0(fh, header)
                offset = fh.tell()
                _reserve(fh, offset + int(np.prod(shape)))
            stack = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=offset, shape=shape)
            for k, lam in enumerate(grid[:-1]):
                stack[k] = level_set(data, float(lam))
            stack.flush()
            del stack
        else:
            import tifffile

            sizes = like.sizes or _sizes_from_spacing(like.axes, spacing, None)
            kwargs, _ = _tiff_kwargs(out, like, axes, sizes, like.units, np.dtype(np.uint8))
            pages = _level_pages(data.reshape(1, -1) if data.ndim == 1 else data, grid)
            with (
                open(tmp, "wb") as fh,
                tifffile.TiffWriter(
                    fh, imagej=kwargs.pop("imagej", False), ome=kwargs.pop("ome", None)
                ) as tw,
            ):
                tw.write(pages, shape=shape, dtype=np.uint8, **kwargs)
