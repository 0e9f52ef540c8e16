"""The "TV denoise" dock widget: one image layer in, one "<input> TV" layer out.

A dask-backed or multiscale layer (level 0), or a run that would not fit in memory, goes the
chunked way (:mod:`._chunked`: ``napari_tv.chunked.denoise_tv_chunked``, the result a lazy
dask array); "Save to zarr" writes the output layer to a ``.zarr`` directory.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label, LineEdit, PushButton, SpinBox
from qtpy.QtCore import QObject, Signal

from napari_tv._scheduling import Generation
from napari_tv.beta_choice import RULE_NAMES
from napari_tv.fidelity import FIDELITIES
from napari_tv.operators import TV_KINDS
from napari_tv.solvers.api import METHODS
from napari_tv.solvers.methods import get_method

from ._forms import MethodOptions, TVForm, log_slider, offer_fidelities, set_beta
from ._layers import ImageInfo, LayerError, compose_frames, show_output
from ._tasks import is_deleted, notify_error, notify_info

OUTPUT_SUFFIX = " TV"
#: images up to this many voxels get a suggested β when they are selected (a 64×256×256
#: volume takes a few seconds in the background)
SUGGEST_MAX_SIZE = 1 << 24


def denoise_layer(info: ImageInfo, t: int | None, params: dict[str, Any], callback=None):
    """Denoise the layer's data (worker thread): the time point ``t``, or every time point
    when ``t`` is None and the layer has a time axis (``denoise_tv``'s ``channel_axis``)."""
    from napari_tv.solvers.api import denoise_tv

    if info.time_axis is not None and t is None:
        image = np.asarray(info.data)
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
    accepts_multiscale = True  # level 0, chunked

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
        # big volumes: the chunked path (ticked by itself for a dask/multiscale layer or a run
        # that would not fit in memory, with the reason), and the output saved to zarr
        self.chunked = CheckBox(
            name="chunked", text="chunked (dask)",
            tooltip="solve block by block (napari_tv.chunked): the result is stored on disk "
                    "and read lazily, chunk by chunk, as you browse it",
        )  # fmt: skip
        self.memory_label = Label(name="memory_label", value="")
        self.memory_label.native.setWordWrap(True)
        self.save_path = FileEdit(name="save_path", label="save to", mode="w", filter="*.zarr",
                                  nullable=True)  # fmt: skip
        self.save_button = PushButton(
            name="save_button", text="Save to zarr…",
            tooltip="write the output layer to a .zarr directory, chunk by chunk",
        )  # fmt: skip
        super().__init__(
            napari_viewer,
            [self.all_frames, self.method, self.fidelity, self.tv, self.beta, self.suggest_label,
             self.connectivity, self.levels, self.max_num_iter, self.tol,
             *self.method_options.values(), self.chunked, self.memory_label],
            extra=[self.save_path, self.save_button],
        )  # fmt: skip
        self.runner.busy_widgets = (self.run_button.native, self.save_button.native)
        self.estimate = None  # the last MemoryEstimate of an in-memory run
        # the chunked results whose stores the output layers read (kept while the form lives)
        self._chunked_results: dict[str, list] = {}
        self.save_button.changed.connect(lambda *_: self.save_zarr())
        for control in (self.fidelity, self.levels, self.connectivity, self.all_frames):
            control.changed.connect(self._refresh_memory)
        self.chunked.changed.connect(lambda *_: self._refresh_memory(auto=False))
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
        self._refresh_memory()
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
            t = self.input.current_time(info)
            source = info.data if t is None else info.data[t]  # not computed yet
            spacing = self.input.spacing_for(info)
        except (LayerError, ValueError):
            self.suggest_label.value = ""
            return
        if int(np.prod(source.shape)) > SUGGEST_MAX_SIZE:
            self.suggest_label.value = (
                f"β is not suggested for more than {SUGGEST_MAX_SIZE:.0e} voxels; use the β "
                "sweep on a crop" + (" or its slice preview" if info.lazy else "")
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
                image = np.asarray(source)  # a lazy layer's frame is read here, off the GUI
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
        self._refresh_memory()

    def _update_enabled(self, *_args) -> None:
        exact = self.method.value == "exact"
        self.tv.enabled = not exact
        self.max_num_iter.enabled = not exact
        self.tol.enabled = not exact
        self.connectivity.enabled = exact
        self.levels.enabled = exact
        self.all_frames.enabled = bool(self.input.time_series.value)

    def _refresh_memory(self, *_args, auto: bool = True) -> None:
        """Estimate the in-memory run (``napari_tv._memory``); with ``auto``, tick "chunked"
        for a lazy layer (dask, zarr, multiscale) or a run that would not fit, else untick it;
        say why under the box."""
        from ._chunked import memory_estimate

        try:
            info = self.input.info()
            every = info.time_axis is not None and bool(self.all_frames.value)
            levels = None if self.levels.value <= 1 else int(self.levels.value)
            self.estimate = est = memory_estimate(
                info, self.method.value, self.fidelity.value, levels=levels, all_frames=every,
                connectivity=int(self.connectivity.value),
            )  # fmt: skip
        except (LayerError, ValueError) as exc:
            self.estimate = None
            self.memory_label.value = "" if isinstance(exc, LayerError) else str(exc)
            return
        if auto:
            with self.chunked.changed.blocked():
                self.chunked.value = info.lazy or not est.fits
        chunked = bool(self.chunked.value)
        shape = "×".join(str(n) for n in info.shape)
        if info.multiscale:
            kind = f"multiscale layer: level 0 ({shape}), "
        elif info.lazy:
            kind = f"{type(info.data).__module__.split('.')[0]} layer ({shape}), "
        else:
            kind = ""
        if chunked:
            if not est.fits:
                lead = f"in memory this run {est.describe()}, so it runs chunked"
            else:
                lead = f"{kind}runs chunked"
            text = (
                f"{lead} (dask): block by block, the result stored on disk and read lazily as "
                "you browse"
            )
        elif not est.fits:
            text = f"in memory this run {est.describe()}: tick 'chunked (dask)'"
        elif kind:
            text = f"{kind}computed in memory: this run {est.describe()}"
        else:
            text = ""
        self.memory_label.value = text

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
        if self.chunked.value:
            return self._run_chunked(info, frames, params, what)
        if info.lazy and self.estimate is not None and not self.estimate.fits:
            # the library's guard would see the layer only once computed: refused here
            notify_error(f"TV denoise: in memory this run {self.estimate.describe()}; tick "
                         "'chunked (dask)'")  # fmt: skip
            return None

        def show(out):
            self._show(info, frames, params, *out)

        return self.runner.start(
            denoise_layer, info, t, params, on_result=show,
            description=f"{params['method']} on {layer.name!r}{what}…",
        )  # fmt: skip

    def _run_chunked(self, info: ImageInfo, frames, params, what: str):
        from ._chunked import denoise_chunked

        def show(results):
            self._show_chunked(info, frames, params, results)

        return self.runner.start(
            denoise_chunked, info, frames, params, on_result=show,
            description=f"{params['method']} on {info.name!r}, chunked (dask){what}…",
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
        if name in self._chunked_results:  # an earlier chunked result's stores, now unread
            from ._chunked import remove_stores

            remove_stores(self._chunked_results.pop(name))
        self.status.value = f"done: {layer.name!r} → {name!r}"
        self.result_label.value = (
            f"energy {meta['energy']:.6g} · {meta['certificate']} · {meta['elapsed']:.2f} s"
        )

    def _show_chunked(self, info: ImageInfo, frames, params, results) -> None:
        """Show the chunked results: the output layer's data is lazy (a dask array reading the
        stored result; several levels for a multiscale input)."""
        import dask.array as da

        from ._chunked import certificate as chunked_certificate
        from ._chunked import pyramid, remove_stores

        layer = info.layer
        if layer not in self.viewer.layers:
            notify_error(f"TV denoise: layer {layer.name!r} was removed during the run")
            return
        name = f"{layer.name}{OUTPUT_SUFFIX}"
        us = [r.u for r in results]
        translate = None
        if frames is None:
            data = us[0]
        elif len(frames) == info.n_times:
            data = da.stack(us)
        else:  # one time point: a one-frame layer placed at it
            data = us[0][None]
            translate = list(layer.translate)
            translate[0] += frames[0] * float(layer.scale[0])
        if info.multiscale:  # the input's levels, built lazily from the result
            data = pyramid(data, layer.data.shapes, info.spatial_ndim)
        params = dict(params)
        params["spacing"] = list(params["spacing"])
        last = results[-1]
        meta = {
            "napari_tv": "TV denoise",
            "source": layer.name,
            "parameters": params,
            "energy": float(sum(r.energy for r in results)),
            "gap": float(max(r.gap for r in results)),
            "converged": all(bool(r.converged) for r in results),
            "n_iter": int(max(r.n_iter for r in results)),
            "rounds": int(max(getattr(r, "rounds", 0) or 0 for r in results)),
            "certificate": chunked_certificate(last),
            "elapsed": float(sum(r.elapsed for r in results)),
            "method": last.method,
            "chunked": True,
            # temporary (removed at exit): "Save to zarr" keeps the result
            "stores": [str(r.extra.get("store", "")) for r in results],
        }
        if frames is not None:
            meta["time_points"] = [int(t) for t in frames]
            meta["energy_per_time_point"] = [float(r.energy) for r in results]
        old = self.viewer.layers[name] if name in self.viewer.layers else None
        # an output shown before keeps its limits (the user may have tuned them); a new one
        # takes them from a central plane of the result (``show_output``), like an in-memory
        # one: the input's would leave the denoised volume grey
        extra = {} if old is None else {
            "contrast_limits": tuple(float(c) for c in old.contrast_limits)}  # fmt: skip
        show_output(
            self.viewer, name, data, like=layer, metadata=meta, translate=translate,
            colormap=layer.colormap, blending=layer.blending, **extra,
        )  # fmt: skip
        # the layer reads the new stores; the ones it read before go
        remove_stores(self._chunked_results.pop(name, None))
        self._chunked_results[name] = results
        self.status.value = f"done: {layer.name!r} → {name!r} (chunked, read lazily)"
        self.result_label.value = (
            f"energy {meta['energy']:.6g} · {meta['certificate']} · {meta['elapsed']:.2f} s"
        )

    # -- Save to zarr --------------------------------------------------------------------
    def save_zarr(self, path=None):
        """Write the output layer ("<input> TV"; level 0 if multiscale) to the ``.zarr``
        directory ``path`` (default: the "save to" box; a file dialog if it is empty) on a
        worker thread, chunk by chunk, with progress and Cancel.  Returns the worker (None
        if refused)."""
        from ._chunked import json_safe, save_zarr, zarr_path

        if path is not None:
            self.save_path.value = path
        if not self.save_path.value:
            self.save_path.choose_btn.native.click()  # the file dialog
            if not self.save_path.value:
                return None
        name = self.output_name
        if not name or name not in self.viewer.layers:
            notify_error(f"TV denoise: no output layer {name!r} to save yet: Run first")
            return None
        out = self.viewer.layers[name]
        data = out.data[0] if getattr(out, "multiscale", False) else out.data
        target = zarr_path(self.save_path.value)
        attrs = json_safe({
            "napari_tv": out.metadata,
            "name": name,
            "scale": list(out.scale),
            "translate": list(out.translate),
            "axis_labels": list(out.axis_labels),
        })  # fmt: skip

        def saved(written):
            self.status.value = f"saved {name!r} to {written}"
            notify_info(f"TV denoise: saved {name!r} to {written}")

        return self.runner.start(
            save_zarr, data, target, attrs, on_result=saved,
            description=f"saving {name!r} to {target.name}…",
        )  # fmt: skip
