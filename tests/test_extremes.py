"""Faults and extremes (issue 15, items 9-14): the data scale, tiny and huge β and spacings,
the ends of float32/float64, smaller API defects, the memory guard and Numba's workqueue
threading layer.  Each case ends in a correct result or one clear error naming the parameter.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_tv import denoise_tv
from napari_tv._memory import EXACT_BYTES, WORDS_PER_VOXEL, available_bytes, estimate_bytes
from napari_tv._sample_data import microscopy_2d
from napari_tv.fidelity import fidelity_value
from napari_tv.operators import difference_matrix, tv_energy
from napari_tv.solvers.primal_dual import solve_primal_dual

ITERATIVE = [
    ("primal_dual", "l2"),
    ("primal_dual", "l1"),
    ("primal_dual", "poisson"),
    ("chambolle", "l2"),
    ("bregman", "l2"),
    ("gradient_descent", "l2"),
    ("gradient_descent", "l1"),
    ("gradient_descent", "poisson"),
]


@pytest.fixture(scope="module")
def cells():
    """A 64x64 crop of the 2-D sample (intensities about -4..30) and Poisson counts of it."""
    v = np.asarray(microscopy_2d(), dtype=np.float64)[0, 32:96, 64:128].copy()
    counts = np.random.default_rng(0).poisson(np.clip(v, 0, None) * 30 / v.max())
    return v, counts.astype(np.float64)


# ----------------------------------------------------------------- 9: scale invariance


@pytest.mark.parametrize(("method", "fidelity"), ITERATIVE)
def test_iterations_do_not_depend_on_the_intensity_unit(cells, method, fidelity):
    """×1, ×100, ×1000 with β scaled as the energy is homogeneous (L2: β with the data; L1,
    Poisson: β without unit): the same iterations, the same minimiser up to the unit."""
    v, counts = cells
    data = counts if fidelity == "poisson" else v
    beta = {"l2": 0.1 * np.ptp(v), "l1": 0.5, "poisson": 0.3}[fidelity]
    runs = []
    for scale in (1.0, 100.0, 1000.0):
        b = beta * scale if fidelity == "l2" else beta
        u, res = denoise_tv(data * scale, b, method=method, fidelity=fidelity, return_info=True)
        assert np.isfinite(u).all()
        runs.append((u / scale, res))
    (u1, r1), *others = runs
    for u, res in others:
        assert res.converged == r1.converged
        if method == "gradient_descent":  # its budget, not its gap, ends these runs
            assert res.n_iter == r1.n_iter
        else:
            assert res.converged
            assert abs(res.n_iter - r1.n_iter) <= 0.15 * r1.n_iter
        tol = 2e-3 if fidelity == "poisson" else 1e-6
        assert np.max(np.abs(u - u1)) <= tol * np.ptp(data)


def test_the_issue_scales_converge_with_primal_dual(cells):
    v, _ = cells
    iters = []
    for scale in (1.0, 100.0, 1000.0):
        _, res = denoise_tv(v * scale, 3.0 * scale, return_info=True)
        assert res.converged and res.gap < 1e-4
        iters.append(res.n_iter)
    assert len(set(iters)) == 1


# ------------------------------------------------------- 10, 11: tiny and huge β/spacing


def _small_image():
    return np.random.default_rng(1).random((12, 13))


@pytest.mark.parametrize(("method", "fidelity"), ITERATIVE)
@pytest.mark.parametrize("beta", [1e-310, 1e-300, 1e-20])
def test_a_beta_below_rounding_returns_the_data(method, fidelity, beta):
    v = _small_image() * 20
    u, res = denoise_tv(v, beta, method=method, fidelity=fidelity, return_info=True)
    assert res.converged and res.n_iter == 0 and "u = v" in res.extra["shortcut"]
    np.testing.assert_array_equal(u, v)
    assert math.isfinite(res.energy) and 0 <= res.gap < 1e-10


@pytest.mark.parametrize(("method", "fidelity"), ITERATIVE)
@pytest.mark.parametrize("beta", [1.7e308, 1e300, 1e12])
def test_a_huge_beta_gives_the_best_constant(method, fidelity, beta):
    v = _small_image() * 20
    u, res = denoise_tv(v, beta, method=method, fidelity=fidelity, return_info=True)
    best = np.median(v) if fidelity == "l1" else np.mean(v)
    np.testing.assert_allclose(u, best, rtol=1e-12)
    assert res.converged and res.gap == 0.0 and math.isfinite(res.energy)


@pytest.mark.parametrize("fidelity", ["l2", "l1", "poisson"])
@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
def test_the_constant_is_optimal_at_the_threshold(fidelity, tv):
    """At the smallest β the shortcut takes, no long primal-dual run (which does not take
    shortcuts) finds a lower energy: the bound of _extremes is a valid one."""
    from napari_tv.solvers._extremes import _known

    v = _small_image()[:6, :7] * 5
    spacing = (1.0, 1.7)
    lo, hi = 1e-3, 1e6
    for _ in range(60):  # bisect the smallest β with a constant shortcut
        mid = math.sqrt(lo * hi)
        known = _known(v, mid, fidelity, tv, spacing, float(np.max(np.abs(v))))
        if known is not None and known[1].startswith("constant"):
            hi = mid
        else:
            lo = mid
    u = _known(v, hi, fidelity, tv, spacing, float(np.max(np.abs(v))))[0]
    ref = solve_primal_dual(v, hi, fidelity=fidelity, tv=tv, spacing=spacing, tol=1e-9,
                            max_num_iter=200000)  # fmt: skip
    e_const = tv_energy(u, v, hi, fidelity=fidelity, tv=tv, spacing=spacing)
    assert e_const <= ref.energy + 1e-9 * abs(ref.energy)


@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
def test_l1_keeps_the_data_up_to_the_exact_threshold(tv):
    """L1: u* = v exactly while 2β Σ 1/h ≤ 1 (a one-pixel spike costs 2d edges); above it the
    spike is removed."""
    v = np.zeros((7, 7))
    v[3, 3] = 1.0
    u, res = denoise_tv(v, 0.25, fidelity="l1", tv=tv, return_info=True)
    assert "u = v" in res.extra["shortcut"]
    np.testing.assert_array_equal(u, v)
    ref = solve_primal_dual(v, 0.25, fidelity="l1", tv=tv, tol=1e-8, max_num_iter=100000)
    assert tv_energy(v, v, 0.25, fidelity="l1", tv=tv) <= ref.energy + 1e-9
    u = denoise_tv(v, 0.3, fidelity="l1", tv=tv, tol=1e-6, max_num_iter=50000)
    assert u[3, 3] < 0.01


@pytest.mark.parametrize(("method", "fidelity"), ITERATIVE + [("exact", "l2")])
@pytest.mark.parametrize("spacing", [1e-310, 1e-300, 1e200, 1e300])
def test_a_uniform_spacing_of_any_size_changes_nothing(method, fidelity, spacing):
    v = _small_image() * 20
    beta = 2.0 if fidelity == "l2" else 0.4
    ref = denoise_tv(v, beta, method=method, fidelity=fidelity)
    u = denoise_tv(v, beta, method=method, fidelity=fidelity, spacing=spacing)
    np.testing.assert_array_equal(u, ref)


@pytest.mark.parametrize("spacing", [(1.0, 1e-310), (1.0, 1e5), (1e300, 1e-10)])
def test_a_spacing_ratio_beyond_1e4_names_spacing(spacing):
    with pytest.raises(ValueError, match=r"spacing must not vary.*factor 10000.*got \(1"):
        denoise_tv(_small_image(), 0.1, spacing=spacing)


@pytest.mark.parametrize("connectivity", [2, 3])
def test_graph_weights_at_the_largest_spacing_ratio(connectivity):
    v = np.random.default_rng(2).random((4, 5, 6))
    u, res = denoise_tv(v, 0.1, method="exact", connectivity=connectivity,
                        spacing=(1, 1, 1e4), return_info=True)  # fmt: skip
    assert res.converged and np.isfinite(u).all()
    with pytest.raises(ValueError, match="spacing must not vary"):
        denoise_tv(v, 0.1, method="exact", connectivity=connectivity, spacing=(1, 1, 1e6))


@pytest.mark.parametrize(("method", "fidelity"), ITERATIVE + [("exact", "l2")])
def test_float32_near_its_largest_value(method, fidelity):
    """Data up to 3e38 (float32's limit is 3.4e38): solved scaled by a power of two, so the
    result is the unscaled problem's, times the scale."""
    v = _small_image().astype(np.float32)
    scale = np.float32(3e38)
    beta = 0.1 if fidelity == "l2" else 0.4
    ref, r0 = denoise_tv(v, beta, method=method, fidelity=fidelity, return_info=True)
    b = beta * float(scale) if fidelity == "l2" else beta
    u, res = denoise_tv(v * scale, b, method=method, fidelity=fidelity, return_info=True)
    assert u.dtype == np.float32 and np.isfinite(u).all()
    assert res.converged == r0.converged and math.isfinite(res.energy)
    if method == "gradient_descent" and fidelity != "l2":  # ε-smoothed: compare energies
        e = tv_energy((u / scale).astype(np.float64), v, beta, fidelity=fidelity)
        assert abs(e - r0.energy) <= 1e-3 * abs(r0.energy)
    else:
        np.testing.assert_allclose(u / scale, ref, atol=1e-4)  # both to a 1e-4 gap


@pytest.mark.parametrize("magnitude", [1e300, 1e-300])
def test_float64_beyond_1e150_names_the_image(magnitude):
    v = _small_image() * magnitude
    with pytest.raises(ValueError, match=r"image values must be between .*max \|image\|"):
        denoise_tv(v, 1.0)
    from napari_tv.beta_choice import suggest_beta

    with pytest.raises(ValueError, match="image values must be between"):
        suggest_beta(v)


def test_exact_poisson_needs_a_positive_level():
    v = np.array([[0.0, 2.0], [3.0, 1.0]])
    with pytest.raises(ValueError, match=r"levels must include a value > 0.*-3 to -1"):
        denoise_tv(v, 0.1, method="exact", fidelity="poisson", levels=[-3, -2, -1])
    u, res = denoise_tv(v, 0.1, method="exact", fidelity="poisson", levels=[0, 1, 2, 3],
                        return_info=True)  # fmt: skip
    assert math.isfinite(res.energy) and set(np.unique(u)) <= {0.0, 1.0, 2.0, 3.0}


def test_no_silent_nan_from_a_solver(monkeypatch):
    """The last line of defence: a solver that returned NaN is an error, not a result."""
    from napari_tv.solvers import api

    real = api._solver("chambolle")

    def broken(*args, **kwargs):
        res = real(*args, **kwargs)
        res.u[0, 0] = np.nan
        return res

    monkeypatch.setattr(api, "_solver", lambda method: broken)
    with pytest.raises(FloatingPointError, match=r"'chambolle' produced 1 non-finite"):
        denoise_tv(_small_image(), 0.1, method="chambolle")


# ---------------------------------------------------------------- 12: smaller defects


def test_difference_matrix_refuses_a_fractional_shape():
    with pytest.raises(TypeError, match=r"shape must be .*integers, got \(2.5, 3\)"):
        difference_matrix((2.5, 3))
    assert difference_matrix((np.int64(2), np.array(3))).shape == (12, 6)


@pytest.mark.parametrize("fidelity", ["l2", "l1", "poisson"])
def test_fidelity_value_broadcasts_like_numpy(fidelity):
    u = np.array([[1.0], [2.0], [3.0]])
    v = np.array([[0.0, 1.0, 4.0, 2.0]])
    ub, vb = np.broadcast_arrays(u, v)
    assert fidelity_value(u, v, fidelity) == fidelity_value(ub.copy(), vb.copy(), fidelity)


# ---------------------------------------------------------------- 13: the memory guard


def test_estimates_follow_the_table():
    assert estimate_bytes("chambolle", "l2", (10, 10), 4) == 100 * 4 * 7 + 100 * 4
    assert estimate_bytes("exact", "l2", (10, 10), 8, n_levels=5) == (
        100 * (EXACT_BYTES["voxel"] + 2 * EXACT_BYTES["edge"]) + 5 * EXACT_BYTES["level"] + 100 * 8
    )
    assert set(WORDS_PER_VOXEL) == {"primal_dual", "chambolle", "bregman", "gradient_descent"}


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_the_exact_estimate_counts_the_edges_of_the_neighbourhood(ndim):
    """The exact solver's graph holds two float64 arcs per edge: connectivity 3 in 3-D (13
    edges per voxel) needs more than twice connectivity 1 (3 edges)."""
    from napari_tv._memory import edges_per_voxel
    from napari_tv.operators import neighbour_offsets

    for conn in range(1, ndim + 1):
        assert edges_per_voxel(ndim, conn) == len(neighbour_offsets(ndim, conn))
        one = estimate_bytes("exact", "l2", (4,) * ndim, 8, connectivity=conn) - 4**ndim * 8
        per_voxel = EXACT_BYTES["voxel"] + EXACT_BYTES["edge"] * edges_per_voxel(ndim, conn)
        assert one == 4**ndim * per_voxel
    if ndim == 3:
        assert edges_per_voxel(3, 3) == 13 and edges_per_voxel(3, 1) == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda: denoise_tv(_small_image()[:6, :7], 0.5, method="exact", levels=10**9),
        lambda: denoise_tv(np.zeros((1100,) * 3, np.float32), 0.5, method="chambolle"),
        lambda: denoise_tv(np.array([[0, 2**64 - 1], [5, 7]], dtype=np.uint64), 1.0,
                           method="exact"),  # fmt: skip
    ],
    ids=["exact-1e9-levels", "chambolle-1100^3", "exact-uint64-full-range"],
)
def test_calls_that_cannot_fit_are_refused_before_allocating(monkeypatch, call):
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", str(16 * 2**30))
    with pytest.raises(MemoryError, match=r"needs about .* more than 90% of the 16.0 GiB"):
        call()


def test_exact_on_512_cubed_with_12_gib(monkeypatch):
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", str(12 * 2**30))  # it needs 14.5 GiB
    big = np.broadcast_to(np.float32(0), (512,) * 3)  # no memory behind it
    with pytest.raises(MemoryError, match="method='exact' on a 512x512x512 float32 image"):
        denoise_tv(big, 0.5, method="exact")


def test_the_guard_counts_the_exact_solvers_connectivity(monkeypatch):
    """256³ with connectivity 1 needs about 1.8 GiB, with connectivity 3 about 4.3 GiB."""
    from napari_tv.solvers.api import _guard_memory

    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", str(3 * 2**30))
    big = np.broadcast_to(np.float32(0), (256,) * 3)  # no memory behind it
    _guard_memory(big, "exact", "l2", None, 256, False, 1)  # fits: no error
    with pytest.raises(MemoryError, match="method='exact'"):
        _guard_memory(big, "exact", "l2", None, 256, False, 3)


def test_a_dask_array_larger_than_memory_is_solved_chunked_with_its_state_on_disk(
    monkeypatch,
):
    da = pytest.importorskip("dask.array")
    from napari_tv._rounds import state_mode

    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", str(2**30))
    lazy = da.zeros((600, 600, 600), dtype=np.float32, chunks=100)
    out = denoise_tv(lazy, 0.5)  # lazy: nothing allocated, no MemoryError
    assert out.shape == lazy.shape and out.chunks == lazy.chunks
    assert state_mode("auto", 6, lazy.size, 4) == "disk"
    assert state_mode("auto", 6, 64**3, 4) == "memory"
    # the exact solver too: lazy, nothing computed at the call (its passes run at compute)
    exact = denoise_tv(lazy, 0.5, method="exact")
    assert exact.shape == lazy.shape and exact.chunks == lazy.chunks


def test_the_memory_budget(monkeypatch):
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", "0")
    assert available_bytes() is None
    monkeypatch.setenv("NAPARI_TV_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="NAPARI_TV_MEMORY_LIMIT must be a number.*'lots'"):
        available_bytes()
    monkeypatch.delenv("NAPARI_TV_MEMORY_LIMIT")
    found = available_bytes()
    assert found is None or 0 < found < 2**50


def test_the_command_line_says_so_in_one_line(tmp_path):
    np.save(tmp_path / "small.npy", _small_image()[:6, :7])
    out = tmp_path / "out.npy"
    run = subprocess.run(
        [sys.executable, "-m", "napari_tv.cli", "denoise", str(tmp_path / "small.npy"),
         str(out), "--beta", "0.5", "--method", "exact", "--levels", "1000000000"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "NAPARI_TV_MEMORY_LIMIT": str(8 * 2**30)},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-tv: error: method='exact'")
    assert "fewer levels" in lines[0] and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------ 14: Numba's workqueue threading layer

WORKQUEUE_SCRIPT = textwrap.dedent(
    """
    import threading
    import numba
    import numpy as np
    from napari_tv import denoise_tv
    from napari_tv._scheduling import LatestWins
    from napari_tv.sweep import BetaSweep

    v = np.random.default_rng(0).random((192, 192)).astype(np.float32)
    ref = denoise_tv(v, 0.1, max_num_iter=60, tol=0)
    sweep = BetaSweep(v)
    got, errors = [], []
    runner = LatestWins(sweep.solve, got.append, errors.append)
    for beta in (0.05, 0.1, 0.2, 0.3):
        runner.submit(beta)
        for method in ("primal_dual", "chambolle", "exact"):
            kw = {} if method == "exact" else {"max_num_iter": 60, "tol": 0}
            denoise_tv(v, 0.1, method=method, **kw)
    assert runner.wait(120.0) and not errors, errors
    runner.close()
    again = denoise_tv(v, 0.1, max_num_iter=60, tol=0)
    assert np.array_equal(again, ref)
    print("layer", numba.threading_layer(), "results", len(got))
    """
)


def test_the_workqueue_layer_serialises_instead_of_aborting():
    """Numba's fallback layer aborts the process (SIGABRT) when two threads launch parallel
    kernels at once; napari-tv then runs its kernels one at a time."""
    run = subprocess.run(
        [sys.executable, "-c", WORKQUEUE_SCRIPT], capture_output=True, text=True, timeout=600,
        env={**os.environ, "NUMBA_THREADING_LAYER": "workqueue"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "layer workqueue" in run.stdout
