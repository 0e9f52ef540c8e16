"""The "β sweep" dock widget: drag β and watch the denoised layer follow, live.

The widget only wires :mod:`napari_tv.sweep` to Qt:

* every slider move submits a solve to a :class:`~napari_tv.sweep.LatestWins` scheduler over a
  :class:`~napari_tv.sweep.BetaSweep` (warm starts from the nearest cached β; a newer move stops
  the running solve and stale results are dropped), and the newest result lands in
  "<input> TV" through a queued Qt signal;
* for a 3D volume the live preview solves the current slice (2D) and the whole volume is
  solved when the slider is released or on "Apply";
* "β stack" computes K values of β into one layer whose first (dims) axis is log10 β;
* "L-curve" plots the fidelity and TV terms against β, and "Suggest β" marks the
  discrepancy-principle β (‖u − v‖² ≈ N·σ², σ estimated from the data) on the slider.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_tv._compile import compile_notice
from napari_tv.beta_choice import RULE_NAMES
from napari_tv.fidelity import FIDELITIES
from napari_tv.solvers.api import METHODS, SUPPORTED

from ._common import (
    ImageInfo,
    LayerError,
    TaskRunner,
    compose_frames,
    connect_while_alive,
    has_time_label,
    image_layer_info,
    layer_index,
    make_progress_row,
    notify_error,
    show_output,
    show_progress,
)
from ._controls import (
    LayerCombo,
    LogSlider,
    PlotWidget,
    format_spacing,
    parse_spacing,
)

#: the β sweep's own output layer (never the "<input> TV" of the TV denoise widget)
OUTPUT_SUFFIX = " β-sweep"
#: during a fast drag, a result on the way at least this often (seconds; ``LatestWins``)
SHOW_EVERY = 0.1
#: a live solve reports progress (bar, status) only after running this long (seconds): any
#: repaint of the window during a solve holds the GIL the solver thread needs (napari's
#: canvas is composited on every repaint; under a software OpenGL it cost the solve 1.5x)
QUIET_FOR = 0.25
STACK_SUFFIX = " β stack"


def solve_request(
    sweep, beta: float, plane: int | None, tag: dict, callback=None, compiling=None
) -> dict:
    """One live request (LatestWins thread): the slice preview or the full solve;
    ``compiling(message)`` is called if kernels must be compiled first."""
    with compile_notice(compiling or (lambda _message: None)):
        if plane is None:
            result = sweep.solve(beta, callback=callback)
        else:
            result = sweep.preview_slice(beta, plane, axis=0, callback=callback)
    return {"result": result, "beta": beta, "plane": plane, **tag}


def compute_curve(image, betas, sweep_kw: dict, suggest: bool, callback=None) -> dict:
    """L-curve over ``betas`` and, with ``suggest``, the β of the fidelity's risk estimate
    (SURE, PURE or J-invariance) with the risks it evaluated (TaskRunner thread)."""
    from napari_tv.beta_choice import default_rule, estimate_noise_sigma, suggest_beta
    from napari_tv.sweep import l_curve

    out: dict[str, Any] = {}
    if suggest:
        out["sigma"] = estimate_noise_sigma(image)

        def step(info):
            return callback({**info, "fraction": 0.5 * float(info.get("fraction", 0.0))})

        search_kw = {k: sweep_kw[k] for k in ("method", "tv", "spacing") if k in sweep_kw}
        out["rule"] = default_rule(sweep_kw.get("fidelity", "l2"))
        out["beta"], out["risk"] = suggest_beta(
            image,
            fidelity=sweep_kw.get("fidelity", "l2"),
            callback=step,
            return_curve=True,
            **search_kw,
        )

    def curve_cb(info):
        frac = float(info.get("fraction", 0.0))
        return callback({**info, "fraction": 0.5 + 0.5 * frac if suggest else frac})

    out["curve"] = l_curve(image, betas, callback=curve_cb, **sweep_kw)
    return out


def compute_stack(image, betas, sweep_kw: dict, callback=None) -> dict:
    """``sweep.beta_stack`` (TaskRunner thread)."""
    from napari_tv.sweep import beta_stack

    stack, results = beta_stack(image, betas, callback=callback, **sweep_kw)
    if any(r is None or r.cancelled for r in results):
        from ._common import Cancelled

        raise Cancelled
    return {"stack": stack, "results": results, "betas": list(betas)}


class SweepWidget(QWidget):
    """Tune β live on an Image layer; β stack, L-curve and a suggested β."""

    result_ready = Signal(object)
    error_ready = Signal(object)
    progress_ready = Signal(float)
    status_ready = Signal(str)

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from napari_tv.sweep import LatestWins

        self.viewer = napari_viewer
        self.layer_combo = LayerCombo(napari_viewer, exclude_suffixes=(OUTPUT_SUFFIX, STACK_SUFFIX))
        self.time_check = QCheckBox("first axis is time (current time point)")
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHODS)
        # the warm-started primal-dual solver is the one that follows a drag within 100 ms
        # (docs/benchmarks.md: 23 ms at 512², Chambolle ~120 ms)
        self.method_combo.setCurrentText("primal_dual")
        self.fidelity_combo = QComboBox()
        self.fidelity_combo.addItems(FIDELITIES)
        self.tv_combo = QComboBox()
        self.tv_combo.addItems(["isotropic", "anisotropic"])
        self.tol_edit = QLineEdit("1e-3")
        self.spacing_edit = QLineEdit()
        self.beta_slider = LogSlider(1e-3, 1e2, 0.1)
        self.live_check = QCheckBox("live (solve while dragging; 3D: current slice)")
        self.live_check.setChecked(True)
        self.apply_button = QPushButton("Apply (whole image)")
        self.suggest_label = QLabel("")
        self.suggest_label.setWordWrap(True)
        self.use_suggested = QPushButton("Use suggested β")
        self.use_suggested.setEnabled(False)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(2, 64)
        self.k_spin.setValue(6)
        self.stack_from = QLineEdit()
        self.stack_to = QLineEdit()
        self.stack_button = QPushButton("β stack")
        self.curve_button = QPushButton("L-curve")
        self.suggest_button = QPushButton("Suggest β")
        self.plot = PlotWidget("L-curve: fidelity and TV against β", log_x=True)
        self.plot.x_label = "β (log)"
        progress_row, self.progress, self.cancel_button = make_progress_row()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("", self.time_check)
        form.addRow("method", self.method_combo)
        form.addRow("fidelity", self.fidelity_combo)
        form.addRow("TV", self.tv_combo)
        form.addRow("tolerance", self.tol_edit)
        form.addRow("spacing", self.spacing_edit)
        form.addRow("β", self.beta_slider)
        form.addRow("", self.live_check)
        form.addRow(self.apply_button)
        stack_box = QGroupBox("β stack, L-curve and suggested β")
        sform = QFormLayout(stack_box)
        rng = QHBoxLayout()
        rng.addWidget(self.stack_from)
        rng.addWidget(QLabel("to"))
        rng.addWidget(self.stack_to)
        sform.addRow("β from", rng)
        sform.addRow("K values", self.k_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.stack_button)
        buttons.addWidget(self.curve_button)
        buttons.addWidget(self.suggest_button)
        sform.addRow(buttons)
        sform.addRow(self.plot)
        sform.addRow(self.suggest_label)
        sform.addRow(self.use_suggested)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(stack_box)
        layout.addWidget(progress_row)
        layout.addWidget(self.status)
        layout.addStretch(1)

        # β stack, L-curve, suggestion: one cancellable job at a time
        self.runner = TaskRunner(
            "β sweep",
            self.progress,
            self.cancel_button,
            self.status,
            busy_widgets=(self.stack_button, self.curve_button, self.suggest_button),
            parent=self,
        )
        # live solves: latest wins, results cross to the GUI thread through queued signals
        # live solves: latest wins, with a result on the way of a fast drag every 0.1 s
        self.latest = LatestWins(
            partial(solve_request, compiling=self._compiling),
            self.result_ready.emit,
            self.error_ready.emit,
            progress=self._live_progress,
            show_every=SHOW_EVERY,
        )
        latest = self.latest
        self.destroyed.connect(lambda *_: latest.close(timeout=0))
        self._sweep = None
        self._sweep_key: tuple | None = None
        self._seq = 0  # last live request submitted
        self._shown = 0  # last live request shown (or failed, or cancelled)
        self._displayed = 0  # the request whose result the output layer holds
        self._last_progress = 0.0  # when a live solve last reported progress
        self._suggested: float | None = None

        self.result_ready.connect(self._on_result)
        self.error_ready.connect(self._on_error)
        self.progress_ready.connect(lambda f: show_progress(self.progress, f))
        self.status_ready.connect(self.status.setText)
        self.beta_slider.valueChanged.connect(self._on_beta_moved)
        self.beta_slider.valueCommitted.connect(self._on_beta_committed)
        self.apply_button.clicked.connect(lambda: self.request(full=True))
        self.cancel_button.clicked.connect(self._cancel_live)
        self.stack_button.clicked.connect(self.run_stack)
        self.curve_button.clicked.connect(lambda: self.run_curve(suggest=False))
        self.suggest_button.clicked.connect(lambda: self.run_curve(suggest=True))
        self.use_suggested.clicked.connect(self._apply_suggested)
        self.method_combo.currentTextChanged.connect(self._on_method)
        self.layer_combo.layer_changed.connect(self._on_layer)
        self.time_check.toggled.connect(self._refresh_spacing)
        connect_while_alive(self, self.viewer.dims.events.current_step, self._on_dims)
        self._on_layer(self.layer_combo.layer())

    # -- controls ------------------------------------------------------------------------
    def _on_layer(self, layer) -> None:
        if layer is None:
            return
        self.time_check.blockSignals(True)
        self.time_check.setChecked(has_time_label(layer))
        self.time_check.blockSignals(False)
        if self._refresh_spacing() is None:
            return
        lo, hi = (float(c) for c in layer.contrast_limits)
        span = hi - lo if hi > lo else 1.0
        self.beta_slider.setRange(span * 1e-4, span * 10.0)
        self.beta_slider.setValue(0.1 * span, emit=False)
        self.beta_slider.setMarker("suggested", None)
        self.stack_from.setText(f"{0.01 * span:.3g}")
        self.stack_to.setText(f"{span:.3g}")
        self.plot.clear()
        self.suggest_label.setText("")
        self.use_suggested.setEnabled(False)

    def _refresh_spacing(self, *_args) -> ImageInfo | None:
        try:
            info = image_layer_info(
                self.layer_combo.layer(), time_series=self.time_check.isChecked()
            )
        except LayerError:
            return None
        self.spacing_edit.setText(format_spacing(info.spacing))
        return info

    def _on_method(self, method: str) -> None:
        current = self.fidelity_combo.currentText()
        allowed = SUPPORTED.get(method, {}).get("fidelity", FIDELITIES)
        self.fidelity_combo.blockSignals(True)
        self.fidelity_combo.clear()
        self.fidelity_combo.addItems(list(allowed))
        if current in allowed:
            self.fidelity_combo.setCurrentText(current)
        self.fidelity_combo.blockSignals(False)
        exact = method == "exact"
        self.tv_combo.setEnabled(not exact)
        self.tol_edit.setEnabled(not exact)

    def set_parameters(self, **values) -> None:
        """Set controls by name: ``method``, ``fidelity``, ``tv``, ``tol``, ``spacing``,
        ``live``, ``time_series``, ``k``, ``beta_range`` (from, to).  Does not move β: use
        ``beta_slider.setValue``."""
        if "method" in values:
            values = {"method": values.pop("method"), **values}
        combos = {"method": self.method_combo, "fidelity": self.fidelity_combo, "tv": self.tv_combo}
        for key, value in values.items():
            if key in combos:
                idx = combos[key].findText(value)
                if idx < 0:
                    raise ValueError(f"{key} must be one of the listed choices, got {value!r}")
                combos[key].setCurrentIndex(idx)
            elif key == "tol":
                self.tol_edit.setText(repr(float(value)))
            elif key == "spacing":
                self.spacing_edit.setText(format_spacing(value))
            elif key == "live":
                self.live_check.setChecked(bool(value))
            elif key == "time_series":
                self.time_check.setChecked(bool(value))
            elif key == "k":
                self.k_spin.setValue(int(value))
            elif key == "beta_range":
                self.stack_from.setText(repr(float(value[0])))
                self.stack_to.setText(repr(float(value[1])))
            else:
                raise ValueError(f"unknown parameter {key!r}")

    def sweep_kwargs(self, info: ImageInfo) -> dict[str, Any]:
        """The ``BetaSweep`` options the controls describe."""
        method = self.method_combo.currentText()
        kw: dict[str, Any] = {
            "method": method,
            "fidelity": self.fidelity_combo.currentText(),
            "spacing": parse_spacing(self.spacing_edit.text() or "1", info.spatial_ndim),
        }
        if method != "exact":
            kw["tv"] = self.tv_combo.currentText()
            try:
                kw["tol"] = float(self.tol_edit.text())
            except ValueError:
                raise LayerError(
                    f"tolerance must be a number, got {self.tol_edit.text()!r}"
                ) from None
        return kw

    def _input(self) -> tuple[ImageInfo, int | None, np.ndarray, dict[str, Any]]:
        layer = self.layer_combo.layer()
        info = image_layer_info(layer, time_series=self.time_check.isChecked())
        t = None if info.time_axis is None else layer_index(self.viewer, layer, 0)
        return info, t, info.frame(t), self.sweep_kwargs(info)

    def _engine(self):
        """The BetaSweep of the current layer, time point and options (rebuilt on change)."""
        from napari_tv.sweep import BetaSweep

        info, t, image, kw = self._input()
        # by name and data array: npe2 hands plugins a fresh proxy of a layer on every access
        key = (info.layer.name, id(info.layer.data), t, tuple(sorted(kw.items())))
        if key != self._sweep_key:
            self._sweep = BetaSweep(image, **kw)
            self._sweep_key = key
        return info, t, self._sweep, kw

    # -- live ----------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """No live request pending, running, or waiting to be shown."""
        return self._shown >= self._seq and self.latest.wait(0)

    def _on_beta_moved(self, beta: float) -> None:
        if self.live_check.isChecked():  # the plot's marker follows the results shown
            self.request(beta, full=False)
        else:
            self.plot.set_marker("beta", beta, "#ffffff")

    def _on_beta_committed(self, beta: float) -> None:
        if not self.live_check.isChecked():
            self.request(beta, full=True)
            return
        # 2D: the live request was already the whole image; 3D: now solve the volume
        try:
            info = image_layer_info(
                self.layer_combo.layer(), time_series=self.time_check.isChecked()
            )
        except LayerError:
            return
        if info.spatial_ndim == 3:
            self.request(beta, full=True)

    def _on_dims(self, _event=None) -> None:
        """A 3D live preview follows the slice being looked at."""
        if not self.live_check.isChecked() or self._sweep is None:
            return
        try:
            info = image_layer_info(
                self.layer_combo.layer(), time_series=self.time_check.isChecked()
            )
        except LayerError:
            return
        name = f"{info.name}{OUTPUT_SUFFIX}"
        out = self.viewer.layers[name] if name in self.viewer.layers else None
        if info.spatial_ndim != 3 or out is None or "preview_plane" not in out.metadata:
            return
        plane = layer_index(self.viewer, info.layer, info.layer.ndim - 3)
        if plane != out.metadata["preview_plane"]:
            self.request(full=False)

    def request(self, beta: float | None = None, *, full: bool = True) -> int | None:
        """Submit a live solve at ``beta`` (default: the slider's); returns its number."""
        beta = self.beta_slider.value() if beta is None else float(beta)
        try:
            info, t, sweep, kw = self._engine()
        except (LayerError, ValueError, TypeError) as exc:
            notify_error(f"β sweep: {exc}")
            return None
        plane = None
        if info.spatial_ndim == 3 and not full:
            plane = layer_index(self.viewer, info.layer, info.layer.ndim - 3)
        self._seq += 1
        tag = {"seq": self._seq, "info": info, "t": t, "key": self._sweep_key, "kw": kw}
        self.latest.submit(sweep, beta, plane, tag)
        if not self.cancel_button.isEnabled():
            self.cancel_button.setEnabled(True)
        if full:  # a live move changes nothing else on screen until its result (QUIET_FOR)
            what = f"slice {plane}" if plane is not None else "whole image"
            self.status.setText(f"solving β = {beta:.4g} ({what})…")
        return self._seq

    def _compiling(self, message: str) -> None:  # LatestWins thread
        self.progress_ready.emit(-1.0)
        self.status_ready.emit(message)

    def _live_progress(self, info: dict) -> None:  # LatestWins thread
        """Progress of a long live solve: after ``QUIET_FOR`` seconds, at most every
        ``QUIET_FOR`` seconds (each repaint slows the solve, see ``QUIET_FOR``)."""
        fraction = info.get("fraction")
        now = time.perf_counter()
        if (
            fraction is not None
            and float(info.get("elapsed", 0.0)) >= QUIET_FOR
            and now - self._last_progress >= QUIET_FOR
        ):
            self._last_progress = now
            self.progress_ready.emit(float(fraction))

    def _cancel_live(self) -> None:
        if self._shown < self._seq:
            self.latest.generation.next()  # the running solve stops; its result is dropped
            self._shown = self._seq
            self._displayed = self._seq + 1  # nor is any result on its way shown
            self.status.setText("cancelled; layers unchanged")
        self._live_done()

    def _live_done(self) -> None:
        if self._shown >= self._seq:
            self.cancel_button.setEnabled(self.runner.running)

    def _on_error(self, exc: BaseException) -> None:
        self._shown = self._seq
        self._live_done()
        text = (
            str(exc) if isinstance(exc, ValueError | TypeError) else f"{type(exc).__name__}: {exc}"
        )
        self.status.setText(f"failed: {text}")
        notify_error(f"β sweep: {text}")

    def _on_result(self, payload: dict) -> None:
        self._shown = max(self._shown, payload["seq"])
        self._live_done()
        if payload["seq"] < self._displayed or payload["key"] != self._sweep_key:
            return  # older than what is shown, or for another layer or options
        self._displayed = payload["seq"]  # the newest, or one on the way of a fast drag
        result = payload["result"]
        if result.cancelled:
            self.status.setText("cancelled; layers unchanged")
            return
        try:
            self._show(payload)
        except Exception as exc:  # e.g. the layer was removed meanwhile
            notify_error(f"β sweep: {exc}")

    def _show(self, payload: dict) -> None:
        info: ImageInfo = payload["info"]
        layer = info.layer
        if layer not in self.viewer.layers:
            return
        result, beta, plane, t = payload["result"], payload["beta"], payload["plane"], payload["t"]
        name = f"{layer.name}{OUTPUT_SUFFIX}"
        kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in payload["kw"].items()}
        meta = {
            "napari_tv": "β sweep",
            "source": layer.name,
            "parameters": {**kw, "beta": beta},
            "energy": float(result.energy),
            "gap": float(result.gap),
            "converged": bool(result.converged),
            "n_iter": int(result.n_iter),
            "elapsed": float(result.elapsed),
            "method": result.method,
        }
        out = self.viewer.layers[name] if name in self.viewer.layers else None
        if plane is None:
            if t is None:
                data = result.u
            else:
                data, solved = compose_frames(self.viewer, name, layer, {t: result.u})
                meta["time_points_solved"] = solved
        else:
            meta["preview_plane"] = plane
            meta["note"] = f"live preview: slice {plane} solved in 2D; Apply for the volume"
            target = layer.data.shape
            index = (plane,) if t is None else (t, plane)
            if out is not None and out.data.shape == target and out.data.dtype == result.u.dtype:
                out.data[index] = result.u  # our own output layer: write the slice in place
                out.metadata = {**out.metadata, **meta}
                out.refresh()
                self._after_show(beta, plane, result)
                return
            data = np.zeros(target, dtype=result.u.dtype)
            data[index] = result.u
        show_output(self.viewer, name, data, like=layer, metadata=meta, colormap=layer.colormap)
        self._after_show(beta, plane, result)

    def _after_show(self, beta: float, plane: int | None, result) -> None:
        self.plot.set_marker("beta", beta, "#ffffff")
        what = f"slice {plane} (preview)" if plane is not None else "whole image"
        text = f"β = {beta:.4g}: {what}"
        if not result.converged and result.method != "exact":
            text += (
                f" — not converged: gap {result.gap:.2g} > tolerance after {result.n_iter} "
                "iterations (raise the tolerance, or solve it in TV denoise)"
            )
        self.status.setText(text)
        show_progress(self.progress, 1.0)

    # -- β stack, L-curve, suggestion ----------------------------------------------------
    def _betas(self) -> np.ndarray:
        try:
            lo, hi = float(self.stack_from.text()), float(self.stack_to.text())
        except ValueError:
            raise LayerError("β from/to must be numbers") from None
        if not (0 < lo < hi) or not math.isfinite(hi):
            raise LayerError(f"β range must satisfy 0 < from < to, got {lo:g}, {hi:g}")
        return np.geomspace(lo, hi, self.k_spin.value())

    def run_stack(self):
        """Compute K values of β into the layer "<input> β stack" (β on the first axis)."""
        try:
            info, t, image, kw = self._input()
            betas = self._betas()
        except LayerError as exc:
            notify_error(f"β sweep: {exc}")
            return None
        return self.runner.start(
            compute_stack,
            image,
            betas,
            kw,
            on_result=lambda out: self._show_stack(info, out),
            description=f"β stack of {len(betas)} values…",
        )

    def _show_stack(self, info: ImageInfo, out: dict) -> None:
        layer = info.layer
        if layer not in self.viewer.layers:
            return
        betas = np.asarray(out["betas"])
        logb = np.log10(betas)
        step = float(logb[1] - logb[0]) if len(logb) > 1 else 1.0
        spatial = info.spatial_ndim
        show_output(
            self.viewer,
            f"{layer.name}{STACK_SUFFIX}",
            out["stack"],
            like=None,
            scale=(step, *tuple(layer.scale)[-spatial:]),
            translate=(float(logb[0]), *tuple(layer.translate)[-spatial:]),
            axis_labels=("log10 β", *tuple(layer.axis_labels)[-spatial:]),
            metadata={
                "napari_tv": "β stack",
                "source": layer.name,
                "betas": betas.tolist(),
                "energies": [float(r.energy) for r in out["results"]],
            },
            colormap=layer.colormap,
        )
        self.status.setText(
            f"β stack: {len(betas)} values from {betas[0]:.3g} to "
            f"{betas[-1]:.3g} (dims axis log10 β)"
        )

    def run_curve(self, suggest: bool = False):
        """L-curve over the β range; with ``suggest``, also the β that minimises the risk
        estimate of the fidelity (SURE, PURE, J-invariance) and that estimate's curve."""
        try:
            info, t, image, kw = self._input()
            betas = self._betas()
        except LayerError as exc:
            notify_error(f"β sweep: {exc}")
            return None
        return self.runner.start(
            compute_curve,
            image,
            betas,
            kw,
            suggest,
            on_result=lambda out: self._show_curve(out),
            description="suggesting β…" if suggest else "L-curve…",
        )

    def _show_curve(self, out: dict) -> None:
        curve = out["curve"]
        self.plot.clear()
        self.plot.title = "L-curve: fidelity and TV against β"
        self.plot.add_series("fidelity", curve["beta"], curve["fidelity"], log_y=True)
        self.plot.add_series("TV", curve["beta"], curve["tv"], log_y=True)
        self.plot.set_marker("beta", self.beta_slider.value(), "#ffffff")
        if "beta" in out:
            risk = out["risk"]
            name = RULE_NAMES[out["rule"]]
            self.plot.add_series("risk", risk.beta, risk.risk)
            self.plot.title = f"L-curve and the risk estimate ({name}) against β"
            self._suggested = float(out["beta"])
            self.plot.set_marker("suggested", self._suggested, "#ff9f1c")
            self.beta_slider.setMarker("suggested", self._suggested)
            self.suggest_label.setText(
                f"{name}, an estimate of the error against the clean image from the data alone, "
                f"is smallest at β ≈ {self._suggested:.4g} (orange mark; σ ≈ "
                f"{out['sigma']:.3g}, {len(risk.beta)} β evaluated)"
            )
            self.use_suggested.setEnabled(True)
        self.status.setText("L-curve done")

    def _apply_suggested(self) -> None:
        if self._suggested is not None:
            beta = self._suggested
            if not self.beta_slider.minimum() <= beta <= self.beta_slider.maximum():
                self.beta_slider.setRange(
                    min(beta / 10, self.beta_slider.minimum()),
                    max(beta * 10, self.beta_slider.maximum()),
                )
            self.beta_slider.setValue(beta)
