"""Latency of the β sweep: from a slider move (``LatestWins.submit``) to the result delivered.

A "move" changes β by a few per cent along a geometric path, as a user dragging the slider
does; each move waits for its result before the next (the steady state of a slow drag). The
first solve (the preview shown when the widget opens) is not counted. Columns:

* ``warm``: ``BetaSweep`` (warm-started from the nearest cached β), median and p90 in ms;
* ``cold``: the same solves without warm starts (a fresh ``BetaSweep`` per move);
* ``ratio``: cold median / warm median, measured side by side in this run;
* ``budget``: ``solve(beta, time_budget=0.08)``, the anytime preview (median ms and the
  median relative gap it reaches).

A second table drags fast: a submit every 30 ms without waiting; it gives the latency from
the last submit to its result, how many intermediate results were shown and how many solves
ran (latest-wins stops or skips the rest).

Run: ``python benchmarks/bench_sweep.py [--moves 20] [--quick]``. On a machine whose cores
are busy with other work, Numba's OpenMP threads spinning at barriers (the default wait
policy) made every parallel kernel 10-50x slower in our runs; ``OMP_WAIT_POLICY=PASSIVE``
avoids it. The header prints the policy in effect.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from functools import partial

import numpy as np

from napari_tv.beta_choice import estimate_noise_sigma
from napari_tv.sweep import BetaSweep, LatestWins

BUDGET = 0.08  # seconds: the anytime-preview column
DRAG_INTERVAL = 0.03  # seconds between slider events in the fast-drag table (~33 Hz)


def _data_2d(shape):
    try:
        from napari_tv._sample_data import microscopy_2d

        return microscopy_2d(shape=shape, seed=0)[0]
    except ImportError:  # pragma: no cover - before the sample data landed
        rng = np.random.default_rng(0)
        return rng.poisson(20.0 * (1 + np.indices(shape).sum(0) % 64 / 64.0)).astype(np.float32)


def _data_3d(shape):
    try:
        from napari_tv._sample_data import microscopy_3d

        return microscopy_3d(shape=shape, seed=0)[0]
    except ImportError:  # pragma: no cover
        rng = np.random.default_rng(0)
        return rng.poisson(20.0, size=shape).astype(np.float32)


class _Probe:
    """Submits one move at a time and times submit -> on_result."""

    def __init__(self, fn):
        self._done = threading.Event()
        self.delivered = None
        self.runner = LatestWins(fn, self._on_result, self._on_error)

    def _on_result(self, result):
        self.delivered = result
        self.done_at = time.perf_counter()
        self._done.set()

    def _on_error(self, exc):
        self.delivered = exc
        self._done.set()

    def move(self, *args, **kwargs):
        self._done.clear()
        start = time.perf_counter()
        self.runner.submit(*args, **kwargs)
        if not self._done.wait(600.0):
            raise TimeoutError("no result within 600 s")
        elapsed = time.perf_counter() - start
        if isinstance(self.delivered, BaseException):
            raise self.delivered
        return elapsed, self.delivered


def _latencies(make_call, betas, *, fresh=False, **call_kw):
    """Median and p90 latency (s), median n_iter and median gap over the moves after the
    first; ``fresh``: a new ``BetaSweep`` per move (no warm start, no cache)."""
    call = make_call()
    probe = _Probe(lambda beta, **kw: (make_call() if fresh else call)(beta, **kw))
    probe.move(betas[0], **call_kw)  # the opening preview, not counted
    times, iters, gaps = [], [], []
    for beta in betas[1:]:
        elapsed, result = probe.move(beta, **call_kw)
        times.append(elapsed)
        iters.append(result.n_iter)
        gaps.append(result.gap)
    probe.runner.close()
    t = np.array(times)
    return np.median(t), np.percentile(t, 90), np.median(iters), np.median(gaps)


def _drag(make_call, betas, interval=DRAG_INTERVAL):
    """A fast drag: one submit every ``interval`` s without waiting. Returns the latency from
    the last submit to its result (s), the results shown during the drag and the solves run."""
    probe = _Probe(make_call())
    probe.move(betas[0])  # the opening preview
    shown_before = probe.runner.n_delivered
    for beta in betas[1:]:
        probe._done.clear()
        last = time.perf_counter()
        probe.runner.submit(beta)
        time.sleep(interval)
    if not probe._done.wait(600.0) or not probe.runner.wait(600.0):
        raise TimeoutError("no result within 600 s")
    latency = max(probe.done_at - last, 0.0)
    assert probe.delivered.extra["beta"] == betas[-1]
    shown = probe.runner.n_delivered - shown_before
    runs = probe.runner.n_run - 1
    probe.runner.close()
    return latency, shown, runs


def _scenarios(quick: bool):
    """(name, method, make_call, β scale) per scenario."""
    shape2 = (128, 128) if quick else (512, 512)
    shape3 = (16, 64, 64) if quick else (64, 256, 256)
    image2, volume = _data_2d(shape2), _data_3d(shape3)
    mid = shape3[0] // 2
    for method in ("chambolle", "primal_dual", "exact"):
        kw = {"method": method, "tol": 1e-3}
        yield (
            f"2D {shape2[0]}x{shape2[1]} solve",
            method,
            lambda kw=kw: BetaSweep(image2, **kw).solve,
            estimate_noise_sigma(image2),
        )
        yield (
            f"3D {'x'.join(map(str, shape3[::-1]))} slice",
            method,
            lambda kw=kw: partial(BetaSweep(volume, **kw).preview_slice, index=mid),
            estimate_noise_sigma(volume),
        )


def main(moves: int = 20, quick: bool = False) -> list[dict]:
    """Measure and print the latency table; returns its rows."""
    rows = []
    header = (
        f"{'scenario':<24}{'method':<11}{'warm med':>9}{'warm p90':>9}{'iters':>7}"
        f"{'cold med':>9}{'ratio':>7}{'budget':>8}{'gap':>9}"
    )
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(
        f"beta-sweep latency, submit -> result delivered, {moves} moves (ms); "
        f"OMP_WAIT_POLICY={policy}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(header)
    print("-" * len(header))
    for name, method, make_call, sigma in _scenarios(quick):
        betas = list(sigma * np.geomspace(1.0, 2.0, moves + 1))  # ~3.5 % per move
        warm = _latencies(make_call, betas)
        cold = _latencies(make_call, betas[::4], fresh=True)  # same β range, fewer moves
        row = {
            "scenario": name,
            "method": method,
            "warm_median": warm[0],
            "warm_p90": warm[1],
            "iters": warm[2],
            "cold_median": cold[0],
        }
        budget_cols = f"{'-':>8}{'-':>9}"
        if method != "exact":
            budget = _latencies(make_call, betas, time_budget=BUDGET)
            row.update(budget_median=budget[0], budget_gap=budget[3])
            budget_cols = f"{1e3 * budget[0]:8.1f}{budget[3]:9.1e}"
        rows.append(row)
        print(
            f"{name:<24}{method:<11}{1e3 * warm[0]:9.1f}{1e3 * warm[1]:9.1f}{warm[2]:7.0f}"
            f"{1e3 * cold[0]:9.1f}{cold[0] / warm[0]:7.2f}{budget_cols}",
            flush=True,
        )
        drag = _drag(make_call, betas)
        row.update(drag_latency=drag[0], drag_shown=drag[1], drag_runs=drag[2])
    print(f"\nfast drag: {moves} submits {1e3 * DRAG_INTERVAL:.0f} ms apart, no waiting")
    print(f"{'scenario':<24}{'method':<11}{'last->result ms':>16}{'shown':>7}{'solves':>8}")
    for row in rows:
        print(
            f"{row['scenario']:<24}{row['method']:<11}{1e3 * row['drag_latency']:16.1f}"
            f"{row['drag_shown']:7d}{row['drag_runs']:8d}"
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small arrays (smoke test)")
    args = parser.parse_args()
    main(args.moves, args.quick)
