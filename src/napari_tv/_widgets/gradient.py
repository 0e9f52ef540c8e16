"""The "TV gradient" dock widget: ∇_f TV(f), |∇f| and the gradient direction field.

All three come from :mod:`napari_tv.operators` (``tv_gradient`` and ``gradient``), with the
scheme, boundary, ε and TV kind chosen here; once computed, changing any of them recomputes
live (the layers are updated in place).  Switching to central differences on a
checkerboard shows why they fail for TV: every central difference of ``(-1)^(i+j)`` is 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._common import (
    ImageInfo,
    LayerError,
    TaskRunner,
    connect_while_alive,
    diverging_colormap,
    has_time_label,
    image_layer_info,
    layer_index,
    make_progress_row,
    notify_error,
    show_output,
)
from ._controls import LayerCombo, format_spacing, parse_spacing

SCHEMES = ("forward", "backward", "central")
BOUNDARIES = ("neumann", "periodic")
TV_KINDS = ("isotropic", "anisotropic")
SUFFIXES = (" TV gradient", " |∇f|", " ∇f direction")


def compute_gradients(image: np.ndarray, params: dict[str, Any], callback=None) -> dict:
    """``tv_gradient`` and ``gradient`` of ``image`` (worker thread)."""
    from napari_tv.operators import gradient, tv_gradient

    tvg = tv_gradient(image, **params)
    if callback is not None and callback({"fraction": 0.5}):
        return {"cancelled": True}
    g = gradient(
        image, scheme=params["scheme"], boundary=params["boundary"], spacing=params["spacing"]
    )
    magnitude = np.sqrt(np.einsum("l...,l...->...", g, g))
    if callback is not None:
        callback({"fraction": 1.0})
    return {"tv_gradient": tvg, "gradient": g, "magnitude": magnitude}


def direction_vectors(
    g: np.ndarray,
    spacing: tuple[float, ...],
    step: int,
    *,
    plane: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """napari Vectors data ``(M, 2, ndim)`` of the gradient direction on a sub-sampled grid.

    ``g`` is ``gradient(f)`` (physical units).  For a 3D ``f``, only the plane ``plane`` (an
    index along axis 0) is sampled and the in-plane components are drawn.  Each arrow has
    world length ``0.8 * step * min(spacing)`` and points along the physical gradient; points
    where the gradient vanishes get no arrow.  Returns the vectors and their magnitudes.
    """
    ndim = g.shape[0]
    spacing = np.asarray(spacing, dtype=float)
    if ndim == 3:
        if plane is None:
            raise ValueError("plane is needed for a 3D gradient")
        g2 = g[1:, plane]
        sp2 = spacing[1:]
    else:
        g2 = g
        sp2 = spacing
    shape = g2.shape[1:]
    offsets = [(n - 1) % step // 2 for n in shape]
    grids = np.meshgrid(
        *[np.arange(o, n, step) for o, n in zip(offsets, shape, strict=True)], indexing="ij"
    )
    pos = np.stack([a.ravel() for a in grids], axis=1)
    comps = np.stack([g2[k][tuple(pos.T)] for k in range(g2.shape[0])], axis=1).astype(float)
    norm = np.sqrt((comps**2).sum(axis=1))
    scale = max(float(np.abs(g2).max()), 1e-300)
    keep = norm > 1e-9 * scale
    pos, comps, norm = pos[keep], comps[keep], norm[keep]
    length = 0.8 * step * float(sp2.min())
    proj = comps / norm[:, None] * length / sp2[None, :]  # data units: world length / scale
    if ndim == 3:
        pos = np.concatenate([np.full((len(pos), 1), plane), pos], axis=1)
        proj = np.concatenate([np.zeros((len(proj), 1)), proj], axis=1)
    vectors = np.stack([pos.astype(float), proj], axis=1)
    return vectors.reshape(-1, 2, ndim), norm


class GradientWidget(QWidget):
    """Show the TV gradient, the gradient magnitude and the gradient direction of a layer.

    Three layers are created once and updated in place: "<input> TV gradient" (diverging
    colormap centred on 0, contrast limits ±max|g|), "<input> |∇f|" and "<input> ∇f direction"
    (Vectors on a sub-sampled grid; for 3D, on the current slice, following the dims slider).
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.layer_combo = LayerCombo(napari_viewer, exclude_suffixes=SUFFIXES)
        self.time_check = QCheckBox("first axis is time (current time point)")
        self.scheme_combo = QComboBox()
        self.scheme_combo.addItems(SCHEMES)
        self.boundary_combo = QComboBox()
        self.boundary_combo.addItems(BOUNDARIES)
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(TV_KINDS)
        self.eps_spin = QDoubleSpinBox()
        self.eps_spin.setDecimals(4)
        self.eps_spin.setRange(0.0, 1e6)
        self.eps_spin.setSingleStep(0.01)
        self.step_spin = QSpinBox()
        self.step_spin.setRange(1, 256)
        self.step_spin.setValue(4)
        self.spacing_edit = QLineEdit()
        self.compute_button = QPushButton("Compute")
        progress_row, self.progress, self.cancel_button = make_progress_row()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("", self.time_check)
        form.addRow("scheme", self.scheme_combo)
        form.addRow("boundary", self.boundary_combo)
        form.addRow("TV", self.kind_combo)
        form.addRow("ε", self.eps_spin)
        form.addRow("arrow every (px)", self.step_spin)
        form.addRow("spacing", self.spacing_edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.compute_button)
        layout.addWidget(progress_row)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.runner = TaskRunner(
            "TV gradient",
            self.progress,
            self.cancel_button,
            self.status,
            busy_widgets=(self.compute_button,),
            parent=self,
        )
        self._last: tuple[ImageInfo, dict] | None = None
        self._again = False  # a control changed while a computation ran: run once more
        self.compute_button.clicked.connect(self.run)
        # live: once the layers are shown, a change of scheme, boundary, kind or ε recomputes
        self.scheme_combo.currentTextChanged.connect(self._live)
        self.boundary_combo.currentTextChanged.connect(self._live)
        self.kind_combo.currentTextChanged.connect(self._live)
        self.eps_spin.valueChanged.connect(self._live)
        self.runner.done.connect(self._after_run)
        self.step_spin.valueChanged.connect(lambda _v: self._update_vectors())
        self.layer_combo.layer_changed.connect(self._on_layer)
        self.time_check.toggled.connect(self._refresh_spacing)
        connect_while_alive(self, self.viewer.dims.events.current_step, self._on_dims)
        self._on_layer(self.layer_combo.layer())

    def _on_layer(self, layer) -> None:
        if layer is None:
            return
        self.time_check.blockSignals(True)
        self.time_check.setChecked(has_time_label(layer))
        self.time_check.blockSignals(False)
        info = self._refresh_spacing()
        if info is None:
            return

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
        """Set controls by name: ``scheme``, ``boundary``, ``kind``, ``eps``, ``step``,
        ``spacing``, ``time_series``."""
        combos = {
            "scheme": self.scheme_combo,
            "boundary": self.boundary_combo,
            "kind": self.kind_combo,
        }
        for key, value in values.items():
            if key in combos:
                idx = combos[key].findText(value)
                if idx < 0:
                    raise ValueError(f"{key} must be one of the listed choices, got {value!r}")
                combos[key].setCurrentIndex(idx)
            elif key == "eps":
                self.eps_spin.setValue(float(value))
            elif key == "step":
                self.step_spin.setValue(int(value))
            elif key == "spacing":
                self.spacing_edit.setText(format_spacing(value))
            elif key == "time_series":
                self.time_check.setChecked(bool(value))
            else:
                raise ValueError(f"unknown parameter {key!r}")

    def parameters(self, info: ImageInfo) -> dict[str, Any]:
        return {
            "kind": self.kind_combo.currentText(),
            "scheme": self.scheme_combo.currentText(),
            "boundary": self.boundary_combo.currentText(),
            "spacing": parse_spacing(self.spacing_edit.text() or "1", info.spatial_ndim),
            "eps": float(self.eps_spin.value()),
        }

    def _live(self, *_args) -> None:
        """Recompute with the changed control, if the outputs are on screen (no new layers:
        the three are updated in place)."""
        if self._last is None or f"{self._last[0].name} TV gradient" not in self.viewer.layers:
            return
        if self.runner.running:
            self._again = True
        else:
            self.run()

    def _after_run(self) -> None:
        if self._again and not self.runner.running:
            self._again = False
            self.run()

    def run(self):
        """Compute for the chosen layer (current time point of a series); returns the worker."""
        layer = self.layer_combo.layer()
        try:
            info = image_layer_info(layer, time_series=self.time_check.isChecked())
            params = self.parameters(info)
        except LayerError as exc:
            notify_error(f"TV gradient: {exc}")
            return None
        t = None if info.time_axis is None else layer_index(self.viewer, layer, 0)
        image = info.frame(t)
        return self.runner.start(
            compute_gradients,
            image,
            params,
            on_result=lambda out: self._show(info, params, out),
            description=f"{params['scheme']} differences of {layer.name!r}…",
        )

    def _show(self, info: ImageInfo, params: dict, out: dict) -> None:
        if out.get("cancelled"):
            return
        layer = info.layer
        if layer not in self.viewer.layers:
            notify_error(f"TV gradient: layer {layer.name!r} was removed during the run")
            return
        tvg = out["tv_gradient"]
        bound = float(np.abs(tvg).max())
        bound = bound if bound > 0 else 1.0
        meta = {
            "napari_tv": "TV gradient",
            "source": layer.name,
            "parameters": {**params, "spacing": list(params["spacing"])},
        }
        show_output(
            self.viewer,
            f"{layer.name} TV gradient",
            tvg,
            like=layer,
            metadata={**meta, "max_abs": bound},
            colormap=diverging_colormap(),
            contrast_limits=(-bound, bound),
            visible=True,
        )
        mag = out["magnitude"]
        top = float(mag.max())
        show_output(
            self.viewer,
            f"{layer.name} |∇f|",
            mag,
            like=layer,
            metadata=meta,
            colormap="magma",
            contrast_limits=(0.0, top if top > 0 else 1.0),
            visible=False,
        )
        self._last = (info, params, out["gradient"])
        self._update_vectors(force=True)
        self.status.setText(
            f"{params['scheme']}: max |∇TV| = {float(np.abs(tvg).max()):.4g}, max |∇f| = {top:.4g}"
        )

    def _on_dims(self, _event=None) -> None:
        """Follow the dims slider with the arrows of a 3D layer."""
        if self._last is not None and self._last[0].spatial_ndim == 3:
            self._update_vectors()

    def _update_vectors(self, *, force: bool = False) -> None:
        """Redraw the arrows (only while their layer exists, unless ``force``)."""
        if self._last is None:
            return
        info, params, g = self._last
        layer = info.layer
        name = f"{layer.name} ∇f direction"
        if layer not in self.viewer.layers or not (force or name in self.viewer.layers):
            return
        plane = None
        spatial_offset = layer.ndim - info.spatial_ndim
        if info.spatial_ndim == 3:
            plane = layer_index(self.viewer, layer, spatial_offset)
            old = self.viewer.layers[name] if name in self.viewer.layers else None
            if (
                not force
                and old is not None
                and old.metadata.get("plane") == plane
                and old.metadata.get("step") == self.step_spin.value()
            ):
                return
        vectors, norm = direction_vectors(g, params["spacing"], self.step_spin.value(), plane=plane)
        step = self.step_spin.value()
        scale = tuple(layer.scale)[spatial_offset:]
        translate = tuple(layer.translate)[spatial_offset:]
        show_output(
            self.viewer,
            name,
            vectors,
            layer_type="vectors",
            scale=scale,
            translate=translate,
            metadata={
                "napari_tv": "gradient direction",
                "source": layer.name,
                "step": step,
                "plane": plane,
                "magnitude": norm,
            },
            edge_color="#e8ffe0",
            edge_width=max(0.1 * step, 0.4),
            vector_style="arrow",
        )
