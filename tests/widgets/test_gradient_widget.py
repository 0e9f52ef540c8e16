"""The "TV gradient" widget: layers equal the operators' output; central differences fail."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv.operators import gradient, tv_gradient


def _widget(make_napari_viewer, data, **layer_kw):
    from napari_tv._widgets.gradient import GradientWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(data, name="img", **layer_kw)
    widget = GradientWidget(viewer)
    return viewer, layer, widget


@pytest.mark.parametrize("scheme", ["forward", "backward"])
def test_gradient_layers_match_operators(make_napari_viewer, wait_done, blobs_2d, scheme):
    original = blobs_2d.copy()
    viewer, layer, w = _widget(make_napari_viewer, blobs_2d, scale=(0.5, 0.25))
    w.set_parameters(scheme=scheme, boundary="neumann", kind="isotropic", eps=0.01, step=4)
    w.run()
    wait_done(w.runner)
    spacing = (0.5, 0.25)
    expected = tv_gradient(blobs_2d, kind="isotropic", scheme=scheme, spacing=spacing, eps=0.01)
    out = viewer.layers["img TV gradient"]
    np.testing.assert_allclose(out.data, expected)
    bound = np.abs(expected).max()
    np.testing.assert_allclose(out.contrast_limits, (-bound, bound))
    cmap = out.colormap  # diverging: dark at 0, blue below, orange above
    np.testing.assert_allclose(cmap.map(np.array([0.5]))[0, :3], 0.0, atol=1e-6)
    assert cmap.map(np.array([0.0]))[0, 2] > 0.9 and cmap.map(np.array([1.0]))[0, 0] > 0.9
    assert tuple(out.scale) == spacing
    g = gradient(blobs_2d, scheme=scheme, spacing=spacing)
    np.testing.assert_allclose(viewer.layers["img |∇f|"].data, np.sqrt((g**2).sum(0)))
    vec = viewer.layers["img ∇f direction"].data
    assert vec.shape[1:] == (2, 2) and len(vec) > 0
    # every arrow points along the physical gradient at its base
    pos = vec[:, 0].astype(int)
    world = vec[:, 1] * np.array(spacing)
    gv = g[:, pos[:, 0], pos[:, 1]].T
    cos = (world * gv).sum(1) / np.linalg.norm(world, axis=1) / np.linalg.norm(gv, axis=1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-9)
    np.testing.assert_array_equal(layer.data, original)


def test_central_differences_are_blind_to_a_checkerboard(make_napari_viewer, wait_done):
    board = np.indices((32, 32)).sum(0) % 2 * 1.0
    viewer, layer, w = _widget(make_napari_viewer, board)
    w.set_parameters(scheme="central", boundary="periodic", step=2)
    w.run()
    wait_done(w.runner)
    assert np.all(viewer.layers["img |∇f|"].data == 0)
    assert np.all(viewer.layers["img TV gradient"].data == 0)
    assert len(viewer.layers["img ∇f direction"].data) == 0
    # forward differences see it: switching the scheme recomputes live, and the same layers
    # are updated in place, not added
    layers = list(viewer.layers)
    w.set_parameters(scheme="forward")
    assert w.runner.running  # live, no Compute needed
    wait_done(w.runner)
    assert list(viewer.layers) == layers
    assert viewer.layers["img |∇f|"].data.min() > 0
    assert len(viewer.layers["img ∇f direction"].data) == 16 * 16


def test_vectors_follow_the_current_slice(make_napari_viewer, wait_done, blobs_3d):
    viewer, layer, w = _widget(make_napari_viewer, blobs_3d, scale=(2.0, 0.5, 0.5))
    w.set_parameters(step=3)
    w.run()
    wait_done(w.runner)
    assert viewer.layers["img TV gradient"].data.shape == blobs_3d.shape
    for z in (1, 4):
        viewer.dims.set_current_step(0, z)
        vec = viewer.layers["img ∇f direction"].data
        assert len(vec) > 0
        assert np.all(vec[:, 0, 0] == z) and np.all(vec[:, 1, 0] == 0)


def test_rgb_layer_gives_a_notification(make_napari_viewer, errors):
    rgb = np.random.default_rng(0).random((16, 16, 3))
    viewer, layer, w = _widget(make_napari_viewer, rgb, rgb=True)
    assert w.run() is None
    assert len(errors["error"]) == 1 and "RGB" in errors["error"][0]
    assert [ly.name for ly in viewer.layers] == ["img"]
    np.testing.assert_array_equal(layer.data, rgb)
