"""Layers in and out of the dock widgets.

* :func:`image_layer_info` checks a layer (RGB, Labels, 4D without a time axis, ... are
  refused with a message naming the layer) and reads its spacing from ``layer.scale``;
* :func:`show_output` creates a widget's output layer once and updates it in place afterwards
  (only what changed is set);
* :func:`compose_frames` writes solved time points into a time-series output.

Lazy layers (dask or zarr arrays, multiscale) stay lazy: ``ImageInfo.data`` is the
full-resolution array uncomputed, and :func:`show_output` takes a dask array (or a list of
them, a multiscale output) without computing it.

Nothing here computes anything: the maths lives in the Qt-free library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TIME_LABELS = ("t", "time", "frame", "frames", "timepoint")


class LayerError(ValueError):
    """A layer the widget cannot work on; the message says why and what to do."""


@dataclass
class ImageInfo:
    """What a widget needs to know about an input layer.

    ``time_axis`` is 0 for a time series (2D+t or 3D+t) and None otherwise; ``spatial_ndim``
    counts the remaining axes (2 or 3); ``spacing`` is ``layer.scale`` on the spatial axes.
    """

    layer: Any
    time_axis: int | None
    spatial_ndim: int
    spacing: tuple[float, ...]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def n_times(self) -> int:
        return int(self.layer.data.shape[0]) if self.time_axis is not None else 1

    @property
    def data(self):
        """The layer's full-resolution array: ``layer.data``, or level 0 of a multiscale
        layer (not computed: a dask or zarr array stays lazy)."""
        data = self.layer.data
        return data[0] if getattr(self.layer, "multiscale", False) else data

    @property
    def multiscale(self) -> bool:
        return bool(getattr(self.layer, "multiscale", False))

    @property
    def lazy(self) -> bool:
        """True for data that is not a NumPy array in memory (dask, zarr, multiscale): the
        widgets then read it chunk by chunk instead of computing it whole."""
        return self.multiscale or not isinstance(self.layer.data, np.ndarray)

    @property
    def shape(self) -> tuple[int, ...]:
        """The full-resolution shape (time axis included)."""
        return tuple(int(n) for n in self.data.shape)

    def frame(self, t: int | None = None) -> np.ndarray:
        """The spatial array at time ``t`` (the whole array when there is no time axis),
        computed in memory (level 0 of a multiscale layer).

        A view or a read-only copy of the layer's data: never write into it.
        """
        data = self.data
        if self.time_axis is not None:
            data = data[int(t or 0)]
        return np.asarray(data)


def has_time_label(layer) -> bool:
    """True when the layer's first axis label names a time axis (``t``, ``time``, ...)."""
    labels = getattr(layer, "axis_labels", None) or ()
    return bool(labels) and str(labels[0]).strip().lower() in TIME_LABELS


def image_layer_info(
    layer, *, time_series: bool = False, allow_multiscale: bool = False
) -> ImageInfo:
    """Check ``layer`` for a TV widget and describe it.

    Parameters
    ----------
    layer : napari layer or None
    time_series : bool
        The user says the first axis is time (a 3D layer is then 2D+t).  A layer whose first
        axis label is ``t``/``time`` is a time series when it has 4 dimensions, whatever this
        flag says.
    allow_multiscale : bool
        Accept a multiscale layer (the widget then works on level 0, ``ImageInfo.data``).

    Raises
    ------
    LayerError
        For no layer, a non-Image layer (Labels, Points, ...), RGB(A), multiscale, complex or
        non-numeric data, or a dimensionality that is not 2D, 3D, 2D+t or 3D+t.
    """
    from napari.layers import Image

    if layer is None:
        raise LayerError("no image layer selected: open an image or a sample first")
    kind = type(layer).__name__
    if not isinstance(layer, Image):
        raise LayerError(
            f"layer {layer.name!r} is a {kind} layer; TV works on Image layers"
            + (
                " (a Labels layer is a segmentation, not an intensity image)"
                if kind == "Labels"
                else ""
            )
        )
    if getattr(layer, "rgb", False):
        raise LayerError(
            f"layer {layer.name!r} is an RGB(A) image (shape {tuple(layer.data.shape)}); "
            "split its channels (layer context menu > Split RGB) and denoise one channel"
        )
    if getattr(layer, "multiscale", False) and not allow_multiscale:
        raise LayerError(
            f"layer {layer.name!r} is multiscale; this widget needs a single array (TV denoise "
            "and the β sweep take a multiscale layer's level 0)"
        )
    dtype = np.dtype(layer.data.dtype)
    if dtype.kind not in "biuf":
        raise LayerError(f"layer {layer.name!r} has dtype {dtype}; a real-valued image is needed")
    ndim = int(layer.ndim)
    shape = tuple(layer.data.shape)
    timed = has_time_label(layer) or (time_series and ndim in (3, 4))
    if ndim == 4 and not timed:
        raise LayerError(
            f"layer {layer.name!r} is 4D (shape {shape}) without a time axis; tick "
            "'first axis is time' or set layer.axis_labels[0] = 't' for a 3D+t series"
        )
    if ndim not in (2, 3, 4) or (ndim == 2 and timed):
        raise LayerError(
            f"layer {layer.name!r} has {ndim} dimension(s) (shape {shape}); "
            "TV widgets take 2D, 3D, 2D+t or 3D+t images"
        )
    time_axis = 0 if timed else None
    spatial = ndim - (1 if timed else 0)
    spacing = tuple(float(s) for s in layer.scale[ndim - spatial :])
    return ImageInfo(layer=layer, time_axis=time_axis, spatial_ndim=spatial, spacing=spacing)


def layer_index(viewer, layer, axis: int = 0) -> int:
    """The layer's data index on ``axis`` at the viewer's current dims position."""
    offset = viewer.dims.ndim - layer.ndim
    world = float(viewer.dims.point[offset + axis])
    idx = round((world - float(layer.translate[axis])) / float(layer.scale[axis]))
    return int(min(max(idx, 0), layer.data.shape[axis] - 1))


def show_output(
    viewer,
    name: str,
    data,
    *,
    like=None,
    layer_type: str = "image",
    metadata: dict | None = None,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    axis_labels: Sequence[str] | None = None,
    **kwargs,
):
    """Put ``data`` in the layer called ``name``: updated in place if it exists, else added.

    The layer takes ``scale``/``translate`` (default: those of ``like``) so it overlays its
    input.  Extra keyword arguments (colormap, contrast_limits, opacity, ...) are set on the
    layer.  The layer that is active before the call stays active.

    An existing layer is updated, never removed and added again (unless the user changed its
    type or dimensionality), and only what changed is set: every property napari is given
    refreshes the layer and its canvas, even with its current value (setting the same scale
    and translate cost 20 ms per update of a 512² image, twice the data itself).
    """
    multiscale = layer_type == "image" and isinstance(data, list | tuple)
    first = data[0] if multiscale else data
    lazy = multiscale or not isinstance(first, np.ndarray)
    ndim = np.ndim(first) if layer_type != "vectors" else np.shape(data)[-1]
    if scale is None:
        scale = tuple(like.scale)[-ndim:] if like is not None else (1.0,) * ndim
    if translate is None:
        translate = tuple(like.translate)[-ndim:] if like is not None else (0.0,) * ndim
    if axis_labels is None and like is not None and like.ndim == ndim:
        axis_labels = tuple(like.axis_labels)
    active = viewer.layers.selection.active
    layer = viewer.layers[name] if name in viewer.layers else None
    if layer is not None and (
        type(layer).__name__.lower() != layer_type
        or layer.ndim != ndim
        or bool(getattr(layer, "multiscale", False)) != multiscale
    ):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        if layer_type == "image" and "contrast_limits" not in kwargs:
            # lazy data (dask, multiscale) is not computed whole: the coarsest level, if any,
            # else a central plane (a few chunks)
            limits = robust_limits(data[-1]) if multiscale else (
                robust_limits(np.asarray(_central_sample(data))) if lazy
                else robust_limits(data)
            )  # fmt: skip
            if limits is not None:
                kwargs["contrast_limits"] = limits
        if metadata is not None:  # at creation: the layer combos look at it when it appears
            kwargs["metadata"] = dict(metadata)
        if multiscale:
            kwargs["multiscale"] = True
        adder = getattr(viewer, f"add_{layer_type}")
        layer = adder(data, name=name, scale=scale, translate=translate, **kwargs)
    else:
        set_if_changed(layer, "scale", scale)
        set_if_changed(layer, "translate", translate)
        for key, value in kwargs.items():
            if key != "contrast_limits":
                set_if_changed(layer, key, value)
        layer.data = data
        if "contrast_limits" in kwargs:
            set_if_changed(layer, "contrast_limits", kwargs["contrast_limits"])
        elif layer_type == "image" and not lazy:
            keep_or_reset_contrast(layer)
    if axis_labels is not None:
        try:
            set_if_changed(layer, "axis_labels", tuple(axis_labels))
        except (ValueError, TypeError):  # pragma: no cover - napari version differences
            pass
    if metadata is not None:
        layer.metadata = dict(metadata)
    selection = viewer.layers.selection
    if active is not None and active in viewer.layers and selection.active is not active:
        viewer.layers.selection.active = active
    return layer


def set_if_changed(layer, name: str, value) -> None:
    """``setattr(layer, name, value)`` unless the layer has that value already (compared as
    numbers, or by name for colormaps, or by equality)."""
    current = getattr(layer, name)
    if _same(current, value):
        return
    setattr(layer, name, value)


def _same(current, value) -> bool:
    if hasattr(current, "name") and (isinstance(value, str) or hasattr(value, "name")):
        return current.name == getattr(value, "name", value)  # a colormap
    try:
        a = np.asarray(current, dtype=float)
        b = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        try:
            return bool(current == value)
        except Exception:  # noqa: BLE001 - incomparable: set it
            return False
    return a.shape == b.shape and bool(np.array_equal(a, b))


def robust_limits(data) -> tuple[float, float] | None:
    """Contrast limits from the 0.5 and 99.8 percentiles (a few bright spots do not make the
    rest of a denoised image dark); None for a constant image."""
    data = np.asarray(data)
    sample = data.ravel()[:: max(data.size // 1_000_000, 1)]
    lo, hi = (float(v) for v in np.nanpercentile(sample, (0.5, 99.8)))
    if not hi > lo:
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    return (lo, hi) if hi > lo else None


def _central_sample(data, limit: int = 1 << 20):
    """A central part of a lazy array to take contrast limits from: the middle plane of the
    leading axes, cropped to about ``limit`` voxels."""
    while data.ndim > 2:
        data = data[data.shape[0] // 2]
    side = int(limit ** (1 / max(data.ndim, 1)))
    return data[tuple(slice(max(0, n // 2 - side // 2), n // 2 - side // 2 + side)
                      for n in data.shape)]  # fmt: skip


def keep_or_reset_contrast(layer) -> None:
    """Keep an updated image layer's contrast limits (the user may have tuned them) unless
    they no longer fit the data: covering under half, or over twice, its range."""
    data = np.asarray(layer.data)
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    c_lo, c_hi = (float(c) for c in layer.contrast_limits)
    span, c_span = hi - lo, c_hi - c_lo
    if span <= 0:
        return
    overlap = min(hi, c_hi) - max(lo, c_lo)
    if overlap < 0.25 * span or c_span > 2.0 * span:
        limits = robust_limits(data)
        if limits is not None:
            layer.contrast_limits = limits


def diverging_colormap():
    """Blue → black → orange: a diverging colormap with a dark centre (0), for signed maps
    shown on napari's dark canvas."""
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=[[0.25, 0.65, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.62, 0.1, 1.0]],
        name="napari-tv diverging",
        display_name="diverging (blue-black-orange)",
    )


def compose_frames(viewer, name: str, layer, frames: dict[int, np.ndarray]):
    """The full-length data of a time-series output layer with ``frames`` written in.

    Reuses the existing output layer's data (copied) when its shape and dtype fit, so time
    points solved earlier stay; others are 0.  Returns ``(data, solved time points)``.
    """
    dtype = next(iter(frames.values())).dtype
    old = viewer.layers[name] if name in viewer.layers else None
    if old is not None and old.data.shape == layer.data.shape and old.data.dtype == dtype:
        data = np.array(old.data, copy=True)
        solved = set(old.metadata.get("time_points_solved", []))
    else:
        data = np.zeros(layer.data.shape, dtype=dtype)
        solved = set()
    for t, u in frames.items():
        data[t] = u
        solved.add(int(t))
    return data, sorted(solved)
