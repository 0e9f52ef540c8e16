"""Zeroed storage placed on memory pages, for the hot loops (Chambolle's fused sweep).

``zeroed_pages(nbytes)``  zero bytes starting on a page boundary (huge pages from 2 MiB on)
``page_arrays(sizes, dtype, last_offset=0, what="storage")``  zeroed arrays of the given
                          lengths in one allocation, each on a 4 KiB boundary (the last
                          ``last_offset`` bytes after one)
"""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

__all__ = ["PAGE", "HUGE_PAGE", "page_arrays", "zeroed_pages"]

#: bytes per small page, and per huge page (Linux, x86-64)
PAGE, HUGE_PAGE = 1 << 12, 1 << 21


def zeroed_pages(nbytes: int, what: str = "storage") -> np.ndarray:
    """``nbytes`` zero bytes (uint8) starting on a page boundary; from 2 MiB on, on a 2 MiB
    boundary in whole huge pages (Linux: advised).  Every solve allocates its storage afresh,
    and a 4 KiB page fault costs about 4 us here: at 512^2 that was 5-6 ms of a 16 ms
    Chambolle solve whenever the C library had returned the memory to the OS in between (e.g.
    after scikit-image ran).  Smaller storage stays on small pages (a huge page would be
    mostly waste, and a result's dual keeps its storage alive).  ``what`` names the storage in
    the MemoryError of a mapping the OS refuses."""
    if nbytes >= HUGE_PAGE and hasattr(mmap, "MADV_HUGEPAGE"):
        size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE  # whole huge pages (a partial one: small)
        # private (shared anonymous memory is shmem, which gets no huge pages), anonymous:
        # lazily zeroed, page aligned
        try:
            region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError as err:  # as NumPy would say it
            raise MemoryError(f"cannot map {size + HUGE_PAGE} bytes for {what}") from err
        buf = np.frombuffer(region, np.uint8)
        start = -buf.ctypes.data % HUGE_PAGE
        with contextlib.suppress(OSError):
            region.madvise(mmap.MADV_HUGEPAGE, start, size)
    else:
        buf = np.zeros(nbytes + PAGE, np.uint8)
        start = -buf.ctypes.data % PAGE
    return buf[start : start + nbytes]


def page_arrays(sizes, dtype, last_offset: int = 0, what: str = "storage") -> list[np.ndarray]:
    """Zeroed 1-D arrays of ``dtype`` and the given lengths, in one allocation
    (``zeroed_pages``), each starting on a 4 KiB boundary, and the last ``last_offset`` bytes
    after one.  A view of any of them keeps the whole allocation alive."""
    itemsize = np.dtype(dtype).itemsize
    starts, end = [], 0
    for i, n in enumerate(sizes):
        start = -end % PAGE + (last_offset if i == len(sizes) - 1 else 0)
        starts.append(end + start)
        end += start + n * itemsize
    buf = zeroed_pages(end, what)
    return [buf[a : a + n * itemsize].view(dtype) for a, n in zip(starts, sizes, strict=True)]
