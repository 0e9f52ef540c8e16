"""Running library calls from the dock widgets: worker threads, progress, cancel, messages.

* :class:`TaskRunner` runs one library call at a time on a napari worker thread, turns the
  solvers' ``callback(info) -> bool`` into a progress bar and a Cancel button, and turns
  exceptions into napari notifications (never tracebacks);
* ``notify_error`` / ``notify_warning`` / ``notify_info``: napari notifications.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from napari.utils import notifications
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QWidget

from napari_tv._compile import compile_notice

from ._layers import LayerError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# notifications


def notify_error(message: str) -> None:
    """Show ``message`` as a napari error notification (looked up at call time: patchable)."""
    notifications.show_error(message)


def notify_warning(message: str) -> None:
    """Show ``message`` as a napari warning notification."""
    notifications.show_warning(message)


def notify_info(message: str) -> None:
    """Show ``message`` as a napari info notification."""
    notifications.show_info(message)


def is_deleted(qobject) -> bool:
    """True once Qt has deleted ``qobject`` (its Python wrapper outlives it)."""
    try:
        qobject.objectName()
    except RuntimeError:
        return True
    return False


def connect_while_alive(widget: QObject, emitter, callback) -> None:
    """Connect a napari event to ``callback`` until ``widget`` is deleted.

    A docked widget can be closed while the viewer lives on; its handlers must not be called
    on deleted Qt objects afterwards.  The first event after the deletion disconnects the
    handler (no slot on Qt's ``destroyed`` signal: a Python slot run while the wrapper is torn
    down can crash the process), and a bound method is held weakly, so a form that is
    garbage-collected is not kept alive by the viewer.
    """
    ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else lambda: callback

    def handler(*args):
        target = ref()
        if target is None or is_deleted(widget):
            try:
                emitter.disconnect(handler)
            except (RuntimeError, ValueError, TypeError):  # pragma: no cover - already gone
                pass
            return None
        return target(*args)

    emitter.connect(handler)


# --------------------------------------------------------------------------------------------
# running library calls off the GUI thread


class Cancelled(Exception):
    """Raised inside a worker function to stop it quietly (treated like a Cancel)."""


class TaskRunner(QObject):
    """Run one cancellable library call at a time on a napari worker thread.

    ``start(func, ..., on_result=...)`` calls ``func(*args, callback=cb, **kwargs)`` in a
    thread; ``cb(info)`` relays ``info["fraction"]`` to the progress bar and returns True once
    Cancel was pressed, which is the solvers' way of stopping cleanly.  ``on_result`` runs in the
    GUI thread with the return value, unless the run was cancelled (the layers are then left
    as they were) or raised (the message becomes a napari error notification).

    Attributes
    ----------
    worker : the current (or last) napari FunctionWorker; tests wait on ``worker.finished``.
    """

    progressed = Signal(float, str)
    done = Signal()  # after every run, whatever its outcome

    def __init__(
        self,
        title: str,
        progress_bar: QProgressBar | None = None,
        cancel_button: QPushButton | None = None,
        status: QLabel | None = None,
        busy_widgets: Sequence[QWidget] = (),
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.title = title
        self.bar = progress_bar
        self.cancel_button = cancel_button
        self.status = status
        self.busy_widgets = tuple(busy_widgets)
        self.worker = None
        self._cancel = threading.Event()
        self._last_emit = 0.0
        self.progressed.connect(self._on_progress)
        if cancel_button is not None:
            cancel_button.clicked.connect(self.cancel)
            cancel_button.setEnabled(False)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        """Ask the running call to stop (its callback returns True from now on)."""
        self._cancel.set()
        if self.status is not None and self.running:
            self.status.setText("cancelling…")

    def callback_for(self, cancel: threading.Event) -> Callable[[dict], bool]:
        """The ``callback(info) -> bool`` handed to the solvers (called in the worker thread)."""

        def callback(info: dict) -> bool:
            now = time.monotonic()
            fraction = info.get("fraction")
            if fraction is not None and (now - self._last_emit > 0.05 or fraction >= 1.0):
                self._last_emit = now
                self.progressed.emit(float(fraction), _describe(info))
            return cancel.is_set()

        return callback

    def start(
        self,
        func: Callable,
        *args,
        on_result: Callable[[Any], None],
        on_cancel: Callable[[], None] | None = None,
        description: str = "",
        **kwargs,
    ):
        """Start ``func`` in a worker thread; refused (with a warning) while one is running."""
        from napari.qt.threading import create_worker

        if self.running:
            notify_warning(f"{self.title}: still running; press Cancel first")
            return None
        cancel = self._cancel = threading.Event()
        callback = self.callback_for(cancel)

        def call():
            try:
                with compile_notice(lambda message: self.progressed.emit(-1.0, message)):
                    return ("ok", func(*args, callback=callback, **kwargs))
            except Cancelled:
                return ("cancelled", None)
            except Exception as exc:  # becomes a notification in the GUI thread
                log.debug("%s failed", self.title, exc_info=True)
                return ("error", exc)

        def returned(outcome):
            status, value = outcome
            self.worker = None  # the layer update below may start the next run
            if status == "error":
                self._set_status(f"failed: {value}")
                notify_error(f"{self.title}: {_message(value)}")
            elif status == "cancelled" or cancel.is_set():
                self._set_status("cancelled; layers unchanged")
                if on_cancel is not None:
                    on_cancel()
            else:
                try:
                    on_result(value)
                except Exception as exc:  # a bug or a layer removed meanwhile
                    log.debug("%s: showing the result failed", self.title, exc_info=True)
                    notify_error(f"{self.title}: {_message(exc)}")

        worker = create_worker(call, _ignore_errors=True)
        worker.returned.connect(returned)
        worker.finished.connect(lambda w=worker: self._finished(w))
        self.worker = worker
        self._busy(True)
        self._set_status(description or "running…")
        if self.bar is not None:
            show_progress(self.bar, 0.0)
        worker.start()
        return worker

    def _finished(self, worker) -> None:
        if self.worker is worker:
            self.worker = None
        self._busy(self.running)
        if self.bar is not None and not self.running:
            show_progress(self.bar, 0.0 if self._cancel.is_set() else 1.0)
        self.done.emit()

    def _busy(self, busy: bool) -> None:
        for w in self.busy_widgets:
            w.setEnabled(not busy)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(busy)

    def _set_status(self, text: str) -> None:
        if self.status is not None:
            self.status.setText(text)

    def _on_progress(self, fraction: float, text: str) -> None:
        """``fraction`` < 0: busy without a measure of progress (compiling kernels)."""
        if self.bar is not None:
            show_progress(self.bar, fraction)
        if text and self.running and not self._cancel.is_set():
            self._set_status(text)


def show_progress(bar: QProgressBar, fraction: float) -> None:
    """``fraction`` in [0, 1] on ``bar``; a negative one makes it a busy indicator."""
    if fraction < 0:
        bar.setRange(0, 0)
        return
    bar.setRange(0, 1000)
    bar.setValue(int(round(1000 * min(fraction, 1.0))))


def _describe(info: dict) -> str:
    parts = [str(info["stage"])] if info.get("stage") else []
    if "iter" in info:
        total = info.get("max_iter")
        parts.append(
            f"{'round' if info.get('method') == 'exact' else 'iter'} {info['iter']}"
            + (f"/{total}" if total else "")
        )
    gap = info.get("gap")
    if gap is not None and info.get("method") != "exact" and np.isfinite(gap):
        parts.append(f"gap {gap:.2e}")
    if "elapsed" in info:
        parts.append(f"{info['elapsed']:.1f} s")
    return ", ".join(parts)


def _message(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ValueError | TypeError | LayerError):
        return text
    return f"{type(exc).__name__}: {text}"
