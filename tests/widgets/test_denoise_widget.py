"""The "TV denoise" widget: same values as the API, one output layer, cancel, bad layers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv.solvers.api import denoise_tv


def _widget(make_napari_viewer, data, **layer_kw):
    from napari_tv._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="img", **layer_kw)
    widget = DenoiseWidget(viewer)
    return viewer, layer, widget


@pytest.mark.parametrize(
    ("method", "fidelity", "beta"), [("chambolle", "l2", 0.05), ("primal_dual", "l1", 0.5)]
)
def test_run_2d_matches_api_and_updates_in_place(
    make_napari_viewer, wait_done, blobs_2d, method, fidelity, beta
):
    original = blobs_2d.copy()
    viewer, layer, w = _widget(
        make_napari_viewer, blobs_2d, scale=(0.5, 0.25), translate=(3.0, -1.0)
    )
    assert w.spacing_edit.value == "0.5, 0.25"  # spacing defaults to the layer's scale
    w.set_parameters(method=method, fidelity=fidelity, beta=beta, tol=1e-3, max_num_iter=200)
    w.run()
    wait_done(w.runner)
    expected, info = denoise_tv(
        blobs_2d,
        beta,
        method=method,
        fidelity=fidelity,
        spacing=(0.5, 0.25),
        tol=1e-3,
        max_num_iter=200,
        return_info=True,
    )
    out = viewer.layers["img TV"]
    np.testing.assert_allclose(out.data, expected, rtol=1e-6, atol=1e-6)
    assert tuple(out.scale) == (0.5, 0.25) and tuple(out.translate) == (3.0, -1.0)
    meta = out.metadata
    assert meta["parameters"]["beta"] == pytest.approx(beta)
    assert meta["parameters"]["method"] == method
    assert meta["parameters"]["fidelity"] == fidelity
    assert meta["parameters"]["spacing"] == [0.5, 0.25]
    assert meta["energy"] == pytest.approx(info.energy, rel=1e-6)
    assert meta["gap"] == pytest.approx(info.gap, rel=1e-3, abs=1e-9)
    assert "duality gap" in meta["certificate"] and meta["elapsed"] > 0
    assert info.n_iter > 0 and "shortcut" not in info.extra
    # a second run with another β updates the same layer
    n_layers = len(viewer.layers)
    w.set_parameters(beta=1.0)
    w.run()
    wait_done(w.runner)
    assert len(viewer.layers) == n_layers and viewer.layers["img TV"] is out
    assert out.metadata["parameters"]["beta"] == pytest.approx(1.0)
    assert not np.allclose(out.data, expected)
    np.testing.assert_array_equal(layer.data, original)


def test_run_3d_exact_uses_the_layer_scale(make_napari_viewer, wait_done, blobs_3d):
    original = blobs_3d.copy()
    viewer, layer, w = _widget(make_napari_viewer, blobs_3d, scale=(2.0, 0.5, 0.5))
    w.set_parameters(method="exact", beta=0.1, levels=16, connectivity=1)
    w.run()
    wait_done(w.runner)
    expected, info = denoise_tv(
        blobs_3d, 0.1, method="exact", levels=16, spacing=(2.0, 0.5, 0.5), return_info=True
    )
    out = viewer.layers["img TV"]
    np.testing.assert_array_equal(out.data, expected)
    assert out.metadata["energy"] == pytest.approx(info.energy)
    assert "exact minimiser on a 16-level grid" in out.metadata["certificate"]
    assert tuple(out.scale) == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(layer.data, original)


def test_time_series_current_and_all_time_points(make_napari_viewer, wait_done, blobs_2d):
    rng = np.random.default_rng(3)
    movie = np.stack([blobs_2d[:32, :32] + 0.1 * rng.standard_normal((32, 32)) for _ in range(3)])
    original = movie.copy()
    viewer, layer, w = _widget(make_napari_viewer, movie)
    w.set_parameters(time_series=True, beta=0.1, tol=1e-3)
    viewer.dims.set_current_step(0, 1)
    w.run()
    wait_done(w.runner)
    out = viewer.layers["img TV"]
    assert out.data.shape == movie.shape
    np.testing.assert_allclose(out.data[1], denoise_tv(movie[1], 0.1, tol=1e-3), atol=1e-6)
    assert np.all(out.data[0] == 0) and out.metadata["time_points_solved"] == [1]
    w.set_parameters(all_frames=True)
    w.run()
    wait_done(w.runner)
    for t in range(3):
        np.testing.assert_allclose(out.data[t], denoise_tv(movie[t], 0.1, tol=1e-3), atol=1e-6)
    assert out.metadata["time_points_solved"] == [0, 1, 2]
    np.testing.assert_array_equal(layer.data, original)


def test_cancel_leaves_layers_intact_and_viewer_usable(make_napari_viewer, qtbot, wait_done):
    rng = np.random.default_rng(5)
    data = rng.standard_normal((64, 64))
    viewer, layer, w = _widget(make_napari_viewer, data)
    w.set_parameters(method="gradient_descent", beta=0.5, tol=1e-14, max_num_iter=10**7)
    with qtbot.waitSignal(w.runner.progressed, timeout=60_000):
        worker = w.run()
    assert worker is not None and w.progress_row.cancel_button.enabled
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        w.cancel()
    wait_done(w.runner)
    assert [ly.name for ly in viewer.layers] == ["img"]  # nothing half-done was shown
    assert "cancel" in w.status.value
    np.testing.assert_array_equal(layer.data, data)
    # the widget and the viewer still work
    w.set_parameters(method="chambolle", tol=1e-3, max_num_iter=100)
    w.run()
    wait_done(w.runner)
    assert "img TV" in viewer.layers
    np.testing.assert_array_equal(layer.data, data)


@pytest.mark.parametrize("kind", ["rgb", "labels", "4d", "points"])
def test_bad_layers_give_a_notification(make_napari_viewer, errors, kind):
    from napari_tv._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    if kind == "rgb":
        layer = viewer.add_image(rng.random((16, 16, 3)), rgb=True, name="bad")
    elif kind == "labels":
        layer = viewer.add_labels(rng.integers(0, 3, (16, 16)), name="bad")
    elif kind == "4d":
        layer = viewer.add_image(rng.random((2, 3, 8, 8)), name="bad")
    else:
        layer = viewer.add_points(rng.random((4, 2)), name="bad")
    before = np.array(layer.data, copy=True)
    w = DenoiseWidget(viewer)
    if kind in ("points", "labels"):  # not offered at all: the combo lists images only
        assert w.layer_combo.choices == ()
    assert w.run() is None
    assert len(errors["error"]) == 1
    assert "bad" in errors["error"][0] or "no image layer" in errors["error"][0]
    assert [ly.name for ly in viewer.layers] == ["bad"]
    np.testing.assert_array_equal(layer.data, before)


def test_4d_with_a_time_axis_is_accepted(make_napari_viewer, wait_done, errors):
    rng = np.random.default_rng(2)
    data = rng.random((2, 3, 8, 8))
    viewer, layer, w = _widget(make_napari_viewer, data, axis_labels=("t", "z", "y", "x"))
    assert w.time_check.value
    w.set_parameters(beta=0.1, tol=1e-3, all_frames=True)
    w.run()
    wait_done(w.runner)
    assert not errors["error"]
    np.testing.assert_allclose(
        viewer.layers["img TV"].data[1], denoise_tv(data[1], 0.1, tol=1e-3), atol=1e-6
    )


def test_library_errors_become_notifications(make_napari_viewer, wait_done, errors):
    data = -np.ones((16, 16))  # Poisson needs data >= 0
    viewer, layer, w = _widget(make_napari_viewer, data)
    w.set_parameters(method="primal_dual", fidelity="poisson", beta=0.1)
    w.run()
    wait_done(w.runner)
    assert len(errors["error"]) == 1 and "TV denoise" in errors["error"][0]
    assert "img TV" not in viewer.layers


@pytest.mark.parametrize("sample", ["2d", "3d"])
def test_defaults_converge_on_the_samples(make_napari_viewer, wait_done, errors, sample):
    """Run with nothing changed: the widget's method, β, iterations and tolerance."""
    from napari_tv import SAMPLE_3D_SCALE, microscopy_2d, microscopy_3d

    data, scale = (
        (microscopy_3d()[0], SAMPLE_3D_SCALE) if sample == "3d" else (microscopy_2d()[0], None)
    )
    viewer, layer, w = _widget(make_napari_viewer, data, **({"scale": scale} if scale else {}))
    w.run()
    wait_done(w.runner, timeout=120_000)
    meta = viewer.layers["img TV"].metadata
    assert meta["method"] == "primal_dual" and meta["converged"], meta
    assert "not converged" not in meta["certificate"]
    assert not errors["error"]


def test_beta_starts_at_the_suggestion_computed_in_the_background(
    make_napari_viewer, qtbot, errors
):
    from napari_tv import microscopy_2d
    from napari_tv.beta_choice import suggest_beta

    noisy = microscopy_2d()[0]
    viewer, layer, w = _widget(make_napari_viewer, noisy)
    qtbot.waitUntil(lambda: w.suggested is not None, timeout=60_000)
    expected = suggest_beta(noisy)  # J-invariance, the default for l2
    assert w.suggested == pytest.approx(expected, rel=1e-6)
    assert w.beta_slider.slider.markers["suggested"][0] == w.beta_slider._to_pos(expected)
    assert w.beta_slider.value() == pytest.approx(expected, rel=0.02)  # the slider starts there
    assert "J-invariance" in w.suggest_label.value
    # a β the user chose stays; a new suggestion (Poisson: PURE) only moves the marker
    w.set_parameters(beta=5.0)
    viewer.add_image(np.clip(noisy, 0, None), name="counts")
    w.set_parameters(image=viewer.layers["counts"])
    w.set_parameters(fidelity="poisson")
    qtbot.waitUntil(lambda: w.suggested is not None and "PURE" in w.suggest_label.value,
                    timeout=60_000)
    assert w.beta_slider.value() == pytest.approx(5.0)
    assert not errors["error"]


def test_known_minimiser_is_reported_as_such(make_napari_viewer, wait_done, blobs_2d):
    """L1 with β·2Σ1/h ≤ 1 (h relative to the finest axis) keeps every pixel; the widget says
    so instead of an iteration count."""
    viewer, layer, w = _widget(make_napari_viewer, blobs_2d)
    w.set_parameters(method="primal_dual", fidelity="l1", beta=0.1)
    w.run()
    wait_done(w.runner)
    out = viewer.layers["img TV"]
    np.testing.assert_array_equal(out.data, blobs_2d)
    cert = out.metadata["certificate"]
    assert cert.startswith("known minimiser, no iterations") and "L1 keeps every pixel" in cert
    assert out.metadata["gap"] == 0.0


def test_a_method_s_own_options_reach_the_solver(make_napari_viewer, wait_done, blobs_2d,
                                                 errors):
    """The chosen method's options (its record in the methods table) are a form of their own,
    shown with the method, and go to ``denoise_tv(options=...)``."""
    viewer, layer, w = _widget(make_napari_viewer, blobs_2d)
    forms = w.method_options
    assert set(forms) == set(w.method.choices)
    w.set_parameters(method="bregman", beta=0.1, tol=1e-3)
    assert not forms["bregman"].native.isHidden() and forms["primal_dual"].native.isHidden()
    assert "options" not in w.parameters(w.input.info())  # defaults are not sent
    w.set_parameters(options={"sweeps": 3, "adapt": False, "rho": 0.5})
    params = w.parameters(w.input.info())
    assert params["options"] == {"sweeps": 3, "adapt": False, "rho": 0.5}
    w.run()
    wait_done(w.runner)
    expected, info = denoise_tv(blobs_2d, 0.1, method="bregman", tol=1e-3, spacing=(1.0, 1.0),
                                options={"sweeps": 3, "adapt": False, "rho": 0.5},
                                return_info=True)  # fmt: skip
    default = denoise_tv(blobs_2d, 0.1, method="bregman", tol=1e-3, return_info=True)[1]
    assert info.energy != default.energy  # the options change the run
    out = viewer.layers["img TV"]
    np.testing.assert_allclose(out.data, expected, rtol=1e-6, atol=1e-6)
    assert out.metadata["n_iter"] == info.n_iter
    assert out.metadata["parameters"]["options"] == {"sweeps": 3, "adapt": False, "rho": 0.5}
    with pytest.raises(ValueError, match="has no option 'eps'"):
        w.set_parameters(options={"eps": 0.1})
    forms["bregman"]["rho"].value = "x"
    assert w.run() is None and errors["error"] == ["TV denoise: rho must be a number, got 'x'"]
