"""Gradient descent on the ε-smoothed TV energy: minimiser, smoothed optimum, monotonicity, API."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv.operators import tv_energy
from napari_tv.solvers._gap import fidelity_floor
from napari_tv.solvers._result import TVResult
from napari_tv.solvers.gradient_descent import solve_gradient_descent
from reference.descent import (
    energy,
    rof_dual_fista,
    smoothed_descent,
    smoothed_energy,
    tv_primal_dual,
)

SHAPES = {2: (12, 10), 3: (5, 6, 4)}


def blocks(shape, rng, noise=0.3):
    """A piecewise-constant image (a bright box) plus Gaussian noise."""
    img = np.zeros(shape)
    img[tuple(slice(n // 4, 3 * n // 4) for n in shape)] = 1.0
    return img + noise * rng.standard_normal(shape)


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def image(request, rng):
    return blocks(SHAPES[request.param], rng)


@pytest.mark.parametrize(
    ("tv", "spacing", "boundary"),
    [
        ("isotropic", None, "neumann"),
        ("anisotropic", None, "neumann"),
        ("isotropic", "aniso", "neumann"),
        ("anisotropic", "aniso", "periodic"),
    ],
)
def test_reaches_the_minimiser(image, tv, spacing, boundary):
    """Defaults reach the unsmoothed minimum within 1e-3 (and the gap bounds the error)."""
    beta = 0.2
    if spacing == "aniso":
        spacing = (2.0, 0.5, 0.7)[: image.ndim]
    u_ref, gap_ref = rof_dual_fista(image, beta, tv, spacing, boundary, n_iter=4000)
    e_ref = energy(u_ref, image, beta, "l2", tv, spacing, boundary)
    assert gap_ref < 1e-7 * e_ref  # the oracle itself is converged

    res = solve_gradient_descent(image, beta, tv=tv, spacing=spacing, boundary=boundary)
    assert res.converged and 0 <= res.gap < 1e-4
    rel = (res.energy - e_ref) / e_ref
    assert -1e-9 < rel < 1e-3
    assert rel <= res.gap + 1e-9  # the gap certifies the suboptimality
    assert res.energy == pytest.approx(
        tv_energy(res.u, image, beta, tv=tv, boundary=boundary, spacing=spacing), rel=1e-12
    )


def test_matches_skimage_chambolle(rng):
    skimage = pytest.importorskip("skimage.restoration")
    img = blocks((16, 16), rng)
    beta = 0.15
    ref = skimage.denoise_tv_chambolle(img, weight=beta, eps=1e-12, max_num_iter=20000)
    e_ref = tv_energy(ref, img, beta)
    res = solve_gradient_descent(img, beta)
    assert -1e-7 < (res.energy - e_ref) / e_ref < 1e-3


@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
def test_fixed_eps_reaches_the_smoothed_optimum(image, tv):
    beta, eps = 0.2, 0.05
    spacing = (1.0, 2.0, 0.5)[: image.ndim]
    u_ref = smoothed_descent(image, beta, eps, tv, spacing, n_iter=6000)
    res = solve_gradient_descent(image, beta, tv=tv, spacing=spacing, eps=eps, tol=1e-13,
                                 max_num_iter=5000)
    assert res.converged
    np.testing.assert_allclose(res.u, u_ref, atol=1e-6)
    e_ref = smoothed_energy(u_ref, image, beta, eps, tv, spacing)
    assert smoothed_energy(res.u, image, beta, eps, tv, spacing) == pytest.approx(e_ref, rel=1e-12)


@pytest.mark.parametrize("eps", [None, 0.01])
@pytest.mark.parametrize("fidelity", ["l2", "l1"])
def test_smoothed_energy_never_increases(image, eps, fidelity):
    """Monotone FISTA: E_ε(x_k) is non-increasing, also across the ε continuation."""
    seen = []

    def record(info):
        seen.append((info["smoothed_energy"], info["eps"]))
        return False

    solve_gradient_descent(image, 0.3, fidelity=fidelity, eps=eps, tol=0.0, max_num_iter=150,
                           callback=record, check_every=1)
    values = np.array([e for e, _ in seen])
    assert len(values) == 151
    assert np.all(np.diff(values) <= 1e-12 * np.abs(values[:-1]))
    if eps is None:
        assert len({e for _, e in seen}) >= 2  # the continuation crossed a smoothing level


@pytest.mark.parametrize(("fidelity", "beta"), [("l1", 0.6), ("poisson", 0.3)])
def test_l1_and_poisson_reach_the_minimiser(rng, fidelity, beta):
    img = 2.0 + 2.0 * blocks((12, 12), rng, noise=0.0)
    if fidelity == "poisson":
        img = rng.poisson(3.0 * img).astype(float)  # counts, with a few zeros
    else:
        img = img + 0.3 * rng.standard_normal(img.shape)
    u_ref = tv_primal_dual(img, beta, fidelity, n_iter=20000)
    e_ref = tv_energy(u_ref, img, beta, fidelity=fidelity)
    res = solve_gradient_descent(img, beta, fidelity=fidelity, tol=1e-3, max_num_iter=3000)
    floor = fidelity_floor(img, fidelity)
    rel = (res.energy - e_ref) / (e_ref - floor)
    assert -1e-4 < rel < 1e-3
    assert res.gap >= 0 and np.isfinite(res.energy)
    if fidelity == "poisson":
        assert res.u.min() >= 0 and res.u[img > 0].min() > 0


def test_gap_is_nonnegative_and_history_is_consistent(image):
    res = solve_gradient_descent(image, 0.2, tol=1e-5)
    gaps = [h["gap"] for h in res.history]
    assert res.converged and res.gap < 1e-5
    assert min(gaps) >= 0 and gaps[-1] == res.gap
    assert [h["iter"] for h in res.history] == sorted(h["iter"] for h in res.history)
    assert res.history[-1]["iter"] == res.n_iter


def test_callback_stops_cleanly(image):
    calls = []

    def stop_second(info):
        calls.append(info)
        return len(calls) == 2

    res = solve_gradient_descent(image, 0.2, callback=stop_second, tol=1e-12)
    assert res.cancelled and not res.converged
    assert len(calls) == 2 and res.n_iter == 10
    keys = {"method", "iter", "max_iter", "energy", "gap", "elapsed", "fraction"}
    assert keys <= set(calls[0]) and calls[0]["method"] == "gradient_descent"
    assert all(0.0 <= c["fraction"] <= 1.0 for c in calls)
    assert res.energy == pytest.approx(tv_energy(res.u, image, 0.2))


def test_tol_zero_runs_max_num_iter(image):
    res = solve_gradient_descent(image, 0.2, tol=0.0, max_num_iter=37)
    assert res.n_iter == 37 and not res.converged
    assert res.history[-1]["iter"] == 37


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept_and_input_untouched(image, dtype):
    img = image.astype(dtype)
    before = img.copy()
    res = solve_gradient_descent(img, 0.2, tol=1e-3)
    assert res.u.dtype == dtype and res.extra["p"].dtype == dtype
    np.testing.assert_array_equal(img, before)
    assert res.u is not img
    u_ref, _ = rof_dual_fista(image.astype(dtype).astype(np.float64), 0.2, n_iter=3000)
    e_ref = energy(u_ref, before, 0.2)
    assert (res.energy - e_ref) / e_ref < 2e-3


def test_warm_start_from_result_resumes(image):
    first = solve_gradient_descent(image, 0.2, tol=1e-3)
    again = solve_gradient_descent(image, 0.2, tol=1e-3, init=first)
    assert again.n_iter == 0 and again.converged  # already below tol
    finer = solve_gradient_descent(image, 0.2, tol=1e-5, init=first)
    cold = solve_gradient_descent(image, 0.2, tol=1e-5)
    assert finer.converged and finer.n_iter < cold.n_iter
    before = image.copy()
    res = solve_gradient_descent(image, 0.2, tol=1e-3, init=image)  # array init is copied
    np.testing.assert_array_equal(image, before)
    assert res.converged


def test_trivial_inputs(rng):
    const = np.full((5, 4), 2.5)
    res = solve_gradient_descent(const, 0.3)
    np.testing.assert_array_equal(res.u, const)
    assert res.converged and res.gap == 0.0 and res.n_iter == 0
    img = rng.standard_normal(9)
    res = solve_gradient_descent(img, 0.0)
    np.testing.assert_array_equal(res.u, img)
    assert res.gap == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fidelity": "huber"}, "fidelity must be one of 'l2', 'l1', 'poisson'"),
        ({"tv": "l0"}, "tv must be one of"),
        ({"boundary": "reflect"}, "boundary must be one of"),
        ({"eps": 0.0}, "eps must be > 0"),
        ({"tol": -1.0}, "tol must be >= 0"),
        ({"init": np.zeros((2, 2))}, "init must have the image's shape"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_gradient_descent(np.ones((4, 3)), 0.1, **kwargs)


def test_poisson_needs_nonnegative_data():
    with pytest.raises(ValueError, match="image must be >= 0"):
        solve_gradient_descent(-np.ones((4, 3)), 0.1, fidelity="poisson")


def test_result_is_a_tvresult_with_dual_field(image):
    res = solve_gradient_descent(image, 0.2, tol=1e-3)
    assert isinstance(res, TVResult) and res.method == "gradient_descent"
    p = res.extra["p"]
    assert p.shape == (image.ndim,) + image.shape
    assert np.sqrt((p.astype(np.float64) ** 2).sum(0)).max() <= 1.0
