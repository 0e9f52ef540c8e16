"""Shared widget pieces: log slider, layer checks, the input component, robustness when a
dock is closed."""

from __future__ import annotations

import numpy as np
import pytest


def test_log_slider_maps_log_scale_and_box(qtbot):
    from napari_tv._widgets._controls import LogSlider

    s = LogSlider(1e-2, 1e2, 1.0)
    qtbot.addWidget(s)
    assert s.slider.value() == s.slider.maximum() // 2  # 1.0 is the log midpoint
    changed, committed = [], []
    s.valueChanged.connect(changed.append)
    s.valueCommitted.connect(committed.append)
    s.setValue(0.37)
    assert s.value() == pytest.approx(0.37) and s.box.text() == "0.37"
    assert changed == committed == [pytest.approx(0.37)]
    s.slider.setSliderDown(True)  # dragging: changes only, committed on release
    s.slider.setValue(s.slider.maximum())
    assert s.value() == pytest.approx(100.0) and committed[-1] == pytest.approx(0.37)
    s.slider.setSliderDown(False)
    assert committed[-1] == pytest.approx(100.0)
    s.box.setText("5000")  # beyond the range: the range grows
    s.box.editingFinished.emit()
    assert s.value() == pytest.approx(5000.0) and s.maximum() >= 5000.0
    s.setMarker("suggested", 2.0)
    assert "suggested" in s.slider.markers
    s.setMarker("suggested", None)
    assert not s.slider.markers


def test_layer_checks(make_napari_viewer):
    from napari_tv._widgets._layers import LayerError, image_layer_info

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    img3 = viewer.add_image(rng.random((3, 8, 8)), scale=(2.0, 0.5, 0.25))
    info = image_layer_info(img3)
    assert info.time_axis is None and info.spatial_ndim == 3
    assert info.spacing == (2.0, 0.5, 0.25)
    info = image_layer_info(img3, time_series=True)  # 2D+t
    assert info.time_axis == 0 and info.spacing == (0.5, 0.25) and info.n_times == 3
    movie = viewer.add_image(rng.random((2, 3, 4, 4)), axis_labels=("time", "z", "y", "x"))
    assert image_layer_info(movie).spatial_ndim == 3
    for bad in (
        viewer.add_image(rng.random((2, 3, 4, 4))),
        viewer.add_image(rng.random((8, 8, 3)), rgb=True),
        viewer.add_labels(np.zeros((4, 4), np.int32)),
        viewer.add_image(rng.random((2, 2, 2, 4, 4)), axis_labels="tczyx"),
        None,
    ):
        with pytest.raises(LayerError):
            image_layer_info(bad)


def test_closed_widget_does_not_break_the_viewer(make_napari_viewer, qtbot, errors):
    from napari_tv._widgets.denoise import DenoiseWidget
    from napari_tv._widgets.gradient import GradientWidget
    from napari_tv._widgets.levelsets import LevelSetsWidget
    from napari_tv._widgets.sweep import SweepWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((4, 8, 8)), name="a")
    for cls in (DenoiseWidget, GradientWidget, LevelSetsWidget, SweepWidget):
        w = cls(viewer)
        w.native.deleteLater()
        del w
    qtbot.wait(50)
    viewer.add_image(np.zeros((4, 8, 8)), name="b")  # layer events
    viewer.dims.set_current_step(0, 2)  # dims events
    viewer.layers.remove("a")
    assert not errors["error"]


def test_second_run_while_running_is_refused(make_napari_viewer, qtbot, wait_done, errors):
    from napari_tv._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).standard_normal((48, 48)), name="img")
    w = DenoiseWidget(viewer)
    w.set_parameters(method="gradient_descent", tol=1e-14, max_num_iter=10**7)
    with qtbot.waitSignal(w.runner.progressed, timeout=60_000):
        assert w.run() is not None
    assert w.run() is None and errors["warning"]
    w.cancel()
    wait_done(w.runner)
    assert "img TV" not in viewer.layers


def test_the_input_follows_the_viewer(make_napari_viewer):
    """Added, removed and renamed layers reach the list at once; Image layers only, the
    widget's own outputs left out; choosing a layer sets the time box and the spacing."""
    from napari_tv._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    a = viewer.add_image(rng.random((8, 8)), name="a", scale=(2.0, 0.5))
    w = DenoiseWidget(viewer)
    combo = w.input.image
    assert combo.choices == (a,) and w.input.spacing.value == "2, 0.5"
    viewer.add_labels(np.zeros((8, 8), np.int32), name="labels")
    viewer.add_image(rng.random((8, 8)), name="a TV")  # the widget's output name
    movie = viewer.add_image(rng.random((3, 8, 8)), name="movie",
                             axis_labels=("t", "y", "x"), scale=(1.0, 0.3, 0.3))
    assert combo.choices == (a, movie)
    a.name = "renamed"
    shown = [combo.native.itemText(i) for i in range(combo.native.count())]
    assert sorted(shown) == ["movie", "renamed"]  # the shown text, without a layer event
    seen = []
    w.input.layer_changed.connect(seen.append)
    w.set_parameters(image=movie)
    assert seen == [movie] and w.input.time_series.value
    assert w.input.spacing.value == "0.3, 0.3"
    viewer.layers.remove(movie)
    assert combo.value is a and seen[-1] is a
    a.scale = (4.0, 1.0)  # the chosen layer's scale set later: the spacing follows
    assert w.input.spacing.value == "4, 1"


def test_form_values_are_the_library_arguments(make_napari_viewer):
    """A form's values go to ``denoise_tv`` as one dict; bad values name the control."""
    from napari_tv._widgets.denoise import DenoiseWidget
    from napari_tv.solvers.api import METHODS

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((8, 8)), name="img")
    w = DenoiseWidget(viewer)
    assert w.method.choices == tuple(METHODS)
    w.set_parameters(method="chambolle", fidelity="l2", tv="anisotropic", beta=0.25,
                     max_num_iter=50, tol=1e-3, spacing=(1.0, 2.0))
    params = w.parameters(w.input.info())
    assert params == {"beta": 0.25, "method": "chambolle", "fidelity": "l2",
                      "spacing": (1.0, 2.0), "tv": "anisotropic", "max_num_iter": 50,
                      "tol": 1e-3}
    with pytest.raises(ValueError, match="method must be one of"):
        w.set_parameters(method="simulated_annealing")
    with pytest.raises(ValueError, match="unknown parameter 'weight'"):
        w.set_parameters(weight=0.1)
