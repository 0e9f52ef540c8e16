"""The fuzz harness of issue 15, as a bounded hypothesis suite (about a minute).

Random small images of every accepted dtype, every method × fidelity × TV × boundary a
method supports, β over 24 decades (and 0), anisotropic spacings: a call either returns a
finite result no worse than the data itself and the best constant, leaving its input
untouched, or raises one of the documented errors.  The exact solver meets a brute-force
minimum on every instance, and the operators keep their adjoint identity.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_tv import denoise_tv
from napari_tv._validation import float_dtype
from napari_tv.operators import (
    divergence,
    gradient,
    level_grid,
    neighbour_offsets,
    resolve_weights,
    tv_energy,
)
from napari_tv.solvers.api import SUPPORTED
from napari_tv.solvers.exact import solve_exact
from reference.exact import brute_force_tv

FUZZ = settings(
    max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

DTYPES = [np.bool_, np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32, np.float64]
ITERATIVE = [m for m in SUPPORTED if m != "exact"]


@st.composite
def problems(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    method = draw(st.sampled_from(ITERATIVE))
    fidelity = draw(st.sampled_from(SUPPORTED[method]["fidelity"]))
    low = 0.0 if fidelity == "poisson" else -1.0
    if dtype.kind == "f":
        top = {2: 6e4, 4: 1e30, 8: 1e100}[dtype.itemsize]
        scale = min(draw(st.sampled_from([1e-30, 1e-6, 1.0, 255.0, 6e4, 1e30, 1e100])), top)
        image = (rng.uniform(low, 1.0, size=shape) * scale).astype(dtype)
    elif dtype.kind == "b":
        image = rng.random(shape) < 0.5
    else:
        info = np.iinfo(dtype)
        hi = int(draw(st.sampled_from([1, 10, 1000, info.max])))
        lo = 0 if fidelity == "poisson" or info.min == 0 else -hi - 1
        image = rng.integers(max(lo, info.min), min(hi, info.max), size=shape,
                             endpoint=True).astype(dtype)  # fmt: skip
    # β over 24 decades around the data's scale (L2; L1 and Poisson: around 1), or 0
    exponent = draw(st.one_of(st.none(), st.floats(-12.0, 12.0)))
    unit = float(np.ptp(image.astype(np.float64))) or 1.0 if fidelity == "l2" else 1.0
    beta = 0.0 if exponent is None else unit * 10.0**exponent
    spacing = tuple(draw(st.lists(st.floats(0.5, 20.0), min_size=ndim, max_size=ndim)))
    tv = draw(st.sampled_from(["isotropic", "anisotropic"]))
    boundary = draw(st.sampled_from(SUPPORTED[method]["boundary"]))
    return image, method, fidelity, beta, spacing, tv, boundary


@FUZZ
@pytest.mark.filterwarnings("ignore:image of shape:UserWarning")
@given(problems())
def test_any_small_problem_has_a_finite_result_no_worse_than_the_data(problem):
    image, method, fidelity, beta, spacing, tv, boundary = problem
    before = image.copy()
    kwargs = dict(method=method, fidelity=fidelity, spacing=spacing, tv=tv, boundary=boundary,
                  return_info=True)  # fmt: skip
    try:
        u, res = denoise_tv(image, beta, **kwargs)
    except ValueError as exc:  # documented refusals only
        assert "image values must be between" in str(exc), exc
        return
    np.testing.assert_array_equal(image, before)  # the input is never written to
    assert u.shape == image.shape and u.dtype == float_dtype(image.dtype)
    assert np.isfinite(u).all() and math.isfinite(res.energy)
    v = image.astype(np.float64)
    if not res.converged or np.ptp(v) == 0:
        event("not converged" if not res.converged else "constant image")
        return
    event(res.extra.get("shortcut", "solved").split(":")[0])
    opts = dict(fidelity=fidelity, tv=tv, boundary=boundary, spacing=spacing)
    e_u = tv_energy(u.astype(np.float64), v, beta, **opts)
    best_const = np.median(v) if fidelity == "l1" else np.mean(v)
    for other in (v, np.full_like(v, best_const)):
        e_other = tv_energy(other, v, beta, **opts)
        # relative gap < tol, plus the rounding of float32 results
        slack = 2e-3 * abs(e_other) + 1e-6 * (abs(e_u) + 1e-300)
        if u.dtype == np.float32:
            slack += 1e-5 * (abs(e_other) + np.abs(v).max() ** 2 * v.size)
        assert e_u <= e_other + slack, (e_u, e_other)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 2).flatmap(
        lambda ndim: st.tuples(
            st.just(ndim),
            st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim).filter(
                lambda s: 2 <= math.prod(s) <= 6
            ),
        )
    ),
    st.sampled_from(["l2", "l1", "poisson"]),
    st.integers(2, 4),
    st.floats(0.01, 5.0),
    st.integers(0, 2**32 - 1),
)
def test_exact_meets_the_brute_force_minimum(dims, fidelity, n_levels, beta, seed):
    ndim, shape = dims
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.0, 3.0, size=tuple(shape))
    connectivity = int(rng.integers(1, ndim + 1))
    grid = level_grid(v, n_levels)
    offsets = neighbour_offsets(ndim, connectivity)
    weights = resolve_weights(ndim, connectivity, None, None)
    res = solve_exact(v, beta, fidelity=fidelity, connectivity=connectivity, levels=grid)
    best, _ = brute_force_tv(v, beta, grid, fidelity, offsets, weights)
    assert res.energy <= best + 1e-9 * max(1.0, abs(best))
    assert res.energy >= best - 1e-9 * max(1.0, abs(best))


@settings(max_examples=100, deadline=None)
@given(
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7),
    st.sampled_from(["forward", "backward"]),
    st.sampled_from(["neumann", "periodic"]),
    st.integers(0, 2**32 - 1),
)
def test_divergence_is_minus_the_adjoint_of_the_gradient(shape, scheme, boundary, seed):
    rng = np.random.default_rng(seed)
    spacing = tuple(rng.uniform(0.5, 4.0, size=len(shape)))
    u = rng.standard_normal(shape)
    p = rng.standard_normal((len(shape), *shape))
    opts = dict(scheme=scheme, boundary=boundary, spacing=spacing)
    lhs = float(np.sum(gradient(u, **opts) * p))
    rhs = -float(np.sum(u * divergence(p, **opts)))
    assert math.isclose(lhs, rhs, rel_tol=1e-9, abs_tol=1e-9 * (1 + abs(lhs)))
