"""Split Bregman: the ROF minimiser, the gap certificate, scikit-image's weight, the API."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv.operators import tv_energy
from napari_tv.solvers.bregman import beta_from_skimage_weight, skimage_weight, solve_bregman
from napari_tv.solvers.gradient_descent import solve_gradient_descent
from reference.descent import energy, rof_dual_fista

SHAPES = {2: (12, 10), 3: (5, 6, 5)}


def blocks(shape, rng, noise=0.3):
    img = np.zeros(shape)
    img[tuple(slice(n // 4, 3 * n // 4) for n in shape)] = 1.0
    return img + noise * rng.standard_normal(shape)


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def image(request, rng):
    return blocks(SHAPES[request.param], rng)


@pytest.mark.parametrize(
    ("tv", "spacing", "boundary", "u_solver"),
    [
        ("isotropic", None, "neumann", "gauss_seidel"),
        ("anisotropic", None, "neumann", "gauss_seidel"),
        ("isotropic", "aniso", "neumann", "exact"),
        ("anisotropic", "aniso", "neumann", "gauss_seidel"),
        ("isotropic", "aniso", "periodic", "exact"),
    ],
)
def test_reaches_the_minimiser(image, tv, spacing, boundary, u_solver):
    beta = 0.2
    if spacing == "aniso":
        spacing = (2.0, 0.5, 0.7)[: image.ndim]
    u_ref, gap_ref = rof_dual_fista(image, beta, tv, spacing, boundary, n_iter=4000)
    e_ref = energy(u_ref, image, beta, "l2", tv, spacing, boundary)
    assert gap_ref < 1e-7 * e_ref

    res = solve_bregman(image, beta, tv=tv, spacing=spacing, boundary=boundary,
                        u_solver=u_solver, tol=1e-6, max_num_iter=5000)
    assert res.converged and 0 <= res.gap < 1e-6
    rel = (res.energy - e_ref) / e_ref
    assert -1e-9 < rel < 1e-5
    assert rel <= res.gap + 1e-9
    np.testing.assert_allclose(res.u, u_ref, atol=2e-3)
    assert res.energy == pytest.approx(
        tv_energy(res.u, image, beta, tv=tv, boundary=boundary, spacing=spacing), rel=1e-12
    )


@pytest.mark.parametrize("rho", [0.1, 2.0, 50.0])
def test_any_initial_penalty_converges(rng, rho):
    img = blocks((16, 16), rng)
    res = solve_bregman(img, 0.3, rho=rho, tol=1e-5, max_num_iter=3000)
    u_ref, _ = rof_dual_fista(img, 0.3, n_iter=4000)
    assert res.converged
    e_ref = energy(u_ref, img, 0.3)
    assert (res.energy - e_ref) / e_ref < 1e-5


def test_fixed_penalty_without_adaptation(rng):
    img = blocks((12, 12), rng)
    res = solve_bregman(img, 0.2, rho=4.0, adapt=False, u_solver="exact", tol=1e-6,
                        max_num_iter=3000)
    assert res.converged and res.extra["rho"] == 4.0


def test_skimage_weight_mapping(rng):
    """skimage's anisotropic split Bregman with weight = 1/β solves our problem (interior)."""
    skimage = pytest.importorskip("skimage.restoration")
    img = blocks((32, 32), rng, noise=0.2)
    beta = 0.2
    ours = solve_bregman(img, beta, tv="anisotropic", tol=1e-7, max_num_iter=5000).u
    inner = (slice(4, -4), slice(4, -4))  # skimage's ghost cells hold data, not Neumann

    def interior_error(weight):
        theirs = skimage.denoise_tv_bregman(img, weight=weight, max_num_iter=3000, eps=1e-9,
                                            isotropic=False)
        return np.abs(theirs - ours)[inner].max()

    assert skimage_weight(beta) == pytest.approx(1.0 / beta)
    assert beta_from_skimage_weight(skimage_weight(beta)) == pytest.approx(beta)
    assert interior_error(skimage_weight(beta)) < 0.03
    assert interior_error(1.0 / (2.0 * beta)) > 0.06  # the docstring's λ/2 reading is wrong


def test_gap_certificate_and_history(image):
    res = solve_bregman(image, 0.25, tol=1e-5)
    gaps = [h["gap"] for h in res.history]
    assert res.converged and min(gaps) >= 0 and gaps[-1] == res.gap < 1e-5
    assert res.history[-1]["iter"] == res.n_iter
    p = res.extra["p"]
    assert p.shape == (image.ndim,) + image.shape
    assert np.sqrt((p**2).sum(0)).max() <= 1.0 + 1e-12


def test_callback_stops_cleanly(image):
    calls = []

    def stop_third(info):
        calls.append(info)
        return len(calls) == 3

    res = solve_bregman(image, 0.2, tol=1e-14, callback=stop_third)
    assert res.cancelled and not res.converged and res.n_iter == 20
    keys = {"method", "iter", "max_iter", "energy", "gap", "elapsed", "fraction"}
    assert keys <= set(calls[0]) and calls[-1]["method"] == "bregman"
    assert [c["iter"] for c in calls] == [0, 10, 20]
    assert all(0.0 <= c["fraction"] <= 1.0 for c in calls)


@pytest.mark.parametrize("u_solver", ["gauss_seidel", "exact"])
def test_tol_zero_runs_max_num_iter(image, u_solver):
    res = solve_bregman(image, 0.2, tol=0.0, max_num_iter=23, u_solver=u_solver)
    assert res.n_iter == 23 and not res.converged and res.history[-1]["iter"] == 23


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept_and_input_untouched(image, dtype):
    img = image.astype(dtype)
    before = img.copy()
    res = solve_bregman(img, 0.2, tol=1e-4)
    assert res.u.dtype == dtype and res.extra["b"].dtype == dtype
    np.testing.assert_array_equal(img, before)
    u_ref, _ = rof_dual_fista(before.astype(np.float64), 0.2, n_iter=3000)
    e_ref = energy(u_ref, before, 0.2)
    assert (res.energy - e_ref) / e_ref < 2e-4


def test_warm_starts(image):
    cold = solve_bregman(image, 0.2, tol=1e-6, max_num_iter=5000)
    again = solve_bregman(image, 0.2, tol=1e-6, init=cold)
    assert again.n_iter == 0 and again.converged
    descent = solve_gradient_descent(image, 0.2, tol=1e-4)  # its dual field seeds b
    warm = solve_bregman(image, 0.2, tol=1e-6, init=descent, max_num_iter=5000)
    assert warm.converged and warm.n_iter < cold.n_iter
    before = image.copy()
    solve_bregman(image, 0.2, tol=1e-3, init=image)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fidelity": "l1"}, "supports fidelity 'l2' only"),
        ({"fidelity": "poisson"}, "supports fidelity 'l2' only"),
        ({"boundary": "periodic", "u_solver": "gauss_seidel"}, "supports boundary 'neumann'"),
        ({"u_solver": "cg"}, "u_solver must be one of"),
        ({"tv": "l0"}, "tv must be one of"),
        ({"rho": 0.0}, "rho must be > 0"),
        ({"init": np.zeros(3)}, "init must have the image's shape"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_bregman(np.ones((4, 3)), 0.1, **kwargs)


def test_constant_image_and_zero_beta(rng):
    const = np.full((4, 5), -1.5)
    res = solve_bregman(const, 0.4)
    np.testing.assert_array_equal(res.u, const)
    assert res.converged and res.n_iter == 0
    img = rng.standard_normal((3, 4, 2))
    res = solve_bregman(img, 0.0)
    np.testing.assert_allclose(res.u, img, atol=1e-12)
    assert res.converged


@pytest.mark.parametrize("method", ["bregman", "gradient_descent"])
def test_through_denoise_tv(image, method):
    api = pytest.importorskip("napari_tv.solvers.api")
    u, info = api.denoise_tv(image, 0.2, method=method, tol=1e-5, return_info=True)
    assert info.method == method and info.converged and info.gap < 1e-5
    u_ref, _ = rof_dual_fista(image, 0.2, n_iter=3000)
    e_ref = energy(u_ref, image, 0.2)
    assert 0 <= (tv_energy(u, image, 0.2) - e_ref) / e_ref < 1e-5 + 1e-9
    direct = (solve_bregman if method == "bregman" else solve_gradient_descent)(
        image, 0.2, tol=1e-5
    )
    np.testing.assert_array_equal(u, direct.u)
