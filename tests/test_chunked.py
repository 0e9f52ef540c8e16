"""The chunked solve on dask (napari_tv.chunked): the same iterates as in memory, a global
certificate, lazy in and out, any scheduler, state in memory or on disk."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

from napari_tv import denoise_tv  # noqa: E402
from napari_tv.chunked import ChunkedResult, denoise_tv_chunked  # noqa: E402
from napari_tv.operators import tv_energy  # noqa: E402


def _data(shape, fidelity, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    clean = (np.indices(shape).sum(axis=0) % 7 > 3).astype(np.float64)
    v = clean + 0.25 * rng.standard_normal(shape)
    if fidelity == "poisson":
        v = rng.poisson(4 * clean + 1).astype(np.float64)
    return v.astype(dtype)


CASES = [  # (shape, chunks): 2-D and 3-D, even, uneven, thin
    ((30, 41), (15, 14)),
    ((17, 20, 23), (9, 10, 12)),
    ((12, 33), (12, 11)),
]


@pytest.mark.parametrize("fidelity", ["l2", "l1", "poisson"])
@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_the_chunked_iterates_are_the_in_memory_ones(fidelity, tv, boundary, case):
    """Halo = iterations per round, so every block computes exactly what the whole-volume
    iteration computes: same iterates, same iteration count, same gap."""
    shape, chunks = CASES[case]
    v = _data(shape, fidelity, seed=case)
    beta = 0.3 if fidelity == "l2" else 0.6
    kw = dict(fidelity=fidelity, tv=tv, boundary=boundary, tol=1e-4, max_num_iter=400)
    res = denoise_tv_chunked(da.from_array(v, chunks=chunks), beta, iterations_per_round=7,
                             chunks=chunks, **kw)  # these blocks, not merged ones
    assert res.chunks[-1] != (shape[-1],) or len(res.chunks[0]) > 1
    u, ref = denoise_tv(v, beta, method="primal_dual", return_info=True, **kw)
    assert res.n_iter == ref.n_iter
    np.testing.assert_allclose(res.u.compute(), u, rtol=0, atol=1e-12 * (1 + np.abs(v).max()))
    assert res.gap == pytest.approx(ref.gap, rel=1e-6, abs=1e-12)
    # the reported energy is the energy of the returned u
    e = tv_energy(res.u.compute(), v, beta, fidelity=fidelity, tv=tv, boundary=boundary)
    assert res.energy == pytest.approx(e, rel=1e-9)


def _optimum(v, beta, **kw):
    """A tightly converged in-memory solve: the reference optimum."""
    _, res = denoise_tv(v, beta, method="primal_dual", tol=1e-8, max_num_iter=50000,
                        return_info=True, **kw)  # fmt: skip
    return res.energy


@pytest.mark.parametrize("method", ["primal_dual", "chambolle", "bregman", "gradient_descent"])
@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
def test_energy_within_two_tol_of_the_in_memory_optimum_for_every_method(method, tv):
    v = _data((20, 22, 18), "l2", seed=3)
    tol, beta = 1e-3, 0.4
    res = denoise_tv(da.from_array(v, chunks=(7, 11, 9)), beta, method=method, tv=tv, tol=tol,
                     return_info=True)[1]  # fmt: skip
    assert isinstance(res, ChunkedResult) and res.converged and res.gap <= tol
    best = _optimum(v, beta, tv=tv)
    assert res.energy - best <= 2 * tol * res.energy
    assert res.energy >= best * (1 - 1e-9)


@pytest.mark.parametrize("fidelity", ["l1", "poisson"])
def test_energy_within_two_tol_for_l1_and_poisson(fidelity):
    v = _data((26, 31), fidelity, seed=4)
    tol, beta = 1e-3, 0.5
    res = denoise_tv_chunked(da.from_array(v, chunks=(9, 10)), beta, fidelity=fidelity, tol=tol)
    assert res.converged
    best = _optimum(v, beta, fidelity=fidelity)
    floor = float((v - v * np.log(np.where(v > 0, v, 1))).sum()) if fidelity == "poisson" else 0
    assert res.energy - best <= 2 * tol * (res.energy - floor)


def _counting(v, chunks):
    """A dask array whose blocks count how often they are computed."""
    calls = []

    def block(b):
        calls.append(1)
        return b

    base = da.from_array(v, chunks=chunks)
    return base.map_blocks(block, meta=np.empty((0,) * v.ndim, v.dtype)), calls


def test_denoise_tv_on_dask_is_lazy_and_keeps_shape_chunks_and_the_input():
    v = _data((20, 30), "l2")
    keep = v.copy()
    x, calls = _counting(v, (10, 12))
    u = denoise_tv(x, 0.3)
    assert calls == []  # nothing computed at the call
    assert u.shape == x.shape and u.chunks == x.chunks and u.dtype == np.float64
    out = u.compute()
    np.testing.assert_allclose(out, denoise_tv(v, 0.3, method="primal_dual"), atol=1e-12)
    n = len(calls)
    np.testing.assert_array_equal(u[3:7, 5:9].compute(), out[3:7, 5:9])  # stored: no new solve
    assert len(calls) == n
    np.testing.assert_array_equal(v, keep)


def test_dtypes_on_dask():
    v = (_data((16, 18), "l2") * 40 + 100).astype(np.uint16)
    x = da.from_array(v, chunks=8)
    u = denoise_tv(x, 5.0)
    assert u.dtype == np.float32
    np.testing.assert_allclose(u.compute(), denoise_tv(v, 5.0), rtol=1e-5, atol=1e-3)
    h = da.from_array(v.astype(np.float16), chunks=8)
    assert denoise_tv(h, 5.0).dtype == np.float32


def test_state_on_disk_and_out_zarr_equal_in_memory(tmp_path):
    zarr = pytest.importorskip("zarr")
    v = _data((14, 15, 16), "l2", seed=5).astype(np.float32)
    x = da.from_array(v, chunks=(7, 8, 8))
    mem = denoise_tv_chunked(x, 0.3, state="memory", chunks=x.chunks)
    disk = denoise_tv_chunked(x, 0.3, state="disk", out=tmp_path / "u.zarr", chunks=x.chunks)
    assert disk.extra["state"] == "disk" and mem.extra["state"] == "memory"
    np.testing.assert_array_equal(disk.u.compute(), mem.u.compute())
    stored = zarr.open_array(str(tmp_path / "u.zarr"), mode="r")
    np.testing.assert_array_equal(stored[...], mem.u.compute())
    assert disk.n_iter == mem.n_iter and disk.rounds == mem.rounds


def test_schedulers_give_the_same_result():
    v = _data((18, 20), "l2", seed=6)
    x = da.from_array(v, chunks=9)
    kw = dict(tol=0, max_num_iter=30, chunks=9)  # 3 rounds: a process pool costs 1-2 s
    ref = denoise_tv_chunked(x, 0.3, **kw).u.compute()
    for scheduler in ("synchronous", "processes"):
        res = denoise_tv_chunked(x, 0.3, scheduler=scheduler, **kw)
        np.testing.assert_array_equal(res.u.compute(), ref)
    with dask.config.set(scheduler="processes"):  # its own (merged) blocks: same iterates
        lazy = denoise_tv(x, 0.3, tol=0, max_num_iter=30)
        np.testing.assert_allclose(lazy.compute(), ref, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_a_local_cluster_gives_the_threaded_result():
    distributed = pytest.importorskip("distributed")
    v = _data((12, 16, 18), "l2", seed=7).astype(np.float32)
    x = da.from_array(v, chunks=(6, 8, 9))
    ref = denoise_tv_chunked(x, 0.3, chunks=x.chunks)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        res = denoise_tv_chunked(x, 0.3, scheduler=client, chunks=x.chunks)
        np.testing.assert_array_equal(res.u.compute(), ref.u.compute())
        assert res.n_iter == ref.n_iter
        # the lazy array, computed on the cluster (the solve runs from a worker)
        np.testing.assert_array_equal(denoise_tv(x, 0.3).compute(), ref.u.compute())


def test_callback_reports_rounds_and_cancels():
    v = _data((24, 24), "l1", seed=8)
    seen = []

    def cb(info):
        seen.append(info)
        return info["iter"] >= 40

    res = denoise_tv_chunked(da.from_array(v, chunks=12), 0.6, fidelity="l1", tol=1e-9,
                             callback=cb, iterations_per_round=5)  # fmt: skip
    assert res.cancelled and not res.converged
    assert 40 <= res.n_iter <= 50
    assert {"method", "iter", "max_iter", "energy", "gap", "elapsed", "fraction", "round"} <= set(
        seen[-1]
    )
    assert [s["round"] for s in seen] == sorted(s["round"] for s in seen)


def test_not_converged_says_so():
    v = _data((20, 20), "l1", seed=9)
    x = da.from_array(v, chunks=10)
    res = denoise_tv_chunked(x, 0.6, fidelity="l1", tol=1e-9, max_num_iter=30)
    assert not res.converged and res.n_iter == 30 and "not converged" in res.extra["note"]
    with pytest.warns(RuntimeWarning, match="not converged"):
        denoise_tv(x, 0.6, fidelity="l1", tol=1e-9, max_num_iter=30).compute()


def test_bad_input():
    x = da.from_array(np.ones((6, 6)), chunks=3)
    with pytest.raises(ValueError, match="image must have 1, 2, 3 dimensions"):
        denoise_tv(da.ones((2, 3, 4, 5), chunks=2), 0.1)
    with pytest.raises(TypeError, match="complex"):
        denoise_tv(x.astype(complex), 0.1)
    with pytest.raises(ValueError, match="must not be empty"):
        denoise_tv(da.ones((0, 4), chunks=2), 0.1)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        denoise_tv(x, -1.0)
    with pytest.raises(ValueError, match="iterations_per_round must be >= 1, got 0"):
        denoise_tv_chunked(x, 0.1, iterations_per_round=0)
    with pytest.raises(ValueError, match="state must be .*'ram'"):
        denoise_tv_chunked(x, 0.1, state="ram")
    with pytest.raises(ValueError, match="init is not supported for a dask image"):
        denoise_tv(x, 0.1, init=np.ones((6, 6)))
    with pytest.raises(ValueError, match="options are not supported"):
        denoise_tv(x, 0.1, method="bregman", options={"rho": 2.0})
    bad = np.ones((8, 8))
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="image must be finite, got 1 NaN"):
        denoise_tv_chunked(da.from_array(bad, chunks=4), 0.1)
    with pytest.raises(ValueError, match="fidelity='poisson' needs image >= 0"):
        denoise_tv_chunked(da.from_array(-np.ones((8, 8)), chunks=4), 0.1, fidelity="poisson")


def test_special_cases():
    v = _data((9, 11), "l2")
    x = da.from_array(v, chunks=5)
    np.testing.assert_array_equal(denoise_tv(x, 0.0).compute(), v)
    const = da.full((9, 11), 3.0, chunks=4)
    res = denoise_tv_chunked(const, 0.5)
    assert res.n_iter == 0 and res.converged
    np.testing.assert_array_equal(res.u.compute(), np.full((9, 11), 3.0))
    # a periodic axis shorter than the halo: the halo shrinks to fit
    thin = _data((3, 40), "l2", seed=2)
    r = denoise_tv_chunked(da.from_array(thin, chunks=(3, 10)), 0.3, boundary="periodic")
    u = denoise_tv(thin, 0.3, boundary="periodic", method="primal_dual")
    np.testing.assert_allclose(r.u.compute(), u, atol=1e-12)
    assert r.extra["iterations_per_round"] == 2 and r.rounds >= r.n_iter // 2


def test_exact_on_dask_is_computed_in_memory():
    v = (_data((10, 12), "l2", seed=1) * 20).round().astype(np.int16)
    u = denoise_tv(da.from_array(v, chunks=5), 8.0, method="exact")
    np.testing.assert_array_equal(u.compute(), denoise_tv(v, 8.0, method="exact"))


def test_channels_and_auto_beta_on_dask():
    from napari_tv.beta_choice import suggest_beta

    v = _data((2, 16, 18), "l2", seed=3)
    u = denoise_tv(da.from_array(v, chunks=(1, 8, 9)), 0.3, channel_axis=0)
    for c in range(2):
        np.testing.assert_allclose(u[c].compute(), denoise_tv(v[c], 0.3, method="primal_dual"),
                                   atol=1e-12)  # fmt: skip
    _, res = denoise_tv(da.from_array(v[0], chunks=8), "auto", return_info=True)
    assert res.extra["beta"] == pytest.approx(suggest_beta(v[0]))


@pytest.mark.parametrize("rounds_k", [1, 3, 16])
def test_any_round_length_gives_the_same_iterates(rounds_k):
    v = _data((13, 14, 15), "l2", seed=11)
    base = denoise_tv_chunked(da.from_array(v, chunks=15), 0.3, iterations_per_round=50)
    res = denoise_tv_chunked(da.from_array(v, chunks=(5, 7, 8)), 0.3, chunks=(5, 7, 8),
                             iterations_per_round=rounds_k)  # fmt: skip
    np.testing.assert_allclose(res.u.compute(), base.u.compute(), atol=1e-12)
    assert all(min(c) >= min(rounds_k, n) or len(c) == 1
               for c, n in zip(res.chunks, v.shape, strict=True))  # fmt: skip


def test_every_iteration_per_round_and_chunking_small_grid():
    """A small exhaustive grid: chunk sizes 1-4 (merged up to the halo) and halos 1-3."""
    v = _data((7, 9), "l2", seed=12)
    ref = denoise_tv(v, 0.3, method="primal_dual", tol=1e-5)
    for c, k in itertools.product((1, 2, 4), (1, 2, 3)):
        r = denoise_tv_chunked(da.from_array(v, chunks=c), 0.3, iterations_per_round=k,
                               tol=1e-5, chunks=c)  # fmt: skip
        np.testing.assert_allclose(r.u.compute(), ref, atol=1e-12, err_msg=f"chunks {c}, k {k}")


@pytest.mark.slow
@pytest.mark.parametrize("state", ["memory", "disk"])
def test_a_worker_lost_mid_run_is_survived(state):
    """A ``dask.distributed`` worker killed between two rounds: its tasks run again elsewhere
    (the state on disk, or recomputed from the persisted graph) and the result is the same."""
    import os

    distributed = pytest.importorskip("distributed")
    v = _data((24, 32, 32), "l2", seed=13).astype(np.float32)
    x = da.from_array(v, chunks=(12, 16, 16))
    kw = dict(tol=0, max_num_iter=100, state=state, chunks=(12, 16, 16))
    ref = denoise_tv_chunked(x, 0.3, **kw)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        killed = []

        def kill_one(info):
            if info["iter"] >= 40 and not killed:
                victim = sorted(client.scheduler_info()["workers"])[0]
                killed.append(victim)
                with contextlib.suppress(Exception):  # the worker dies before it answers
                    client.run(os._exit, 1, workers=[victim])
            return False

        res = denoise_tv_chunked(x, 0.3, scheduler=client, callback=kill_one, **kw)
        assert killed and res.n_iter == 100
        np.testing.assert_array_equal(res.u.compute(), ref.u.compute())


def test_default_blocks_merge_the_input_chunks():
    """Without ``chunks`` the input's chunks are merged into blocks as big as the state's
    place allows (fewer halos), one per parallel task at least; ``out`` keeps the input's."""
    from napari_tv.chunked import solve_chunks

    assert solve_chunks(((128, 128),) * 3, 2**22 * 2, 2) == ((128, 128), (256,), (256,))
    assert solve_chunks(((64,) * 4,) * 3, 2**20, 1) == ((64,) * 4, (64,) * 4, (256,))
    assert solve_chunks(((10, 10, 5),), 100, 4) == ((10, 10, 5),)  # never splits a chunk
    v = _data((24, 24, 24), "l2", seed=2)
    x = da.from_array(v, chunks=(12, 12, 12))
    with dask.config.set(num_workers=2):
        res = denoise_tv_chunked(x, 0.3, state="memory", scheduler="threads")
    assert res.chunks == ((12, 12), (24,), (24,))
    np.testing.assert_allclose(res.u.compute(), denoise_tv(v, 0.3, method="primal_dual"),
                               atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("fidelity", ["l2", "l1", "poisson"])
@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
def test_both_kinds_of_rounds_give_the_in_memory_iterates(fidelity, tv, boundary):
    """The state in place (threads, memory) and rebuilt from the neighbours each round (state
    on disk: the path of worker processes and clusters): the same iterates."""
    shape, chunks = CASES[1]
    v = _data(shape, fidelity, seed=21)
    kw = dict(fidelity=fidelity, tv=tv, boundary=boundary, tol=0, max_num_iter=37,
              iterations_per_round=5, chunks=chunks)  # fmt: skip
    x = da.from_array(v, chunks=chunks)
    a = denoise_tv_chunked(x, 0.4, state="memory", **kw)
    b = denoise_tv_chunked(x, 0.4, state="disk", **kw)
    assert a.extra["rounds"] == "InPlaceRounds" and b.extra["rounds"] == "DaskRounds"
    u = denoise_tv(v, 0.4, method="primal_dual", fidelity=fidelity, tv=tv, boundary=boundary,
                   tol=0, max_num_iter=37)  # fmt: skip
    for res in (a, b):
        np.testing.assert_allclose(res.u.compute(), u, rtol=0, atol=1e-12)
    assert a.gap == pytest.approx(b.gap, rel=1e-9)
