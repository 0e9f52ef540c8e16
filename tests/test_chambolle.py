"""Chambolle's dual projection: the minimiser, the gap certificate, stopping and warm starts."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv.operators import divergence, gradient
from napari_tv.solvers import denoise_tv
from napari_tv.solvers._monitor import CHECK_EVERY
from napari_tv.solvers._stencils import divergence as k_divergence
from napari_tv.solvers._stencils import gradient as k_gradient
from napari_tv.solvers._stencils import project_dual
from reference.iterative import div, feasible_dual_gap, grad, primal_energy, rof_fista_dual

SHAPES = {1: (15,), 2: (9, 11), 3: (5, 6, 7)}


def blocky(rng, shape, noise=0.3):
    """A piecewise-constant image plus Gaussian noise."""
    v = np.zeros(shape)
    v[tuple(slice(0, n // 2) for n in shape)] = 1.0
    v[tuple(slice(n // 3, None) for n in shape)] += 0.5
    return v + noise * rng.standard_normal(shape)


def solve(v, beta, **kw):
    kw.setdefault("tol", 1e-9)
    kw.setdefault("max_num_iter", 30000)
    return denoise_tv(v, beta, method="chambolle", return_info=True, **kw)[1]


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("periodic", [False, True])
def test_kernels_match_operators(rng, ndim, periodic):
    f = rng.standard_normal(SHAPES[ndim])
    spacing = tuple(rng.uniform(0.5, 2.0, ndim))
    boundary = "periodic" if periodic else "neumann"
    g = k_gradient(f, spacing, periodic)
    np.testing.assert_allclose(g, gradient(f, boundary=boundary, spacing=spacing), atol=1e-12)
    p = rng.standard_normal((ndim,) + f.shape)
    np.testing.assert_allclose(
        k_divergence(p, spacing, periodic),
        divergence(p, boundary=boundary, spacing=spacing),
        atol=1e-12,
    )


@pytest.mark.parametrize("isotropic", [True, False])
def test_project_dual(rng, isotropic):
    p = 2 * rng.standard_normal((2, 6, 5))
    q = project_dual(p.copy(), 1.0, isotropic)
    if isotropic:
        n = np.sqrt((p**2).sum(0))
        np.testing.assert_allclose(q, p / np.maximum(1, n))
    else:
        np.testing.assert_allclose(q, np.clip(p, -1, 1))


@pytest.mark.parametrize(
    ("ndim", "tv", "boundary"),
    [
        (1, "isotropic", "neumann"),
        (2, "isotropic", "neumann"),
        (2, "anisotropic", "neumann"),
        (2, "isotropic", "periodic"),
        (3, "isotropic", "neumann"),
        (3, "anisotropic", "periodic"),
    ],
)
def test_energy_matches_reference(rng, ndim, tv, boundary):
    v = blocky(rng, SHAPES[ndim])
    beta = 0.4
    periodic = boundary == "periodic"
    u_ref, p_ref = rof_fista_dual(v, beta, tv, periodic=periodic, n_iter=6000)
    e_ref = primal_energy(u_ref, v, beta, "l2", tv, periodic=periodic)
    gap_ref, _ = feasible_dual_gap(u_ref, v, p_ref, beta, "l2", tv, periodic=periodic)
    assert gap_ref < 1e-7 * e_ref  # the oracle itself is converged
    res = solve(v, beta, tv=tv, boundary=boundary)
    assert res.gap < 1e-5  # so res.energy <= (1 + 1e-5) * optimum
    assert res.energy == pytest.approx(e_ref, rel=1e-5)
    assert res.energy >= e_ref - 2e-7 * e_ref  # not below the optimum
    np.testing.assert_allclose(res.u, u_ref, atol=2e-3)


@pytest.mark.parametrize("shape", [(10, 12), (5, 6, 7)])
def test_matches_skimage_converged(rng, shape):
    from skimage.restoration import denoise_tv_chambolle

    v = blocky(rng, shape)
    beta = 0.3
    sk = denoise_tv_chambolle(v, weight=beta, eps=0.0, max_num_iter=15000)
    e_sk = primal_energy(sk, v, beta)
    res = solve(v, beta)
    assert res.energy == pytest.approx(e_sk, rel=1e-5)
    np.testing.assert_allclose(res.u, sk, atol=2e-3)


@pytest.mark.parametrize("tv", ["isotropic", "anisotropic"])
def test_spacing_weights_axis_differences(rng, tv):
    """spacing (2, 1, 1) is TV with the axis-0 differences weighted by 1/2."""
    v = blocky(rng, (5, 6, 7))
    beta = 0.5
    u_ref, _ = rof_fista_dual(v, beta, tv, weights=(0.5, 1.0, 1.0), n_iter=6000)
    e_ref = primal_energy(u_ref, v, beta, "l2", tv, weights=(0.5, 1.0, 1.0))
    res = solve(v, beta, tv=tv, spacing=(2.0, 1.0, 1.0))
    assert res.energy == pytest.approx(e_ref, rel=1e-5)
    unit = solve(v, beta, tv=tv)
    assert abs(unit.energy - res.energy) > 1e-3 * res.energy  # spacing changes the answer


def test_gap_is_an_independent_certificate(rng):
    v = blocky(rng, (9, 11))
    beta = 0.4
    res = solve(v, beta, tol=1e-4, max_num_iter=2000)
    gaps = [h["gap"] for h in res.history]
    assert all(g >= 0 for g in gaps)
    assert gaps[-1] < gaps[0]
    assert res.converged and res.gap < 1e-4 and gaps[-1] == res.gap
    assert res.n_iter == res.history[-1]["iter"] and res.n_iter % CHECK_EVERY == 0
    # the same gap recomputed from scratch with the NumPy oracle
    gap_abs, c = feasible_dual_gap(res.u, v, res.extra["p"], beta)
    assert c == 1.0
    assert gap_abs / res.energy == pytest.approx(res.gap, rel=1e-6, abs=1e-12)
    # and it bounds the true suboptimality
    u_ref, _ = rof_fista_dual(v, beta, n_iter=4000)
    e_ref = primal_energy(u_ref, v, beta)
    assert res.energy - e_ref <= res.gap * res.energy + 1e-9


@pytest.mark.parametrize("n", [0, 1, 37])
def test_tol_zero_runs_exactly_max_num_iter(rng, n):
    v = blocky(rng, (8, 9))
    res = solve(v, 0.3, tol=0.0, max_num_iter=n)
    assert res.n_iter == n and not res.converged
    assert np.isfinite(res.gap) and res.gap >= 0


def test_iterations_match_skimage_step_by_step(rng):
    """Same discretisation and step as scikit-image: its output after N updates is ours after
    N - 1 (it returns the image computed before the last dual update)."""
    from skimage.restoration import denoise_tv_chambolle

    v = blocky(rng, (12, 10))
    sk = denoise_tv_chambolle(v, weight=0.3, eps=0.0, max_num_iter=25)
    res = solve(v, 0.3, tol=0.0, max_num_iter=24)
    np.testing.assert_allclose(res.u, sk, atol=1e-10)


def test_warm_start_from_converged_result(rng):
    v = blocky(rng, (9, 11))
    first = solve(v, 0.4, tol=1e-6)
    again = denoise_tv(v, 0.4, method="chambolle", tol=1e-6, init=first, return_info=True)[1]
    assert again.converged and again.n_iter == CHECK_EVERY
    assert again.energy == pytest.approx(first.energy, rel=1e-7)


def test_float32_stays_float32(rng):
    v = blocky(rng, (9, 11))
    r64 = solve(v, 0.4, tol=1e-6)
    r32 = solve(v.astype(np.float32), 0.4, tol=1e-5, max_num_iter=5000)
    assert r32.u.dtype == np.float32 and r32.extra["p"].dtype == np.float32
    assert r32.energy == pytest.approx(r64.energy, rel=1e-4)


def test_beta_zero_returns_the_image(rng):
    v = blocky(rng, (5, 6))
    res = solve(v, 0.0)
    np.testing.assert_array_equal(res.u, v)
    assert res.converged and res.gap == 0.0


def test_constant_image_is_fixed(rng):
    v = np.full((6, 7), 3.5)
    res = solve(v, 1.0, tol=1e-6)
    np.testing.assert_allclose(res.u, v)
    assert res.converged and res.gap == 0.0


def test_gap_checks_every_10_then_every_10_percent(rng):
    v = blocky(rng, (6, 7))
    seen = []
    res = denoise_tv(
        v,
        0.3,
        tol=0.0,
        max_num_iter=455,
        callback=lambda i: seen.append(i["iter"]),
        return_info=True,
    )[1]
    expected = list(range(10, 201, 10)) + [220, 240, 260, 280, 300, 330, 360, 390, 420, 455]
    assert seen == expected == [h["iter"] for h in res.history]


def _numpy_chambolle(p, v, beta, tau, weights, periodic, isotropic, n):
    """n iterations of p <- proj(p + tau D(div p + v/beta)) written with the NumPy oracles."""
    for _ in range(n):
        g = tau * grad(div(p, weights, periodic) + v / beta, weights, periodic)
        if isotropic:
            p = (p + g) / (1.0 + np.sqrt((g**2).sum(axis=0)))
        else:
            p = np.clip(p + g, -1.0, 1.0)
    return p


@pytest.mark.parametrize(
    "shape",
    [(9, 11), (2, 7), (13, 1), (12, 5), (5, 6, 7), (2, 3, 4), (7, 1, 5), (6, 5, 1)],
    ids=str,
)
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize(
    ("blocks", "levels", "chunk"),
    [(1, 1, None), (2, 2, 1), (3, 3, 12), (4, 1, 12), (8, 5, 1), (2, 4, None), (1, 6, 20)],
    ids=lambda x: str(x),
)
def test_fused_sweep_matches_numpy_iteration(
    rng, shape, periodic, isotropic, blocks, levels, chunk
):
    """The fused sweep (several iterations per pass over the slabs, per-block halos by parity,
    flat row loops with fixed-up row ends, chunks of rows in 3-D, slabs of several rows in 2-D)
    computes exactly the textbook iteration, for any number of blocks, levels per pass, rows
    per chunk or slab, both boundaries, both updates and spacing; and p changed from outside
    is taken up after sync()."""
    from napari_tv.solvers._chambolle_sweep import FusedDualSweep
    from napari_tv.solvers._stencils import CHAMBOLLE, CLIP, inv_steps

    v = rng.standard_normal(shape)
    spacing = tuple(rng.uniform(0.5, 2.0, len(shape)))
    weights = np.min(spacing) / np.asarray(spacing)  # spacing is relative
    beta, tau = 0.7, 2.0 / (4.0 * (weights**2).sum())
    p = np.zeros((len(shape),) + shape)
    sweep = FusedDualSweep(
        p,
        v,
        inv_steps(spacing, len(shape)),
        periodic,
        tau,
        1.0 / beta,
        CHAMBOLLE if isotropic else CLIP,
        blocks=blocks,
        levels=levels,
        chunk=chunk,
    )
    sweep.step(7)
    expected = _numpy_chambolle(np.zeros_like(p), v, beta, tau, weights, periodic, isotropic, 7)
    np.testing.assert_allclose(sweep.p, expected, rtol=0, atol=1e-12)
    assert not p.any()  # the sweep iterates on its own copy
    sweep.step(1)
    sweep.step(4)
    expected = _numpy_chambolle(expected, v, beta, tau, weights, periodic, isotropic, 5)
    np.testing.assert_allclose(sweep.p, expected, rtol=0, atol=1e-12)
    sweep.p[...] = 0.5 * rng.uniform(-1, 1, p.shape)  # changed from outside
    start = sweep.p.copy()
    sweep.sync()
    sweep.step(3)
    expected = _numpy_chambolle(start, v, beta, tau, weights, periodic, isotropic, 3)
    np.testing.assert_allclose(sweep.p, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("huge_pages", [True, False], ids=["mmap", "numpy"])
def test_sweep_storage_zeroed_placed_and_kept_alive(monkeypatch, dtype, huge_pages):
    """The sweep's buffers come from one allocation (a huge-page-advised mapping where the
    platform has madvise, else NumPy): zeroed, disjoint, the dual's storage and the image copy
    on page boundaries and the w buffers SWEEP_W_OFFSET bytes after one (4K aliasing), and a
    view of the storage keeps all of it alive (Chambolle returns its dual as one)."""
    import gc
    import mmap

    from napari_tv.solvers._chambolle_sweep import SWEEP_W_OFFSET, _sweep_storage

    if not huge_pages:
        monkeypatch.delattr(mmap, "MADV_HUGEPAGE", raising=False)
    elif not hasattr(mmap, "MADV_HUGEPAGE"):
        pytest.skip("no madvise on this platform")

    sizes = (600_001, 7, 1025)  # 2.4 / 4.8 MB: huge pages where advised
    arrays = _sweep_storage(sizes, dtype)
    assert [a.size for a in arrays] == list(sizes)
    assert all(a.dtype == dtype and a.flags.writeable and not a.any() for a in arrays)
    offsets = [a.ctypes.data % 4096 for a in arrays]
    assert offsets == [0, 0, SWEEP_W_OFFSET]
    for value, a in enumerate(arrays, start=1):
        a[:] = value
    for value, a in enumerate(arrays, start=1):
        assert (a == value).all()  # disjoint
    view = arrays[0][10:20]
    del arrays
    gc.collect()
    np.testing.assert_array_equal(view, 1)
    view[:] = 5  # still writable memory
    assert (view == 5).all()


def test_sweep_storage_out_of_memory_is_memory_error(monkeypatch):
    """A mapping the OS refuses is reported as NumPy reports an allocation it cannot make."""
    import mmap

    from napari_tv.solvers import _chambolle_sweep, _pages

    if not hasattr(mmap, "MADV_HUGEPAGE"):
        pytest.skip("no madvise on this platform: storage comes from NumPy")

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(_pages.mmap, "mmap", refuse)
    with pytest.raises(MemoryError, match="bytes for the sweep"):
        _chambolle_sweep._sweep_storage((1 << 20,), np.float32)
