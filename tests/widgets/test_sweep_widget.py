"""The "β sweep" widget: latest wins, slice previews, β stack, L-curve and suggested β."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv.operators import level_grid
from napari_tv.solvers.api import denoise_tv


def _widget(make_napari_viewer, data, **layer_kw):
    from napari_tv._widgets.sweep import SweepWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="img", **layer_kw)
    widget = SweepWidget(viewer)
    return viewer, layer, widget


@pytest.mark.parametrize("method", ["exact", "chambolle", None])
def test_twenty_quick_moves_give_the_last_beta(make_napari_viewer, qtbot, errors, blobs_2d, method):
    original = blobs_2d.copy()
    viewer, layer, w = _widget(make_napari_viewer, blobs_2d, scale=(0.5, 0.5))
    if method is None:  # the default: the warm-started primal-dual solver (fastest to follow)
        method = "primal_dual"
        assert w.method.value == method
        w.set_parameters(tol=1e-4)
    else:
        w.set_parameters(method=method, tol=1e-4)
    betas = np.geomspace(0.02, 0.3, 20)[np.random.default_rng(0).permutation(20)]
    for beta in betas:  # no event processing in between: a burst of slider moves
        w.beta_slider.setValue(float(beta))
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    last = float(w.beta_slider.value())
    assert last == pytest.approx(betas[-1], rel=0.02)  # the slider's log grid
    out = viewer.layers["img β-sweep"]
    assert out.metadata["parameters"]["beta"] == last
    expected, info = denoise_tv(
        blobs_2d, last, method=method, spacing=(0.5, 0.5), tol=1e-4, return_info=True
    )
    if method == "exact":
        np.testing.assert_array_equal(out.data, expected)
    else:  # warm-started from another β: the same minimiser within the tolerance
        np.testing.assert_allclose(out.data, expected, atol=2e-2)
        assert out.metadata["energy"] == pytest.approx(info.energy, rel=1e-3)
    assert w.latest.n_delivered <= w.latest.n_run <= 20
    assert not errors["error"] and not errors["warning"]
    assert [ly.name for ly in viewer.layers] == ["img", "img β-sweep"]
    np.testing.assert_array_equal(layer.data, original)


def test_3d_previews_the_slice_then_solves_the_volume_on_release(
    make_napari_viewer, qtbot, errors, blobs_3d
):
    original = blobs_3d.copy()
    spacing = (2.0, 0.5, 0.5)
    viewer, layer, w = _widget(make_napari_viewer, blobs_3d, scale=spacing)
    w.set_parameters(method="exact")
    viewer.dims.set_current_step(0, 3)
    slider = w.beta_slider.slider
    slider.setSliderDown(True)  # dragging: previews only
    slider.setValue(slider.value() - 40)
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    beta = w.beta_slider.value()
    out = viewer.layers["img β-sweep"]
    assert out.metadata["preview_plane"] == 3
    grid = level_grid(blobs_3d)  # the preview keeps the volume's grey levels
    np.testing.assert_array_equal(
        out.data[3],
        denoise_tv(blobs_3d[3], beta, method="exact", spacing=spacing[1:], levels=grid),
    )
    assert np.all(out.data[0] == 0)
    slider.setSliderDown(False)  # release: the whole volume
    qtbot.waitUntil(lambda: w.idle and "preview_plane" not in out.metadata, timeout=60_000)
    out = viewer.layers["img β-sweep"]
    np.testing.assert_array_equal(
        out.data, denoise_tv(blobs_3d, beta, method="exact", spacing=spacing)
    )
    assert tuple(out.scale) == spacing
    assert not errors["error"]
    np.testing.assert_array_equal(layer.data, original)


def test_beta_stack_has_beta_as_a_dims_axis(make_napari_viewer, wait_done, blobs_2d):
    viewer, layer, w = _widget(make_napari_viewer, blobs_2d[:32, :32])
    w.set_parameters(method="exact", k=3, beta_range=(0.05, 0.5))
    w.run_stack()
    wait_done(w.runner)
    out = viewer.layers["img β stack"]
    betas = np.geomspace(0.05, 0.5, 3)
    assert out.data.shape == (3, 32, 32)
    assert out.axis_labels[0] == "log10 β"
    np.testing.assert_allclose(out.metadata["betas"], betas)
    np.testing.assert_allclose(out.scale[0], 0.5)  # log10 β step
    np.testing.assert_allclose(out.translate[0], np.log10(0.05))
    for k, beta in enumerate(betas):
        np.testing.assert_array_equal(
            out.data[k], denoise_tv(blobs_2d[:32, :32], beta, method="exact")
        )


def test_suggested_beta_and_l_curve(make_napari_viewer, qtbot, wait_done, blobs_2d):
    from napari_tv.beta_choice import suggest_beta

    viewer, layer, w = _widget(make_napari_viewer, blobs_2d)
    w.set_parameters(method="chambolle", k=5, beta_range=(0.01, 1.0))
    w.run_curve(suggest=True)
    wait_done(w.runner)
    expected = suggest_beta(blobs_2d, method="chambolle", tv="isotropic")  # J-invariance
    assert w._suggested == pytest.approx(expected, rel=1e-6)
    assert "suggested" in w.beta_slider.slider.markers
    assert "J-invariance" in w.suggest_label.value
    names = [s[0] for s in w.plot.series]
    assert names == ["fidelity", "TV", "risk"] and "J-invariance" in w.plot.title
    beta_r, risk_r = w.plot.series[2][1], w.plot.series[2][2]
    assert risk_r[int(np.argmin(risk_r))] == min(risk_r) and w._suggested in beta_r
    fid, tv = w.plot.series[0][2], w.plot.series[1][2]
    assert np.all(np.diff(fid) > 0) and np.all(np.diff(tv) < 0)  # the L-curve trade-off
    w.use_suggested.native.click()
    assert w.beta_slider.value() == pytest.approx(w._suggested, rel=0.02)
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    assert viewer.layers["img β-sweep"].metadata["parameters"]["beta"] == w.beta_slider.value()


def test_bad_layer_and_bad_fidelity(make_napari_viewer, errors, wait_done):
    viewer, layer, w = _widget(make_napari_viewer, np.random.default_rng(0).random((2, 3, 8, 8)))
    assert w.request(0.1) is None
    assert len(errors["error"]) == 1 and "4D" in errors["error"][0]
    viewer.layers.clear()
    viewer.add_image(np.random.default_rng(1).random((16, 16)), name="ok")
    w.set_parameters(image=viewer.layers["ok"])
    w.set_parameters(method="primal_dual", fidelity="l1", k=2, beta_range=(0.1, 1.0))
    w.run_curve(suggest=True)  # L1: J-invariance
    wait_done(w.runner)
    assert "J-invariance" in w.suggest_label.value and not errors["warning"]
    assert [s[0] for s in w.plot.series][-1] == "risk" and "J-invariance" in w.plot.title


def test_cancelled_beta_stack_adds_nothing(make_napari_viewer, qtbot, wait_done, blobs_2d):
    original = blobs_2d.copy()
    viewer, layer, w = _widget(make_napari_viewer, blobs_2d)
    w.set_parameters(method="gradient_descent", tol=1e-12, k=12, beta_range=(0.01, 1.0))
    with qtbot.waitSignal(w.runner.progressed, timeout=60_000):
        worker = w.run_stack()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        w.progress_row.cancel_button.native.click()
    wait_done(w.runner)
    assert [ly.name for ly in viewer.layers] == ["img"]
    w.set_parameters(method="chambolle", tol=1e-3)
    w.request(0.1)
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    assert viewer.layers["img β-sweep"].metadata["parameters"]["beta"] == 0.1
    np.testing.assert_array_equal(layer.data, original)


def test_whole_volume_with_the_defaults_converges_and_says_so(
    make_napari_viewer, qtbot, errors
):
    """The 3-D sample, the widget's defaults (primal-dual, tolerance 1e-3, its β): the
    whole-volume solve converges; an unconverged one is said in the status line."""
    from napari_tv import SAMPLE_3D_SCALE, microscopy_3d
    from napari_tv.solvers import TVResult

    vol = microscopy_3d()[0]
    viewer, layer, w = _widget(make_napari_viewer, vol, scale=SAMPLE_3D_SCALE)
    w.request(full=True)
    qtbot.waitUntil(lambda: w.idle, timeout=120_000)
    out = viewer.layers["img β-sweep"]
    assert out.metadata["converged"] and "not converged" not in w.status.value
    assert "img TV" not in viewer.layers  # never the TV denoise widget's layer
    stuck = TVResult(u=vol, energy=1.0, n_iter=5000, converged=False, gap=3e-3,
                     method="primal_dual")
    w._after_show(2.0, None, stuck)
    assert "not converged: gap 0.003 > tolerance after 5000 iterations" in w.status.value
    assert not errors["error"]


def test_output_layer_is_the_same_object_through_ten_moves(make_napari_viewer, qtbot, blobs_3d):
    """Updated in place: one layer object, its data replaced or written into, its contrast
    limits kept while they fit (2-D whole image, then 3-D slice previews and the volume)."""
    for data, kw in ((blobs_3d[2], {}), (blobs_3d, {"scale": (2.0, 0.5, 0.5)})):
        viewer, layer, w = _widget(make_napari_viewer, data, **kw)
        slider = w.beta_slider.slider
        slider.setSliderDown(True)
        w.request(full=False)
        qtbot.waitUntil(lambda w=w: w.idle, timeout=60_000)
        out = viewer.layers["img β-sweep"]
        out.contrast_limits = (0.1, 0.9)  # the user's choice
        for _ in range(10):
            slider.setValue(slider.value() + 2)
            qtbot.waitUntil(lambda w=w: w.idle, timeout=60_000)
            assert viewer.layers["img β-sweep"] is out
        slider.setSliderDown(False)  # release: the whole image or volume
        qtbot.waitUntil(lambda w=w: w.idle, timeout=60_000)
        assert viewer.layers["img β-sweep"] is out and len(viewer.layers) == 2
        assert tuple(out.contrast_limits) == (0.1, 0.9)
        assert out.metadata["parameters"]["beta"] == pytest.approx(w.beta_slider.value())


def test_parameters_by_name_and_the_time_axis_keeps_beta(make_napari_viewer, qtbot, errors):
    """``set_parameters(beta=...)`` moves the slider as a user would (widening its range);
    switching the time axis on keeps β; an unknown name is refused."""
    data = np.random.default_rng(0).random((3, 8, 8)) * 10
    viewer, layer, w = _widget(make_napari_viewer, data)
    w.set_parameters(live=False, beta=2.5)
    assert w.beta_slider.value() == pytest.approx(2.5, rel=0.02)
    w.set_parameters(time_series=True)
    assert w.beta_slider.value() == pytest.approx(2.5, rel=0.02)
    w.set_parameters(beta=1000.0)  # beyond the range: widened; not live: solved whole
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    out = viewer.layers["img β-sweep"]
    assert w.beta_slider.value() == 1000.0 == out.metadata["parameters"]["beta"]
    assert out.data.shape == data.shape and "preview_plane" not in out.metadata
    with pytest.raises(ValueError, match="unknown parameter 'beta_stack'"):
        w.set_parameters(beta_stack=3)
    assert not errors["error"]
