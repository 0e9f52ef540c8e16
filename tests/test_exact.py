"""Exact TV solver: brute-force optima, nesting, the naive-dichotomy trap, API behaviour."""

from __future__ import annotations

import threading
import zlib

import numpy as np
import pytest

from napari_tv.operators import level_grid, neighbour_offsets, resolve_weights, tv_energy
from napari_tv.solvers.exact import solve_exact, solve_level
from reference.exact import (
    brute_force_tv,
    energy_naive,
    level_cut_naive,
    level_energy_naive,
    naive_dichotomy,
)

FIDELITIES = ["l2", "l1", "poisson"]
# (shape, connectivity, L): L**N labelings stay <= 6561
BRUTE_CASES = [
    ((5,), 1, 4),
    ((4,), 1, 9),  # four rounds: three of them reuse the previous round's flow
    ((2, 2), 2, 9),
    ((2, 3), 1, 3),
    ((2, 3), 2, 3),
    ((3, 2), 2, 3),
    ((2, 2, 2), 1, 3),
    ((2, 2, 2), 2, 3),
    ((2, 2, 2), 3, 3),
    ((2, 2, 2), 3, 2),
]


def _data(rng, shape, fidelity):
    if fidelity == "poisson":  # counts with zeros: f(0, v > 0) = inf at the lowest level
        return rng.poisson(1.5, size=shape).astype(np.float64)
    return rng.normal(size=shape)


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("shape, connectivity, n_levels", BRUTE_CASES)
def test_energy_equals_brute_force(fidelity, shape, connectivity, n_levels):
    seed = zlib.crc32(repr((fidelity, shape, connectivity, n_levels)).encode())
    rng = np.random.default_rng(seed)
    off = neighbour_offsets(len(shape), connectivity)
    for trial in range(4):
        v = _data(rng, shape, fidelity)
        if trial == 3:  # a non-uniform explicit grid
            grid = np.sort(rng.uniform(v.min() - 0.5, v.max() + 0.5, n_levels))
            grid = np.maximum(grid, 0.0) if fidelity == "poisson" else grid
            grid = np.unique(grid)
        else:
            grid = level_grid(v, n_levels)
        w = rng.uniform(0.0, 1.5, size=len(off))
        beta = float(rng.uniform(0.2, 2.0))
        res = solve_exact(v, beta, fidelity=fidelity, connectivity=connectivity, weights=w,
                          levels=grid)  # fmt: skip
        best, _ = brute_force_tv(v, beta, grid, fidelity, off, w)
        assert np.isin(res.u, grid).all()
        assert res.energy == pytest.approx(best, rel=1e-9, abs=1e-9)
        assert energy_naive(res.u, v, beta, fidelity, off, w) == pytest.approx(res.energy, 1e-9)


@pytest.mark.parametrize("spacing", [None, (2.0, 0.5)])
def test_default_weights_follow_spacing(spacing):
    rng = np.random.default_rng(7)
    v = rng.normal(size=(2, 3))
    grid = level_grid(v, 3)
    res = solve_exact(v, 0.7, connectivity=2, spacing=spacing, levels=grid)
    w = resolve_weights(2, 2, None, spacing)
    best, _ = brute_force_tv(v, 0.7, grid, "l2", neighbour_offsets(2, 2), w)
    assert res.energy == pytest.approx(best, rel=1e-9)


def test_naive_dichotomy_counter_example():
    # (u - v)^2 with beta*w = 2 is ½(u - v)^2 with beta*w = 1: optimum [1, 2] (E = 2 here)
    v = np.array([0.0, 3.0])
    grid = np.arange(4.0)
    off = neighbour_offsets(1, 1)
    naive = naive_dichotomy(v, 1.0, grid, "l2", off, [1.0])
    np.testing.assert_array_equal(naive, [0.0, 3.0])  # dropping the edge goes wrong ...
    assert energy_naive(naive, v, 1.0, "l2", off, [1.0]) == 3.0
    res = solve_exact(v, 1.0, levels=grid)  # ... turning it into unary costs does not
    np.testing.assert_array_equal(res.u, [1.0, 2.0])
    assert res.energy == 2.0 == brute_force_tv(v, 1.0, grid, "l2", off, [1.0])[0]


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("shape, connectivity", [((12, 10), 1), ((12, 10), 2), ((5, 4, 6), 3)])
def test_level_sets_nest_and_solve_the_level_problems(fidelity, shape, connectivity):
    rng = np.random.default_rng(11)
    v = _data(rng, shape, fidelity) * 3
    grid = level_grid(v, 9)
    off = neighbour_offsets(len(shape), connectivity)
    w = resolve_weights(len(shape), connectivity)
    kw = {"fidelity": fidelity, "connectivity": connectivity, "levels": grid}
    u = solve_exact(v, 0.8, **kw).u
    prev = np.zeros(shape, dtype=bool)
    for k in range(len(grid) - 1):
        below = solve_level(v, 0.8, k, **kw)
        assert (prev <= below).all()  # monotone in the level
        prev = below
        # u's level set solves the same binary problem (ties may pick another minimiser)
        e_cut = level_energy_naive(below, v, 0.8, grid, k, fidelity, off, w)
        e_u = level_energy_naive(u <= grid[k], v, 0.8, grid, k, fidelity, off, w)
        assert e_u == pytest.approx(e_cut, rel=1e-9, abs=1e-9)


def test_level_sets_match_solution_without_ties():
    rng = np.random.default_rng(13)
    v = rng.normal(size=(15, 14))
    grid = np.sort(rng.uniform(-2, 2, 12))
    u = solve_exact(v, 0.37, levels=grid).u
    for k in range(len(grid)):
        np.testing.assert_array_equal(solve_level(v, 0.37, k, levels=grid), u <= grid[k])


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_solve_level_matches_brute_force(fidelity):
    rng = np.random.default_rng(5)
    v = _data(rng, (3, 3), fidelity)
    grid = level_grid(v, 5)
    off = neighbour_offsets(2, 2)
    w = rng.uniform(0.1, 1.0, len(off))
    for k in range(len(grid) - 1):
        got = solve_level(v, 0.6, k, fidelity=fidelity, connectivity=2, weights=w, levels=grid)
        want = level_cut_naive(v, 0.6, grid, k, fidelity, off, w)
        np.testing.assert_array_equal(got, want)


def test_trace_is_the_refining_partition():
    rng = np.random.default_rng(2)
    v = rng.integers(0, 13, size=(9, 8))
    res = solve_exact(v, 1.5, fidelity="l1", trace=True)
    grid = res.extra["levels"]
    np.testing.assert_array_equal(grid, np.arange(v.min(), v.max() + 1.0))
    trace = res.extra["trace"]
    assert len(trace) == res.n_iter == res.extra["rounds"] == int(np.ceil(np.log2(len(grid))))
    lo0, hi0 = np.zeros(v.shape, int), np.full(v.shape, len(grid) - 1)
    for lo, hi in trace:
        assert lo.dtype == hi.dtype == np.int32 and lo.shape == v.shape
        assert ((lo0 <= lo) & (hi <= hi0) & (lo <= hi)).all()  # refines the previous one
        # identical or disjoint intervals
        for a in np.unique(lo):
            assert np.unique(hi[lo == a]).size == 1
        lo0, hi0 = lo, hi
    np.testing.assert_array_equal(lo0, hi0)
    np.testing.assert_array_equal(res.u, grid[lo0])
    assert len(res.extra["round_times"]) == res.n_iter == len(res.history)


def test_result_fields_and_energy():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(10, 11))
    res = solve_exact(v, 0.5, connectivity=2, weights=0.3, levels=16)
    assert res.method == "exact" and res.converged and res.gap == 0.0 and not res.cancelled
    assert res.energy == pytest.approx(
        tv_energy(res.u, v, 0.5, fidelity="l2", connectivity=2, weights=0.3)
    )
    assert res.extra["rounds"] == 4 and res.extra["cuts"] == 4
    assert res.extra["groups"] >= res.extra["cuts"]
    assert res.u.dtype == np.float64


def test_float32_kept_and_input_untouched():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(8, 9)).astype(np.float32)
    v0 = v.copy()
    res = solve_exact(v, 0.4, levels=32)
    assert res.u.dtype == np.float32
    np.testing.assert_array_equal(v, v0)
    grid = level_grid(v, 32)
    assert np.isin(res.u, grid.astype(np.float32)).all()


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.uint16])
def test_float32_data_gives_the_float64_minimiser(fidelity, dtype):
    """The solver keeps float32 data (and 8/16-bit integers, which become float32) as float32:
    every slope is computed in float64 from the same numbers, so the minimiser is the one of
    the same values given as float64, on the same levels, with resumed flows and threads."""
    rng = np.random.default_rng(7)
    v = (rng.random((24, 40, 30)) * 200).astype(dtype)
    grid = level_grid(v, 64)
    a = solve_exact(v, 3.0, fidelity=fidelity, connectivity=2, levels=grid)
    b = solve_exact(v.astype(np.float64), 3.0, fidelity=fidelity, connectivity=2, levels=grid)
    np.testing.assert_array_equal(a.u, b.u.astype(a.u.dtype))  # the same grid points
    assert a.energy == pytest.approx(b.energy, rel=1e-9)  # (float32 sums)


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_constant_image(fidelity):
    v = np.full((4, 5), 3.0)
    res = solve_exact(v, 2.0, fidelity=fidelity)
    np.testing.assert_array_equal(res.u, v)
    assert res.n_iter == 0 and res.converged


def test_beta_zero_rounds_each_pixel_to_its_best_level():
    rng = np.random.default_rng(4)
    v = rng.uniform(0, 1, size=(6, 7))
    grid = np.linspace(0, 1, 11)
    res = solve_exact(v, 0.0, levels=grid)
    g = 0.5 * (grid[None, None, :] - v[..., None]) ** 2
    np.testing.assert_allclose(0.5 * (res.u - v) ** 2, g.min(axis=-1), rtol=0, atol=1e-15)


def test_levels_int_and_integer_default():
    v = np.array([[0, 4, 4], [1, 0, 3]], dtype=np.uint8)
    assert len(solve_exact(v, 0.1).extra["levels"]) == 5  # every integer 0..4
    res = solve_exact(v.astype(float), 0.1, levels=3)
    np.testing.assert_array_equal(res.extra["levels"], [0.0, 2.0, 4.0])
    assert np.isin(res.u, [0.0, 2.0, 4.0]).all()


def test_weights_scalar_equals_array():
    rng = np.random.default_rng(8)
    v = rng.normal(size=(7, 6))
    a = solve_exact(v, 1.0, connectivity=2, weights=0.4, levels=16)
    b = solve_exact(v, 1.0, connectivity=2, weights=[0.4] * 4, levels=16)
    np.testing.assert_array_equal(a.u, b.u)


def test_callback_cancels_after_first_round():
    rng = np.random.default_rng(9)
    v = rng.normal(size=(10, 10))
    infos = []

    def stop(info):
        infos.append(info)
        return True

    res = solve_exact(v, 0.5, levels=64, callback=stop, trace=True)
    assert res.cancelled and not res.converged and res.n_iter == 1
    assert len(infos) == 1
    info = infos[0]
    assert info["method"] == "exact" and info["iter"] == 1 and info["max_iter"] == 6
    assert 0 < info["fraction"] < 1 and info["elapsed"] >= 0
    lo, _ = res.extra["trace"][0]
    np.testing.assert_array_equal(res.u, res.extra["levels"][lo])


def test_callback_progress_to_the_end():
    rng = np.random.default_rng(10)
    fractions = []
    solve_exact(rng.normal(size=(6, 6)), 0.5, levels=16,
                callback=lambda info: fractions.append(info["fraction"]) and False)  # fmt: skip
    assert fractions == [0.25, 0.5, 0.75, 1.0]


def test_one_dimensional_signal():
    v = np.array([0.0, 0.1, 5.0, 5.2, 4.9, 0.2])
    res = solve_exact(v, 0.3, levels=np.arange(0, 6.0))
    np.testing.assert_array_equal(res.u, [0, 0, 5, 5, 5, 0])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"beta": -1.0}, ValueError, "beta must be >= 0"),
        ({"fidelity": "l3"}, ValueError, "fidelity must be one of"),
        ({"connectivity": 3}, ValueError, "connectivity"),
        ({"weights": [1.0, -1.0]}, ValueError, "weights"),
        ({"weights": [1.0, 2.0, 3.0]}, ValueError, "weights"),
        ({"spacing": (1.0, 0.0)}, ValueError, "spacing"),
        ({"levels": 1}, ValueError, "levels"),
        ({"fidelity": "poisson"}, ValueError, "image must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    args = {"image": np.array([[0.0, -1.0], [2.0, 3.0]]), "beta": 1.0}
    args.update(kwargs)
    image, beta = args.pop("image"), args.pop("beta")
    with pytest.raises(exc, match=match):
        solve_exact(image, beta, **args)


def test_solve_level_bad_level():
    with pytest.raises(ValueError, match="level must be in"):
        solve_level(np.arange(4.0), 1.0, 4, levels=4)
    with pytest.raises(TypeError, match="level must be an integer"):
        solve_level(np.arange(4.0), 1.0, 1.5, levels=4)


def test_l1_integer_data_matches_continuous_optimum():
    pd = pytest.importorskip(
        "napari_tv.solvers.primal_dual",
        reason="primal_dual solver (helper iterative-A) not in the tree yet",
    )
    rng = np.random.default_rng(12)
    v = rng.integers(0, 8, size=(16, 16)).astype(np.float64)
    beta = 0.7
    exact = solve_exact(v, beta, fidelity="l1", connectivity=1, weights=1.0, levels=np.arange(8))
    cont = pd.solve_primal_dual(v, beta, fidelity="l1", tv="anisotropic", spacing=None,
                                boundary="neumann", max_num_iter=20000, tol=1e-7, init=None,
                                callback=None)  # fmt: skip
    e_cont = tv_energy(cont.u, v, beta, fidelity="l1", tv="anisotropic")
    # the integer-grid optimum is a continuous optimum (L1-TV, integer data): never worse,
    # and the converged iterative solver reaches it
    assert exact.energy <= e_cont + 1e-9
    assert e_cont == pytest.approx(exact.energy, rel=2e-3)


@pytest.mark.parametrize("fidelity", ["l1", "poisson"])
def test_two_threads_give_the_serial_result(monkeypatch, fidelity):
    import napari_tv.solvers.exact as exact_mod

    rng = np.random.default_rng(14)
    v = rng.poisson(4.0, size=(40, 36)).astype(np.float64)
    serial = solve_exact(v, 0.6, fidelity=fidelity, connectivity=2, levels=32)
    monkeypatch.setattr(exact_mod, "THREADS", 2)
    monkeypatch.setattr(exact_mod, "MIN_PARALLEL_VOXELS", 100)
    calls = []
    real_solve_chunk = exact_mod._Dichotomy._solve_chunk

    def spy(self, first, last):
        calls.append((threading.get_ident(), first, last))
        return real_solve_chunk(self, first, last)

    monkeypatch.setattr(exact_mod._Dichotomy, "_solve_chunk", spy)
    both = solve_exact(v, 0.6, fidelity=fidelity, connectivity=2, levels=32)
    helper = [c for c in calls if c[0] != threading.get_ident()]
    assert len(helper) >= 2  # some groups ran in the helper thread
    assert {c[0] for c in helper} != {threading.get_ident()}
    np.testing.assert_array_equal(both.u, serial.u)
    assert both.energy == serial.energy


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("shape, connectivity", [((7, 9), 2), ((4, 5, 6), 1), ((30, 34), 1)])
def test_fresh_balanced_rounds_with_routing_stay_exact(monkeypatch, fidelity, shape,
                                                       connectivity):  # fmt: skip
    """Balanced rounds restart from fresh capacities and route their excess first (the
    thresholds lowered so that small images take that path): the brute-force / standard
    optimum all the same."""
    import napari_tv.solvers.exact as exact_mod
    import napari_tv.solvers.maxflow as maxflow_mod

    rng = np.random.default_rng(zlib.crc32(repr((fidelity, shape)).encode()))
    v = _data(rng, shape, fidelity)
    kw = {"fidelity": fidelity, "connectivity": connectivity, "levels": 16}
    standard = solve_exact(v, 0.7, **kw)
    monkeypatch.setattr(exact_mod, "FRESH_MIN_NODES", 1)
    monkeypatch.setattr(exact_mod, "FRESH_BALANCE", 0.0)
    monkeypatch.setattr(maxflow_mod, "ROUTE_MIN_NODES", 1)
    monkeypatch.setattr(maxflow_mod, "ROUTE_BALANCE", 0.0)
    routes = []
    real = maxflow_mod.GridFlowState.maxflow

    def spy(self, nodes=None, queues=None, route=False):
        routes.append(route)
        return real(self, nodes, queues, route)

    monkeypatch.setattr(maxflow_mod.GridFlowState, "maxflow", spy)
    routed = solve_exact(v, 0.7, **kw)
    assert any(routes)  # the fresh, routed path ran
    assert routed.energy == pytest.approx(standard.energy, rel=1e-10, abs=1e-10)
    off = neighbour_offsets(len(shape), connectivity)
    naive = energy_naive(routed.u, v, 0.7, fidelity, off, resolve_weights(len(shape),
                                                                           connectivity, None))
    assert naive == pytest.approx(routed.energy, rel=1e-9)
