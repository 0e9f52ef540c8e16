"""Checks shared by the API, the command line and the widgets.

Every message names the parameter and the offending value, e.g.
``ValueError("beta must be >= 0, got -1.0")``.

Array conventions (one place, used everywhere):

* bool, 8- and 16-bit integer arrays (what cameras and microscopes write) and float16 are
  converted to float32, which holds them exactly; wider integers to float64; float32 and
  float64 are kept (computations keep the dtype, energies are accumulated in float64);
* complex, object and string arrays raise ``TypeError``;
* 0-d arrays, arrays with more dimensions than allowed, empty arrays and arrays holding NaN or
  ±inf raise ``ValueError``;
* anything NumPy can turn into an array is accepted, and non-contiguous views (copied to C
  order).  Dask arrays stay lazy where the function has a blockwise form (``denoise_tv``:
  :mod:`napari_tv.chunked`; the operators and level sets: per block with their halo) and are
  computed elsewhere.  The caller's array is never written to.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence

import numpy as np


def is_dask_array(x) -> bool:
    """Whether ``x`` is a :class:`dask.array.Array` (or a subclass), told without importing
    dask: ``import napari_tv`` must not import it."""
    return any(
        cls.__name__ == "Array" and cls.__module__.startswith("dask.array")
        for cls in type(x).__mro__
    )


def float_dtype(dtype) -> np.dtype:
    """The float dtype an array of ``dtype`` is computed (and returned) in: float32 for bool,
    8/16-bit integers, float16 and float32; float64 for wider integers, float64 and wider."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize <= 2):
        return np.dtype(np.float32)
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_float_array(
    image,
    name: str = "image",
    *,
    ndims: Sequence[int] = (1, 2, 3),
    finite: bool = True,
) -> np.ndarray:
    """Return ``image`` as a C-contiguous float32/float64 array, checked.

    The result may be the caller's own array when nothing had to change; treat it as
    read-only and copy before writing.
    """
    arr = np.asarray(image)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real-valued, got complex dtype {arr.dtype}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        allowed = ", ".join(str(d) for d in ndims)
        raise ValueError(
            f"{name} must have {allowed} dimensions, got {arr.ndim} (shape {arr.shape})"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    work = float_dtype(arr.dtype)
    if arr.dtype != work:
        arr = arr.astype(work)
    arr = np.ascontiguousarray(arr)
    if finite and not np.isfinite(arr).all():
        n_bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite, got {n_bad} NaN or inf value(s)")
    return arr


def check_choice(name: str, value, choices: Iterable[str]) -> str:
    """``value`` must be one of ``choices`` (strings, case-sensitive)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_real(
    name: str,
    value,
    *,
    minimum: float | None = None,
    strict: bool = False,
) -> float:
    """A finite real number, optionally ``>= minimum`` (``> minimum`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None:
        if strict and not value > minimum:
            raise ValueError(f"{name} must be > {minimum:g}, got {value!r}")
        if not strict and not value >= minimum:
            raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return value


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """An integer (not bool), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


#: the largest ratio of two voxel sizes :func:`check_spacing` accepts (microscopes stay below
#: ~100; beyond ~1e6 the edge weights of the graph TV are no longer computable)
MAX_SPACING_RATIO = 1e4


def relative_spacing(steps: Sequence[float]) -> tuple[float, ...]:
    """``steps`` divided by the smallest: the spacing's shape without its length unit.

    Only the ratios of a voxel size matter to napari-tv: differences along axis ``a`` are
    divided by ``spacing[a] / min(spacing)``, so that a voxel size in µm, nm or pixels (and an
    isotropic one, whatever its value) gives the same result, and ``beta`` keeps its meaning:
    intensity units per pixel of the finest axis.
    """
    smallest = min(steps)
    return tuple(1.0 if s == smallest else s / smallest for s in steps)


def check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """Voxel spacing, relative (see :func:`relative_spacing`): None (all 1), a positive
    scalar (all 1), or one positive step per axis."""
    if spacing is None:
        return (1.0,) * ndim
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        spacing = (spacing,) * ndim
    try:
        steps = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(
            f"spacing must be None, a number or a sequence of {ndim} numbers, got {spacing!r}"
        ) from None
    if len(steps) != ndim:
        raise ValueError(f"spacing must have {ndim} entries (one per axis), got {spacing!r}")
    if not all(np.isfinite(s) and s > 0 for s in steps):
        raise ValueError(f"spacing must be finite and > 0 on every axis, got {spacing!r}")
    ratio = max(steps) / min(steps)
    if not ratio <= MAX_SPACING_RATIO:
        raise ValueError(
            f"spacing must not vary by more than a factor {MAX_SPACING_RATIO:g} between axes "
            f"(the coarse axis would not couple the voxels at all), got {spacing!r} (ratio "
            f"{ratio:.3g}); to denoise slices on their own, pass the slice axis as "
            "channel_axis"
        )
    return relative_spacing(steps)
