"""The bookkeeping every iterative solver shares: stopping rule, history, callback, clock.

A solver evaluates its duality gap (:func:`napari_tv.solvers._gap.duality_gap`) when
:meth:`Monitor.next_run` says, hands it to :meth:`Monitor.check`, and stops when that returns
True; the :class:`~napari_tv.solvers._result.TVResult` takes ``history``, ``converged``,
``cancelled`` and ``elapsed()`` from the monitor.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CHECK_EVERY", "MAX_CHECK_EVERY", "Monitor", "check_interval"]

#: iterations between two gap evaluations at the start of a run (see ``check_interval``)
CHECK_EVERY = 10
#: the largest interval between two gap evaluations
MAX_CHECK_EVERY = 100


def check_interval(n_iter: int) -> int:
    """Iterations to run before the next gap evaluation, after ``n_iter`` iterations.

    ``CHECK_EVERY`` (10) for the first 200 iterations, then ``10 * (n_iter // 100)`` up to
    ``MAX_CHECK_EVERY``: an evaluation costs a few iterations, so long runs check about every
    10 % of their length (overshooting the stopping point by at most that) while short runs
    and progress reports stay fine-grained.  Deterministic: always a multiple of 10.
    """
    return min(MAX_CHECK_EVERY, CHECK_EVERY * max(1, n_iter // 100))


class Monitor:
    """Bookkeeping shared by the iterative solvers: history, callback, stopping rule.

    ``monitor.check(n_iter, gap)`` records ``{"iter", "energy", "gap", "elapsed"}`` (plus
    ``extra``), calls ``callback(info)`` with ``{"method", "iter", "max_iter", "energy",
    "gap", "elapsed", "fraction"}`` (plus ``extra``) and returns True when the solver must stop
    (the stopping quantity, ``gap.rel`` unless ``stop_on`` is given, below ``tol > 0`` ->
    ``converged``; callback returned True -> ``cancelled``).  ``monitor.elapsed()`` gives the
    wall-clock seconds since construction.

    ``every``: evaluate the gap every ``every`` iterations whatever ``tol`` (a solver that
    adapts itself at each evaluation); default: ``check_interval``, and only when something
    looks at the gap.  ``progress``: ``"iterations"`` reports ``fraction = n_iter / max_iter``;
    ``"gap"`` the larger of that and the log-distance travelled from the first gap to ``tol``.
    """

    def __init__(
        self,
        method: str,
        max_iter: int,
        tol: float,
        callback: Callable[[dict[str, Any]], bool] | None = None,
        *,
        every: int | None = None,
        progress: str = "iterations",
    ):
        self._clock = time.perf_counter
        self._t0 = self._clock()
        self.method = method
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.callback = callback
        self.every = every
        self.progress = progress
        self.history: list[dict] = []
        self.converged = False
        self.cancelled = False
        self._gap0: float | None = None

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def wants_gap(self, n_iter: int) -> bool:
        """Whether a gap evaluation is needed after ``n_iter`` iterations."""
        return (
            self.every is not None
            or self.tol > 0
            or self.callback is not None
            or n_iter >= self.max_iter
        )

    def next_run(self, n_iter: int) -> int:
        """Iterations to run after ``n_iter`` before the next gap evaluation: ``every``, or
        ``check_interval`` when the stopping rule or a callback looks at the gap, otherwise
        all the rest (so that ``tol=0`` without a callback runs in one go)."""
        rest = self.max_iter - n_iter
        if self.every is not None:
            return min(self.every, rest)
        if self.tol > 0 or self.callback is not None:
            return min(check_interval(n_iter), rest)
        return rest

    def fraction(self, n_iter: int, gap: float) -> float:
        """Progress in [0, 1] (1.0 once converged; see ``progress``)."""
        if self.converged:
            return 1.0
        frac = n_iter / self.max_iter if self.max_iter else 1.0
        gap0, tol = self._gap0, self.tol
        if self.progress == "gap" and tol > 0 and gap0 is not None and gap0 > tol:
            if math.isfinite(gap0) and math.isfinite(gap) and gap > 0:
                frac = max(frac, math.log(gap0 / gap) / math.log(gap0 / tol))
        return float(min(max(frac, 0.0), 1.0))

    def check(self, n_iter: int, gap, *, stop_on: float | None = None, extra=None) -> bool:
        """Record the gap (a :class:`~napari_tv.solvers._gap.Gap`) after ``n_iter``
        iterations, report it, and say whether to stop."""
        elapsed = self.elapsed()
        extra = extra or {}
        if self._gap0 is None:
            self._gap0 = gap.rel
        self.history.append(
            {"iter": int(n_iter), "energy": gap.primal, "gap": gap.rel, "elapsed": elapsed,
             **extra}
        )  # fmt: skip
        quantity = gap.rel if stop_on is None else stop_on
        if self.tol > 0 and quantity < self.tol:
            self.converged = True
        if self.callback is not None:
            info = {
                "method": self.method,
                "iter": int(n_iter),
                "max_iter": self.max_iter,
                "energy": gap.primal,
                "gap": gap.rel,
                "elapsed": elapsed,
                "fraction": self.fraction(n_iter, gap.rel),
                **extra,
            }
            if self.callback(info):
                self.cancelled = True
                return True
        return self.converged
