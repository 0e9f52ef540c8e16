"""The memory guard: what a call will need, checked against what the machine has, before
anything large is allocated.

:data:`WORDS_PER_VOXEL` is the peak working memory of each method beyond its input, in
words of the working dtype (4 bytes for float32, 8 for float64), measured on 96³ volumes
(peak resident set sampled every 2 ms, ``benchmarks``-style, 2026-12-04) and rounded up:

=================  ====  ====  =======  ==========================================
method             L2    L1    Poisson  what it holds
=================  ====  ====  =======  ==========================================
primal_dual        7     7     10       u, ū, the dual (one per axis), scratch
chambolle          7     –     –        the dual (one per axis), its update, u
bregman            21    –     –        d, b (one per axis each), Gauss–Seidel terms
gradient_descent   16    16    16       u, momentum, fluxes (one per axis), scratch
exact              64 + 16 K bytes per voxel (any dtype; K edges per voxel: 2 in 2-D, 3 in 3-D
                   with connectivity 1, 4/9/13 with more) + 32 bytes per grey level
=================  ====  ====  =======  ==========================================

plus one word per voxel for the result and one for a converted input (integers, float16).
A call whose estimate exceeds 90 % of the memory available (``MemAvailable``, or the cgroup's limit
when lower) raises :class:`MemoryError` saying how much it needs and what to do instead.
``NAPARI_TV_MEMORY_LIMIT`` sets the budget in bytes (``0``: no check).
"""

from __future__ import annotations

import math
import os

from napari_tv._io import human_bytes

__all__ = ["WORDS_PER_VOXEL", "EXACT_BYTES", "available_bytes", "estimate_bytes", "require"]

#: peak working words per voxel, beyond the input (see the module docstring)
WORDS_PER_VOXEL: dict[str, dict[str, int]] = {
    "primal_dual": {"l2": 7, "l1": 7, "poisson": 10},
    "chambolle": {"l2": 7},
    "bregman": {"l2": 21},
    "gradient_descent": {"l2": 16, "l1": 16, "poisson": 16},
}
#: the exact solver: bytes per voxel, per voxel and edge of its neighbourhood (two float64
#: residual arcs) and per level; measured 100 B per voxel at 160³ uint8 with connectivity 1
#: (K = 3: 112 estimated; docs/benchmarks.md, issue 18)
EXACT_BYTES = {"voxel": 64, "edge": 16, "level": 32}


def edges_per_voxel(ndim: int, connectivity: int) -> int:
    """K, the neighbours ``s + o`` of the exact solver's graph per voxel: half the offsets in
    {-1, 0, 1}^ndim with 1 to ``connectivity`` non-zero entries."""
    return sum(math.comb(ndim, k) * 2**k for k in range(1, min(connectivity, ndim) + 1)) // 2


#: the share of the available memory one call may plan to use (the rest: the viewer, other
#: layers, the estimate's error)
HEADROOM = 0.9


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """Bytes this process may still allocate: ``NAPARI_TV_MEMORY_LIMIT`` if set (``0``: None),
    else Linux's ``MemAvailable`` capped by the cgroup's remaining limit, else the free
    physical pages; None where none of these can be read."""
    env = os.environ.get("NAPARI_TV_MEMORY_LIMIT", "").strip()
    if env:
        try:
            limit = int(float(env))
        except ValueError:
            raise ValueError(
                f"NAPARI_TV_MEMORY_LIMIT must be a number of bytes (0: no check), got {env!r}"
            ) from None
        return limit if limit > 0 else None
    found: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # fmt: skip
    ):
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 1 << 60:
            found.append(max(limit - usage, 0))
            break
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def estimate_bytes(
    method: str,
    fidelity: str,
    shape,
    itemsize: int,
    *,
    n_levels: int = 0,
    channels: int = 1,
    converted: bool = False,
    connectivity: int = 1,
) -> int:
    """Peak bytes beyond the input for ``denoise_tv`` on an image of ``shape`` (one
    channel of ``channels``) in a working dtype of ``itemsize`` bytes (``connectivity``: the
    exact solver's neighbourhood)."""
    voxels = math.prod(int(n) for n in shape)
    if method == "exact":
        per_voxel = EXACT_BYTES["voxel"] + EXACT_BYTES["edge"] * edges_per_voxel(
            len(shape), connectivity
        )
        work = voxels * per_voxel + n_levels * EXACT_BYTES["level"]
    else:
        work = voxels * itemsize * WORDS_PER_VOXEL[method][fidelity]
    total = voxels * channels
    return work + total * itemsize * (1 + int(converted))


def require(needed: int, what: str, advice: str) -> None:
    """MemoryError when ``needed`` bytes exceed :func:`available_bytes` (no check when it is
    unknown)."""
    available = available_bytes()
    if available is not None and needed > HEADROOM * available:
        raise MemoryError(
            f"{what} needs about {human_bytes(needed)} of memory, more than "
            f"{HEADROOM:.0%} of the {human_bytes(available)} available; {advice} "
            "(napari_tv._memory documents the estimate; NAPARI_TV_MEMORY_LIMIT sets the budget)"
        )
