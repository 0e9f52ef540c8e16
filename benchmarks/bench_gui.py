"""Live β in a real viewer, end to end: a slider move → the output layer updated → drawn.

Run under a virtual display (it opens napari windows)::

    xvfb-run -a .venv/bin/python benchmarks/bench_gui.py [--moves 20] [--skip-3d]

For each scenario a napari viewer shows the image with the β-sweep widget docked; the slider
is moved as a user drags it (pressed, one step of 2.9 % at a time; each move waits for its
result to be drawn).  Per move it records

* ``solve``: the solver's own time (``TVResult.elapsed``),
* ``update``: the GUI thread's time to put the result into the output layer,
* ``to draw``: from the move to the end of the next draw of the canvas (vispy's ``draw``
  event, which napari runs once the layer changed): what the user sees;

as medians and 90th percentiles (ms), with the number of distinct output-layer objects
(1: updated in place).  A fast drag (20 moves 30 ms apart, not waiting) gives the results
shown on the way, whether the last β is the one shown, and the time from the last move to
its draw.  For the volume, releasing the slider solves the whole volume: the time from the
release to its draw and its duality gap.  Then the other widgets' live paths: the Level
sets λ slider and the TV gradient's scheme switch, from the change to the draw.

The machine should be quiet (nothing else running: the header prints the load average).
Speed is never asserted in the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

# the fused kernels, as after ``napari-tv warmup`` (compiled in the foreground if not cached)
os.environ.setdefault("NAPARI_TV_KERNELS", "fast")


def _p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def _fmt(xs):
    return f"{1e3 * statistics.median(xs):.0f} / {1e3 * _p90(xs):.0f}" if xs else "-"


class Clock:
    """Timestamps of the canvas's draws and of the widget's layer updates (the calls of
    ``show_output`` in the widget's module, which every output layer goes through)."""

    def __init__(self, viewer, module, owner=None, name="show_output"):
        self.draws: list[float] = []
        self.hooks: list = []  # called after each draw and each update (``_wait``)
        canvas = viewer.window._qt_viewer.canvas._scene_canvas

        def drawn(_event):
            self.draws.append(time.perf_counter())
            for hook in tuple(self.hooks):
                hook()

        canvas.events.draw.connect(drawn)
        self.updates: list[tuple[float, float]] = []
        owner = module if owner is None else owner
        self._owner, self._name = owner, name
        self._original = original = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.updates.append((t0, time.perf_counter()))
                for hook in tuple(self.hooks):
                    hook()

        setattr(owner, name, timed)
        _CLOCKS.append(self)

    def close(self):
        setattr(self._owner, self._name, self._original)
        _CLOCKS.remove(self)

    def draw_after(self, t: float) -> float | None:
        later = [d for d in self.draws if d > t]
        return later[0] if later else None

    def shown(self, update) -> float | None:
        """When ``update`` (start, end) reached the screen: the end of the first draw that
        began after it started (napari draws asynchronously, after the update; a draw during
        it would be a repaint of the old picture, which never happened here)."""
        d = self.draw_after(update[0])
        return None if d is None else max(d, update[1])


_CLOCKS: list = []  # the clock of the running scenario: its draws and updates wake ``_wait``


def _wait(app, predicate, timeout=30.0):
    """Run Qt's event loop (the GUI thread idle in it, as in napari) until ``predicate()``,
    checked after every draw and layer update, and every 20 ms (not a busy poll: waking the
    GUI thread every millisecond slowed the solver thread 1.5-3x)."""
    from qtpy.QtCore import QEventLoop, QTimer

    if predicate():
        return
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(20)
    end = time.perf_counter() + timeout
    state = {"timeout": False}

    def check():
        if predicate():
            loop.quit()
        elif time.perf_counter() > end:
            state["timeout"] = True
            loop.quit()

    timer.timeout.connect(check)
    timer.start()
    for clock in _CLOCKS:
        clock.hooks.append(check)
    try:
        loop.exec()
    finally:
        timer.stop()
        for clock in _CLOCKS:
            clock.hooks.remove(check)
    if state["timeout"]:
        raise TimeoutError("no result in time")


def _pause(app, seconds):
    """Let the event loop run for ``seconds`` (a user's pause between slider events)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(round(seconds * 1000)), loop.quit)
    loop.exec()


def _images():
    from skimage import data

    from napari_tv import microscopy_3d

    rng = np.random.default_rng(0)
    cam = data.camera().astype(np.float64)
    noisy = np.clip(cam + rng.normal(0, 20, cam.shape), 0, 255)
    return [
        ("2-D 512², float 0–1", (noisy / 255).astype(np.float32), None),
        ("2-D 512², uint8 0–255", noisy.astype(np.uint8), None),
        ("2-D 512², uint16", (noisy * 257).astype(np.uint16), None),
        ("3-D 64×256×256, slice", microscopy_3d(shape=(64, 256, 256))[0], (2.0, 0.5, 0.5)),
    ]


def sweep_scenario(name, image, scale, moves, app):
    import napari

    from napari_tv._widgets import sweep as module
    from napari_tv._widgets.sweep import SweepWidget

    viewer = napari.Viewer(show=True)
    layer = viewer.add_image(image, name="img", **({"scale": scale} if scale else {}))
    widget = SweepWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    if image.ndim == 3:
        viewer.dims.set_current_step(0, image.shape[0] // 2)
    clock = Clock(viewer, module, SweepWidget, "_show")  # both its in-place paths
    slider = widget.beta_slider.slider
    span = float(image.max()) - float(image.min())
    widget.beta_slider.setValue(0.05 * span, emit=False)
    slider.setSliderDown(True)
    widget.request(full=False)  # the first solve of a session (not counted)
    _wait(app, lambda: widget.idle and clock.updates)
    _wait(app, lambda: clock.shown(clock.updates[-1]) is not None)
    out_ids, solve, update, total, iters = set(), [], [], [], []
    for _ in range(moves):
        n = len(clock.updates)
        t0 = time.perf_counter()
        slider.setValue(slider.value() + 1)
        _wait(app, lambda n=n: len(clock.updates) > n and widget.idle)
        t_update = clock.updates[-1]
        _wait(app, lambda u=t_update: clock.shown(u) is not None)
        total.append(clock.shown(t_update) - t0)
        update.append(t_update[1] - t_update[0])
        out = viewer.layers["img β-sweep"]
        solve.append(float(out.metadata["elapsed"]))
        iters.append(int(out.metadata["n_iter"]))
        out_ids.add(id(out))
    # a fast drag: 20 moves 30 ms apart, not waiting
    n = len(clock.updates)
    for i in range(20):
        slider.setValue(slider.value() + 1)
        t_last = time.perf_counter()
        if i < 19:
            _pause(app, 0.03)
    last_beta = widget.beta_slider.value()
    _wait(app, lambda: widget.idle and len(clock.updates) > n)
    _wait(app, lambda: clock.shown(clock.updates[-1]) is not None)
    out = viewer.layers["img β-sweep"]
    shown = len(clock.updates) - n
    drag = {
        "shown": shown,
        "last": abs(out.metadata["parameters"]["beta"] - last_beta) < 1e-12 * last_beta,
        "to_draw": max(clock.shown(clock.updates[-1]) - t_last, 0.0),
    }
    release = None
    if image.ndim == 3:  # release: the whole volume
        n = len(clock.updates)
        t0 = time.perf_counter()
        slider.setSliderDown(False)
        _wait(app, lambda: widget.idle and len(clock.updates) > n
              and "preview_plane" not in viewer.layers["img β-sweep"].metadata, timeout=60)
        meta = viewer.layers["img β-sweep"].metadata
        _wait(app, lambda: clock.shown(clock.updates[-1]) is not None)
        release = clock.shown(clock.updates[-1]) - t0
        release = (release, meta["gap"], meta["converged"], meta["n_iter"])
    clock.close()
    viewer.close()
    del layer
    return {"solve": solve, "update": update, "total": total, "layers": len(out_ids),
            "iters": statistics.median(iters),
            "drag": drag, "release": release}


def level_scenario(image, scale, moves, app):
    import napari

    from napari_tv._widgets import levelsets as module
    from napari_tv._widgets.levelsets import LevelSetsWidget

    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="img", **({"scale": scale} if scale else {}))
    widget = LevelSetsWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    clock = Clock(viewer, module)
    widget.run()
    _wait(app, lambda: not widget.runner.running and clock.updates, timeout=120)
    out_ids, total, update = set(), [], []
    slider = widget.lambda_slider
    k = slider.value
    for i in range(moves):
        n = len(clock.updates)
        t0 = time.perf_counter()
        slider.value = min(max(k + (i % 10) - 5, slider.min), slider.max)  # as a drag
        _wait(app, lambda n=n: len(clock.updates) > n)
        t_update = clock.updates[-1]
        _wait(app, lambda u=t_update: clock.shown(u) is not None)
        total.append(clock.shown(t_update) - t0)
        update.append(t_update[1] - t_update[0])
        out_ids.add(id(viewer.layers["img u^λ"]))
    clock.close()
    viewer.close()
    return {"update": update, "total": total, "layers": len(out_ids)}


def gradient_scenario(image, scale, moves, app):
    import napari

    from napari_tv._widgets import gradient as module
    from napari_tv._widgets.gradient import GradientWidget

    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="img", **({"scale": scale} if scale else {}))
    widget = GradientWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    clock = Clock(viewer, module)
    widget.run()
    _wait(app, lambda: not widget.runner.running and clock.updates, timeout=120)
    out_ids, total, update = set(), [], []
    schemes = ("backward", "central", "forward")
    for i in range(moves):
        n = len(clock.updates)
        t0 = time.perf_counter()
        widget.set_parameters(scheme=schemes[i % 3])  # live: recomputes by itself
        _wait(app, lambda n=n: len(clock.updates) > n and not widget.runner.running)
        t_update = clock.updates[-1]
        _wait(app, lambda u=t_update: clock.shown(u) is not None)
        total.append(clock.shown(t_update) - t0)
        update.append(t_update[1] - t_update[0])
        out_ids.add(id(viewer.layers["img TV gradient"]))
    clock.close()
    viewer.close()
    return {"update": update, "total": total, "layers": len(out_ids)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--skip-3d", action="store_true")
    args = parser.parse_args(argv)
    import napari  # noqa: F401 - creates the application
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("## β sweep: slider move → layer updated → drawn (ms, median / p90)\n")
    print("| scenario | solve | iterations | update | to draw | output layers | fast drag: "
          "shown, last β, to draw | release: whole volume |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    images = _images()
    for name, image, scale in images:
        if args.skip_3d and image.ndim == 3:
            continue
        r = sweep_scenario(name, image, scale, args.moves, app)
        d = r["drag"]
        rel = "-"
        if r["release"] is not None:
            t, gap, conv, n_iter = r["release"]
            rel = f"{t * 1e3:.0f} ms, gap {gap:.2g} ({'converged' if conv else 'NOT converged'}"
            rel += f", {n_iter} it)"
        print(f"| {name} | {_fmt(r['solve'])} | {r['iters']:.0f} | {_fmt(r['update'])} "
              f"| {_fmt(r['total'])} "
              f"| {r['layers']} | {d['shown']} of 20, {'yes' if d['last'] else 'NO'}, "
              f"{d['to_draw'] * 1e3:.0f} ms | {rel} |", flush=True)
    vol = [im for im in images if im[1].ndim == 3][0]
    print("\n## Other live paths (ms, median / p90)\n")
    print("| widget | control | update | to draw | output layers |")
    print("|---|---|---:|---:|---:|")
    r = level_scenario(vol[1], vol[2], args.moves, app)
    print(f"| Level sets, {vol[0]} | λ slider | {_fmt(r['update'])} | {_fmt(r['total'])} "
          f"| {r['layers']} |", flush=True)
    r = gradient_scenario(images[1][1], None, min(args.moves, 9), app)
    print(f"| TV gradient, {images[1][0]} | scheme | {_fmt(r['update'])} | "
          f"{_fmt(r['total'])} | {r['layers']} |", flush=True)
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
