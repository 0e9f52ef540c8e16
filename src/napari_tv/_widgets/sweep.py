"""The "β sweep" dock widget: drag β and watch the denoised layer follow, live.

The widget only wires :mod:`napari_tv.sweep` to a magicgui form:

* every slider move submits a solve to a :class:`~napari_tv.sweep.LatestWins` scheduler over a
  :class:`~napari_tv.sweep.BetaSweep` (warm starts from the nearest cached β; a newer move stops
  the running solve and stale results are dropped), and the newest result lands in
  "<input> β-sweep" through a queued Qt signal;
* for a 3D volume the live preview solves the current slice (2D) and the whole volume is
  solved when the slider is released or on "Apply";
* for a lazy 3D layer (dask, zarr, multiscale: level 0) only the current slice is read and
  solved, into a one-slice output layer placed at it; the volume is TV denoise's (chunked);
* "β stack" computes K values of β into one layer whose first (dims) axis is log10 β;
* "L-curve" plots the fidelity and TV terms against β, and "Suggest β" marks the β that
  minimises the fidelity's risk estimate (SURE, PURE or J-invariance) on the slider.
"""

from __future__ import annotations

import math
import time
import weakref
from functools import partial
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, PushButton, SpinBox
from qtpy.QtCore import QObject, Signal

from napari_tv.beta_choice import RULE_NAMES
from napari_tv.fidelity import FIDELITIES
from napari_tv.operators import TV_KINDS
from napari_tv.solvers.api import DEFAULT_METHOD, METHODS

from ._forms import TVForm, log_slider, offer_fidelities, plot, set_beta
from ._layers import ImageInfo, LayerError, compose_frames, layer_index, show_output
from ._sweep_jobs import PlaneSweep, compute_curve, compute_stack, solve_request
from ._tasks import connect_while_alive, notify_error, notify_info, show_progress

#: the β sweep's own output layer (never the "<input> TV" of the TV denoise widget)
OUTPUT_SUFFIX = " β-sweep"
#: during a fast drag, a result on the way at least this often (seconds; ``LatestWins``)
SHOW_EVERY = 0.1
#: a live solve reports progress (bar, status) only after running this long (seconds): any
#: repaint of the window during a solve holds the GIL the solver thread needs (napari's
#: canvas is composited on every repaint; under a software OpenGL it cost the solve 1.5x)
QUIET_FOR = 0.25
STACK_SUFFIX = " β stack"
#: the keyword arguments of ``BetaSweep`` the form's controls hold
SWEEP_KEYS = ("method", "fidelity", "tv", "tol")


class _Bridge(QObject):
    """Carries the live solves' results, errors, progress and messages from the
    ``LatestWins`` thread to the GUI thread (queued signals)."""

    result_ready = Signal(object)
    error_ready = Signal(object)
    progress_ready = Signal(float)
    status_ready = Signal(str)


class SweepWidget(TVForm):
    """Tune β live on an Image layer; β stack, L-curve and a suggested β.

    A magicgui form whose controls are ``BetaSweep``'s keyword arguments (``method``,
    ``fidelity``, ``tv``, ``tol``) and ``beta`` (the slider), plus the input (``image``,
    ``time_series``: the time point shown is swept, ``spacing``), ``live``, and the β range of
    the stack and the L-curve (``k`` values from ``beta_from`` to ``beta_to``).  Results go to
    "<input> β-sweep" (updated in place; parameters, energy, gap, time in its ``metadata``)
    and "<input> β stack"; the input layer is never modified.
    """

    title = "β sweep"
    exclude_suffixes = (OUTPUT_SUFFIX, STACK_SUFFIX)
    accepts_multiscale = True  # level 0, previewed slice by slice

    def __init__(self, napari_viewer) -> None:
        from napari_tv.sweep import LatestWins

        # the warm-started primal-dual solver is the one that follows a drag within 100 ms
        # (docs/benchmarks.md: 23 ms at 512², Chambolle ~120 ms)
        self.method = ComboBox(name="method", label="method", choices=METHODS,
                               value=DEFAULT_METHOD)  # fmt: skip
        self.fidelity = ComboBox(name="fidelity", label="fidelity", choices=FIDELITIES)
        self.tv = ComboBox(name="tv", label="TV", choices=TV_KINDS)
        self.tol = LineEdit(name="tol", label="tolerance", value="1e-3")
        self.beta = log_slider("beta", "β", 1e-3, 1e2, 0.1)
        self.live = CheckBox(name="live", text="live (solve while dragging; 3D: current slice)",
                             value=True)  # fmt: skip
        # β stack, L-curve and the suggested β
        heading = Label(name="stack_heading", value="β stack, L-curve and suggested β")
        self.beta_from = LineEdit(name="beta_from", label="β from")
        self.beta_to = LineEdit(name="beta_to", label="β to")
        self.k = SpinBox(name="k", label="K values", min=2, max=64, value=6)
        self.stack_button = PushButton(name="stack_button", text="β stack")
        self.curve_button = PushButton(name="curve_button", text="L-curve")
        self.suggest_button = PushButton(name="suggest_button", text="Suggest β")
        buttons = Container(
            name="curve_buttons", layout="horizontal", labels=False,
            widgets=[self.stack_button, self.curve_button, self.suggest_button],
        )  # fmt: skip
        buttons.margins = (0, 0, 0, 0)
        self.curve_plot = plot("curve_plot", "L-curve: fidelity and TV against β", log_x=True)
        self.suggest_label = Label(name="suggest_label", value="")
        self.suggest_label.native.setWordWrap(True)
        self.use_suggested = PushButton(name="use_suggested", text="Use suggested β",
                                        enabled=False)  # fmt: skip
        for widget in (heading, buttons, self.curve_plot, self.suggest_label):
            widget.label = ""  # full rows (magicgui takes label="" for "use the name")
        super().__init__(
            napari_viewer,
            [self.method, self.fidelity, self.tv, self.tol, self.beta, self.live],
            run_text="Apply (whole image)",
            extra=[heading, self.beta_from, self.beta_to, self.k, buttons, self.curve_plot,
                   self.suggest_label, self.use_suggested],
        )  # fmt: skip
        self.input.time_series.text = "first axis is time (current time point)"
        self.result_label.visible = False
        self.apply_button = self.run_button
        self.beta_slider = self.beta.native
        self.plot = self.curve_plot.native
        self.plot.x_label = "β (log)"
        # β stack, L-curve, suggestion: one cancellable job at a time (Apply stays live)
        self.runner.busy_widgets = tuple(
            b.native for b in (self.stack_button, self.curve_button, self.suggest_button)
        )
        # live solves: latest wins, with a result on the way of a fast drag every 0.1 s;
        # results cross to the GUI thread through queued signals
        self._bridge = bridge = _Bridge(self.native)
        self.result_ready = bridge.result_ready
        self.latest = LatestWins(
            partial(solve_request, compiling=self._compiling),
            bridge.result_ready.emit,
            bridge.error_ready.emit,
            progress=self._live_progress,
            show_every=SHOW_EVERY,
        )
        # the scheduler's thread ends with the form (not on Qt's destroyed signal: a Python
        # slot run while the wrapper is torn down can crash)
        weakref.finalize(self, self.latest.close, timeout=0)
        self._sweep = None
        self._sweep_key: tuple | None = None
        self._seq = 0  # last live request submitted
        self._shown = 0  # last live request shown (or failed, or cancelled)
        self._displayed = 0  # the request whose result the output layer holds
        self._last_progress = 0.0  # when a live solve last reported progress
        self._suggested: float | None = None
        self._adopted = None  # the layer whose intensity range the β controls follow

        bar = self.progress_row.bar.native
        bridge.result_ready.connect(self._on_result)
        bridge.error_ready.connect(self._on_error)
        bridge.progress_ready.connect(lambda f: show_progress(bar, f))
        bridge.status_ready.connect(self.status.native.setText)
        self.beta_slider.valueChanged.connect(self._on_beta_moved)
        self.beta_slider.valueCommitted.connect(self._on_beta_committed)
        self.progress_row.cancel_button.changed.connect(lambda *_: self._cancel_live())
        self.stack_button.changed.connect(lambda *_: self.run_stack())
        self.curve_button.changed.connect(lambda *_: self.run_curve(suggest=False))
        self.suggest_button.changed.connect(lambda *_: self.run_curve(suggest=True))
        self.use_suggested.changed.connect(lambda *_: self._apply_suggested())
        self.method.changed.connect(self._on_method)
        self.input.layer_changed.connect(self._on_layer)
        connect_while_alive(self.native, self.viewer.dims.events.current_step, self._on_dims)
        self._on_method(self.method.value)
        self._on_layer(self.input.layer())

    # -- controls ------------------------------------------------------------------------
    def _on_layer(self, layer) -> None:
        """Adopt a new layer's intensity range for β and the stack's range (a change of the
        time axis alone keeps them)."""
        if layer is None or layer is self._adopted:
            return
        try:
            self.input.info()
        except LayerError:
            return
        self._adopted = layer
        lo, hi = (float(c) for c in layer.contrast_limits)
        span = hi - lo if hi > lo else 1.0
        self.beta_slider.setRange(span * 1e-4, span * 10.0)
        self.beta_slider.setValue(0.1 * span, emit=False)
        self.beta_slider.setMarker("suggested", None)
        self.beta_from.value = f"{0.01 * span:.3g}"
        self.beta_to.value = f"{span:.3g}"
        self.plot.clear()
        self.suggest_label.value = ""
        self.use_suggested.enabled = False

    def _on_method(self, method: str) -> None:
        """Offer only the fidelities the method supports."""
        offer_fidelities(self.fidelity, method)
        exact = method == "exact"
        self.tv.enabled = not exact
        self.tol.enabled = not exact

    def set_parameters(self, **values) -> None:
        """Set controls by name: ``method``, ``fidelity``, ``tv``, ``tol``, ``beta``,
        ``live``, ``k``, ``beta_range`` (from, to), ``image``, ``time_series``, ``spacing``;
        ``method`` first, as it decides the fidelities offered.  ``beta`` moves the slider as
        the user would (a live solve follows)."""
        if "method" in values:
            values = {"method": values.pop("method"), **values}
        super().set_parameters(**values)

    def set_value(self, key: str, value) -> None:
        if key == "beta":
            set_beta(self.beta, float(value))  # widen the range if needed, then move it
            self.beta_slider.setValue(float(value))
        elif key == "tol":
            self.tol.value = repr(float(value))
        elif key == "beta_range":
            self.beta_from.value = repr(float(value[0]))
            self.beta_to.value = repr(float(value[1]))
        else:
            super().set_value(key, value)

    def sweep_kwargs(self, info: ImageInfo) -> dict[str, Any]:
        """The ``BetaSweep`` options the controls describe."""
        values = self.asdict()
        kw = {key: values[key] for key in SWEEP_KEYS}
        kw["spacing"] = self.input.spacing_for(info)
        if kw["method"] == "exact":
            del kw["tv"], kw["tol"]
        else:
            try:
                kw["tol"] = float(kw["tol"])
            except ValueError:
                raise LayerError(f"tolerance must be a number, got {kw['tol']!r}") from None
        return kw

    def _input(self) -> tuple[ImageInfo, int | None, np.ndarray, dict[str, Any]]:
        info = self.input.info()
        if _slice_only(info):
            raise LayerError(
                f"layer {info.name!r} is a lazy (dask or multiscale) volume: the β stack and "
                "the L-curve need it in memory; use the live slice preview, or a crop"
            )
        t = self.input.current_time(info)
        return info, t, info.frame(t), self.sweep_kwargs(info)

    def _engine(self):
        """The BetaSweep of the current layer, time point and options (rebuilt on change);
        for a lazy volume, a :class:`PlaneSweep` of the slice shown (its number is the key's
        last item)."""
        from napari_tv.sweep import BetaSweep

        info = self.input.info()
        t = self.input.current_time(info)
        kw = self.sweep_kwargs(info)
        # by name and data array: npe2 hands plugins a fresh proxy of a layer on every access
        key = (info.layer.name, id(info.layer.data), t, tuple(sorted(kw.items())))
        if _slice_only(info):
            plane = layer_index(self.viewer, info.layer, info.layer.ndim - 3)
            key = (*key, plane)
            if key != self._sweep_key:
                volume = info.data if t is None else info.data[t]
                plane_kw = {**kw, "spacing": tuple(kw["spacing"])[1:]}
                self._sweep = PlaneSweep(volume[plane], plane_kw)
        elif key != self._sweep_key:
            self._sweep = BetaSweep(info.frame(t), **kw)
        self._sweep_key = key
        return info, t, self._sweep, kw

    # -- live ----------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """No live request pending, running, or waiting to be shown."""
        return self._shown >= self._seq and self.latest.wait(0)

    def run(self) -> int | None:
        """Apply: solve the whole image (or volume) at the slider's β (for a lazy volume: the
        slice shown, with a word on where the volume is solved)."""
        try:
            lazy = _slice_only(self.input.info())
        except LayerError:
            lazy = False
        if lazy:
            notify_info(
                "β sweep: a lazy (dask or multiscale) volume is previewed one slice at a time; "
                "denoise the whole volume in TV denoise (chunked)"
            )
            return self.request(full=False)
        return self.request(full=True)

    def cancel(self) -> None:
        """Stop the β stack / L-curve and the live solve."""
        self.runner.cancel()
        self._cancel_live()

    def _on_beta_moved(self, beta: float) -> None:
        if self.live.value:  # the plot's marker follows the results shown
            self.request(beta, full=False)
        else:
            self.plot.set_marker("beta", beta, "#ffffff")

    def _on_beta_committed(self, beta: float) -> None:
        if not self.live.value:
            self.request(beta, full=True)
            return
        # 2D: the live request was already the whole image; 3D: now solve the volume
        try:
            info = self.input.info()
        except LayerError:
            return
        if info.spatial_ndim == 3 and not _slice_only(info):
            self.request(beta, full=True)

    def _on_dims(self, _event=None) -> None:
        """A 3D live preview follows the slice being looked at."""
        if not self.live.value or self._sweep is None:
            return
        try:
            info = self.input.info()
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
        plane = lazy_plane = None
        if isinstance(sweep, PlaneSweep):  # the engine solves that one slice
            lazy_plane = self._sweep_key[-1]
        elif info.spatial_ndim == 3 and not full:
            plane = layer_index(self.viewer, info.layer, info.layer.ndim - 3)
        self._seq += 1
        tag = {"seq": self._seq, "info": info, "t": t, "key": self._sweep_key, "kw": kw,
               "lazy_plane": lazy_plane}  # fmt: skip
        self.latest.submit(sweep, beta, plane, tag)
        cancel = self.progress_row.cancel_button
        if not cancel.enabled:
            cancel.enabled = True
        if full:  # a live move changes nothing else on screen until its result (QUIET_FOR)
            shown = plane if plane is not None else lazy_plane
            what = f"slice {shown}" if shown is not None else "whole image"
            self.status.value = f"solving β = {beta:.4g} ({what})…"
        return self._seq

    def _compiling(self, message: str) -> None:  # LatestWins thread
        self._bridge.progress_ready.emit(-1.0)
        self._bridge.status_ready.emit(message)

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
            self._bridge.progress_ready.emit(float(fraction))

    def _cancel_live(self) -> None:
        if self._shown < self._seq:
            self.latest.generation.next()  # the running solve stops; its result is dropped
            self._shown = self._seq
            self._displayed = self._seq + 1  # nor is any result on its way shown
            self.status.value = "cancelled; layers unchanged"
        self._live_done()

    def _live_done(self) -> None:
        if self._shown >= self._seq:
            self.progress_row.cancel_button.enabled = self.runner.running

    def _on_error(self, exc: BaseException) -> None:
        self._shown = self._seq
        self._live_done()
        text = (
            str(exc) if isinstance(exc, ValueError | TypeError) else f"{type(exc).__name__}: {exc}"
        )
        self.status.value = f"failed: {text}"
        notify_error(f"β sweep: {text}")

    def _on_result(self, payload: dict) -> None:
        self._shown = max(self._shown, payload["seq"])
        self._live_done()
        if payload["seq"] < self._displayed or payload["key"] != self._sweep_key:
            return  # older than what is shown, or for another layer or options
        self._displayed = payload["seq"]  # the newest, or one on the way of a fast drag
        result = payload["result"]
        if result.cancelled:
            self.status.value = "cancelled; layers unchanged"
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
        if payload.get("lazy_plane") is not None:
            self._show_lazy_plane(payload, name, meta)
            return
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

    def _show_lazy_plane(self, payload: dict, name: str, meta: dict) -> None:
        """A lazy volume's slice preview: a layer of that one slice, placed at it (the rest of
        the volume is never read nor allocated)."""
        info: ImageInfo = payload["info"]
        layer, result, t = info.layer, payload["result"], payload["t"]
        plane = payload["lazy_plane"]
        axis = layer.ndim - 3  # the slicing axis (after the time axis, if any)
        index = (plane,) if t is None else (t, plane)
        translate = list(layer.translate)
        for a, i in zip(range(axis + 1 - len(index), axis + 1), index, strict=True):
            translate[a] += i * float(layer.scale[a])
        data = result.u.reshape((1,) * len(index) + result.u.shape)
        meta["preview_plane"] = plane
        meta["note"] = (
            f"slice preview of a lazy volume: slice {plane} read and solved in 2D; TV denoise "
            "(chunked) solves the volume"
        )
        show_output(self.viewer, name, data, like=layer, metadata=meta, translate=translate,
                    colormap=layer.colormap)  # fmt: skip
        self._after_show(payload["beta"], plane, result, lazy=True)

    def _after_show(self, beta: float, plane: int | None, result, *, lazy: bool = False) -> None:
        self.plot.set_marker("beta", beta, "#ffffff")
        what = f"slice {plane} (preview)" if plane is not None else "whole image"
        if lazy:
            what = f"slice {plane} (slice preview of a lazy volume: only this slice is read)"
        text = f"β = {beta:.4g}: {what}"
        if not result.converged and result.method != "exact":
            text += (
                f" — not converged: gap {result.gap:.2g} > tolerance after {result.n_iter} "
                "iterations (raise the tolerance, or solve it in TV denoise)"
            )
        self.status.value = text
        show_progress(self.progress_row.bar.native, 1.0)

    # -- β stack, L-curve, suggestion ----------------------------------------------------
    def _betas(self) -> np.ndarray:
        try:
            lo, hi = float(self.beta_from.value), float(self.beta_to.value)
        except ValueError:
            raise LayerError("β from/to must be numbers") from None
        if not (0 < lo < hi) or not math.isfinite(hi):
            raise LayerError(f"β range must satisfy 0 < from < to, got {lo:g}, {hi:g}")
        return np.geomspace(lo, hi, self.k.value)

    def run_stack(self):
        """Compute K values of β into the layer "<input> β stack" (β on the first axis)."""
        try:
            info, _t, image, kw = self._input()
            betas = self._betas()
        except LayerError as exc:
            notify_error(f"β sweep: {exc}")
            return None
        return self.runner.start(
            compute_stack, image, betas, kw,
            on_result=lambda out: self._show_stack(info, out),
            description=f"β stack of {len(betas)} values…",
        )  # fmt: skip

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
        self.status.value = (
            f"β stack: {len(betas)} values from {betas[0]:.3g} to "
            f"{betas[-1]:.3g} (dims axis log10 β)"
        )

    def run_curve(self, suggest: bool = False):
        """L-curve over the β range; with ``suggest``, also the β that minimises the risk
        estimate of the fidelity (SURE, PURE, J-invariance) and that estimate's curve."""
        try:
            _info, _t, image, kw = self._input()
            betas = self._betas()
        except LayerError as exc:
            notify_error(f"β sweep: {exc}")
            return None
        return self.runner.start(
            compute_curve, image, betas, kw, suggest,
            on_result=self._show_curve,
            description="suggesting β…" if suggest else "L-curve…",
        )  # fmt: skip

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
            self.suggest_label.value = (
                f"{name}, an estimate of the error against the clean image from the data alone, "
                f"is smallest at β ≈ {self._suggested:.4g} (orange mark; σ ≈ "
                f"{out['sigma']:.3g}, {len(risk.beta)} β evaluated)"
            )
            self.use_suggested.enabled = True
        self.status.value = "L-curve done"

    def _apply_suggested(self) -> None:
        if self._suggested is not None:
            self.set_value("beta", self._suggested)


def _slice_only(info: ImageInfo) -> bool:
    """A lazy (dask, zarr, multiscale) 3D layer: previewed one slice at a time, never read
    whole."""
    return info.lazy and info.spatial_ndim == 3
