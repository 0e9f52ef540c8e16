r"""Choosing β from the data: noise estimates and four rules.

:func:`suggest_beta` picks the β that minimises an estimate of the denoising error, computed
from the noisy data alone:

``"sure"`` (Gaussian noise, ``fidelity="l2"``)
    Stein's unbiased risk estimate of :math:`\|u_\beta - x\|^2` (x the clean image),
    :math:`\mathrm{SURE}(\beta) = \|u_\beta - v\|^2 - N\sigma^2 + 2\sigma^2\,
    \operatorname{div} u_\beta(v)` (Stein 1981), with the divergence of the denoiser by one
    Monte-Carlo finite difference, :math:`b^\top(u_\beta(v + \epsilon b) - u_\beta(v))/
    \epsilon` for a random ±1 field :math:`b` (Ramani, Blu & Unser 2008),
    :math:`\epsilon = 0.1\,\sigma`.
``"pure"`` (photon counts, ``fidelity="poisson"``)
    The same estimate for signal-dependent noise of variance :math:`a\,x + b` (Poisson counts
    with gain ``a`` plus Gaussian read noise of variance ``b``; pure Poisson: ``a = 1,
    b = 0``), to first order: :math:`\|u - v\|^2 - \sum_k w_k + 2\sum_k w_k\,\partial_k u_k`
    with :math:`w_k = a\,v_k + b` (an unbiased estimate of the variance at k), the Poisson
    unbiased risk estimate (PURE, Luisier, Vonesch, Blu & Unser 2010) and its mixed
    Poisson–Gaussian form (PG-URE, Le Montagner, Angelini & Olivo-Marin 2014); the weighted
    divergence by the same Monte-Carlo difference, :math:`b` zero where
    :math:`v_k < \epsilon` (counts must stay non-negative).
``"jinv"`` (any independent noise, every fidelity)
    Self-supervised, J-invariant (Batson & Royer 2019, Noise2Self; scikit-image's
    ``calibrate_denoiser``): the pixels are split into 4 interleaved sets (2×2 in-plane);
    each set is replaced by the mean of its 4 in-plane neighbours, the image denoised, and the
    denoised set compared with the noisy one. The loss is the mean over the sets, which is
    the error of a slightly weaker denoiser plus the noise variance, at ~4 solves per β.
``"discrepancy"`` (Gaussian noise, L2)
    Morozov's discrepancy principle, :math:`\|u_\beta - v\|^2 = N\sigma^2` (over-smooths:
    it picks about twice the best β on natural images).

The default rule is ``"jinv"`` for L2 and L1 and ``"pure"`` for Poisson: the rules that met
the accuracy goals at the lowest cost on images the tests do not use
(``benchmarks/bench_beta.py``, docs/benchmarks.md).  SURE is exact when σ is known and half
the cost of J-invariance, but the noise estimate is biased upwards on densely textured images
at low noise (grass at σ = 0.05: +48 %), and SURE then over-smooths (1.4 dB lost there, 0.03
dB for J-invariance); PURE fits its noise model from the data with the same weakness but met
the goal (0.25 dB at worst) at a third of J-invariance's cost.  The risk is minimised
over log β: β is doubled or halved from a start guessed from the noise level until the risk
rises on both sides, then refined by parabolic steps on the three best points (7-10
evaluations, each warm-started from the nearest β solved; the perturbed solves of SURE/PURE
are warm-started from the unperturbed one at the same β).

References
----------
C. M. Stein, "Estimation of the mean of a multivariate normal distribution", Ann. Statist.
9(6), 1135-1151, 1981.
S. Ramani, T. Blu, M. Unser, "Monte-Carlo SURE: a black-box optimization of regularization
parameters for general denoising algorithms", IEEE TIP 17(9), 1540-1554, 2008.
F. Luisier, C. Vonesch, T. Blu, M. Unser, "Fast interscale wavelet denoising of
Poisson-corrupted images", Signal Processing 90(2), 415-427, 2010.
C. Le Montagner, E. Angelini, J.-C. Olivo-Marin, "An unbiased risk estimator for image
denoising in the presence of mixed Poisson-Gaussian noise", IEEE TIP 23(3), 1255-1268, 2014.
J. Batson, L. Royer, "Noise2Self: blind denoising by self-supervision", ICML 2019.
V. A. Morozov, "On the solution of functional equations by the method of regularization",
Soviet Math. Dokl. 7, 414-417, 1966.
A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical Poissonian-Gaussian noise
modeling and fitting for single-image raw-data", IEEE TIP 17(10), 1737-1754, 2008.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from napari_tv._validation import as_float_array, check_choice, check_int, check_real
from napari_tv.fidelity import FIDELITIES
from napari_tv.solvers._result import TVResult
from napari_tv.solvers.api import denoise_tv
from napari_tv.sweep import BetaSweep

__all__ = [
    "RULES",
    "RULE_NAMES",
    "RiskCurve",
    "default_rule",
    "estimate_noise_model",
    "estimate_noise_sigma",
    "risk",
    "suggest_beta",
]

Callback = Callable[[dict], Any]

RULES = ("sure", "pure", "jinv", "discrepancy")
#: how the rules are named to a user
RULE_NAMES = {
    "sure": "SURE",
    "pure": "PURE",
    "jinv": "J-invariance",
    "discrepancy": "the discrepancy principle",
}
#: which fidelities each rule applies to
RULE_FIDELITIES = {
    "sure": ("l2",),
    "pure": ("poisson",),
    "jinv": FIDELITIES,
    "discrepancy": ("l2",),
}
#: the Monte-Carlo step of the divergence, in units of the noise's standard deviation
EPSILON = 0.1
#: the iterative solvers' tolerance while β is searched (the risk estimate needs solutions
#: far more accurate than the perturbation; 1e-4 kept SURE within 2 % of the true error)
SEARCH_TOL = 1e-4
#: ... and for J-invariance, which compares solutions with the data directly
JINV_TOL = 1e-3

_MAD_TO_SIGMA = 0.6744897501960817  # median |Z| for Z ~ N(0, 1)
_TRUNCATED_4 = 0.9988660768  # E[Z² ; |Z| <= 4] for Z ~ N(0, 1)


def default_rule(fidelity: str) -> str:
    """The rule :func:`suggest_beta` uses for ``fidelity`` when none is given."""
    check_choice("fidelity", fidelity, FIDELITIES)
    return {"l2": "jinv", "poisson": "pure", "l1": "jinv"}[fidelity]


# ------------------------------------------------------------------------------- noise


def _haar_details(v: np.ndarray) -> np.ndarray:
    """Finest diagonal Haar details of the in-plane axes (all positions): each has the
    noise's standard deviation on white noise and vanishes on smooth parts."""
    axes = range(v.ndim) if v.ndim <= 2 else (v.ndim - 2, v.ndim - 1)
    d = v.astype(np.float64)
    for a in axes:
        if v.shape[a] < 2:
            raise ValueError(f"image must have >= 2 samples along axis {a}, got shape {v.shape}")
        d = np.diff(d, axis=a) / math.sqrt(2.0)
    return d


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
    return float(np.median(np.abs(_haar_details(v))) / _MAD_TO_SIGMA)


def estimate_noise_model(image: ArrayLike, bins: int = 16) -> tuple[float, float]:
    """``(a, b)`` of a signal-dependent noise of variance ``a * mean + b`` (Poisson counts
    with gain ``a`` plus Gaussian noise of variance ``b``), fitted from the data.

    The finest diagonal Haar details (:func:`estimate_noise_sigma`) are grouped by the local
    mean of their 2×2 block into ``bins`` bins of equal counts; each bin's variance (of the
    details within 4 MAD-sigmas, so that edges do not count) is fitted by ``a * mean + b`` in
    least squares, both clipped at 0 (Foi et al. 2008,
    simplified: no clipping model).  Pure Poisson counts give ``a ≈ 1, b ≈ 0``; Gaussian noise
    ``a ≈ 0, b ≈ σ²``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> counts = rng.poisson(np.linspace(2, 60, 256 * 256).reshape(256, 256)).astype(float)
    >>> a, b = estimate_noise_model(counts)
    >>> round(a, 1), b < 1.0
    (1.0, True)
    """
    v = as_float_array(image, "image").astype(np.float64)
    d = _haar_details(v)
    # the mean of each detail's 2x2 (in-plane) block, at the same positions as d
    m = v
    axes = range(v.ndim) if v.ndim <= 2 else (v.ndim - 2, v.ndim - 1)
    for a in axes:
        sl0 = [slice(None)] * v.ndim
        sl1 = [slice(None)] * v.ndim
        sl0[a], sl1[a] = slice(0, -1), slice(1, None)
        m = 0.5 * (m[tuple(sl0)] + m[tuple(sl1)])
    d, m = d.ravel(), m.ravel()
    order = np.argsort(m, kind="stable")
    means, variances = [], []
    for chunk in np.array_split(order, max(2, int(bins))):
        if len(chunk) < 16:
            continue
        dc = d[chunk]
        # variance of the details within 4 robust sigmas (edges excluded); the MAD alone is
        # biased for the discrete details of low counts (0.95, 1.45 instead of 1, 0)
        mad = float(np.median(np.abs(dc))) / _MAD_TO_SIGMA
        kept = dc[np.abs(dc) <= 4.0 * mad] if mad > 0 else dc
        means.append(float(np.mean(m[chunk])))
        variances.append(float(np.mean(kept**2)) / _TRUNCATED_4)
    means_a, var_a = np.asarray(means), np.asarray(variances)
    design = np.stack([means_a, np.ones_like(means_a)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, var_a, rcond=None)
    if a < 0:
        a, b = 0.0, float(np.median(var_a))
    if b < 0:
        a, b = max(float(np.sum(means_a * var_a) / max(np.sum(means_a**2), 1e-300)), 0.0), 0.0
    return float(a), float(b)


# ------------------------------------------------------------------------------- risks


@dataclass
class RiskCurve:
    """The risk estimates a search evaluated: ``beta`` and ``risk`` (per voxel, sorted by
    β), the ``rule``, the noise model used and the chosen ``best`` β."""

    rule: str
    beta: list[float] = field(default_factory=list)
    risk: list[float] = field(default_factory=list)
    best: float = math.nan
    noise: dict[str, float] = field(default_factory=dict)
    solves: int = 0

    def add(self, beta: float, value: float) -> None:
        i = int(np.searchsorted(self.beta, beta))
        self.beta.insert(i, float(beta))
        self.risk.insert(i, float(value))


class _Estimator:
    """``__call__(beta) -> risk per voxel`` for one rule on one image (one channel)."""

    def __init__(self, image, rule, fidelity, noise, solve_kw, rng):
        self.v = image.astype(np.float64)
        self.rule, self.noise = rule, noise
        self.n = image.size
        kw = {"fidelity": fidelity, "tol": SEARCH_TOL, "cache_size": 64, **solve_kw}
        self.solves = 0
        if rule in ("sure", "pure", "discrepancy"):
            self.sweep = BetaSweep(image, **kw)
        if rule in ("sure", "pure"):
            var = self._variance()
            eps = EPSILON * math.sqrt(max(float(np.mean(var)), 1e-300))
            b = rng.choice((-1.0, 1.0), size=image.shape)
            if rule == "pure":
                b[image < eps] = 0.0  # counts stay >= 0
            self.var, self.eps, self.b = var, eps, b
            self.perturbed = (image + eps * b).astype(image.dtype)
            self.kw = {k: v for k, v in kw.items() if k != "cache_size"}
        if rule == "jinv":
            self.masks = _masks(image.shape)
            self.masked = [BetaSweep(_interpolate(image, mask), **kw) for mask in self.masks]

    def _variance(self) -> np.ndarray:
        a, b = self.noise.get("gain", 0.0), self.noise.get("variance", 0.0)
        return a * np.maximum(self.v, 0.0) + b

    def __call__(self, beta: float, callback=None) -> float:
        if self.rule == "jinv":
            loss = 0.0
            for mask, sweep in zip(self.masks, self.masked, strict=True):
                u = sweep.solve(beta, callback=callback).u
                loss += float(np.sum((u[mask] - self.v[mask]) ** 2))
                self.solves += 1
            return loss / self.n
        u = self.sweep.solve(beta, callback=callback).u.astype(np.float64)
        self.solves += 1
        resid = float(np.sum((u - self.v) ** 2))
        if self.rule == "discrepancy":
            return resid / self.n
        # the perturbed solve starts from the unperturbed result at the same β (a distance
        # of about epsilon), never from the perturbed one at another β
        start = self.sweep.solve(beta)
        init = TVResult(
            u=start.u,
            energy=math.nan,
            n_iter=0,
            converged=False,
            gap=math.inf,
            method=start.method,
            extra={"p": start.extra.get("p")},
        )
        up = denoise_tv(self.perturbed, beta, init=init, callback=callback, **self.kw)
        up = up.astype(np.float64)
        self.solves += 1
        weighted_div = float(np.sum(self.var * self.b * (up - u))) / self.eps
        return (resid - float(np.sum(self.var)) + 2.0 * weighted_div) / self.n


def _masks(shape: tuple[int, ...]) -> list[np.ndarray]:
    """The 4 interleaved in-plane sets (2×2 grid) of a 1-, 2- or 3-D image (1-D: 2 sets)."""
    grids = np.indices(shape)
    if len(shape) == 1:
        return [grids[0] % 2 == k for k in range(2)]
    y, x = grids[-2], grids[-1]
    return [(y % 2 == i) & (x % 2 == j) for i in range(2) for j in range(2)]


def _interpolate(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with the masked samples replaced by the mean of their in-plane neighbours
    (none of which is masked: the sets are interleaved), so a denoiser of the result does not
    see the masked values (J-invariance)."""
    v = image.astype(np.float64)
    axes = (v.ndim - 1,) if v.ndim == 1 else (v.ndim - 2, v.ndim - 1)
    total = np.zeros_like(v)
    count = np.zeros_like(v)
    for a in axes:
        for shift in (1, -1):
            rolled = np.roll(v, shift, axis=a)
            valid = np.ones(v.shape, bool)
            edge = [slice(None)] * v.ndim
            edge[a] = slice(0, 1) if shift == 1 else slice(-1, None)
            valid[tuple(edge)] = False
            total += np.where(valid, rolled, 0.0)
            count += valid
    out = v.copy()
    out[mask] = (total / np.maximum(count, 1))[mask]
    return out.astype(image.dtype)


def _start_beta(v: np.ndarray, fidelity: str, noise: dict) -> float:
    """A first guess: about the best β of natural images at that noise level."""
    if fidelity == "l2":
        return max(noise["sigma"], 1e-12)
    if fidelity == "poisson":
        return 1.0 / math.sqrt(max(float(np.mean(v)), 1e-12))
    return 0.5


def _noise(image: np.ndarray, rule: str, fidelity: str, sigma, noise_model) -> dict:
    if rule == "pure" or (rule == "jinv" and fidelity == "poisson"):
        if noise_model is None:
            a, b = estimate_noise_model(image)
        else:
            a, b = (check_real("noise_model", float(x), minimum=0.0) for x in noise_model)
        return {"gain": a, "variance": b, "sigma": math.sqrt(a * max(np.mean(image), 0) + b)}
    s = estimate_noise_sigma(image) if sigma is None else check_real("sigma", sigma)
    s = check_real("sigma", s, minimum=0.0, strict=True)
    return {"gain": 0.0, "variance": s * s, "sigma": s}


# ------------------------------------------------------------------------------ search


def _search(evaluate, start: float, curve: RiskCurve, callback, max_evals: int) -> float:
    """Minimise ``evaluate(beta)`` over log β: bracket by factors of 2 from ``start``, then
    parabolic steps on the three best points until the bracket is within a factor 1.15."""
    seen: dict[float, float] = {}
    stop = False

    def f(beta: float) -> float:
        nonlocal stop
        if beta not in seen:
            seen[beta] = evaluate(beta)
            curve.add(beta, seen[beta])
            if callback is not None:
                info = {
                    "rule": curve.rule,
                    "beta": beta,
                    "risk": seen[beta],
                    "step": len(seen),
                    "fraction": min(len(seen) / max_evals, 1.0),
                }
                stop = bool(callback(info)) or stop
        return seen[beta]

    best = start
    f(start)
    up = start * 2.0
    direction = 2.0 if f(up) < f(start) else 0.5
    beta = start if direction == 2.0 else start
    while len(seen) < max_evals and not stop:
        nxt = beta * direction
        if f(nxt) >= f(beta):
            break
        beta = nxt
    # refine around the best point
    while len(seen) < max_evals and not stop:
        xs = sorted(seen)
        k = min(range(len(xs)), key=lambda i: seen[xs[i]])
        if k == 0 or k == len(xs) - 1:  # the best at an end: keep going that way
            nxt = xs[k] * (0.5 if k == 0 else 2.0)
            if nxt in seen:
                break
            f(nxt)
            continue
        a, b, c = (math.log(x) for x in xs[k - 1 : k + 2])
        fa, fb, fc = (seen[x] for x in xs[k - 1 : k + 2])
        if c - a <= math.log(1.15):
            break
        den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
        x = b if den == 0 else b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
        lo, hi = a + 0.1 * (c - a), c - 0.1 * (c - a)
        x = min(max(x, lo), hi)
        if abs(x - b) < 0.02 * (c - a):  # too close to the middle point: split the larger side
            x = 0.5 * (a + b) if b - a > c - b else 0.5 * (b + c)
        f(math.exp(x))
    best = min(seen, key=seen.get)
    return best


def suggest_beta(
    image: ArrayLike,
    sigma: float | None = None,
    *,
    rule: str | None = None,
    fidelity: str = "l2",
    noise_model: Sequence[float] | None = None,
    method: str = "primal_dual",
    tv: str = "isotropic",
    spacing: float | Sequence[float] | None = None,
    channel_axis: int | None = None,
    callback: Callback | None = None,
    return_curve: bool = False,
    max_evals: int = 12,
    seed: int = 0,
    **solver_kw,
) -> float | tuple[float, RiskCurve]:
    r"""A β for ``image`` chosen from the data by ``rule`` (see the module's docstring).

    Parameters
    ----------
    image : array_like, 1-D, 2-D or 3-D (one more axis with ``channel_axis``)
        The noisy data.
    sigma : float, optional
        Standard deviation of Gaussian noise (``"sure"``, ``"discrepancy"``); estimated by
        :func:`estimate_noise_sigma` when omitted.
    rule : {"sure", "pure", "jinv", "discrepancy"}, optional
        Default: :func:`default_rule` of ``fidelity`` (``"jinv"``, ``"pure"``, ``"jinv"`` for
        L2, Poisson, L1).
    fidelity : {"l2", "l1", "poisson"}
        The fidelity of the denoising the β is for.
    noise_model : (gain, variance), optional
        The signal-dependent noise of ``"pure"`` (variance ``gain * x + variance``); fitted by
        :func:`estimate_noise_model` when omitted.
    method, tv, spacing
        The iterative solver used while searching and its options (``method="exact"`` is
        searched with ``"primal_dual"`` and anisotropic TV, the graph TV of connectivity 1).
    channel_axis : int, optional
        One β for all channels: the risks of the channels are added.
    callback : callable, optional
        ``callback({"rule", "beta", "risk", "step", "fraction"}) -> bool`` after each
        evaluated β; True stops the search (the best β so far is returned).
    return_curve : bool
        Also return the :class:`RiskCurve` (the β evaluated and their risk estimates).
    max_evals : int
        Evaluated β at most (7-10 are typical).
    seed : int
        Seed of the Monte-Carlo probe of ``"sure"``/``"pure"`` (the result is reproducible).
    **solver_kw
        ``boundary``, ``max_num_iter``; for ``rule="discrepancy"`` also ``rtol``, ``xtol``,
        ``max_steps`` (see :func:`suggest_beta_discrepancy`).

    Returns
    -------
    float, or (float, RiskCurve)

    Raises
    ------
    ValueError
        A rule that does not apply to the fidelity (``"sure"``/``"discrepancy"`` need L2,
        ``"pure"`` Poisson); a bad ``sigma`` or noise model; an invalid image.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron([[0.0, 1.0], [1.0, 0.0]], np.ones((24, 24)))
    >>> noisy = clean + 0.15 * rng.standard_normal(clean.shape)
    >>> beta = suggest_beta(noisy)  # J-invariance
    >>> 0.05 < beta < 0.5
    True
    """
    check_choice("fidelity", fidelity, FIDELITIES)
    rule = default_rule(fidelity) if rule is None else check_choice("rule", rule, RULES)
    if fidelity not in RULE_FIDELITIES[rule]:
        raise ValueError(
            f"rule={rule!r} applies to fidelity {' or '.join(map(repr, RULE_FIDELITIES[rule]))}"
            f", not {fidelity!r}; use rule='jinv' (any fidelity) or "
            f"rule={default_rule(fidelity)!r}"
        )
    max_evals = check_int("max_evals", max_evals, minimum=3)
    if rule == "discrepancy":
        if channel_axis is not None:
            raise ValueError("rule='discrepancy' does not take channel_axis")
        beta = suggest_beta_discrepancy(
            image, sigma, method=method, tv=tv, spacing=spacing, callback=callback, **solver_kw
        )
        curve = RiskCurve(rule=rule, best=beta, noise={"sigma": sigma or math.nan})
        return (beta, curve) if return_curve else beta
    raw = np.asarray(image)
    arr = as_float_array(raw, "image", ndims=(2, 3, 4) if channel_axis is not None else (1, 2, 3))
    channels = [arr] if channel_axis is None else list(np.moveaxis(arr, channel_axis, 0))
    if method == "exact":
        method, tv = "primal_dual", "anisotropic"
    solve_kw = {"method": method, "tv": tv, "spacing": spacing, **solver_kw}
    rng = np.random.default_rng(seed)
    estimators = []
    for channel in channels:
        if fidelity == "poisson" and float(np.min(channel)) < 0:
            raise ValueError(
                "image must be >= 0 for fidelity='poisson' (photon counts), got minimum "
                f"{float(np.min(channel))!r}"
            )
        noise = _noise(channel, rule, fidelity, sigma, noise_model)
        estimators.append(_Estimator(channel, rule, fidelity, noise, solve_kw, rng))
    curve = RiskCurve(rule=rule, noise=dict(estimators[0].noise))
    start = _start_beta(channels[0].astype(np.float64), fidelity, estimators[0].noise)

    def evaluate(beta: float) -> float:
        return float(sum(e(beta) for e in estimators))

    curve.best = _search(evaluate, start, curve, callback, max_evals)
    curve.solves = sum(e.solves for e in estimators)
    return (curve.best, curve) if return_curve else curve.best


def risk(image: ArrayLike, betas: Sequence[float], **kw) -> RiskCurve:
    """The risk estimate of a rule at each of ``betas`` (same options as
    :func:`suggest_beta`; ``best`` is the β of the smallest estimate among them)."""
    rule = kw.pop("rule", None)
    fidelity = kw.pop("fidelity", "l2")
    rule = default_rule(fidelity) if rule is None else check_choice("rule", rule, RULES)
    if rule == "discrepancy" or fidelity not in RULE_FIDELITIES[rule]:
        raise ValueError(f"risk needs a risk estimate: rule='sure', 'pure' or 'jinv', got {rule!r}")
    sigma, noise_model = kw.pop("sigma", None), kw.pop("noise_model", None)
    seed = kw.pop("seed", 0)
    arr = as_float_array(image, "image")
    if kw.get("method") == "exact":
        kw.update(method="primal_dual", tv="anisotropic")
    noise = _noise(arr, rule, fidelity, sigma, noise_model)
    est = _Estimator(arr, rule, fidelity, noise, kw, np.random.default_rng(seed))
    curve = RiskCurve(rule=rule, noise=dict(noise))
    for beta in sorted(float(b) for b in betas):
        curve.add(beta, est(beta))
    curve.best = curve.beta[int(np.argmin(curve.risk))]
    curve.solves = est.solves
    return curve


# ------------------------------------------------------------------- the discrepancy


def _residual(sweep, beta: float) -> float:
    diff = sweep.solve(beta).u.astype(np.float64) - sweep.image
    return float(np.dot(diff.ravel(), diff.ravel()))


def suggest_beta_discrepancy(
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
        :class:`~napari_tv.sweep.BetaSweep` options (``method``, ``tv``, ``spacing``, ``tol``
        — default ``1e-4`` here). ``fidelity`` must be ``"l2"``.

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

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron(np.eye(2), np.ones((16, 16)))
    >>> beta = suggest_beta_discrepancy(clean + 0.1 * rng.standard_normal(clean.shape), 0.1)
    >>> 0.01 < beta < 1.0
    True
    """
    if sweep_kw.get("fidelity", "l2") != "l2":
        raise ValueError(f"rule='discrepancy' needs fidelity='l2', got {sweep_kw['fidelity']!r}")
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
