"""The chunked path of ``napari-tv denoise``: zarr input, ``--chunks``, or an image whose
in-memory solve would not fit (:func:`_denoise_lazy`, called by :mod:`napari_tv.cli`).

Each batch index (channel, time point) is solved by :func:`napari_tv.chunked.denoise_tv_chunked`
block by block into its slice of a zarr store beside OUT (``--method exact``: the chunked
exact solve, :mod:`napari_tv._exact_chunked`), which is published as OUT or streamed into it.  Also
here: the ``--scheduler`` argument and the dask scheduler it names for the run (a local one, one
process pool for the whole run, or a ``dask.distributed`` client).  dask is imported only when
this path runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from pathlib import Path

import numpy as np

from napari_tv._cli_common import CLIError, _library_call, _Progress
from napari_tv._io import ImageFileError, check_writable, write_image
from napari_tv._validation import float_dtype
from napari_tv._zarr_io import (
    ZarrImage,
    ZarrOutput,
    is_ome_name,
    is_zarr,
    output_chunks,
    result_bytes,
    spatial_spacing,
    tiff_like,
    zarr_output,
)

SCHEDULERS = ("threads", "processes", "synchronous")


def _scheduler_arg(text: str) -> str:
    """``threads``, ``processes``, ``synchronous`` or a ``dask.distributed`` scheduler's
    address (``tcp://host:port``; ``host:port`` means ``tcp://``)."""
    value = text.strip()
    if value.lower() in SCHEDULERS:
        return value.lower()
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "tcp", value
    host, colon, port = rest.rpartition(":")
    if scheme.lower() not in ("tcp", "tls", "ws", "wss", "inproc") or not (
        colon and host and port.isdigit()
    ):
        raise argparse.ArgumentTypeError(
            f"expected threads, processes, synchronous or a scheduler address such as "
            f"tcp://host:8786, got {text!r}"
        )
    return f"{scheme.lower()}://{rest}"


def _batch_axes(img, channel_axis) -> tuple[int, ...]:
    """The axes solved one index at a time: the channel axis and, for zarr, a t axis."""
    ndim = img.data.ndim
    batch = set()
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise CLIError(
                f"--channel-axis must be in [{-ndim}, {ndim}) for a {ndim}-D image, got "
                f"{channel_axis}"
            )
        batch.add(channel_axis % ndim)
    if isinstance(img, ZarrImage):
        batch |= {i for i, a in enumerate(img.axes) if a == "T"}
    return tuple(sorted(batch))


def _denoise_lazy(args, img, out: Path, channel_axis, tol: float, connect_timeout: float) -> int:
    """``denoise`` of a zarr input, with ``--chunks``, or of an image whose in-memory solve
    would not fit: each batch index (channel, time point) solved by
    :func:`napari_tv.chunked.denoise_tv_chunked` block by block into its slice of a zarr
    store beside OUT (``--method exact`` too, certified or refused), which is published as OUT
    (zarr) or streamed into it (TIFF, ``.npy``).
    ``connect_timeout``: seconds to wait for a ``--scheduler`` address to answer."""
    data = img.data
    shape, ndim = tuple(int(n) for n in data.shape), data.ndim
    batch = _batch_axes(img, channel_axis)
    spatial = [i for i in range(ndim) if i not in batch]
    exact = args.method == "exact"
    if not 1 <= len(spatial) <= 3:
        axes = f", axes {img.axes}" if img.axes else ""
        raise CLIError(
            f"IN has {len(spatial)} spatial axes (shape {shape}{axes}); at most 3 are "
            "denoised together: name the channel axis with --channel-axis"
        )
    if args.beta_rule is not None and args.beta != "auto":
        raise CLIError("--beta-rule goes with --beta auto")
    if args.beta_rule is not None:
        raise CLIError(
            "--beta-rule is not available when solving chunk by chunk (--beta auto uses the "
            "fidelity's default rule on a central crop)"
        )
    if exact and args.boundary != "neumann":
        raise CLIError(f"method='exact' does not support boundary={args.boundary!r}; it "
                       "supports boundary 'neumann' only")  # fmt: skip
    if args.option or (not exact and (args.connectivity is not None
                                      or args.levels is not None)):  # fmt: skip
        raise CLIError(
            "--option is not available when solving chunk by chunk (zarr input, --chunks, or "
            "an image too large for memory), nor --connectivity and --levels with an "
            "iterative method"
        )
    try:
        chunks = output_chunks(shape, batch, args.chunks,
                               img.chunks if isinstance(img, ZarrImage) else None)  # fmt: skip
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    spacing = args.spacing if args.spacing is not None else spatial_spacing(img, batch)
    dtype = float_dtype(data.dtype)
    if not hasattr(data, "dask"):  # a TIFF or .npy read into memory
        import dask.array as da

        data = da.from_array(data, chunks=chunks)
    zarr_out = is_zarr(out)
    ome = zarr_out and (getattr(img, "ome", None) is not None or is_ome_name(out))
    nbytes = result_bytes(shape, dtype, pyramid=ome)
    if not zarr_out:  # the result is kept in a zarr store beside OUT, then streamed into it
        check_writable(out, 2 * nbytes)

    shape_text = "x".join(map(str, shape))
    chunk_text = "x".join(str(chunks[i]) for i in spatial)
    if args.beta == "auto":
        beta_text = "auto (chosen from a central crop)"
    else:
        beta_text = f"{args.beta:g}"
    how = f"in chunks of {chunk_text}"
    n_slices = math.prod(shape[i] for i in batch)
    if n_slices > 1:
        how += f", {n_slices} channels/time points one at a time"
    sched = "" if args.scheduler == "threads" else f", scheduler {args.scheduler}"
    method_text = args.method
    if not exact and args.method != "primal_dual":
        method_text += " (primal_dual within chunks)"
    start = (
        f"denoising {args.input} ({shape_text} {img.data.dtype}) with {method_text}, beta "
        f"{beta_text}" + (f", spacing {spacing}" if spacing is not None else "")
        + f", {how}{sched}"
    )  # fmt: skip
    progress = _Progress(not args.quiet, args.method, start)
    options = {"method": args.method, "fidelity": args.fidelity, "spacing": spacing}
    if exact:
        for name in ("connectivity", "levels"):
            if getattr(args, name) is not None:
                options[name] = getattr(args, name)
    else:
        options.update(tv=args.tv, boundary=args.boundary, tol=tol)
        if args.max_iter is not None:
            options["max_num_iter"] = args.max_iter

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(zarr_output(out, nbytes, args.force, publish=zarr_out))
        scheduler = stack.enter_context(_scheduler(args.scheduler, connect_timeout))
        zout = ZarrOutput(root, img, shape, dtype, chunks, ome=ome, spacing=args.spacing,
                          batch=batch)  # fmt: skip
        try:
            total = _library_call(
                _solve_slices, data, zout, batch, chunks, args.beta, options, progress,
                scheduler, stop=progress.stop, drain=30.0,
            )  # fmt: skip
        except (CLIError, ImageFileError, OSError):
            raise
        except Exception as exc:  # a worker or scheduler failure: one line all the same
            raise CLIError(f"the computation failed: {type(exc).__name__}: {exc}") from None
        finally:
            progress.close()
        if not zarr_out:
            write_image(out, zout.array, tiff_like(img), spacing=args.spacing,
                        channel_axis=batch[0] if batch else None,
                        replace=args.force)  # fmt: skip
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        if args.beta == "auto":
            from napari_tv.beta_choice import RULE_NAMES, default_rule

            rule = RULE_NAMES[args.beta_rule or default_rule(args.fidelity)]
            betas = ", ".join(f"{b:.6g}" for b in total["betas"])
            print(f"beta {betas} (chosen by {rule} on a central crop)")
        print(f"energy {total['energy']:.10g}")
        if exact:
            how = ("solved at once: it fits in memory" if total.get("in_memory")
                   else f"{total['rounds']} passes over the blocks")  # fmt: skip
            print(f"exact: certified global minimum on {total['levels']} levels ({how})")
        else:
            state = "converged" if total["converged"] else "not converged"
            rounds = f" in {total['rounds']} rounds" if total["rounds"] else ""
            print(
                f"gap {total['gap']:.3g} ({state} after {total['n_iter']} iterations{rounds}, "
                f"tol {tol:g})"
            )
        print(f"time {elapsed:.3f} s")
        print(f"wrote {out}")
    return 0


def _solve_slices(data, zout, batch, chunks, beta, options, progress, scheduler) -> dict:
    """Solve every batch index of ``data`` into ``zout.array`` (in the worker thread), then
    fill the pyramid; the summed energy and the worst gap, iterations and rounds."""
    shape = data.shape
    indices = list(np.ndindex(*[shape[i] for i in batch]))
    spatial_chunks = tuple(c for i, c in enumerate(chunks) if i not in batch)
    total = {"energy": 0.0, "gap": 0.0, "n_iter": 0, "rounds": 0, "converged": True,
             "levels": 0, "betas": []}  # fmt: skip
    for k, idx in enumerate(indices):
        if progress.stopped:
            break
        where = [slice(None)] * data.ndim
        for axis, i in zip(batch, idx, strict=True):
            where[axis] = i
        where = tuple(where)
        part = data[where]

        def report(info, k=k):
            frac = float(info.get("fraction", 0.0) or 0.0)
            return progress({**info, "fraction": (k + min(max(frac, 0.0), 1.0)) / len(indices)})

        import dask.array as da

        from napari_tv.chunked import denoise_tv_chunked

        target = zout.array if not batch else None
        # the state on disk (if it goes there) beside OUT, not in a RAM-backed /tmp
        res = denoise_tv_chunked(part.rechunk(spatial_chunks), beta, out=target,
                                 callback=report, scheduler=scheduler,
                                 state_dir=zout.state_dir, **options)  # fmt: skip
        if res.cancelled:
            break
        if res.method == "exact" and not res.converged:  # never a silent approximation
            raise CLIError(f"the exact solve is not certified: {res.extra['note']}")
        if res.method == "exact":
            total["levels"] = max(total["levels"], len(res.extra["levels"]))
            total["in_memory"] = total.get("in_memory", True) and res.extra["in_memory"]
        if target is None:  # a channel or time point: into its slice of OUT
            slice_target = _SliceTarget(zout.array, where)
            da.store(res.u.rechunk(spatial_chunks), slice_target, lock=False,
                     scheduler=scheduler)  # fmt: skip
        total["rounds"] = max(total["rounds"], int(getattr(res, "rounds", 0) or 0))
        if beta == "auto":
            total["betas"].append(float(res.extra.get("beta", math.nan)))
        total["energy"] += float(res.energy)
        gap = float(res.gap) if res.gap is not None else float("nan")
        total["gap"] = max(total["gap"], gap) if np.isfinite(gap) else gap
        total["n_iter"] = max(total["n_iter"], int(res.n_iter or 0))
        total["converged"] = total["converged"] and bool(res.converged)
    if not progress.stopped:
        zout.write_pyramid(cancelled=lambda: progress.stopped)
    return total


class _SliceTarget:
    """``target[where]`` (a channel's or time point's slice of a zarr array) as a
    ``dask.array.store`` target: ``region`` of the slice -> the region of the whole array.
    Picklable (for the processes and distributed schedulers)."""

    def __init__(self, target, where: tuple):
        self.target, self.where = target, where
        self.spatial = [i for i, w in enumerate(where) if isinstance(w, slice)]
        self.shape = tuple(target.shape[i] for i in self.spatial)
        self.dtype = target.dtype

    def __setitem__(self, region, value) -> None:
        region = region if isinstance(region, tuple) else (region,)
        full = list(self.where)
        for axis, r in zip(self.spatial, region, strict=False):
            full[axis] = r
        self.target[tuple(full)] = value


@contextlib.contextmanager
def _process_pool():
    """dask's ``processes`` scheduler with worker processes started once for the whole run
    (each of the solve's rounds is a dask computation: a pool per computation would start and
    import everything again every round); as dask's own: spawned, seeded, one per core.
    Terminated at once on an error or an interruption, and collected (the console script
    ends with ``os._exit``, which would leave the processes waiting, or their semaphores to
    a warning)."""
    import gc

    import dask
    from dask.multiprocessing import CPU_COUNT, get_context, initialize_worker_process

    if os.environ.get("PYTHONHASHSEED") in (None, "0"):  # as dask does: consistent hashing
        os.environ["PYTHONHASHSEED"] = "6640"
    pool = get_context().Pool(CPU_COUNT, initializer=initialize_worker_process)
    try:
        with dask.config.set(scheduler="processes", pool=pool):
            yield
    except BaseException:
        pool.terminate()
        pool.join()
        del pool
        gc.collect()
        raise
    pool.close()
    pool.join()


@contextlib.contextmanager
def _scheduler(spec: str, connect_timeout: float):
    """dask's scheduler for the run: a local one by name, or a ``dask.distributed`` client
    connected to ``spec`` (an address) for the duration (a failing connection: one line)."""
    import dask

    if spec == "processes":  # one pool for the run (dask would start one per compute)
        with _process_pool():
            yield spec
        return
    if spec in SCHEDULERS:
        with dask.config.set(scheduler=spec):
            yield spec
        return
    import logging

    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its own retry and connection chatter: one line instead
    try:
        from distributed import Client

        try:
            client = Client(spec, timeout=connect_timeout, set_as_default=True)
        except Exception as exc:  # OSError, TimeoutError, a version mismatch, ...
            detail = str(exc) or type(exc).__name__
            raise CLIError(f"--scheduler {spec}: cannot connect ({detail})") from None
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
    finally:
        quiet.setLevel(level)
