"""Open napari with the four napari-tv widgets docked (``napari-tv view``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: (title, module, class) of the docked widgets, in the order of ``napari.yaml``
WIDGETS = (
    ("TV denoise", "denoise", "DenoiseWidget"),
    ("TV gradient", "gradient", "GradientWidget"),
    ("Level sets", "levelsets", "LevelSetsWidget"),
    ("β sweep", "sweep", "SweepWidget"),
)


def _add_zarr(viewer, path: Path) -> None:
    """Add a zarr array or OME-Zarr image lazily (a dask layer: napari reads the chunks it
    shows), its voxel size as ``scale``."""
    from napari_tv._zarr_io import read_zarr

    img = read_zarr(path)
    axes = img.axes if len(img.axes) == img.data.ndim else ""
    kwargs: dict = {"name": path.name.split(".")[0]}
    if img.scale is not None and len(img.scale) == img.data.ndim:
        kwargs["scale"] = tuple(1.0 if a in "TC" else float(s)
                                for a, s in zip(axes or "?" * img.data.ndim, img.scale,
                                                strict=True))  # fmt: skip
    if axes:
        kwargs["axis_labels"] = tuple(a.lower() for a in axes)
    viewer.add_image(img.data, **kwargs)


def _add_file(viewer, path: Path) -> None:
    """Add a TIFF/.npy image with its voxel size as ``scale`` (axes from the file); a zarr
    store lazily (``_add_zarr``)."""
    from napari_tv._io import metadata_spacing, read_image
    from napari_tv._zarr_io import is_zarr

    if is_zarr(path):
        _add_zarr(viewer, path)
        return
    img = read_image(path)
    data, axes = img.data, img.axes if len(img.axes) == img.data.ndim else ""
    kwargs: dict = {"name": path.name.split(".")[0]}
    if axes.endswith("S") and data.shape[-1] in (3, 4):
        kwargs["rgb"] = True  # the widgets refuse it with a message; napari still shows it
        axes = axes[:-1]
    channel_axis = axes.index("C") if "C" in axes else None
    spacing = metadata_spacing(img, channel_axis)
    spatial_axes = [a for a in axes if a != "C"]
    if spacing is not None and len(spacing) == len(spatial_axes):
        kwargs["scale"] = tuple(
            1.0 if a in "TQ" else float(s) for a, s in zip(spatial_axes, spacing, strict=True)
        )
    if spatial_axes:
        kwargs["axis_labels"] = tuple("t" if a == "T" else a.lower() for a in spatial_axes)
    if channel_axis is not None:
        kwargs["channel_axis"] = channel_axis
    viewer.add_image(data, **kwargs)


def _add_sample(viewer, sample: str) -> None:
    from napari_tv import _sample_data as sd

    if sample == "3d":
        noisy, clean = sd.microscopy_3d()
        scale = sd.SAMPLE_3D_SCALE
        name = "microscopy 3D"
    else:
        noisy, clean = sd.microscopy_2d()
        scale = (1.0, 1.0)
        name = "microscopy 2D"
    axes = ("z", "y", "x")[-noisy.ndim :]
    viewer.add_image(
        clean, name=f"{name} (clean)", scale=scale, colormap="gray", visible=False, axis_labels=axes
    )
    viewer.add_image(noisy, name=f"{name} (noisy)", scale=scale, colormap="gray", axis_labels=axes)


def dock_widgets(viewer) -> dict:
    """Create the four widgets and dock them on the right, tabbed; returns them by title."""
    import importlib

    widgets, docks = {}, []
    for i, (title, module, cls) in enumerate(WIDGETS):
        klass = getattr(importlib.import_module(f"napari_tv._widgets.{module}"), cls)
        widget = klass(viewer)
        docks.append(viewer.window.add_dock_widget(widget, name=title, area="right", tabify=i > 0))
        widgets[title] = widget
    from qtpy.QtCore import QTimer

    docks[0].raise_()  # the "TV denoise" tab in front (again once the window is laid out)
    QTimer.singleShot(0, docks[0].raise_)
    return widgets


def open_viewer(
    path_or_array=None,
    *,
    show: bool = True,
    sample: str = "3d",
    run: bool | None = None,
):
    """Open napari on an image (or the plugin's sample data) with the four widgets docked.

    Parameters
    ----------
    path_or_array : str, Path, array_like or None
        A ``.tif``/``.tiff`` (ImageJ or OME voxel sizes become the layer ``scale``; a ``T``
        axis is labelled ``t`` so the widgets treat it as time) or ``.npy`` file, an array,
        or None for the sample data.
    show : bool
        Show the window.  ``show=False`` builds everything without showing (tests,
        screenshots).
    sample : {"3d", "2d"}
        Which sample to open when ``path_or_array`` is None: the 3D volume with its
        anisotropic voxel size (``SAMPLE_3D_SCALE``, the default), or the 2D image.
    run : bool, optional
        Enter the Qt event loop (``napari.run()``) before returning; default: ``show``.

    Returns
    -------
    napari.Viewer
        Its ``window`` holds the docked widgets; :func:`docked` finds them again.
    """
    import napari

    from napari_tv._validation import is_dask_array

    if sample not in ("2d", "3d"):
        raise ValueError(f"sample must be '2d' or '3d', got {sample!r}")
    viewer = napari.Viewer(title="napari-tv", show=show)
    if path_or_array is None:
        _add_sample(viewer, sample)
    elif isinstance(path_or_array, str | Path):
        _add_file(viewer, Path(path_or_array))
    elif is_dask_array(path_or_array):  # stays lazy
        viewer.add_image(path_or_array, name="image")
    else:
        viewer.add_image(np.asarray(path_or_array), name="image")
    dock_widgets(viewer)
    if run if run is not None else show:
        napari.run()
    return viewer


def docked(viewer) -> dict:
    """The napari-tv widgets docked in ``viewer``'s window, by title (magicgui forms, found
    through their native Qt widgets)."""
    import importlib

    from qtpy.QtWidgets import QWidget

    found = {}
    window = viewer.window._qt_window
    forms = [getattr(q, "_magic_widget", None) for q in window.findChildren(QWidget)]
    for title, module, cls in WIDGETS:
        klass = getattr(importlib.import_module(f"napari_tv._widgets.{module}"), cls)
        hits = [form for form in forms if isinstance(form, klass)]
        if hits:
            found[title] = hits[0]
    return found
