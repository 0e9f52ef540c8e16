"""The exact solver with boxes, and block by block on dask: brute-force optima within boxes,
the bounds bracketing the in-memory minimiser, the chunked result equal to the in-memory
optimum (every fidelity, connectivity, 2-D and 3-D, uneven chunkings), PyMaxflow's level cuts,
schedulers, state on disk, the non-converged case, cancel and bad input."""

from __future__ import annotations

import itertools
import zlib

import dask.array as da
import numpy as np
import pytest

from napari_tv import denoise_tv, denoise_tv_chunked
from napari_tv._exact_chunked import pack, solve_exact_chunked, solve_in_range, unpack
from napari_tv.levelsets import from_level_sets
from napari_tv.operators import level_grid, neighbour_offsets, resolve_weights, tv_energy
from napari_tv.solvers.exact import solve_exact, solve_indices
from reference.exact import energy_naive

FIDELITIES = ["l2", "l1", "poisson"]


def _data(rng, shape, fidelity, scale=2.0):
    if fidelity == "poisson":
        return rng.poisson(2.0, size=shape).astype(np.float64)
    return rng.normal(size=shape) * scale + 5.0


def _boxed_brute_force(v, beta, grid, fidelity, offsets, w, lo, hi):
    """Least energy over every labeling with ``lo[s] <= k_s <= hi[s]``."""
    ranges = [range(a, b + 1) for a, b in zip(lo.ravel(), hi.ravel(), strict=True)]
    best = np.inf
    for labels in itertools.product(*ranges):
        u = grid[np.array(labels)].reshape(v.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            e = energy_naive(u, v, beta, fidelity, offsets, w)
        best = min(best, e)
    return best


# ----------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("shape, connectivity", [((7,), 1), ((2, 3), 2), ((2, 2, 2), 3),
                                                 ((3, 3), 1)])  # fmt: skip
def test_boxed_solve_equals_brute_force(fidelity, shape, connectivity):
    rng = np.random.default_rng(zlib.crc32(repr((fidelity, shape, connectivity)).encode()))
    off = neighbour_offsets(len(shape), connectivity)
    for _ in range(4):
        v = _data(rng, shape, fidelity, scale=1.5)
        grid = level_grid(v, 5)
        if fidelity == "poisson":
            grid = np.unique(np.maximum(grid, 0.0))
        n = len(grid)
        a = rng.integers(0, n, size=shape)
        b = np.minimum(a + rng.integers(0, 3, size=shape), n - 1)
        fixed = rng.random(shape) < 0.3  # some voxels fixed (a frame)
        b = np.where(fixed, a, b)
        w = rng.uniform(0.2, 1.5, size=len(off))
        beta = float(rng.uniform(0.3, 2.0))
        k, _ = solve_indices(v, beta, grid, fidelity=fidelity, connectivity=connectivity,
                             weights=w, bounds=(a, b))  # fmt: skip
        assert np.all((a <= k) & (k <= b))
        best = _boxed_brute_force(v, beta, grid, fidelity, off, w, a, b)
        got = energy_naive(grid[k], v, beta, fidelity, off, w)
        assert got == pytest.approx(best, rel=1e-9, abs=1e-9)
        # the same on the part of the grid the undecided voxels span
        k2 = solve_in_range(v, beta, grid, a, b, fidelity=fidelity, connectivity=connectivity,
                            weights=w)  # fmt: skip
        assert energy_naive(grid[k2], v, beta, fidelity, off, w) == pytest.approx(
            best, rel=1e-9, abs=1e-9)


def test_full_box_is_the_unboxed_solve():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(20, 24))
    grid = level_grid(v, 32)
    k, _ = solve_indices(v, 0.7, grid, bounds=(np.zeros(v.shape, int),
                                               np.full(v.shape, 31)))  # fmt: skip
    np.testing.assert_array_equal(grid[k], solve_exact(v, 0.7, levels=grid).u)


def test_bounds_from_a_frame_bracket_the_minimiser():
    """The module's argument: a block solved with its frame at the lower (upper) bounds of the
    minimiser gives lower (upper) bounds inside."""
    rng = np.random.default_rng(5)
    v = rng.normal(size=(30, 30)) * 2 + np.where(np.arange(30) < 15, 0.0, 4.0)
    grid = level_grid(v, 40)
    k_star = np.searchsorted(grid, solve_exact(v, 1.5, levels=grid).u)
    block = (slice(5, 22), slice(8, 27))
    sub = v[block]
    frame = np.zeros(sub.shape, bool)
    frame[0], frame[-1], frame[:, 0], frame[:, -1] = True, True, True, True
    ks = k_star[block]
    lower = np.clip(ks - rng.integers(0, 4, size=ks.shape), 0, 39)
    upper = np.clip(ks + rng.integers(0, 4, size=ks.shape), 0, 39)
    below, _ = solve_indices(sub, 1.5, grid, bounds=(lower, np.where(frame, lower, upper)))
    above, _ = solve_indices(sub, 1.5, grid, bounds=(np.where(frame, upper, lower), upper))
    assert np.all(below <= ks) and np.all(ks <= above)
    assert (below == above).mean() > 0.5  # and they decide most voxels


def test_pack_round_trip():
    lo = np.array([0, 7, 65535])
    hi = np.array([3, 7, 65535])
    np.testing.assert_array_equal(np.stack(unpack(pack(lo, hi))), np.stack([lo, hi]))


# ----------------------------------------------------------------------------- chunked

CHUNKED_CASES = [
    # shape, chunks, connectivity, overlap
    ((23, 31), (8, 11), 1, 2),
    ((23, 31), (12, 7), 2, 0),
    ((30, 26), (10, 13), 1, 8),
    ((9, 10, 11), (4, 5, 6), 1, 1),
    ((9, 10, 11), (5, 4, 11), 2, 2),
    ((8, 9, 10), (4, 9, 5), 3, 0),
]


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("shape, chunks, connectivity, overlap", CHUNKED_CASES)
def test_chunked_exact_equals_the_in_memory_optimum(fidelity, shape, chunks, connectivity,
                                                    overlap):  # fmt: skip
    rng = np.random.default_rng(zlib.crc32(repr((fidelity, shape, connectivity)).encode()))
    v = _data(rng, shape, fidelity)
    beta = float(rng.uniform(0.3, 1.5))
    w = rng.uniform(0.5, 1.5, size=len(neighbour_offsets(len(shape), connectivity)))
    kw = {"fidelity": fidelity, "connectivity": connectivity, "weights": w, "levels": 24}
    ref = solve_exact(v, beta, **kw)
    res = solve_exact_chunked(da.from_array(v, chunks=chunks), beta, chunks=chunks,
                              overlap=overlap, **kw)  # fmt: skip
    assert res.converged and res.gap == 0.0 and res.extra["undecided"] == 0
    u = res.u.compute()
    assert np.isin(u, ref.extra["levels"]).all()
    energy = tv_energy(u, v, beta, fidelity=fidelity, connectivity=connectivity, weights=w)
    assert energy == pytest.approx(ref.energy, rel=1e-9)
    assert res.energy == pytest.approx(energy, rel=1e-9)  # computed block by block
    assert res.rounds == res.extra["passes"] >= 1


@pytest.mark.parametrize("shape, chunks", [((26, 30), (9, 10)), ((10, 12, 14), (5, 6, 7))])
def test_chunked_exact_matches_pymaxflow_level_cuts(shape, chunks):
    """An oracle with nothing of ours in it: PyMaxflow minimises every level energy."""
    pytest.importorskip("maxflow")
    from napari_tv.fidelity import fidelity_pointwise
    from reference.levelsets import levelwise_minimiser_pymaxflow

    rng = np.random.default_rng(11)
    v = rng.normal(size=shape) + np.where(np.arange(shape[-1]) < shape[-1] // 2, 0.0, 2.5)
    grid = level_grid(v, 12)
    stack = levelwise_minimiser_pymaxflow(v, 0.6, grid, lambda a, b: fidelity_pointwise(a, b, "l2"))
    oracle = tv_energy(from_level_sets(stack, grid), v, 0.6, connectivity=1)
    res = solve_exact_chunked(da.from_array(v, chunks=chunks), 0.6, levels=grid, chunks=chunks,
                              overlap=2)  # fmt: skip
    assert res.converged
    assert tv_energy(res.u.compute(), v, 0.6, connectivity=1) == pytest.approx(oracle, rel=1e-10)


def test_passes_alone_decide_a_volume_without_large_plateaus():
    rng = np.random.default_rng(2)
    v = rng.normal(size=(40, 48)) * 3.0
    ref = solve_exact(v, 0.4, levels=64)
    res = solve_exact_chunked(da.from_array(v, chunks=(20, 24)), 0.4, levels=64,
                              chunks=(20, 24))  # fmt: skip
    assert res.converged and res.extra["remainder_voxels"] == 0
    np.testing.assert_array_equal(res.u.compute(), ref.u)
    assert [h["undecided"] for h in res.history][-1] == 0


def _plateau(shape=(36, 36)):
    """A bright square larger than the blocks on a noisy dark background: its level depends
    on its whole area, so no block decides it."""
    rng = np.random.default_rng(4)
    v = rng.normal(size=shape) * 0.3
    v[4:32, 4:32] += 6.0
    return v


def test_a_plateau_larger_than_the_blocks_is_solved_at_once():
    v = _plateau()
    ref = solve_exact(v, 3.0, levels=48)
    res = solve_exact_chunked(da.from_array(v, chunks=9), 3.0, levels=48, chunks=9, overlap=1)
    assert res.converged and res.extra["remainder_voxels"] > 0
    assert res.energy == pytest.approx(ref.energy, rel=1e-10)


def test_not_converged_says_so_and_gives_a_lower_bound():
    v = _plateau()
    ref = solve_exact(v, 3.0, levels=48)
    res = solve_exact_chunked(da.from_array(v, chunks=9), 3.0, levels=48, chunks=9, overlap=1,
                              max_bytes=0)  # fmt: skip
    assert not res.converged and np.isnan(res.gap)
    assert res.extra["undecided"] > 0
    assert f"{res.extra['undecided']} voxels undecided" in res.extra["note"]
    assert np.all(res.u.compute() <= ref.u)
    # the lazy array refuses rather than return an approximation
    from napari_tv import _exact_chunked

    orig = _exact_chunked.solve_exact_chunked

    def tight(*args, **kwargs):
        return orig(*args, **{**kwargs, "max_bytes": 0, "overlap": 1, "chunks": 9})

    _exact_chunked.solve_exact_chunked = tight
    try:
        lazy = denoise_tv(da.from_array(v, chunks=9), 3.0, method="exact", levels=48)
        with pytest.raises(RuntimeError, match="not certified: .* voxels undecided"):
            lazy.compute()
    finally:
        _exact_chunked.solve_exact_chunked = orig


def test_lazy_exact_on_dask_is_the_in_memory_result():
    v = _plateau((20, 30)).astype(np.float32)
    x = da.from_array(v, chunks=10)
    u = denoise_tv(x, 2.0, method="exact", levels=32, connectivity=2)
    assert u.chunks == x.chunks and u.dtype == np.float32
    ref = denoise_tv(v, 2.0, method="exact", levels=32, connectivity=2)
    got = u.compute()
    assert tv_energy(got, v, 2.0, connectivity=2) == pytest.approx(
        tv_energy(ref, v, 2.0, connectivity=2), rel=1e-9)
    res = denoise_tv_chunked(x, 2.0, method="exact", levels=32, connectivity=2)
    assert res.method == "exact" and res.converged


def test_integer_default_grid_and_spacing_weights():
    rng = np.random.default_rng(8)
    v = rng.integers(0, 40, size=(18, 22)).astype(np.uint8)
    ref = solve_exact(v, 3.0, spacing=(2.0, 1.0))
    res = solve_exact_chunked(da.from_array(v, chunks=(6, 11)), 3.0, spacing=(2.0, 1.0),
                              chunks=(6, 11))  # fmt: skip
    np.testing.assert_array_equal(res.extra["levels"], ref.extra["levels"])
    w = resolve_weights(2, 1, None, (2.0, 1.0))
    assert tv_energy(res.u.compute(), v, 3.0, connectivity=1, weights=w) == pytest.approx(
        ref.energy, rel=1e-10)


def test_state_on_disk_and_out_zarr(tmp_path):
    v = _plateau((24, 28))
    x = da.from_array(v, chunks=8)
    mem = solve_exact_chunked(x, 2.0, levels=32, chunks=8, state="memory")
    disk = solve_exact_chunked(x, 2.0, levels=32, chunks=8, state="disk",
                               state_dir=tmp_path / "st", out=tmp_path / "u.zarr")  # fmt: skip
    np.testing.assert_array_equal(mem.u.compute(), disk.u.compute())
    import zarr

    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "u.zarr"))[...],
                                  mem.u.compute())  # fmt: skip


@pytest.mark.parametrize("scheduler", ["synchronous", "processes"])
def test_other_local_schedulers(scheduler):
    v = _plateau((20, 24))
    x = da.from_array(v, chunks=10)
    ref = solve_exact_chunked(x, 2.0, levels=16, chunks=10)
    res = solve_exact_chunked(x, 2.0, levels=16, chunks=10, scheduler=scheduler)
    np.testing.assert_array_equal(res.u.compute(), ref.u.compute())


@pytest.mark.slow
def test_a_local_cluster_gives_the_threaded_result():
    distributed = pytest.importorskip("distributed")
    v = _plateau((20, 24))
    x = da.from_array(v, chunks=10)
    ref = solve_exact_chunked(x, 2.0, levels=16, chunks=10)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        res = solve_exact_chunked(x, 2.0, levels=16, chunks=10, scheduler=client)
        np.testing.assert_array_equal(res.u.compute(), ref.u.compute())
        lazy = denoise_tv(x, 2.0, method="exact", levels=16)
        np.testing.assert_array_equal(lazy.compute(), ref.u.compute())


def test_callback_reports_passes_and_cancels():
    v = np.random.default_rng(6).normal(size=(30, 30)) * 3
    seen = []

    def cb(info):
        seen.append(info)
        return True

    res = solve_exact_chunked(da.from_array(v, chunks=10), 0.5, levels=32, chunks=10,
                              callback=cb)  # fmt: skip
    assert res.cancelled and not res.converged and len(seen) == 1
    assert seen[0]["method"] == "exact" and seen[0]["iter"] == 1 and seen[0]["undecided"] >= 0
    full = []
    solve_exact_chunked(da.from_array(v, chunks=10), 0.5, levels=32, chunks=10,
                        callback=lambda i: full.append(i) and False)  # fmt: skip
    assert full[-1]["fraction"] == 1.0 and full[-1]["gap"] == 0.0


def test_input_never_modified_nor_computed_whole():
    v = np.random.default_rng(9).normal(size=(16, 18))
    before = v.copy()
    res = solve_exact_chunked(da.from_array(v, chunks=8), 0.5, levels=16, chunks=8)
    res.u.compute()
    np.testing.assert_array_equal(v, before)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"overlap": -1}, ValueError, "overlap must be an integer >= 0, got -1"),
    ({"max_passes": 1.5}, ValueError, "max_passes must be an integer >= 0, got 1.5"),
    ({"max_bytes": -3}, ValueError, "max_bytes must be None or an integer >= 0, got -3"),
    ({"fidelity": "l3"}, ValueError, "fidelity must be one of"),
    ({"connectivity": 3}, ValueError, "connectivity"),
    ({"levels": 70000}, ValueError, "levels must have at most 65536 values"),
])  # fmt: skip
def test_bad_arguments(kwargs, exc, match):
    x = da.from_array(np.random.default_rng(0).random((12, 12)), chunks=6)
    with pytest.raises(exc, match=match):
        solve_exact_chunked(x, 0.5, **kwargs)


def test_nan_and_negative_poisson_data():
    v = np.ones((10, 10))
    v[3, 4] = np.nan
    with pytest.raises(ValueError, match="finite"):
        solve_exact_chunked(da.from_array(v, chunks=5), 0.5, levels=8)
    with pytest.raises(ValueError, match="poisson"):
        solve_exact_chunked(da.from_array(-np.ones((10, 10)), chunks=5), 0.5,
                            fidelity="poisson", levels=8)  # fmt: skip


def test_iterative_methods_refuse_exact_only_arguments():
    x = da.from_array(np.zeros((8, 8)), chunks=4)
    with pytest.raises(ValueError, match="belong to method='exact'"):
        denoise_tv_chunked(x, 0.5, connectivity=2)


def test_a_volume_that_fits_is_solved_at_once_unless_chunks_are_given(monkeypatch):
    from napari_tv import _exact_chunked

    v = _plateau((24, 30))
    x = da.from_array(v, chunks=8)
    ref = solve_exact(v, 2.0, levels=32)
    direct = solve_exact_chunked(x, 2.0, levels=32)
    assert direct.extra["in_memory"] and direct.rounds == 0 and direct.converged
    np.testing.assert_array_equal(direct.u.compute(), ref.u)
    # too big for the share of the memory it may take at once: the passes
    monkeypatch.setattr(_exact_chunked, "IN_MEMORY_SHARE", 0.0)
    chunked = solve_exact_chunked(x, 2.0, levels=32)
    assert not chunked.extra["in_memory"] and chunked.rounds >= 1 and chunked.converged
    assert chunked.energy == pytest.approx(ref.energy, rel=1e-10)
    # chunks given: the passes, whatever the memory
    monkeypatch.undo()
    assert not solve_exact_chunked(x, 2.0, levels=32, chunks=12).extra["in_memory"]


def test_l1_ties_on_integer_data_give_the_optimal_energy():
    """Exact ties broken differently by rounding in two solves of a block: no error, the
    optimal energy (the case that crossed the bounds)."""
    v = np.random.default_rng(3).integers(0, 40, (64, 64)).astype(np.uint8)
    ref = solve_exact(v, 0.6, fidelity="l1")
    res = solve_exact_chunked(da.from_array(v, chunks=32), 0.6, fidelity="l1", chunks=32)
    assert res.converged
    got = tv_energy(res.u.compute(), v.astype(np.float32), 0.6, fidelity="l1", connectivity=1)
    assert got == pytest.approx(ref.energy, rel=1e-9)


def test_two_solves_with_one_state_dir_keep_their_own_files(tmp_path):
    rng = np.random.default_rng(12)
    x1 = da.from_array(rng.normal(size=(24, 24)), chunks=12)
    x2 = da.from_array(rng.normal(size=(24, 24)) + 5, chunks=12)
    r1 = solve_exact_chunked(x1, 1.0, levels=16, state="disk", state_dir=tmp_path, chunks=12)
    u1 = r1.u.compute()
    r2 = solve_exact_chunked(x2, 1.0, levels=16, state="disk", state_dir=tmp_path, chunks=12)
    np.testing.assert_array_equal(r1.u.compute(), u1)
    assert r1.extra["state_dir"] != r2.extra["state_dir"]
    # with out=, the state is removed at the end
    r3 = solve_exact_chunked(x1, 1.0, levels=16, state="disk", state_dir=tmp_path, chunks=12,
                             out=tmp_path / "u.zarr")  # fmt: skip
    assert r3.extra["state_dir"] is None
    np.testing.assert_array_equal(r3.u.compute(), u1)
    assert len(list(tmp_path.iterdir())) == 3  # r1's and r2's states, and u.zarr


def test_exact_refuses_state_typos_and_periodic_boundaries():
    x = da.from_array(np.zeros((8, 8)), chunks=4)
    with pytest.raises(ValueError, match="state must be 'auto', 'memory' or 'disk', got 'disc'"):
        solve_exact_chunked(x, 1.0, state="disc")
    with pytest.raises(ValueError, match="does not support boundary='periodic'"):
        denoise_tv_chunked(x, 1.0, method="exact", boundary="periodic")
    with pytest.raises(ValueError, match="does not support boundary='periodic'"):
        denoise_tv(x, 1.0, method="exact", boundary="periodic")
