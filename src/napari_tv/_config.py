"""Numba compilation flags, in one place.

Every kernel in the package is compiled with ``cache=True`` (so a second start is fast) and
``nogil=True`` (so napari worker threads and the second core are not serialised on the GIL).
Kernels that loop over independent lines or voxels are additionally ``parallel=True``; they
use Numba's threading layer: the OpenMP runtime (``libgomp1``) or TBB, which may be called
from several threads at once (napari's workers).  Numba's own fallback where neither is
installed (some macOS and Windows installs), ``workqueue``, aborts the process when two threads
launch parallel regions at once; under it (:data:`SERIALISE`) every kernel called from Python
holds one process-wide lock while it runs, so concurrent solves take turns instead.
"""

from __future__ import annotations

import os
import threading
from functools import partial

# Idle OpenMP threads sleep instead of spinning.  napari-tv runs next to a GUI, a viewer's
# worker threads and often other processes; with the default (active) policy a parallel kernel
# on an oversubscribed machine waits for spinning threads that the OS has descheduled: a 256²
# kernel took 15–25 ms instead of 0.04 ms.  Must be set before libgomp is loaded (the first
# parallel kernel); setdefault keeps a user's own choice.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ... after a short spin: a parallel region that starts within ~1000 spins of the previous one
# (the next Chambolle sweep) finds its threads awake.  Measured per 512² Chambolle sweep, two
# threads: 0.11–0.13 ms (quiet) and 0.22 ms (other core busy), against 0.18–0.21 / 0.19–0.31 ms
# with no spin; 10⁵ spins or ACTIVE are 5–40x slower when the other core is busy.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import numba  # noqa: E402
from numba import njit  # noqa: E402
from numba.extending import typeof_impl  # noqa: E402

from napari_tv._compile import attach_cache  # noqa: E402

#: flags for serial kernels (``cache``: on disk, through ``_compile.RobustFunctionCache``)
NJIT = {"cache": True, "nogil": True, "fastmath": False}
#: flags for kernels with ``prange`` loops
NJIT_PARALLEL = {**NJIT, "parallel": True}


def _threadsafe_layer() -> bool:
    """Whether Numba's threading layer may be entered from several threads at once: launches
    its threads (what the first parallel kernel would do) and asks which layer it chose."""
    from numba.np.ufunc import parallel as numba_parallel

    try:
        numba_parallel._launch_threads()
        return numba.threading_layer() != "workqueue"
    except Exception:  # noqa: BLE001 - no layer at all: the first parallel kernel says so
        return True


#: True under Numba's ``workqueue`` threading layer: kernels are then called under
#: :data:`KERNEL_LOCK` (a parallel region launched from two threads at once aborts the process)
SERIALISE = not _threadsafe_layer()
#: the process-wide lock of :data:`SERIALISE` (re-entrant: a kernel's Python caller may be
#: another kernel's callback)
KERNEL_LOCK = threading.RLock()


class _Serialised:
    """A kernel that holds :data:`KERNEL_LOCK` while it runs when called from Python.  Inside
    other kernels Numba sees the plain dispatcher (``typeof`` below), so nothing changes
    there; every other attribute is the dispatcher's."""

    __slots__ = ("dispatcher",)

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def __call__(self, *args, **kwargs):
        with KERNEL_LOCK:
            return self.dispatcher(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)


@typeof_impl.register(_Serialised)
def _typeof_serialised(value, context):
    return typeof_impl(value.dispatcher, context)


def jit(fn=None, *, parallel: bool = False, error_model: str = "python", fastmath=False):
    """``numba.njit`` with the project's flags.

    Parameters
    ----------
    parallel : bool
        For kernels with ``prange`` loops.
    error_model : {"python", "numpy"}
        ``"numpy"`` makes a division by zero give inf/nan instead of raising; that removes the
        check which keeps LLVM from vectorising a loop (the iterative solvers' kernels, whose
        divisors are >= 1, measured 4-5x faster).
    fastmath : False or set of str
        LLVM fast-math flags, e.g. ``{"reassoc"}`` so that a floating-point sum may be
        reordered and vectorised.  Never ``nnan``/``ninf``: the kernels must see NaN and inf.
    """
    flags = {**(NJIT_PARALLEL if parallel else NJIT), "error_model": error_model}
    if fastmath:
        flags["fastmath"] = set(fastmath)
    cache = flags.pop("cache")

    def wrap(f):
        dispatcher = njit(**flags)(f)
        if cache:
            dispatcher = attach_cache(dispatcher)
        return _Serialised(dispatcher) if SERIALISE else dispatcher

    return wrap(fn) if fn is not None else wrap


#: ``jit`` with ``error_model="numpy"``: divisions are unchecked (a division by zero gives inf or
#: nan instead of raising), which lets LLVM vectorise the loops of the iterative solvers'
#: kernels (``solvers/_stencils.py`` and the kernels built on it)
jit_unchecked = partial(jit, error_model="numpy")


#: for per-voxel helpers called only from other kernels: inlined at Numba-IR level, where
#: passing a dozen arrays per call would cost more than the work (the max-flow: 1.5x faster)
inline = njit(inline="always", nogil=True)
