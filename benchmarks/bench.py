"""All napari-tv benchmarks in one run: ratios against scikit-image, PyMaxflow and NumPy.

Usage::

    .venv/bin/python benchmarks/bench.py            # everything
    .venv/bin/python benchmarks/bench.py operators exact   # some sections

Each section is a module ``benchmarks/bench_<name>.py`` with a ``main()`` that prints a
Markdown table measured side by side (ours and the peer in the same process, same data,
alternating), so the ratios hold even when the machine is busy.  The tables we measured are
in ``docs/benchmarks.md``.  Speed is never asserted in the test suite.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time

# these tables measure the fused kernels: compiled in the foreground if not cached, never the
# quick ones that serve while they compile (``napari_tv._compile``)
os.environ.setdefault("NAPARI_TV_KERNELS", "fast")

SECTIONS = ["operators", "iterative", "exact", "sweep"]


def machine() -> str:
    import numba
    import numpy as np

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}, "
        f"threading layer {numba.config.THREADING_LAYER}"
    )


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or SECTIONS
    sys.path.insert(0, os.path.dirname(__file__))
    print(f"# napari-tv benchmarks — {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"Machine: {machine()}")
    print()
    for name in names:
        try:
            module = importlib.import_module(f"bench_{name}")
        except ImportError as err:
            print(f"## {name}: skipped ({err})\n")
            continue
        t0 = time.perf_counter()
        module.main()
        print(f"_{name}: {time.perf_counter() - t0:.0f} s_\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
