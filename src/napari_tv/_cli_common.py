"""What the command line's modules share (:mod:`napari_tv.cli` and
:mod:`napari_tv._cli_chunked`): the one-line user error :class:`CLIError`, notes on stderr
(:func:`_note`), the progress bar fed by the solvers' callback (:class:`_Progress`), the
library call in a worker thread that Ctrl-C interrupts at once (:func:`_library_call`), and the
typing of ``--option NAME=VALUE`` (:func:`_method_options`).

A module of its own so that both import it and neither imports the other back.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import numpy as np

PROG = "napari-tv"


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit status 2, no output written."""


def _method_options(method: str, pairs) -> dict:
    """``--option`` pairs as the method's options, each value parsed by its declared type
    (bool, int, float or str; ``none`` for an option whose default is None).  An unknown name
    is passed on as text: ``denoise_tv`` says which names the method has."""
    from napari_tv.solvers.methods import get_method

    declared = get_method(method).options
    options = {}
    for name, text in pairs or ():
        option = declared.get(name)
        if option is None or (text.lower() == "none" and option.default is None):
            options[name] = None if option is not None else text
        elif option.type is bool:
            if text.lower() not in _BOOLS:
                raise CLIError(f"--option {name}: expected true or false, got {text!r}")
            options[name] = _BOOLS[text.lower()]
        elif option.type in (int, float):
            try:
                options[name] = option.type(text)
            except ValueError:
                kind = "a whole number" if option.type is int else "a number"
                raise CLIError(f"--option {name}: expected {kind}, got {text!r}") from None
        else:
            options[name] = text
    return options


_BOOLS = {"true": True, "yes": True, "on": True, "1": True,
          "false": False, "no": False, "off": False, "0": False}  # fmt: skip


# ---------------------------------------------------------------------------- progress


class _Progress:
    """The solver callback: a tqdm bar on stderr (shown after 0.5 s) fed by ``info["fraction"]``."""

    def __init__(self, enabled: bool, desc: str, start_note: str = ""):
        self.enabled, self.desc, self.bar, self.start_note = enabled, desc, None, start_note
        self.stopped = False

    def stop(self) -> None:
        """Make the next callback ask the solver to stop (the run was interrupted)."""
        self.stopped = True

    def __call__(self, info: dict) -> bool:
        if self.stopped:
            return True
        if not self.enabled:
            return False
        if self.bar is None:
            from tqdm import tqdm

            if self.start_note:  # the solver has accepted every parameter and is running
                _note(self.start_note)

            self.bar = tqdm(
                total=1000,
                desc=self.desc,
                file=sys.stderr,
                delay=0.5,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
            )
        frac = float(info.get("fraction", 0.0) or 0.0)
        n = int(round(1000 * min(max(frac, 0.0), 1.0)))
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)
        energy = info.get("energy")
        if energy is not None and np.isfinite(energy):
            self.bar.set_postfix_str(f"iter {info.get('iter')}  energy {energy:.6g}", refresh=False)
        return False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _library_call(
    fn: Callable, *args, stop: Callable[[], None] | None = None, drain: float = 0.0, **kwargs
):
    """Call the library in a worker thread; its ValueError/TypeError (bad data or parameter)
    become CLIError.

    The main thread only waits, so Ctrl-C and SIGTERM act within a few milliseconds even while
    a compiled kernel (which releases the GIL) runs for seconds; ``stop`` is then called (it
    makes the solver's callback ask for cancellation) and the interruption propagates.  The
    console script ends the process at once; a caller of :func:`main` in the same process has
    the worker end at the solver's next callback.  With ``drain`` (seconds) the interruption
    first waits that long at most for the worker to end (it writes into a directory that is
    removed next; a second Ctrl-C stops waiting)."""
    from napari_tv import _compile

    box: dict = {}
    state = _compile.thread_state()
    # the worker's own "done" (not Thread.join/is_alive: on Python < 3.13 a join that Ctrl-C
    # interrupts marks a running thread as stopped, and draining would not wait for it)
    done = threading.Event()

    def work() -> None:
        try:
            with _compile.carried_from(state):
                box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the main thread below
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"{PROG}-{fn.__name__}", daemon=True)
    worker.start()
    try:
        while not done.wait(0.05):
            pass
    except BaseException:
        if stop is not None:
            stop()
        if drain > 0:
            deadline = time.monotonic() + drain
            try:
                while not done.wait(0.05) and time.monotonic() < deadline:
                    pass
            except BaseException:  # noqa: S110 - a second signal: stop waiting
                pass
        raise
    error = box.get("error")
    if isinstance(error, (ValueError, TypeError)):
        raise CLIError(str(error)) from None
    if isinstance(error, MemoryError):  # the guard's message, or NumPy's
        raise CLIError(str(error) or "out of memory") from None
    if error is not None:
        raise error
    return box["value"]


def _note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)
