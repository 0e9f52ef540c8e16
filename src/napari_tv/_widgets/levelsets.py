"""The "Level sets" dock widget: u ↔ {u^λ}, the perimeters, the coarea formula, the dichotomy.

* a λ slider shows the lower level set ``u^λ = [u <= λ]`` as a Labels layer over the image;
* "Add stack" adds every level set as one Labels layer with λ as an extra dims axis;
* a small plot shows the perimeter of each level set, and a label sets the coarea sum
  ``Σ Δλ·Per(u^λ)`` beside the graph TV and ``tv_norm``;
* "Run dichotomy" runs the exact solver on the layer and a depth slider walks through the
  partition of the image after each max-flow round (``levelsets.dichotomy_partition``); the
  progress bar follows the rounds and Cancel stops the run.

Everything shown is computed by :mod:`napari_tv.levelsets` and :mod:`napari_tv.operators`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import (
    ImageInfo,
    LayerError,
    TaskRunner,
    has_time_label,
    image_layer_info,
    layer_index,
    make_progress_row,
    notify_error,
    notify_warning,
    show_output,
)
from ._controls import (
    LayerCombo,
    LogSlider,
    PlotWidget,
    format_spacing,
    parse_spacing,
)

SUFFIXES = (" u^λ", " level sets", " dichotomy")
#: largest level-set stack (voxels) added as one layer
MAX_STACK_VOXELS = 200_000_000


def level_summary(image: np.ndarray, params: dict[str, Any], callback=None) -> dict[str, Any]:
    """Grid, perimeters, coarea sum and the two TVs of ``image`` (worker thread)."""
    from napari_tv.levelsets import coarea_tv, level_perimeters
    from napari_tv.operators import graph_tv, level_grid, tv_norm

    levels, connectivity, spacing = params["levels"], params["connectivity"], params["spacing"]
    grid = level_grid(image, levels)
    lambdas, perimeters = level_perimeters(image, grid, connectivity=connectivity, spacing=spacing)
    if callback is not None and callback({"fraction": 0.5}):
        return {"cancelled": True}
    out = {
        "grid": grid,
        "lambdas": lambdas,
        "perimeters": perimeters,
        "coarea": coarea_tv(image, grid, connectivity=connectivity, spacing=spacing),
        "graph_tv": graph_tv(image, connectivity=connectivity, spacing=spacing),
        "tv_anisotropic": tv_norm(image, kind="anisotropic", spacing=spacing),
        "tv_isotropic": tv_norm(image, kind="isotropic", spacing=spacing),
        "on_grid": bool(np.isin(image, grid).all()),
    }
    if callback is not None:
        callback({"fraction": 1.0})
    return out


def median_level(lambdas: np.ndarray, image: np.ndarray) -> int:
    """The index of the level nearest the image's median: the level set there holds about half
    the voxels (the middle of the grid may hold nearly all of them, e.g. a dark volume with a
    few bright spots)."""
    if not len(lambdas):
        return 0
    return int(np.argmin(np.abs(np.asarray(lambdas) - float(np.median(image)))))


def run_dichotomy(image: np.ndarray, params: dict[str, Any], callback=None) -> dict[str, Any]:
    """``levelsets.dichotomy_partition`` (worker thread).

    ``callback`` is called once per max-flow round; when it returns True (Cancel) the run
    stops after that round and the TaskRunner drops the partial result.
    """
    from napari_tv.levelsets import dichotomy_partition
    from napari_tv.operators import level_grid

    labels, intervals = dichotomy_partition(image, **params, callback=callback)
    return {"labels": labels, "intervals": intervals, "grid": level_grid(image, params["levels"])}


class LevelSetsWidget(QWidget):
    """Explore the level sets of an image and the exact solver's dichotomy."""

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer_combo = LayerCombo(napari_viewer, exclude_suffixes=SUFFIXES)
        self.time_check = QCheckBox("first axis is time (current time point)")
        self.levels_spin = QSpinBox()
        self.levels_spin.setRange(1, 65536)
        self.levels_spin.setSpecialValueText("auto")
        self.levels_spin.setValue(1)
        self.levels_spin.setToolTip("auto: every integer for integer images, 256 levels for floats")
        self.connectivity_spin = QSpinBox()
        self.connectivity_spin.setRange(1, 3)
        self.spacing_edit = QLineEdit()
        self.compute_button = QPushButton("Compute level sets")
        self.lambda_slider = QSlider(Qt.Orientation.Horizontal)
        self.lambda_slider.setEnabled(False)
        self.lambda_label = QLabel("λ = –")
        self.stack_button = QPushButton("Add stack (λ as a dims axis)")
        self.stack_button.setEnabled(False)
        self.plot = PlotWidget("perimeter of u^λ against λ")
        self.coarea_label = QLabel("")
        self.coarea_label.setWordWrap(True)

        self.beta_slider = LogSlider(1e-3, 1e2, 1.0)
        self.fidelity_combo = QComboBox()
        self.fidelity_combo.addItems(["l2", "l1", "poisson"])
        self.dichotomy_button = QPushButton("Run dichotomy (exact solver)")
        self.depth_slider = QSlider(Qt.Orientation.Horizontal)
        self.depth_slider.setEnabled(False)
        self.depth_label = QLabel("round –")
        progress_row, self.progress, self.cancel_button = make_progress_row()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("", self.time_check)
        form.addRow("levels", self.levels_spin)
        form.addRow("connectivity", self.connectivity_spin)
        form.addRow("spacing", self.spacing_edit)
        levels_box = QGroupBox("level sets u^λ = [u ≤ λ]")
        lv = QVBoxLayout(levels_box)
        lv.addWidget(self.compute_button)
        lv.addWidget(self.lambda_label)
        lv.addWidget(self.lambda_slider)
        lv.addWidget(self.stack_button)
        lv.addWidget(self.plot)
        lv.addWidget(self.coarea_label)
        dich_box = QGroupBox("Darbon–Sigelle dichotomy")
        dform = QFormLayout(dich_box)
        dform.addRow("β", self.beta_slider)
        dform.addRow("fidelity", self.fidelity_combo)
        dform.addRow(self.dichotomy_button)
        dform.addRow(self.depth_label, self.depth_slider)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(levels_box)
        layout.addWidget(dich_box)
        layout.addWidget(progress_row)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.runner = TaskRunner(
            "Level sets",
            self.progress,
            self.cancel_button,
            self.status,
            busy_widgets=(self.compute_button, self.dichotomy_button),
            parent=self,
        )
        self._levels: dict[str, Any] | None = None  # info, image, summary of the last compute
        self._dichotomy: dict[str, Any] | None = None
        self.compute_button.clicked.connect(self.run)
        self.lambda_slider.valueChanged.connect(self._show_level)
        self.stack_button.clicked.connect(self.add_stack)
        self.dichotomy_button.clicked.connect(self.run_dichotomy)
        self.depth_slider.valueChanged.connect(self._show_depth)
        self.layer_combo.layer_changed.connect(self._on_layer)
        self.time_check.toggled.connect(self._refresh_spacing)
        self._on_layer(self.layer_combo.layer())

    # -- input ---------------------------------------------------------------------------
    def _on_layer(self, layer) -> None:
        if layer is None:
            return
        self.time_check.blockSignals(True)
        self.time_check.setChecked(has_time_label(layer))
        self.time_check.blockSignals(False)
        info = self._refresh_spacing()
        if info is None:
            return
        lo, hi = (float(c) for c in layer.contrast_limits)
        span = hi - lo if hi > lo else 1.0
        self.beta_slider.setRange(span * 1e-4, span * 10.0)
        self.beta_slider.setValue(0.1 * span, emit=False)

    def _input(self) -> tuple[ImageInfo, np.ndarray, dict[str, Any]]:
        layer = self.layer_combo.layer()
        info = image_layer_info(layer, time_series=self.time_check.isChecked())
        t = None if info.time_axis is None else layer_index(self.viewer, layer, 0)
        levels = self.levels_spin.value()
        params = {
            "levels": None if levels <= 1 else levels,
            "connectivity": min(self.connectivity_spin.value(), info.spatial_ndim),
            "spacing": parse_spacing(self.spacing_edit.text() or "1", info.spatial_ndim),
        }
        return info, info.frame(t), params

    def _refresh_spacing(self, *_args) -> ImageInfo | None:
        """Spacing box (and connectivity range) from the layer and the time-axis choice."""
        try:
            info = image_layer_info(
                self.layer_combo.layer(), time_series=self.time_check.isChecked()
            )
        except LayerError:
            return None
        self.spacing_edit.setText(format_spacing(info.spacing))
        if hasattr(self, "connectivity_spin"):
            self.connectivity_spin.setMaximum(info.spatial_ndim)
        return info

    def set_parameters(self, **values) -> None:
        """Set controls by name: ``levels``, ``connectivity``, ``spacing``, ``beta``,
        ``fidelity``, ``time_series``."""
        for key, value in values.items():
            if key == "levels":
                self.levels_spin.setValue(1 if value is None else int(value))
            elif key == "connectivity":
                self.connectivity_spin.setValue(int(value))
            elif key == "spacing":
                self.spacing_edit.setText(format_spacing(value))
            elif key == "beta":
                self.beta_slider.setRange(
                    min(value / 10, self.beta_slider.minimum()),
                    max(value * 10, self.beta_slider.maximum()),
                )
                self.beta_slider.setValue(value, emit=False)
            elif key == "fidelity":
                self.fidelity_combo.setCurrentText(value)
            elif key == "time_series":
                self.time_check.setChecked(bool(value))
            else:
                raise ValueError(f"unknown parameter {key!r}")

    # -- level sets ----------------------------------------------------------------------
    def run(self):
        """Compute the grid, the perimeters and the coarea sum; returns the worker."""
        try:
            info, image, params = self._input()
        except LayerError as exc:
            notify_error(f"Level sets: {exc}")
            return None
        return self.runner.start(
            level_summary,
            image,
            params,
            on_result=lambda out: self._show_summary(info, image, params, out),
            description=f"level sets of {info.name!r}…",
        )

    def _show_summary(self, info, image, params, out) -> None:
        if out.get("cancelled"):
            return
        self._levels = {"info": info, "image": image, "params": params, **out}
        n = len(out["lambdas"])
        self.plot.clear()
        self.plot.add_series("perimeter", out["lambdas"], out["perimeters"])
        self.plot.x_label = "λ"
        note = (
            ""
            if out["on_grid"]
            else " (u is off the grid: the sum is the TV of u rounded up to the grid)"
        )
        self.coarea_label.setText(
            f"coarea Σ Δλ·Per(u^λ) = {out['coarea']:.6g}\n"
            f"graph TV (connectivity {params['connectivity']}) = {out['graph_tv']:.6g}\n"
            f"tv_norm: anisotropic {out['tv_anisotropic']:.6g}, "
            f"isotropic {out['tv_isotropic']:.6g}{note}"
        )
        self.lambda_slider.blockSignals(True)
        self.lambda_slider.setRange(0, max(n - 1, 0))
        self.lambda_slider.setValue(median_level(out["lambdas"], image))
        self.lambda_slider.blockSignals(False)
        self.lambda_slider.setEnabled(n > 0)
        self.stack_button.setEnabled(n > 0)
        self.status.setText(f"{len(out['grid'])} levels")
        if n:
            self._show_level(self.lambda_slider.value())
        else:
            self.lambda_label.setText("constant image: a single level, no level set to show")

    def set_level_index(self, k: int) -> None:
        """Move the λ slider to level index ``k`` (``grid[k]``)."""
        self.lambda_slider.setValue(int(k))
        self._show_level(int(k))

    def _show_level(self, k: int) -> None:
        from napari_tv.levelsets import level_set

        state = self._levels
        if state is None or not len(state["lambdas"]):
            return
        layer = state["info"].layer
        if layer not in self.viewer.layers:
            return
        lam = float(state["lambdas"][k])
        mask = level_set(state["image"], lam)
        per = float(state["perimeters"][k])
        self.lambda_label.setText(
            f"λ = {lam:.4g} (level {k + 1} of {len(state['grid'])}): "
            f"{int(mask.sum())} px, perimeter {per:.4g}"
        )
        self.plot.set_marker("lambda", lam, "#ffffff")
        spatial = state["info"].spatial_ndim
        show_output(
            self.viewer,
            f"{layer.name} u^λ",
            mask.astype(np.uint8),
            layer_type="labels",
            scale=tuple(layer.scale)[-spatial:],
            translate=tuple(layer.translate)[-spatial:],
            metadata={
                "napari_tv": "level set",
                "source": layer.name,
                "lambda": lam,
                "level_index": int(k),
                "perimeter": per,
            },
            opacity=0.5,
        )

    def add_stack(self):
        """Add every level set as one Labels layer, λ being its first (dims) axis."""
        from napari_tv.levelsets import level_sets

        state = self._levels
        if state is None:
            notify_warning("Level sets: compute the level sets first")
            return None
        layer = state["info"].layer
        grid = state["grid"]
        size = (len(grid) - 1) * state["image"].size
        if size > MAX_STACK_VOXELS:
            notify_warning(f"Level sets: the stack would hold {size:,} voxels; choose fewer levels")
            return None
        stack = level_sets(state["image"], grid).astype(np.uint8)
        spatial = state["info"].spatial_ndim
        steps = np.diff(grid[:-1]) if len(grid) > 2 else np.array([1.0])
        uniform = np.allclose(steps, steps[0])
        lam_scale = float(steps[0]) if uniform and steps[0] > 0 else 1.0
        lam_translate = float(grid[0]) if uniform else 0.0
        return show_output(
            self.viewer,
            f"{layer.name} level sets",
            stack,
            layer_type="labels",
            scale=(lam_scale, *tuple(layer.scale)[-spatial:]),
            translate=(lam_translate, *tuple(layer.translate)[-spatial:]),
            axis_labels=("λ", *tuple(layer.axis_labels)[-spatial:]),
            metadata={
                "napari_tv": "level sets",
                "source": layer.name,
                "levels": grid[:-1].tolist(),
                "lambda_axis": "λ" + ("" if uniform else " index (non-uniform grid)"),
            },
            opacity=0.5,
        )

    # -- dichotomy -----------------------------------------------------------------------
    def run_dichotomy(self):
        """Run the exact solver with its trace; the depth slider then shows each round.

        The progress bar follows the rounds; Cancel stops after the current round and leaves
        the layers (and the last dichotomy shown) as they were.  Returns the worker.
        """
        try:
            info, image, params = self._input()
        except LayerError as exc:
            notify_error(f"Level sets: {exc}")
            return None
        params = {
            **params,
            "beta": float(self.beta_slider.value()),
            "fidelity": self.fidelity_combo.currentText(),
        }
        return self.runner.start(
            run_dichotomy,
            image,
            params,
            on_result=lambda out: self._show_dichotomy(info, params, out),
            description=f"exact dichotomy of {info.name!r} at β = {params['beta']:.3g}…",
        )

    def _show_dichotomy(self, info, params, out) -> None:
        self._dichotomy = {"info": info, "params": params, **out}
        depth = len(out["intervals"])
        self.depth_slider.blockSignals(True)
        self.depth_slider.setRange(1, max(depth, 1))
        self.depth_slider.setValue(max(depth, 1))
        self.depth_slider.blockSignals(False)
        self.depth_slider.setEnabled(depth > 0)
        self.status.setText(
            f"dichotomy: {depth} max-flow rounds over {len(out['grid'])} "
            f"levels at β = {params['beta']:.4g}"
        )
        if depth:
            self._show_depth(depth)
        else:
            self.depth_label.setText("no round (a single level)")

    def set_depth(self, depth: int) -> None:
        """Show the partition after round ``depth`` (1-based)."""
        self.depth_slider.setValue(int(depth))
        self._show_depth(int(depth))

    def _show_depth(self, depth: int) -> None:
        state = self._dichotomy
        if state is None or not len(state["intervals"]):
            return
        layer = state["info"].layer
        if layer not in self.viewer.layers:
            return
        d = min(max(int(depth), 1), len(state["intervals"])) - 1
        labels = state["labels"][d] + 1  # 0 is the transparent background in napari
        intervals = state["intervals"][d]
        grid = state["grid"]
        self.depth_label.setText(
            f"round {d + 1}/{len(state['intervals'])}: {len(intervals)} intervals"
        )
        spatial = state["info"].spatial_ndim
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in state["params"].items()}
        show_output(
            self.viewer,
            f"{layer.name} dichotomy",
            labels.astype(np.int32),
            layer_type="labels",
            scale=tuple(layer.scale)[-spatial:],
            translate=tuple(layer.translate)[-spatial:],
            metadata={
                "napari_tv": "dichotomy",
                "source": layer.name,
                "round": d + 1,
                "rounds": len(state["intervals"]),
                "parameters": params,
                "n_intervals": len(intervals),
                "intervals": [[float(grid[lo]), float(grid[hi])] for lo, hi in intervals]
                if len(intervals) <= 1024
                else "too many to list",
            },
            opacity=0.6,
        )
