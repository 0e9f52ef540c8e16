"""``denoise_tv``: validation, dispatch, dtypes, channels, callbacks and warm starts."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from napari_tv.operators import tv_energy
from napari_tv.solvers import TVResult, denoise_tv
from reference.iterative import primal_energy


def blocky(rng, shape, noise=0.3):
    v = np.zeros(shape)
    v[tuple(slice(0, n // 2) for n in shape)] = 1.0
    return v + noise * rng.standard_normal(shape)


@pytest.fixture
def image(rng):
    return blocky(rng, (8, 9))


def _has(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    ("method", "module"),
    [
        ("chambolle", "napari_tv.solvers.chambolle"),
        ("primal_dual", "napari_tv.solvers.primal_dual"),
        ("exact", "napari_tv.solvers.exact"),
    ],
)
def test_every_method_is_dispatched(image, method, module):
    if not _has(module):
        pytest.skip(f"{module} not available")
    kw = {} if method == "exact" else {"max_num_iter": 400}
    u, res = denoise_tv(image, 0.3, method=method, return_info=True, **kw)
    assert isinstance(res, TVResult) and res.method == method
    assert u is res.u and u.shape == image.shape and u.dtype == np.float64
    # the reported energy is the one definition, tv_energy
    if method == "exact":
        expected = tv_energy(u, image, 0.3, connectivity=1)
    else:
        expected = tv_energy(u, image, 0.3)
    assert res.energy == pytest.approx(expected, rel=1e-12)
    # and it is a real denoising: below the energy of the input itself
    tv = "anisotropic" if method == "exact" else "isotropic"
    assert res.energy < tv_energy(image, image, 0.3, tv=tv)


@pytest.mark.parametrize(
    ("method", "module", "name", "options"),
    [
        ("gradient_descent", "napari_tv.solvers.gradient_descent", "_solve_gradient_descent",
         {"eps": None, "check_every": 10}),
        ("bregman", "napari_tv.solvers.bregman", "_solve_bregman",
         {"rho": None, "u_solver": None, "sweeps": 1, "adapt": True, "check_every": 10}),
    ],
)  # fmt: skip
def test_other_iterative_methods_get_validated_arguments(
    monkeypatch, rng, method, module, name, options
):
    """Dispatch to the solvers the table names (their own tests check the answers): a stub
    records what ``denoise_tv`` hands over, the method's budget and options resolved."""
    if not _has(module):
        pytest.skip(f"{module} not available")
    calls = []

    def stub(image, beta, **kwargs):
        calls.append((image, beta, kwargs))
        return TVResult(
            u=image.copy(), energy=1.0, n_iter=3, converged=True, gap=0.0, method=method
        )

    monkeypatch.setattr(importlib.import_module(module), name, stub)
    v = (blocky(rng, (6, 7)) * 10).astype(np.int16)
    u = denoise_tv(v, 2, method=method, tv="anisotropic", spacing=(3.0, 1.5), tol=1e-3)
    ((image, beta, kwargs),) = calls
    assert image.dtype == np.float32 and image.flags.c_contiguous and beta == 2.0
    np.testing.assert_array_equal(image, v)
    assert kwargs == {
        "fidelity": "l2",
        "spacing": (2.0, 1.0),  # relative
        "tv": "anisotropic",
        "boundary": "neumann",
        "max_num_iter": {"bregman": 2000, "gradient_descent": 3000}[method],
        "tol": 1e-3,
        "init": None,
        "callback": None,
        **options,
    }
    assert u.dtype == np.float32


def test_returns_array_without_info(image):
    u = denoise_tv(image, 0.3)
    assert isinstance(u, np.ndarray) and u.shape == image.shape


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": -1.0}, r"beta must be >= 0, got -1\.0"),
        ({"beta": float("nan")}, "beta must be finite"),
        ({"method": "magic"}, "method must be one of .*'magic'"),
        ({"fidelity": "l3"}, "fidelity must be one of .*'l3'"),
        ({"tv": "iso"}, "tv must be one of .*'iso'"),
        ({"boundary": "reflect"}, "boundary must be one of .*'reflect'"),
        (
            {"method": "chambolle", "fidelity": "l1"},
            r"method='chambolle' does not support fidelity='l1'.*'l2' only",
        ),
        ({"method": "exact", "boundary": "periodic"}, "does not support boundary='periodic'"),
        ({"connectivity": 2}, "connectivity, weights and levels belong to method='exact'"),
        ({"levels": 16}, "levels=16"),
        ({"channel_axis": 2}, r"channel_axis must be in \[-2, 2\) .* got 2"),
        ({"max_num_iter": -3}, "max_num_iter must be >= 0, got -3"),
        ({"tol": -1e-3}, "tol must be >= 0"),
        ({"spacing": (1.0, 0.0)}, "spacing must be finite and > 0"),
        ({"spacing": (1.0, 1.0, 1.0)}, "spacing must have 2 entries"),
    ],
)
def test_bad_parameters_name_themselves(image, kwargs, match):
    kwargs = dict(kwargs)
    beta = kwargs.pop("beta", 0.3)
    with pytest.raises(ValueError, match=match):
        denoise_tv(image, beta, **kwargs)


@pytest.mark.parametrize(
    ("data", "exc", "match"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), ValueError, "image must be finite"),
        (np.ones((2, 2, 2, 2)), ValueError, "1, 2 or 3 spatial dimensions.*--channel-axis"),
        (np.ones((3, 3), dtype=complex), TypeError, "real-valued"),
        (np.array([[1.0, -1.0], [0.0, 2.0]]), ValueError, "image must be >= 0"),
    ],
)
def test_bad_images(data, exc, match):
    fidelity = "poisson" if match.startswith("image must be >= 0") else "l2"
    method = "primal_dual" if fidelity == "poisson" else "chambolle"
    with pytest.raises(exc, match=match):
        denoise_tv(data, 0.3, method=method, fidelity=fidelity)


def test_bad_channel_axis_type_and_callback(image):
    with pytest.raises(TypeError, match="channel_axis must be None or an integer, got 1.5"):
        denoise_tv(image, 0.3, channel_axis=1.5)
    with pytest.raises(TypeError, match="callback must be callable"):
        denoise_tv(image, 0.3, callback=3)
    with pytest.raises(ValueError, match="init must have the image's shape"):
        denoise_tv(image, 0.3, method="primal_dual", init=np.zeros((3, 3)))


@pytest.mark.parametrize("method", ["chambolle", "primal_dual"])
def test_input_not_modified(image, method):
    before = image.copy()
    denoise_tv(image, 0.3, method=method, max_num_iter=50)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize(
    ("dtype", "out"),
    [
        (np.uint8, np.float32),
        (np.uint16, np.float32),
        (np.bool_, np.float32),
        (np.int32, np.float64),
        (np.float16, np.float32),
        (np.float32, np.float32),
        (np.float64, np.float64),
    ],
)
def test_dtypes(rng, dtype, out):
    v = (blocky(rng, (7, 8)) * 50 + 100).astype(dtype)
    u = denoise_tv(v, 5.0, tol=0.0, max_num_iter=30)
    assert u.dtype == out
    ref = denoise_tv(v.astype(np.float64), 5.0, tol=0.0, max_num_iter=30)
    np.testing.assert_allclose(u, ref, rtol=1e-3 if out == np.float32 else 1e-12, atol=1e-2)


def test_non_contiguous_and_dask(rng):
    base = blocky(rng, (16, 18))
    view = base[::2, ::2]
    assert not view.flags.c_contiguous
    expected = denoise_tv(np.ascontiguousarray(view), 0.3, tol=0.0, max_num_iter=40)
    np.testing.assert_array_equal(denoise_tv(view, 0.3, tol=0.0, max_num_iter=40), expected)
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(np.ascontiguousarray(view), chunks=(4, 4))
    np.testing.assert_array_equal(denoise_tv(lazy, 0.3, tol=0.0, max_num_iter=40), expected)


@pytest.mark.parametrize("channel_axis", [0, -1])
@pytest.mark.parametrize("method", ["chambolle", "primal_dual"])
def test_channel_axis_loops_over_channels(rng, channel_axis, method):
    rgb = np.stack([blocky(rng, (7, 8)) * (c + 1) for c in range(3)], axis=channel_axis)
    u, res = denoise_tv(
        rgb,
        0.4,
        method=method,
        channel_axis=channel_axis,
        tol=1e-6,
        max_num_iter=5000,
        return_info=True,
    )
    assert u.shape == rgb.shape
    total = 0.0
    for c in range(3):
        chan = np.take(rgb, c, axis=channel_axis)
        uc, rc = denoise_tv(chan, 0.4, method=method, tol=1e-6, max_num_iter=5000, return_info=True)
        np.testing.assert_allclose(np.take(u, c, axis=channel_axis), uc, atol=1e-12)
        total += rc.energy
    assert res.energy == pytest.approx(total, rel=1e-12)
    assert res.converged and len(res.extra["channels"]) == 3
    # warm start of a multichannel run from its own result
    again = denoise_tv(
        rgb, 0.4, method=method, channel_axis=channel_axis, tol=1e-6, init=res, return_info=True
    )[1]
    assert again.converged and again.n_iter <= res.n_iter // 5


def test_channel_axis_3d_with_spacing(rng):
    vol = np.stack([blocky(rng, (4, 5, 6)), blocky(rng, (4, 5, 6))], axis=-1)
    u, res = denoise_tv(
        vol,
        0.5,
        channel_axis=-1,
        spacing=(2.0, 1.0, 1.0),
        tol=1e-6,
        max_num_iter=20000,
        return_info=True,
    )
    e = sum(primal_energy(u[..., c], vol[..., c], 0.5, weights=(0.5, 1.0, 1.0)) for c in range(2))
    assert res.energy == pytest.approx(e, rel=1e-12)


@pytest.mark.parametrize("method", ["chambolle", "primal_dual"])
def test_callback_stops_cleanly(image, method):
    calls = []

    def cb(info):
        calls.append(info)
        return len(calls) == 2

    u, res = denoise_tv(
        image, 0.3, method=method, tol=0.0, max_num_iter=500, callback=cb, return_info=True
    )
    assert res.cancelled and res.n_iter == 20 and len(calls) == 2
    assert calls[0]["method"] == method and 0 < calls[0]["fraction"] < calls[1]["fraction"] <= 1
    assert {"iter", "max_iter", "energy", "gap", "elapsed"} <= set(calls[0])
    assert np.isfinite(u).all()


def test_callback_on_channels_reports_global_fraction(rng):
    rgb = np.stack([blocky(rng, (6, 7))] * 2, axis=0)
    fractions = []
    denoise_tv(
        rgb,
        0.3,
        channel_axis=0,
        tol=0.0,
        max_num_iter=20,
        callback=lambda info: fractions.append((info["channel"], info["fraction"])),
    )
    assert fractions == [(0, 0.25), (0, 0.5), (1, 0.75), (1, 1.0)]


@pytest.mark.parametrize("method", ["chambolle", "primal_dual"])
def test_tol_zero_runs_exactly(image, method):
    res = denoise_tv(image, 0.3, method=method, tol=0.0, max_num_iter=33, return_info=True)[1]
    assert res.n_iter == 33 and not res.converged and len(res.history) == 1


def test_methods_agree_on_the_minimiser(rng):
    v = blocky(rng, (8, 9))
    e = [
        denoise_tv(v, 0.3, method=m, tol=1e-8, max_num_iter=30000, return_info=True)[1].energy
        for m in ("chambolle", "primal_dual")
    ]
    assert e[0] == pytest.approx(e[1], rel=1e-6)


def test_exact_grid_comes_from_the_raw_integers(rng):
    pytest.importorskip("napari_tv.solvers.exact")
    v = np.clip(blocky(rng, (6, 7)) * 4 + 3, 0, 9).astype(np.uint8)
    u, res = denoise_tv(v, 1.0, method="exact", fidelity="l1", return_info=True)
    grid = res.extra["levels"]
    np.testing.assert_array_equal(grid, np.arange(v.min(), v.max() + 1))
    assert np.all(np.isin(u, grid))


def test_callback_fraction_reaches_one_on_convergence(image):
    fractions = []
    res = denoise_tv(
        image,
        0.3,
        method="primal_dual",
        tol=1e-3,
        max_num_iter=5000,
        callback=lambda info: fractions.append(info["fraction"]),
        return_info=True,
    )[1]
    assert res.converged and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and all(0 < f <= 1 for f in fractions)


@pytest.mark.parametrize("method", ["primal_dual", "chambolle", "bregman", "exact"])
def test_result_does_not_depend_on_the_length_unit(rng, method):
    """The same voxel size in µm, nm or pixels: the same result (spacing is relative)."""
    v = blocky(rng, (6, 10, 9))
    um = (0.3, 0.065, 0.065)
    kw = {"method": method, "tol": 1e-6} if method != "exact" else {"method": "exact"}
    ref = denoise_tv(v, 0.2, spacing=um, **kw)
    for spacing in ([1000 * s for s in um], [s / 0.065 for s in um], [7e-8 * s for s in um]):
        u = denoise_tv(v, 0.2, spacing=spacing, **kw)
        np.testing.assert_allclose(u, ref, atol=1e-4 * np.ptp(v))
    iso = denoise_tv(v, 0.2, spacing=0.065, **kw)  # isotropic: as if no spacing was given
    np.testing.assert_allclose(iso, denoise_tv(v, 0.2, **kw), atol=1e-4 * np.ptp(v))
    # ... while the anisotropy counts
    assert np.abs(ref - iso).max() > 1e-2 * np.ptp(v)


def test_four_dimensional_stack_says_how_to_denoise_it():
    with pytest.raises(ValueError, match=r"time series or channels pass channel_axis.*--channel"):
        denoise_tv(np.ones((2, 3, 4, 5)), 0.1)


def test_last_axis_of_three_or_four_warns_it_is_a_volume(rng):
    rgb = rng.random((6, 7, 3))
    with pytest.warns(UserWarning, match=r"treated as a 3-D volume.*channel_axis=-1"):
        denoise_tv(rgb, 0.1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        denoise_tv(rgb, 0.1, channel_axis=-1)
        denoise_tv(rng.random((6, 7, 5)), 0.1)


@pytest.mark.parametrize("method", ["primal_dual", "chambolle"])
def test_coarse_start_reaches_the_same_minimum(rng, method):
    """init="coarse": the problem on 2x2x2 block means first (β/2), then the full one from
    it; the same minimiser to the tolerance, on an odd-sized anisotropic volume too."""
    v = blocky(rng, (18, 33, 40), noise=0.4).astype(np.float32)
    kw = {"method": method, "spacing": (2.0, 0.5, 0.5), "tol": 1e-5, "max_num_iter": 50000}
    cold, rc = denoise_tv(v, 0.6, return_info=True, **kw)
    warm, rw = denoise_tv(v, 0.6, init="coarse", return_info=True, **kw)
    assert rc.converged and rw.converged
    assert rw.energy == pytest.approx(rc.energy, rel=2e-5)
    np.testing.assert_allclose(warm, cold, atol=1e-2 * np.ptp(v))


def test_coarse_start_of_an_image_too_small_to_coarsen_is_a_cold_start(rng):
    v = blocky(rng, (6, 7))
    a = denoise_tv(v, 0.3, init="coarse", tol=1e-6)
    np.testing.assert_allclose(a, denoise_tv(v, 0.3, tol=1e-6), atol=1e-5)
    with pytest.raises(ValueError, match="'coarse'"):
        denoise_tv(v, 0.3, init="fine")
    with pytest.raises(ValueError, match="'coarse'"):
        denoise_tv(v, 0.3, method="exact", init="coarse")
