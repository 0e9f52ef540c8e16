"""Qt-free β-sweep engine: tune the TV weight β live, warm-started, latest request wins.

What a microscopist does with a β slider, as a plain library (no Qt, no napari imports):

API at a glance (what the widgets use)
--------------------------------------
::

    sweep = BetaSweep(image, tol=1e-3)      # primal_dual; image validated once, never modified
    res = sweep.solve(beta)                  # TVResult; warm-started from the nearest cached β
                                             # (within a factor warm_ratio=1.25), cached (LRU
                                             # keyed by β): same β -> same object
    res = sweep.solve(beta, time_budget=0.08)  # anytime: stops after 80 ms (cancelled=True);
                                             # the partial iterate warm-starts the next call
    res = sweep.preview_slice(beta, index, axis=0)   # one 2D slice of a 3D volume (live preview)
    res.extra["beta"]                        # the β a result was computed for

    runner = LatestWins(sweep.solve, on_result, on_error=None)  # one daemon worker thread
    token = runner.submit(beta)              # any thread, never blocks on a solve; newer requests
                                             # stop the running solve early through its callback
    # on_result(result) runs on the worker thread, only for the newest request's result
    runner.wait(timeout); runner.close()
    # progressive preview: a first result within ~80 ms, then refined ones until converged
    runner = LatestWins(partial(sweep.solve, time_budget=0.08), on_result, refine=100)

    # with napari's thread_worker instead of LatestWins, the same staleness check:
    gen = Generation(); token = gen.next()
    worker = thread_worker(sweep.solve)(beta, callback=gen.stop_callback(token))
    worker.returned.connect(lambda r: None if gen.is_stale(token) else show(r))

    stack, results = beta_stack(image, betas, **kw)   # (K, *shape), warm-started in β order
    curve = l_curve(image, betas, **kw)      # {"beta", "fidelity", "tv", "energy", ...}

All solves go through :func:`napari_tv.solvers.api.denoise_tv` (``solver=`` injects another
callable with the same signature, e.g. for tests).

Everything above is importable from here (and from :mod:`napari_tv`). The scheduler
(``Generation``, ``LatestWins``) lives in :mod:`napari_tv._scheduling`; this module re-exports
it.  The choice of β from the data (``estimate_noise_sigma``, ``suggest_beta``) is
:mod:`napari_tv.beta_choice`, which builds on this engine.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from napari_tv._scheduling import Generation, LatestWins, _is_partial
from napari_tv._validation import as_float_array, check_choice, check_int, check_real, check_spacing
from napari_tv.fidelity import FIDELITIES, check_fidelity_data, fidelity_value
from napari_tv.operators import graph_tv, level_grid, tv_norm
from napari_tv.solvers._result import TVResult
from napari_tv.solvers.api import DEFAULT_METHOD, METHODS, SUPPORTED, denoise_tv

__all__ = [
    "BetaSweep",
    "Generation",
    "LatestWins",
    "beta_stack",
    "l_curve",
]

Callback = Callable[[dict], Any]

#: how many slices :meth:`BetaSweep.preview_slice` keeps a warm-start cache for
MAX_PREVIEW_SLICES = 8
#: images from this many voxels on start a solve with no near warm start from a coarse solve
#: (``denoise_tv(init="coarse")``): a 64×256×256 volume released after a drag took 0.8-1.0 s
#: instead of 1.3-2.7 s at 12-25 % smoothing (``solvers/_multilevel.py``)
COARSE_START_SIZE = 1 << 20


def _result_nbytes(result: TVResult) -> int:
    """Memory a cached result keeps alive: a view (Chambolle's dual is one, into the storage it
    shares with its halo copies, the image copy and the w buffers) holds all of its base
    array."""
    arrays = [result.u, *(v for v in result.extra.values() if isinstance(v, np.ndarray))]
    owners = {id(o): o for o in (a.base if isinstance(a.base, np.ndarray) else a for a in arrays)}
    return int(sum(o.nbytes for o in owners.values()))


class _ResultCache:
    """LRU of TVResults keyed by β, bounded in entries and bytes (the newest is always kept).

    Partial results (cancelled before converging) are kept as warm starts only: ``get``
    ignores them, ``nearest`` considers them, and a final result replaces the partial one.
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size, self.max_bytes = size, max_bytes
        self._items: OrderedDict[float, TVResult] = OrderedDict()
        self._nbytes: dict[float, int] = {}

    def get(self, beta: float) -> TVResult | None:
        result = self._items.get(beta)
        if result is None or _is_partial(result):
            return None
        self._items.move_to_end(beta)
        return result

    def nearest(self, beta: float, max_ratio: float = math.inf) -> TVResult | None:
        """The warm start for ``beta``: the partial result at ``beta`` itself if any (to
        continue it), else the result whose β is nearest in log distance (β = 0 counts as
        tiny; final results first, then partial ones) if within a factor ``max_ratio``."""
        here = self._items.get(beta)
        if here is not None:
            return here
        logb = math.log(max(beta, 1e-300))

        def dist(b: float) -> float:
            return abs(math.log(max(b, 1e-300)) - logb)

        limit = math.log(max_ratio)
        for partial in (False, True):
            keys = [b for b, r in self._items.items() if _is_partial(r) == partial]
            keys = [b for b in keys if dist(b) <= limit]
            if keys:
                return self._items[min(keys, key=dist)]
        return None

    def put(self, beta: float, result: TVResult) -> None:
        old = self._items.get(beta)
        if _is_partial(result) and old is not None and not _is_partial(old):
            return
        self._items[beta] = result
        self._items.move_to_end(beta)
        self._nbytes[beta] = _result_nbytes(result)
        while len(self._items) > 1 and (
            len(self._items) > self.size or sum(self._nbytes.values()) > self.max_bytes
        ):
            oldest, _ = self._items.popitem(last=False)
            del self._nbytes[oldest]

    def betas(self) -> list[float]:
        """The β of the final (not partial) results, ascending."""
        return sorted(b for b, r in self._items.items() if not _is_partial(r))


def _warm_start(result: TVResult, beta: float) -> TVResult:
    """``result`` as ``init`` for a solve at ``beta``: primal and dual always; the step-size
    state a method resumes from (primal-dual's ``extra["tau"]``) only when continuing the
    same β, since a step schedule accelerated for another β slows the new solve down."""
    if result.extra.get("beta") == beta or "tau" not in result.extra:
        return result
    extra = {k: v for k, v in result.extra.items() if k != "tau"}
    return dataclasses.replace(result, extra=extra)


def _with_time_budget(callback: Callback | None, time_budget: float | None) -> Callback | None:
    """``callback`` that also returns True once ``time_budget`` seconds have passed."""
    if time_budget is None:
        return callback
    budget = check_real("time_budget", time_budget, minimum=0.0)
    start = time.perf_counter()

    def budgeted(info: dict) -> bool:
        stop = bool(callback(info)) if callback is not None else False
        return stop or time.perf_counter() - start > budget

    return budgeted


class BetaSweep:
    """Repeated TV solves of one image at many β, warm-started and cached.

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D
        The data ``v``; validated once (see :func:`napari_tv._validation.as_float_array`) and
        never modified.
    method, fidelity, tv, spacing, boundary, connectivity, levels, max_num_iter, tol
        Passed to :func:`napari_tv.solvers.api.denoise_tv` on every solve. ``connectivity`` and
        ``levels`` are used by ``method="exact"`` only; its level grid is resolved once from the
        raw image (so an integer image keeps its integer grid) and shared by every solve,
        including the slice previews. ``tol`` defaults to ``1e-3``, loose enough for a live
        preview. For live previews the accelerated ``method="primal_dual"`` needs far fewer
        iterations than ``"chambolle"`` (``benchmarks/bench_sweep.py``: ~30 per 3.5 % step
        of β on a 512² image, median latency ~40 ms against ~220 ms).
    cache_size : int, default 16
        Results kept per cache (the whole image, and each previewed slice).
    cache_bytes : int, default 512 MiB
        Memory bound of each cache (``u`` plus the dual variables kept for warm starts); the
        least recently used results are dropped first, the newest is always kept.
    warm_ratio : float, default 1.25
        Warm-start only from a β within this factor of the requested one; farther solves
        start cold (a distant warm start can cost more iterations than none, notably for the
        accelerated ``"primal_dual"``), from a coarse solve when the image has at least
        ``COARSE_START_SIZE`` voxels (``denoise_tv(init="coarse")``).
    solver : callable, optional
        A replacement for ``denoise_tv`` with the same signature (tests, instrumentation).

    Notes
    -----
    A solve at β starts from the cached result whose β is nearest in :math:`|\\log\\beta -
    \\log\\beta'|`, if within ``warm_ratio`` (primal and dual, via
    ``denoise_tv(init=result)``; a step-size schedule such as primal-dual's ``extra["tau"]``
    only when continuing the same β), since the TV minimiser :math:`u_\\beta` depends
    continuously on β. ``method="exact"`` is not warm-started (its
    dichotomy has no iterate to reuse) but is cached. Cancelled solves (callback or
    ``time_budget``) are returned and kept as warm starts, never as answers: an interactive
    preview can call ``solve(beta, time_budget=0.1)`` repeatedly and see the iterate
    converge. The methods are thread-safe: the caches are guarded by a lock and the solves run
    outside it. Results are shared with the cache: treat them as read-only.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = np.kron(np.eye(2), np.ones((8, 8))) + 0.1 * rng.standard_normal((16, 16))
    >>> sweep = BetaSweep(image)
    >>> res = sweep.solve(0.2)
    >>> res.u.shape, sweep.solve(0.2) is res
    ((16, 16), True)
    """

    def __init__(
        self,
        image: ArrayLike,
        *,
        method: str = DEFAULT_METHOD,
        fidelity: str = "l2",
        tv: str = "isotropic",
        spacing: float | Sequence[float] | None = None,
        boundary: str = "neumann",
        connectivity: int = 1,
        levels: int | Sequence[float] | None = None,
        max_num_iter: int | None = None,
        tol: float = 1e-3,
        cache_size: int = 16,
        cache_bytes: int = 512 * 2**20,
        warm_ratio: float = 1.25,
        solver: Callable[..., Any] | None = None,
    ) -> None:
        raw = np.asarray(image)
        self.image = as_float_array(raw, "image")
        self.method = check_choice("method", method, METHODS)
        self.fidelity = check_choice("fidelity", fidelity, FIDELITIES)
        if fidelity not in SUPPORTED[method]["fidelity"]:
            allowed = ", ".join(map(repr, SUPPORTED[method]["fidelity"]))
            raise ValueError(f"method={method!r} supports fidelity {allowed}; got {fidelity!r}")
        check_fidelity_data(self.image, fidelity)
        self.tv = check_choice("tv", tv, ("isotropic", "anisotropic"))
        self.boundary = check_choice("boundary", boundary, ("neumann", "periodic"))
        self.spacing = check_spacing(spacing, self.image.ndim)
        self.connectivity = check_int("connectivity", connectivity, minimum=1)
        self.max_num_iter = (
            None if max_num_iter is None else check_int("max_num_iter", max_num_iter, minimum=1)
        )
        self.tol = check_real("tol", tol, minimum=0.0, strict=True)
        self.cache_size = check_int("cache_size", cache_size, minimum=1)
        self.cache_bytes = check_int("cache_bytes", cache_bytes, minimum=0)
        self.warm_ratio = check_real("warm_ratio", warm_ratio, minimum=1.0)
        self._solver = denoise_tv if solver is None else solver
        self.levels = None
        if method == "exact":
            self.levels = level_grid(raw, levels)
        self._lock = threading.RLock()
        self._cache = _ResultCache(self.cache_size, self.cache_bytes)
        self._slices: OrderedDict[tuple[int, int], tuple[np.ndarray, _ResultCache]] = OrderedDict()

    # -- solving -------------------------------------------------------------------------
    def _solve_kwargs(self, spacing: tuple[float, ...]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "method": self.method,
            "fidelity": self.fidelity,
            "tv": self.tv,
            "spacing": spacing,
            "boundary": self.boundary,
            "max_num_iter": self.max_num_iter,
            "tol": self.tol,
            "return_info": True,
        }
        if self.method == "exact":
            kwargs.update(connectivity=self.connectivity, levels=self.levels)
        return kwargs

    def _solve_cached(
        self,
        image: np.ndarray,
        beta: float,
        cache: _ResultCache,
        spacing: tuple[float, ...],
        callback: Callback | None,
        time_budget: float | None,
    ) -> TVResult:
        beta = check_real("beta", beta, minimum=0.0)
        if self.method != "exact":  # a stopped dichotomy has nothing to continue from
            callback = _with_time_budget(callback, time_budget)
        with self._lock:
            hit = cache.get(beta)
            if hit is not None:
                return hit
            init = None if self.method == "exact" else cache.nearest(beta, self.warm_ratio)
        kwargs = self._solve_kwargs(spacing)
        if init is not None:
            kwargs["init"] = _warm_start(init, beta)
        elif self.method != "exact" and image.size >= COARSE_START_SIZE:
            kwargs["init"] = "coarse"  # nothing near to start from: a coarse-to-fine start
        _, result = self._solver(image, beta, callback=callback, **kwargs)
        result.extra["beta"] = beta
        if not (_is_partial(result) and self.method == "exact"):
            with self._lock:
                cache.put(beta, result)
        return result

    def solve(
        self, beta: float, callback: Callback | None = None, *, time_budget: float | None = None
    ) -> TVResult:
        """The TV solution at ``beta`` (cached; warm-started from the nearest cached β).

        ``callback(info) -> bool`` is passed to the solver (progress; True stops it).
        ``time_budget`` (seconds) stops the solve once exceeded (checked at the solver's
        reports). A stopped solve returns its current iterate with ``cancelled=True``; unless
        it had met ``tol`` (``converged=True``) it is kept as a warm start only, so a later
        call at the same β continues from it. ``method="exact"`` ignores ``time_budget``
        (a stopped dichotomy leaves nothing to continue from).
        """
        return self._solve_cached(
            self.image, beta, self._cache, self.spacing, callback, time_budget
        )

    def preview_slice(
        self,
        beta: float,
        index: int,
        axis: int = 0,
        callback: Callback | None = None,
        *,
        time_budget: float | None = None,
    ) -> TVResult:
        """The 2D TV solution of slice ``index`` along ``axis`` of a 3D image at ``beta``.

        Each slice has its own warm-start cache (the last ``MAX_PREVIEW_SLICES`` slices are
        kept). The slice's spacing is the volume's without ``axis``. The 2D solution is a
        preview: it differs from the same slice of the 3D solution. ``callback`` and
        ``time_budget`` as in :meth:`solve`.
        """
        if self.image.ndim != 3:
            raise ValueError(
                f"preview_slice needs a 3D image, got {self.image.ndim}D; use solve(beta)"
            )
        axis = check_int("axis", axis)
        if not -3 <= axis < 3:
            raise ValueError(f"axis must be in [-3, 2], got {axis}")
        axis %= 3
        n = self.image.shape[axis]
        index = check_int("index", index)
        if not -n <= index < n:
            raise ValueError(f"index must be in [{-n}, {n - 1}] for axis {axis}, got {index}")
        index %= n
        with self._lock:
            entry = self._slices.get((axis, index))
            if entry is None:
                plane = np.ascontiguousarray(np.take(self.image, index, axis=axis))
                entry = (plane, _ResultCache(self.cache_size, self.cache_bytes))
                self._slices[(axis, index)] = entry
                while len(self._slices) > MAX_PREVIEW_SLICES:
                    self._slices.popitem(last=False)
            self._slices.move_to_end((axis, index))
        spacing = tuple(s for k, s in enumerate(self.spacing) if k != axis)
        result = self._solve_cached(entry[0], beta, entry[1], spacing, callback, time_budget)
        result.extra["slice"] = (axis, index)
        return result

    # -- cache inspection ----------------------------------------------------------------
    def cached_betas(self) -> list[float]:
        """The β values whose results are cached for the whole image, ascending."""
        with self._lock:
            return self._cache.betas()

    def clear_cache(self) -> None:
        """Forget every cached result (whole image and slices)."""
        with self._lock:
            self._cache = _ResultCache(self.cache_size, self.cache_bytes)
            self._slices.clear()

    def __repr__(self) -> str:
        return (
            f"BetaSweep(shape={self.image.shape}, method={self.method!r}, "
            f"fidelity={self.fidelity!r}, tv={self.tv!r}, cached={self.cached_betas()})"
        )


# -- whole sweeps ----------------------------------------------------------------------------
def _check_betas(betas) -> np.ndarray:
    try:
        arr = np.asarray(betas, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"betas must be a sequence of real numbers, got {betas!r}") from None
    arr = arr.reshape(-1) if arr.ndim == 0 else arr
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"betas must be finite and >= 0, got {arr.tolist()!r}")
    return arr


def _sweep_in_order(
    sweep: BetaSweep, betas: np.ndarray, callback: Callback | None
) -> Iterator[tuple[int, TVResult]]:
    """Solve at every β in ascending order (each warm-started from the previous); yields
    (position in ``betas``, result) and stops after a cancelled solve."""
    order = np.argsort(betas, kind="stable")
    n_betas = len(betas)
    stopped = False
    for step, k in enumerate(order):
        cb = None
        if callback is not None:

            def cb(info: dict, step: int = step, k: int = int(k)) -> bool:
                nonlocal stopped
                fraction = (step + float(info.get("fraction", 0.0))) / n_betas
                extra = {"beta": float(betas[k]), "beta_index": k, "step": step}
                info = {**info, **extra, "n_betas": n_betas, "fraction": fraction}
                stopped = stopped or bool(callback(info))
                return stopped

        result = sweep.solve(float(betas[k]), callback=cb)
        yield int(k), result
        if stopped or _is_partial(result):
            return


def beta_stack(
    image: ArrayLike, betas: Sequence[float], *, callback: Callback | None = None, **sweep_kw
) -> tuple[np.ndarray, list[TVResult | None]]:
    """TV solutions of ``image`` for several β, stacked along a new first axis.

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D
        The data ``v``.
    betas : sequence of float
        Weights β >= 0, in any order (duplicates allowed).
    callback : callable, optional
        ``callback(info) -> bool`` forwarded from every solve, with ``info`` extended by
        ``"beta"``, ``"beta_index"`` (position in ``betas``), ``"step"``, ``"n_betas"`` and an
        overall ``"fraction"``; returning True stops the sweep.
    **sweep_kw
        :class:`BetaSweep` options (``method``, ``fidelity``, ``tv``, ``spacing``, ``tol`` —
        default ``1e-4`` here, ...).

    Returns
    -------
    stack : ndarray, shape ``(len(betas), *image.shape)``
        ``stack[k]`` is the solution at ``betas[k]`` (the caller's order).
    results : list of TVResult or None
        The matching results. After a cancel, the β not reached are ``None`` with NaN rows
        in ``stack`` and the interrupted one has ``cancelled=True``.

    Notes
    -----
    The β are solved in ascending order, each warm-started from the solution at the
    previous β; ``u_β`` moves continuously with β, so each solve starts close to its answer.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).standard_normal((16, 16))
    >>> stack, results = beta_stack(image, [1.0, 0.1, 0.5])
    >>> stack.shape, [round(r.extra["beta"], 2) for r in results]
    ((3, 16, 16), [1.0, 0.1, 0.5])
    """
    betas = _check_betas(betas)
    sweep_kw.setdefault("tol", 1e-4)
    sweep_kw.setdefault("cache_size", 1)
    sweep = BetaSweep(image, **sweep_kw)
    stack = np.full((len(betas), *sweep.image.shape), np.nan, dtype=sweep.image.dtype)
    results: list[TVResult | None] = [None] * len(betas)
    for k, result in _sweep_in_order(sweep, betas, callback):
        stack[k] = result.u
        results[k] = result
    return stack, results


def _tv_of(sweep: BetaSweep, u: np.ndarray) -> float:
    """TV(u) as in the energy: graph TV for ``"exact"``, ``tv_norm`` (forward, Neumann) else."""
    if sweep.method == "exact":
        return float(graph_tv(u, connectivity=sweep.connectivity, spacing=sweep.spacing))
    return float(
        tv_norm(u, kind=sweep.tv, scheme="forward", boundary="neumann", spacing=sweep.spacing)
    )


def l_curve(
    image: ArrayLike, betas: Sequence[float], *, callback: Callback | None = None, **sweep_kw
) -> dict[str, np.ndarray]:
    """Fidelity and total variation of the TV solutions along a range of β.

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D
        The data ``v``.
    betas : sequence of float
        Weights β >= 0, in any order.
    callback : callable, optional
        As in :func:`beta_stack` (True stops; the β not reached get NaN).
    **sweep_kw
        :class:`BetaSweep` options (``tol`` defaults to ``1e-4`` here).

    Returns
    -------
    dict of ndarray, each of length ``len(betas)`` in the caller's order
        ``"beta"``; ``"fidelity"`` :math:`\\sum_s f(u_s, v_s)`; ``"tv"`` :math:`TV(u)`;
        ``"energy"`` = fidelity + β·tv; ``"n_iter"``; ``"converged"``.

    Notes
    -----
    The L-curve plots :math:`\\log TV(u_\\beta)` against :math:`\\log \\sum_s f(u_{\\beta,s},
    v_s)`; its corner is a classical choice of β (Hansen 1992). ``TV`` is the one in the
    energy: ``operators.tv_norm(u, kind=tv, scheme="forward", boundary="neumann", spacing)``,
    or ``operators.graph_tv(u, connectivity, spacing)`` for ``method="exact"``.

    References
    ----------
    P. C. Hansen, "Analysis of discrete ill-posed problems by means of the L-curve",
    SIAM Review 34(4), 561-580, 1992.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).standard_normal((16, 16))
    >>> curve = l_curve(image, [0.1, 1.0])
    >>> bool(curve["tv"][0] > curve["tv"][1]), bool(curve["fidelity"][0] < curve["fidelity"][1])
    (True, True)
    """
    betas = _check_betas(betas)
    sweep_kw.setdefault("tol", 1e-4)
    sweep_kw.setdefault("cache_size", 1)
    sweep = BetaSweep(image, **sweep_kw)
    n = len(betas)
    out = {
        "beta": betas.copy(),
        "fidelity": np.full(n, np.nan),
        "tv": np.full(n, np.nan),
        "energy": np.full(n, np.nan),
        "n_iter": np.zeros(n, dtype=np.int64),
        "converged": np.zeros(n, dtype=bool),
    }
    for k, result in _sweep_in_order(sweep, betas, callback):
        fid = float(fidelity_value(result.u, sweep.image, sweep.fidelity))
        tv = _tv_of(sweep, result.u)
        out["fidelity"][k], out["tv"][k], out["energy"][k] = fid, tv, fid + betas[k] * tv
        out["n_iter"][k], out["converged"][k] = result.n_iter, result.converged
    return out
