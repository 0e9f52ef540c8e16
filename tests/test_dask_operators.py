"""The per-voxel operators on dask arrays: lazy, block by block, equal to the in-memory ones.

A dask array in gives a lazy dask array out, with the input's chunks, built without computing
anything; computed, it equals the NumPy result for every scheme, boundary, spacing and chunking
(uneven chunks and chunks of 1-3 voxels, smaller than the halo, included).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from napari_tv.levelsets import level_set, level_sets
from napari_tv.operators import divergence, gradient, is_dask_array, tv_gradient, tv_norm

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

SCHEMES = ["forward", "backward", "central"]
BOUNDARIES = ["neumann", "periodic"]
RTOL = {np.float32: 1e-6, np.float64: 1e-12}

#: (shape, chunks): one chunk, regular, uneven, and chunks of 1-3 voxels along an axis
CHUNKINGS = [
    ((11, 9), ((11,), (9,))),
    ((11, 9), (4, 4)),
    ((11, 9), ((3, 5, 3), (2, 7))),
    ((11, 9), ((1, 1, 2, 3, 1, 3), (3, 1, 2, 3))),
    ((7, 6, 5), ((7,), (6,), (5,))),
    ((7, 6, 5), (3, 3, 3)),
    ((7, 6, 5), ((2, 5), (1, 2, 3), (5,))),
    ((7, 6, 5), ((1,) * 7, (2, 2, 2), (3, 2))),
]
#: axes shorter than the halo (central TV gradient: 2 rows), one voxel wide, chunks of 1
SMALL = [
    ((2, 7), ((1, 1), (2, 2, 3))),
    ((1, 6), ((1,), (1,) * 6)),
    ((3, 2, 4), ((1, 1, 1), (1, 1), (1, 3))),
    ((5,), ((1, 1, 1, 1, 1),)),
    ((6,), ((2, 1, 3),)),
]
SPACING = {1: (0.5,), 2: (2.0, 0.7), 3: (3.0, 1.0, 0.25)}


def _ids(case):
    shape, chunks = case
    return "x".join(map(str, shape)) + "-" + str(chunks).replace(" ", "")


@pytest.fixture(autouse=True)
def _synchronous():
    """Tiny graphs: the synchronous scheduler (one test below uses threads)."""
    with dask.config.set(scheduler="synchronous"):
        yield


def _no_compute(*args, **kwargs):
    raise AssertionError("a dask graph was computed at the call")


def counted(f, chunks):
    """``f`` as a dask array whose blocks record each time they are computed."""
    calls = []

    def load(block):
        calls.append(block.shape)
        return block

    x = da.from_array(f, chunks=chunks).map_blocks(
        load, dtype=f.dtype, meta=np.empty((0,) * f.ndim, dtype=f.dtype)
    )
    return x, calls


def close(actual, desired, dtype):
    rtol = RTOL[dtype]
    scale = float(np.max(np.abs(desired), initial=0.0))
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


# --------------------------------------------------------------------------- equal to NumPy
@pytest.mark.parametrize("case", CHUNKINGS + SMALL, ids=_ids)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("spaced", [False, True], ids=["unit", "spacing"])
def test_dask_equals_numpy_every_scheme_and_boundary(rng, case, dtype, spaced):
    shape, chunks = case
    f = rng.normal(size=shape).astype(dtype)
    p = rng.normal(size=(len(shape), *shape)).astype(dtype)
    keep_f, keep_p = f.copy(), p.copy()
    x = da.from_array(f, chunks=chunks)
    # the component axis in one chunk per component: divergence takes it whole
    q = da.from_array(p, chunks=((1,) * len(shape), *x.chunks))
    spacing = SPACING[len(shape)] if spaced else None
    lazy, expected = {}, {}
    for scheme, boundary in itertools.product(SCHEMES, BOUNDARIES):
        kw = {"scheme": scheme, "boundary": boundary, "spacing": spacing}
        with dask.config.set(scheduler=_no_compute):
            lazy[scheme, boundary, "gradient"] = gradient(x, **kw)
            lazy[scheme, boundary, "divergence"] = divergence(q, **kw)
            for kind, eps in (("isotropic", 0.0), ("anisotropic", 0.1)):
                lazy[scheme, boundary, "tv_gradient", kind] = tv_gradient(x, kind=kind, eps=eps,
                                                                          **kw)
                lazy[scheme, boundary, "tv_norm", kind] = tv_norm(x, kind=kind, eps=eps, **kw)
        expected[scheme, boundary, "gradient"] = gradient(f, **kw)
        expected[scheme, boundary, "divergence"] = divergence(p, **kw)
        for kind, eps in (("isotropic", 0.0), ("anisotropic", 0.1)):
            expected[scheme, boundary, "tv_gradient", kind] = tv_gradient(f, kind=kind, eps=eps,
                                                                          **kw)
            expected[scheme, boundary, "tv_norm", kind] = tv_norm(f, kind=kind, eps=eps, **kw)
    for key, out in lazy.items():
        assert is_dask_array(out), key
        if key[2] == "tv_norm":
            assert out.shape == () and out.dtype == np.float64, key
            continue
        assert out.dtype == np.dtype(dtype), key
        lead = ((len(shape),),) if key[2] == "gradient" else ()
        assert out.chunks == (*lead, *x.chunks), key  # the input's chunks, component axis whole
    computed = dict(zip(lazy, dask.compute(*lazy.values()), strict=True))  # one graph
    for key, value in computed.items():
        close(value, expected[key], dtype)
    np.testing.assert_array_equal(f, keep_f)  # the inputs are never written to
    np.testing.assert_array_equal(p, keep_p)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float16, np.int64, bool])
def test_dask_input_dtypes_convert_like_numpy(rng, dtype):
    f = (rng.normal(size=(9, 7)) * 40).astype(dtype)
    x = da.from_array(f, chunks=(2, 3))
    g = gradient(x, scheme="central")
    ref = gradient(f, scheme="central")
    assert g.dtype == ref.dtype
    np.testing.assert_array_equal(g.compute(), ref)
    np.testing.assert_array_equal(tv_gradient(x).compute(), tv_gradient(f))


def test_threaded_scheduler(rng):
    """The Numba kernels called from dask's worker threads at once."""
    f = rng.normal(size=(40, 30, 20))
    x = da.from_array(f, chunks=(7, 9, 6))
    with dask.config.set(scheduler="threads"):
        out = tv_gradient(x, scheme="central", boundary="periodic").compute()
        total = float(tv_norm(x))
    np.testing.assert_allclose(out, tv_gradient(f, scheme="central", boundary="periodic"),
                               rtol=1e-12, atol=1e-12)
    assert total == pytest.approx(tv_norm(f), rel=1e-12)


# --------------------------------------------------------------------------- laziness
@pytest.mark.parametrize(
    "call",
    [
        lambda x: gradient(x, scheme="backward", boundary="periodic"),
        lambda x: tv_gradient(x, scheme="central"),
        lambda x: tv_norm(x, kind="anisotropic", boundary="periodic"),
        lambda x: divergence(da.stack([x, x])),
        lambda x: level_set(x, 0.1),
        lambda x: level_sets(x, [-0.5, 0.0, 0.5]),
    ],
    ids=["gradient", "tv_gradient", "tv_norm", "divergence", "level_set", "level_sets"],
)
def test_nothing_is_computed_at_the_call(rng, call):
    f = rng.normal(size=(10, 9))
    x, calls = counted(f, (3, (1, 5, 3)))
    with dask.config.set(scheduler=_no_compute):
        out = call(x)
    assert calls == [] and is_dask_array(out)
    np.asarray(out)  # computing reads the blocks
    assert len(calls) >= x.npartitions


def test_level_sets_with_a_computed_grid_reads_the_data_once(rng):
    """levels None or an int: min and max are computed at the call, in one pass."""
    f = rng.integers(0, 9, size=(10, 9)).astype(np.uint16)
    x, calls = counted(f, (3, 4))
    stack = level_sets(x)
    assert len(calls) == x.npartitions  # the min/max pass, nothing else yet
    assert is_dask_array(stack)
    np.testing.assert_array_equal(stack.compute(), level_sets(f))


# --------------------------------------------------------------------------- level sets
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float16, np.float32, np.float64])
@pytest.mark.parametrize("levels", [None, 5, [0.5, -1.0, 2.0, 3.0]], ids=["none", "int", "list"])
def test_level_sets_match_numpy(rng, dtype, levels):
    f = (rng.normal(size=(6, 7, 5)) * 3).astype(dtype)
    chunks = ((1, 2, 3), (3, 4), (5,))
    x = da.from_array(f, chunks=chunks)
    stack = level_sets(x, levels)
    ref = level_sets(f, levels)
    assert stack.shape == ref.shape and stack.dtype == bool
    assert stack.chunks == ((1,) * ref.shape[0], *chunks)  # one level per chunk
    np.testing.assert_array_equal(stack.compute(), ref)
    one = level_set(x, 0.7)
    assert one.chunks == chunks
    np.testing.assert_array_equal(one.compute(), level_set(f, 0.7))


def test_level_sets_of_a_constant_dask_image_is_empty():
    x = da.full((4, 5), 2.0, chunks=2)
    stack = level_sets(x)
    assert stack.shape == (0, 4, 5)
    assert stack.compute().shape == (0, 4, 5)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: gradient(da.zeros((2,) * 4, chunks=1)), ValueError, "got 4"),
        (lambda: gradient(da.from_array(np.float64(3.0))), ValueError, "got 0"),
        (lambda: gradient(da.zeros((0, 3), chunks=1)), ValueError, "empty"),
        (lambda: gradient(da.zeros(3, dtype=complex)), TypeError, "complex"),
        (lambda: tv_norm(da.from_array(np.array(["a", "b"]))), TypeError, "numeric"),
        (lambda: gradient(da.zeros((4, 4)), scheme="centered"), ValueError, "scheme"),
        (lambda: gradient(da.zeros((4, 4)), spacing=(1.0,)), ValueError, "2 entries"),
        (lambda: tv_gradient(da.zeros((4, 4)), kind="l1"), ValueError, "kind"),
        (lambda: tv_norm(da.zeros((4, 4)), eps=-1.0), ValueError, "eps"),
        (lambda: divergence(da.zeros((3, 4, 4))), ValueError, "p must have shape"),
        (lambda: divergence(da.zeros(4)), ValueError, "p must have 2, 3, 4"),
        (lambda: level_set(da.zeros((2,) * 4), 0.0), ValueError, "got 4"),
        (lambda: level_set(da.zeros((3, 3), dtype=np.uint8), float("nan")), ValueError, "NaN"),
        (lambda: level_sets(da.zeros((3, 3)), levels=[[1.0]]), TypeError, "levels"),
    ],
)
def test_bad_input_raises_at_the_call(call, exc, match):
    with dask.config.set(scheduler=_no_compute), pytest.raises(exc, match=match):
        call()


def test_unknown_chunk_sizes_are_rejected():
    x = da.from_array(np.arange(10.0), chunks=3)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        gradient(x[x > 2])


@pytest.mark.parametrize(
    "call",
    [gradient, tv_gradient, tv_norm, lambda x: divergence(da.stack([x, x])),
     lambda x: level_set(x, 0.0), lambda x: level_sets(x, [0.0, 1.0])],
    ids=["gradient", "tv_gradient", "tv_norm", "divergence", "level_set", "level_sets"],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_raise_when_computed(rng, call, bad):
    """NaN/inf need the data: checked block by block, ValueError from the compute."""
    f = rng.normal(size=(8, 6))
    f[5, 4] = bad
    with dask.config.set(scheduler=_no_compute):
        out = call(da.from_array(f, chunks=3))
    with pytest.raises(ValueError, match="must be finite"):
        np.asarray(out)


@pytest.mark.parametrize("levels", [None, 4])
def test_level_sets_with_a_computed_grid_reject_non_finite_at_the_call(levels):
    f = np.array([[0.0, np.nan], [1.0, 2.0]])
    with pytest.raises(ValueError, match="finite"):
        level_sets(da.from_array(f, chunks=1), levels)


# --------------------------------------------------------------------------- helpers
def test_is_dask_array():
    assert is_dask_array(da.zeros(3))
    assert not is_dask_array(np.zeros(3))
    assert not is_dask_array(np.zeros(3).view(np.ma.MaskedArray))
    assert not is_dask_array([1.0, 2.0])


def test_the_operators_do_not_import_dask():
    code = (
        "import sys, numpy as np, napari_tv, napari_tv.operators as op, napari_tv.levelsets\n"
        "op.tv_norm(np.ones((3, 3))); op.is_dask_array(np.ones(2))\n"
        "print('dask' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
