"""The "TV denoise" dock widget: one image layer in, one "<input> TV" layer out."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Label, LineEdit, SpinBox
from qtpy.QtCore import QObject, Signal

from napari_tv._scheduling import Generation
from napari_tv.beta_choice import RULE_NAMES
from napari_tv.fidelity import FIDELITIES
from napari_tv.operators import TV_KINDS
from napari_tv.solvers.api import METHODS
from napari_tv.solvers.methods import get_method

from ._forms import MethodOptions, TVForm, log_slider, offer_fidelities, set_beta
from ._layers import ImageInfo, LayerError, compose_frames, show_output
from ._tasks import is_deleted, notify_error

OUTPUT_SUFFIX = " TV"
#: images up to this many voxels get a suggested β when they are selected (a 64×256×256
#: volume takes a few seconds in the background)
SUGGEST_MAX_SIZE = 1 << 24


def denoise_layer(info: ImageInfo, t: int | None, params: dict[str, Any], callback=None):
    """Denoise the layer's data (worker thread): the time point ``t``, or every time point
    when ``t`` is None and the layer has a time axis (``denoise_tv``'s ``channel_axis``)."""
    from napari_tv.solvers.api import denoise_tv

    if info.time_axis is not None and t is None:
        image = np.asarray(info.layer.data)
        return denoise_tv(image, channel_axis=info.time_axis, callback=callback,
                          return_info=True, **params)  # fmt: skip
    return denoise_tv(info.frame(t), callback=callback, return_info=True, **params)


def certificate(result) -> str:
    """A one-line statement of how good ``result`` is."""
    shortcut = result.extra.get("shortcut")
    if shortcut:
        return f"known minimiser, no iterations ({shortcut}; duality gap {result.gap:.3g})"
    if result.method == "exact":
        extra = result.extra
        n_levels = len(extra.get("levels", ()))
        return (
            f"exact minimiser on a {n_levels}-level grid (Darbon-Sigelle dichotomy, "
            f"{extra.get('rounds', result.n_iter)} max-flow rounds, {extra.get('cuts', '?')} cuts)"
        )
    return f"relative duality gap {result.gap:.3g} after {result.n_iter} iterations" + (
        " (converged)" if result.converged else " (not converged: raise iterations)"
    )


class _Bridge(QObject):
    """Carries the β suggestion from its thread to the GUI thread."""

    #: (search token, β or the exception, rule)
    ready = Signal(int, object, str)


class DenoiseWidget(TVForm):
    """TV-denoise an Image layer (2D, 3D, or a time series) into the layer "<input> TV".

    A magicgui form whose controls are ``denoise_tv``'s keyword arguments (``method``,
    ``fidelity``, ``tv``, ``beta``, ``connectivity``, ``levels``, ``max_num_iter``, ``tol``)
    plus the input (``image``, ``time_series``, ``spacing``) and ``all_frames``.  The output
    layer is created once and updated in place by every run; it keeps the input's scale and
    translate and records the parameters, energy, gap/certificate and time in its
    ``metadata``.  The input layer is never modified.  A β for the selected layer is suggested
    from its data in the background (``beta_choice.suggest_beta``): an orange mark on the β
    slider, and the slider's value until the user moves it.
    """

    title = "TV denoise"
    exclude_suffixes = (OUTPUT_SUFFIX,)

    def __init__(self, napari_viewer) -> None:
        self.all_frames = CheckBox(name="all_frames", text="all time points (else the one shown)")
        self.method = ComboBox(name="method", label="method", choices=METHODS)
        self.fidelity = ComboBox(name="fidelity", label="fidelity", choices=FIDELITIES)
        self.tv = ComboBox(name="tv", label="TV", choices=TV_KINDS)
        self.beta = log_slider("beta", "β", 1e-3, 1e2, 0.1)
        self.suggest_label = Label(name="suggest_label", value="")
        self.suggest_label.native.setWordWrap(True)
        self.suggest_label.native.setStyleSheet("color: #ff9f1c")
        self.suggest_label.label = ""
        self.connectivity = SpinBox(name="connectivity", label="connectivity", min=1, max=3)
        self.levels = SpinBox(name="levels", label="levels (1: auto)", min=1, max=65536, value=1)
        self.max_num_iter = SpinBox(name="max_num_iter", label="max iterations (0: auto)", min=0,
                                    max=100_000_000, value=0)  # fmt: skip
        self.tol = LineEdit(name="tol", label="tolerance", value="1e-4")
        # each method's own options (the methods table), shown for the chosen method
        self.method_options = {m: MethodOptions(m) for m in METHODS}
        super().__init__(
            napari_viewer,
            [self.all_frames, self.method, self.fidelity, self.tv, self.beta, self.suggest_label,
             self.connectivity, self.levels, self.max_num_iter, self.tol,
             *self.method_options.values()],
        )  # fmt: skip
        self.beta_slider = self.beta.native
        self._beta_set = False
        self.beta_slider.valueChanged.connect(lambda _v: setattr(self, "_beta_set", True))
        # β from the data, in the background: a marker on the slider, and the slider's value
        # until the user moves it
        self._suggestions = Generation()
        self.suggested: float | None = None
        self.suggest_thread: threading.Thread | None = None
        self._bridge = _Bridge(self.native)
        self._bridge.ready.connect(self._on_suggestion)
        self.fidelity.changed.connect(self._suggest)
        self.tv.changed.connect(self._suggest)
        # a running search stops when the form goes (not on Qt's destroyed signal: a Python
        # slot run while sip deletes the widget can crash)
        weakref.finalize(self, self._suggestions.close)
        self.method.changed.connect(self._on_method)
        self._on_method(self.method.value)
        self.input.layer_changed.connect(self._on_layer)
        self._on_layer(self.input.layer())

    # -- controls ------------------------------------------------------------------------
    def _on_layer(self, layer) -> None:
        """Adopt the new layer's intensity range (for β) and spatial dimensions, and start
        suggesting a β for it."""
        self._update_enabled()
        if layer is None:
            return
        try:
            info = self.input.info()
        except LayerError:
            return
        self.connectivity.max = info.spatial_ndim
        lo, hi = (float(c) for c in layer.contrast_limits)
        span = hi - lo if hi > lo else 1.0
        value = self.beta_slider.value()
        self.beta_slider.setRange(span * 1e-4, span * 10.0)
        if not span * 1e-4 <= value <= span * 10.0 or not self._beta_set:
            self.beta_slider.setValue(0.1 * span, emit=False)
        self._suggest()

    def _suggest(self, *_args) -> None:
        """Start choosing β from the layer's data (``beta_choice.suggest_beta`` with the
        fidelity's rule, on a plain thread); a newer call supersedes it."""
        from napari_tv.beta_choice import default_rule, suggest_beta

        token = self._suggestions.next()  # a running search stops at its next β
        self.beta_slider.setMarker("suggested", None)
        self.suggested = None
        try:
            info = self.input.info()
            image = info.frame(self.input.current_time(info))
            spacing = self.input.spacing_for(info)
        except (LayerError, ValueError):
            self.suggest_label.value = ""
            return
        if image.size > SUGGEST_MAX_SIZE:
            self.suggest_label.value = (
                f"β is not suggested for more than {SUGGEST_MAX_SIZE:.0e} voxels; use the β "
                "sweep on a crop"
            )
            return
        fidelity = self.fidelity.value
        rule = default_rule(fidelity)
        tv = "anisotropic" if self.method.value == "exact" else self.tv.value
        self.suggest_label.value = f"suggesting β from the data ({RULE_NAMES[rule]})…"
        stop = self._suggestions.stop_callback(token)
        bridge = self._bridge

        def job():  # a plain thread: it may outlive the widget (then its signal is dropped)
            try:
                payload = float(
                    suggest_beta(image, fidelity=fidelity, tv=tv, spacing=spacing, callback=stop)
                )
            except Exception as exc:  # noqa: BLE001 - shown in the widget
                payload = exc
            try:
                bridge.ready.emit(token, payload, rule)
            except RuntimeError:  # the widget was closed meanwhile
                pass

        self.suggest_thread = threading.Thread(target=job, name="napari-tv-suggest-beta",
                                               daemon=True)
        self.suggest_thread.start()

    def _on_suggestion(self, token: int, payload, rule: str) -> None:
        if self._suggestions.is_stale(token) or is_deleted(self.native):
            return  # superseded, or the dock was closed while the search ran
        if isinstance(payload, BaseException):
            self.suggest_label.value = f"no β suggested: {payload}"
            return
        beta = self.suggested = float(payload)
        slider = self.beta_slider
        if not slider.minimum() <= beta <= slider.maximum():
            slider.setRange(min(beta / 10, slider.minimum()), max(beta * 10, slider.maximum()))
        slider.setMarker("suggested", beta)
        if not self._beta_set:  # the user has not chosen one: start from it
            slider.setValue(beta, emit=False)
        self.suggest_label.value = (
            f"suggested β = {beta:.4g} ({RULE_NAMES[rule]}, from the data; orange mark)"
        )

    def _on_method(self, method: str) -> None:
        """Offer only the fidelities the method supports."""
        offer_fidelities(self.fidelity, method)
        for name, form in self.method_options.items():
            form.visible = name == method and len(form) > 0
        self.method.tooltip = get_method(method).description
        self._update_enabled()

    def _update_enabled(self, *_args) -> None:
        exact = self.method.value == "exact"
        self.tv.enabled = not exact
        self.max_num_iter.enabled = not exact
        self.tol.enabled = not exact
        self.connectivity.enabled = exact
        self.levels.enabled = exact
        self.all_frames.enabled = bool(self.input.time_series.value)

    def set_parameters(self, **values) -> None:
        """Set controls by name (``method``, ``fidelity``, ``tv``, ``beta``, ``connectivity``,
        ``levels``, ``max_num_iter``, ``tol``, ``spacing``, ``image``, ``time_series``,
        ``all_frames``); ``method`` first, as it decides the fidelities offered."""
        if "method" in values:
            values = {"method": values.pop("method"), **values}
        super().set_parameters(**values)

    def set_value(self, key: str, value) -> None:
        if key == "beta":
            set_beta(self.beta, float(value))
            self._beta_set = True
        elif key == "levels":
            self.levels.value = 1 if value is None else int(value)
        elif key == "max_num_iter":
            self.max_num_iter.value = 0 if value is None else int(value)
        elif key == "tol":
            self.tol.value = repr(float(value))
        elif key == "options":  # the chosen method's own options, by name
            form = self.method_options[self.method.value]
            for name, option_value in dict(value).items():
                if name not in form.method.options:
                    raise ValueError(f"method {self.method.value!r} has no option {name!r}; it "
                                     f"has {sorted(form.method.options)}")  # fmt: skip
                widget = form[name]
                if isinstance(widget, LineEdit):
                    option_value = "" if option_value is None else repr(option_value)
                widget.value = option_value
        else:
            super().set_value(key, value)
        self._update_enabled()

    def parameters(self, info: ImageInfo) -> dict[str, Any]:
        """The keyword arguments of ``denoise_tv`` the controls describe."""
        values = self.asdict()
        method = values["method"]
        params: dict[str, Any] = {
            "beta": float(self.beta_slider.value()),
            "method": method,
            "fidelity": values["fidelity"],
            "spacing": self.input.spacing_for(info),
        }
        options = self.method_options[method].values()
        if options:
            params["options"] = options
        if method == "exact":
            params["connectivity"] = min(values["connectivity"], info.spatial_ndim)
            params["levels"] = None if values["levels"] <= 1 else values["levels"]
        else:
            params["tv"] = values["tv"]
            params["max_num_iter"] = values["max_num_iter"] or None
            try:
                params["tol"] = float(values["tol"])
            except ValueError:
                raise LayerError(f"tolerance must be a number, got {values['tol']!r}") from None
        return params

    # -- running -------------------------------------------------------------------------
    def run(self):
        """Start a run on the chosen layer; returns the worker (None if refused)."""
        layer = self.input.layer()
        checked = self.checked()
        if checked is None:
            return None
        info, params = checked
        every = info.time_axis is not None and bool(self.all_frames.value)
        t = None if every else self.input.current_time(info)
        if info.time_axis is None:
            frames: list[int] | None = None
            what = ""
        else:
            frames = list(range(info.n_times)) if every else [t]
            what = f" ({len(frames)} time point(s))"

        def show(out):
            self._show(info, frames, params, *out)

        return self.runner.start(
            denoise_layer, info, t, params, on_result=show,
            description=f"{params['method']} on {layer.name!r}{what}…",
        )  # fmt: skip

    @property
    def output_name(self) -> str:
        layer = self.input.layer()
        return f"{layer.name}{OUTPUT_SUFFIX}" if layer is not None else ""

    def _show(self, info: ImageInfo, frames, params, u, result) -> None:
        layer = info.layer
        if layer not in self.viewer.layers:
            notify_error(f"TV denoise: layer {layer.name!r} was removed during the run")
            return
        name = f"{layer.name}{OUTPUT_SUFFIX}"
        results = result.extra.get("channels", [result]) if frames and len(frames) > 1 else [result]
        if frames is None:
            data, solved = u, None
        else:
            us = list(u) if len(frames) > 1 else [u]
            data, solved = compose_frames(
                self.viewer, name, layer, dict(zip(frames, us, strict=True))
            )
        params = dict(params)
        params["spacing"] = list(params["spacing"])
        meta = {
            "napari_tv": "TV denoise",
            "source": layer.name,
            "parameters": params,
            "energy": float(result.energy),
            "gap": float(result.gap),
            "converged": bool(result.converged),
            "n_iter": int(result.n_iter),
            "certificate": certificate(results[-1]),
            "elapsed": float(result.elapsed),
            "method": result.method,
        }
        if solved is not None:
            meta["time_points"] = [int(t) for t in frames]
            meta["time_points_solved"] = solved
            meta["energy_per_time_point"] = [float(r.energy) for r in results]
        show_output(
            self.viewer, name, data, like=layer, metadata=meta, colormap=layer.colormap,
            blending=layer.blending,
        )  # fmt: skip
        self.status.value = f"done: {layer.name!r} → {name!r}"
        self.result_label.value = (
            f"energy {meta['energy']:.6g} · {meta['certificate']} · {meta['elapsed']:.2f} s"
        )
