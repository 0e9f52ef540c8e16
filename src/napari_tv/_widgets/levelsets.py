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
from magicgui.widgets import ComboBox, Label, PushButton, Slider, SpinBox

from napari_tv.fidelity import FIDELITIES

from ._forms import TVForm, log_slider, plot, set_beta
from ._layers import ImageInfo, LayerError, show_output
from ._tasks import notify_error, notify_warning

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


class LevelSetsWidget(TVForm):
    """Explore the level sets of an image and the exact solver's dichotomy.

    A magicgui form whose controls are the keyword arguments of :mod:`napari_tv.levelsets`
    (``levels``, ``connectivity``; ``beta`` and ``fidelity`` for ``dichotomy_partition``) plus
    the input (``image``, ``time_series``, ``spacing``), with the λ slider, the stack button,
    the perimeter plot, the dichotomy button and its depth slider.
    """

    title = "Level sets"
    exclude_suffixes = SUFFIXES
    time_text = "first axis is time (current time point)"

    def __init__(self, napari_viewer) -> None:
        self.levels = SpinBox(name="levels", label="levels (1: auto)", min=1, max=65536, value=1,
                              tooltip="auto: every integer for integer images, 256 levels "
                              "for floats")  # fmt: skip
        self.connectivity = SpinBox(name="connectivity", label="connectivity", min=1, max=3)
        # level sets u^λ = [u ≤ λ]
        self.lambda_label = Label(name="lambda_label", value="λ = –")
        self.lambda_slider = Slider(name="lambda_slider", label="λ", min=0, max=0,
                                    readout=False, enabled=False)  # fmt: skip
        self.stack_button = PushButton(name="stack_button", text="Add stack (λ as a dims axis)",
                                       enabled=False)  # fmt: skip
        self.plot = plot("plot", "perimeter of u^λ against λ")
        self.coarea_label = Label(name="coarea_label", value="")
        # the Darbon–Sigelle dichotomy
        self.beta = log_slider("beta", "β", 1e-3, 1e2, 1.0)
        self.fidelity = ComboBox(name="fidelity", label="fidelity", choices=FIDELITIES)
        self.dichotomy_button = PushButton(
            name="dichotomy_button", text="Run Darbon–Sigelle dichotomy (exact solver)"
        )
        self.depth_label = Label(name="depth_label", value="round –")
        self.depth_slider = Slider(name="depth_slider", label="round", min=1, max=1,
                                   readout=False, enabled=False)  # fmt: skip
        super().__init__(
            napari_viewer,
            [self.levels, self.connectivity],
            run_text="Compute level sets u^λ = [u ≤ λ]",
            extra=[self.lambda_label, self.lambda_slider, self.stack_button, self.plot,
                   self.coarea_label, self.beta, self.fidelity, self.dichotomy_button,
                   self.depth_label, self.depth_slider],
        )  # fmt: skip
        for label in (self.lambda_label, self.coarea_label, self.depth_label):
            label.native.setWordWrap(True)
        self.compute_button = self.run_button
        self.beta_slider = self.beta.native
        self.runner.busy_widgets += (self.dichotomy_button.native,)
        self._levels: dict[str, Any] | None = None  # info, image, summary of the last compute
        self._dichotomy: dict[str, Any] | None = None
        self._stores: dict[str, Any] = {}  # chunked exact results whose stores layers read
        self._beta_layer = None  # the layer β's range was set for
        self.lambda_slider.changed.connect(self._show_level)
        self.stack_button.changed.connect(lambda *_: self.add_stack())
        self.dichotomy_button.changed.connect(lambda *_: self.run_dichotomy())
        self.depth_slider.changed.connect(self._show_depth)
        self.input.layer_changed.connect(self._on_layer)
        self._on_layer(self.input.layer())

    # -- input ---------------------------------------------------------------------------
    def _on_layer(self, layer) -> None:
        """Adopt the layer's spatial dimensions (connectivity) and, for a new layer, its
        intensity range (β)."""
        try:
            info = self.input.info()
        except LayerError:
            return
        self.connectivity.max = info.spatial_ndim
        if layer is self._beta_layer:
            return
        self._beta_layer = layer
        lo, hi = (float(c) for c in layer.contrast_limits)
        span = hi - lo if hi > lo else 1.0
        self.beta_slider.setRange(span * 1e-4, span * 10.0)
        self.beta_slider.setValue(0.1 * span, emit=False)

    def _input(self) -> tuple[ImageInfo, np.ndarray, dict[str, Any]]:
        """The checked layer, the image (current time point of a series) and the keyword
        arguments ``levels``, ``connectivity``, ``spacing``."""
        info = self.input.info()
        values = self.asdict()
        params = {
            "levels": None if values["levels"] <= 1 else values["levels"],
            "connectivity": min(values["connectivity"], info.spatial_ndim),
            "spacing": self.input.spacing_for(info),
        }
        return info, info.frame(self.input.current_time(info)), params

    def set_value(self, key: str, value) -> None:
        if key == "levels":
            self.levels.value = 1 if value is None else int(value)
        elif key == "beta":
            set_beta(self.beta, float(value))
        else:
            super().set_value(key, value)

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
        chart = self.plot.native
        chart.clear()
        chart.add_series("perimeter", out["lambdas"], out["perimeters"])
        chart.x_label = "λ"
        note = (
            ""
            if out["on_grid"]
            else " (u is off the grid: the sum is the TV of u rounded up to the grid)"
        )
        self.coarea_label.value = (
            f"coarea Σ Δλ·Per(u^λ) = {out['coarea']:.6g}\n"
            f"graph TV (connectivity {params['connectivity']}) = {out['graph_tv']:.6g}\n"
            f"tv_norm: anisotropic {out['tv_anisotropic']:.6g}, "
            f"isotropic {out['tv_isotropic']:.6g}{note}"
        )
        with self.lambda_slider.changed.blocked():
            self.lambda_slider.max = max(n - 1, 0)
            self.lambda_slider.value = median_level(out["lambdas"], image)
        self.lambda_slider.enabled = n > 0
        self.stack_button.enabled = n > 0
        self.status.value = f"{len(out['grid'])} levels"
        if n:
            self._show_level(self.lambda_slider.value)
        else:
            self.lambda_label.value = "constant image: a single level, no level set to show"

    def set_level_index(self, k: int) -> None:
        """Move the λ slider to level index ``k`` (``grid[k]``)."""
        slider = self.lambda_slider
        k = min(max(int(k), slider.min), slider.max)
        with slider.changed.blocked():
            slider.value = k
        self._show_level(k)

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
        self.lambda_label.value = (
            f"λ = {lam:.4g} (level {k + 1} of {len(state['grid'])}): "
            f"{int(mask.sum())} px, perimeter {per:.4g}"
        )
        self.plot.native.set_marker("lambda", lam, "#ffffff")
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
            info = self.input.info()
            if info.lazy:
                return self._run_chunked_exact(info)
            info, image, params = self._input()
        except LayerError as exc:
            notify_error(f"Level sets: {exc}")
            return None
        params = {
            **params,
            "beta": float(self.beta_slider.value()),
            "fidelity": self.fidelity.value,
        }
        return self.runner.start(
            run_dichotomy,
            image,
            params,
            on_result=lambda out: self._show_dichotomy(info, params, out),
            description=f"exact dichotomy of {info.name!r} at β = {params['beta']:.3g}…",
        )

    def _run_chunked_exact(self, info: ImageInfo):
        """A lazy layer (dask, zarr, multiscale): the chunked exact solve, block by block
        (``napari_tv._exact_chunked``), with progress and Cancel; shows the minimiser and
        which pass over the blocks decided each voxel."""
        from ._chunked import exact_chunked

        values = self.asdict()
        params = {
            "levels": None if values["levels"] <= 1 else values["levels"],
            "connectivity": min(values["connectivity"], info.spatial_ndim),
            "spacing": self.input.spacing_for(info),
            "beta": float(self.beta_slider.value()),
            "fidelity": self.fidelity.value,
        }
        t = self.input.current_time(info) if info.time_axis is not None else None
        return self.runner.start(
            exact_chunked, info, t, params,
            on_result=lambda result: self._show_chunked_exact(info, params, result),
            description=f"exact solve of {info.name!r} at β = {params['beta']:.3g}, chunked "
                        "(dask)…",
        )  # fmt: skip

    def _show_chunked_exact(self, info: ImageInfo, params, result) -> None:
        from ._chunked import certificate, remove_stores

        layer = info.layer
        if layer not in self.viewer.layers:
            notify_error(f"Level sets: layer {layer.name!r} was removed during the run")
            remove_stores([result])
            return
        spatial = info.spatial_ndim
        extra = result.extra
        meta = {"source": layer.name, "beta": params["beta"], "fidelity": params["fidelity"],
                "connectivity": params["connectivity"], "energy": float(result.energy),
                "certificate": certificate(result), "passes": int(result.rounds),
                "remainder_voxels": int(extra["remainder_voxels"])}  # fmt: skip
        for name in (f"{layer.name} exact", f"{layer.name} dichotomy"):
            old = self._stores.pop(name, None)
            if old is not None:
                remove_stores([old])
        place = {"scale": tuple(layer.scale)[-spatial:],
                 "translate": tuple(layer.translate)[-spatial:]}  # fmt: skip
        show_output(self.viewer, f"{layer.name} exact", result.u, **place,
                    metadata={"napari_tv": "exact (chunked)", **meta},
                    colormap=layer.colormap)  # fmt: skip
        show_output(self.viewer, f"{layer.name} dichotomy", extra["decided_at"],
                    layer_type="labels", **place,
                    metadata={"napari_tv": "dichotomy (chunked)", **meta,
                              "labels": "the pass over the blocks that decided each voxel; "
                                        f"{result.rounds + 1}: solved at once with the rest"},
                    opacity=0.5)  # fmt: skip
        self._stores[f"{layer.name} exact"] = result
        self._dichotomy = None
        self.depth_slider.enabled = False
        self.depth_label.value = (
            f"chunked: labels 1-{result.rounds} = the pass over the blocks that decided a "
            f"voxel, {result.rounds + 1} = solved at once"
        )
        self.status.value = f"{meta['certificate']}; energy {result.energy:.6g}"

    def _show_dichotomy(self, info, params, out) -> None:
        self._dichotomy = {"info": info, "params": params, **out}
        depth = len(out["intervals"])
        with self.depth_slider.changed.blocked():
            self.depth_slider.max = max(depth, 1)
            self.depth_slider.value = max(depth, 1)
        self.depth_slider.enabled = depth > 0
        self.status.value = (
            f"dichotomy: {depth} max-flow rounds over {len(out['grid'])} "
            f"levels at β = {params['beta']:.4g}"
        )
        if depth:
            self._show_depth(depth)
        else:
            self.depth_label.value = "no round (a single level)"

    def set_depth(self, depth: int) -> None:
        """Show the partition after round ``depth`` (1-based)."""
        slider = self.depth_slider
        depth = min(max(int(depth), slider.min), slider.max)
        with slider.changed.blocked():
            slider.value = depth
        self._show_depth(depth)

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
        self.depth_label.value = (
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
