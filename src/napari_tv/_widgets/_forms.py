"""The magicgui pieces every dock widget is built from.

* :class:`ImageInput`: the one input component -- the image layer (a magicgui layer combo
  that follows the viewer: layers added, removed, reordered or renamed), "first axis is
  time", and the voxel spacing, read from ``layer.scale``;
* :class:`ProgressRow`: a progress bar with a Cancel button, driven by a
  :class:`~._tasks.TaskRunner`;
* :func:`log_slider` and :func:`plot`: the two Qt controls magicgui has no widget for (a
  logarithmic β slider with coloured marks, a small line plot), wrapped as magicgui widgets;
* :class:`TVForm`: the base of the four widgets -- a magicgui ``Container`` whose named
  controls are the library's keyword arguments, so ``form.update({...})`` and
  ``form.asdict()`` are the way in and out.

Choices come from the library's tables (methods, fidelities, TV kinds), never from copies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from magicgui.backends._qtpy.widgets import QBaseValueWidget, QBaseWidget
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Widget,
    create_widget,
)
from magicgui.widgets.bases import ValueWidget
from psygnal import Signal

from ._controls import LogSlider, PlotWidget
from ._layers import ImageInfo, LayerError, has_time_label, image_layer_info, layer_index
from ._tasks import TaskRunner, connect_while_alive, notify_error

# --------------------------------------------------------------------------------------------
# the spacing box


def parse_spacing(text: str, ndim: int) -> tuple[float, ...]:
    """Parse the spacing box: ``"2, 0.5, 0.5"`` or a single number for every axis."""
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        steps = [float(p) for p in parts]
    except ValueError:
        raise LayerError(f"spacing must be numbers separated by commas, got {text!r}") from None
    if len(steps) == 1:
        steps = steps * ndim
    if len(steps) != ndim or not all(math.isfinite(s) and s > 0 for s in steps):
        raise LayerError(f"spacing needs {ndim} positive numbers (one per axis), got {text!r}")
    return tuple(steps)


def format_spacing(spacing: Sequence[float]) -> str:
    return ", ".join(f"{s:g}" for s in spacing)


# --------------------------------------------------------------------------------------------
# Qt controls as magicgui widgets


class _LogSliderBackend(QBaseValueWidget):
    """magicgui backend over :class:`LogSlider` (value: float; changes on every move)."""

    _qwidget: LogSlider

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(LogSlider, "value", "setValue", "valueChanged", **kwargs)


class _PlotBackend(QBaseWidget):
    _qwidget: PlotWidget

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(PlotWidget, **kwargs)


def log_slider(name: str, label: str, minimum: float, maximum: float, value: float) -> ValueWidget:
    """A magicgui value widget whose ``native`` is a :class:`LogSlider` (marks, commit signal)."""
    widget = ValueWidget(widget_type=_LogSliderBackend, name=name, label=label)
    widget.native.setRange(minimum, maximum)
    widget.native.setValue(value, emit=False)
    return widget


def plot(name: str, title: str, *, log_x: bool = False) -> Widget:
    """A magicgui widget whose ``native`` is a :class:`PlotWidget`."""
    widget = Widget(widget_type=_PlotBackend, name=name, label="")
    widget.native.title = title
    widget.native.log_x = log_x
    return widget


def offer_fidelities(combo: ComboBox, method: str) -> None:
    """Offer in ``combo`` only the fidelities ``method`` supports (the methods table's record),
    keeping the current choice when it is among them; no change event."""
    from napari_tv.solvers.methods import get_method

    current = combo.value
    allowed = tuple(get_method(method).fidelities)
    with combo.changed.blocked():
        combo.choices = allowed
        if current in allowed:
            combo.value = current


class MethodOptions(Container):
    """A method's own options (its record in the methods table) as a form: a check box for a
    flag, a spin box for a count, a text box for a number ("" = the solver's default), a list
    for a choice.  ``values()`` is the ``options`` dict of ``denoise_tv`` (what differs from
    the defaults)."""

    def __init__(self, method: str) -> None:
        from napari_tv.solvers.methods import get_method

        self.method = get_method(method)
        widgets = []
        for name, option in self.method.options.items():
            label = name.replace("_", " ")
            kw = {"name": name, "label": label, "tooltip": option.doc}
            if option.type is bool:
                widget = CheckBox(value=bool(option.default), **kw)
            elif option.type is int:
                widget = SpinBox(value=option.default, min=int(option.minimum or 0), max=10**6,
                                 **kw)  # fmt: skip
            elif option.choices:
                choices = (("auto", None), *((c, c) for c in option.choices))
                widget = ComboBox(choices=choices, value=option.default, **kw)
            else:
                text = "" if option.default is None else repr(option.default)
                widget = LineEdit(value=text, **kw)
            widgets.append(widget)
        super().__init__(widgets=widgets, labels=True, visible=False)
        self.margins = (0, 0, 0, 0)

    def values(self) -> dict[str, Any]:
        """The options that differ from the defaults (raises :class:`LayerError` for a text
        that is not a number)."""
        out = {}
        for widget in self:
            option = self.method.options[widget.name]
            value = widget.value
            if isinstance(widget, LineEdit) and option.type in (int, float):
                if not value.strip():
                    value = None
                else:
                    try:
                        value = option.type(value)
                    except ValueError:
                        raise LayerError(
                            f"{widget.name} must be a number, got {value!r}"
                        ) from None
            if value != option.default:
                out[widget.name] = value
        return out


def set_beta(slider: ValueWidget, value: float) -> None:
    """Put ``value`` on a β slider without emitting, widening its range when needed."""
    native = slider.native
    if not native.minimum() <= value <= native.maximum():
        native.setRange(min(value / 10, native.minimum()), max(value * 10, native.maximum()))
    native.setValue(value, emit=False)


# --------------------------------------------------------------------------------------------
# the input component


class ImageInput(Container):
    """The image layer, "first axis is time" and the spacing: the input of every widget.

    The layer list follows the viewer by itself (napari's layer combo for
    ``napari.layers.Image``, refreshed on every layer event, including a rename) and leaves
    out the layers whose names end with ``exclude_suffixes`` (the widget's own outputs).
    Choosing a layer sets the time box from its axis labels and the spacing from its scale,
    then emits :attr:`layer_changed`.
    """

    #: the chosen layer (or None) after a choice or a change of its time axis
    layer_changed = Signal(object)

    def __init__(self, viewer, *, exclude_suffixes: Sequence[str] = (),
                 time_axis: bool = True, time_text: str | None = None,
                 allow_multiscale: bool = False) -> None:  # fmt: skip
        import napari.layers

        self.viewer = viewer
        self.exclude_suffixes = tuple(exclude_suffixes)
        self.allow_multiscale = allow_multiscale
        self.image = create_widget(
            annotation=napari.layers.Image,
            name="image",
            label="image",
            options={"choices": self._choices, "nullable": False},
        )
        self.time_series = CheckBox(
            name="time_series", text=time_text or "first axis is time (2D+t / 3D+t)",
            visible=time_axis,
        )  # fmt: skip
        self.spacing = LineEdit(
            name="spacing", label="spacing",
            tooltip="voxel size per spatial axis (defaults to the layer's scale)",
        )  # fmt: skip
        super().__init__(widgets=[self.image, self.time_series, self.spacing], labels=True)
        self.margins = (0, 0, 0, 0)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            connect_while_alive(self.native, ev, self._on_layers)
        for layer in viewer.layers:
            connect_while_alive(self.native, layer.events.name, self._on_layers)
            connect_while_alive(self.native, layer.events.scale, self._on_scale)
        self.image.changed.connect(self._on_layer)
        self.time_series.changed.connect(self._on_time)
        self.reset_choices()
        active = viewer.layers.selection.active
        if active is not None and active in self.image.choices:
            self.image.value = active
        self._on_layer(self.image.value)

    def _choices(self, _widget=None) -> list:
        import napari.layers

        return [ly for ly in self.viewer.layers
                if isinstance(ly, napari.layers.Image)
                and not ly.name.endswith(self.exclude_suffixes)]  # fmt: skip

    def _on_layers(self, event=None) -> None:
        value = getattr(event, "value", None)
        if getattr(event, "type", "") == "inserted" and value is not None:
            connect_while_alive(self.native, value.events.name, self._on_layers)
            connect_while_alive(self.native, value.events.scale, self._on_scale)
        before = self.image.value
        self.reset_choices()
        if self.image.value is not before:  # the chosen layer went away
            self._on_layer(self.image.value)

    def _on_layer(self, layer) -> None:
        if layer is not None:
            with self.time_series.changed.blocked():
                self.time_series.value = has_time_label(layer)
        self._refresh_spacing()
        self.layer_changed.emit(layer)

    def _on_scale(self, event=None) -> None:
        """The chosen layer's scale changed (e.g. set after it was added): the spacing
        follows it."""
        if getattr(event, "source", None) is self.image.value:
            self._refresh_spacing()

    def _on_time(self, _value) -> None:
        self._refresh_spacing()
        self.layer_changed.emit(self.image.value)

    def _refresh_spacing(self) -> None:
        try:
            self.spacing.value = format_spacing(self.info().spacing)
        except LayerError:
            pass

    # -- what the widgets ask ----------------------------------------------------------
    def layer(self):
        """The chosen layer, or None."""
        return self.image.value

    def set_layer(self, layer) -> None:
        self.reset_choices()
        self.image.value = layer

    def info(self) -> ImageInfo:
        """The chosen layer checked and described (raises :class:`LayerError`)."""
        return image_layer_info(self.image.value, time_series=bool(self.time_series.value),
                                allow_multiscale=self.allow_multiscale)  # fmt: skip

    def spacing_for(self, info: ImageInfo) -> tuple[float, ...]:
        """The spacing box's value for ``info``'s spatial axes (raises :class:`LayerError`)."""
        return parse_spacing(self.spacing.value or "1", info.spatial_ndim)

    def current_time(self, info: ImageInfo) -> int | None:
        """The time point the viewer shows (None without a time axis)."""
        if info.time_axis is None:
            return None
        return layer_index(self.viewer, info.layer, info.time_axis)


# --------------------------------------------------------------------------------------------
# progress, and the base of every form


class ProgressRow(Container):
    """A progress bar with a Cancel button beside it."""

    def __init__(self) -> None:
        self.bar = ProgressBar(name="progress", min=0, max=1000, value=0)
        self.cancel_button = PushButton(name="cancel", text="Cancel")
        super().__init__(widgets=[self.bar, self.cancel_button], layout="horizontal",
                         labels=False)  # fmt: skip
        self.margins = (0, 0, 0, 0)


class TVForm(Container):
    """A dock widget: the :class:`ImageInput`, the widget's own controls (named after the
    library's keyword arguments), a Run button, a progress row and two status lines.

    Subclasses list their controls in ``controls`` and implement ``run``.
    """

    title = ""
    #: layers with these name endings are the widget's outputs, never its input
    exclude_suffixes: tuple[str, ...] = ()
    #: the time box's text (None: "first axis is time (2D+t / 3D+t)")
    time_text: str | None = None
    #: a multiscale layer is taken (its level 0, ``ImageInfo.data``)
    accepts_multiscale = False

    def __init__(self, viewer, controls: Sequence[Widget], *, run_text: str = "Run",
                 extra: Sequence[Widget] = (), time_axis: bool = True) -> None:  # fmt: skip
        self.viewer = viewer
        self.input = ImageInput(viewer, exclude_suffixes=self.exclude_suffixes,
                                time_axis=time_axis, time_text=self.time_text,
                                allow_multiscale=self.accepts_multiscale)  # fmt: skip
        self.run_button = PushButton(name="run_button", text=run_text)
        self.progress_row = ProgressRow()
        self.status = Label(name="status", value="")
        self.result_label = Label(name="result_label", value="")
        for label in (self.status, self.result_label):
            label.native.setWordWrap(True)
        super().__init__(
            widgets=[self.input, *controls, self.run_button, *extra, self.progress_row,
                     self.status, self.result_label],
            labels=True,
        )  # fmt: skip
        self.native.layout().addStretch(1)
        for widget in self:  # texts and plots span the row (magicgui reads label="" as the name)
            if isinstance(widget, Label) or isinstance(widget.native, PlotWidget):
                widget.label = ""
        self.runner = TaskRunner(
            self.title,
            self.progress_row.bar.native,
            self.progress_row.cancel_button.native,
            self.status.native,
            busy_widgets=(self.run_button.native,),
            parent=self.native,
        )
        self.run_button.changed.connect(lambda *_: self.run())

    # the widgets the tests and the launcher know by name
    @property
    def layer_combo(self):
        return self.input.image

    @property
    def spacing_edit(self):
        return self.input.spacing

    @property
    def time_check(self):
        return self.input.time_series

    def set_parameters(self, **values) -> None:
        """Set controls by name (the library's keyword arguments; ``image``, ``time_series``
        and ``spacing`` go to the input).  An unknown name is a ValueError naming it."""
        for key, value in values.items():
            self.set_value(key, value)

    def set_value(self, key: str, value) -> None:
        if key == "spacing":
            self.input.spacing.value = format_spacing(value)
        elif key in ("image", "time_series"):
            self.input[key].value = value
        elif key in self._names():
            widget = self[key]
            if isinstance(widget, ComboBox) and value not in widget.choices:
                raise ValueError(f"{key} must be one of {list(widget.choices)}, got {value!r}")
            widget.value = value
        else:
            raise ValueError(f"unknown parameter {key!r}")

    def _names(self) -> set[str]:
        return {w.name for w in self if isinstance(w, ValueWidget)}

    def checked(self):
        """``(layer info, library arguments)`` of the chosen layer and the controls, or None
        after a notification that says what is wrong (a bad layer or value)."""
        try:
            info = self.input.info()
            return info, self.parameters(info)
        except LayerError as exc:
            notify_error(f"{self.title}: {exc}")
            return None

    def parameters(self, info: ImageInfo) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self):  # pragma: no cover - every widget defines it
        raise NotImplementedError

    def cancel(self) -> None:
        self.runner.cancel()
