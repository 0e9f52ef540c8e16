"""Qt-free latest-wins scheduling: run only the newest request, stop superseded ones early.

:class:`Generation` is a request counter (a token goes stale when a newer one is issued) and
:class:`LatestWins` a one-thread worker built on it. They know nothing of TV: any function taking
a ``callback(info) -> bool`` that stops it when True can be scheduled. Both are re-exported by
:mod:`napari_tv.sweep` (and :mod:`napari_tv`), whose docstring shows them with
:class:`~napari_tv.sweep.BetaSweep`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from napari_tv._validation import check_int

__all__ = ["Generation", "LatestWins"]


def _is_partial(result) -> bool:
    """A solve stopped by its callback before meeting its tolerance (a warm start only)."""
    return bool(getattr(result, "cancelled", False)) and not getattr(result, "converged", False)


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
    show_every : float, optional
        Intermediate results during a burst (seconds): when nothing has been delivered for
        ``show_every`` seconds, a superseded request that has been running for less than that
        is let finish and its result delivered (a fast slider drag then shows results on its
        way); the newest request still runs after it and is delivered last.  ``None``
        (default): superseded requests are stopped at once and never delivered.

    Notes
    -----
    ``submit`` stores the request and wakes the worker; a request not yet started is replaced
    by a newer one, a running one is asked to stop through the solver's callback. Hence at
    most two solves overlap a burst of slider moves: the one running when it began and the
    last. Results of superseded requests are not delivered, except the intermediate ones of
    ``show_every``; a cancelled (partial) superseded result never is.

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
        show_every: float | None = None,
        name: str = "napari-tv-latest-wins",
    ) -> None:
        self._fn, self._on_result, self._on_error = fn, on_result, on_error
        self._progress, self._pass_callback = progress, pass_callback
        self._refine = check_int("refine", refine, minimum=0)
        self._show_every = None if show_every is None else float(show_every)
        self._last_delivery = time.perf_counter()
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
            stale = self.generation.stop_callback(token, self._progress)

            def stop(info: dict) -> bool:
                return stale(info) and not self._let_finish(info)

            call_kw = {**kwargs, "callback": stop}
        try:
            result, error = self._fn(*args, **call_kw), None
        except Exception as exc:  # delivered to on_error, never lost silently
            result, error = None, exc
        with self._cond:
            if self.generation.is_stale(token) and not (
                error is None and not _is_partial(result) and self._show_due()
            ):
                self.n_dropped += 1
                return False
            try:
                if error is None:
                    self.n_delivered += 1
                    self._last_delivery = time.perf_counter()
                    self._on_result(result)
                elif self._on_error is not None:
                    self._on_error(error)
                else:
                    self.last_error = error
            except Exception as exc:  # a failing handler must not kill the worker
                self.last_error = exc
            return error is None and _is_partial(result)

    def _show_due(self) -> bool:
        """An intermediate result is due (``show_every``; never after close)."""
        return (
            self._show_every is not None
            and not self._closed
            and time.perf_counter() - self._last_delivery >= self._show_every
        )

    def _let_finish(self, info: dict) -> bool:
        """A superseded solve goes on when an intermediate result is due and it started less
        than ``show_every`` ago (a longer one would hold up the newest request)."""
        return self._show_due() and float(info.get("elapsed", 0.0)) < self._show_every

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
