"""The result every solver returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TVResult:
    """A TV solve: the minimiser and the figures that certify it.

    Attributes
    ----------
    u : ndarray
        The solution, same shape as the input, float32 or float64.
    energy : float
        ``tv_energy(u, image, beta, ...)`` of the returned ``u`` (accumulated in float64).
    n_iter : int
        Iterations run (iterative methods) or max-flow rounds of the dichotomy (``"exact"``).
    converged : bool
        True when the stopping rule was met (gap below ``tol``), or always for ``"exact"``.
    gap : float
        The relative duality gap of the returned iterate (see each method's Notes); 0.0 for
        ``"exact"``, whose optimality is certified by construction.
    history : list of dict
        One dict per report: ``{"iter", "energy", "gap", "elapsed"}`` for iterative methods,
        ``{"round", "cuts", "elapsed"}`` for ``"exact"``.
    elapsed : float
        Wall-clock seconds.
    method : str
        The method that produced ``u``.
    cancelled : bool
        True when a ``callback`` asked the solver to stop.
    extra : dict
        Method-specific data: the dual variable for warm starts (``"p"``), the grid of levels,
        the number of cuts and per-round times, the dichotomy trace, ...
    """

    u: np.ndarray
    energy: float
    n_iter: int
    converged: bool
    gap: float
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    method: str = ""
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # the arrays would drown the figures
        return (
            f"TVResult(method={self.method!r}, shape={self.u.shape}, dtype={self.u.dtype}, "
            f"energy={self.energy:.6g}, n_iter={self.n_iter}, converged={self.converged}, "
            f"gap={self.gap:.3g}, elapsed={self.elapsed:.3g}s, cancelled={self.cancelled})"
        )
