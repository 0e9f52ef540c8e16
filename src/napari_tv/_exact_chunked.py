r"""The exact solver on a volume in blocks, on dask, certified: bounds squeezed block by block.

:func:`solve_exact_chunked` returns the same minimiser as the in-memory
:func:`napari_tv.solvers.exact.solve_exact` (the one with the smallest upper level sets,
:math:`u^*`), without ever holding more than a block of it, and says whether it got there.

Bounds from blocks (the argument; docs/maths.md has it at length)
-----------------------------------------------------------------
Every voxel carries grid-index bounds ``lo <= k* <= hi`` on :math:`u^*_s = \lambda_{k^*}`,
``[0, L-1]`` at the start.  A *pass* solves every block, extended by ``overlap`` voxels and a
one-voxel *frame* (only at cuts between blocks, not at the volume's ends), twice with the
exact solver, its voxels boxed by their bounds (:func:`~napari_tv.solvers.exact.solve_indices`):

* frame fixed at its lower bounds: the solution is a new lower bound inside;
* frame fixed at its upper bounds: a new upper bound.

Why.  Restricted to a region ``R`` with everything outside fixed at :math:`u^*`, the smallest
minimiser of each level problem is :math:`A^k \cap R` (:mod:`napari_tv.solvers.exact`, the
dichotomy argument), and a box that holds :math:`u^*` keeps it the smallest minimiser.  Only
the frame touches ``R`` (edges join neighbours at distance 1).  Lowering the frame makes fewer
neighbours "above" every level, which raises every unary slope of ``R``'s level problems, and
the smallest minimiser of a cut function can only shrink when its unary terms grow (the
lattice argument of the nesting proof).  So the frame at its lower bounds gives a solution
below :math:`u^*` in ``R``, at its upper bounds one above: both are bounds, and the bounds
only tighten from pass to pass.  Where they meet, :math:`u^*` is *known* — that is the
certificate, voxel by voxel.

Voxels deep inside a block are decided in the first pass; the next ones use the tighter frame.
Passes run until every voxel is decided or a pass tightens nothing.  What is left (plateaus
larger than a block, whose level depends on their whole extent) is solved at once: the
bounding box of the undecided voxels plus a frame, in memory, boxed by the bounds — exact by
the same argument — if it fits ``max_bytes``; otherwise the result says how many voxels are
undecided and is *not* converged (``u`` is then the lower bound, never a silent
approximation).

Ties.  The argument needs each solve's *smallest* minimiser.  Where the energy has exact ties
(L1 on integer data, typically), the max-flow's floating-point residuals can break a tie the
other way, as the in-memory solver's own flow reuse can (:mod:`napari_tv.solvers.exact`): the
two solves of a block may then cross.  Crossed voxels keep their bounds and go to the final
solve; the result is a minimiser up to that rounding (tests compare energies to 1e-9).

The bounds are packed two 16-bit grid indices per voxel (``lo | hi << 16``, 4 bytes), kept
between passes in memory (dask ``persist``) or on disk (one ``.npy`` per block), like the
iterative chunked solve's state (:mod:`napari_tv._rounds`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_tv._memory import HEADROOM, available_bytes, estimate_bytes, human_bytes
from napari_tv._rounds import BlockFiles, compute, depths, owned, persist, temp_dir
from napari_tv._rounds import overlap as extend
from napari_tv._validation import check_real, check_spacing, float_dtype
from napari_tv.fidelity import check_fidelity_data, fidelity_pointwise
from napari_tv.operators import level_grid, neighbour_offsets, resolve_weights

__all__ = ["solve_exact_chunked"]

#: the bounds are two 16-bit grid indices per voxel
MAX_LEVELS = 1 << 16
_MASK = np.uint32(0xFFFF)
#: voxels around a block solved with it but not kept (more: more decided per pass, more work)
DEFAULT_OVERLAP = 8
#: the size of the blocks when no ``chunks`` are given: the exact solver takes ~200 B per
#: voxel of an extended block (docs/maths.md), ~0.4 GB per task
EXACT_BLOCK_VOXELS = 1 << 21
#: passes before the rest is solved at once
DEFAULT_MAX_PASSES = 6
#: the whole volume is solved at once (no passes) when that takes at most this share of the
#: memory allowed (and no ``chunks`` are given)
IN_MEMORY_SHARE = 1.0
#: a pass deciding less than this share of the undecided voxels is the last one
MIN_PASS_GAIN = 0.01


def pack(lo, hi) -> np.ndarray:
    return np.asarray(lo).astype(np.uint32) | (np.asarray(hi).astype(np.uint32) << np.uint32(16))


def unpack(b) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(b)
    return (b & _MASK).astype(np.int32), (b >> np.uint32(16)).astype(np.int32)


def _frame(shape, lo, hi) -> np.ndarray:
    """The voxels of an extended block outside ``[lo, hi)`` by exactly one layer: those
    bordering a cut to a neighbouring block (its frame)."""
    frame = np.zeros(shape, dtype=bool)
    for a, (b, e, n) in enumerate(zip(lo, hi, shape, strict=True)):
        if b > 0:
            frame[(slice(None),) * a + (0,)] = True
        if e < n:
            frame[(slice(None),) * a + (n - 1,)] = True
    return frame


def solve_in_range(v, beta, grid, lo, hi, *, threads=None, **kwargs) -> np.ndarray:
    """The exact solve of ``v`` boxed by grid indices ``lo <= k <= hi``, on the part of the
    grid its undecided voxels span.

    With ``a, b`` the least ``lo`` and greatest ``hi`` of the undecided voxels, a voxel fixed
    below ``a`` is below every level ``a .. b-1`` exactly as one fixed at ``a`` is (and above
    ``b`` as at ``b``), so the level problems ``a .. b-1`` -- the only ones left to decide --
    are those of ``grid[a:b+1]`` with every box clipped to it: ``log2(b-a+1)`` rounds instead
    of ``log2 L``."""
    from napari_tv.solvers.exact import solve_indices

    undecided = lo < hi
    if not undecided.any():
        return lo.copy()
    a, b = int(lo[undecided].min()), int(hi[undecided].max())
    k, _ = solve_indices(v, beta, grid[a : b + 1], bounds=(np.clip(lo, a, b) - a,
                         np.clip(hi, a, b) - a), threads=threads, **kwargs)  # fmt: skip
    return np.where(undecided, k + a, lo)


def squeeze_block(v, b, *, depth, nblocks, beta, grid, kwargs, threads, block_info=None):
    """One block of a pass: the block's new packed bounds (module docstring)."""
    loc = block_info[None]["chunk-location"]
    dep = depths(nblocks, depth, False)
    lo_c, hi_c = owned(loc, nblocks, v.shape, dep, False)
    core = tuple(slice(a, e) for a, e in zip(lo_c, hi_c, strict=True))
    lo, hi = unpack(b)
    if np.array_equal(lo[core], hi[core]):
        return b[core]
    frame = _frame(v.shape, lo_c, hi_c)  # the outer layer of the extension, where there is one
    arr = np.asarray(v)
    below = solve_in_range(arr, beta, grid, lo, np.where(frame, lo, hi), threads=threads,
                           **kwargs)  # fmt: skip
    above = solve_in_range(arr, beta, grid, np.where(frame, hi, lo), hi, threads=threads,
                           **kwargs)  # fmt: skip
    new_lo = np.maximum(lo, below)[core]
    new_hi = np.minimum(hi, above)[core]
    # Exact ties (L1 on integer data, typically) broken differently by floating-point
    # rounding in the two solves can cross the bounds: such voxels keep the bounds they had
    # and are left to the final solve (module docstring, "Ties").
    crossed = new_lo > new_hi
    if crossed.any():
        new_lo = np.where(crossed, lo[core], new_lo)
        new_hi = np.where(crossed, hi[core], new_hi)
    return pack(new_lo, new_hi)


def _stats(b) -> np.ndarray:
    lo, hi = unpack(b)
    w = hi - lo
    return np.array([np.count_nonzero(w), int(w.sum(dtype=np.int64))], dtype=np.int64)


def _width(B, scheduler) -> tuple[int, int]:
    """(undecided voxels, sum of the interval widths) of the packed bounds ``B``."""
    from dask import delayed

    parts = [delayed(_stats)(blk) for blk in B.to_delayed().ravel()]
    totals = np.sum(compute(*parts, scheduler=scheduler), axis=0)
    return int(totals[0]), int(totals[1])


def _aligned(chunks, box) -> tuple:
    """The chunks of ``box`` (slices) cut where ``chunks`` cut the whole array."""
    out = []
    for c, sl in zip(chunks, box, strict=True):
        edges = np.concatenate([[0], np.cumsum(c)])
        cuts = [e for e in edges if sl.start < e < sl.stop]
        bounds = [sl.start, *cuts, sl.stop]
        out.append(tuple(int(b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)))
    return tuple(out)


def _mark(d, b, *, at):
    """``d`` (the pass that decided each voxel, 0: not yet) with the voxels ``b`` decides
    now marked ``at``."""
    lo, hi = unpack(b)
    return np.where((d == 0) & (lo == hi), np.uint8(min(at, 255)), d).astype(np.uint8)


def _levels_of(b, *, grid, out_dtype):
    return grid[unpack(b)[0]].astype(out_dtype)


def _fidelity_sum(u, v, *, fidelity):
    return float(fidelity_pointwise(u, v, fidelity).sum())


def _energy(U, V, beta, fidelity, offsets, w, scheduler) -> float:
    """The graph-TV energy of ``U`` (dask), block by block (pairs across blocks by slicing)."""
    import dask.array as da
    from dask import delayed

    terms = [delayed(_fidelity_sum)(ub, vb, fidelity=fidelity)
             for ub, vb in zip(U.to_delayed().ravel(), V.to_delayed().ravel(), strict=True)]
    for o, wk in zip(offsets, w, strict=True):
        src = tuple(slice(max(-c, 0), n - max(c, 0)) for c, n in zip(o, U.shape, strict=True))
        dst = tuple(slice(max(c, 0), n + min(c, 0)) for c, n in zip(o, U.shape, strict=True))
        diff = U[dst].astype(np.float64) - U[src].astype(np.float64)
        terms.append(beta * float(wk) * da.abs(diff).sum())
    return float(sum(compute(*terms, scheduler=scheduler)))


def _undecided_box(B, scheduler):
    """The bounding box of the undecided voxels, grown by one voxel (the frame), clipped."""
    undecided = B.map_blocks(lambda b: np.not_equal(*unpack(b)), dtype=bool)
    axes = range(B.ndim)
    profiles = compute(*[undecided.any(axis=tuple(a for a in axes if a != ax)) for ax in axes],
                       scheduler=scheduler)  # fmt: skip
    box = []
    for prof, n in zip(profiles, B.shape, strict=True):
        idx = np.flatnonzero(prof)
        box.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, n)))
    return tuple(box)


def _check_args(beta, overlap, max_passes, max_bytes):
    beta = check_real("beta", beta, minimum=0.0)
    for name, value in (("overlap", overlap), ("max_passes", max_passes)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool)
                                  or not isinstance(max_bytes, int | np.integer)
                                  or max_bytes < 0):  # fmt: skip
        raise ValueError(f"max_bytes must be None or an integer >= 0, got {max_bytes!r}")
    return beta


def solve_exact_chunked(
    image,
    beta: float,
    *,
    fidelity: str = "l2",
    connectivity: int = 1,
    weights=None,
    spacing=None,
    levels=None,
    chunks=None,
    overlap: int = DEFAULT_OVERLAP,
    max_passes: int = DEFAULT_MAX_PASSES,
    max_bytes: int | None = None,
    state: str = "auto",
    state_dir=None,
    out=None,
    callback=None,
    scheduler=None,
    record: bool = False,
    in_memory: bool | None = None,
):
    r"""The exact minimiser of :func:`napari_tv.solvers.exact.solve_exact`, block by block.

    Parameters
    ----------
    image : dask array, zarr array or array_like
        1-, 2- or 3-D; never computed whole, never modified.
    beta, fidelity, connectivity, weights, spacing, levels
        As in :func:`~napari_tv.solvers.exact.solve_exact` (the default grid comes from the
        volume's minimum and maximum, computed block by block).  At most 65536 levels.
    chunks : optional
        The blocks (dask chunks); default: the input's chunks merged into blocks of about
        ``EXACT_BLOCK_VOXELS`` voxels.
    overlap : int
        Voxels around each block solved with it and not kept (default 8).
    max_passes : int
        Passes over the blocks before the undecided rest is solved at once (default 6).
    max_bytes : int, optional
        Memory allowed for that rest (default: the memory guard of :mod:`napari_tv._memory`).
        If it needs more, the result is not converged and says how many voxels are left.
    state, state_dir, out, callback, scheduler
        As in :func:`napari_tv.chunked.denoise_tv_chunked` (the state on disk: a new
        directory, inside ``state_dir`` if given, removed when the solve ends if ``out`` is
        given, else at exit; ``extra["state_dir"]``); the callback gets ``method,
        iter, max_iter, fraction, elapsed, undecided, energy (nan), gap (nan)`` after every
        pass and may return True to stop.
    in_memory : bool, optional
        Solve the whole volume at once, in memory (True), or in passes over the blocks
        (False).  Default: in memory when ``chunks`` is not given, the scheduler is not a
        ``dask.distributed`` cluster and the solve fits ``max_bytes`` -- the passes cost two to
        four in-memory solves, so they are for volumes that do not fit.  Certified either way.
    record : bool
        Also return ``extra["decided_at"]``: a uint8 dask array, the pass that decided each
        voxel (``passes + 1``: solved at once with the rest; 0: undecided), 1 byte per voxel
        kept like the bounds.

    Returns
    -------
    ChunkedResult
        ``u`` (dask, the solve's chunks), ``energy`` (of ``u``), ``n_iter`` = ``rounds`` =
        passes, ``converged`` (every voxel decided: ``u`` *is* the in-memory optimum),
        ``gap`` 0.0 (nan if not converged), ``extra = {"levels", "passes", "undecided",
        "remainder_voxels", "remainder_box", "overlap", "note", "in_memory"}``.  Not
        converged: ``u`` is the lower bound and ``extra["undecided"]`` counts the voxels whose
        level is not known.
    """
    import dask.array as da

    from napari_tv._chunks import (
        ChunkedResult,
        _as_dask,
        _fit_chunks,
        _open_out,
        _parallel_tasks,
        solve_chunks,
    )
    from napari_tv._dask_ops import as_float_dask_array
    from napari_tv._rounds import state_mode
    t0 = time.perf_counter()
    if state not in ("auto", "memory", "disk"):
        raise ValueError(f"state must be 'auto', 'memory' or 'disk', got {state!r}")
    x = _as_dask(image, None)
    beta = _check_args(beta, overlap, max_passes, max_bytes)
    check_spacing(spacing, x.ndim)
    w = resolve_weights(x.ndim, connectivity, weights, spacing)
    offsets = neighbour_offsets(x.ndim, connectivity)
    if fidelity not in ("l2", "l1", "poisson"):
        raise ValueError(f"fidelity must be one of ('l2', 'l1', 'poisson'), got {fidelity!r}")
    xf = as_float_dask_array(x)
    dtype = float_dtype(x.dtype)
    vmin, vmax = (float(a) for a in compute(xf.min(), xf.max(), scheduler=scheduler))
    check_fidelity_data(np.array([vmin, vmax]), fidelity)
    grid = level_grid(np.array([vmin, vmax]).astype(x.dtype), levels)
    if len(grid) > MAX_LEVELS:
        raise ValueError(f"levels must have at most {MAX_LEVELS} values for the chunked exact "
                         f"solve, got {len(grid)}")  # fmt: skip
    if fidelity == "poisson" and vmax > 0 and not grid[-1] > 0:
        raise ValueError("levels must include a value > 0 for fidelity='poisson' and an image "
                         f"with positive counts, got levels from {grid[0]:g} to {grid[-1]:g}")
    n_levels = len(grid)
    depth = int(overlap) + 1
    tasks = _parallel_tasks(scheduler)
    if chunks is None:  # as big as the memory lets ``tasks`` solves at once be
        target = EXACT_BLOCK_VOXELS
        avail = available_bytes()
        if avail is not None:
            per_voxel = estimate_bytes("exact", fidelity, (1,) * x.ndim, 8,
                                       connectivity=connectivity)  # fmt: skip
            target = max(4096, min(target, int(HEADROOM * avail) // (2 * tasks * per_voxel)))
        blocks = solve_chunks(x.chunks, target, min_blocks=tasks)
    else:
        blocks = da.core.normalize_chunks(chunks, x.shape, dtype=x.dtype)
    blocks = _fit_chunks(blocks, depth, False)
    V = xf.rechunk(blocks)
    nd = V.ndim
    threads = 1 if tasks > 1 and V.npartitions > 1 else None
    kwargs = {"fidelity": fidelity, "connectivity": connectivity, "weights": weights,
              "spacing": spacing}  # fmt: skip
    # the bounds (4 B), the extended blocks of the data (about twice it), the record (1 B)
    mode = state_mode(state, 1, V.size, 4 + 2 * dtype.itemsize + int(record))
    budget = max_bytes
    if budget is None:
        avail = available_bytes()
        budget = None if avail is None else int(HEADROOM * avail)
    whole = estimate_bytes("exact", fidelity, V.shape, 8, n_levels=n_levels,
                           connectivity=connectivity)  # fmt: skip
    if in_memory is None:  # the chunked passes cost 2-4x a solve: only when it does not fit
        on_cluster = callable(getattr(scheduler, "nthreads", None))
        in_memory = chunks is None and not on_cluster and (
            budget is None or whole <= IN_MEMORY_SHARE * budget)
    root = None
    if mode == "disk":
        if state_dir is None:
            root = temp_dir("exact-")
        else:  # a new directory inside it: two solves never share their files
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="napari-tv-exact-", dir=state_dir))
            atexit.register(shutil.rmtree, root, True)
        turns = [BlockFiles(root / "a", 0), BlockFiles(root / "b", 0)]
    else:
        turns = []
    if in_memory or not n_levels > 1:
        Vx = None
    elif mode == "disk":
        Vx = BlockFiles(root / "v", 0).write(extend(V, depth, False, 0), scheduler)
    else:
        Vx = persist(extend(V, depth, False, 0), scheduler=scheduler)[0]
    meta = np.empty((0,) * nd, np.uint32)

    marks = [BlockFiles(root / "da", 0), BlockFiles(root / "db", 0)] if mode == "disk" else []

    def keep(arr, turn, pair=None):
        pair = turns if pair is None else pair
        if mode == "disk":
            return pair[turn % 2].write(arr, scheduler), pair[turn % 2]
        return persist(arr, scheduler=scheduler)[0], None

    D = da.zeros(V.shape, chunks=V.chunks, dtype=np.uint8) if record else None

    B = da.full(V.shape, pack(0, n_levels - 1), chunks=V.chunks, dtype=np.uint32)
    files = None
    undecided = V.size if n_levels > 1 else 0
    width = undecided * (n_levels - 1)
    history: list[dict] = []
    passes, cancelled = 0, False
    while undecided and passes < max_passes and not in_memory:
        Bx = extend(B, depth, False, 0, files=files)
        new = da.map_blocks(
            squeeze_block, Vx, Bx, chunks=V.chunks, dtype=np.uint32, meta=meta, depth=depth,
            nblocks=V.numblocks, beta=beta, grid=grid, kwargs=kwargs, threads=threads,
        )  # fmt: skip
        B, files = keep(new, passes)
        passes += 1
        if record:
            D = keep(da.map_blocks(_mark, D, B, at=passes, dtype=np.uint8), passes, marks)[0]
        before = undecided
        undecided, new_width = _width(B, scheduler)
        elapsed = time.perf_counter() - t0
        history.append({"round": passes, "undecided": undecided, "elapsed": elapsed})
        if callback is not None and callback({
            "method": "exact", "iter": passes, "max_iter": max_passes, "round": passes,
            "fraction": passes / (max_passes + 1), "elapsed": elapsed, "undecided": undecided,
            "energy": float("nan"), "gap": float("nan"),
        }):  # fmt: skip
            cancelled = True
            break
        if new_width == width or undecided > (1.0 - MIN_PASS_GAIN) * before:
            break  # (nearly) a fixed point: what is left spans more than a block
        width = new_width
    remainder_voxels, box, note = 0, None, ""
    if undecided and not cancelled:
        box = (tuple(slice(0, n) for n in V.shape) if in_memory
               else _undecided_box(B, scheduler))  # fmt: skip
        shape = tuple(s.stop - s.start for s in box)
        need = estimate_bytes("exact", fidelity, shape, 8, n_levels=n_levels,
                              connectivity=connectivity)  # fmt: skip
        if in_memory or budget is None or need <= budget:
            v_r = np.asarray(compute(V[box], scheduler=scheduler)[0])
            lo_r, hi_r = unpack(compute(B[box], scheduler=scheduler)[0])
            k = solve_in_range(v_r, beta, grid, lo_r, hi_r, **kwargs)
            patched = B.copy()  # each block's task gets only its part of the values
            patched[box] = da.from_array(pack(k, k), chunks=_aligned(B.chunks, box))
            B, files = keep(patched, passes)
            remainder_voxels, undecided = undecided, 0
        else:
            note = (f"{undecided} voxels undecided after {passes} passes; solving them at "
                    f"once needs about {human_bytes(need)} (box {shape}), more than the "
                    f"{human_bytes(budget)} allowed: larger chunks or overlap decide more per "
                    "pass")  # fmt: skip
    converged = undecided == 0 and not cancelled
    if record:
        D = keep(da.map_blocks(_mark, D, B, at=passes + 1, dtype=np.uint8), passes + 1,
                 marks)[0]  # fmt: skip
    U = B.map_blocks(_levels_of, grid=grid, out_dtype=dtype, dtype=dtype,
                     meta=np.empty((0,) * nd, dtype))
    out_arr = _open_out(out, V.shape, dtype, V.chunks)
    if out_arr is not None and not cancelled:
        kw = {} if scheduler is None else {"scheduler": scheduler}
        da.store(U.rechunk(out_arr.chunks), out_arr, lock=False, **kw)
        U = da.from_zarr(out_arr, chunks=V.chunks)
    energy = _energy(U, V, beta, fidelity, offsets, w, scheduler)
    if root is not None and (out_arr is not None or cancelled) and not record:
        shutil.rmtree(root, ignore_errors=True)  # nothing reads the state any more
        root = None
    if callback is not None and not cancelled:
        callback({"method": "exact", "iter": passes, "max_iter": max_passes, "round": passes,
                  "fraction": 1.0, "elapsed": time.perf_counter() - t0,
                  "undecided": undecided, "energy": energy, "gap": 0.0 if converged
                  else float("nan")})  # fmt: skip
    return ChunkedResult(
        u=None if (cancelled and out_arr is not None) else U, energy=energy, n_iter=passes,
        converged=converged, gap=0.0 if converged else float("nan"), history=history,
        elapsed=time.perf_counter() - t0, method="exact", cancelled=cancelled,
        extra={"levels": grid, "passes": passes, "undecided": undecided,
               "remainder_voxels": remainder_voxels, "remainder_box": box,
               "overlap": int(overlap), "note": note, "in_memory": bool(in_memory),
               "state_dir": None if root is None else str(root),
               **({"decided_at": D} if record else {})},
        rounds=passes, chunks=V.chunks,
    )  # fmt: skip
