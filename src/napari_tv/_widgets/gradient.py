"""The "TV gradient" dock widget: ∇_f TV(f), |∇f| and the gradient direction field.

All three come from :mod:`napari_tv.operators` (``tv_gradient`` and ``gradient``), with the
scheme, boundary, ε and TV kind chosen here; once computed, changing any of them recomputes
live (the layers are updated in place).  Switching to central differences on a
checkerboard shows why they fail for TV: every central difference of ``(-1)^(i+j)`` is 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox

from napari_tv.operators import BOUNDARIES, SCHEMES, TV_KINDS

from ._forms import TVForm
from ._layers import ImageInfo, diverging_colormap, layer_index, show_output
from ._tasks import connect_while_alive, notify_error

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


class GradientWidget(TVForm):
    """Show the TV gradient, the gradient magnitude and the gradient direction of a layer.

    A magicgui form whose controls are ``tv_gradient``'s keyword arguments (``scheme``,
    ``boundary``, ``kind``, ``eps``) plus the input (``image``, ``time_series``, ``spacing``)
    and ``step`` (one arrow every ``step`` pixels).  Three layers are created once and updated
    in place: "<input> TV gradient" (diverging colormap centred on 0, contrast limits
    ±max|g|), "<input> |∇f|" and "<input> ∇f direction" (Vectors on a sub-sampled grid; for
    3D, on the current slice, following the dims slider).
    """

    title = "TV gradient"
    exclude_suffixes = SUFFIXES
    time_text = "first axis is time (current time point)"

    def __init__(self, napari_viewer) -> None:
        self.scheme = ComboBox(name="scheme", label="scheme", choices=SCHEMES)
        self.boundary = ComboBox(name="boundary", label="boundary", choices=BOUNDARIES)
        self.kind = ComboBox(name="kind", label="TV", choices=TV_KINDS)
        self.eps = FloatSpinBox(name="eps", label="ε", min=0.0, max=1e6, step=0.01)
        self.eps.native.setDecimals(4)
        self.step = SpinBox(name="step", label="arrow every (px)", min=1, max=256, value=4)
        super().__init__(
            napari_viewer,
            [self.scheme, self.boundary, self.kind, self.eps, self.step],
            run_text="Compute",
        )
        self.compute_button = self.run_button
        self._last: tuple[ImageInfo, dict, np.ndarray] | None = None
        self._again = False  # a control changed while a computation ran: run once more
        # live: once the layers are shown, a change of scheme, boundary, kind or ε recomputes
        for control in (self.scheme, self.boundary, self.kind, self.eps):
            control.changed.connect(self._live)
        self.runner.done.connect(self._after_run)
        self.step.changed.connect(lambda _v: self._update_vectors())
        connect_while_alive(self.native, self.viewer.dims.events.current_step, self._on_dims)

    def parameters(self, info: ImageInfo) -> dict[str, Any]:
        """The keyword arguments of ``tv_gradient`` the controls describe."""
        values = self.asdict()
        params = {key: values[key] for key in ("kind", "scheme", "boundary")}
        return {**params, "spacing": self.input.spacing_for(info), "eps": float(values["eps"])}

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
        layer = self.input.layer()
        checked = self.checked()
        if checked is None:
            return None
        info, params = checked
        image = info.frame(self.input.current_time(info))
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
        self.status.value = (
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
        plane, step = None, self.step.value
        spatial_offset = layer.ndim - info.spatial_ndim
        if info.spatial_ndim == 3:
            plane = layer_index(self.viewer, layer, spatial_offset)
            old = self.viewer.layers[name] if name in self.viewer.layers else None
            if (
                not force
                and old is not None
                and old.metadata.get("plane") == plane
                and old.metadata.get("step") == step
            ):
                return
        vectors, norm = direction_vectors(g, params["spacing"], step, plane=plane)
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
