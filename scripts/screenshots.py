"""Screenshots of the four napari-tv widgets in use, for the README and the tutorial.

Run under a virtual X server::

    xvfb-run -a .venv/bin/python scripts/screenshots.py

Writes docs/images/{overview,denoise,gradient,levelsets,dichotomy,sweep,chunked,chunked_exact}.png
(``... screenshots.py overview`` or ``... chunked`` makes only that one).  Every picture is the
real napari window driven through the widgets' own controls on the plugin's sample data.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
SIZE = (1500, 940)


def wait_until(predicate, timeout: float = 300.0) -> None:
    """Process Qt events until ``predicate()`` is true."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    start = time.monotonic()
    while not predicate():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - start > timeout:
            raise TimeoutError("a widget did not finish in time")
    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)


def front(widget) -> None:
    """Bring the dock tab holding ``widget`` to the front."""
    from qtpy.QtWidgets import QDockWidget

    wait_until(lambda: True)
    parent = widget.native.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    if parent is not None:
        parent.raise_()


def only(viewer, *names: str) -> None:
    """Show just these layers (in this order of importance: the first is selected)."""
    for layer in viewer.layers:
        layer.visible = layer.name in names
    viewer.layers.selection.active = viewer.layers[names[0]]


def shot(viewer, name: str) -> Path:
    wait_until(lambda: True)
    path = OUT / f"{name}.png"
    viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")
    return path


def main() -> int:
    from napari_tv._widgets._launch import docked, open_viewer

    OUT.mkdir(parents=True, exist_ok=True)
    if sys.argv[1:] == ["overview"]:  # just the README picture
        overview()
        return 0
    if sys.argv[1:] == ["chunked"]:
        chunked()
        return 0
    if sys.argv[1:] == ["chunked_exact"]:
        chunked_exact()
        return 0
    viewer = open_viewer(sample="2d", show=True, run=False)
    viewer.window._qt_window.resize(*SIZE)
    widgets = docked(viewer)
    noisy = "microscopy 2D (noisy)"
    clean = "microscopy 2D (clean)"
    denoise = widgets["TV denoise"]
    gradient = widgets["TV gradient"]
    levels = widgets["Level sets"]
    sweep = widgets["β sweep"]

    # 1. TV denoise: the default method (primal-dual), L2, at the β suggested from the data
    # (computed in the background when the layer is chosen; the orange mark on the slider)
    front(denoise)
    denoise.set_parameters(image=viewer.layers[noisy])
    wait_until(lambda: denoise.suggested is not None)
    denoise.run()
    wait_until(lambda: not denoise.runner.running)
    out = f"{noisy} TV"
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid
    grid.enabled = True
    grid.shape = (1, 2)
    only(viewer, out, noisy)
    viewer.reset_view()
    shot(viewer, "denoise")
    grid.enabled = False

    # 2. TV gradient of the clean image: diverging colormap and direction arrows
    front(gradient)
    gradient.set_parameters(image=viewer.layers[clean])
    gradient.set_parameters(scheme="forward", eps=0.05, step=8)
    gradient.run()
    wait_until(lambda: not gradient.runner.running)
    only(viewer, f"{clean} ∇f direction", f"{clean} TV gradient")
    viewer.reset_view()
    viewer.camera.center = (150.0, 110.0)  # a closer look at a few filaments
    viewer.camera.zoom = viewer.camera.zoom * 2.2
    shot(viewer, "gradient")

    # 3. Level sets of the denoised image: u^λ over it and the perimeter profile
    front(levels)
    levels.set_parameters(image=viewer.layers[out])
    levels.set_parameters(levels=32, connectivity=2)
    levels.run()
    wait_until(lambda: not levels.runner.running)
    levels.set_level_index(8)
    only(viewer, f"{out} u^λ", out)
    viewer.reset_view()
    shot(viewer, "levelsets")

    # 3b. The dichotomy of the exact solver on the noisy image, after 3 of its rounds
    levels.set_parameters(image=viewer.layers[noisy])
    levels.set_parameters(levels=None, connectivity=2, beta=2.0, fidelity="l2")
    levels.run_dichotomy()
    wait_until(lambda: not levels.runner.running)
    levels.set_depth(3)
    only(viewer, f"{noisy} dichotomy", noisy)
    viewer.reset_view()
    shot(viewer, "dichotomy")

    # 4. β sweep: L-curve and the risk estimate of the suggestion, live result at that β
    front(sweep)
    sweep.set_parameters(image=viewer.layers[noisy])
    sweep.set_parameters(method="primal_dual", k=8, beta_range=(0.2, 20.0), tol=1e-3)
    sweep.run_curve(suggest=True)
    wait_until(lambda: not sweep.runner.running)
    sweep.use_suggested.native.click()
    wait_until(lambda: sweep.idle)
    only(viewer, f"{noisy} β-sweep")
    viewer.reset_view()
    shot(viewer, "sweep")

    viewer.close()
    overview()
    chunked()
    chunked_exact()
    return 0


def chunked() -> None:
    """``napari-tv view stack.ome.zarr``: the 3D sample stored as an OME-Zarr image in
    16x64x64 chunks opens as a lazy (dask) layer with its voxel size; TV denoise runs chunked
    and its output layer is lazy too."""
    import tempfile

    import zarr

    from napari_tv import SAMPLE_3D_SCALE, microscopy_3d
    from napari_tv._widgets._launch import docked, open_viewer

    noisy, _ = microscopy_3d()
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/stack.ome.zarr"
        group = zarr.open_group(path, mode="w", zarr_format=3)
        group.create_array("0", data=noisy, chunks=(16, 64, 64))
        axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
        scale = [{"type": "scale", "scale": list(SAMPLE_3D_SCALE)}]
        group.attrs["ome"] = {"version": "0.5", "multiscales": [
            {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}]}
        viewer = open_viewer(path, show=True, run=False)
        viewer.window._qt_window.resize(*SIZE)
        name = "stack"
        denoise = docked(viewer)["TV denoise"]
        front(denoise)
        denoise.set_parameters(image=viewer.layers[name])
        wait_until(lambda: denoise.suggested is not None)  # β from the data, in the background
        denoise.run()
        wait_until(lambda: not denoise.runner.running)
        grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid
        grid.enabled = True
        grid.shape = (1, 2)
        only(viewer, f"{name} TV", name)
        viewer.dims.set_current_step(0, noisy.shape[0] // 2)
        viewer.reset_view()
        shot(viewer, "chunked")
        viewer.close()


def chunked_exact() -> None:
    """The Level sets widget's exact solve on a lazy (dask) layer of the 3D sample, in passes
    over its blocks (forced: the sample would fit in memory and be solved at once): the exact
    minimiser and, over it, the pass that decided each voxel."""
    import dask.array as da

    from napari_tv import SAMPLE_3D_SCALE, _exact_chunked, microscopy_3d
    from napari_tv._widgets._launch import docked, open_viewer

    noisy, _ = microscopy_3d()
    viewer = open_viewer(show=True, run=False)
    viewer.window._qt_window.resize(*SIZE)
    name = "stack"
    viewer.add_image(da.from_array(noisy, chunks=(16, 64, 64)), name=name,
                     scale=SAMPLE_3D_SCALE)  # fmt: skip
    levels = docked(viewer)["Level sets"]
    front(levels)
    levels.set_parameters(image=viewer.layers[name])
    levels.set_parameters(levels=64, connectivity=1, beta=1.0, fidelity="l2")
    saved, _exact_chunked.IN_MEMORY_SHARE = _exact_chunked.IN_MEMORY_SHARE, 0.0
    try:
        levels.run_dichotomy()
        wait_until(lambda: not levels.runner.running)
    finally:
        _exact_chunked.IN_MEMORY_SHARE = saved
    only(viewer, f"{name} dichotomy", f"{name} exact")
    viewer.dims.set_current_step(0, noisy.shape[0] // 2)
    viewer.reset_view()
    shot(viewer, "chunked_exact")
    viewer.close()


def overview() -> None:
    """The README picture: the 3D sample volume (anisotropic voxels) and its TV denoising."""
    from napari_tv._widgets._launch import docked, open_viewer

    viewer = open_viewer(sample="3d", show=True, run=False)
    viewer.window._qt_window.resize(*SIZE)
    denoise = docked(viewer)["TV denoise"]
    noisy = "microscopy 3D (noisy)"
    front(denoise)
    denoise.set_parameters(image=viewer.layers[noisy])
    wait_until(lambda: denoise.suggested is not None)  # the β suggested from the data
    denoise.run()
    wait_until(lambda: not denoise.runner.running)
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid
    grid.enabled = True
    grid.shape = (1, 2)
    only(viewer, f"{noisy} TV", noisy)
    viewer.dims.set_current_step(0, viewer.layers[noisy].data.shape[0] // 2)
    viewer.reset_view()
    shot(viewer, "overview")
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
