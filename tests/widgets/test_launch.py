"""``napari-tv view``: open_viewer(show=False) docks the four widgets on the right data."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def opened(qtbot):
    """Call open_viewer(..., show=False) and close every viewer it opened afterwards."""
    from napari_tv._widgets._launch import open_viewer

    viewers = []

    def open_(*args, **kwargs):
        viewer = open_viewer(*args, show=False, **kwargs)
        viewers.append(viewer)
        return viewer

    yield open_
    for viewer in viewers:
        viewer.close()
    qtbot.wait(10)


def _titles(viewer):
    from napari_tv._widgets._launch import docked

    return sorted(docked(viewer))


def test_sample_data_with_the_four_widgets(opened):
    from napari_tv._sample_data import SAMPLE_3D_SCALE

    viewer = opened(sample="3d")
    assert _titles(viewer) == sorted(["TV denoise", "TV gradient", "Level sets", "β sweep"])
    noisy = viewer.layers["microscopy 3D (noisy)"]
    assert noisy.ndim == 3 and tuple(noisy.scale) == tuple(SAMPLE_3D_SCALE)
    from napari_tv._widgets._launch import docked

    denoise = docked(viewer)["TV denoise"]
    assert denoise.layer_combo.value is noisy  # the active layer is preselected
    assert denoise.spacing_edit.value == "2, 0.5, 0.5"


def test_imagej_tiff_voxel_size_becomes_the_scale(opened, tmp_path):
    import tifffile

    vol = np.random.default_rng(0).integers(0, 255, (4, 16, 16), dtype=np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        vol,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"},
    )
    viewer = opened(str(path))
    layer = viewer.layers["stack"]
    np.testing.assert_array_equal(layer.data, vol)
    np.testing.assert_allclose(layer.scale, (1.5, 0.25, 0.25))
    assert len(_titles(viewer)) == 4


def test_npy_and_array(opened, tmp_path):
    arr = np.arange(64.0).reshape(8, 8)
    np.save(tmp_path / "a.npy", arr)
    viewer = opened(tmp_path / "a.npy")
    np.testing.assert_array_equal(viewer.layers["a"].data, arr)
    viewer2 = opened(arr)
    np.testing.assert_array_equal(viewer2.layers["image"].data, arr)
    assert len(_titles(viewer2)) == 4


def test_an_ome_zarr_opens_lazily(opened, tmp_path):
    """``napari-tv view stack.ome.zarr``: a dask layer with the OME voxel size as its
    scale."""
    import dask.array as da
    import zarr

    from napari_tv.cli import main

    vol = np.random.default_rng(0).random((6, 20, 24)).astype(np.float32)
    np.save(tmp_path / "v.npy", vol)
    # an OME-Zarr written by the command line (voxel size from --spacing)
    assert main(["denoise", str(tmp_path / "v.npy"), str(tmp_path / "u.ome.zarr"), "--beta",
                 "0.1", "--spacing", "2,0.5,0.5", "--chunks", "6,10,12", "-q"]) == 0  # fmt: skip
    viewer = opened(str(tmp_path / "u.ome.zarr"))
    layer = viewer.layers["u"]
    assert isinstance(layer.data, da.Array) and layer.data.shape == vol.shape
    assert tuple(layer.scale) == (2.0, 0.5, 0.5)
    stored = zarr.open_group(str(tmp_path / "u.ome.zarr"), mode="r")["0"][...]
    np.testing.assert_array_equal(np.asarray(layer.data), stored)


def test_a_dask_array_stays_lazy(opened):
    import dask.array as da

    lazy = da.from_array(np.zeros((4, 8, 8), np.float32), chunks=(2, 4, 4))
    assert isinstance(opened(lazy).layers["image"].data, da.Array)


@pytest.mark.parametrize("title", ["TV denoise", "TV gradient", "Level sets", "β sweep"])
def test_plugin_menu_opens_each_widget(make_napari_viewer, qtbot, wait_done, errors, title):
    """What *Plugins ▸ napari-tv ▸ <title>* does: npe2 builds the widget with (a proxy of)
    the viewer, and the widget works through it."""
    data = np.random.default_rng(0).random((16, 16))
    viewer = make_napari_viewer()
    viewer.add_image(data, name="img")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-tv", title)
    assert widget.layer_combo.value.name == "img"
    if title == "β sweep":
        widget.request(0.1)
        qtbot.waitUntil(lambda: widget.idle, timeout=60_000)
        engine = widget._sweep
        widget.request(0.2)  # the same engine: warm starts and cache survive the proxy
        qtbot.waitUntil(lambda: widget.idle, timeout=60_000)
        assert widget._sweep is engine and engine.cached_betas() == [0.1, 0.2]
    else:
        widget.run()
        wait_done(widget.runner)
    expected = {
        "TV denoise": "img TV",
        "TV gradient": "img TV gradient",
        "Level sets": None,
        "β sweep": "img β-sweep",
    }[title]
    if expected is not None:
        assert expected in viewer.layers
    assert not errors["error"]
    np.testing.assert_array_equal(viewer.layers["img"].data, data)

