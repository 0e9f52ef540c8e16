"""Numba compilation flags, in one place.

Every kernel in the package is compiled with ``cache=True`` (so a second start is fast) and
``nogil=True`` (so napari worker threads and the second core are not serialised on the GIL).
Kernels that loop over independent lines or voxels are additionally ``parallel=True``; they
use Numba's threading layer, which the OpenMP runtime (``libgomp1``) or TBB provide and the
built-in ``workqueue`` layer falls back to.
"""

from __future__ import annotations

from numba import njit

#: flags for serial kernels
NJIT = {"cache": True, "nogil": True, "fastmath": False}
#: flags for kernels with ``prange`` loops
NJIT_PARALLEL = {**NJIT, "parallel": True}


def jit(fn=None, *, parallel: bool = False):
    """``numba.njit`` with the project's flags (``parallel=True`` for prange kernels)."""
    flags = NJIT_PARALLEL if parallel else NJIT

    def wrap(f):
        return njit(**flags)(f)

    return wrap(fn) if fn is not None else wrap
