"""Choosing β from the data: a noise estimate and Morozov's discrepancy principle.

Re-exported by :mod:`napari_tv.sweep` (and :mod:`napari_tv`); :func:`suggest_beta` runs its
solves through a :class:`~napari_tv.sweep.BetaSweep`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from napari_tv._validation import as_float_array, check_int, check_real

if TYPE_CHECKING:
    from napari_tv.sweep import BetaSweep

__all__ = ["estimate_noise_sigma", "suggest_beta"]

Callback = Callable[[dict], Any]

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
    from napari_tv.sweep import BetaSweep  # here: napari_tv.sweep imports this module

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
