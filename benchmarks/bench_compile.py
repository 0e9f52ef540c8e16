"""The first result: how long a new user waits, cold (empty Numba cache) and warm.

Every scenario runs in a **fresh Python process** with its own ``NUMBA_CACHE_DIR``:

* ``cold``: an empty cache, as after a new install, a Numba upgrade or for a new dtype;
  napari-tv's automatic mode (``NAPARI_TV_KERNELS=auto``): the quick kernels answer while the
  fused ones compile in a background process (which the scenario stops when it has its
  answer, so that scenarios do not share a core with it);
* ``warm``: a cache filled by ``napari-tv warmup`` (what ``scripts/bootstrap`` runs): the
  fused kernels load from it;
* ``fused, cold``: the old behaviour for comparison, ``NAPARI_TV_KERNELS=fast`` on an empty
  cache (the fused kernels compiled in the foreground).

Columns are seconds from the start of the process: ``import`` (``import napari_tv``),
``first result`` (import + the call), and the call alone.  The last table is the compile time
of each kernel family (``napari-tv warmup --jobs 1``, one family at a time) and the wall time
of the whole warm-up with a process per core.  With ``--gui`` (needs a display: ``xvfb-run
-a``) the default action of each widget is timed in a real viewer on the 3-D sample, from
the click to the output layer.

Run: ``python benchmarks/bench_compile.py [--gui] [--skip-fused]``.  Speed is never asserted
in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

SCENARIOS = {
    "denoise_tv 3-D float32 (default method)": (
        "from napari_tv import microscopy_3d, SAMPLE_3D_SCALE, denoise_tv\n"
        "v = microscopy_3d()[0]",
        "u, info = denoise_tv(v, 1.0, spacing=SAMPLE_3D_SCALE, return_info=True)",
    ),
    "denoise_tv 2-D float32 (default method)": (
        "from napari_tv import microscopy_2d, denoise_tv\nv = microscopy_2d()[0]",
        "u, info = denoise_tv(v, 2.0, return_info=True)",
    ),
    "denoise_tv 3-D float64 (default method)": (
        "from napari_tv import microscopy_3d, SAMPLE_3D_SCALE, denoise_tv\n"
        "v = microscopy_3d()[0].astype('float64')",
        "u, info = denoise_tv(v, 1.0, spacing=SAMPLE_3D_SCALE, return_info=True)",
    ),
    "denoise_tv 2-D uint8 camera (default method)": (
        "import numpy as np\nfrom skimage import data\nfrom napari_tv import denoise_tv\n"
        "v = data.camera()",
        "u, info = denoise_tv(v, 20.0, return_info=True)",
    ),
    "chambolle 3-D float32": (
        "from napari_tv import microscopy_3d, SAMPLE_3D_SCALE, denoise_tv\n"
        "v = microscopy_3d()[0]",
        "u, info = denoise_tv(v, 1.0, method='chambolle', spacing=SAMPLE_3D_SCALE,"
        " return_info=True)",
    ),
    "chambolle 2-D float64": (
        "from napari_tv import microscopy_2d, denoise_tv\nv = microscopy_2d()[0].astype(float)",
        "u, info = denoise_tv(v, 2.0, method='chambolle', return_info=True)",
    ),
    "exact 2-D float32": (
        "from napari_tv import microscopy_2d, denoise_tv\nv = microscopy_2d()[0]",
        "u, info = denoise_tv(v, 2.0, method='exact', return_info=True)",
    ),
    "exact 3-D float32": (
        "from napari_tv import microscopy_3d, SAMPLE_3D_SCALE, denoise_tv\n"
        "v = microscopy_3d()[0]",
        "u, info = denoise_tv(v, 1.0, method='exact', spacing=SAMPLE_3D_SCALE,"
        " return_info=True)",
    ),
    "tv_gradient 3-D float32": (
        "from napari_tv import microscopy_3d, SAMPLE_3D_SCALE, tv_gradient\n"
        "v = microscopy_3d()[0]",
        "g = tv_gradient(v, spacing=SAMPLE_3D_SCALE); info = None",
    ),
    "tv_gradient 2-D float64": (
        "from napari_tv import microscopy_2d, tv_gradient\nv = microscopy_2d()[0].astype(float)",
        "g = tv_gradient(v); info = None",
    ),
}

TEMPLATE = """
import time
t0 = time.perf_counter()
import napari_tv
t_import = time.perf_counter() - t0
{setup}
t1 = time.perf_counter()
{call}
t_call = time.perf_counter() - t1
import json
from napari_tv import _compile
for job in list(_compile._jobs.values()):  # the benchmark's next scenario gets both cores
    if hasattr(job, "kill"):
        job.kill()
print(json.dumps({{"import": t_import, "call": t_call, "total": time.perf_counter() - t0,
                  "kernels": (info.extra.get("kernels", "-") if info is not None else "-"),
                  "converged": (bool(info.converged) if info is not None else None),
                  "n_iter": (int(info.n_iter) if info is not None else None)}}))
"""


def run_scenario(setup: str, call: str, cache: str, mode: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, NAPARI_TV_KERNELS=mode)
    code = TEMPLATE.format(setup=setup, call=call)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def warmup(cache: str, jobs: int, families=None) -> tuple[float, list]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    cmd = [sys.executable, "-m", "napari_tv.cli", "warmup", "-q", "--jobs", str(jobs)]
    for f in families or ():
        cmd += ["--family", f]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, timeout=3600)
    return time.perf_counter() - t0, []


def api_table(skip_fused: bool) -> None:
    warm_cache = tempfile.mkdtemp(prefix="nb-warm-")
    wall, _ = warmup(warm_cache, os.cpu_count() or 1)
    print("## First result in a fresh process (seconds from the process start)\n")
    print(f"`napari-tv warmup` (all families, float32 and float64, {os.cpu_count()} processes)"
          f" took {wall:.0f} s to fill the warm cache.\n")
    head = "| call | cold: first result | cold: call | kernels | warm: first result | warm: call"
    head += " |" if skip_fused else " | fused, cold: first result |"
    print(head)
    print("|---|---:|---:|---|---:|---:|" + ("" if skip_fused else "---:|"))
    worst_cold = worst_warm = 0.0
    for name, (setup, call) in SCENARIOS.items():
        cold_cache = tempfile.mkdtemp(prefix="nb-cold-")
        try:
            cold = run_scenario(setup, call, cold_cache, "auto")
        finally:
            shutil.rmtree(cold_cache, ignore_errors=True)
        warm = run_scenario(setup, call, warm_cache, "auto")
        worst_cold, worst_warm = max(worst_cold, cold["total"]), max(worst_warm, warm["call"])
        row = (f"| {name} | {cold['total']:.2f} | {cold['call']:.2f} | {cold['kernels']} "
               f"| {warm['total']:.2f} | {warm['call']:.2f} |")
        if not skip_fused:
            fused_cache = tempfile.mkdtemp(prefix="nb-fused-")
            try:
                fused = run_scenario(setup, call, fused_cache, "fast")
            finally:
                shutil.rmtree(fused_cache, ignore_errors=True)
            row += f" {fused['total']:.1f} |"
        print(row, flush=True)
    print(f"\nWorst cold first result: {worst_cold:.2f} s; worst warm call: {worst_warm:.2f} s.\n")
    shutil.rmtree(warm_cache, ignore_errors=True)


def family_table() -> None:
    from napari_tv._compile import DTYPES, FAMILIES

    print("## Compile time per kernel family (one process at a time, empty cache)\n")
    print("| family | " + " | ".join(DTYPES) + " |")
    print("|---|" + "---:|" * len(DTYPES))
    total = 0.0
    cache = tempfile.mkdtemp(prefix="nb-families-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, NAPARI_TV_KERNELS="fast")
    for family in FAMILIES:
        cells = []
        for dtype in DTYPES:
            code = (f"from napari_tv._compile import warm\nimport time\nt=time.perf_counter()\n"
                    f"warm({family!r}, {dtype!r})\nprint(time.perf_counter()-t)")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 env=env, check=True, timeout=1800)
            seconds = float(out.stdout.strip().splitlines()[-1])
            total += seconds
            cells.append(f"{seconds:.1f}")
        print(f"| {family} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nSum: {total:.0f} s of compilation (a family shares kernels with the ones above it, "
          "which it then loads from the cache).\n")
    shutil.rmtree(cache, ignore_errors=True)


GUI = """
import json, time
t0 = time.perf_counter()
from qtpy.QtCore import QEventLoop, QTimer
from napari_tv._widgets._launch import open_viewer, docked
viewer = open_viewer(show=True, run=False)        # the 3-D sample, widgets docked
widgets = docked(viewer)
t_open = time.perf_counter() - t0


def until(signal, timeout_ms=600_000):
    # run the Qt event loop, as napari does, until ``signal`` fires
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    signal.disconnect(loop.quit)


times = {"open": t_open}
for title in ("TV denoise", "TV gradient", "Level sets"):
    w = widgets[title]
    t = time.perf_counter()
    w.run()
    until(w.runner.done)
    times[title] = time.perf_counter() - t
sweep = widgets["β sweep"]
t = time.perf_counter()
sweep.request()
until(sweep.result_ready)
times["β sweep (live, current slice)"] = time.perf_counter() - t
from napari_tv import _compile
for job in list(_compile._jobs.values()):
    if hasattr(job, "kill"):
        job.kill()
print(json.dumps(times))
"""


def gui_table() -> None:
    print("## Widgets: click to result on the 3-D sample (fresh process, seconds)\n")
    warm_cache = tempfile.mkdtemp(prefix="nb-guiwarm-")
    warmup(warm_cache, os.cpu_count() or 1)
    rows = {}
    for label, cache in (("cold", tempfile.mkdtemp(prefix="nb-guicold-")), ("warm", warm_cache)):
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NAPARI_TV_KERNELS="auto")
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(GUI)], capture_output=True,
                              text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        rows[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        shutil.rmtree(cache, ignore_errors=True)
    print("| action | cold | warm |")
    print("|---|---:|---:|")
    for key in rows["cold"]:
        print(f"| {key} | {rows['cold'][key]:.2f} | {rows['warm'][key]:.2f} |")
    print()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gui", action="store_true", help="also time the widgets (display)")
    parser.add_argument("--skip-fused", action="store_true", help="no fused-cold column")
    parser.add_argument("--skip-families", action="store_true", help="no per-family table")
    args = parser.parse_args(argv)
    api_table(args.skip_fused)
    if not args.skip_families:
        family_table()
    if args.gui:
        gui_table()


if __name__ == "__main__":
    main()
