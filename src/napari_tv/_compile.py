"""When and where napari-tv's Numba kernels compile.

Numba compiles a kernel the first time it meets a new combination of argument types and keeps
the machine code in an on-disk cache.  From an empty cache the fused kernels cost a minute on
a 2-core machine (the Chambolle sweep about 27 s, the duality gap 13 s; ``benchmarks/
bench_compile.py``), and every new install, Numba upgrade and new dtype starts empty.  This
module keeps that minute away from the user:

**Two tiers.**  Each *family* of fused kernels in :data:`TIERED` has quick twins
(``solvers/_quick.py``: plain serial loops that compile in about a second).
:func:`ready` tells a solver whether the fused family can run without compiling, i.e. it is
compiled in this process or in the on-disk cache (found by running the family's ``warm``
function, which calls every fused kernel of the family on tiny arrays, under
:func:`no_compile`).  When it cannot, the solver runs on the quick kernels, and ``ready``
starts a background *process* (:func:`main` with ``FAMILY:DTYPE``) that compiles
the fused family into the cache on the other core; a later call finds it there.  A process,
not a thread: Numba compiles under one global lock, which a thread compiling for a minute
would hold against every other compilation in the process.

**Compiling ahead.**  :func:`warm_up` compiles every family for float32 and float64, in
parallel processes (``napari-tv warmup``; ``scripts/bootstrap`` runs it).

**A robust cache.**  Every kernel of the package (``_config.jit``) caches through
:class:`RobustFunctionCache`: a corrupt or unreadable cache file is discarded and the kernel
compiled again, a cache that cannot be written costs a warning, never an error.  Numba itself
writes its files atomically (two processes may compile at once), invalidates them when Numba
or the source changes, and falls back to a user-wide cache directory when the package's own
``__pycache__`` is not writable (a read-only install); ``NUMBA_CACHE_DIR`` overrides both.

**Saying so.**  :func:`compile_notice` calls a function once when the current thread starts
compiling: the command line prints a line, the widgets show it, ``denoise_tv`` reports it to
its callback.

``NAPARI_TV_KERNELS`` = ``auto`` (default, as above), ``fast`` (always the fused kernels,
compiled in the foreground when needed) or ``quick`` (always the quick kernels).
``NAPARI_TV_BACKGROUND_COMPILE=0`` keeps ``auto`` from starting background processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from numba.core import event as _event
from numba.core.caching import FunctionCache

__all__ = [
    "DTYPES",
    "FAMILIES",
    "MESSAGE",
    "TIERED",
    "RobustFunctionCache",
    "WouldCompile",
    "compile_notice",
    "kernels_mode",
    "no_compile",
    "probe",
    "ready",
    "warm_up",
]

log = logging.getLogger(__name__)

KERNELS_ENV = "NAPARI_TV_KERNELS"
BACKGROUND_ENV = "NAPARI_TV_BACKGROUND_COMPILE"
MODES = ("auto", "fast", "quick")
#: what a user is told while kernels compile
MESSAGE = "preparing the solvers for this data type (first use only, a few seconds)…"

#: every family of kernels ``warm_up`` compiles: name -> ``"module:function"``, a function of
#: a dtype that runs the family's kernels on tiny arrays of it (in the order ``warm_up`` takes
#: them: a family's shared kernels, e.g. the gap, before the families that use them)
FAMILIES = {
    "gap": "napari_tv.solvers._gap:warm",
    "operators": "napari_tv.operators:warm",
    "exact": "napari_tv.solvers.exact:warm",
    "primal_dual": "napari_tv.solvers.primal_dual:warm",
    "chunked": "napari_tv.chunked:warm",
    "chambolle": "napari_tv.solvers.chambolle:warm",
    "bregman": "napari_tv.solvers.bregman:warm",
    "gradient_descent": "napari_tv.solvers.gradient_descent:warm",
}
#: the families with quick twins, whose readiness :func:`ready` decides
TIERED = ("gap", "primal_dual", "chambolle")
DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------- the cache


class RobustFunctionCache(FunctionCache):
    """Numba's per-function cache that never fails a call.

    A cache file that cannot be read back (truncated, overwritten, written by an incompatible
    build) is removed and the kernel compiled again; a cache that cannot be written (a full
    disk, a read-only directory) is reported once as a warning.  Numba's own behaviour is kept
    otherwise (its atomic writes, its invalidation on a Numba upgrade or a source change).
    """

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a cache miss
            log.warning("napari-tv: discarding an unreadable Numba cache file (%s)", exc)
            self._discard()
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written is no error
            _warn_once(
                f"napari-tv could not write its compiled kernels to {self.cache_path} ({exc}); "
                "they will be compiled again in the next session (set NUMBA_CACHE_DIR to a "
                "writable directory to keep them)"
            )

    def _discard(self) -> None:
        """Remove this function's index (its data files are then unreferenced and reused)."""
        with contextlib.suppress(OSError, AttributeError):
            os.remove(self._cache_file._index_path)


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        warnings.warn(text, RuntimeWarning, stacklevel=3)


def attach_cache(dispatcher):
    """Give a Numba dispatcher (compiled with ``cache=False``) the robust on-disk cache."""
    dispatcher._cache = RobustFunctionCache(dispatcher.py_func)
    return dispatcher


# ------------------------------------------------------------- watching compilations

_local = threading.local()


class WouldCompile(RuntimeError):
    """Raised inside :func:`no_compile` where Numba would have compiled a kernel."""


class _Watcher(_event.Listener):
    """Numba calls this when it starts compiling a function (after a cache miss), in the
    compiling thread: refuse it (``no_compile``) or tell whoever asked (``compile_notice``)."""

    def on_start(self, event):
        if getattr(_local, "no_compile", 0):
            raise WouldCompile(getattr(event.data.get("dispatcher"), "py_func", "a kernel"))
        for notify in tuple(getattr(_local, "notices", ())):
            notify()

    def on_end(self, event):
        pass


_event.register("numba:compile", _Watcher())


@contextlib.contextmanager
def no_compile():
    """In this thread, make any Numba compilation raise :class:`WouldCompile` (cached kernels
    load as usual)."""
    _local.no_compile = getattr(_local, "no_compile", 0) + 1
    try:
        yield
    finally:
        _local.no_compile -= 1


@contextlib.contextmanager
def compile_notice(notify: Callable[[str], object]):
    """Call ``notify(MESSAGE)`` once if this thread starts compiling a kernel in the block.

    Examples
    --------
    >>> with compile_notice(print):
    ...     pass  # nothing compiled, nothing said
    """
    done = []

    def once():
        if not done:
            done.append(True)
            try:
                notify(MESSAGE)
            except Exception:  # noqa: BLE001 - a notice must never break a compilation
                log.debug("compile notice failed", exc_info=True)

    notices = _local.__dict__.setdefault("notices", [])
    notices.append(once)
    try:
        yield
    finally:
        notices.remove(once)


@contextlib.contextmanager
def carried_from(parent: dict):
    """Run the block (in a worker thread) with the thread state ``parent`` captured by
    :func:`thread_state` in the thread that started it: its compile notices, its forced
    kernel mode and its ``no_compile`` depth."""
    saved = dict(_local.__dict__)
    _local.__dict__.update(
        notices=list(parent.get("notices", ())),
        forced=parent.get("forced"),
        no_compile=parent.get("no_compile", 0),
    )
    try:
        yield
    finally:
        _local.__dict__.clear()
        _local.__dict__.update(saved)


def thread_state() -> dict:
    """This thread's compile notices, forced mode and ``no_compile`` depth, for
    :func:`carried_from` in a worker thread."""
    return dict(_local.__dict__)


# ------------------------------------------------------------------------- the tiers


def kernels_mode() -> str:
    """``"auto"``, ``"fast"`` or ``"quick"``: this thread's forced mode, else
    ``NAPARI_TV_KERNELS`` (default ``"auto"``)."""
    forced = getattr(_local, "forced", None)
    if forced is not None:
        return forced
    mode = os.environ.get(KERNELS_ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        _warn_once(f"{KERNELS_ENV} must be one of {', '.join(MODES)}; got {mode!r} (using auto)")
        return "auto"
    return mode


@contextlib.contextmanager
def forced(mode: str):
    """Use ``mode`` (``"fast"`` or ``"quick"``) for the kernels run by this thread in the
    block (tests, the warm-up and the probe)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    old = getattr(_local, "forced", None)
    _local.forced = mode
    try:
        yield
    finally:
        _local.forced = old


def _warm_function(family: str) -> Callable[[np.dtype], object]:
    try:
        module, name = FAMILIES[family].split(":")
    except KeyError:
        raise ValueError(
            f"family must be one of {', '.join(map(repr, FAMILIES))}; got {family!r}"
        ) from None
    return getattr(importlib.import_module(module), name)


def probe(family: str, dtype) -> bool:
    """Whether the fused kernels of ``family`` run on ``dtype`` without compiling (compiled in
    this process, or loaded now from the on-disk cache)."""
    warm = _warm_function(family)
    with forced("fast"), no_compile():
        try:
            warm(np.dtype(dtype))
        except WouldCompile:
            return False
    return True


_lock = threading.Lock()
_ready: set[tuple[str, str]] = set()
_jobs: dict[tuple[str, str], subprocess.Popen | threading.Thread] = {}
_failed: set[tuple[str, str]] = set()


def ready(family: str, dtype) -> bool:
    """Whether a solver should run ``family``'s fused kernels on ``dtype`` now.

    ``"fast"`` mode: always; ``"quick"``: never; ``"auto"``: when they run without compiling
    (:func:`probe`, remembered once true).  When they would compile, ``"auto"`` starts
    compiling them in a background process (once per family and dtype) and answers False:
    the caller takes the quick kernels meanwhile.
    """
    mode = kernels_mode()
    if mode != "auto":
        return mode == "fast"
    key = (family, np.dtype(dtype).name)
    if key in _ready:
        return True
    with _lock:
        job = _jobs.get(key)
        if job is not None and _running(job):
            return False
    if probe(family, dtype):
        _ready.add(key)
        return True
    if job is not None:  # it ran, and the kernels are still not in the cache
        if key not in _failed:
            _failed.add(key)
            log.warning("napari-tv: background compilation of %s (%s) failed", *key)
        return False
    _start_background(key)
    return False


def _running(job) -> bool:
    return job.is_alive() if isinstance(job, threading.Thread) else job.poll() is None


def _start_background(key: tuple[str, str]) -> None:
    if os.environ.get(BACKGROUND_ENV, "1").strip() in ("0", "false", "no", "off"):
        return
    with _lock:
        if key in _jobs:
            return
        env = dict(os.environ, **{KERNELS_ENV: "fast"})
        cmd = _warm_command(f"{key[0]}:{key[1]}")
        try:
            job = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:  # no interpreter to start (a frozen application): a thread instead
            job = threading.Thread(target=_warm_in_thread, args=key, daemon=True)
            job.start()
        _jobs[key] = job
    log.info("napari-tv: compiling %s kernels (%s) in the background", *key)


def _warm_in_thread(family: str, dtype: str) -> None:
    with forced("fast"), contextlib.suppress(Exception):
        _warm_function(family)(np.dtype(dtype))


def background_jobs() -> list[tuple[str, str]]:
    """The ``(family, dtype)`` compilations started in the background and still running."""
    with _lock:
        return [key for key, job in _jobs.items() if _running(job)]


# ------------------------------------------------------------------ compiling ahead


def _lock_path(family: str, dtype: str) -> str:
    where = f"{sys.prefix}|{os.environ.get('NUMBA_CACHE_DIR', '')}"
    tag = hashlib.sha1(where.encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"napari-tv-{tag}-{family}-{dtype}.lock")


@contextlib.contextmanager
def _exclusive(family: str, dtype: str):
    """One process at a time compiles a family for a dtype (the others then load it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: Numba's atomic writes suffice
        yield
        return
    try:
        fh = open(_lock_path(family, dtype), "a")  # noqa: SIM115
    except OSError:
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def warm(family: str, dtype) -> None:
    """Compile (or load) the fused kernels of ``family`` for ``dtype`` in this process."""
    dtype = np.dtype(dtype)
    with _exclusive(family, dtype.name), forced("fast"):
        _warm_function(family)(dtype)


def _specs(families: Iterable[str] | None, dtypes: Iterable[str]) -> list[tuple[str, str]]:
    families = list(FAMILIES) if families is None else list(families)
    for f in families:
        _warm_function(f)  # validates the name
    dtypes = [np.dtype(d).name for d in dtypes]
    return [(f, d) for f in families for d in dtypes]


def warm_up(
    families: Sequence[str] | None = None,
    dtypes: Sequence[str] = DTYPES,
    *,
    jobs: int | None = None,
    progress: Callable[[int, int, str], object] | None = None,
) -> list[tuple[str, str, int]]:
    """Compile every kernel family for every dtype into the on-disk cache, ahead of use.

    Runs :func:`main` with each ``FAMILY:DTYPE`` in up to ``jobs`` processes at once
    (default: the number of CPUs); ``progress(done, total, what)`` is called as each ends.
    Returns ``(family, dtype, exit status)`` per compilation.  Families already in the cache
    only load (a second run takes seconds).
    """
    specs = _specs(families, dtypes)
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    env = dict(os.environ, **{KERNELS_ENV: "fast"})
    pending, running, results = list(specs), {}, []
    total = len(specs)

    def report(what: str) -> None:
        if progress is not None:
            progress(len(results), total, what)

    while pending or running:
        while pending and len(running) < jobs:
            family, dtype = pending.pop(0)
            cmd = _warm_command(f"{family}:{dtype}")
            running[(family, dtype)] = subprocess.Popen(  # noqa: S603
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
            )
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                del running[key]
                results.append((*key, proc.returncode))
                report(f"{key[0]} ({key[1]})")
        if running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                next(iter(running.values())).wait(timeout=0.2)
    return results


def _warm_command(*specs: str) -> list[str]:
    """The command line of a process that compiles ``FAMILY:DTYPE`` specs (:func:`main`)."""
    code = "import sys; from napari_tv._compile import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *specs]


def main(argv: Sequence[str] | None = None) -> int:
    """Compile the families ``FAMILY:DTYPE ...`` (default: all) in this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = [f"{f}:{d}" for f, d in _specs(None, DTYPES)]
    for spec in args:
        family, _, dtype = spec.partition(":")
        warm(family, dtype or "float32")
    return 0

