"""The "Level sets" widget: u^λ, the λ stack, perimeters and coarea, the dichotomy."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_tv.levelsets import (
    coarea_tv,
    dichotomy_partition,
    level_perimeters,
    level_set,
    level_sets,
)
from napari_tv.operators import graph_tv


@pytest.fixture
def steps_u8():
    """A 24x20 uint8 image with 4 grey levels (0, 2, 5, 7) and a little noise."""
    rng = np.random.default_rng(4)
    u = np.zeros((24, 20), np.uint8)
    u[4:16, 3:12] = 5
    u[10:22, 8:18] = 7
    u[18:, :6] = 2
    flip = rng.random(u.shape) < 0.05
    u[flip] = rng.integers(0, 8, flip.sum())
    return u


def _widget(make_napari_viewer, data, **layer_kw):
    from napari_tv._widgets.levelsets import LevelSetsWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="img", **layer_kw)
    widget = LevelSetsWidget(viewer)
    return viewer, layer, widget


def test_level_slider_stack_perimeters_and_coarea(make_napari_viewer, wait_done, steps_u8):
    original = steps_u8.copy()
    from napari_tv._widgets.denoise import DenoiseWidget

    viewer, layer, w = _widget(make_napari_viewer, steps_u8, scale=(0.5, 0.5))
    denoise = DenoiseWidget(viewer)
    combo = denoise.layer_combo
    w.set_parameters(connectivity=2)
    w.run()
    wait_done(w.runner)
    lambdas, perims = level_perimeters(steps_u8, connectivity=2, spacing=(0.5, 0.5))
    name, x, y = w.plot.native.series[0][:3]
    np.testing.assert_array_equal(x, lambdas)
    np.testing.assert_allclose(y, perims)
    coarea = coarea_tv(steps_u8, connectivity=2, spacing=(0.5, 0.5))
    assert coarea == pytest.approx(graph_tv(steps_u8, connectivity=2, spacing=(0.5, 0.5)))
    assert f"{coarea:.6g}" in w.coarea_label.value
    # λ starts at the data's median: about half the pixels are in the level set
    start = viewer.layers["img u^λ"]
    assert start.metadata["lambda"] == lambdas[np.argmin(np.abs(lambdas - np.median(steps_u8)))]
    assert 0.3 < start.data.mean() < 0.7
    for k in (0, 3, 6):
        w.set_level_index(k)
        out = viewer.layers["img u^λ"]
        np.testing.assert_array_equal(out.data, level_set(steps_u8, float(lambdas[k])))
        assert out.metadata["lambda"] == lambdas[k] and tuple(out.scale) == (0.5, 0.5)
    # our Labels outputs are not offered as input
    assert combo.choices == (layer,)
    assert [combo.native.itemText(i) for i in range(combo.native.count())] == ["img"]
    stack_layer = w.add_stack()
    np.testing.assert_array_equal(stack_layer.data, level_sets(steps_u8))
    assert stack_layer.ndim == 3 and tuple(stack_layer.scale) == (1.0, 0.5, 0.5)
    assert stack_layer.axis_labels[0] == "λ"
    np.testing.assert_array_equal(layer.data, original)


def test_dichotomy_depth_slider(make_napari_viewer, wait_done, steps_u8):
    original = steps_u8.copy()
    viewer, layer, w = _widget(make_napari_viewer, steps_u8)
    w.set_parameters(beta=1.5, fidelity="l2")
    w.run_dichotomy()
    wait_done(w.runner)
    labels, intervals = dichotomy_partition(steps_u8, 1.5)
    assert w.depth_slider.max == len(intervals)
    for depth in range(1, len(intervals) + 1):
        w.set_depth(depth)
        out = viewer.layers["img dichotomy"]
        np.testing.assert_array_equal(out.data, labels[depth - 1] + 1)
        assert out.metadata["round"] == depth
        assert out.metadata["n_intervals"] == len(intervals[depth - 1])
    np.testing.assert_array_equal(layer.data, original)


def test_cancel_mid_dichotomy_keeps_layers_and_viewer(
    make_napari_viewer, qtbot, wait_done, errors, monkeypatch, steps_u8
):
    import threading

    original = steps_u8.copy()
    viewer, layer, w = _widget(make_napari_viewer, steps_u8)
    w.set_parameters(beta=1.5)
    w.run_dichotomy()
    wait_done(w.runner)
    shown = viewer.layers["img dichotomy"]
    before = (shown.data.copy(), dict(shown.metadata), w.depth_slider.max)
    n_rounds = len(dichotomy_partition(steps_u8, 0.3)[1])
    assert n_rounds == 3
    qtbot.wait(100)  # past the progress bar's 50 ms throttle of the first run's last report

    # hold the worker after round 2 until Cancel is pressed (a tiny image is otherwise too fast)
    reached, rounds = threading.Event(), []
    make_callback = w.runner.callback_for

    def held_callback_for(cancel):
        callback = make_callback(cancel)

        def held(info):
            rounds.append(info["iter"])
            if info["iter"] == 2:
                reached.set()
                cancel.wait(30)
            return callback(info)

        return held

    monkeypatch.setattr(w.runner, "callback_for", held_callback_for)
    w.set_parameters(beta=0.3)
    assert w.run_dichotomy() is not None
    qtbot.waitUntil(reached.is_set, timeout=30_000)
    bar, cancel = w.progress_row.bar, w.progress_row.cancel_button
    qtbot.waitUntil(lambda: bar.value > 0, timeout=10_000)  # round 1 was shown
    assert bar.value == round(1000 / n_rounds)
    assert cancel.enabled and not w.dichotomy_button.enabled
    qtbot.mouseClick(cancel.native, Qt.MouseButton.LeftButton)
    wait_done(w.runner)
    assert rounds == [1, 2]  # stopped after round 2 of 3
    assert "cancelled" in w.status.value and bar.value == 0
    assert w.dichotomy_button.enabled and not cancel.enabled
    # the layers are as they were: the earlier dichotomy, the input image
    assert viewer.layers["img dichotomy"] is shown
    np.testing.assert_array_equal(shown.data, before[0])
    assert shown.metadata == before[1] and w.depth_slider.max == before[2]
    np.testing.assert_array_equal(layer.data, original)
    assert [ly.name for ly in viewer.layers] == ["img", "img dichotomy"]
    # the viewer and the widget still work
    monkeypatch.undo()
    w.run_dichotomy()
    wait_done(w.runner)
    labels, intervals = dichotomy_partition(steps_u8, 0.3)
    np.testing.assert_array_equal(viewer.layers["img dichotomy"].data, labels[-1] + 1)
    assert viewer.layers["img dichotomy"].metadata["parameters"]["beta"] == 0.3
    viewer.dims.set_current_step(0, 3)
    assert not errors["error"] and not errors["warning"]


def test_lambda_starts_at_the_median_of_a_dark_volume(make_napari_viewer, wait_done):
    """A dark volume with a few bright voxels: the middle of the grid would hold ~all voxels."""
    rng = np.random.default_rng(2)
    vol = rng.normal(10.0, 1.0, (6, 20, 20))
    vol[2, 5:8, 5:8] = 200.0
    viewer, layer, w = _widget(make_napari_viewer, vol)
    w.run()
    wait_done(w.runner)
    mask = viewer.layers["img u^λ"].data
    assert 0.3 < mask.mean() < 0.7  # the middle of the grid (λ ≈ 100) would hold 99 %


def test_3d_float_and_bad_layers(make_napari_viewer, wait_done, errors, blobs_3d):
    viewer, layer, w = _widget(make_napari_viewer, blobs_3d, scale=(2.0, 0.5, 0.5))
    w.set_parameters(levels=8)
    w.run()
    wait_done(w.runner)
    lambdas, _ = level_perimeters(blobs_3d, 8, spacing=(2.0, 0.5, 0.5))
    w.set_level_index(4)
    np.testing.assert_array_equal(
        viewer.layers["img u^λ"].data, level_set(blobs_3d, float(lambdas[4]))
    )
    # a Labels layer is not offered; a bad Image layer is refused with a message
    seg = viewer.add_labels(np.zeros((4, 4), np.int32), name="seg")
    assert seg not in w.layer_combo.choices
    with pytest.raises(ValueError):
        w.set_parameters(image=seg)
    rgb = viewer.add_image(np.zeros((4, 4, 3)), name="rgb", rgb=True)
    w.set_parameters(image=rgb)
    assert w.run() is None and w.run_dichotomy() is None
    assert len(errors["error"]) == 2 and all("RGB" in e for e in errors["error"])
    assert "img u^λ" in viewer.layers and "rgb u^λ" not in viewer.layers
