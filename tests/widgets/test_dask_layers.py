"""Volumes larger than memory in the widgets: dask and multiscale layers run the chunked solve
(``napari_tv.chunked``) into a lazy output layer, the memory estimate switches to it, the β
sweep previews one slice of a lazy volume, and "Save to zarr" writes the output."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_tv.operators import tv_energy
from napari_tv.solvers.api import denoise_tv

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

SHAPE = (16, 48, 48)
CHUNKS = (8, 24, 24)
SPACING = (2.0, 1.0, 1.0)
BETA = 0.15
TOL = 1e-4


@pytest.fixture
def volume():
    """A 16x48x48 noisy piecewise-constant volume (float32)."""
    rng = np.random.default_rng(7)
    clean = np.zeros(SHAPE, np.float32)
    clean[3:12, 8:30, 10:36] = 1.0
    clean[6:16, 20:44, 4:20] += 0.5
    return (clean + 0.2 * rng.standard_normal(SHAPE)).astype(np.float32)


class _Reads:
    """A NumPy array behind dask that records the voxels read."""

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.voxels = 0

    def __getitem__(self, key):
        out = self.array[key]
        self.voxels += int(np.size(out))
        return out


def _denoise_widget(viewer):
    from napari_tv._widgets.denoise import DenoiseWidget

    return DenoiseWidget(viewer)


@pytest.fixture
def counted(monkeypatch):
    """Counts the calls of ``napari_tv.chunked.denoise_tv_chunked`` (the real one runs)."""
    import napari_tv.chunked as chunked

    calls = []
    real = chunked.denoise_tv_chunked

    def wrapper(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(chunked, "denoise_tv_chunked", wrapper)
    return calls


def _relative_energy_gap(u, volume, beta=BETA):
    """|E(u) - E(u_ref)| / E(u_ref) against the in-memory solve of the same problem."""
    ref, info = denoise_tv(volume, beta, spacing=SPACING, tol=TOL, return_info=True)
    energy = tv_energy(np.asarray(u, dtype=np.float64), volume.astype(np.float64), beta,
                       spacing=SPACING)  # fmt: skip
    return abs(energy - info.energy) / info.energy, ref


def test_dask_layer_gives_a_lazy_output_solved_once(
    make_napari_viewer, wait_done, errors, counted, volume
):
    viewer = make_napari_viewer()
    layer = viewer.add_image(da.from_array(volume, chunks=CHUNKS), name="img", scale=SPACING)
    w = _denoise_widget(viewer)
    assert w.chunked.value  # a dask layer runs chunked by itself, and says so
    assert "dask layer (16×48×48)" in w.memory_label.value
    assert "runs chunked" in w.memory_label.value
    w.set_parameters(method="primal_dual", beta=BETA, tol=TOL)
    w.run()
    wait_done(w.runner)
    assert not errors["error"], errors
    out = viewer.layers["img TV"]
    assert isinstance(out.data, da.Array)  # lazy: it reads the stored result chunk by chunk
    assert tuple(out.scale) == SPACING
    assert len(counted) == 1
    u = np.asarray(out.data)
    np.asarray(out.data[3])  # browsing reads the store again, never solves again
    assert len(counted) == 1
    assert u.shape == SHAPE
    rel, ref = _relative_energy_gap(u, volume)
    assert rel <= 2 * TOL
    np.testing.assert_allclose(u, ref, atol=2e-2)
    meta = out.metadata
    assert meta["chunked"] and meta["converged"] and meta["gap"] <= TOL
    assert meta["rounds"] >= 1
    assert "round" in meta["certificate"] and "chunked" in meta["certificate"]
    assert "duality gap" in w.result_label.value and "round" in w.result_label.value
    # the input is untouched and still lazy
    assert isinstance(layer.data, da.Array)
    np.testing.assert_array_equal(np.asarray(layer.data), volume)
    # a second run replaces the output and removes the store the layer read before
    first_store = w._chunked_results["img TV"][0].extra["store"]
    w.set_parameters(beta=2 * BETA, tol=1e-3)
    w.run()
    wait_done(w.runner)
    import os

    assert not os.path.exists(first_store)
    assert viewer.layers["img TV"].metadata["parameters"]["beta"] == pytest.approx(2 * BETA)
    assert len(counted) == 2


def test_multiscale_layer_is_solved_from_level_0(make_napari_viewer, wait_done, errors, volume):
    viewer = make_napari_viewer()
    levels = [da.from_array(volume, chunks=CHUNKS),
              da.from_array(volume[:, ::2, ::2].copy(), chunks=(8, 24, 24))]  # fmt: skip
    layer = viewer.add_image(levels, multiscale=True, name="img", scale=SPACING)
    w = _denoise_widget(viewer)
    assert w.chunked.value and "multiscale layer: level 0 (16×48×48)" in w.memory_label.value
    w.set_parameters(beta=BETA, tol=TOL)
    w.run()
    wait_done(w.runner)
    assert not errors["error"], errors
    out = viewer.layers["img TV"]
    assert out.multiscale and len(out.data) == 2  # the coarser level is built lazily
    assert all(isinstance(level, da.Array) for level in out.data)
    assert out.data[0].shape == SHAPE and out.data[1].shape == (16, 24, 24)  # as the input's
    rel, _ref = _relative_energy_gap(np.asarray(out.data[0]), volume)
    assert rel <= 2 * TOL
    np.testing.assert_allclose(
        np.asarray(out.data[1]),
        np.asarray(out.data[0]).reshape(16, 24, 2, 24, 2).mean(axis=(2, 4)),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(layer.data[0]), volume)


def test_lazy_layer_that_does_not_fit_is_not_computed_in_memory(
    make_napari_viewer, errors, monkeypatch, volume
):
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", str(200_000))
    viewer = make_napari_viewer()
    source = _Reads(volume)
    viewer.add_image(da.from_array(source, chunks=CHUNKS), name="img")
    w = _denoise_widget(viewer)
    assert w.chunked.value and "in memory this run needs about" in w.memory_label.value
    if w.suggest_thread is not None:  # the β suggestion reads the (small) volume: let it end
        w.suggest_thread.join(60)
    source.voxels = 0
    w.set_parameters(chunked=False)  # by hand: refused before anything is read
    assert w.run() is None
    assert "tick 'chunked (dask)'" in errors["error"][-1]
    assert source.voxels == 0 and [ly.name for ly in viewer.layers] == ["img"]


def test_cancel_during_a_chunked_run_leaves_no_layer(make_napari_viewer, qtbot, wait_done,
                                                     errors, volume):  # fmt: skip
    from napari_tv._widgets import _chunked

    viewer = make_napari_viewer()
    layer = viewer.add_image(da.from_array(volume, chunks=CHUNKS), name="img")
    w = _denoise_widget(viewer)
    w.set_parameters(beta=BETA, tol=1e-14, max_num_iter=10**6)
    stores = _chunked.result_dir().parent  # this process's stores (other tests' too)
    before = set(stores.iterdir())
    with qtbot.waitSignal(w.runner.progressed, timeout=60_000):
        worker = w.run()
    assert worker is not None and w.progress_row.cancel_button.enabled
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        w.cancel()
    wait_done(w.runner)
    assert [ly.name for ly in viewer.layers] == ["img"]
    assert "cancel" in w.status.value
    assert set(stores.iterdir()) == before  # no store left behind
    # the widget still works
    w.set_parameters(tol=1e-3, max_num_iter=500)
    w.run()
    wait_done(w.runner)
    assert "img TV" in viewer.layers and isinstance(viewer.layers["img TV"].data, da.Array)
    assert not errors["error"], errors
    np.testing.assert_array_equal(np.asarray(layer.data), volume)


def test_memory_estimate_switches_to_the_chunked_path(
    make_napari_viewer, wait_done, errors, monkeypatch, volume
):
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", str(200_000))  # 195 KiB
    viewer = make_napari_viewer()
    layer = viewer.add_image(volume, name="img", scale=SPACING)  # in memory, 144 KiB
    w = _denoise_widget(viewer)
    text = w.memory_label.value
    assert "in memory this run needs about" in text and "of 195.3 KiB available" in text
    assert "runs chunked" in text and w.chunked.value
    # unticked by hand: the run would be refused, and the line says so
    w.set_parameters(chunked=False, beta=BETA, tol=TOL)
    assert "tick 'chunked (dask)'" in w.memory_label.value
    w.run()
    wait_done(w.runner)
    assert len(errors["error"]) == 1 and "needs about" in errors["error"][0]
    assert "img TV" not in viewer.layers
    errors["error"].clear()
    w.set_parameters(chunked=True)
    w.run()
    wait_done(w.runner)
    assert not errors["error"], errors
    out = viewer.layers["img TV"]
    assert isinstance(out.data, da.Array) and out.metadata["chunked"]
    assert isinstance(layer.data, np.ndarray)
    np.testing.assert_array_equal(layer.data, volume)
    # with room to spare (no limit): in memory, nothing said
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", "0")
    rel, _ref = _relative_energy_gap(np.asarray(out.data), volume)
    assert rel <= 2 * TOL
    w.set_parameters(fidelity="l1")
    assert not w.chunked.value and w.memory_label.value == ""


def test_save_to_zarr_round_trip_and_cancel(make_napari_viewer, wait_done, errors, tmp_path,
                                            volume):  # fmt: skip
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(volume, chunks=CHUNKS), name="img", scale=SPACING)
    w = _denoise_widget(viewer)
    assert w.save_zarr(tmp_path / "early.zarr") is None  # nothing to save yet
    assert "Run first" in errors["error"][-1]
    errors["error"].clear()
    w.set_parameters(beta=BETA, tol=1e-3)
    w.run()
    wait_done(w.runner)
    out = viewer.layers["img TV"]
    w.save_zarr(tmp_path / "result")  # ".zarr" is added
    wait_done(w.runner)
    assert not errors["error"], errors
    target = tmp_path / "result.zarr"
    stored = zarr.open_array(str(target), mode="r")
    np.testing.assert_array_equal(stored[:], np.asarray(out.data))
    assert stored.attrs["napari_tv"]["parameters"]["beta"] == pytest.approx(BETA)
    assert stored.attrs["scale"] == list(SPACING)
    assert "saved" in w.status.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.zarr"]

    # a cancelled save leaves no directory (and an earlier store there intact)
    def slow(block):
        time.sleep(0.05)
        return block

    out.data = da.from_array(volume, chunks=(2, 12, 12)).map_blocks(slow, dtype=volume.dtype)
    worker = w.save_zarr(target)
    assert worker is not None
    w.cancel()
    wait_done(w.runner)
    assert "cancel" in w.status.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.zarr"]
    np.testing.assert_array_equal(zarr.open_array(str(target), mode="r")[:], stored[:])


def test_save_zarr_function_cancel_and_error_leave_nothing(tmp_path, volume):
    from napari_tv._widgets._chunked import save_zarr
    from napari_tv._widgets._tasks import Cancelled

    data = da.from_array(volume, chunks=CHUNKS)
    with pytest.raises(Cancelled):
        save_zarr(data, tmp_path / "a.zarr", callback=lambda info: info["fraction"] > 0.3)
    assert list(tmp_path.iterdir()) == []
    path = save_zarr(data, tmp_path / "b.zarr")
    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[:], volume)


def test_sweep_previews_one_slice_of_a_dask_volume(make_napari_viewer, qtbot, errors, volume):
    from napari_tv._widgets.sweep import SweepWidget

    viewer = make_napari_viewer()
    source = _Reads(volume)
    layer = viewer.add_image(da.from_array(source, chunks=CHUNKS), name="img", scale=SPACING)
    w = SweepWidget(viewer)
    viewer.dims.set_current_step(0, 5)
    source.voxels = 0  # what napari read to draw the slice does not count
    w.set_parameters(beta=BETA)  # a slider move: the live preview
    qtbot.waitUntil(lambda: w.idle and "img β-sweep" in viewer.layers, timeout=60_000)
    out = viewer.layers["img β-sweep"]
    assert out.data.shape == (1, 48, 48)  # one slice, placed at it
    assert out.translate[0] == pytest.approx(5 * SPACING[0])
    assert out.metadata["preview_plane"] == 5 and "slice preview" in out.metadata["note"]
    assert "slice preview" in w.status.value
    expected = denoise_tv(volume[5], BETA, spacing=SPACING[1:], tol=1e-3)
    np.testing.assert_allclose(out.data[0], expected, atol=2e-2)
    assert source.voxels <= volume.size // 2  # at most the chunks at that slice
    # the slider released: still the slice (the volume is TV denoise's)
    w.beta_slider.valueCommitted.emit(BETA)
    qtbot.wait(100)
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    assert viewer.layers["img β-sweep"].data.shape == (1, 48, 48)
    # another slice: the preview follows it
    viewer.dims.set_current_step(0, 11)
    qtbot.waitUntil(
        lambda: w.idle and viewer.layers["img β-sweep"].metadata.get("preview_plane") == 11,
        timeout=60_000,
    )
    assert viewer.layers["img β-sweep"].translate[0] == pytest.approx(11 * SPACING[0])
    # Apply: the slice again, and a word on where the volume is solved
    assert w.run() is not None
    assert "TV denoise (chunked)" in errors["info"][-1]
    qtbot.waitUntil(lambda: w.idle, timeout=60_000)
    assert viewer.layers["img β-sweep"].data.shape == (1, 48, 48)
    # the β stack needs the volume in memory: refused with a message
    assert w.run_stack() is None
    assert "lazy" in errors["error"][-1]
    np.testing.assert_array_equal(np.asarray(layer.data), volume)


def test_dask_time_series_one_time_point_or_all(make_napari_viewer, wait_done, errors, volume):
    viewer = make_napari_viewer()
    movie = volume[:3]  # 2D+t: 3 time points of 48x48
    viewer.add_image(da.from_array(movie, chunks=(1, 24, 24)), name="img", scale=(5.0, 1.0, 1.0),
                     axis_labels=("t", "y", "x"))  # fmt: skip
    w = _denoise_widget(viewer)
    assert w.time_check.value and w.chunked.value
    viewer.dims.set_current_step(0, 1)
    w.set_parameters(beta=BETA, tol=1e-3)
    w.run()
    wait_done(w.runner)
    assert not errors["error"], errors
    out = viewer.layers["img TV"]
    assert out.data.shape == (1, 48, 48) and out.translate[0] == pytest.approx(5.0)
    assert out.metadata["time_points"] == [1]
    np.testing.assert_allclose(
        np.asarray(out.data[0]), denoise_tv(movie[1], BETA, tol=1e-4), atol=2e-2
    )
    w.set_parameters(all_frames=True)
    w.run()
    wait_done(w.runner)
    out = viewer.layers["img TV"]
    assert isinstance(out.data, da.Array) and out.data.shape == (3, 48, 48)
    assert out.translate[0] == 0 and out.metadata["time_points"] == [0, 1, 2]
    np.testing.assert_allclose(
        np.asarray(out.data[2]), denoise_tv(movie[2], BETA, tol=1e-4), atol=2e-2
    )


def _plateau_volume():
    """A bright box larger than the blocks: the chunked exact solve needs its final step."""
    rng = np.random.default_rng(3)
    v = (0.3 * rng.standard_normal((12, 40, 40))).astype(np.float32)
    v[2:10, 4:36, 4:36] += 5.0
    return v


def test_level_sets_dichotomy_on_a_dask_layer_is_the_chunked_exact_solve(
    make_napari_viewer, wait_done, errors, monkeypatch
):
    from napari_tv import _exact_chunked
    from napari_tv._widgets.levelsets import LevelSetsWidget
    from napari_tv.solvers.exact import solve_exact

    monkeypatch.setattr(_exact_chunked, "IN_MEMORY_SHARE", 0.0)  # as if it did not fit

    v = _plateau_volume()
    viewer = make_napari_viewer()
    layer = viewer.add_image(da.from_array(v, chunks=(6, 20, 20)), name="img", scale=SPACING)
    w = LevelSetsWidget(viewer)
    w.set_parameters(levels=32, connectivity=1, beta=2.0)
    w.run_dichotomy()
    wait_done(w.runner)
    assert not errors["error"], errors
    out, labels = viewer.layers["img exact"], viewer.layers["img dichotomy"]
    assert isinstance(out.data, da.Array) and isinstance(labels.data, da.Array)
    assert tuple(out.scale) == SPACING
    ref = solve_exact(v, 2.0, levels=32, spacing=SPACING)
    w_sp = (1 / 2.0, 1.0, 1.0)
    got = np.asarray(out.data)
    assert tv_energy(got, v, 2.0, connectivity=1, weights=w_sp) == pytest.approx(
        ref.energy, rel=1e-9)
    passes = out.metadata["passes"]
    decided = np.asarray(labels.data)
    assert decided.min() >= 1 and decided.max() <= passes + 1
    assert "certified voxel by voxel" in w.status.value
    assert not w.depth_slider.enabled and "chunked" in w.depth_label.value
    np.testing.assert_array_equal(np.asarray(layer.data), v)


def test_denoise_widget_exact_on_a_dask_layer_runs_chunked(make_napari_viewer, wait_done,
                                                           errors):  # fmt: skip
    from napari_tv.solvers.exact import solve_exact

    v = _plateau_volume()
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(v, chunks=(6, 20, 20)), name="img")
    w = _denoise_widget(viewer)
    assert w.chunked.value
    w.set_parameters(method="exact", beta=2.0, levels=32)
    w.run()
    wait_done(w.runner)
    assert not errors["error"], errors
    out = viewer.layers["img TV"]
    assert isinstance(out.data, da.Array)
    assert "(solved at once: it fits in memory)" in out.metadata["certificate"]
    ref = solve_exact(v, 2.0, levels=32)
    assert tv_energy(np.asarray(out.data), v, 2.0, connectivity=1) == pytest.approx(
        ref.energy, rel=1e-9)
