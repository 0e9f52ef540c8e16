"""β from the data: the risk estimates are unbiased, the rules find the best β, the API,
the command line and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv import SAMPLE_3D_SCALE, denoise_tv, microscopy_2d, microscopy_3d
from napari_tv.beta_choice import (
    default_rule,
    estimate_noise_model,
    estimate_noise_sigma,
    risk,
    suggest_beta,
)


def _blocks(shape, levels=(0.0, 1.0, 0.4)):
    x = np.full(shape, levels[0])
    x[: shape[0] // 2, : shape[1] // 2] = levels[1]
    x[shape[0] // 3 :, shape[1] // 3 :] += levels[2]
    return x


def _mse(u, x):
    return float(np.mean((np.asarray(u, float) - x) ** 2))


def test_sure_is_unbiased():
    """Over independent noise draws the mean of SURE(β) matches the mean true error
    ||u_β - x||² / N, within three standard errors (a biased estimate, e.g. a wrong
    divergence, misses by many)."""
    x = _blocks((24, 24))
    sigma, beta = 0.2, 0.12
    diffs = []
    for seed in range(40):
        v = x + sigma * np.random.default_rng(seed).standard_normal(x.shape)
        est = risk(v, [beta], rule="sure", sigma=sigma, seed=seed).risk[0]
        u = denoise_tv(v, beta, tol=1e-4)
        diffs.append(est - _mse(u, x))
    diffs = np.asarray(diffs)
    se = diffs.std(ddof=1) / np.sqrt(len(diffs))
    assert abs(diffs.mean()) < 3 * se + 1e-4


def test_pure_is_unbiased_for_photon_counts():
    x = 4.0 + 16.0 * _blocks((24, 24))
    beta = 0.25
    diffs = []
    for seed in range(40):
        y = np.random.default_rng(seed).poisson(x).astype(float)
        est = risk(y, [beta], fidelity="poisson", noise_model=(1.0, 0.0), seed=seed).risk[0]
        u = denoise_tv(y, beta, fidelity="poisson", tol=1e-4)
        diffs.append(est - _mse(u, x))
    diffs = np.asarray(diffs)
    se = diffs.std(ddof=1) / np.sqrt(len(diffs))
    assert abs(diffs.mean()) < 3 * se + 1e-3


def _oracle(noisy, clean, grid, **kw):
    errors = [_mse(denoise_tv(noisy, b, **kw), clean) for b in grid]
    return float(grid[int(np.argmin(errors))])


@pytest.mark.parametrize("rule", ["sure", "jinv"])
def test_rules_find_the_best_beta_on_the_2d_sample(rule):
    noisy, clean = microscopy_2d()
    grid = np.geomspace(0.3, 12.0, 25)
    best = _oracle(noisy, clean, grid)
    beta = suggest_beta(noisy, rule=rule)
    assert best / 1.5 < beta < best * 1.5, (beta, best)


def test_sure_finds_the_best_beta_on_the_anisotropic_volume():
    noisy, clean = microscopy_3d(shape=(16, 96, 96), seed=3)
    grid = np.geomspace(0.3, 12.0, 21)
    best = _oracle(noisy, clean, grid, spacing=SAMPLE_3D_SCALE)
    beta = suggest_beta(noisy, spacing=SAMPLE_3D_SCALE)
    assert best / 1.5 < beta < best * 1.5, (beta, best)


@pytest.mark.parametrize("rule", ["pure", "jinv"])
def test_poisson_rules_find_the_best_beta_on_photon_counts(rule):
    clean = microscopy_2d()[1]
    counts = np.random.default_rng(5).poisson(np.clip(clean, 0, None)).astype(np.float32)
    grid = np.geomspace(0.03, 3.0, 25)
    best = _oracle(counts, clean, grid, fidelity="poisson")
    beta = suggest_beta(counts, rule=rule, fidelity="poisson")
    assert best / 1.5 < beta < best * 1.5, (beta, best)


def test_jinv_finds_the_best_beta_for_impulse_noise_with_l1():
    rng = np.random.default_rng(7)
    clean = microscopy_2d()[1] / 30.0
    noisy = clean.copy()
    hit = rng.random(clean.shape) < 0.1
    noisy[hit] = rng.choice([0.0, 1.0], size=hit.sum())
    grid = np.geomspace(0.05, 3.0, 25)
    best = _oracle(noisy, clean, grid, fidelity="l1")
    beta = suggest_beta(noisy, fidelity="l1")  # jinv, the default for L1
    assert best / 1.5 < beta < best * 1.5, (beta, best)


def test_rules_that_do_not_apply_say_so():
    v = _blocks((16, 16)) + 0.1
    with pytest.raises(ValueError, match=r"rule='sure' applies to fidelity 'l2'.*not 'poisson'"):
        suggest_beta(v, rule="sure", fidelity="poisson")
    with pytest.raises(ValueError, match=r"rule='pure' applies to fidelity 'poisson'"):
        suggest_beta(v, rule="pure")
    with pytest.raises(ValueError, match="rule must be one of"):
        suggest_beta(v, rule="gcv")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        suggest_beta(v, sigma=0.0)
    assert [default_rule(f) for f in ("l2", "poisson", "l1")] == ["jinv", "pure", "jinv"]


def test_noise_model_of_poisson_and_gaussian_data():
    rng = np.random.default_rng(0)
    x = np.linspace(2.0, 60.0, 200 * 200).reshape(200, 200)
    a, b = estimate_noise_model(rng.poisson(x).astype(float))
    assert a == pytest.approx(1.0, abs=0.15) and b < 2.0
    a, b = estimate_noise_model(x + 3.0 * rng.standard_normal(x.shape))
    assert a < 0.1 and b == pytest.approx(9.0, rel=0.15)
    mixed = 2.0 * rng.poisson(x / 2.0) + 2.0 * rng.standard_normal(x.shape)  # gain 2, var 4
    a, b = estimate_noise_model(mixed)
    assert a == pytest.approx(2.0, rel=0.2) and b == pytest.approx(4.0, abs=2.5)
    assert estimate_noise_sigma(x + 0.5 * rng.standard_normal(x.shape)) == pytest.approx(
        0.5, rel=0.05
    )


def test_search_reports_and_stops_and_returns_its_curve():
    v = _blocks((32, 32)) + 0.15 * np.random.default_rng(1).standard_normal((32, 32))
    seen = []
    beta, curve = suggest_beta(v, callback=seen.append, return_curve=True)
    assert curve.rule == "jinv" and curve.best == beta and beta in curve.beta
    assert curve.beta == sorted(curve.beta) and len(curve.beta) == len(seen) <= 12
    assert curve.risk[curve.beta.index(beta)] == min(curve.risk)
    assert all({"beta", "risk", "step", "fraction"} <= set(info) for info in seen)
    first = []
    stopped = suggest_beta(v, callback=lambda info: first.append(info) or True)
    assert len(first) == 2 and stopped in [info["beta"] for info in first]


def test_one_beta_for_all_channels():
    rng = np.random.default_rng(2)
    x = _blocks((32, 32))
    stack = np.stack([x + 0.15 * rng.standard_normal(x.shape) for _ in range(3)], axis=-1)
    beta = suggest_beta(stack, channel_axis=-1, sigma=0.15)
    one = suggest_beta(stack[..., 0], sigma=0.15)
    assert one / 1.5 < beta < one * 1.5


def test_denoise_tv_auto_records_the_beta_it_chose():
    noisy, _ = microscopy_2d()
    u, info = denoise_tv(noisy, "auto", return_info=True)
    assert info.extra["beta_rule"] == "jinv"
    np.testing.assert_allclose(u, denoise_tv(noisy, info.extra["beta"]), atol=1e-3)
    u, info = denoise_tv(noisy, "auto", beta_rule="sure", return_info=True)
    assert info.extra["beta_rule"] == "sure" and info.extra["beta"] > 0
    with pytest.raises(ValueError, match="beta must be a number >= 0 or 'auto'"):
        denoise_tv(noisy, "best")
    with pytest.raises(ValueError, match="beta_rule goes with beta='auto'"):
        denoise_tv(noisy, 1.0, beta_rule="sure")
