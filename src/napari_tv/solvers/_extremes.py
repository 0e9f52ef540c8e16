r"""Problems at the edges of floating point, solved without iterating into them.

:func:`napari_tv.denoise_tv` sends every iterative solve through :func:`solve_guarded`, which
handles three kinds of extreme input before the solvers see them:

*A β so small that* :math:`u^* = v`.  Write :math:`C = 2\sum_a 1/h_a` (relative spacings
:math:`h_a \ge 1`): every subgradient of TV is :math:`D^\top q` with :math:`|q_s| \le 1`, so
:math:`|(D^\top q)_s| \le C`.  Hence

* L1: :math:`u^* = v` exactly when :math:`\beta C \le 1` (then :math:`-\beta D^\top q \in
  [-1, 1]^N = \partial\|\cdot - v\|_1(v)`: a one-pixel spike survives while the 2d edges it
  adds cost less than its height);
* L2: :math:`u^* = v - \beta D^\top q^*`, so :math:`|u^* - v| \le \beta C`; when that is below
  :math:`2^{-53}\max|v|` (below the rounding of the data), ``v`` is returned;
* Poisson: :math:`v_s/u^*_s = 1 + \beta z_s` with :math:`|z_s| \le C`, so
  :math:`|u^*_s - v_s| \le v_s \beta C/(1 - \beta C)`; the same rule with
  :math:`\beta C \le 2^{-53}`.

  The reported gap is an upper bound of the relative gap of ``v``: from
  :math:`P(v) - P^* \le \beta\,\mathrm{TV}(v - u^*) \le \beta C \|v - u^*\|_1`, it is
  :math:`C^2 N \beta/\mathrm{TV}(v)` for L2 and :math:`2 C^2 \beta \sum v/\mathrm{TV}(v)` for
  Poisson.

*A β so large that* :math:`u^*` *is constant.*  The constant ``c`` minimising the fidelity
(L2, Poisson: the mean; L1: a median) is optimal when the fidelity's gradient ``g`` at ``c``
(zero sum) is :math:`D^\top q` for some ``q`` in the β-ball.  A flow along a spanning tree of
the grid carries at most :math:`\|g\|_1/2` on every edge, so :math:`|q_{a,s}| \le h_a
\|g\|_1/2`, and ``c`` is the minimiser (to rounding, with the factor 2 spared) once
:math:`\beta \ge k\, h_{\max} \|g\|_1` with :math:`k = \sqrt d` for the isotropic TV and 1
for the anisotropic one; :math:`\|g\|_1` is :math:`\sum|v - c|` (L2), ``N`` (L1) and
:math:`\sum|1 - v/c|` (Poisson).

*Data near the ends of float32.*  Squares of differences of float32 data beyond
:math:`2^{50}` (or below :math:`2^{-50}`) leave float32's range, so such data is solved
scaled by a power of two (exact in binary floating point) and scaled back; every problem is
homogeneous in the data (β scales with it for L2; Poisson's energy shifts by a constant),
so the minimiser scales exactly and the relative gap does not change.  float64 data must
lie within :data:`FLOAT64_LIMITS` (its energies are computed in float64).

In each shortcut the result is flagged in ``extra["shortcut"]``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from napari_tv._validation import relative_spacing
from napari_tv.solvers._result import TVResult

__all__ = ["FLOAT32_SAFE", "FLOAT64_LIMITS", "check_magnitude", "solve_guarded"]

#: float32 data whose largest magnitude is outside this range is solved scaled
FLOAT32_SAFE = (2.0**-50, 2.0**50)
#: float64 data must have its largest magnitude in this range (or be all zero): the energy
#: holds squares of differences, accumulated in float64
FLOAT64_LIMITS = (2.0**-500, 2.0**500)
#: L2 and Poisson: ``u = v`` when the largest change ``beta * C`` is below this fraction of
#: the data's magnitude (L2) or of 1 (Poisson: a relative change)
ROUNDING = 2.0**-53


def check_magnitude(arr: np.ndarray, name: str = "image") -> float:
    """The largest magnitude of ``arr`` (float64); ValueError for float64 data outside
    :data:`FLOAT64_LIMITS` (squares of its differences leave float64)."""
    scale = max(-float(np.min(arr)), float(np.max(arr))) if arr.size else 0.0
    lo, hi = FLOAT64_LIMITS
    if arr.dtype == np.float64 and scale > 0 and not lo <= scale <= hi:
        raise ValueError(
            f"{name} values must be between {lo:.1e} and {hi:.1e} in magnitude (or 0) for "
            f"the energy to be computed in float64, got max |{name}| = {scale:.3e}; "
            f"rescale the {name} (e.g. {name} / {scale:.0e}, and beta with it for the L2 "
            "fidelity)"
        )
    return scale


def _c_bound(spacing) -> float:
    """``C = 2 Σ_a 1/h_a``: the largest ``|(Dᵀq)_s|`` over ``|q_s| ≤ 1``."""
    return 2.0 * sum(1.0 / h for h in spacing)


def _known(v, beta, fidelity, tv, spacing, scale):
    """``(u, reason, gap)`` when the minimiser is known without iterating, else None."""
    n = v.size
    spacing = relative_spacing(spacing)
    c_bound = _c_bound(spacing)
    # β so small that nothing changes
    if fidelity == "l1" and beta * c_bound <= 1.0:
        return v.copy(), f"u = v: beta * {c_bound:g} <= 1 (L1 keeps every pixel)", 0.0
    if fidelity in ("l2", "poisson"):
        limit = ROUNDING * (scale if fidelity == "l2" else 1.0)
        if beta * c_bound <= limit:
            from napari_tv.operators import tv_norm

            tv_v = tv_norm(v, kind=tv, scheme="forward", spacing=spacing)
            if fidelity == "l2":
                gap = c_bound**2 * n * beta / tv_v if tv_v > 0 else 0.0
            else:
                total = float(np.sum(v, dtype=np.float64))
                gap = 2.0 * c_bound**2 * beta * total / tv_v if tv_v > 0 else 0.0
            reason = f"u = v: beta below the data's rounding (|u* - v| <= {beta * c_bound:.1e})"
            return v.copy(), reason, float(gap)
    # β so large that the minimiser is constant
    k = math.sqrt(len(spacing)) if tv == "isotropic" else 1.0
    h_max = max(spacing)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if fidelity != "l1":
            # ‖g‖₁ >= the range (L2) or the range / mean (Poisson): most calls stop here,
            # without a pass over the data
            c = float(np.mean(v, dtype=np.float64))
            spread = float(np.max(v)) - float(np.min(v))
            if c > 0 and fidelity == "poisson":
                spread /= c
            if beta < k * h_max * spread:
                return None
        if fidelity == "l2":
            g_norm = float(np.sum(np.abs(v - v.dtype.type(c)), dtype=np.float64))
        elif fidelity == "l1":
            c = float(np.median(v))
            g_norm = float(n)
        elif c > 0:
            g_norm = float(np.sum(np.abs(1.0 - v / v.dtype.type(c)), dtype=np.float64))
        else:
            g_norm = 0.0
        threshold = k * h_max * g_norm
    if math.isfinite(threshold) and beta >= threshold:
        u = np.full(v.shape, c, dtype=v.dtype)
        return u, f"constant: beta >= {threshold:.3g} (the fidelity's minimising constant)", 0.0
    return None


def _energy_map(fidelity, factor, total_scaled):
    """``E = a E' + b``: the energy of the scaled problem in the caller's units."""
    if fidelity == "l2":
        return lambda e: e * factor * factor
    if fidelity == "l1":
        return lambda e: e * factor
    shift = -factor * math.log(factor) * total_scaled
    return lambda e: e * factor + shift


def solve_guarded(
    solve: Callable[..., TVResult],
    image: np.ndarray,
    beta: float,
    *,
    fidelity: str,
    tv: str,
    spacing: tuple[float, ...],
    init,
    callback,
    energy: Callable[[np.ndarray, np.ndarray], float],
    method: str,
    **kwargs,
) -> TVResult:
    """``solve(image, beta, ...)`` (an iterative method) with the extreme cases of the module
    docstring handled: a known minimiser is returned directly, float32 data near the ends of
    its range is solved scaled.  ``energy(u, v)`` is the energy of a known minimiser."""
    start = time.perf_counter()
    scale = check_magnitude(image)
    lo, hi = FLOAT32_SAFE
    safe = image.dtype != np.float32 or scale == 0 or lo <= scale <= hi
    if scale > 0:
        wide = image if safe else image.astype(np.float64)  # its TV in float64
        known = _known(wide, beta, fidelity, tv, spacing, scale)
        if known is not None:
            u, reason, gap = known
            return TVResult(
                u=u.astype(image.dtype), energy=energy(u, wide), n_iter=0, converged=True,
                gap=gap, method=method, extra={"shortcut": reason},
                elapsed=time.perf_counter() - start,
            )  # fmt: skip
    if safe:
        return solve(image, beta, fidelity=fidelity, tv=tv, spacing=spacing, init=init,
                     callback=callback, **kwargs)  # fmt: skip
    # float32 near the ends of its range: solve v / 2^k (exact) and scale back
    factor = 2.0 ** math.floor(math.log2(scale))
    inv = np.float32(1.0 / factor)
    scaled = image * inv
    emap = _energy_map(fidelity, factor, float(np.sum(scaled, dtype=np.float64)))
    scaled_beta = beta / factor if fidelity == "l2" else beta
    if isinstance(init, TVResult):
        p = init.extra.get("p")
        init = TVResult(
            u=np.asarray(init.u, dtype=np.float32) * inv, energy=math.nan, n_iter=0,
            converged=False, gap=math.nan, extra={} if p is None else {"p": p},
        )  # fmt: skip
    elif init is not None:
        init = np.asarray(init, dtype=np.float32) * inv

    def report(info):
        return bool(callback({**info, "energy": emap(float(info.get("energy", math.nan)))}))

    res = solve(scaled, scaled_beta, fidelity=fidelity, tv=tv, spacing=spacing, init=init,
                callback=None if callback is None else report, **kwargs)  # fmt: skip
    # the minimiser lies within the data's range (clipping lowers both terms)
    u = np.clip(res.u, scaled.min(), scaled.max()) * np.float32(factor)
    history = [{**h, "energy": emap(float(h["energy"]))} if "energy" in h else h
               for h in res.history]  # fmt: skip
    extra = {k: val for k, val in res.extra.items() if k in ("p", "kernels")}
    extra["scaled"] = factor
    return TVResult(
        u=u, energy=emap(res.energy), n_iter=res.n_iter, converged=res.converged, gap=res.gap,
        history=history, elapsed=res.elapsed, method=res.method, cancelled=res.cancelled,
        extra=extra,
    )  # fmt: skip
