"""The ``napari-tv`` command line.

::

    napari-tv sample 3d noisy.tif                      # synthetic data to try things on
    napari-tv denoise noisy.tif denoised.tif --beta 2  # TV denoising (any method, fidelity)
    napari-tv gradient noisy.tif grad.tif              # the TV (sub)gradient
    napari-tv levels noisy.tif levels.tif --levels 16  # the level-set stack 1[u <= λ]
    napari-tv view [noisy.tif]                         # napari with the plugin's widgets
    napari-tv warmup                                   # compile the solvers ahead of use

Images are read and written (by :mod:`napari_tv._io`) as TIFF (``.tif``, ``.tiff``; ImageJ
and OME-TIFF voxel sizes are read, used as the default ``spacing`` and written back) or NumPy
``.npy``; ``denoise`` also reads and writes zarr arrays and OME-Zarr images (``.zarr``, by
:mod:`napari_tv._zarr_io`), lazily and chunk by chunk, for volumes larger than memory
(``--chunks``, ``--scheduler``; that path is :mod:`napari_tv._cli_chunked`).  Errors print
one line (``napari-tv: error: ...``) and exit with status 2; Ctrl-C exits with status 130.
The output is written to a temporary file (or directory) beside it and renamed at the end,
so it is never left half-written, and it is never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_tv import _console
from napari_tv._cli_chunked import _denoise_lazy, _scheduler_arg
from napari_tv._cli_common import PROG, CLIError, _library_call, _method_options, _note, _Progress
from napari_tv._io import (
    SUFFIXES,
    ImageFile,
    ImageFileError,
    check_name,
    check_writable,
    human_bytes,
    level_stack_bytes,
    metadata_spacing,
    read_image,
    write_image,
    write_level_stack,
)
from napari_tv._validation import float_dtype
from napari_tv._zarr_io import (
    ZARR_SUFFIX,
    ZarrImage,
    ZarrOutput,
    is_ome_name,
    is_zarr,
    output_chunks,
    parse_chunks,
    read_zarr,
    result_bytes,
    store_blocks,
    zarr_output,
)

EXIT_ERROR = 2

#: seconds to wait for a ``--scheduler`` address to answer (handed to :func:`_denoise_lazy`)
CONNECT_TIMEOUT = 10


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage and sys.exit(2)
        sub = self.prog[len(PROG) :].strip()
        raise CLIError(f"{sub}: {message}" if sub else message)


# ---------------------------------------------------------------------------- output path


def _formats(zarr_ok: bool) -> str:
    return "use .tif, .tiff, .npy or .zarr" if zarr_ok else "use .tif, .tiff or .npy"


def _check_output(out, inp, force: bool, zarr_ok: bool = False) -> Path:
    """OUT must be a writable .tif/.tiff/.npy (or, with ``zarr_ok``, .zarr) path, not IN, and
    new unless ``--force``."""
    out = Path(out)
    check_name(out)
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES + ((ZARR_SUFFIX,) if zarr_ok else ()):
        also = " (zarr is written by denoise only)" if suffix == ZARR_SUFFIX else ""
        raise CLIError(
            f"cannot write {out}: unsupported format {suffix or '(none)'!r} "
            f"({_formats(zarr_ok)}){also}"
        )
    if inp is not None:
        same = out.resolve() == Path(inp).resolve()
        if not same and out.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, inp)
        if same:
            raise CLIError(f"OUT must not be IN ({out}); choose another output file")
    if out.is_dir() and suffix != ZARR_SUFFIX:
        raise CLIError(f"cannot write {out}: is a directory")
    if out.exists() and not force:
        raise CLIError(f"{out} exists; use --force to overwrite it")
    if not out.parent.is_dir():
        raise CLIError(f"cannot write {out}: no such directory {out.parent}")
    check_writable(out)  # a read-only directory or a name too long: now, not after the work
    return out


def _read_input(path, zarr_ok: bool = False):
    """IN as an :class:`ImageFile` (TIFF, ``.npy``) or, with ``zarr_ok``, a lazily opened
    :class:`ZarrImage` (``.zarr``)."""
    if is_zarr(path):
        if not zarr_ok:
            raise CLIError(
                f"cannot read {path}: zarr is read by denoise and view only (use .tif, .tiff "
                "or .npy)"
            )
        return read_zarr(path)
    return read_image(path)


def _result_bytes(data) -> int:
    """Bytes of a result the shape of ``data`` in the dtype the solvers return."""
    return int(data.size) * float_dtype(data.dtype).itemsize


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


def _beta_arg(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _levels_arg(text: str):
    """One number: how many levels (a whole number, ``1e3`` is 1000); two or more separated
    by commas: the levels themselves."""
    parts = text.replace(",", " ").split()
    try:
        values = [float(t) for t in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        count = values[0]
        if not (count.is_integer() and count >= 2):
            raise argparse.ArgumentTypeError(
                f"a number of levels must be a whole number >= 2, got {text!r} (for levels "
                "of your own give two or more, separated by commas)"
            )
        return int(count)
    if len(values) < 2:
        raise argparse.ArgumentTypeError(
            f"expected a number of levels or comma-separated levels, got {text!r}"
        )
    return values


def _bytes_arg(text: str) -> int:
    """``500M``, ``2G``, ``1e9``: a size in bytes."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().rstrip("ib").rstrip("b")
    mult = scale.get(t[-1:], 1)
    try:
        value = float(t[:-1] if t[-1:] in scale else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 500M or 2G, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a size > 0, got {text!r}")
    return int(value)


def _option_arg(text: str) -> tuple[str, str]:
    """``NAME=VALUE``: a method's own option, typed once the method is known."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _chunks_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_chunks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# ---------------------------------------------------------------------------- commands


def _run_denoise(args) -> int:
    out = _check_output(args.output, args.input, args.force, zarr_ok=True)
    img = _read_input(args.input, zarr_ok=True)
    ndim = img.data.ndim
    channel_axis = args.channel_axis
    if channel_axis is None:
        found = [i for i, a in enumerate(img.axes) if a in "CS"]
        channel_axis = found[0] if len(found) == 1 else None
    elif -ndim <= channel_axis < 0:
        channel_axis += ndim
    if args.method == "exact" and (args.tol is not None or args.max_iter is not None):
        _note(
            "warning: --tol and --max-iter do not apply to --method exact (its result is the "
            "exact minimiser); ignored"
        )
        args.tol = args.max_iter = None
    tol = 1e-4 if args.tol is None else args.tol
    lazy = isinstance(img, ZarrImage) or args.chunks is not None
    if not lazy:
        too_big = _in_memory_too_big(img.data, args.method, args.fidelity, channel_axis,
                                     args.connectivity or 1)  # fmt: skip
        if too_big:
            _note(f"{too_big}; solving it chunk by chunk (--chunks sets the chunks)")
            lazy = True
    if lazy:
        return _denoise_lazy(args, img, out, channel_axis, tol, CONNECT_TIMEOUT)
    if is_zarr(out):
        check_writable(out, result_bytes(img.data.shape, float_dtype(img.data.dtype),
                                         pyramid=is_ome_name(out)))  # fmt: skip
    else:
        check_writable(out, _result_bytes(img.data))  # a full disk: now, not after the work
    from napari_tv.solvers.api import denoise_tv

    spacing = args.spacing
    if spacing is None:
        spacing = metadata_spacing(img, channel_axis)
    kwargs = {
        "method": args.method,
        "fidelity": args.fidelity,
        "tv": args.tv,
        "boundary": args.boundary,
        "spacing": spacing,
        "tol": tol,
        "channel_axis": channel_axis,
    }
    for name in ("connectivity", "levels"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    if args.max_iter is not None:
        kwargs["max_num_iter"] = args.max_iter
    if args.option:
        kwargs["options"] = _method_options(args.method, args.option)
    if args.beta_rule is not None:
        if args.beta != "auto":
            raise CLIError("--beta-rule goes with --beta auto")
        kwargs["beta_rule"] = args.beta_rule
    shape = "x".join(map(str, img.data.shape))
    beta_text = "auto (chosen from the data)" if args.beta == "auto" else f"{args.beta:g}"
    start = (
        f"denoising {args.input} ({shape} {img.data.dtype}) with {args.method}, "
        f"beta {beta_text}" + (f", spacing {spacing}" if spacing is not None else "")
    )
    progress = _Progress(not args.quiet, args.method, start)
    t0 = time.perf_counter()
    try:
        u, res = _library_call(
            denoise_tv, img.data, args.beta, callback=progress, return_info=True,
            stop=progress.stop, **kwargs
        )  # fmt: skip
    finally:
        progress.close()
    elapsed = time.perf_counter() - t0
    if is_zarr(out):
        _write_zarr(out, u, img, args, channel_axis)
    else:
        write_image(
            out, u, img, spacing=args.spacing, channel_axis=channel_axis, replace=args.force
        )
    if not args.quiet:
        if args.beta == "auto":
            from napari_tv.beta_choice import RULE_NAMES

            rule = RULE_NAMES[res.extra["beta_rule"]]
            print(f"beta {res.extra['beta']:.6g} (chosen by {rule})")
        print(f"energy {res.energy:.10g}")
        if res.method == "exact" and res.converged:
            n_levels = len(res.extra.get("levels", ()))
            print(f"exact: certified global minimum on {n_levels} levels")
        else:
            state = "converged" if res.converged else "not converged"
            print(f"gap {res.gap:.3g} ({state} after {res.n_iter} iterations, tol {tol:g})")
        print(f"time {elapsed:.3f} s")
        print(f"wrote {out}")
    return 0


def _in_memory_too_big(data, method: str, fidelity: str, channel_axis,
                       connectivity: int = 1) -> str:  # fmt: skip
    """Why the in-memory solve would not fit (the memory guard's estimate, as
    :mod:`napari_tv._memory`), or ``""`` when it fits (or cannot be estimated)."""
    from napari_tv._memory import HEADROOM, available_bytes, estimate_bytes

    shape = [int(n) for n in data.shape]
    channels = 1
    if channel_axis is not None and -len(shape) <= channel_axis < len(shape):
        channels = shape.pop(channel_axis)
    work = float_dtype(data.dtype)
    try:
        needed = estimate_bytes(method, fidelity, shape, work.itemsize, channels=channels,
                                converted=work != data.dtype,
                                connectivity=connectivity)  # fmt: skip
    except KeyError:  # an unknown method or fidelity: the library says so
        return ""
    try:
        available = available_bytes()
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if available is None or needed <= HEADROOM * available:
        return ""
    return (
        f"the in-memory solve would need about {human_bytes(needed)}, more than "
        f"{HEADROOM:.0%} of the {human_bytes(available)} available"
    )


def _write_zarr(out: Path, u: np.ndarray, like, args, channel_axis) -> None:
    """Write an in-memory result as a zarr store, chunk by chunk (interruptible)."""
    batch = (channel_axis,) if channel_axis is not None else ()
    try:
        chunks = output_chunks(u.shape, batch, args.chunks, None)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    ome = is_ome_name(out)
    stop = threading.Event()
    with zarr_output(out, result_bytes(u.shape, u.dtype, pyramid=ome), args.force) as root:

        def work() -> None:
            zout = ZarrOutput(root, like, u.shape, u.dtype, chunks, ome=ome,
                              spacing=args.spacing, batch=batch)  # fmt: skip
            store_blocks(u, zout.array, callback=lambda _f: stop.is_set())
            zout.write_pyramid(cancelled=stop.is_set)

        _library_call(work, stop=stop.set, drain=30.0)


def _run_gradient(args) -> int:
    out = _check_output(args.output, args.input, args.force)
    img = _read_input(args.input)
    check_writable(out, _result_bytes(img.data))  # a full disk: now, not after the work
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
    write_image(out, g, img, spacing=args.spacing, replace=args.force)
    if not args.quiet:
        print(f"tv {tv:.10g}")
        print(f"wrote {out}")
    return 0


def _run_levels(args) -> int:
    out = _check_output(args.output, args.input, args.force)
    img = _read_input(args.input)
    from napari_tv.operators import level_grid

    data = img.data
    if data.ndim not in (1, 2, 3):
        raise CLIError(f"IN must have 1, 2 or 3 dimensions, got {data.ndim} (shape {data.shape})")
    grid = _library_call(level_grid, data, args.levels)
    if len(grid) < 2:
        raise CLIError(
            f"the grid has a single level ({grid[0]:g}: IN is constant, or --levels repeats one "
            "value); its only level set is the whole image, so there is nothing to write"
        )
    nbytes = level_stack_bytes(img, grid)
    if nbytes > args.max_bytes:
        raise CLIError(
            f"the stack would take {human_bytes(nbytes)} ({len(grid) - 1} levels x "
            f"{data.size} voxels), more than --max-bytes {human_bytes(args.max_bytes)}; give "
            "fewer --levels, or a larger --max-bytes"
        )
    write_level_stack(out, img, grid, spacing=args.spacing, replace=args.force)
    if not args.quiet:
        print(
            f"{len(grid) - 1} level sets u <= λ for λ = {grid[0]:g} .. {grid[-2]:g}"
            f" (grid of {len(grid)} levels up to {grid[-1]:g})"
        )
        print(f"wrote {out} ({human_bytes(nbytes)})")
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
    write_image(out, data, like, replace=args.force)
    if not args.quiet:
        print(f"wrote {out} ({'x'.join(map(str, data.shape))} {data.dtype})")
        if args.kind == "3d":
            print("voxel size (z, y, x) = {:g}, {:g}, {:g} µm".format(*sd.SAMPLE_3D_SCALE))
    return 0


def _check_display() -> None:
    """napari needs a screen: on Linux an X or Wayland display (Qt would abort otherwise)."""
    if not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] not in ("", "xcb", "wayland"):
        return  # the user chose another Qt platform (e.g. vnc, eglfs)
    raise CLIError(
        "view needs a display: no DISPLAY or WAYLAND_DISPLAY is set; run it on a desktop, or "
        "under a virtual X server: xvfb-run -a napari-tv view"
    )


def _run_warmup(args) -> int:
    from napari_tv import _compile

    dtypes = _compile.DTYPES if args.dtype == "both" else (args.dtype,)
    families = args.family or list(_compile.FAMILIES)
    total = len(families) * len(dtypes)
    t0 = time.perf_counter()
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        _note(
            f"compiling {len(families)} kernel famil{'y' if len(families) == 1 else 'ies'} for "
            f"{' and '.join(dtypes)} into Numba's "
            "cache (once per install or Numba upgrade; later runs start at once)"
        )
        if sys.stderr.isatty():
            bar = tqdm(total=total, desc="warmup", file=sys.stderr, leave=False, unit="family")

    def progress(done: int, total: int, what: str) -> None:
        if bar is not None:
            bar.update(done - bar.n)
            bar.set_postfix_str(what, refresh=True)
        elif not args.quiet:  # a log, not a terminal: a line per family
            _note(f"compiled {what} ({done}/{total}, {time.perf_counter() - t0:.0f} s)")

    try:
        results = _compile.warm_up(families, dtypes, jobs=args.jobs, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    failed = [f"{f} ({d})" for f, d, rc in results if rc != 0]
    if failed:
        raise CLIError(f"compiling failed for {', '.join(failed)}")
    if not args.quiet:
        from napari_tv.solvers._gap import _gap_terms

        what = "family" if total == 1 else "families"
        print(f"compiled {total} kernel {what} in {time.perf_counter() - t0:.0f} s")
        print(f"cache: {_gap_terms.stats.cache_path}")
    return 0


def _run_view(args) -> int:
    target = None
    if args.input is not None:
        img = _read_input(args.input, zarr_ok=True)  # a missing or unreadable IN: no window
        target = str(Path(args.input))
        del img
    _check_display()
    try:
        from napari_tv._widgets._launch import open_viewer

        open_viewer(path_or_array=target, sample=args.sample)
    except ImportError as exc:  # no napari or no Qt binding (e.g. a library-only install)
        raise CLIError(
            f"cannot start napari: {exc}; install the viewer with pip install "
            "'napari-tv[pyqt6]' (or napari[all])"
        ) from None
    return 0


# ------------------------------------------------------------------------------ parser


def _add_common(p: argparse.ArgumentParser, *, output: bool = True, zarr: bool = False) -> None:
    kinds = ".tif, .tiff, .npy or .zarr" if zarr else ".tif, .tiff or .npy"
    p.add_argument("input", metavar="IN", help=f"input image ({kinds})")
    if output:
        p.add_argument("output", metavar="OUT", help=f"output file ({kinds})")
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
    _add_common(p, zarr=True)
    p.add_argument(
        "--beta",
        type=_beta_arg,
        required=True,
        help="regularisation weight β >= 0 (data units for l2), or 'auto': chosen from the "
        "data (see --beta-rule)",
    )
    p.add_argument(
        "--beta-rule",
        choices=("sure", "pure", "jinv", "discrepancy"),
        help="the rule of --beta auto (default: jinv for l2 and l1, pure for poisson)",
    )
    from napari_tv.solvers.methods import DEFAULT_METHOD, METHODS

    p.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=tuple(METHODS),
        metavar="METHOD",
        help=f"the solver, default {DEFAULT_METHOD}. "
        + "; ".join(f"{m.name}: {m.description}" for m in METHODS.values()),
    )
    with_options = [m for m in METHODS.values() if m.options]
    p.add_argument(
        "--option",
        action="append",
        type=_option_arg,
        metavar="NAME=VALUE",
        help="an option of the method (repeatable): "
        + "; ".join(f"{m.name}: {', '.join(m.options)}" for m in with_options)
        + " (see docs/cli.md)",
    )
    p.add_argument("--fidelity", default="l2", help="l2, l1 or poisson")
    p.add_argument("--tv", default="isotropic", help="isotropic or anisotropic")
    p.add_argument("--boundary", default="neumann", help="neumann or periodic")
    p.add_argument("--connectivity", type=int, help="graph neighbourhood for --method exact")
    p.add_argument("--levels", type=_levels_arg, help="grey levels for exact: L or l1,l2,...")
    p.add_argument("--spacing", type=_spacing_arg, help=spacing_help)
    p.add_argument("--max-iter", type=_positive_int, help="iteration limit (default: the method's)")
    p.add_argument("--tol", type=float, help="relative duality-gap tolerance (default 1e-4)")
    p.add_argument(
        "--channel-axis",
        type=int,
        help="axis holding channels (default: a C or S axis of the TIFF, the c axis of an "
        "OME-Zarr image)",
    )
    p.add_argument(
        "--chunks",
        type=_chunks_arg,
        help="solve chunk by chunk in chunks of this shape, e.g. 64,256,256 (also OUT's zarr "
        "chunks; default: IN's zarr chunks)",
    )
    p.add_argument(
        "--scheduler",
        type=_scheduler_arg,
        default="threads",
        help="dask scheduler of a chunked solve: threads (default), processes, synchronous, or "
        "the address of a dask.distributed scheduler, tcp://host:port",
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
    p.add_argument(
        "--max-bytes",
        type=_bytes_arg,
        default=256 << 20,
        help="refuse a stack larger than this (one byte per voxel and level; default 256M)",
    )
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
        choices=("3d", "2d"),
        default="3d",
        help="the sample to open without IN (default: the 3d volume)",
    )
    p.set_defaults(run=_run_view)

    from napari_tv import _compile

    p = sub.add_parser("warmup", help="compile the solvers ahead of first use (once per install)")
    p.add_argument(
        "--dtype",
        choices=("both", "float32", "float64"),
        default="both",
        help="data types to compile for (default both; 8- and 16-bit images use float32)",
    )
    p.add_argument(
        "--family",
        action="append",
        choices=tuple(_compile.FAMILIES),
        help="only this family of kernels (repeatable; default: all)",
    )
    p.add_argument("--jobs", type=int, help="processes at once (default: the CPU count)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(run=_run_warmup)
    return parser


def _run(args) -> int:
    """Run a command; its warnings and compile notices as ``napari-tv: ...`` lines."""
    from napari_tv._compile import compile_notice

    def show(message, category, filename, lineno, file=None, line=None):
        _note(f"warning: {message}")

    quiet = getattr(args, "quiet", False)
    with warnings.catch_warnings():
        warnings.showwarning = show
        with compile_notice(_note if not quiet else lambda _m: None):
            return args.run(args)


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
        nothing written), 130 interrupted by Ctrl-C, 143 terminated by SIGTERM (nothing
        written either way).

    Examples
    --------
    >>> main(["--version"])
    napari-tv 0.1.0
    0
    """
    parser = build_parser()
    previous: dict = {}
    try:
        previous = _console.install()  # (a signal during it is handled below, as any other)
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version
            return int(exc.code or 0)
        return _run(args)
    except (CLIError, ImageFileError) as exc:
        if _console.RECEIVED:  # an error the interruption caused (a half-read file, ...)
            return _stopped(exc)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BaseException as exc:
        return _stopped(exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(exc: BaseException) -> int:
    code = _console.interruption(exc)
    if code is None:
        raise exc
    _console.report(code)
    return code


if __name__ == "__main__":
    from napari_tv._console import console

    console()
