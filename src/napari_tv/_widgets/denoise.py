"""The "TV denoise" dock widget: one image layer in, one "<input> TV" layer out."""

from __future__ import annotations

import threading
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_tv._scheduling import Generation
from napari_tv.beta_choice import RULE_NAMES
from napari_tv.fidelity import FIDELITIES
from napari_tv.solvers.api import METHODS, SUPPORTED

from ._common import (
    ImageInfo,
    LayerError,
    TaskRunner,
    compose_frames,
    has_time_label,
    image_layer_info,
    layer_index,
    make_progress_row,
    notify_error,
    show_output,
)
from ._controls import (
    LayerCombo,
    LogSlider,
    format_spacing,
    parse_spacing,
)

TV_KINDS = ("isotropic", "anisotropic")
OUTPUT_SUFFIX = " TV"
#: images up to this many voxels get a suggested β when they are selected (a 64×256×256
#: volume takes a few seconds in the background)
SUGGEST_MAX_SIZE = 1 << 24


def denoise_frames(
    info: ImageInfo,
    frames: list[int | None],
    params: dict[str, Any],
    callback=None,
) -> dict[str, Any]:
    """Solve every frame with :func:`napari_tv.solvers.api.denoise_tv` (worker thread).

    Progress is the fraction over all frames; the callback's answer (cancel) is passed on.
    """
    from napari_tv.solvers.api import denoise_tv

    us, results = [], []
    n = len(frames)
    for i, t in enumerate(frames):

        def frame_callback(report, i=i):
            report = dict(report)
            report["fraction"] = (i + float(report.get("fraction", 0.0))) / n
            return bool(callback(report)) if callback is not None else False

        u, result = denoise_tv(info.frame(t), callback=frame_callback, return_info=True, **params)
        us.append(u)
        results.append(result)
        if result.cancelled:
            break
    return {"frames": frames, "u": us, "results": results, "params": params}


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


class DenoiseWidget(QWidget):
    """TV-denoise an Image layer (2D, 3D, or a time series) into the layer "<input> TV".

    The output layer is created once and updated in place by every run; it keeps the input's
    scale and translate and records the parameters, energy, gap/certificate and time in its
    ``metadata``.  The input layer is never modified.  A β for the selected layer is suggested
    from its data in the background (``beta_choice.suggest_beta``): an orange mark on the β
    slider, and the slider's value until the user moves it.
    """

    #: (search token, β or the exception, rule), from the suggestion thread
    suggestion_ready = Signal(int, object, str)

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer_combo = LayerCombo(napari_viewer, exclude_suffixes=(OUTPUT_SUFFIX,))
        self.time_check = QCheckBox("first axis is time (2D+t / 3D+t)")
        self.frames_combo = QComboBox()
        self.frames_combo.addItems(["current time point", "all time points"])
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        self.fidelity_combo = QComboBox()
        self.fidelity_combo.addItems(FIDELITIES)
        self.tv_combo = QComboBox()
        self.tv_combo.addItems(TV_KINDS)
        self.beta_slider = LogSlider(1e-3, 1e2, 0.1)
        self.connectivity_spin = QSpinBox()
        self.connectivity_spin.setRange(1, 3)
        self.levels_spin = QSpinBox()
        self.levels_spin.setRange(1, 65536)
        self.levels_spin.setSpecialValueText("auto")  # 1 -> the default grid
        self.levels_spin.setValue(1)
        self.iter_spin = QSpinBox()
        self.iter_spin.setRange(0, 1_000_000)
        self.iter_spin.setSpecialValueText("auto")
        self.iter_spin.setValue(0)
        self.tol_edit = QLineEdit("1e-4")
        self.spacing_edit = QLineEdit()
        self.spacing_edit.setToolTip("voxel size per spatial axis (defaults to the layer's scale)")
        self.run_button = QPushButton("Run")
        progress_row, self.progress, self.cancel_button = make_progress_row()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.suggest_label = QLabel("")
        self.suggest_label.setWordWrap(True)
        self.suggest_label.setStyleSheet("color: #ff9f1c")

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("", self.time_check)
        form.addRow("time points", self.frames_combo)
        form.addRow("method", self.method_combo)
        form.addRow("fidelity", self.fidelity_combo)
        form.addRow("TV", self.tv_combo)
        form.addRow("β", self.beta_slider)
        form.addRow("", self.suggest_label)
        form.addRow("connectivity", self.connectivity_spin)
        form.addRow("levels", self.levels_spin)
        form.addRow("max iterations", self.iter_spin)
        form.addRow("tolerance", self.tol_edit)
        form.addRow("spacing", self.spacing_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(progress_row)
        layout.addWidget(self.status)
        layout.addWidget(self.result_label)
        layout.addStretch(1)

        self.runner = TaskRunner(
            "TV denoise",
            self.progress,
            self.cancel_button,
            self.status,
            busy_widgets=(self.run_button,),
            parent=self,
        )
        self._beta_set = False
        self.beta_slider.valueChanged.connect(lambda _v: setattr(self, "_beta_set", True))
        # β from the data, in the background: a marker on the slider, and the slider's value
        # until the user moves it
        self._suggestions = Generation()
        self.suggested: float | None = None
        self.suggest_thread: threading.Thread | None = None
        self.suggestion_ready.connect(self._on_suggestion)
        self.fidelity_combo.currentTextChanged.connect(self._suggest)
        self.tv_combo.currentTextChanged.connect(self._suggest)
        self.destroyed.connect(lambda *_: self._suggestions.close())  # stop a running search
        self.run_button.clicked.connect(self.run)
        self.method_combo.currentTextChanged.connect(self._on_method)
        self.time_check.toggled.connect(self._refresh_spacing)
        self.layer_combo.layer_changed.connect(self._on_layer)
        self._on_layer(self.layer_combo.layer())

    # -- controls ------------------------------------------------------------------------
    def _on_layer(self, layer) -> None:
        """Adopt the new layer's time axis, scale (as spacing) and intensity range (for β),
        and start suggesting a β for it."""
        if layer is None:
            return
        self.time_check.blockSignals(True)
        self.time_check.setChecked(has_time_label(layer))
        self.time_check.blockSignals(False)
        info = self._refresh_spacing()
        if info is not None:
            lo, hi = (float(c) for c in layer.contrast_limits)
            span = hi - lo if hi > lo else 1.0
            value = self.beta_slider.value()
            self.beta_slider.setRange(span * 1e-4, span * 10.0)
            if not span * 1e-4 <= value <= span * 10.0 or not self._beta_set:
                self.beta_slider.setValue(0.1 * span, emit=False)
            self._suggest()

    def _refresh_spacing(self, *_args) -> ImageInfo | None:
        """Spacing box and connectivity range from the layer (and the time-axis choice)."""
        self._update_enabled()
        try:
            info = image_layer_info(
                self.layer_combo.layer(), time_series=self.time_check.isChecked()
            )
        except LayerError:
            return None
        self.spacing_edit.setText(format_spacing(info.spacing))
        self.connectivity_spin.setMaximum(info.spatial_ndim)
        return info

    def _suggest(self, *_args) -> None:
        """Start choosing β from the layer's data (``beta_choice.suggest_beta`` with the
        fidelity's rule, on a napari worker thread); a newer call supersedes it."""
        from napari_tv.beta_choice import default_rule, suggest_beta

        token = self._suggestions.next()  # a running search stops at its next β
        self.beta_slider.setMarker("suggested", None)
        self.suggested = None
        layer = self.layer_combo.layer()
        try:
            info = image_layer_info(layer, time_series=self.time_check.isChecked())
            t = None if info.time_axis is None else layer_index(self.viewer, layer, 0)
            image = info.frame(t)
            spacing = parse_spacing(self.spacing_edit.text() or "1", info.spatial_ndim)
        except (LayerError, ValueError):
            self.suggest_label.setText("")
            return
        if image.size > SUGGEST_MAX_SIZE:
            self.suggest_label.setText(
                f"β is not suggested for more than {SUGGEST_MAX_SIZE:.0e} voxels; use the β "
                "sweep on a crop"
            )
            return
        fidelity = self.fidelity_combo.currentText()
        rule = default_rule(fidelity)
        method = self.method_combo.currentText()
        tv = "anisotropic" if method == "exact" else self.tv_combo.currentText()
        self.suggest_label.setText(f"suggesting β from the data ({RULE_NAMES[rule]})…")
        stop = self._suggestions.stop_callback(token)

        def job():  # a plain thread: it may outlive the widget (then its signal is dropped)
            try:
                payload = float(
                    suggest_beta(image, fidelity=fidelity, tv=tv, spacing=spacing, callback=stop)
                )
            except Exception as exc:  # noqa: BLE001 - shown in the widget
                payload = exc
            try:
                self.suggestion_ready.emit(token, payload, rule)
            except RuntimeError:  # the widget was closed meanwhile
                pass

        self.suggest_thread = threading.Thread(target=job, name="napari-tv-suggest-beta",
                                               daemon=True)
        self.suggest_thread.start()

    def _on_suggestion(self, token: int, payload, rule: str) -> None:
        if self._suggestions.is_stale(token):
            return
        if isinstance(payload, BaseException):
            self.suggest_label.setText(f"no β suggested: {payload}")
            return
        beta = self.suggested = float(payload)
        if not self.beta_slider.minimum() <= beta <= self.beta_slider.maximum():
            self.beta_slider.setRange(
                min(beta / 10, self.beta_slider.minimum()),
                max(beta * 10, self.beta_slider.maximum()),
            )
        self.beta_slider.setMarker("suggested", beta)
        if not self._beta_set:  # the user has not chosen one: start from it
            self.beta_slider.setValue(beta, emit=False)
        self.suggest_label.setText(
            f"suggested β = {beta:.4g} ({RULE_NAMES[rule]}, from the data; orange mark)"
        )

    def _on_method(self, method: str) -> None:
        """Offer only the fidelities the method supports."""
        current = self.fidelity_combo.currentText()
        allowed = SUPPORTED.get(method, {}).get("fidelity", FIDELITIES)
        self.fidelity_combo.blockSignals(True)
        self.fidelity_combo.clear()
        self.fidelity_combo.addItems(list(allowed))
        if current in allowed:
            self.fidelity_combo.setCurrentText(current)
        self.fidelity_combo.blockSignals(False)
        self._update_enabled()

    def _update_enabled(self, *_args) -> None:
        exact = self.method_combo.currentText() == "exact"
        self.tv_combo.setEnabled(not exact)
        self.iter_spin.setEnabled(not exact)
        self.tol_edit.setEnabled(not exact)
        self.connectivity_spin.setEnabled(exact)
        self.levels_spin.setEnabled(exact)
        self.frames_combo.setEnabled(self.time_check.isChecked())

    def set_parameters(self, **values) -> None:
        """Set controls by name (``method``, ``fidelity``, ``tv``, ``beta``, ``connectivity``,
        ``levels``, ``max_num_iter``, ``tol``, ``spacing``, ``time_series``, ``all_frames``)."""
        combos = {"method": self.method_combo, "fidelity": self.fidelity_combo, "tv": self.tv_combo}
        if "method" in values:  # first: it decides the fidelities offered
            values = {"method": values.pop("method"), **values}
        for key, value in values.items():
            if key in combos:
                idx = combos[key].findText(value)
                if idx < 0:
                    raise ValueError(f"{key} must be one of the listed choices, got {value!r}")
                combos[key].setCurrentIndex(idx)
            elif key == "beta":
                if not self.beta_slider.minimum() <= value <= self.beta_slider.maximum():
                    self.beta_slider.setRange(
                        min(value / 10, self.beta_slider.minimum()),
                        max(value * 10, self.beta_slider.maximum()),
                    )
                self.beta_slider.setValue(value, emit=False)
                self._beta_set = True
            elif key == "connectivity":
                self.connectivity_spin.setValue(int(value))
            elif key == "levels":
                self.levels_spin.setValue(1 if value is None else int(value))
            elif key == "max_num_iter":
                self.iter_spin.setValue(0 if value is None else int(value))
            elif key == "tol":
                self.tol_edit.setText(repr(float(value)))
            elif key == "spacing":
                self.spacing_edit.setText(format_spacing(value))
            elif key == "time_series":
                self.time_check.setChecked(bool(value))
            elif key == "all_frames":
                self.frames_combo.setCurrentIndex(1 if value else 0)
            else:
                raise ValueError(f"unknown parameter {key!r}")

    def parameters(self, info: ImageInfo) -> dict[str, Any]:
        """The keyword arguments of ``denoise_tv`` the controls describe."""
        method = self.method_combo.currentText()
        params: dict[str, Any] = {
            "beta": float(self.beta_slider.value()),
            "method": method,
            "fidelity": self.fidelity_combo.currentText(),
            "spacing": parse_spacing(self.spacing_edit.text() or "1", info.spatial_ndim),
        }
        if method == "exact":
            levels = self.levels_spin.value()
            params["connectivity"] = min(self.connectivity_spin.value(), info.spatial_ndim)
            params["levels"] = None if levels <= 1 else levels
        else:
            params["tv"] = self.tv_combo.currentText()
            iters = self.iter_spin.value()
            params["max_num_iter"] = None if iters == 0 else iters
            try:
                params["tol"] = float(self.tol_edit.text())
            except ValueError:
                raise LayerError(
                    f"tolerance must be a number, got {self.tol_edit.text()!r}"
                ) from None
        return params

    # -- running -------------------------------------------------------------------------
    def run(self):
        """Start a run on the chosen layer; returns the worker (None if refused)."""
        layer = self.layer_combo.layer()
        try:
            info = image_layer_info(layer, time_series=self.time_check.isChecked())
            params = self.parameters(info)
        except LayerError as exc:
            notify_error(f"TV denoise: {exc}")
            return None
        if info.time_axis is None:
            frames: list[int | None] = [None]
        elif self.frames_combo.currentIndex() == 1:
            frames = list(range(info.n_times))
        else:
            frames = [layer_index(self.viewer, layer, info.time_axis)]
        what = "" if frames == [None] else f" ({len(frames)} time point(s))"
        return self.runner.start(
            denoise_frames,
            info,
            frames,
            params,
            on_result=lambda out: self._show(info, out),
            description=f"{params['method']} on {layer.name!r}{what}…",
        )

    def cancel(self) -> None:
        self.runner.cancel()

    @property
    def output_name(self) -> str:
        layer = self.layer_combo.layer()
        return f"{layer.name}{OUTPUT_SUFFIX}" if layer is not None else ""

    def _show(self, info: ImageInfo, out: dict[str, Any]) -> None:
        layer = info.layer
        if layer not in self.viewer.layers:
            notify_error(f"TV denoise: layer {layer.name!r} was removed during the run")
            return
        name = f"{layer.name}{OUTPUT_SUFFIX}"
        us, results, frames = out["u"], out["results"], out["frames"]
        if info.time_axis is None:
            data, solved = us[0], None
        else:
            data, solved = compose_frames(
                self.viewer, name, layer, dict(zip(frames, us, strict=False))
            )
        params = dict(out["params"])
        params["spacing"] = list(params["spacing"])
        energy = float(sum(r.energy for r in results))
        meta = {
            "napari_tv": "TV denoise",
            "source": layer.name,
            "parameters": params,
            "energy": energy,
            "gap": float(max(r.gap for r in results)),
            "converged": all(r.converged for r in results),
            "n_iter": int(max(r.n_iter for r in results)),
            "certificate": certificate(results[-1]),
            "elapsed": float(sum(r.elapsed for r in results)),
            "method": results[-1].method,
        }
        if solved is not None:
            meta["time_points"] = [int(t) for t in frames]
            meta["time_points_solved"] = solved
            meta["energy_per_time_point"] = [float(r.energy) for r in results]
        show_output(
            self.viewer,
            name,
            data,
            like=layer,
            metadata=meta,
            colormap=layer.colormap,
            blending=layer.blending,
        )
        self.status.setText(f"done: {layer.name!r} → {name!r}")
        self.result_label.setText(
            f"energy {energy:.6g} · {meta['certificate']} · {meta['elapsed']:.2f} s"
        )
