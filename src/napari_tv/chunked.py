r"""TV denoising of volumes larger than memory: chunked on dask, certified by the global gap.

:func:`denoise_tv_chunked` runs the Chambolle–Pock primal-dual iteration of
:mod:`napari_tv.solvers.primal_dual` block by block.  Each **round** extends every block by a
halo of ``n`` voxels from its neighbours (``dask.array.overlap``), runs ``n`` iterations on
the extended block, and keeps the block's own voxels.  One iteration reads only the
neighbours at distance 1, so after ``n`` iterations the kept voxels are *the same numbers*
the whole-volume iteration computes: the chunked iterates are the in-memory iterates, and no
round trades accuracy for locality.  Every few rounds the **global** duality gap is
evaluated as a sum of per-block terms (each block sums the voxels it owns, reading a halo of
one), and the run stops when it is below ``tol``.  The gap bounds the distance of the energy
to the optimum, so the result carries the same certificate as an in-memory solve:
:math:`E(u) - E^\star \le \mathrm{gap}\cdot(E(u) - \sum_s f(v_s, v_s))`.  docs/maths.md
("Chunked solves") compares this with Schwarz-type domain decomposition.

The state between rounds (``u``, the extrapolated ``ū`` and the dual ``p``: ``2 + ndim``
words per voxel) lives in memory (dask ``persist``: the workers' memory on a
``dask.distributed`` cluster) or, for volumes larger than memory, in a zarr store on disk;
``state="auto"`` picks memory when it fits.  Any dask scheduler runs it: the current one
(threads by default), ``scheduler="processes"``, or a ``distributed.Client``.

:func:`lazy_denoise_tv` is what :func:`napari_tv.denoise_tv` returns for a dask array: a lazy
dask array of the input's shape and chunks; computing any part of it runs the whole solve
once (per process), stores the result, and reads the requested chunks from the store.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from typing import Any

import numpy as np

from napari_tv._chunks import (
    ChunkedResult,
    _as_dask,
    _fit_chunks,
    _host_tasks,
    _local_pool_size,
    _open_out,
    _parallel_tasks,
    solve_chunks,
)
from napari_tv._inplace import InPlaceRounds, shares_memory
from napari_tv._rounds import (
    DaskRounds,
    Problem,
    State,
    compute,
    global_gap,
    state_mode,
    temp_dir,
)
from napari_tv._validation import check_real, check_spacing, float_dtype
from napari_tv.fidelity import FIDELITIES, FIDELITY_CODE, fidelity_value

__all__ = [
    "ChunkedResult",
    "DEFAULT_ITERATIONS_PER_ROUND",
    "denoise_tv_chunked",
    "lazy_denoise_tv",
]

#: iterations per round (the halo is as wide): fewer rounds against more halo work; see the
#: table "rounds and halo against chunk size" in docs/benchmarks.md
DEFAULT_ITERATIONS_PER_ROUND = 10
#: the size of the blocks solved with the state on disk when no ``chunks`` are given: the
#: memory of a task is about 17 words per voxel of its extended block (state, pieces, data,
#: scratch), ~340 MB at float32, so two workers stay well below 1.5 GB
DISK_BLOCK_VOXELS = 1 << 22
#: ``beta="auto"`` is chosen on a central crop of at most this many voxels
AUTO_BETA_VOXELS = 1 << 18


# --------------------------------------------------------------------------------------------
# input


def _block_stats(block, fidelity):
    """``(min, max, non-finite count, fidelity floor)`` of one block (float64)."""
    b = np.asarray(block)
    finite = np.isfinite(b)
    n_bad = int(b.size - np.count_nonzero(finite))
    if n_bad:
        return (np.inf, -np.inf, n_bad, 0.0)
    floor = fidelity_value(b, b, fidelity) if fidelity == "poisson" else 0.0
    return (float(b.min()), float(b.max()), 0, float(floor))


# --------------------------------------------------------------------------------------------
# the solve


def _check_method(method, fidelity, tv, boundary, max_num_iter, tol, callback):
    from napari_tv.solvers.methods import check_parameters

    record, params = check_parameters(
        method, fidelity=fidelity, tv=tv, boundary=boundary, max_num_iter=max_num_iter,
        tol=tol, callback=callback, options=None,
    )  # fmt: skip
    if not record.iterative:
        raise ValueError(
            f"method={method!r} has no chunked solve yet: denoise_tv computes it in memory "
            "when it fits; the chunked solve runs the iterative methods (primal_dual)"
        )
    if max_num_iter is None:  # the primal-dual budget whatever the method named
        from napari_tv.solvers.methods import get_method

        params["max_num_iter"] = get_method("primal_dual").max_num_iter
    return params


def _auto_beta(x, fidelity, tv, spacing, scheduler):
    """β chosen by ``suggest_beta`` on a central crop of at most ``AUTO_BETA_VOXELS``."""
    from napari_tv.beta_choice import suggest_beta

    side = max(2, int(AUTO_BETA_VOXELS ** (1.0 / x.ndim)))
    crop = tuple(
        slice(max(0, n // 2 - side // 2), max(0, n // 2 - side // 2) + side) for n in x.shape
    )
    (block,) = compute(x[crop], scheduler=scheduler)
    return float(suggest_beta(block, fidelity=fidelity, tv=tv, spacing=spacing))


def denoise_tv_chunked(
    image,
    beta: float | str,
    *,
    method: str = "primal_dual",
    fidelity: str = "l2",
    tv: str = "isotropic",
    spacing=None,
    boundary: str = "neumann",
    max_num_iter: int | None = None,
    tol: float = 1e-4,
    chunks=None,
    iterations_per_round: int = DEFAULT_ITERATIONS_PER_ROUND,
    state: str = "auto",
    state_dir=None,
    out=None,
    callback=None,
    scheduler=None,
    connectivity: int = 1,
    weights=None,
    levels=None,
) -> ChunkedResult:
    r"""TV-denoise a volume chunk by chunk on dask; certified by the global duality gap.

    Minimises the energy of :func:`napari_tv.denoise_tv` with the primal-dual iteration, run
    in rounds of block solves (see the module docstring), and stops when the relative
    duality gap of the whole volume is below ``tol``.  Memory: the blocks being worked on,
    plus the state (``2 + ndim`` words per voxel) in memory or on disk (``state``).

    Parameters
    ----------
    image : dask array, zarr array or array_like
        1-, 2- or 3-D (a time series: one call per frame).  Integer, bool and float16 data are
        solved in float32, wider integers in float64.  Never computed whole, never modified.
    beta : float or "auto"
        As in :func:`napari_tv.denoise_tv`; ``"auto"`` chooses it with
        :func:`napari_tv.beta_choice.suggest_beta` on a central crop of at most
        ``AUTO_BETA_VOXELS`` voxels (``result.extra["beta"]``).
    method : str
        Any iterative method of :data:`napari_tv.solvers.methods.METHODS`.  The blocks always
        run the primal-dual iteration: it is the one whose iterates do not depend on the
        chunking (Chambolle's and gradient descent's would need a halo per iteration too;
        Bregman's Gauss–Seidel sweeps depend on the order of the voxels).  The energy, and so
        the certificate, is the same for every method; ``result.method`` says
        ``"primal_dual"``.  ``"exact"`` runs the exact solver block by block
        (:func:`napari_tv._exact_chunked.solve_exact_chunked`, certified voxel by voxel): its
        result *is* the in-memory exact minimiser, or says it is not (``converged`` False).
    fidelity, tv, spacing, boundary, tol
        As in :func:`napari_tv.denoise_tv`.
    max_num_iter : int, optional
        Iteration cap (default: primal-dual's budget).
    chunks : optional
        The blocks to solve on (dask chunks).  Default: the input's chunks merged into
        blocks as large as the state's place allows (:func:`solve_chunks`): one per
        parallel task when the state is in memory, ``DISK_BLOCK_VOXELS`` voxels when it is
        on disk; bigger blocks spend less of the work on halos.  Chunks shorter than the
        halo are merged with their neighbour.  ``result.u`` has these chunks; ``out`` and
        :func:`napari_tv.denoise_tv`'s lazy array keep the input's.
    iterations_per_round : int
        Iterations per round, and the halo's width (default 10).
    state : {"auto", "memory", "disk"}
        Where the state lives between rounds: ``"memory"`` (dask ``persist``; the cluster's
        memory with ``dask.distributed``), ``"disk"`` (two uncompressed zarr arrays in a
        temporary directory), ``"auto"``: memory when the state takes at most half of the
        available memory (:func:`napari_tv._memory.available_bytes`).
    state_dir : path, optional
        Where ``state="disk"`` puts its files (a new directory inside it; default: the
        system's temporary directory).  It must have room for ``2 (2 + ndim) + 2`` words per
        voxel, and on a ``dask.distributed`` cluster be seen by every worker.  The files are
        removed when the solve ends, unless ``result.u`` reads them (no ``out``): then at exit.
    out : zarr array or path, optional
        Where to write the result, chunk by chunk (a path: a new zarr array created there,
        chunked like the solve).  ``result.u`` then reads from it (None after a cancel:
        nothing is written).  Default: ``result.u`` is the final state (in memory, or in
        ``state_dir``, removed at exit).
    callback : callable, optional
        ``callback(info) -> bool`` after every round, with ``method, iter, max_iter, energy,
        gap, elapsed, fraction, round`` (``energy`` and ``gap`` from the last evaluation);
        True stops (``result.cancelled``).
    scheduler : optional
        The dask scheduler for every computation: ``"threads"``, ``"processes"``,
        ``"synchronous"``, a ``distributed.Client``; default: dask's current one.
    connectivity, weights, levels
        The graph TV and the grid of levels of ``method="exact"`` (as in
        :func:`napari_tv.denoise_tv`); only for that method.

    Returns
    -------
    ChunkedResult
        ``u`` (a dask array of the input's shape, chunked like the solve), ``energy``,
        ``gap``, ``n_iter``, ``rounds``, ``converged``, ``history``, ``elapsed`` and
        ``extra`` (``"iterations_per_round"``, ``"state"``, ``"beta"``).

    Raises
    ------
    ValueError, TypeError
        As :func:`napari_tv.denoise_tv`; NaN/inf and negative Poisson data are found by the
        first pass over the data, before any iteration.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> v = np.kron([[0.0, 1.0], [1.0, 0.0]], np.ones((16, 16))) + 0.1 * rng.random((32, 32))
    >>> res = denoise_tv_chunked(da.from_array(v, chunks=16), 0.2)
    >>> res.converged, res.gap < 1e-4, res.u.chunks
    (True, True, ((16, 16), (16, 16)))
    """
    if method == "exact":
        _check_exact_boundary(boundary)
        return _exact_chunked(image, beta, fidelity=fidelity, spacing=spacing, chunks=chunks,
                              state=state, state_dir=state_dir, out=out, callback=callback,
                              scheduler=scheduler, connectivity=connectivity, weights=weights,
                              levels=levels)  # fmt: skip
    if connectivity != 1 or weights is not None or levels is not None:
        raise ValueError(
            f"connectivity, weights and levels belong to method='exact'; method={method!r} "
            "minimises the TV of `tv`"
        )
    args = dict(method=method, fidelity=fidelity, tv=tv, spacing=spacing, boundary=boundary,
                max_num_iter=max_num_iter, tol=tol, chunks=chunks,
                iterations_per_round=iterations_per_round, state=state, state_dir=state_dir,
                out=out, callback=callback)  # fmt: skip
    with _process_pool(scheduler):
        return _run_chunked(image, beta, scheduler=scheduler, **args)


def _check_exact_boundary(boundary) -> None:
    if boundary != "neumann":  # as the in-memory solver says it
        raise ValueError(f"method='exact' does not support boundary={boundary!r}; it supports "
                         "boundary 'neumann' only")  # fmt: skip


def _exact_chunked(image, beta, *, scheduler, **kwargs) -> ChunkedResult:
    """``method="exact"``: :func:`~napari_tv._exact_chunked.solve_exact_chunked`, with
    ``beta="auto"`` chosen as for the iterative methods (anisotropic TV)."""
    from napari_tv._exact_chunked import solve_exact_chunked

    if isinstance(beta, str):
        if beta != "auto":
            raise ValueError(f"beta must be a number >= 0 or 'auto', got {beta!r}")
        x = _as_dask(image, None)
        beta = _auto_beta(x.astype(float_dtype(x.dtype)), kwargs["fidelity"], "anisotropic",
                          kwargs["spacing"], scheduler)  # fmt: skip
    with _process_pool(scheduler):
        res = solve_exact_chunked(image, beta, scheduler=scheduler, **kwargs)
    res.extra["beta"] = beta
    return res


@contextlib.contextmanager
def _process_pool(scheduler):
    """For dask's ``"processes"`` scheduler: one pool of worker processes for the whole solve
    (dask otherwise starts a pool per computation, i.e. per round)."""
    import dask

    wanted = scheduler if scheduler is not None else dask.config.get("scheduler", None)
    if wanted not in ("processes", "multiprocessing") or dask.config.get("pool", None):
        yield
        return
    import concurrent.futures
    import multiprocessing

    from dask.system import CPU_COUNT

    ctx = multiprocessing.get_context(dask.config.get("multiprocessing.context", "spawn"))
    with concurrent.futures.ProcessPoolExecutor(CPU_COUNT, mp_context=ctx) as pool:
        with dask.config.set(pool=pool):
            yield


def _run_chunked(image, beta, *, method, fidelity, tv, spacing, boundary, max_num_iter, tol,
                 chunks, iterations_per_round, state, state_dir, out, callback,
                 scheduler):  # fmt: skip
    import dask.array as da

    from napari_tv._compile import ready
    from napari_tv.solvers._monitor import Monitor
    from napari_tv.solvers._stencils import dual_norm_bound, inv_steps
    from napari_tv.solvers.primal_dual import GAMMA_L2, TAU_SCALE

    auto = isinstance(beta, str)
    if auto and beta != "auto":
        raise ValueError(f"beta must be a number >= 0 or 'auto', got {beta!r}")
    if not auto:
        beta = check_real("beta", beta, minimum=0.0)
    params = _check_method(method, fidelity, tv, boundary, max_num_iter, tol, callback)
    max_num_iter, tol = params["max_num_iter"], params["tol"]
    if isinstance(iterations_per_round, bool) or not isinstance(iterations_per_round, int):
        raise TypeError(
            f"iterations_per_round must be an int, got {type(iterations_per_round).__name__}"
        )
    if iterations_per_round < 1:
        raise ValueError(f"iterations_per_round must be >= 1, got {iterations_per_round}")
    if state not in ("auto", "memory", "disk"):
        raise ValueError(f"state must be 'auto', 'memory' or 'disk', got {state!r}")
    x = _as_dask(image, chunks)
    spacing = check_spacing(spacing, x.ndim)
    dtype = float_dtype(x.dtype)
    periodic = boundary == "periodic"
    # the halo is K + 1 wide (the gap reads one layer more); a periodic one wraps around
    # and must fit in the volume
    K = iterations_per_round
    if periodic:
        if min(x.shape) < 2:
            raise ValueError(
                f"boundary='periodic' on a dask image needs every axis at least 2 long, got "
                f"shape {x.shape}"
            )
        K = min(K, min(x.shape) - 1)
    storage = x.chunks  # the input's: those of ``out``
    # the state (2 + nd words) and the data's extended blocks (about 2 more)
    mode = state_mode(state, 2 + x.ndim + 2, x.size, dtype.itemsize)
    if chunks is None:  # blocks as big as the memory lets them be, one per worker at least
        n_tasks = _parallel_tasks(scheduler)
        target = -(-x.size // n_tasks) if mode == "memory" else DISK_BLOCK_VOXELS
        x = x.rechunk(solve_chunks(x.chunks, target, n_tasks))
    x = x.astype(dtype).rechunk(_fit_chunks(x.chunks, K + 1, periodic))
    monitor = Monitor("primal_dual", max_num_iter, tol, callback, progress="gap")

    # one pass over the data: range, finiteness, Poisson's sign and floor
    from dask import delayed

    stats = compute(*[delayed(_block_stats)(b, fidelity) for b in x.to_delayed().ravel()],
                     scheduler=scheduler)  # fmt: skip
    n_bad = sum(s[2] for s in stats)
    if n_bad:
        raise ValueError(f"image must be finite, got {n_bad} NaN or inf value(s)")
    lo, hi = min(s[0] for s in stats), max(s[1] for s in stats)
    if fidelity == "poisson" and lo < 0:
        raise ValueError(f"fidelity='poisson' needs image >= 0, got a minimum of {lo!r}")
    floor = float(sum(s[3] for s in stats))
    if auto:
        beta = _auto_beta(x, fidelity, tv, spacing, scheduler)

    out_arr = _open_out(out, x.shape, dtype, storage)
    nd = x.ndim
    extra: dict[str, Any] = {"iterations_per_round": K, "beta": beta}
    store: State | None = None

    def finish(u, gap, n_iter, rounds, energy):
        if out_arr is not None:
            if monitor.cancelled:
                u = None  # nothing written
            else:
                kw = {} if scheduler is None else {"scheduler": scheduler}
                da.store(u.rechunk(out_arr.chunks), out_arr, lock=False, **kw)
                u = da.from_zarr(out_arr, chunks=x.chunks)
            if store is not None:
                store.close()  # the state is no longer needed: free the disk now
        return ChunkedResult(
            u=u, energy=energy, n_iter=n_iter, converged=monitor.converged, gap=gap,
            history=monitor.history, elapsed=monitor.elapsed(), method="primal_dual",
            cancelled=monitor.cancelled, extra=extra, rounds=rounds, chunks=x.chunks,
        )  # fmt: skip

    if beta == 0 or hi == lo:  # u = v: the data itself, or a constant (TV 0, fidelity 0)
        monitor.converged = True
        energy = floor if fidelity == "poisson" else 0.0
        return finish(x, 0.0, 0, 0, energy)

    ih = inv_steps(spacing, nd)
    lip = beta * math.sqrt(dual_norm_bound(spacing, nd))
    prob = Problem(
        ndim=nd, beta=float(beta), code=FIDELITY_CODE[fidelity], isotropic=tv == "isotropic",
        periodic=periodic, ih=tuple(float(h) for h in ih),
        gamma=GAMMA_L2 if fidelity == "l2" else 0.0, numblocks=x.numblocks, chunks=x.chunks,
        fast=ready("primal_dual", dtype) and ready("gap", dtype), dtype=dtype,
        local_tasks=_local_pool_size(scheduler), host_tasks=_host_tasks(scheduler),
    )  # fmt: skip
    tau = TAU_SCALE[fidelity] * (hi - lo) / lip
    sigma = 1.0 / (tau * lip * lip)
    extra["state"] = mode
    store = State(mode, scheduler, state_dir)
    try:
        if mode == "memory" and shares_memory(scheduler):
            engine = InPlaceRounds(x, prob, K, scheduler)  # the state in place: fastest
        else:
            zeros = da.zeros((nd,) + x.shape, dtype=dtype, chunks=((nd,),) + x.chunks)
            S0 = da.concatenate([x[None], x[None], zeros], axis=0).rechunk({0: 2 + nd})
            engine = DaskRounds(store.keep(S0), x, store, prob, K)
        extra["rounds"] = type(engine).__name__
        g, n_iter, rounds = _iterate(engine, prob, monitor, K, tau, sigma, floor)
    except BaseException:  # an error, Ctrl-C: no state left behind
        store.close()
        raise
    if not monitor.converged and not monitor.cancelled and tol > 0:
        extra["note"] = f"not converged: gap {g.rel:.3g} > tol {tol:g} after {n_iter} iterations"
    return finish(engine.u(x.chunks), float(g.rel), n_iter, rounds, g.primal)


def _iterate(engine, prob, monitor, K, tau, sigma, floor):
    """Rounds until the monitor stops them; ``(gap, iterations, rounds)``."""
    from napari_tv.solvers._blockwise import schedule

    n_iter = rounds = 0
    g = None
    while n_iter < monitor.max_iter:
        run = monitor.next_run(n_iter)
        done = 0
        sums = None
        while done < run:
            n = min(K, run - done)
            last = done + n == run and monitor.wants_gap(n_iter + run)
            sums = engine.round(n, tau, sigma, last)
            tau, sigma = schedule(tau, sigma, prob.gamma, n)
            done += n
            rounds += 1
            if monitor.callback is not None and done < run and g is not None:
                if monitor.callback(_round_info(monitor, n_iter + done, g, rounds)):
                    monitor.cancelled = True
                    break
        n_iter += done
        if monitor.cancelled:
            break
        if monitor.wants_gap(n_iter):
            g = global_gap(prob, floor, sums, engine.terms)
            if monitor.check(n_iter, g, extra={"round": rounds}):
                break
    if g is None:
        g = global_gap(prob, floor, None, engine.terms)
    return g, n_iter, rounds


def _round_info(monitor, n_iter, g, rounds) -> dict:
    return {
        "method": "primal_dual",
        "iter": int(n_iter),
        "max_iter": monitor.max_iter,
        "energy": g.primal,
        "gap": g.rel,
        "elapsed": monitor.elapsed(),
        "fraction": monitor.fraction(n_iter, g.rel),
        "round": rounds,
    }


# --------------------------------------------------------------------------------------------
# the lazy array denoise_tv returns for dask input


class _Opaque:
    """Holds an object dask must not look into (a dask array computed by the task itself)."""

    def __init__(self, value):
        self.value = value


_SOLVED: dict[str, str] = {}
_SOLVED_LOCK = threading.Lock()


def _solve_root(spec: _Opaque, token: str) -> str:
    """Run the chunked solve once per process for ``token``; the path of the stored result."""
    with _SOLVED_LOCK:
        if token in _SOLVED:
            return _SOLVED[token]
        image, beta, kwargs = spec.value
        path = str(temp_dir("result-") / "u.zarr")
        in_worker = False
        try:
            from distributed import get_worker

            get_worker()
            in_worker = True
        except (ImportError, ValueError):
            pass
        if in_worker:  # on a dask.distributed worker: run the rounds on the cluster
            from distributed import worker_client

            with worker_client() as client:
                res = denoise_tv_chunked(image, beta, out=path, scheduler=client, **kwargs)
        else:
            res = denoise_tv_chunked(image, beta, out=path, scheduler="threads", **kwargs)
        if kwargs.get("method") == "exact" and not res.converged:
            raise RuntimeError(
                f"napari-tv: the chunked exact solve is not certified: {res.extra['note']} "
                "(napari_tv.denoise_tv_chunked returns the bounds it reached)"
            )
        if not (res.converged or kwargs.get("tol", 1e-4) == 0):
            warnings.warn(
                f"napari-tv: chunked solve {res.extra.get('note', 'not converged')}",
                RuntimeWarning, stacklevel=2,
            )  # fmt: skip
        _SOLVED[token] = path
        return path


def _read_block(path: str, index: tuple) -> np.ndarray:
    import zarr

    return zarr.open_array(path, mode="r")[index]


def lazy_denoise_tv(image, beta, **kwargs):
    """The lazy dask array :func:`napari_tv.denoise_tv` returns for a dask ``image``: same
    shape and chunks, nothing computed at the call.  Computing it runs
    :func:`denoise_tv_chunked` once per process (the result is stored in a temporary zarr
    array and read chunk by chunk; a second compute reads it again), warning if the solve
    stopped before ``tol``; ``method="exact"`` raises if its solve is not certified."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    x = image
    dtype = float_dtype(x.dtype)
    _as_dask(x, None)  # shape and dtype errors now, at the call
    check_spacing(kwargs.get("spacing"), x.ndim)
    if not isinstance(beta, str):
        check_real("beta", beta, minimum=0.0)
    if kwargs.get("fidelity", "l2") not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {kwargs['fidelity']!r}")
    if kwargs.get("method") == "exact":
        from napari_tv.operators import resolve_weights

        resolve_weights(x.ndim, kwargs.get("connectivity", 1), kwargs.get("weights"),
                        kwargs.get("spacing"))  # fmt: skip
    else:
        _check_method(
            kwargs.get("method", "primal_dual"), kwargs.get("fidelity", "l2"),
            kwargs.get("tv", "isotropic"), kwargs.get("boundary", "neumann"),
            kwargs.get("max_num_iter"), kwargs.get("tol", 1e-4), kwargs.get("callback"),
        )  # fmt: skip
    token = tokenize(x.name, beta, sorted((k, repr(v)) for k, v in kwargs.items()))
    root = "napari-tv-solve-" + token
    name = "napari-tv-denoise-" + token
    dsk: dict = {root: (_solve_root, _Opaque((x, beta, kwargs)), token)}
    starts = [np.cumsum((0,) + c) for c in x.chunks]
    for idx in np.ndindex(*x.numblocks):
        index = tuple(
            slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, idx, strict=True)
        )
        dsk[(name,) + idx] = (_read_block, root, index)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    return da.Array(graph, name, chunks=x.chunks, dtype=dtype, meta=np.empty((0,) * x.ndim, dtype))


def denoise_dask(image, beta, *, method, return_info, channel_axis, init, options, beta_rule,
                 connectivity, weights, levels, **kwargs):  # fmt: skip
    """:func:`napari_tv.denoise_tv` for a dask ``image`` (see its "dask arrays" note)."""
    import dask.array as da

    if init is not None:
        raise ValueError("init is not supported for a dask image (the chunked solve starts "
                         "from the data)")  # fmt: skip
    if beta_rule is not None:
        raise ValueError("beta_rule is not supported for a dask image (beta='auto' uses the "
                         "default rule on a central crop)")  # fmt: skip
    if method == "exact":
        if options:
            raise ValueError(f"options are not supported by the chunked exact solve, got "
                             f"{options!r}")  # fmt: skip
        _check_exact_boundary(kwargs["boundary"])
        kwargs.update(connectivity=connectivity, weights=weights, levels=levels)
        kwargs.pop("tol"), kwargs.pop("max_num_iter"), kwargs.pop("tv"), kwargs.pop("boundary")
    elif options:
        raise ValueError(
            f"options are not supported for a dask image (the chunked solve runs the "
            f"primal-dual iteration), got {options!r}"
        )
    kwargs["method"] = method
    if channel_axis is not None:
        if not isinstance(channel_axis, int) or not -image.ndim <= channel_axis < image.ndim:
            raise ValueError(f"channel_axis must be an axis of the image, got {channel_axis!r}")
        axis = channel_axis % image.ndim
        if return_info:
            raise ValueError("return_info with channel_axis is not supported for a dask image: "
                             "call denoise_tv_chunked per channel")  # fmt: skip
        frames = [
            denoise_dask_one(image[(slice(None),) * axis + (c,)], beta, kwargs, False)
            for c in range(image.shape[axis])
        ]
        return da.stack(frames, axis=axis)
    return denoise_dask_one(image, beta, kwargs, return_info)


def denoise_dask_one(image, beta, kwargs, return_info):
    if return_info:
        kw = {k: v for k, v in kwargs.items() if k != "channel_axis"}
        res = denoise_tv_chunked(image, beta, **kw)
        return res.u.rechunk(image.chunks), res
    return lazy_denoise_tv(image, beta, **kwargs)


def warm(dtype) -> None:
    """Run the chunked solve (the block kernels of :mod:`napari_tv.solvers._blockwise`, every
    fidelity) on a tiny volume of ``dtype`` in two blocks (``napari_tv._compile``)."""
    import dask.array as da

    v = np.linspace(0.5, 3.0, 6 * 5 * 8).reshape(6, 5, 8).astype(dtype)
    for fidelity in FIDELITIES:
        denoise_tv_chunked(da.from_array(v, chunks=(6, 5, 4)), 0.5, fidelity=fidelity,
                           max_num_iter=6, iterations_per_round=3, scheduler="synchronous")
