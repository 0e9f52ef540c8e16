"""Tests of the Qt-free β-sweep engine (``napari_tv.sweep``) against direct ``denoise_tv`` solves.

Closeness of two approximate solutions is judged by the certificate the solvers return: for the
L2 problem the energy is 1-strongly convex, so ``½‖u − u*‖² ≤ P(u) − P* ≤ gap·P(u)`` and two
iterates satisfy ``‖u₁ − u₂‖ ≤ √(2 gap₁ P₁) + √(2 gap₂ P₂)`` (``_l2_bound``).
"""

from __future__ import annotations

import math
import threading
import time
from functools import partial

import numpy as np
import pytest

from napari_tv.beta_choice import estimate_noise_sigma, suggest_beta
from napari_tv.fidelity import fidelity_value
from napari_tv.operators import graph_tv, tv_energy, tv_norm
from napari_tv.solvers import TVResult
from napari_tv.solvers.api import denoise_tv
from napari_tv.sweep import BetaSweep, Generation, LatestWins, beta_stack, l_curve

TIGHT = 1e-4  # solver tolerance (relative duality gap) where answers are compared


def _l2_bound(*results) -> float:
    """Upper bound on ‖u₁ − u₂‖ from the results' relative gaps (L2 fidelity, floor 0)."""
    return sum(math.sqrt(2.0 * max(r.gap, 0.0) * r.energy) for r in results) + 1e-9


def _blocks(shape, rng, sigma=0.1):
    """Piecewise-constant blocks plus a gentle ramp and Gaussian noise of std ``sigma``."""
    grids = np.meshgrid(*(np.linspace(0.0, 1.0, n) for n in shape), indexing="ij")
    clean = 0.3 * grids[-1] + sum(np.where(g > 0.5, 1.0, 0.0) for g in grids) / len(shape)
    return clean + sigma * rng.standard_normal(shape), clean


@pytest.fixture
def image(rng):
    return _blocks((32, 32), rng)[0]


# -- BetaSweep ---------------------------------------------------------------------------------
def test_warm_start_matches_cold_solve_with_fewer_iterations(image):
    sweep = BetaSweep(image, tol=TIGHT)
    sweep.solve(0.2)
    warm = sweep.solve(0.23)
    _, cold = denoise_tv(image, 0.23, tol=TIGHT, return_info=True)
    assert warm.converged and cold.converged
    assert np.linalg.norm(warm.u - cold.u) <= _l2_bound(warm, cold)
    assert warm.n_iter < cold.n_iter


def test_cache_returns_the_same_result_without_solving(image):
    calls = []

    def spy(img, beta, **kw):
        calls.append(beta)
        return denoise_tv(img, beta, **kw)

    sweep = BetaSweep(image, solver=spy)
    first = sweep.solve(0.3)
    u_before, p_before = first.u.copy(), first.extra["p"].copy()
    sweep.solve(0.33)  # warm-started from 0.3's result: must not write into it
    assert sweep.solve(0.3) is first
    assert calls == [0.3, 0.33]
    np.testing.assert_array_equal(first.u, u_before)
    np.testing.assert_array_equal(first.extra["p"], p_before)
    assert first.extra["beta"] == 0.3
    assert sweep.cached_betas() == [0.3, 0.33]


def test_warm_start_uses_nearest_beta_in_log_distance(image):
    inits = []

    def spy(img, beta, **kw):
        inits.append(kw.get("init"))
        return denoise_tv(img, beta, **kw)

    sweep = BetaSweep(image, method="chambolle", solver=spy, warm_ratio=10.0)
    small, large = sweep.solve(0.1), sweep.solve(1.0)
    sweep.solve(0.4)  # |log 0.4 - log 1| < |log 0.4 - log 0.1|, although 0.4 - 0.1 < 1 - 0.4
    sweep.solve(0.2)
    assert inits[0] is None
    assert inits[2] is large
    assert inits[3] is small


def test_warm_start_only_within_warm_ratio_and_without_foreign_step_sizes(image):
    inits = []

    def spy(img, beta, **kw):
        inits.append(kw.get("init"))
        return denoise_tv(img, beta, **kw)

    sweep = BetaSweep(image, method="primal_dual", solver=spy)  # warm_ratio=1.25
    first = sweep.solve(0.1)
    sweep.solve(0.2)  # twice as far as allowed: cold
    sweep.solve(0.11)
    assert inits[1] is None
    assert inits[2].extra["p"] is first.extra["p"] and inits[2].u is first.u
    assert "tau" in first.extra and "tau" not in inits[2].extra  # schedule was for β = 0.1
    partial = sweep.solve(0.3, callback=lambda info: True)
    sweep.solve(0.3)
    assert inits[4] is partial  # continuing the same β keeps its step sizes
    with pytest.raises(ValueError, match="warm_ratio"):
        BetaSweep(image, warm_ratio=0.5)


def test_cache_is_lru_and_bounded(image):
    sweep = BetaSweep(image, cache_size=2)
    sweep.solve(0.1)
    sweep.solve(0.2)
    sweep.solve(0.1)  # touch: 0.2 becomes the least recently used
    sweep.solve(0.3)
    assert sweep.cached_betas() == [0.1, 0.3]
    tiny = BetaSweep(image, cache_bytes=1)  # byte bound: only the newest survives
    tiny.solve(0.1)
    tiny.solve(0.2)
    assert tiny.cached_betas() == [0.2]
    tiny.clear_cache()
    assert tiny.cached_betas() == []


def test_cache_counts_the_memory_a_result_keeps_alive(image):
    """Chambolle's dual is a view into the sweep's storage (p and its halo copies): the cache
    counts the whole storage, once."""
    from napari_tv.sweep import _result_nbytes

    res = denoise_tv(image, 0.1, method="chambolle", max_num_iter=20, return_info=True)[1]
    p = res.extra["p"]
    assert isinstance(p.base, np.ndarray) and p.base.nbytes > p.nbytes
    assert _result_nbytes(res) == res.u.nbytes + p.base.nbytes


def test_cancelled_solve_is_kept_as_warm_start_only(image):
    inits = []

    def spy(img, beta, **kw):
        inits.append(kw.get("init"))
        return denoise_tv(img, beta, **kw)

    sweep = BetaSweep(image, tol=1e-12, max_num_iter=100_000, solver=spy)
    partial = sweep.solve(0.3, callback=lambda info: True)
    assert partial.cancelled and partial.n_iter < 100_000
    assert sweep.cached_betas() == []  # never returned as the answer ...
    again = sweep.solve(0.3, callback=lambda info: True)
    assert again is not partial and inits[1] is partial  # ... but continued from


def test_time_budget_gives_an_anytime_preview(image):
    sweep = BetaSweep(image, tol=1e-12, max_num_iter=100_000)
    gaps = [sweep.solve(0.3, time_budget=0.0).gap for _ in range(6)]  # stop at first report
    assert all(math.isfinite(g) for g in gaps)
    assert gaps[-1] < 0.5 * gaps[0]
    with pytest.raises(ValueError, match="time_budget"):
        sweep.solve(0.3, time_budget=-1.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])  # copied, and used as is
def test_image_is_never_modified(rng, dtype):
    raw = (rng.random((4, 12, 10)) * 200).astype(dtype)
    kept = raw.copy()
    sweep = BetaSweep(raw)
    sweep.solve(5.0)
    sweep.solve(8.0)
    sweep.preview_slice(5.0, 2)
    beta_stack(raw, [1.0, 3.0])
    l_curve(raw, [2.0])
    estimate_noise_sigma(raw)
    np.testing.assert_array_equal(raw, kept)


@pytest.mark.parametrize(("axis", "index"), [(0, 1), (1, -2), (2, 5)])
def test_preview_slice_is_the_2d_solve_of_that_slice(rng, axis, index):
    volume = _blocks((6, 10, 12), rng)[0]
    spacing = (2.0, 0.5, 0.75)
    sweep = BetaSweep(volume, spacing=spacing, tol=TIGHT)
    result = sweep.preview_slice(0.2, index, axis=axis)
    plane = np.take(volume, index, axis=axis)
    plane_spacing = tuple(s for k, s in enumerate(spacing) if k != axis)
    _, direct = denoise_tv(plane, 0.2, spacing=plane_spacing, tol=TIGHT, return_info=True)
    assert result.u.shape == plane.shape
    assert np.linalg.norm(result.u - direct.u) <= _l2_bound(result, direct)
    assert result.extra["slice"] == (axis, index % volume.shape[axis])
    assert sweep.preview_slice(0.2, index % volume.shape[axis], axis=axis) is result
    assert sweep.cached_betas() == []  # the volume's own cache is separate


def test_preview_slice_warm_starts_per_slice(rng):
    volume = _blocks((4, 16, 16), rng)[0]
    sweep = BetaSweep(volume, tol=TIGHT)
    sweep.preview_slice(0.2, 1)
    warm = sweep.preview_slice(0.23, 1)
    cold = BetaSweep(volume, tol=TIGHT).preview_slice(0.23, 1)
    assert warm.n_iter < cold.n_iter
    assert np.linalg.norm(warm.u - cold.u) <= _l2_bound(warm, cold)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"tv": "l3"}, ValueError),
        ({"method": "newton"}, ValueError),
        ({"method": "chambolle", "fidelity": "poisson"}, ValueError),
        ({"fidelity": "l4"}, ValueError),
        ({"tol": 0.0}, ValueError),
        ({"cache_size": 0}, ValueError),
        ({"spacing": (1.0,)}, ValueError),
        ({"max_num_iter": 1.5}, TypeError),
    ],
)
def test_bad_options_raise_naming_the_parameter(image, kwargs, error):
    with pytest.raises(error, match=list(kwargs)[-1]):
        BetaSweep(image, **kwargs)


def test_bad_calls_raise(image, rng):
    with pytest.raises(ValueError, match="beta"):
        BetaSweep(image).solve(-1.0)
    with pytest.raises(ValueError, match="3D"):
        BetaSweep(image).preview_slice(0.1, 0)
    with pytest.raises(ValueError, match="index"):
        BetaSweep(rng.random((3, 4, 5))).preview_slice(0.1, 3)
    with pytest.raises(ValueError, match="poisson"):
        BetaSweep(image - 10.0, method="primal_dual", fidelity="poisson")


def test_exact_method_uses_raw_integer_grid_and_no_warm_start(rng):
    raw = rng.integers(10, 20, size=(12, 12)).astype(np.uint8)
    inits = []

    def spy(img, beta, **kw):
        inits.append("init" in kw)
        return denoise_tv(img, beta, **kw)

    sweep = BetaSweep(raw, method="exact", solver=spy)
    np.testing.assert_array_equal(sweep.levels, np.arange(raw.min(), raw.max() + 1.0))
    result = sweep.solve(2.0)
    sweep.solve(3.0)
    direct = denoise_tv(raw, 2.0, method="exact")
    np.testing.assert_array_equal(result.u, direct)
    assert inits == [False, False]
    assert not sweep.solve(4.0, time_budget=0.0).cancelled  # no partial dichotomy to resume


# -- latest-wins -------------------------------------------------------------------------------
def test_generation_tokens():
    gen = Generation()
    a = gen.next()
    stop_a = gen.stop_callback(a)
    assert not gen.is_stale(a) and not stop_a({})
    b = gen.next()
    assert gen.is_stale(a) and stop_a({}) and not gen.is_stale(b)
    gen.close()
    assert gen.is_stale(b)


def test_latest_wins_delivers_only_the_last_of_a_burst(image):
    sweep = BetaSweep(image, tol=1e-4)
    betas = np.geomspace(0.05, 0.5, 20)
    delivered, errors = [], []
    with LatestWins(sweep.solve, delivered.append, errors.append) as runner:
        for beta in betas:
            runner.submit(beta)
        assert runner.wait(30.0)
    assert errors == [] and runner.last_error is None
    got = [r.extra["beta"] for r in delivered]
    assert got[-1] == betas[-1]
    assert got == sorted(got)  # delivered in submission order, never an older after a newer
    assert all(not r.cancelled for r in delivered)
    _, direct = denoise_tv(image, betas[-1], tol=1e-4, return_info=True)
    assert np.linalg.norm(delivered[-1].u - direct.u) <= _l2_bound(delivered[-1], direct)
    assert runner.n_delivered == len(delivered)
    assert runner.n_delivered + runner.n_dropped == len(betas)


def test_latest_wins_stops_the_running_solve_and_drops_its_result(image):
    sweep = BetaSweep(image, tol=1e-12, max_num_iter=1_000_000)  # would run for minutes
    started, release = threading.Event(), threading.Event()
    calls, returned, delivered = [], [], []

    def fn(beta, callback):
        calls.append(beta)
        if len(calls) == 1:
            started.set()
            release.wait(10.0)
            result = sweep.solve(beta, callback=callback)
        else:
            result = BetaSweep(image, tol=1e-4).solve(beta, callback=callback)
        returned.append(result)
        return result

    betas = list(np.linspace(0.1, 0.6, 20))
    runner = LatestWins(fn, delivered.append)
    runner.submit(betas[0])
    assert started.wait(10.0)
    for beta in betas[1:]:
        runner.submit(beta)
    release.set()
    assert runner.wait(30.0)
    runner.close()
    assert calls == [betas[0], betas[-1]]  # the 18 in between never ran
    assert returned[0].cancelled and returned[0].n_iter < 1_000_000
    assert [r.extra["beta"] for r in delivered] == [betas[-1]]
    assert runner.n_dropped == 19


def test_latest_wins_shows_intermediate_results_of_a_fast_burst():
    """``show_every``: requests 30 ms apart, each taking 40 ms: some superseded ones finish
    and are delivered on the way, in order, and the last request is delivered last."""

    def fn(x, callback):
        start = time.perf_counter()
        while time.perf_counter() - start < 0.04:
            time.sleep(0.002)
            if callback({"elapsed": time.perf_counter() - start}):
                return TVResult(u=np.zeros(1), energy=0.0, n_iter=1, converged=False,
                                gap=1.0, cancelled=True, extra={"x": x})
        return TVResult(u=np.zeros(1), energy=0.0, n_iter=1, converged=True, gap=0.0,
                        extra={"x": x})

    for show_every, expect_intermediate in ((0.1, True), (None, False)):
        delivered = []

        def deliver(r, delivered=delivered):
            delivered.append(r.extra["x"])

        with LatestWins(fn, deliver, show_every=show_every) as lw:
            for x in range(20):
                lw.submit(x)
                time.sleep(0.03)
            assert lw.wait(10.0)
        assert delivered[-1] == 19 and delivered == sorted(delivered)
        assert (len(delivered) >= 3) is expect_intermediate, delivered
        assert lw.n_delivered + lw.n_dropped == 20


def test_latest_wins_refines_a_budgeted_preview_until_converged(image):
    sweep = BetaSweep(image, tol=1e-3)
    delivered = []
    fn = partial(sweep.solve, time_budget=0.0)  # every run stops at its first report
    with LatestWins(fn, delivered.append, refine=10_000) as runner:
        runner.submit(0.3)
        assert runner.wait(60.0)
    assert len(delivered) > 2 and not any(r.converged for r in delivered[:-1])
    final = delivered[-1]
    assert final.converged and sweep.solve(0.3) is final
    assert delivered[-2].gap < delivered[0].gap
    _, direct = denoise_tv(image, 0.3, tol=1e-3, return_info=True)
    assert np.linalg.norm(final.u - direct.u) <= _l2_bound(final, direct)
    assert runner.n_run == len(delivered)


def test_latest_wins_refine_stops_after_its_limit(image):
    sweep = BetaSweep(image, tol=1e-12, max_num_iter=100_000)
    delivered = []
    with LatestWins(partial(sweep.solve, time_budget=0.0), delivered.append, refine=3) as runner:
        runner.submit(0.3)
        assert runner.wait(60.0)
    assert len(delivered) == 4 and all(r.cancelled for r in delivered)
    assert delivered[-1].n_iter < 100_000


def test_latest_wins_errors_go_to_on_error_and_the_worker_survives(image):
    sweep = BetaSweep(image)
    delivered, errors = [], []
    runner = LatestWins(sweep.solve, delivered.append, errors.append)
    runner.submit(-1.0)
    assert runner.wait(10.0)
    assert len(errors) == 1 and isinstance(errors[0], ValueError) and "beta" in str(errors[0])
    runner.submit(0.2)
    assert runner.wait(30.0)
    assert [r.extra["beta"] for r in delivered] == [0.2]
    runner.close()

    def broken(result):
        raise RuntimeError("handler failed")

    runner = LatestWins(sweep.solve, broken)
    runner.submit(0.2)
    assert runner.wait(10.0)
    assert isinstance(runner.last_error, RuntimeError) and runner.is_alive()
    runner.close()


def test_latest_wins_close_stops_a_long_solve(image):
    sweep = BetaSweep(image, tol=1e-12, max_num_iter=1_000_000)
    progressed = threading.Event()
    delivered = []
    runner = LatestWins(sweep.solve, delivered.append, progress=lambda info: progressed.set())
    runner.submit(0.3)
    assert progressed.wait(30.0)
    runner.close(timeout=30.0)
    assert not runner.is_alive()
    assert delivered == []
    with pytest.raises(RuntimeError, match="close"):
        runner.submit(0.3)


# -- beta_stack and l_curve ----------------------------------------------------------------------
def test_beta_stack_rows_match_direct_solves_in_caller_order(image):
    betas = [0.28, 0.2, 0.24, 0.24]
    stack, results = beta_stack(image, betas, tol=TIGHT, max_num_iter=50_000)
    assert stack.shape == (4, *image.shape)
    assert [r.extra["beta"] for r in results] == betas
    cold_iters = {}
    for beta, row, result in zip(betas, stack, results, strict=True):
        _, direct = denoise_tv(image, beta, tol=TIGHT, max_num_iter=50_000, return_info=True)
        cold_iters[beta] = direct.n_iter
        np.testing.assert_array_equal(row, result.u)
        assert np.linalg.norm(row - direct.u) <= _l2_bound(result, direct)
    assert results[2] is results[3]  # a repeated β is solved once
    warm_iters = sum(r.n_iter for r in results[:3])
    assert warm_iters < sum(cold_iters.values())


def test_beta_stack_cancel_leaves_the_rest_unsolved(image):
    betas = [0.3, 0.1, 0.2]
    infos = []

    def cancel_at_second(info):
        infos.append(info)
        return info["step"] == 1

    stack, results = beta_stack(image, betas, callback=cancel_at_second)
    assert results[1] is not None and not results[1].cancelled  # β = 0.1, solved first
    assert results[2].cancelled  # β = 0.2, interrupted
    assert results[0] is None and np.isnan(stack[0]).all()
    fractions = [i["fraction"] for i in infos]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
    assert {i["beta_index"] for i in infos} == {1, 2}


@pytest.mark.parametrize(
    ("tv", "spacing"), [("isotropic", None), ("anisotropic", (2.0, 0.5))], ids=["iso", "aniso"]
)
def test_l_curve_matches_the_solver_energy(image, tv, spacing):
    betas = [0.3, 0.05, 0.1]
    kw = {"tv": tv, "spacing": spacing, "tol": TIGHT, "max_num_iter": 50_000}
    curve = l_curve(image, betas, **kw)
    stack, results = beta_stack(image, betas, **kw)
    np.testing.assert_array_equal(curve["beta"], betas)
    for k, beta in enumerate(betas):
        u = stack[k]
        fid = fidelity_value(u, image, "l2")
        tv_u = tv_norm(u, kind=tv, scheme="forward", boundary="neumann", spacing=spacing)
        energy = tv_energy(u, image, beta, tv=tv, spacing=spacing)
        np.testing.assert_allclose(curve["fidelity"][k], fid, rtol=1e-3)
        np.testing.assert_allclose(curve["tv"][k], tv_u, rtol=1e-3)
        np.testing.assert_allclose(curve["energy"][k], energy, rtol=1e-5)
        np.testing.assert_allclose(curve["energy"][k], results[k].energy, rtol=1e-5)
    order = np.argsort(betas)
    assert np.all(np.diff(curve["fidelity"][order]) > 0)
    assert np.all(np.diff(curve["tv"][order]) < 0)
    assert curve["converged"].all()


def test_l_curve_exact_uses_graph_tv(rng):
    raw = rng.integers(0, 8, size=(10, 10)).astype(np.uint8)
    curve = l_curve(raw, [0.5, 2.0], method="exact", connectivity=2)
    for k, beta in enumerate([0.5, 2.0]):
        u = denoise_tv(raw, beta, method="exact", connectivity=2)
        np.testing.assert_allclose(curve["tv"][k], graph_tv(u, connectivity=2), rtol=1e-12)
        np.testing.assert_allclose(
            curve["energy"][k], tv_energy(u, raw, beta, connectivity=2), rtol=1e-12
        )


def test_sweeps_reject_bad_betas(image):
    for bad in ([], [0.1, -1.0], [np.nan], [[0.1, 0.2]]):
        with pytest.raises(ValueError, match="betas"):
            beta_stack(image, bad)
    with pytest.raises(TypeError, match="betas"):
        l_curve(image, ["a"])


# -- noise and β selection -----------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.3])
@pytest.mark.parametrize("shape", [(4096,), (64, 64), (8, 32, 32)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("seed", [0, 1])
def test_estimate_noise_sigma_recovers_gaussian_sigma(shape, sigma, seed):
    noisy, _ = _blocks(shape, np.random.default_rng(seed), sigma=sigma)
    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.1)


def test_estimate_noise_sigma_of_clean_image_is_small_and_3d_uses_planes(rng):
    _, clean = _blocks((64, 64), rng)
    assert estimate_noise_sigma(clean) < 1e-3
    # z differences full of structure must not leak into a 3D estimate
    noisy, _ = _blocks((6, 32, 32), rng, sigma=0.1)
    striped = noisy + 5.0 * (np.arange(6) % 2)[:, None, None]
    assert estimate_noise_sigma(striped) == pytest.approx(estimate_noise_sigma(noisy))
    with pytest.raises(ValueError, match="axis"):
        estimate_noise_sigma(np.ones((1, 5)))


def test_suggest_beta_meets_the_discrepancy(rng):
    sigma = 0.1
    noisy, _ = _blocks((32, 32), rng, sigma=sigma)
    beta = suggest_beta(noisy, sigma=sigma, rule="discrepancy", rtol=0.01, tol=TIGHT)
    u = denoise_tv(noisy, beta, tol=TIGHT)
    residual = float(np.sum((u - noisy) ** 2))
    assert residual / (noisy.size * sigma**2) == pytest.approx(1.0, abs=0.015)


def test_suggest_beta_with_the_exact_method_stops_on_its_grid(rng):
    clean = np.kron(np.eye(2), np.ones((8, 8))) * 40 + 10
    raw = np.clip(clean + rng.normal(0, 6, clean.shape), 0, 255).astype(np.uint8)
    target = raw.size * 6.0**2

    def ratio(beta):
        u = denoise_tv(raw, beta, method="exact")
        return float(np.sum((u - raw.astype(np.float64)) ** 2)) / target

    steps = []
    beta = suggest_beta(raw, sigma=6.0, rule="discrepancy", method="exact", callback=steps.append)
    assert len(steps) < 60
    assert ratio(beta) == pytest.approx(1.0, abs=0.01) or ratio(beta / 1.002) <= 1 <= ratio(
        beta * 1.002
    )


def test_suggest_beta_is_monotone_in_sigma_and_estimates_sigma(rng):
    noisy, _ = _blocks((32, 32), rng, sigma=0.1)
    for rule in ("discrepancy", "sure"):
        betas = [suggest_beta(noisy, sigma=s, rule=rule) for s in (0.06, 0.1, 0.14)]
        assert betas[0] < betas[1] < betas[2]
        sigma_hat = estimate_noise_sigma(noisy)
        assert suggest_beta(noisy, rule=rule) == suggest_beta(noisy, sigma=sigma_hat, rule=rule)


def test_suggest_beta_rejects_impossible_requests(image):
    with pytest.raises(ValueError, match="too large"):
        suggest_beta(image, sigma=10.0, rule="discrepancy")
    with pytest.raises(ValueError, match="fidelity"):
        suggest_beta(image, sigma=0.1, fidelity="l1", rule="discrepancy")
    with pytest.raises(ValueError, match="sigma"):
        suggest_beta(image, sigma=-0.1)
