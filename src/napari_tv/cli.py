"""The ``napari-tv`` command line.

::

    napari-tv sample 3d noisy.tif                      # synthetic data to try things on
    napari-tv denoise noisy.tif denoised.tif --beta 2  # TV denoising (any method, fidelity)
    napari-tv gradient noisy.tif grad.tif              # the TV (sub)gradient
    napari-tv levels noisy.tif levels.tif --levels 16  # the level-set stack 1[u <= λ]
    napari-tv view [noisy.tif]                         # napari with the plugin's widgets

Images are read and written as TIFF (``.tif``, ``.tiff``; ImageJ and OME-TIFF voxel sizes are
read, used as the default ``spacing`` and written back) or NumPy ``.npy``.  Errors print one
line (``napari-tv: error: ...``) and exit with status 2; Ctrl-C exits with status 130.  The
output is written to a temporary file beside it and renamed at the end, so it is never left
half-written, and it is never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROG = "napari-tv"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
SUFFIXES = (".tif", ".tiff", ".npy")
_IMAGEJ_ORDER = "TZCYXS"


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit status 2, no output written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and sys.exit(2)
        sub = self.prog[len(PROG) :].strip()
        raise CLIError(f"{sub}: {message}" if sub else message)


# ----------------------------------------------------------------------------- image files


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


def _read_tiff(path: Path) -> ImageFile:
    import tifffile

    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        data = series.asarray()
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
    CLIError
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
        raise CLIError(f"{path}: no such file")
    if path.is_dir():
        raise CLIError(f"{path}: is a directory, not an image file")
    suffix = _suffix(path)
    if suffix not in SUFFIXES:
        raise CLIError(
            f"cannot read {path}: unsupported format {suffix or '(none)'!r} "
            f"(use .tif, .tiff or .npy)"
        )
    try:
        if suffix == ".npy":
            data = np.load(path, allow_pickle=False)
            return ImageFile(data=data, axes=_default_axes(data.ndim))
        return _read_tiff(path)
    except Exception as exc:  # a corrupt file can fail in any way; all mean "unreadable"
        raise CLIError(f"cannot read {path}: {exc}") from None


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
def _atomic_output(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out``, renamed onto it on success and removed otherwise."""
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_image(
    out: Path,
    data: np.ndarray,
    like: ImageFile,
    *,
    axes: str | None = None,
    spacing=None,
    channel_axis: int | None = None,
) -> None:
    """Write ``data`` to ``out`` atomically, with ``like``'s voxel sizes (or ``spacing``'s).

    Parameters
    ----------
    out : Path
        ``.npy`` or ``.tif``/``.tiff``; written to a temporary file beside it and renamed.
    data : ndarray
        The array to store.
    like : ImageFile
        The input it derives from: its flavour (OME in, OME out; ImageJ in, ImageJ out; a
        plain TIFF keeps its resolution tags) and voxel sizes are written back.
    axes : str, optional
        Axis letters of ``data`` (default ``like.axes``).
    spacing : float or sequence of float, optional
        Written as ImageJ metadata when ``like`` has no voxel size of its own.
    channel_axis : int, optional
        The axis ``spacing`` skips.

    Notes
    -----
    ImageJ TIFFs hold uint8, uint16 and float32 only: other dtypes are stored as float32.
    """
    axes = axes or like.axes or _default_axes(data.ndim)
    sizes, units = like.sizes, like.units
    if not sizes:
        sizes = _sizes_from_spacing(axes, spacing, channel_axis)
    with _atomic_output(out) as tmp:
        if _suffix(out) == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, data, allow_pickle=False)
            return
        import tifffile

        kwargs, store = _tiff_kwargs(out, like, axes, sizes, units, data.dtype)
        with open(tmp, "wb") as fh:
            tifffile.imwrite(fh, np.asarray(data, dtype=store), **kwargs)


def _check_output(out, inp, force: bool) -> Path:
    """OUT must be a writable .tif/.tiff/.npy path, not IN, and new unless ``--force``."""
    out = Path(out)
    if _suffix(out) not in SUFFIXES:
        raise CLIError(
            f"cannot write {out}: unsupported format {_suffix(out) or '(none)'!r} "
            f"(use .tif, .tiff or .npy)"
        )
    if inp is not None:
        same = out.resolve() == Path(inp).resolve()
        if not same and out.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, inp)
        if same:
            raise CLIError(f"OUT must not be IN ({out}); choose another output file")
    if out.is_dir():
        raise CLIError(f"cannot write {out}: is a directory")
    if out.exists() and not force:
        raise CLIError(f"{out} exists; use --force to overwrite it")
    if not out.parent.is_dir():
        raise CLIError(f"cannot write {out}: no such directory {out.parent}")
    return out


# ------------------------------------------------------------------------ argument types


def _spacing_arg(text: str):
    try:
        steps = tuple(float(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or comma-separated numbers (e.g. 2,0.5,0.5), got {text!r}"
        ) from None
    if not steps:
        raise argparse.ArgumentTypeError(f"expected at least one number, got {text!r}")
    return steps[0] if len(steps) == 1 else steps


def _levels_arg(text: str):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of levels or comma-separated levels, got {text!r}"
        ) from None


# ---------------------------------------------------------------------------- progress


class _Progress:
    """The solver callback: a tqdm bar on stderr (shown after 0.5 s) fed by ``info["fraction"]``."""

    def __init__(self, enabled: bool, desc: str, start_note: str = ""):
        self.enabled, self.desc, self.bar, self.start_note = enabled, desc, None, start_note

    def __call__(self, info: dict) -> bool:
        if not self.enabled:
            return False
        if self.bar is None:
            from tqdm import tqdm

            if self.start_note:  # the solver has accepted every parameter and is running
                _note(self.start_note)

            self.bar = tqdm(
                total=1000,
                desc=self.desc,
                file=sys.stderr,
                delay=0.5,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
            )
        frac = float(info.get("fraction", 0.0) or 0.0)
        n = int(round(1000 * min(max(frac, 0.0), 1.0)))
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)
        energy = info.get("energy")
        if energy is not None and np.isfinite(energy):
            self.bar.set_postfix_str(f"iter {info.get('iter')}  energy {energy:.6g}", refresh=False)
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _library_call(fn: Callable, *args, **kwargs):
    """Call the library; its ValueError/TypeError (bad data or parameter) become CLIError."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- commands


def _run_denoise(args) -> int:
    out = _check_output(args.output, args.input, args.force)
    img = read_image(args.input)
    from napari_tv.solvers.api import denoise_tv

    channel_axis = args.channel_axis
    if channel_axis is None:
        found = [i for i, a in enumerate(img.axes) if a in "CS"]
        channel_axis = found[0] if len(found) == 1 else None
    elif -img.data.ndim <= channel_axis < 0:
        channel_axis += img.data.ndim
    spacing = args.spacing
    if spacing is None:
        spacing = metadata_spacing(img, channel_axis)
    kwargs = {
        "method": args.method,
        "fidelity": args.fidelity,
        "tv": args.tv,
        "boundary": args.boundary,
        "spacing": spacing,
        "tol": args.tol,
        "channel_axis": channel_axis,
    }
    for name in ("connectivity", "levels"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.max_iter is not None:
        kwargs["max_num_iter"] = args.max_iter
    shape = "x".join(map(str, img.data.shape))
    start = (
        f"denoising {args.input} ({shape} {img.data.dtype}) with {args.method}, "
        f"beta {args.beta:g}" + (f", spacing {spacing}" if spacing is not None else "")
    )
    progress = _Progress(not args.quiet, args.method, start)
    t0 = time.perf_counter()
    try:
        u, res = _library_call(
            denoise_tv, img.data, args.beta, callback=progress, return_info=True, **kwargs
        )
    finally:
        progress.close()
    elapsed = time.perf_counter() - t0
    write_image(out, u, img, spacing=args.spacing, channel_axis=channel_axis)
    if not args.quiet:
        print(f"energy {res.energy:.10g}")
        if res.method == "exact" and res.converged:
            n_levels = len(res.extra.get("levels", ()))
            print(f"exact: certified global minimum on {n_levels} levels")
        else:
            state = "converged" if res.converged else "not converged"
            print(f"gap {res.gap:.3g} ({state} after {res.n_iter} iterations, tol {args.tol:g})")
        print(f"time {elapsed:.3f} s")
        print(f"wrote {out}")
    return 0


def _run_gradient(args) -> int:
    out = _check_output(args.output, args.input, args.force)
    img = read_image(args.input)
    from napari_tv.operators import tv_gradient, tv_norm

    spacing = args.spacing if args.spacing is not None else metadata_spacing(img)
    kwargs = {
        "kind": args.kind,
        "scheme": args.scheme,
        "boundary": args.boundary,
        "spacing": spacing,
        "eps": args.eps,
    }
    g = _library_call(tv_gradient, img.data, **kwargs)
    tv = _library_call(tv_norm, img.data, **kwargs)
    write_image(out, g, img, spacing=args.spacing)
    if not args.quiet:
        print(f"tv {tv:.10g}")
        print(f"wrote {out}")
    return 0


def _level_pages(data: np.ndarray, grid: np.ndarray) -> Iterator[np.ndarray]:
    """The level sets as uint8 2-D TIFF pages, one level at a time (never the whole stack)."""
    from napari_tv.levelsets import level_set

    for lam in grid[:-1]:
        mask = level_set(data, float(lam)).view(np.uint8)
        yield from mask.reshape(-1, *mask.shape[-2:])


def _run_levels(args) -> int:
    out = _check_output(args.output, args.input, args.force)
    img = read_image(args.input)
    from napari_tv.operators import level_grid

    data = img.data
    grid = _library_call(level_grid, data, args.levels)
    if data.ndim not in (1, 2, 3):
        raise CLIError(f"IN must have 1, 2 or 3 dimensions, got {data.ndim} (shape {data.shape})")
    shape = (len(grid) - 1, *data.shape)
    if img.axes and "T" not in img.axes:
        axes = "T" + img.axes
    else:
        axes = _default_axes(len(shape))
    with _atomic_output(out) as tmp:
        if _suffix(out) == ".npy":
            from napari_tv.levelsets import level_set

            stack = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for k, lam in enumerate(grid[:-1]):
                stack[k] = level_set(data, float(lam))
            stack.flush()
            del stack
        else:
            import tifffile

            sizes = img.sizes or _sizes_from_spacing(img.axes, args.spacing, None)
            kwargs, _ = _tiff_kwargs(out, img, axes, sizes, img.units, np.dtype(np.uint8))
            pages = _level_pages(data.reshape(1, -1) if data.ndim == 1 else data, grid)
            with (
                open(tmp, "wb") as fh,
                tifffile.TiffWriter(
                    fh, imagej=kwargs.pop("imagej", False), ome=kwargs.pop("ome", None)
                ) as tw,
            ):
                tw.write(pages, shape=shape, dtype=np.uint8, **kwargs)
    if not args.quiet:
        print(
            f"{len(grid) - 1} level sets u <= λ for λ = {grid[0]:g} .. {grid[-2]:g}"
            f" (grid of {len(grid)} levels up to {grid[-1]:g})"
        )
        print(f"wrote {out}")
    return 0


def _run_sample(args) -> int:
    out = _check_output(args.output, None, args.force)
    from napari_tv import _sample_data as sd

    if args.kind == "2d":
        noisy, clean = sd.microscopy_2d(seed=args.seed)
        like = ImageFile(data=noisy, flavour="tiff", axes="YX")
    else:
        noisy, clean = sd.microscopy_3d(seed=args.seed)
        like = ImageFile(
            data=noisy,
            flavour="imagej",
            axes="ZYX",
            sizes=dict(zip("ZYX", sd.SAMPLE_3D_SCALE, strict=True)),
            units=dict.fromkeys("ZYX", "micron"),
        )
    data = clean if args.clean else noisy
    write_image(out, data, like)
    if not args.quiet:
        print(f"wrote {out} ({'x'.join(map(str, data.shape))} {data.dtype})")
        if args.kind == "3d":
            print("voxel size (z, y, x) = {:g}, {:g}, {:g} µm".format(*sd.SAMPLE_3D_SCALE))
    return 0


def _run_view(args) -> int:
    target = None
    if args.input is not None:
        img = read_image(args.input)  # a missing or unreadable IN fails before any window
        target = str(Path(args.input))
        del img
    try:
        from napari_tv._widgets._launch import open_viewer
    except ImportError as exc:
        raise CLIError(f"cannot start napari: {exc}") from None
    open_viewer(path_or_array=target, sample=args.sample)
    return 0


# ------------------------------------------------------------------------------ parser


def _add_common(p: argparse.ArgumentParser, *, output: bool = True) -> None:
    p.add_argument("input", metavar="IN", help="input image (.tif, .tiff or .npy)")
    if output:
        p.add_argument("output", metavar="OUT", help="output file (.tif, .tiff or .npy)")
        p.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-tv`` argument parser (one subparser per command)."""
    parser = _Parser(
        prog=PROG,
        description="Total-variation denoising from the command line.",
        epilog="See docs/cli.md. Exit status: 0 ok, 2 error, 130 interrupted.",
    )
    from napari_tv import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    spacing_help = "voxel size per axis, e.g. 2,0.5,0.5 (default: from the file's metadata)"

    p = sub.add_parser("denoise", help="TV-denoise an image or volume")
    _add_common(p)
    p.add_argument("--beta", type=float, required=True, help="regularisation weight β >= 0")
    p.add_argument(
        "--method",
        default="chambolle",
        help="chambolle, primal_dual, bregman, gradient_descent or exact",
    )
    p.add_argument("--fidelity", default="l2", help="l2, l1 or poisson")
    p.add_argument("--tv", default="isotropic", help="isotropic or anisotropic")
    p.add_argument("--boundary", default="neumann", help="neumann or periodic")
    p.add_argument("--connectivity", type=int, help="graph neighbourhood for --method exact")
    p.add_argument("--levels", type=_levels_arg, help="grey levels for exact: L or l1,l2,...")
    p.add_argument("--spacing", type=_spacing_arg, help=spacing_help)
    p.add_argument("--max-iter", type=int, help="iteration limit (default: the method's)")
    p.add_argument("--tol", type=float, default=1e-4, help="relative duality-gap tolerance")
    p.add_argument(
        "--channel-axis",
        type=int,
        help="axis holding channels (default: a C or S axis of the TIFF)",
    )
    p.set_defaults(run=_run_denoise)

    p = sub.add_parser("gradient", help="the TV (sub)gradient ∂TV(u)")
    _add_common(p)
    p.add_argument("--kind", default="isotropic", help="isotropic or anisotropic")
    p.add_argument("--scheme", default="forward", help="forward, backward or central")
    p.add_argument("--boundary", default="neumann", help="neumann or periodic")
    p.add_argument("--eps", type=float, default=0.0, help="smoothing ε of |∇u| (default 0)")
    p.add_argument("--spacing", type=_spacing_arg, help=spacing_help)
    p.set_defaults(run=_run_gradient)

    p = sub.add_parser("levels", help="the level-set stack 1[u <= λ] (uint8 0/1)")
    _add_common(p)
    p.add_argument(
        "--levels",
        type=_levels_arg,
        help="L evenly spaced levels or l1,l2,... (default: every integer for "
        "integer images, 256 for float images)",
    )
    p.add_argument("--spacing", type=_spacing_arg, help="voxel size to record in OUT")
    p.set_defaults(run=_run_levels)

    p = sub.add_parser("sample", help="write the synthetic sample data")
    p.add_argument("kind", choices=("2d", "3d"), help="2d image or 3d volume (z step 2 µm)")
    p.add_argument("output", metavar="OUT", help="output file (.tif, .tiff or .npy)")
    p.add_argument("--clean", action="store_true", help="the noise-free ground truth")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary")
    p.set_defaults(run=_run_sample)

    p = sub.add_parser("view", help="open napari with the plugin's widgets")
    p.add_argument("input", metavar="IN", nargs="?", help="image to open (default: sample data)")
    p.add_argument(
        "--sample",
        choices=("2d", "3d"),
        default="2d",
        help="the sample to open without IN (default 2d)",
    )
    p.set_defaults(run=_run_view)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``napari-tv`` (the console script's entry point).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 success, 2 error (one line ``napari-tv: error: ...`` on stderr,
        nothing written), 130 interrupted by Ctrl-C (nothing written).

    Examples
    --------
    >>> main(["--version"])
    napari-tv 0.1.0
    0
    """
    parser = build_parser()
    previous = None
    try:  # a parent that ignores SIGINT must not make Ctrl-C ineffective
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        pass
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        return args.run(args)
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; no output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
