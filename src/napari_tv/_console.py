"""The ``napari-tv`` console script: Ctrl-C and SIGTERM end it with one line, at any moment.

Only the standard library is imported before the handlers are in place (``napari_tv``'s own
``__init__`` is lazy), so an interruption during start-up is no traceback, even when it lands
inside an extension module's initialisation and comes out as an ``ImportError``; and the
process ends at once (``os._exit``) instead of waiting for worker threads still inside a
compiled kernel (a max-flow round of the exact solver could take seconds), once the command
has removed its partial output.
"""

from __future__ import annotations

import _signal  # the C module, at once: ``signal`` itself imports enum (~7 ms of start-up)
import os


def _before_start(signum, frame):
    """Ctrl-C or SIGTERM before the command has started: nothing to clean up, one line."""
    what = "terminated" if signum == _signal.SIGTERM else "interrupted"
    os.write(2, f"napari-tv: {what}; no output written\n".encode())
    os._exit(128 + signum)


for _sig in (_signal.SIGINT, _signal.SIGTERM):
    _signal.signal(_sig, _before_start)

import signal  # noqa: E402
import sys  # noqa: E402

#: exit statuses of an interrupted run: Ctrl-C (128 + SIGINT) and SIGTERM (128 + SIGTERM)
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
INTERRUPTED = (EXIT_INTERRUPTED, EXIT_TERMINATED)

#: the signals received since :func:`install` (the newest last)
RECEIVED: list[int] = []


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the partial output is removed on the way
    out (not an ``Exception``: no library code catches it)."""


def on_signal(signum, frame):
    """Record the signal and raise ``KeyboardInterrupt`` (SIGINT) or :class:`Terminated`.

    Inside a weak-reference callback (importlib's module-lock ``cb`` runs them during lazy
    imports) an exception would be printed as "Exception ignored" and the signal lost: there
    the signal is delivered again, and handled once the callback has returned."""
    if (
        frame is not None
        and frame.f_code.co_name == "cb"
        and frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        import _thread

        _thread.interrupt_main(signum)
        return
    RECEIVED.append(signum)
    if signum == signal.SIGTERM:
        raise Terminated
    raise KeyboardInterrupt


def install() -> dict:
    """Put :func:`on_signal` in place for SIGINT and SIGTERM (a parent that ignores SIGINT
    must not make Ctrl-C ineffective); returns the previous handlers, empty outside the main
    thread."""
    RECEIVED.clear()
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread
        pass
    return previous


def interruption(exc: BaseException) -> int | None:
    """The exit status if ``exc`` ends an interrupted run (the exception a signal raised, or
    whatever it turned into on its way, e.g. an ``ImportError``), else None."""
    if isinstance(exc, Terminated) or (RECEIVED and RECEIVED[-1] == signal.SIGTERM):
        return EXIT_TERMINATED
    if isinstance(exc, KeyboardInterrupt) or RECEIVED:
        return EXIT_INTERRUPTED
    return None


def report(code: int) -> None:
    what = "terminated" if code == EXIT_TERMINATED else "interrupted"
    print(f"\nnapari-tv: {what}; no output written", file=sys.stderr, flush=True)


def console() -> None:
    # ``_before_start`` stays in place during the imports (nothing to clean up yet: one line
    # and exit); ``main`` installs ``on_signal`` when it starts
    try:
        from napari_tv.cli import main

        code = main()
    except BaseException as exc:  # before ``main`` took over (its imports)
        code = interruption(exc)
        if code is None:
            raise
        report(code)
    sys.stdout.flush()
    sys.stderr.flush()
    if code in INTERRUPTED:
        os._exit(code)
    sys.exit(code)
