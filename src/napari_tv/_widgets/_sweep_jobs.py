"""The β-sweep widget's jobs, run off the GUI thread: one live request (on the
:class:`~napari_tv.sweep.LatestWins` thread), the L-curve with the suggested β, and the β stack
(on the :class:`~._tasks.TaskRunner` thread).  Library calls only; nothing here touches Qt.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from napari_tv._compile import compile_notice

from ._tasks import Cancelled


def solve_request(
    sweep, beta: float, plane: int | None, tag: dict, callback=None, compiling=None
) -> dict:
    """One live request (LatestWins thread): the slice preview or the full solve;
    ``compiling(message)`` is called if kernels must be compiled first."""
    with compile_notice(compiling or (lambda _message: None)):
        if plane is None:
            result = sweep.solve(beta, callback=callback)
        else:
            result = sweep.preview_slice(beta, plane, axis=0, callback=callback)
    return {"result": result, "beta": beta, "plane": plane, **tag}


class PlaneSweep:
    """A :class:`~napari_tv.sweep.BetaSweep` of one 2-D plane of a lazy (dask, zarr,
    multiscale) layer: only that plane is read, on the first solve (LatestWins thread, not the
    GUI's), so a live preview of a volume larger than memory stays fast."""

    def __init__(self, source, sweep_kw: dict) -> None:
        self.source = source  # the plane, not computed yet
        self.sweep_kw = dict(sweep_kw)
        self._sweep = None
        self._lock = threading.Lock()

    def solve(self, beta: float, callback=None, **kwargs):
        from napari_tv.sweep import BetaSweep

        with self._lock:
            if self._sweep is None:
                self._sweep = BetaSweep(np.asarray(self.source), **self.sweep_kw)
        return self._sweep.solve(beta, callback=callback, **kwargs)


def compute_curve(image, betas, sweep_kw: dict, suggest: bool, callback=None) -> dict:
    """L-curve over ``betas`` and, with ``suggest``, the β of the fidelity's risk estimate
    (SURE, PURE or J-invariance) with the risks it evaluated (TaskRunner thread)."""
    from napari_tv.beta_choice import default_rule, estimate_noise_sigma, suggest_beta
    from napari_tv.sweep import l_curve

    out: dict[str, Any] = {}
    if suggest:
        out["sigma"] = estimate_noise_sigma(image)

        def step(info):
            return callback({**info, "fraction": 0.5 * float(info.get("fraction", 0.0))})

        search_kw = {k: sweep_kw[k] for k in ("method", "tv", "spacing") if k in sweep_kw}
        out["rule"] = default_rule(sweep_kw.get("fidelity", "l2"))
        out["beta"], out["risk"] = suggest_beta(
            image,
            fidelity=sweep_kw.get("fidelity", "l2"),
            callback=step,
            return_curve=True,
            **search_kw,
        )

    def curve_cb(info):
        frac = float(info.get("fraction", 0.0))
        return callback({**info, "fraction": 0.5 + 0.5 * frac if suggest else frac})

    out["curve"] = l_curve(image, betas, callback=curve_cb, **sweep_kw)
    return out


def compute_stack(image, betas, sweep_kw: dict, callback=None) -> dict:
    """``sweep.beta_stack`` (TaskRunner thread)."""
    from napari_tv.sweep import beta_stack

    stack, results = beta_stack(image, betas, callback=callback, **sweep_kw)
    if any(r is None or r.cancelled for r in results):
        raise Cancelled
    return {"stack": stack, "results": results, "betas": list(betas)}
