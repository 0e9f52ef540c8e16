"""Level sets, perimeters and the discrete coarea formula (seed 002, Darbon–Sigelle)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_tv.levelsets import (
    coarea_tv,
    from_level_sets,
    level_perimeters,
    level_set,
    level_sets,
    perimeter,
)
from napari_tv.operators import graph_tv, level_grid, neighbour_offsets, resolve_weights, tv_norm
from reference.levelsets import (
    from_level_sets_naive,
    level_perimeters_naive,
    level_sets_naive,
    perimeter_naive,
    weight_lookup,
)

SHAPES = {1: (9,), 2: (6, 5), 3: (4, 5, 3)}
GRAPHS = [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3)]  # (ndim, connectivity)


def random_grid(rng, n_levels: int) -> np.ndarray:
    """A strictly increasing, unevenly spaced grid."""
    return np.cumsum(rng.uniform(0.1, 2.0, size=n_levels)) - 3.0


def on_grid(rng, shape, grid) -> np.ndarray:
    return grid[rng.integers(0, len(grid), size=shape)]


# --------------------------------------------------------------------------- level sets


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_level_sets_match_definition(rng, ndim, dtype):
    u = (rng.integers(0, 6, size=SHAPES[ndim]) * 1.5).astype(dtype)
    grid = level_grid(u)
    stack = level_sets(u)
    assert stack.dtype == np.bool_
    assert stack.shape == (len(grid) - 1, *u.shape)
    np.testing.assert_array_equal(stack, level_sets_naive(u, grid))


def test_level_sets_integer_grid_is_every_integer():
    u = np.array([[3, 7], [5, 3]], dtype=np.uint16)
    stack = level_sets(u)
    assert stack.shape == (4, 2, 2)  # levels 3, 4, 5, 6 (7 is left out)
    np.testing.assert_array_equal(stack[1], [[True, False], [False, True]])  # u <= 4
    np.testing.assert_array_equal(stack[2], [[True, False], [True, True]])  # u <= 5


@pytest.mark.parametrize("levels", [5, [0.0, 0.3, 2.0, 10.0]])
def test_level_sets_explicit_levels(rng, levels):
    u = rng.uniform(0, 3, size=(5, 6))
    grid = level_grid(u, levels)
    np.testing.assert_array_equal(level_sets(u, levels), level_sets_naive(u, grid))


def test_level_sets_are_nested(rng):
    u = rng.normal(size=(8, 7))
    stack = level_sets(u, 17)
    assert np.all(stack[:-1] <= stack[1:])  # u^λ <= u^μ for λ < μ


def test_constant_image_has_no_level_sets():
    u = np.full((3, 4), 2.5)
    assert level_sets(u).shape == (0, 3, 4)
    lambdas, p = level_perimeters(u)
    assert lambdas.size == 0 and p.size == 0
    assert coarea_tv(u) == 0.0
    np.testing.assert_array_equal(from_level_sets(level_sets(u), level_grid(u)), u)


@pytest.mark.parametrize("lam", [-1, 0, 2.5, 4])
def test_level_set_is_one_slice(rng, lam):
    u = rng.integers(0, 5, size=(4, 6)).astype(np.int32)
    np.testing.assert_array_equal(level_set(u, lam), u <= lam)
    if lam in (0, 2.5):
        stack = level_sets(u, [0.0, 2.5, 4.0])
        np.testing.assert_array_equal(level_set(u, lam), stack[0 if lam == 0 else 1])


@pytest.mark.parametrize(
    "lam, error", [(np.nan, ValueError), ("1", TypeError), (True, TypeError), (None, TypeError)]
)
def test_level_set_rejects_bad_level(lam, error):
    with pytest.raises(error, match="lam"):
        level_set(np.zeros((2, 2)), lam)


@pytest.mark.parametrize(
    "u, error, match",
    [
        (np.zeros((2, 2, 2, 2)), ValueError, "dimensions"),
        (np.zeros((2, 2, 2, 2), dtype=np.uint8), ValueError, "dimensions"),
        (np.zeros((0, 3), dtype=np.int64), ValueError, "empty"),
        (np.array([[1.0, np.nan]]), ValueError, "finite"),
        (np.ones((2, 2), dtype=complex), TypeError, "complex"),
    ],
)
@pytest.mark.parametrize("fn", [level_sets, level_perimeters, coarea_tv, perimeter])
def test_invalid_images_raise(fn, u, error, match):
    with pytest.raises(error, match=match):
        fn(u)


def test_inputs_are_not_modified(rng):
    u = rng.normal(size=(6, 5))
    u_copy = u.copy()
    mask = u > 0
    mask_copy = mask.copy()
    level_sets(u)
    level_perimeters(u, 9, connectivity=2)
    coarea_tv(u)
    perimeter(mask, 2)
    grid = level_grid(u, 9)
    stack = level_sets(u, grid)
    stack_copy = stack.copy()
    from_level_sets(stack, grid)
    np.testing.assert_array_equal(u, u_copy)
    np.testing.assert_array_equal(mask, mask_copy)
    np.testing.assert_array_equal(stack, stack_copy)


# ----------------------------------------------------------------- reconstruction


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    ndim=st.sampled_from([1, 2, 3]),
    n_levels=st.integers(1, 12),
)
def test_from_level_sets_round_trips_on_the_grid(seed, ndim, n_levels):
    rng = np.random.default_rng(seed)
    grid = random_grid(rng, n_levels)
    u = on_grid(rng, SHAPES[ndim], grid)
    stack = level_sets(u, grid)
    np.testing.assert_array_equal(from_level_sets(stack, grid), u)


def test_from_level_sets_rounds_up_to_the_grid(rng):
    grid = np.array([0.0, 1.0, 2.0])
    u = np.array([-5.0, 0.0, 0.2, 1.0, 1.7, 2.0, 9.0])
    rebuilt = from_level_sets(level_sets(u, grid), grid)
    np.testing.assert_array_equal(rebuilt, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 2.0])


def test_from_level_sets_of_an_arbitrary_stack_takes_the_first_level(rng):
    stack = rng.random((4, 5, 3)) < 0.3  # not nested
    grid = np.array([0.0, 1.0, 3.0, 4.0, 9.0])
    np.testing.assert_array_equal(from_level_sets(stack, grid), from_level_sets_naive(stack, grid))
    np.testing.assert_array_equal(
        from_level_sets(stack.astype(np.uint8), grid), from_level_sets_naive(stack, grid)
    )


@pytest.mark.parametrize(
    "stack_shape, grid, match",
    [
        ((3, 4), [0.0, 1.0, 2.0], "len\\(grid\\) - 1 = 2"),
        ((2, 4), [0.0, 2.0, 1.0], "strictly increasing"),
        ((2, 4), [[0.0, 1.0, 2.0]], "1-D"),
        ((2, 4), [0.0, np.inf, 1.0], "finite"),
    ],
)
def test_from_level_sets_rejects_mismatched_input(stack_shape, grid, match):
    with pytest.raises(ValueError, match=match):
        from_level_sets(np.zeros(stack_shape, bool), grid)


# -------------------------------------------------------------------- perimeters


def test_perimeter_of_a_square_by_hand():
    sq = np.zeros((5, 5), bool)
    sq[1:4, 1:4] = True  # 3 x 3 square: 12 boundary faces
    assert perimeter(sq) == 12.0
    assert perimeter(sq, spacing=(2.0, 1.0)) == pytest.approx(6 * 0.5 + 6 * 1.0)
    # 8-neighbourhood with unit weights: 12 faces + 2 diagonals per side pixel pair...
    w_diag = perimeter_naive(sq, 2, lambda o: 1.0)
    assert perimeter(sq, 2, weights=1.0) == w_diag == 12.0 + 20.0


@pytest.mark.parametrize("ndim, connectivity", GRAPHS)
@pytest.mark.parametrize("spacing", [None, "aniso"])
def test_perimeter_matches_naive(rng, ndim, connectivity, spacing):
    if spacing == "aniso":
        spacing = tuple(rng.uniform(0.5, 2.0, size=ndim))
    mask = rng.random(SHAPES[ndim]) < 0.5
    w = resolve_weights(ndim, connectivity, None, spacing)
    lookup = weight_lookup(neighbour_offsets(ndim, connectivity), w)
    expected = perimeter_naive(mask, connectivity, lookup)
    assert perimeter(mask, connectivity, spacing=spacing) == pytest.approx(expected, rel=1e-12)
    as_uint8 = perimeter(mask.astype(np.uint8), connectivity, spacing=spacing)
    assert as_uint8 == pytest.approx(expected, rel=1e-12)


def test_perimeter_with_explicit_weights(rng):
    mask = rng.random((6, 7)) < 0.5
    weights = [0.26, 0.5, 0.19, 0.07]
    lookup = weight_lookup(neighbour_offsets(2, 2), weights)
    assert perimeter(mask, 2, weights=weights) == pytest.approx(perimeter_naive(mask, 2, lookup))


def test_perimeter_rejects_non_binary_mask():
    with pytest.raises(ValueError, match="mask"):
        perimeter(np.array([[0.0, 0.5], [1.0, 1.0]]))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"connectivity": 3}, ValueError),
        ({"weights": [1.0]}, ValueError),
        ({"weights": -1.0}, ValueError),
        ({"spacing": (1.0, 0.0)}, ValueError),
    ],
)
def test_graph_parameters_are_validated(kwargs, error):
    u = np.arange(6.0).reshape(2, 3)
    with pytest.raises(error):
        perimeter(u > 2, **kwargs)
    with pytest.raises(error):
        level_perimeters(u, **kwargs)


@pytest.mark.parametrize("ndim, connectivity", GRAPHS)
def test_level_perimeters_match_one_pass_per_level(rng, ndim, connectivity):
    grid = random_grid(rng, 7)
    # on the grid, off the grid and outside its range
    u = rng.uniform(grid[0] - 1.0, grid[-1] + 1.0, size=SHAPES[ndim])
    u.flat[::3] = grid[rng.integers(0, 7, size=u.flat[::3].size)]
    spacing = tuple(rng.uniform(0.5, 2.0, size=ndim))
    w = resolve_weights(ndim, connectivity, None, spacing)
    lookup = weight_lookup(neighbour_offsets(ndim, connectivity), w)
    lambdas, p = level_perimeters(u, grid, connectivity, spacing=spacing)
    np.testing.assert_array_equal(lambdas, grid[:-1])
    np.testing.assert_allclose(p, level_perimeters_naive(u, grid, connectivity, lookup), rtol=1e-12)
    for k in (0, 3, 5):
        one = perimeter(level_set(u, grid[k]), connectivity, spacing=spacing)
        assert p[k] == pytest.approx(one, rel=1e-12)


def test_level_perimeters_of_integer_image_by_hand():
    u = np.array([[0, 0, 2], [0, 1, 2]], dtype=np.uint8)
    lambdas, p = level_perimeters(u)
    np.testing.assert_array_equal(lambdas, [0.0, 1.0])
    # u <= 0: {(0,0),(0,1),(1,0)}: edges to (1,1) x2 and (0,2) x1 -> 3
    # u <= 1: adds (1,1): edges (0,1)-(0,2), (1,1)-(1,2) -> 2
    np.testing.assert_array_equal(p, [3.0, 2.0])


# ------------------------------------------------------------------ coarea formula


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    graph=st.sampled_from(GRAPHS),
    n_levels=st.integers(2, 10),
    use_spacing=st.booleans(),
)
def test_discrete_coarea_formula(seed, graph, n_levels, use_spacing):
    """Σ_k (λ_{k+1} − λ_k) P(u^{λ_k}) = Σ_{s~t} w_st |u_s − u_t| for u on the grid (seed 002)."""
    ndim, connectivity = graph
    rng = np.random.default_rng(seed)
    grid = random_grid(rng, n_levels)
    shape = tuple(rng.integers(1, 6, size=ndim))
    u = on_grid(rng, shape, grid)
    spacing = tuple(rng.uniform(0.5, 2.0, size=ndim)) if use_spacing else None
    expected = graph_tv(u, connectivity=connectivity, spacing=spacing)
    got = coarea_tv(u, grid, connectivity, spacing=spacing)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("spacing", [None, (2.0, 0.5, 0.5)])
def test_coarea_equals_anisotropic_tv_norm(rng, spacing):
    u = rng.integers(0, 40, size=(5, 8, 7)).astype(np.uint16)  # default grid: every integer
    # float32 holds these integers exactly (and shares the CLI tests' Numba specialisation)
    expected = tv_norm(u.astype(np.float32), kind="anisotropic", spacing=spacing)
    assert coarea_tv(u, spacing=spacing) == pytest.approx(expected, rel=1e-12)


def test_coarea_with_explicit_weights(rng):
    grid = random_grid(rng, 6)
    u = on_grid(rng, (7, 6), grid)
    weights = [0.26, 0.26, 0.19, 0.19]
    expected = graph_tv(u, connectivity=2, weights=weights)
    assert coarea_tv(u, grid, 2, weights=weights) == pytest.approx(expected, rel=1e-12)


def test_coarea_off_the_grid_is_the_tv_of_the_rounded_image(rng):
    grid = np.array([0.0, 1.0, 2.5, 4.0])
    u = rng.uniform(-0.5, 4.0, size=(6, 6))
    rounded = from_level_sets(level_sets(u, grid), grid)
    assert coarea_tv(u, grid) == pytest.approx(graph_tv(rounded), rel=1e-12)
    assert coarea_tv(u, grid) != pytest.approx(graph_tv(u))


# ------------------------------------------------------------- dichotomy partition


@pytest.mark.parametrize(
    "shape, fidelity, connectivity, dtype",
    [
        ((11,), "l2", 1, np.uint8),
        ((6, 7), "l1", 2, np.uint8),
        ((6, 7), "l2", 1, np.float64),
        ((3, 4, 5), "l2", 3, np.uint8),
    ],
)
def test_dichotomy_partition_ends_at_the_exact_solution(rng, shape, fidelity, connectivity, dtype):
    from napari_tv.levelsets import dichotomy_partition
    from napari_tv.solvers.exact import solve_exact

    image = rng.integers(0, 20, size=shape).astype(dtype)
    levels = None if dtype == np.uint8 else 13
    grid = level_grid(image, levels)
    labels, intervals = dichotomy_partition(
        image, 0.7, fidelity=fidelity, connectivity=connectivity, levels=levels
    )
    assert labels.shape == (int(np.ceil(np.log2(len(grid)))), *shape)
    assert labels.dtype == np.int32 and len(intervals) == len(labels)
    exact = solve_exact(image, 0.7, fidelity=fidelity, connectivity=connectivity, levels=grid)
    last = intervals[-1][labels[-1]]
    np.testing.assert_array_equal(last[..., 0], last[..., 1])  # single levels at the end
    np.testing.assert_array_equal(grid[last[..., 0]], exact.u)
    # the first round cuts [0, L-1] at its midpoint
    mid = (len(grid) - 1) // 2
    assert {tuple(iv) for iv in intervals[0]} <= {(0, mid), (mid + 1, len(grid) - 1)}


def test_dichotomy_partition_refines_at_every_depth(rng):
    from napari_tv.levelsets import dichotomy_partition

    image = rng.normal(size=(12, 10)) + np.where(np.arange(10) < 5, 0.0, 3.0)
    labels, intervals = dichotomy_partition(image, 0.4, levels=40)
    for d in range(len(labels)):
        iv = intervals[d]
        # ordered by interval, disjoint, every label used
        assert np.all(iv[:, 0] <= iv[:, 1]) and np.all(iv[1:, 0] > iv[:-1, 1])
        np.testing.assert_array_equal(np.unique(labels[d]), np.arange(len(iv)))
        if d == 0:
            continue
        parent, child = labels[d - 1].ravel(), labels[d].ravel()
        for c in range(len(iv)):
            parents = np.unique(parent[child == c])
            assert len(parents) == 1  # nesting: a child interval lies in one parent
            p_lo, p_hi = intervals[d - 1][parents[0]]
            assert p_lo <= iv[c, 0] and iv[c, 1] <= p_hi
            assert iv[c, 1] - iv[c, 0] <= (p_hi - p_lo) // 2  # halved (or a single level)


@pytest.mark.parametrize("stop_after", [1, 2, None])
def test_dichotomy_partition_callback_reports_rounds_and_stops(rng, stop_after):
    from napari_tv.levelsets import dichotomy_partition

    image = rng.integers(0, 40, size=(9, 8)).astype(np.uint8)
    full_labels, full_intervals = dichotomy_partition(image, 0.8)
    n_rounds = len(full_intervals)
    assert n_rounds == int(np.ceil(np.log2(len(level_grid(image))))) and n_rounds >= 4
    seen = []

    def callback(info):
        seen.append(info)
        return stop_after is not None and info["iter"] >= stop_after

    labels, intervals = dichotomy_partition(image, 0.8, callback=callback)
    done = n_rounds if stop_after is None else stop_after
    # once per round, with an increasing fraction reaching 1.0 only at the end
    assert [info["iter"] for info in seen] == list(range(1, done + 1))
    fractions = [info["fraction"] for info in seen]
    np.testing.assert_allclose(fractions, np.arange(1, done + 1) / n_rounds)
    assert all(b > a for a, b in zip(fractions, fractions[1:], strict=False))
    assert (fractions[-1] == 1.0) == (stop_after is None)
    # stopped: the partition of the rounds completed, the same as the first rounds of a full run
    assert len(labels) == len(intervals) == done
    np.testing.assert_array_equal(labels, full_labels[:done])
    for got, want in zip(intervals, full_intervals, strict=False):
        np.testing.assert_array_equal(got, want)
    if stop_after is not None:
        assert np.any(intervals[-1][:, 0] < intervals[-1][:, 1])  # not yet single levels


def test_dichotomy_partition_callback_true_after_the_last_round_changes_nothing(rng):
    from napari_tv.levelsets import dichotomy_partition

    image = rng.integers(0, 10, size=(6, 5)).astype(np.uint8)
    labels, intervals = dichotomy_partition(image, 0.5)
    got, got_iv = dichotomy_partition(image, 0.5, callback=lambda info: info["fraction"] >= 1.0)
    np.testing.assert_array_equal(got, labels)
    assert len(got_iv) == len(intervals)


def test_dichotomy_partition_validates_like_the_solver():
    from napari_tv.levelsets import dichotomy_partition

    with pytest.raises(ValueError, match="beta"):
        dichotomy_partition(np.zeros((3, 3)), -1.0)
    with pytest.raises(ValueError, match="fidelity"):
        dichotomy_partition(np.zeros((3, 3)), 1.0, fidelity="l3")
    with pytest.raises(ValueError, match="dimensions"):
        dichotomy_partition(np.zeros((2, 2, 2, 2)), 1.0)


# ------------------------------------------------------- the energy, level by level


@pytest.mark.parametrize("fidelity", ["l2", "l1", "poisson"])
@pytest.mark.parametrize("ndim, connectivity", [(1, 1), (2, 2), (3, 1)])
def test_energy_splits_into_binary_level_energies(rng, fidelity, ndim, connectivity):
    """E(u) = Σ_k E^k(u^{λ_k}) + Σ_s g_s(λ_0) for every u on the grid (seed 002, Prop. 1)."""
    from napari_tv.fidelity import fidelity_pointwise
    from napari_tv.operators import tv_energy
    from reference.levelsets import level_energy

    grid = np.cumsum(rng.uniform(0.2, 1.5, size=7))  # > 0 for Poisson
    u = on_grid(rng, SHAPES[ndim], grid)
    v = rng.uniform(0.0, 9.0, size=u.shape)
    beta = 0.8

    def pointwise(a, b):
        return fidelity_pointwise(a, b, fidelity)

    def perimeter_of(x):
        return perimeter(x, connectivity)

    stack = level_sets(u, grid)
    total = sum(
        level_energy(stack[k], grid[k], grid[k + 1], v, beta, pointwise, perimeter_of)
        for k in range(len(grid) - 1)
    )
    constant = float(pointwise(np.full(v.shape, grid[0]), v).sum())
    expected = tv_energy(u, v, beta, fidelity=fidelity, connectivity=connectivity)
    assert total + constant == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("fidelity", ["l2", "l1"])
def test_independent_level_cuts_nest_and_give_the_exact_minimum(rng, fidelity):
    """Minimising each E^k on its own (PyMaxflow) gives nested sets and the exact solution."""
    from napari_tv.fidelity import fidelity_pointwise
    from napari_tv.operators import tv_energy
    from napari_tv.solvers.exact import solve_exact
    from reference.levelsets import levelwise_minimiser_pymaxflow

    v = rng.normal(size=(14, 12)) + np.where(np.arange(12) < 6, 0.0, 2.5)
    grid = level_grid(v, 12)
    stack = levelwise_minimiser_pymaxflow(
        v, 0.6, grid, lambda a, b: fidelity_pointwise(a, b, fidelity)
    )
    assert np.all(stack[:-1] <= stack[1:])  # nested, as convexity promises
    u = from_level_sets(stack, grid)
    exact = solve_exact(v, 0.6, fidelity=fidelity, levels=grid)
    energy = tv_energy(u, v, 0.6, fidelity=fidelity, connectivity=1)
    assert energy == pytest.approx(exact.energy, rel=1e-12)
