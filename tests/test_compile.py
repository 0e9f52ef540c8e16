"""The two tiers of kernels, the choice between them, compiling ahead and the on-disk cache.

In-process tests compare the quick kernels (``solvers/_quick.py``) with the fused ones they
stand in for.  What happens in a *new* process (an empty cache, a corrupt one, a read-only
install, two processes compiling at once, the background compilation) is tested in
subprocesses with their own ``NUMBA_CACHE_DIR``: this process's kernels are compiled already.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numba
import numpy as np
import pytest

from napari_tv import _compile, _config, denoise_tv, microscopy_2d, microscopy_3d
from napari_tv._sample_data import SAMPLE_3D_SCALE
from napari_tv.solvers import _quick, _stencils
from napari_tv.solvers._stencils import CHAMBOLLE, CLIP, PROJECT, as_3d, as_4d, inv_steps

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------ quick == fused


def _field(rng, shape, dtype):
    f = rng.normal(size=shape).astype(dtype)
    p = rng.uniform(-1, 1, size=(len(shape),) + shape).astype(dtype)
    return f, p


@pytest.mark.parametrize("shape", [(9,), (6, 7), (1, 5), (4, 5, 3), (3, 1, 4)], ids=str)
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_quick_iteration_kernels_match_the_fused_ones(rng, shape, periodic, dtype):
    f, p = _field(rng, shape, dtype)
    ih = inv_steps(tuple(rng.uniform(0.5, 2.0, len(shape))), len(shape))
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for mode in (CHAMBOLLE, CLIP, PROJECT):
        fused, quick = p.copy(), p.copy()
        _stencils.dual_ascent_step(as_4d(fused), as_3d(f), ih, periodic, 0.3, mode)
        _quick.dual_step(as_4d(quick), as_3d(f), ih, periodic, 0.3, mode)
        np.testing.assert_allclose(quick, fused, rtol=rtol, atol=rtol)
    w_fused, w_quick = np.empty_like(f), np.empty_like(f)
    _stencils.rescaled_divergence(as_4d(p), as_3d(f), as_3d(w_fused), ih, periodic, 0.7)
    _quick.rescaled_divergence(as_4d(p), as_3d(f), as_3d(w_quick), ih, periodic, 0.7)
    np.testing.assert_allclose(w_quick, w_fused, rtol=rtol, atol=rtol)


def _solve_both(image, beta, **kw):
    out = {}
    for mode in ("fast", "quick"):
        with _compile.forced(mode):
            out[mode] = denoise_tv(image, beta, return_info=True, **kw)[1]
    return out["fast"], out["quick"]


@pytest.mark.parametrize(
    ("method", "fidelity", "tv", "boundary"),
    [
        ("primal_dual", "l2", "isotropic", "neumann"),
        ("primal_dual", "l1", "anisotropic", "periodic"),
        ("primal_dual", "poisson", "isotropic", "neumann"),
        ("chambolle", "l2", "isotropic", "periodic"),
        ("chambolle", "l2", "anisotropic", "neumann"),
    ],
)
@pytest.mark.parametrize("shape", [(15,), (24, 20), (5, 12, 10)], ids=str)
def test_quick_and_fused_solves_agree(rng, method, fidelity, tv, boundary, shape):
    """The same iterations: the same iteration count, iterates equal to rounding."""
    v = np.abs(rng.normal(size=shape)) + (np.indices(shape).sum(axis=0) % 7 > 3)
    beta = 0.8 if fidelity == "l1" else 0.3  # L1 below 1/(2d) returns v without iterating
    fast, quick = _solve_both(
        v, beta, method=method, fidelity=fidelity, tv=tv, boundary=boundary, tol=1e-6,
        max_num_iter=20000,
    )
    assert fast.extra["kernels"] == "fused" and quick.extra["kernels"] == "quick"
    assert fast.converged and quick.converged
    assert abs(fast.n_iter - quick.n_iter) <= 10
    np.testing.assert_allclose(quick.u, fast.u, atol=1e-5 * np.ptp(v))
    assert quick.energy == pytest.approx(fast.energy, rel=2e-6)


@pytest.mark.parametrize("method", ["primal_dual", "chambolle"])
def test_quick_tier_on_the_samples_reaches_the_same_energy(method):
    for image, spacing in ((microscopy_2d()[0], None), (microscopy_3d()[0], SAMPLE_3D_SCALE)):
        fast, quick = _solve_both(image, 1.0, method=method, spacing=spacing)
        assert fast.converged and quick.converged
        # both certify a gap below 1e-4: their energies are within 2e-4 of each other
        assert quick.energy == pytest.approx(fast.energy, rel=2e-4)
        assert np.abs(quick.u - fast.u).max() < 2e-2 * np.ptp(image)


# ------------------------------------------------------------- choosing the tier


def test_no_compile_refuses_only_a_compilation():
    @numba.njit  # not cached on disk: compiled by this test
    def twice(x):
        return 2 * x

    with _compile.no_compile(), pytest.raises(_compile.WouldCompile):
        twice(1.5)
    assert twice(1.5) == 3.0
    with _compile.no_compile():
        assert twice(2.5) == 5.0  # compiled: runs
        with pytest.raises(_compile.WouldCompile):
            twice(np.int8(3))  # a new signature


def test_compile_notice_fires_once_and_only_when_compiling():
    @numba.njit
    def plus(x):
        return x + 1

    said = []
    with _compile.compile_notice(said.append):
        plus(1.0)
        plus(np.float32(1.0))
    assert said == [_compile.MESSAGE]
    with _compile.compile_notice(said.append):
        plus(2.0)
    assert len(said) == 1


def test_modes(monkeypatch):
    monkeypatch.setenv("NAPARI_TV_KERNELS", "quick")
    assert not _compile.ready("gap", np.float64)
    monkeypatch.setenv("NAPARI_TV_KERNELS", "fast")
    assert _compile.ready("gap", np.float64)
    with _compile.forced("quick"):
        assert _compile.kernels_mode() == "quick"
    monkeypatch.setenv("NAPARI_TV_KERNELS", "turbo")
    with pytest.warns(RuntimeWarning, match="NAPARI_TV_KERNELS"):
        assert _compile.kernels_mode() == "auto"
    with pytest.raises(ValueError, match="family must be one of"):
        _compile.probe("nonsense", np.float32)


def test_probe_finds_the_fused_kernels_of_this_process():
    _compile.warm("gap", np.float64)
    assert _compile.probe("gap", np.float64)


# ------------------------------------------------------- new processes, the cache


def _run(code: str, cache: Path | None, *, env: dict | None = None, timeout: float = 300):
    """Run ``code`` in a fresh interpreter with its own Numba cache; returns its JSON line."""
    full = dict(os.environ)
    full.pop("NAPARI_TV_KERNELS", None)
    full["NAPARI_TV_BACKGROUND_COMPILE"] = "0"
    if cache is not None:
        full["NUMBA_CACHE_DIR"] = str(cache)
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FIRST_CALL = """
    import json, time
    import numpy as np
    from napari_tv import _compile, denoise_tv, microscopy_3d, SAMPLE_3D_SCALE
    said = []
    v = microscopy_3d()[0][:8]
    t = time.perf_counter()
    with _compile.compile_notice(said.append):
        u, info = denoise_tv(v, 1.0, spacing=SAMPLE_3D_SCALE, return_info=True)
    print(json.dumps({"kernels": info.extra["kernels"], "converged": info.converged,
                      "said": said, "seconds": time.perf_counter() - t,
                      "energy": info.energy}))
"""


def test_a_new_process_with_an_empty_cache_answers_on_the_quick_kernels(tmp_path):
    first = _run(FIRST_CALL, tmp_path / "cache")
    assert first["kernels"] == "quick" and first["converged"]
    assert first["said"] == [_compile.MESSAGE]  # it says so while compiling
    again = _run(FIRST_CALL, tmp_path / "cache")  # the quick kernels are cached now
    assert again["said"] == [] and again["energy"] == pytest.approx(first["energy"])


def test_warmup_then_a_new_process_runs_the_fused_kernels_without_compiling(tmp_path):
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_tv.cli", "warmup", "--family", "primal_dual",
         "--dtype", "float32"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "NUMBA_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "compiled 1 kernel family" in proc.stdout
    out = _run(FIRST_CALL, cache)
    assert out["kernels"] == "fused" and out["said"] == []


def test_background_compilation_hands_over_to_the_fused_kernels(tmp_path):
    code = """
        import json, time
        import numpy as np
        from napari_tv import _compile, denoise_tv, microscopy_2d
        v = microscopy_2d()[0]
        kinds = []
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 400:
            u, info = denoise_tv(v, 2.0, method="primal_dual", return_info=True)
            kinds.append(info.extra["kernels"])
            if kinds[-1] == "fused":
                break
            time.sleep(1.0)
        print(json.dumps({"kinds": kinds, "jobs": _compile.background_jobs()}))
    """
    out = _run(code, tmp_path / "cache", env={"NAPARI_TV_BACKGROUND_COMPILE": "1"}, timeout=600)
    assert out["kinds"][0] == "quick" and out["kinds"][-1] == "fused", out
    assert out["jobs"] == []


def _cache_files(cache: Path, pattern: str) -> list[Path]:
    return sorted(cache.rglob(pattern))


GAP_CALL = """
    import json
    import numpy as np
    import napari_tv
    from napari_tv.solvers._gap import duality_gap
    from napari_tv.solvers._quick import gap_terms
    u = np.linspace(0, 1, 30).reshape(5, 6)
    g = duality_gap(u, u[::-1].copy(), np.full((2, 5, 6), 0.1), 0.5, quick=True)
    stats = gap_terms.stats
    print(json.dumps({"gap": g.abs, "hits": sum(stats.cache_hits.values()),
                      "misses": sum(stats.cache_misses.values()),
                      "package": napari_tv.__file__}))
"""


def test_corrupt_cache_files_are_replaced_not_fatal(tmp_path):
    cache = tmp_path / "cache"
    ref = _run(GAP_CALL, cache)
    assert ref["misses"] == 1
    files = _cache_files(cache, "*.nb[ic]")
    assert files
    for f in files:  # truncated, garbage
        f.write_bytes(b"\x80\x04garbage" if f.suffix == ".nbi" else b"")
    with_garbage = _run(GAP_CALL, cache)
    assert with_garbage["gap"] == pytest.approx(ref["gap"]) and with_garbage["misses"] == 1
    healed = _run(GAP_CALL, cache)
    assert healed["hits"] == 1 and healed["misses"] == 0


def test_cache_of_another_numba_version_is_recompiled(tmp_path):
    """An index written by another Numba (an upgrade) is ignored, then rewritten."""
    import pickle

    cache = tmp_path / "cache"
    _run(GAP_CALL, cache)
    for index in _cache_files(cache, "_quick.gap_terms*.nbi"):
        with open(index, "rb") as fh:
            pickle.load(fh)  # the version
            rest = fh.read()
        index.write_bytes(pickle.dumps("0.1.0") + rest)
    upgraded = _run(GAP_CALL, cache)
    assert upgraded["misses"] == 1
    assert _run(GAP_CALL, cache)["hits"] == 1


def test_two_processes_compiling_at_once_share_the_cache(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "NAPARI_TV_KERNELS": "fast"}
    code = textwrap.dedent(GAP_CALL)
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    out = _run(GAP_CALL, cache)
    assert out["hits"] == 1 and out["misses"] == 0


def test_read_only_install_caches_in_the_user_cache_directory(tmp_path):
    """The package's own directories cannot take a cache (a read-only site-packages; here
    their ``__pycache__`` is a file): Numba's user-wide cache directory takes it."""
    pkg = tmp_path / "site" / "napari_tv"
    shutil.copytree(SRC / "napari_tv", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for d in [pkg, *[p for p in pkg.rglob("*") if p.is_dir()]]:
        (d / "__pycache__").write_text("not a directory")
    if os.geteuid() != 0:
        for p in [pkg, *pkg.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    env = {"PYTHONPATH": str(tmp_path / "site"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    first = _run(GAP_CALL, None, env=env)
    assert first["package"].startswith(str(pkg)) and first["misses"] == 1
    assert _cache_files(tmp_path / "xdg", "_quick.gap_terms*.nbi")
    assert _run(GAP_CALL, None, env=env)["hits"] == 1


def test_a_cache_that_cannot_be_written_is_a_warning(monkeypatch):
    @_config.jit
    def thrice(x):
        return 3 * x

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(thrice._cache._cache_file, "load", lambda key: None)  # a miss
    monkeypatch.setattr(thrice._cache._cache_file, "save", refuse)
    monkeypatch.setattr(_compile, "_warned", set())
    with pytest.warns(RuntimeWarning, match="could not write its compiled kernels"):
        assert thrice(2.0) == 6.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert thrice(np.float32(2.0)) == 6.0  # said once


def test_warm_up_runs_the_families_in_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    seen = []
    results = _compile.warm_up(
        ["operators"], ["float32"], jobs=2, progress=lambda d, t, w: seen.append((d, t, w))
    )
    assert results == [("operators", "float32", 0)]
    assert seen[-1][:2] == (1, 1) and "operators" in seen[-1][2]
    assert _cache_files(tmp_path / "cache", "operators.*.nbi")


@pytest.mark.parametrize(
    ("family", "dtype"), list(itertools.product(_compile.TIERED, ["float32"]))
)
def test_every_tiered_family_has_a_warm_function(family, dtype):
    _compile.warm(family, dtype)
    assert _compile.probe(family, dtype)
