"""Qt-free β-sweep engine: tune the TV weight β live, warm-started, latest request wins.

What a microscopist does with a β slider, as a plain library (no Qt, no napari imports):

API at a glance (what the widgets use)
--------------------------------------
::

    sweep = BetaSweep(image, method="chambolle", tol=1e-3)  # image validated once, never modified
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
    sigma = estimate_noise_sigma(image)      # noise standard deviation from the data
    beta = suggest_beta(image, sigma=None)   # discrepancy principle, ‖u_β − v‖² = N σ²

All solves go through :func:`napari_tv.solvers.api.denoise_tv` (``solver=`` injects another
callable with the same signature, e.g. for tests).
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

from napari_tv._validation import (
    as_float_array,
    check_choice,
    check_int,
    check_real,
    check_spacing,
)
from napari_tv.fidelity import FIDELITIES, check_fidelity_data, fidelity_value
from napari_tv.operators import graph_tv, level_grid, tv_norm
from napari_tv.solvers._result import TVResult
from napari_tv.solvers.api import METHODS, SUPPORTED, denoise_tv

__all__ = [
    "BetaSweep",
    "Generation",
    "LatestWins",
    "beta_stack",
    "estimate_noise_sigma",
    "l_curve",
    "suggest_beta",
]

Callback = Callable[[dict], Any]

#: how many slices :meth:`BetaSweep.preview_slice` keeps a warm-start cache for
MAX_PREVIEW_SLICES = 8


def _is_partial(result) -> bool:
    """A solve stopped by its callback before meeting its tolerance (a warm start only)."""
    return bool(getattr(result, "cancelled", False)) and not getattr(result, "converged", False)


def _result_nbytes(result: TVResult) -> int:
    arrays = [result.u, *(v for v in result.extra.values() if isinstance(v, np.ndarray))]
    return int(sum(a.nbytes for a in arrays))


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
    method, fidelity, tv, spacing, connectivity, levels, max_num_iter, tol
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
        accelerated ``"primal_dual"``).
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
        method: str = "chambolle",
        fidelity: str = "l2",
        tv: str = "isotropic",
        spacing: float | Sequence[float] | None = None,
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


# -- latest-wins scheduling ----------------------------------------------------------------
class Generation:
    """A request counter: a token is stale as soon as a newer one is issued (or on close).

    The core of latest-wins scheduling, usable with any worker (``LatestWins``, napari's
    ``thread_worker``, a ``concurrent.futures`` pool): take ``token = gen.next()`` per request,
    pass ``gen.stop_callback(token)`` as the solver's ``callback`` so that a superseded solve
    stops early, and drop a result when ``gen.is_stale(token)``.

    Examples
    --------
    >>> gen = Generation()
    >>> first = gen.next(); second = gen.next()
    >>> gen.is_stale(first), gen.is_stale(second), gen.stop_callback(first)({})
    (True, False, True)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0
        self._closed = False

    @property
    def value(self) -> int:
        """The newest token issued (0 before the first)."""
        return self._value

    def next(self) -> int:
        """Issue a new token; every older token becomes stale."""
        with self._lock:
            self._value += 1
            return self._value

    def is_stale(self, token: int) -> bool:
        """True when a newer token was issued or the counter was closed."""
        return self._closed or token != self._value

    def stop_callback(
        self, token: int, progress: Callable[[dict], Any] | None = None
    ) -> Callable[[dict], bool]:
        """A solver ``callback(info) -> bool`` that stops the solve once ``token`` is stale.

        ``progress(info)``, if given, is called first (e.g. to update a progress bar).
        """

        def callback(info: dict) -> bool:
            if progress is not None:
                progress(info)
            return self.is_stale(token)

        return callback

    def close(self) -> None:
        """Make every token stale, for good (shutdown)."""
        self._closed = True


class LatestWins:
    """Run ``fn`` on one background thread for the most recent request only.

    Parameters
    ----------
    fn : callable
        The work, e.g. ``BetaSweep.solve`` or ``BetaSweep.preview_slice``. Called on the
        worker thread as ``fn(*args, callback=stop, **kwargs)`` where ``stop(info)`` returns
        True once a newer request has arrived (set ``pass_callback=False`` for an ``fn``
        without a ``callback`` argument: a superseded call then runs to its end and its
        result is dropped).
    on_result : callable
        ``on_result(result)``, called on the worker thread for the newest request's result
        only, while the scheduler's lock is held, so no newer request can have been submitted
        when it runs: keep it short (emit a Qt signal, put into a queue).
    on_error : callable, optional
        ``on_error(exception)`` for the newest request's exception (same rules); without it
        the exception is kept in ``last_error``.
    progress : callable, optional
        ``progress(info)`` for every solver report of the running request.
    pass_callback : bool, default True
        Whether ``fn`` takes the ``callback`` keyword.
    refine : int, default 0
        Progressive refinement: when the newest request's delivered result has
        ``cancelled=True`` (e.g. ``fn = partial(sweep.solve, time_budget=0.08)``) and nothing
        newer is pending, run the same request again, up to ``refine`` times; with
        :class:`BetaSweep` each run continues from the previous partial iterate, so the user
        sees a preview within the budget, then better ones until the solve converges.

    Notes
    -----
    ``submit`` stores the request and wakes the worker; a request not yet started is replaced
    by a newer one, a running one is asked to stop through the solver's callback. Hence at
    most two solves overlap a burst of slider moves: the one running when it began and the
    last. Results of superseded requests (cancelled or not) are never delivered.

    Examples
    --------
    >>> delivered = []
    >>> runner = LatestWins(lambda x: x * x, delivered.append, pass_callback=False)
    >>> for x in range(5):
    ...     _ = runner.submit(x)
    >>> runner.wait(5.0), delivered[-1]
    (True, 16)
    >>> runner.close()
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        on_result: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None = None,
        *,
        progress: Callable[[dict], Any] | None = None,
        pass_callback: bool = True,
        refine: int = 0,
        name: str = "napari-tv-latest-wins",
    ) -> None:
        self._fn, self._on_result, self._on_error = fn, on_result, on_error
        self._progress, self._pass_callback = progress, pass_callback
        self._refine = check_int("refine", refine, minimum=0)
        self.generation = Generation()
        self._cond = threading.Condition()
        self._pending: tuple[int, tuple, dict] | None = None
        self._busy = False
        self._closed = False
        #: counters: requests run, results delivered, requests superseded (dropped)
        self.n_run = self.n_delivered = self.n_dropped = 0
        self.last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, *args, **kwargs) -> int:
        """Request ``fn(*args, **kwargs)``; supersedes every earlier request. Returns its token."""
        with self._cond:
            if self._closed:
                raise RuntimeError("LatestWins.submit after close()")
            if self._pending is not None:
                self.n_dropped += 1
            token = self.generation.next()
            self._pending = (token, args, kwargs)
            self._cond.notify_all()
        return token

    def is_stale(self, token: int) -> bool:
        """True when a newer request than ``token`` was submitted (or after close)."""
        return self.generation.is_stale(token)

    def _work(self) -> None:
        refined = 0
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                token, args, kwargs = self._pending
                self._pending, self._busy = None, True
                self.n_run += 1
            try:
                partial_result = self._run_one(token, args, kwargs)
            finally:
                with self._cond:
                    self._busy = False
                    again = (
                        partial_result
                        and refined < self._refine
                        and self._pending is None
                        and not self.generation.is_stale(token)
                    )
                    refined = refined + 1 if again else 0
                    if again:  # same token: still the newest request
                        self._pending = (token, args, kwargs)
                    self._cond.notify_all()

    def _run_one(self, token: int, args: tuple, kwargs: dict) -> bool:
        """Run and deliver one request; True when a partial result was delivered."""
        call_kw = kwargs
        if self._pass_callback:
            stop = self.generation.stop_callback(token, self._progress)
            call_kw = {**kwargs, "callback": stop}
        try:
            result, error = self._fn(*args, **call_kw), None
        except Exception as exc:  # delivered to on_error, never lost silently
            result, error = None, exc
        with self._cond:
            if self.generation.is_stale(token):
                self.n_dropped += 1
                return False
            try:
                if error is None:
                    self.n_delivered += 1
                    self._on_result(result)
                elif self._on_error is not None:
                    self._on_error(error)
                else:
                    self.last_error = error
            except Exception as exc:  # a failing handler must not kill the worker
                self.last_error = exc
            return error is None and _is_partial(result)

    def is_alive(self) -> bool:
        """Whether the worker thread is running (False after :meth:`close`)."""
        return self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no request is pending or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (self._pending is None and not self._busy) or self._closed, timeout
            )

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the worker: the running solve is asked to stop, pending requests are dropped."""
        with self._cond:
            self._closed = True
            self._pending = None
            self.generation.close()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> LatestWins:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


# -- choosing β ----------------------------------------------------------------------------
_MAD_TO_SIGMA = 0.6744897501960817  # median |Z| for Z ~ N(0, 1)


def estimate_noise_sigma(image: ArrayLike) -> float:
    """Standard deviation of additive white noise, estimated from the data.

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D
        Noisy data, at least 2 samples along each axis used.

    Returns
    -------
    float
        :math:`\\hat\\sigma`.

    Raises
    ------
    ValueError
        For an invalid image or one with fewer than 2 samples along a used axis.

    Notes
    -----
    The finest diagonal Haar wavelet coefficients (all positions, stride 1) are
    :math:`d = \\prod_{a} \\frac{\\delta_a}{\\sqrt 2}\\, v` with :math:`\\delta_a` the forward
    difference along axis ``a``; on i.i.d. noise each has standard deviation σ, and on a
    piecewise-smooth image they vanish except near edges. The robust estimate is
    :math:`\\hat\\sigma = \\operatorname{median}|d| / 0.6745` (Donoho & Johnstone 1994).
    A 3D volume uses its in-plane axes (the last two), pooled over all slices, since the z
    step of microscopy volumes is often coarse enough for structure to dominate the z
    differences. For Poisson noise the result is an average standard deviation; texture and
    dense edges bias it upwards; quantised (integer) data of very low noise may give 0.

    References
    ----------
    D. L. Donoho and I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage",
    Biometrika 81(3), 425-455, 1994.

    Examples
    --------
    >>> import numpy as np
    >>> noisy = 0.2 * np.random.default_rng(0).standard_normal((128, 128))
    >>> round(estimate_noise_sigma(noisy), 1)
    0.2
    """
    v = as_float_array(image, "image")
    axes = range(v.ndim) if v.ndim <= 2 else (v.ndim - 2, v.ndim - 1)
    d = v.astype(np.float64)
    for a in axes:
        if v.shape[a] < 2:
            raise ValueError(f"image must have >= 2 samples along axis {a}, got shape {v.shape}")
        d = np.diff(d, axis=a) / math.sqrt(2.0)
    return float(np.median(np.abs(d)) / _MAD_TO_SIGMA)


def _residual(sweep: BetaSweep, beta: float) -> float:
    diff = sweep.solve(beta).u.astype(np.float64) - sweep.image
    return float(np.dot(diff.ravel(), diff.ravel()))


def suggest_beta(
    image: ArrayLike,
    sigma: float | None = None,
    *,
    rtol: float = 1e-2,
    xtol: float = 1e-3,
    max_steps: int = 60,
    callback: Callback | None = None,
    **sweep_kw,
) -> float:
    """The β of the discrepancy principle: :math:`\\|u_\\beta - v\\|^2 = N\\sigma^2` (L2 only).

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D
        The noisy data ``v`` (N samples).
    sigma : float, optional
        Noise standard deviation; estimated by :func:`estimate_noise_sigma` if omitted.
    rtol : float, default 0.01
        Stop when :math:`|\\|u_\\beta - v\\|^2 / (N\\sigma^2) - 1| \\le` ``rtol``.
    xtol : float, default 1e-3
        ... or when the bracket of β is narrower than a factor ``1 + xtol`` (the residual of
        ``method="exact"`` jumps between grid levels and may never meet ``rtol``).
    max_steps : int, default 60
        Solves allowed for bracketing plus bisection.
    callback : callable, optional
        ``callback({"beta", "residual", "target", "step"}) -> bool`` after each solve;
        True stops the search and returns the best estimate so far.
    **sweep_kw
        :class:`BetaSweep` options (``method``, ``tv``, ``spacing``, ``tol`` — default
        ``1e-4`` here). ``fidelity`` must be ``"l2"``.

    Returns
    -------
    float
        β.

    Raises
    ------
    ValueError
        For a fidelity other than ``"l2"``, or when :math:`N\\sigma^2 \\ge \\|v - \\bar v\\|^2`
        (even the constant image, the limit β → ∞, is not that far from the data).

    Notes
    -----
    For :math:`\\min_u \\tfrac12\\|u - v\\|^2 + \\beta\\, TV(u)` the residual
    :math:`r(\\beta) = \\|u_\\beta - v\\|^2` is non-decreasing, from 0 at β = 0 to
    :math:`\\|v - \\bar v\\|^2` for β large. Morozov's discrepancy principle picks the β
    where the residual equals the expected noise energy :math:`N\\sigma^2`. The root is
    bracketed from β = σ by factors of 2, then found by a safeguarded secant on
    :math:`\\log r` against :math:`\\log\\beta` (bisection when the same end of the bracket
    moves twice in a row); each solve is warm-started from the nearest β already solved.
    For L1 or Poisson data the residual has another expectation
    (:math:`N\\sigma\\sqrt{2/\\pi}`, a deviance of about N/2), not implemented.

    References
    ----------
    V. A. Morozov, "On the solution of functional equations by the method of
    regularization", Soviet Math. Dokl. 7, 414-417, 1966.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron(np.eye(2), np.ones((16, 16)))
    >>> beta = suggest_beta(clean + 0.1 * rng.standard_normal(clean.shape), sigma=0.1)
    >>> 0.01 < beta < 1.0
    True
    """
    if sweep_kw.get("fidelity", "l2") != "l2":
        raise ValueError(f"suggest_beta needs fidelity='l2', got {sweep_kw['fidelity']!r}")
    rtol = check_real("rtol", rtol, minimum=0.0, strict=True)
    xtol = check_real("xtol", xtol, minimum=0.0, strict=True)
    max_steps = check_int("max_steps", max_steps, minimum=1)
    sweep_kw.setdefault("tol", 1e-4)
    sweep_kw.setdefault("cache_size", 4)
    sweep = BetaSweep(image, **sweep_kw)
    v = sweep.image.astype(np.float64)
    sigma = estimate_noise_sigma(v) if sigma is None else check_real("sigma", sigma)
    sigma = check_real("sigma", sigma, minimum=0.0, strict=True)
    target = v.size * sigma**2
    far = float(np.sum((v - v.mean()) ** 2))
    if target >= far:
        raise ValueError(
            f"sigma={sigma:g} is too large: N*sigma^2 = {target:g} >= ||v - mean(v)||^2 = "
            f"{far:g}, so no beta reaches the discrepancy"
        )
    lo: tuple[float, float] | None = None  # (log beta, log(r / target)) with r < target
    hi: tuple[float, float] | None = None  # ... with r > target
    beta, last_side = sigma, None
    for step in range(max_steps):
        r = _residual(sweep, beta)
        info = {"beta": beta, "residual": r, "target": target, "step": step}
        stop = callback is not None and bool(callback(info))
        if stop or abs(r / target - 1.0) <= rtol:
            return beta
        point = (math.log(beta), math.log(max(r, 1e-300) / target))
        side = point[1] < 0.0
        if side:
            lo = point
        else:
            hi = point
        beta = math.exp(_next_log_beta(lo, hi, bisect=side == last_side))
        last_side = side
        if lo is not None and hi is not None and hi[0] - lo[0] <= math.log1p(xtol):
            return beta
    return beta


def _next_log_beta(
    lo: tuple[float, float] | None, hi: tuple[float, float] | None, bisect: bool
) -> float:
    """Next trial log β: doubling/halving until the root is bracketed, then the secant of
    log r against log β (r grows roughly like a power of β) kept in the middle 80 % of the
    bracket, or bisection when asked (the same end moved twice in a row)."""
    if hi is None:
        return lo[0] + math.log(2.0)
    if lo is None:
        return hi[0] - math.log(2.0)
    t = 0.5 if bisect else min(max(-lo[1] / (hi[1] - lo[1]), 0.1), 0.9)
    return lo[0] + t * (hi[0] - lo[0])
