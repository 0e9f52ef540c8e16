"""The difference operators, TV norms and graph-TV weights against naive oracles."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from conftest import SHAPES
from napari_tv import (
    difference_matrix,
    divergence,
    edge_weights,
    gradient,
    graph_tv,
    level_grid,
    neighbour_offsets,
    resolve_weights,
    tv_energy,
    tv_gradient,
    tv_norm,
)
from reference.operators import (
    circulant_R,
    gradient_naive,
    graph_tv_naive,
    numerical_gradient,
    tv_naive,
)

SCHEMES = ["forward", "backward", "central"]
BOUNDARIES = ["neumann", "periodic"]
SPACINGS = {1: [None, (0.5,)], 2: [None, (2.0, 0.7)], 3: [None, (3.0, 1.0, 0.25)]}


def spacing_cases():
    for ndim, scheme, boundary in itertools.product((1, 2, 3), SCHEMES, BOUNDARIES):
        for spacing in SPACINGS[ndim]:
            yield ndim, scheme, boundary, spacing


@pytest.mark.parametrize("ndim,scheme,boundary,spacing", list(spacing_cases()))
def test_gradient_matches_naive_and_divergence_is_negative_adjoint(
    rng, ndim, scheme, boundary, spacing
):
    f = rng.normal(size=SHAPES[ndim])
    p = rng.normal(size=(ndim, *SHAPES[ndim]))
    g = gradient(f, scheme=scheme, boundary=boundary, spacing=spacing)
    np.testing.assert_allclose(g, gradient_naive(f, scheme, boundary, spacing), atol=1e-12)
    div = divergence(p, scheme=scheme, boundary=boundary, spacing=spacing)
    lhs, rhs = np.vdot(g, p), -np.vdot(f, div)
    assert abs(lhs - rhs) <= 1e-12 * (1 + abs(lhs))


@pytest.mark.parametrize("ndim,scheme,boundary,spacing", list(spacing_cases()))
def test_difference_matrix_acts_as_gradient_and_its_transpose_as_minus_divergence(
    rng, ndim, scheme, boundary, spacing
):
    shape = SHAPES[ndim]
    R = difference_matrix(shape, scheme=scheme, boundary=boundary, spacing=spacing)
    assert R.shape == (ndim * math.prod(shape), math.prod(shape))
    f = rng.normal(size=shape)
    p = rng.normal(size=(ndim, *shape))
    np.testing.assert_allclose(
        R @ f.ravel(), gradient(f, scheme=scheme, boundary=boundary, spacing=spacing).ravel(),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        R.T @ p.ravel(),
        -divergence(p, scheme=scheme, boundary=boundary, spacing=spacing).ravel(),
        atol=1e-12,
    )


@pytest.mark.parametrize("shape", [(4, 5), (3, 3), (1, 6), (2, 1)])
def test_backward_periodic_matrix_is_seed_001_circulant(shape):
    R = difference_matrix(shape, scheme="backward", boundary="periodic").toarray()
    np.testing.assert_array_equal(R, circulant_R(*shape))


def test_adjoint_holds_in_float32(rng):
    f = rng.normal(size=(9, 8, 7)).astype(np.float32)
    p = rng.normal(size=(3, 9, 8, 7)).astype(np.float32)
    g = gradient(f, spacing=(2.0, 1.0, 1.0))
    d = divergence(p, spacing=(2.0, 1.0, 1.0))
    assert g.dtype == d.dtype == np.float32
    lhs = np.vdot(g.astype(np.float64), p)
    rhs = -np.vdot(f.astype(np.float64), d)
    assert abs(lhs - rhs) <= 1e-5 * np.abs(g).sum()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_checkerboard_is_invisible_to_central_differences(boundary):
    f = np.indices((8, 8)).sum(axis=0) % 2 * 1.0
    if boundary == "periodic":
        assert tv_norm(f, scheme="central", boundary=boundary) == 0.0
        np.testing.assert_array_equal(tv_gradient(f, scheme="central", boundary=boundary), 0)
    else:  # Neumann: only the reflected border rows see anything
        g = gradient(f, scheme="central", boundary=boundary)
        np.testing.assert_array_equal(g[0][1:-1], 0)
        np.testing.assert_array_equal(g[1][:, 1:-1], 0)
    # forward differences see every pixel
    assert tv_norm(f, kind="anisotropic", boundary=boundary) >= 2 * 8 * 7
    assert np.abs(tv_gradient(f, boundary=boundary)).min() > 0


@pytest.mark.parametrize("a,h", [(1, 1.0), (3, 2.5), (5, 0.5)])
def test_square_has_anisotropic_tv_4ah(a, h):
    f = np.zeros((a + 6, a + 7))
    f[2 : 2 + a, 3 : 3 + a] = h
    assert tv_norm(f, kind="anisotropic") == pytest.approx(4 * a * h)
    assert graph_tv(f) == pytest.approx(4 * a * h)
    cube = np.zeros((a + 4,) * 3)
    cube[1 : 1 + a, 1 : 1 + a, 2 : 2 + a] = h
    assert tv_norm(cube, kind="anisotropic") == pytest.approx(6 * a * a * h)


@pytest.mark.parametrize("kind", ["isotropic", "anisotropic"])
@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_tv_norm_matches_naive(small_image, kind, eps):
    spacing = (1.5,) * small_image.ndim
    assert tv_norm(small_image, kind=kind, eps=eps, spacing=spacing) == pytest.approx(
        tv_naive(small_image, kind, spacing, eps), rel=1e-12
    )


@pytest.mark.parametrize("kind", ["isotropic", "anisotropic"])
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_tv_gradient_is_numerical_gradient_of_smoothed_tv(rng, kind, scheme, boundary):
    f = rng.normal(size=(5, 4))
    opts = dict(kind=kind, scheme=scheme, boundary=boundary, spacing=(1.3, 0.8), eps=0.2)
    num = numerical_gradient(lambda x: tv_norm(x, **opts), f)
    np.testing.assert_allclose(tv_gradient(f, **opts), num, atol=1e-6)


def test_tv_gradient_at_eps0_drops_flat_terms_and_matches_away_from_kinks(rng):
    f = rng.normal(size=(6, 6, 3))
    num = numerical_gradient(lambda x: tv_norm(x), f, h=1e-7)
    np.testing.assert_allclose(tv_gradient(f), num, atol=1e-5)
    const = np.full((4, 4), 2.0)
    np.testing.assert_array_equal(tv_gradient(const), 0.0)


def test_spacing_divides_each_axis():
    f = np.zeros((4, 4))
    f[2:, :] = 1.0  # one jump along axis 0, crossing 4 columns
    assert tv_norm(f, spacing=(2.0, 1.0)) == pytest.approx(4 * 0.5)
    assert tv_norm(f.T, spacing=(2.0, 1.0)) == pytest.approx(4 * 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtype_is_kept(rng, dtype):
    f = rng.normal(size=(5, 6)).astype(dtype)
    assert gradient(f).dtype == dtype
    assert divergence(gradient(f)).dtype == dtype
    assert tv_gradient(f).dtype == dtype


@pytest.mark.parametrize(
    ("dtype", "out"),
    [(np.uint8, np.float32), (np.int16, np.float32), (np.bool_, np.float32),
     (np.float16, np.float32), (np.int32, np.float64), (np.uint64, np.float64)],
)
def test_integer_bool_and_float16_are_converted(dtype, out):
    """Up to 16 bits (exact in float32) -> float32; wider integers -> float64."""
    f = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    g = gradient(f)
    assert g.dtype == out
    np.testing.assert_array_equal(g, gradient(f.astype(np.float64)))


def test_non_contiguous_input_and_no_modification(rng):
    base = rng.normal(size=(10, 12))
    view = base[::2, ::3]
    keep = base.copy()
    np.testing.assert_allclose(gradient(view), gradient(np.ascontiguousarray(view)))
    tv_gradient(view)
    np.testing.assert_array_equal(base, keep)


def test_dask_input_stays_lazy(rng):
    """A dask array gives a lazy dask result (tests/test_dask_operators.py has the rest)."""
    da = pytest.importorskip("dask.array")
    f = rng.normal(size=(8, 8))
    total = tv_norm(da.from_array(f, chunks=4))
    assert type(total).__module__.startswith("dask.array") and total.shape == ()
    assert float(total) == pytest.approx(tv_norm(f), rel=1e-12)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda f: gradient(f, scheme="centered"), ValueError, "scheme.*'centered'"),
        (lambda f: gradient(f, boundary="reflect"), ValueError, "boundary.*'reflect'"),
        (lambda f: tv_norm(f, kind="l1"), ValueError, "kind.*'l1'"),
        (lambda f: gradient(f, spacing=(1.0,)), ValueError, "spacing.*2 entries"),
        (lambda f: gradient(f, spacing=(1.0, 0.0)), ValueError, "spacing.*> 0"),
        (lambda f: gradient(f, spacing=(1.0, -2.0)), ValueError, "spacing"),
        (lambda f: tv_norm(f, eps=-1.0), ValueError, "eps must be >= 0, got -1.0"),
        (lambda f: gradient(np.float64(3.0)), ValueError, "f must have 1, 2, 3 dimensions, got 0"),
        (lambda f: gradient(np.zeros((2,) * 4)), ValueError, "got 4"),
        (lambda f: gradient(np.zeros((0, 3))), ValueError, "empty"),
        (lambda f: gradient(np.array([1.0, np.nan])), ValueError, "finite.*1 NaN"),
        (lambda f: gradient(np.array([1.0, np.inf])), ValueError, "finite"),
        (lambda f: gradient(f.astype(complex)), TypeError, "complex"),
        (lambda f: gradient(np.array(["a", "b"])), TypeError, "numeric"),
        (lambda f: divergence(np.zeros((3, 4, 4))), ValueError, "p must have shape"),
    ],
)
def test_bad_input_names_parameter_and_value(call, exc, match):
    with pytest.raises(exc, match=match):
        call(np.ones((3, 4)))


# ------------------------------------------------------------------------------ graph TV
@pytest.mark.parametrize(
    "ndim,connectivity,k", [(1, 1, 1), (2, 1, 2), (2, 2, 4), (3, 1, 3), (3, 2, 9), (3, 3, 13)]
)
def test_neighbour_offsets_match_scipy_structure(ndim, connectivity, k):
    from scipy.ndimage import generate_binary_structure

    offs = neighbour_offsets(ndim, connectivity)
    assert offs.shape == (k, ndim)
    struct = generate_binary_structure(ndim, connectivity)
    full = {tuple(o) for o in np.argwhere(struct) - 1 if any(o)}
    half = {tuple(o) for o in offs}
    assert half | {tuple(-np.array(o)) for o in half} == full
    assert all(next(x for x in o if x) == 1 for o in half)
    np.testing.assert_array_equal(offs[:ndim], np.eye(ndim, dtype=int))


@pytest.mark.parametrize("ndim,connectivity", [(2, 1), (2, 2), (3, 1), (3, 2), (3, 3)])
def test_graph_tv_matches_naive_with_random_weights(rng, ndim, connectivity):
    u = rng.integers(0, 5, size=SHAPES[ndim]).astype(float)
    offs = neighbour_offsets(ndim, connectivity)
    w = rng.uniform(0.1, 2.0, size=len(offs))
    assert graph_tv(u, connectivity=connectivity, weights=w) == pytest.approx(
        graph_tv_naive(u, offs, w)
    )


@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 0.5)])
def test_graph_tv_connectivity1_is_anisotropic_tv(rng, spacing):
    u = rng.normal(size=(5, 4, 6))
    assert graph_tv(u, spacing=spacing) == pytest.approx(
        tv_norm(u, kind="anisotropic", spacing=spacing)
    )


def test_crofton_weights_known_values():
    np.testing.assert_allclose(edge_weights(2, 2), [np.pi / 8] * 2 + [np.pi / (8 * 2**0.5)] * 2)
    np.testing.assert_array_equal(edge_weights(3, 1, spacing=(4.0, 2.0, 1.0)), [0.25, 0.5, 1.0])


def _crofton_cost(ndim, connectivity, spacing, normal):
    """Σ_k w_k |e_k·n| / V: the cut cost per unit length (area) of a line (plane) ⟂ n, in
    units of the finest axis (spacing is relative)."""
    spacing = np.asarray(spacing, dtype=float) / np.min(spacing)
    offs = neighbour_offsets(ndim, connectivity) * spacing
    w = edge_weights(ndim, connectivity, spacing)
    return float(np.sum(w * np.abs(offs @ normal)) / np.prod(spacing))


@pytest.mark.parametrize(
    "ndim,connectivity,spacing,tol",
    [(2, 2, (1.0, 1.0), 0.09), (2, 2, (3.0, 1.0), 0.2), (3, 2, (1, 1, 1), 0.12),
     (3, 3, (1, 1, 1), 0.1), (3, 3, (2.0, 0.5, 0.5), 0.25)],
)
def test_crofton_weights_measure_length_in_every_direction(rng, ndim, connectivity, spacing, tol):
    normals = rng.normal(size=(200, ndim))
    normals /= np.linalg.norm(normals, axis=1)[:, None]
    costs = np.array([_crofton_cost(ndim, connectivity, spacing, n) for n in normals])
    # Crofton: the average over directions is exact, every direction is within tol
    assert np.abs(costs - 1).max() < tol
    assert abs(costs.mean() - 1) < tol / 2


def test_crofton_perimeter_of_a_disc_approximates_2_pi_r():
    r = 40
    yy, xx = np.mgrid[-50:51, -50:51]
    disc = (xx**2 + yy**2 <= r**2).astype(float)
    assert graph_tv(disc, connectivity=2) == pytest.approx(2 * np.pi * r, rel=0.03)
    assert graph_tv(disc, connectivity=1) == pytest.approx(8 * r, rel=0.03)  # anisotropic


def test_resolve_weights_scalar_sequence_and_errors():
    np.testing.assert_array_equal(resolve_weights(3, 2, 0.5), [0.5] * 9)
    np.testing.assert_array_equal(resolve_weights(2, 2, [1, 2, 3, 4]), [1, 2, 3, 4])
    with pytest.raises(ValueError, match="weights must have 4 entries"):
        resolve_weights(2, 2, [1.0, 2.0])
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        resolve_weights(2, 1, -1.0)
    with pytest.raises(ValueError, match="connectivity must be between 1 and ndim=2, got 3"):
        neighbour_offsets(2, 3)
    with pytest.raises(TypeError, match="connectivity must be an integer"):
        edge_weights(2, 1.5)


# ------------------------------------------------------------------------------ grid, energy
def test_level_grid_semantics():
    np.testing.assert_array_equal(level_grid(np.array([3, 7], dtype=np.uint16)), [3, 4, 5, 6, 7])
    g = level_grid(np.array([0.0, 2.0]))
    assert len(g) == 256 and g[0] == 0 and g[-1] == 2
    np.testing.assert_array_equal(level_grid(np.array([1.0, 2.0]), 3), [1.0, 1.5, 2.0])
    np.testing.assert_array_equal(level_grid(np.zeros(3), [2, 1, 2]), [1.0, 2.0])
    np.testing.assert_array_equal(level_grid(np.full(4, 5.0)), [5.0])
    with pytest.raises(ValueError, match="levels must be >= 2, got 1"):
        level_grid(np.zeros(3), 1)


def test_tv_energy_is_fidelity_plus_beta_tv(rng):
    u = rng.uniform(0.5, 2, size=(5, 6))
    v = rng.poisson(3, size=(5, 6)).astype(float)
    e = tv_energy(u, v, 0.7, fidelity="poisson", tv="anisotropic", spacing=(2, 1))
    expected = np.sum(u - v * np.log(u)) + 0.7 * tv_norm(u, kind="anisotropic", spacing=(2, 1))
    assert e == pytest.approx(expected)
    e1 = tv_energy(u, v, 0.7, fidelity="l1", connectivity=2)
    assert e1 == pytest.approx(np.abs(u - v).sum() + 0.7 * graph_tv(u, connectivity=2))
    assert tv_energy(np.zeros(3), np.array([0.0, 1.0, 0.0]), 1.0, fidelity="poisson") == np.inf
    with pytest.raises(ValueError, match="beta must be >= 0, got -1.0"):
        tv_energy(u, v, -1.0)
    with pytest.raises(ValueError, match="image must be >= 0 for fidelity='poisson'"):
        tv_energy(u, -v - 1, 1.0, fidelity="poisson")
    with pytest.raises(ValueError, match="fidelity must be one of"):
        tv_energy(u, v, 1.0, fidelity="l3")
