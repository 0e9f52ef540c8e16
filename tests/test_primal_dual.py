"""Chambolle–Pock: every fidelity, checked by oracles and by gaps computed in NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_tv.solvers import denoise_tv
from reference.iterative import (
    feasible_dual_gap,
    fidelity,
    primal_energy,
    rof_fista_dual,
)

SHAPES = {1: (15,), 2: (9, 11), 3: (5, 6, 7)}


def blocky(rng, shape, noise=0.3):
    v = np.zeros(shape)
    v[tuple(slice(0, n // 2) for n in shape)] = 1.0
    v[tuple(slice(n // 3, None) for n in shape)] += 0.5
    return v + noise * rng.standard_normal(shape)


def counts(rng, shape):
    """Poisson counts of a blocky intensity (with zeros)."""
    lam = 3.0 * np.clip(blocky(rng, shape, noise=0.0), 0, None) + 0.2
    return rng.poisson(lam).astype(np.float64)


def solve(v, beta, **kw):
    kw.setdefault("tol", 1e-8)
    kw.setdefault("max_num_iter", 20000)
    return denoise_tv(v, beta, method="primal_dual", return_info=True, **kw)[1]


@pytest.mark.parametrize(
    ("ndim", "tv", "boundary"),
    [
        (1, "isotropic", "neumann"),
        (2, "isotropic", "neumann"),
        (2, "anisotropic", "periodic"),
        (3, "isotropic", "periodic"),
        (3, "anisotropic", "neumann"),
    ],
)
def test_l2_matches_reference_and_chambolle(rng, ndim, tv, boundary):
    v = blocky(rng, SHAPES[ndim])
    beta = 0.4
    periodic = boundary == "periodic"
    u_ref, _ = rof_fista_dual(v, beta, tv, periodic=periodic, n_iter=6000)
    e_ref = primal_energy(u_ref, v, beta, "l2", tv, periodic=periodic)
    res = solve(v, beta, tv=tv, boundary=boundary)
    assert res.converged and res.gap < 1e-8
    assert res.energy == pytest.approx(e_ref, rel=1e-6)
    cham = denoise_tv(
        v, beta, tv=tv, boundary=boundary, tol=1e-8, max_num_iter=30000, return_info=True
    )[1]
    assert res.energy == pytest.approx(cham.energy, rel=1e-5)


@pytest.mark.parametrize(
    ("fid", "tv"), list(itertools.product(["l1", "poisson"], ["isotropic", "anisotropic"]))
)
@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
def test_gap_recomputed_in_numpy(rng, fid, tv, shape):
    """The solver's certificate, recomputed from scratch: P(u) - D(c p) with the NumPy
    conjugates (the scale c found by a ladder search, independently of the solver's)."""
    v = blocky(rng, shape) if fid == "l1" else counts(rng, shape)
    beta = 0.5
    res = solve(v, beta, fidelity=fid, tv=tv, tol=1e-6)
    assert res.converged and 0 <= res.gap < 1e-6
    gap_abs, c = feasible_dual_gap(res.u, v, res.extra["p"], beta, fid, tv)
    floor = fidelity(v, v, fid)
    assert c > 0.99
    assert gap_abs / (res.energy - floor) < 1e-5
    assert res.energy == pytest.approx(primal_energy(res.u, v, beta, fid, tv), rel=1e-12)


@pytest.mark.parametrize("fid", ["l1", "poisson"])
def test_local_perturbations_do_not_decrease_energy(rng, fid):
    """A KKT probe: moving any single voxel up or down never lowers the energy (beyond the
    certified gap)."""
    v = blocky(rng, (7, 8)) if fid == "l1" else counts(rng, (7, 8))
    beta = 0.5
    res = solve(v, beta, fidelity=fid, tol=1e-9, max_num_iter=40000)
    e0 = primal_energy(res.u, v, beta, fid)
    slack = max(res.gap, 1e-9) * abs(e0 - fidelity(v, v, fid)) + 1e-9
    for s in rng.choice(v.size, 15, replace=False):
        for step in (1e-2, -1e-2, 1e-4, -1e-4):
            u = res.u.copy()
            u.flat[s] += step
            assert primal_energy(u, v, beta, fid) >= e0 - slack


def test_l1_anisotropic_matches_exact_on_data_levels(rng):
    """L1-TV has a minimiser taking data values; with the grid of all data values the
    max-flow dichotomy is exact for anisotropic TV (graph TV, connectivity 1)."""
    pytest.importorskip("napari_tv.solvers.exact")
    v = np.round(blocky(rng, (8, 9)), 1)
    beta = 0.6
    res = solve(v, beta, fidelity="l1", tv="anisotropic", tol=1e-9, max_num_iter=40000)
    exact = denoise_tv(
        v, beta, method="exact", fidelity="l1", levels=np.unique(v), return_info=True
    )[1]
    assert res.energy == pytest.approx(exact.energy, rel=1e-5)


def test_poisson_1d_brute_force(rng):
    """A 3-sample Poisson-TV problem minimised on a fine grid around the solver's answer."""
    v = np.array([4.0, 0.0, 7.0])
    beta = 1.5
    res = solve(v, beta, fidelity="poisson", tol=1e-10, max_num_iter=50000)
    e = primal_energy(res.u, v, beta, "poisson")
    grid = [np.linspace(max(x - 0.2, 1e-6), x + 0.2, 81) for x in res.u]
    a, b, c = np.meshgrid(*grid, indexing="ij")
    best = np.inf
    for i in range(a.shape[0]):
        uu = np.stack([a[i], b[i], c[i]])
        fid = (uu - v[:, None, None] * np.log(uu)).sum(0)
        tv = np.abs(uu[1] - uu[0]) + np.abs(uu[2] - uu[1])
        best = min(best, float((fid + beta * tv).min()))
    assert e <= best + 1e-9


def test_warm_start_crosses_methods(rng):
    v = blocky(rng, (9, 11))
    cham = denoise_tv(v, 0.4, tol=1e-7, max_num_iter=30000, return_info=True)[1]
    res = solve(v, 0.4, tol=1e-6, init=cham)
    assert res.converged and res.n_iter <= 20
    assert res.energy == pytest.approx(cham.energy, rel=1e-6)


def test_array_init_is_used(rng):
    v = blocky(rng, (9, 11))
    first = solve(v, 0.4, tol=1e-8, fidelity="l1")
    zero = solve(v, 0.4, tol=0.0, max_num_iter=0, init=first.u, fidelity="l1")
    np.testing.assert_array_equal(zero.u, first.u)
    assert zero.energy == first.energy and zero.n_iter == 0


def test_callback_stops_and_reports(rng):
    v = blocky(rng, (9, 11))
    seen = []

    def cb(info):
        seen.append(info)
        return info["iter"] >= 30

    res = solve(v, 0.4, tol=0.0, max_num_iter=1000, callback=cb, fidelity="l1")
    assert res.cancelled and not res.converged and res.n_iter == 30
    assert [i["iter"] for i in seen] == [10, 20, 30]
    for key in ("method", "iter", "max_iter", "energy", "gap", "elapsed", "fraction"):
        assert key in seen[-1]
    assert seen[-1]["method"] == "primal_dual" and seen[-1]["fraction"] == pytest.approx(0.03)


@pytest.mark.parametrize("fid", ["l2", "l1", "poisson"])
def test_tol_zero_and_float32(rng, fid):
    v = counts(rng, (6, 7)).astype(np.float32)
    res = solve(v, 0.5, fidelity=fid, tol=0.0, max_num_iter=23)
    assert res.n_iter == 23 and res.u.dtype == np.float32 and res.gap >= 0


@pytest.mark.parametrize(("fid", "beta"), [("l2", 0.3), ("l1", 0.4), ("poisson", 0.3)])
def test_iterations_do_not_depend_on_the_intensity_scale(rng, fid, beta):
    """Data x1, x100, x1000 (β scaled with it for L2, whose β carries the data's unit; L1's and
    Poisson's β has none): the same iteration count and the same u up to the scale."""
    v = counts(rng, (24, 20)) if fid == "poisson" else blocky(rng, (24, 20))
    runs = []
    for s in (1.0, 100.0, 1000.0):
        b = beta * s if fid == "l2" else beta
        u, info = denoise_tv(
            v * s, b, method="primal_dual", fidelity=fid, tol=1e-5, max_num_iter=20000,
            return_info=True,
        )
        assert info.converged, (s, info)
        runs.append((u / s, info.n_iter))
    iters = [n for _, n in runs]
    assert max(iters) - min(iters) <= 10, iters
    for u, _ in runs[1:]:
        np.testing.assert_allclose(u, runs[0][0], atol=1e-3 * np.ptp(v))
