"""Max-flow on the implicit grid graph: hand-worked graphs and PyMaxflow as oracles."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tv.operators import neighbour_offsets
from napari_tv.solvers.maxflow import cut_value, maxflow_grid
from reference.exact import pymaxflow_grid

CASES = [  # (shape, connectivity)
    ((9,), 1),
    ((7, 6), 1),
    ((6, 7), 2),
    ((4, 5, 3), 1),
    ((4, 3, 5), 2),
    ((3, 4, 4), 3),
]


def test_chain_known_flow():
    # S -5-> a -3-> b -2-> c -4-> T (no reverse capacity): bottleneck b->c = 2
    caps = np.array([[3.0, 2.0, 0.0], [0.0, 0.0, 0.0]])  # (2K, n): forward, backward
    flow, src = maxflow_grid(caps, [5.0, 0.0, 0.0], [0.0, 0.0, 4.0], offsets=[[1]])
    assert flow == 2.0
    assert src.tolist() == [True, True, False]


def test_two_by_two_known_flow():
    # a b      S->a 4, S->c 1, b->T 2, d->T 5; undirected a-b 1, c-d 3 (axis 1), a-c 2, b-d 1
    # worked on paper: a->b 1, a->c 2, c->d 3, d->T 3, b->T 1: flow 4; cut {S->c, a->b, a->c};
    # the residual graph reaches only a from the source.
    caps = np.zeros((2, 2, 2))
    caps[0] = [[2.0, 1.0], [0.0, 0.0]]  # axis 0: a-c, b-d
    caps[1] = [[1.0, 0.0], [3.0, 0.0]]  # axis 1: a-b, c-d
    flow, src = maxflow_grid(caps, [[4.0, 0.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 5.0]])
    assert flow == 4.0
    assert src.tolist() == [[True, False], [False, False]]


def test_common_terminal_part_is_counted():
    # a voxel tied to both terminals saturates min(source, sink) without any edge
    flow, src = maxflow_grid(np.zeros((1, 2)), [3.0, 1.0], [2.0, 4.0], offsets=[[1]])
    assert flow == 3.0
    assert src.tolist() == [True, False]


def _random_graph(rng, shape, connectivity, integer):
    k = len(neighbour_offsets(len(shape), connectivity))
    caps = rng.random((2 * k,) + shape) * (rng.random((2 * k,) + shape) < 0.8)
    src = 3 * rng.random(shape) * (rng.random(shape) < 0.5)
    snk = 3 * rng.random(shape) * (rng.random(shape) < 0.5)
    if integer:
        caps, src, snk = np.round(4 * caps), np.round(src), np.round(snk)
    return caps, src, snk


@pytest.mark.parametrize("shape, connectivity", CASES)
@pytest.mark.parametrize("integer", [False, True], ids=["real", "integer"])
def test_matches_pymaxflow(shape, connectivity, integer):
    rng = np.random.default_rng(sum(shape) + 10 * connectivity + integer)
    off = neighbour_offsets(len(shape), connectivity)
    for _ in range(8):
        caps, src, snk = _random_graph(rng, shape, connectivity, integer)
        flow, s_set = maxflow_grid(caps, src, snk, connectivity=connectivity)
        ref_flow, ref_set = pymaxflow_grid(caps, src, snk, off)
        assert flow == pytest.approx(ref_flow, rel=1e-12, abs=1e-12)
        cut = cut_value(caps, src, snk, s_set, connectivity=connectivity)
        ref_cut = cut_value(caps, src, snk, ref_set, connectivity=connectivity)
        assert cut == pytest.approx(flow, rel=1e-12, abs=1e-12)
        assert ref_cut == pytest.approx(flow, rel=1e-12, abs=1e-12)
        # ours is the smallest source side; PyMaxflow puts free nodes on the source side
        assert not (s_set & ~ref_set).any()


def test_smallest_source_side_is_residual_reachability():
    # S -1-> a -1- b -1-> T: {}, {a} and {a, b} are all minimum cuts (value 1); after the
    # flow the arc S->a is saturated, so nothing is reachable: the smallest one, {}, is returned
    caps = np.array([[1.0, 0.0], [1.0, 0.0]])  # symmetric 1 between a and b
    flow, src = maxflow_grid(caps, [1.0, 0.0], [0.0, 1.0], offsets=[[1]])
    assert flow == 1.0
    assert src.tolist() == [False, False]


@pytest.mark.parametrize("shape, connectivity", [((6, 5), 2), ((3, 4, 3), 3)])
def test_symmetric_capacities_equal_both_directions(shape, connectivity):
    rng = np.random.default_rng(3)
    k = len(neighbour_offsets(len(shape), connectivity))
    sym = rng.random((k,) + shape)
    _, src, snk = _random_graph(rng, shape, connectivity, False)
    # direction K+k at s is the arc s -> s - o_k, whose capacity is sym[k] at s - o_k
    off = neighbour_offsets(len(shape), connectivity)
    full = np.concatenate([sym, np.zeros_like(sym)])
    for kk, o in enumerate(off):
        for s in np.ndindex(shape):
            t = tuple(np.subtract(s, o))
            if all(0 <= c < n for c, n in zip(t, shape, strict=True)):
                full[k + kk][s] = sym[kk][t]
    f_sym, s_sym = maxflow_grid(sym, src, snk, connectivity=connectivity)
    f_full, s_full = maxflow_grid(full, src, snk, connectivity=connectivity)
    assert f_sym == pytest.approx(f_full, rel=1e-12)
    np.testing.assert_array_equal(s_sym, s_full)


def test_inputs_not_modified():
    rng = np.random.default_rng(0)
    caps, src, snk = _random_graph(rng, (5, 6), 1, False)
    copies = [a.copy() for a in (caps, src, snk)]
    maxflow_grid(caps, src, snk)
    for a, b in zip((caps, src, snk), copies, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"capacities": -np.ones((2, 3, 3))}, "capacities must be >= 0"),
        ({"source_caps": -np.ones((3, 3))}, "source_caps must be >= 0"),
        ({"sink_caps": np.ones((3, 4))}, "sink_caps must have shape"),
        ({"capacities": np.ones((3, 3, 3))}, "capacities must have shape"),
        ({"capacities": np.full((2, 3, 3), np.nan)}, "capacities must be finite"),
        ({"offsets": [[2, 0]]}, "offsets must be"),
        ({"offsets": [[1, 0, 0]]}, "offsets must have shape"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"capacities": np.ones((2, 3, 3)), "source_caps": np.ones((3, 3)),
            "sink_caps": np.ones((3, 3))}  # fmt: skip
    offsets = kwargs.pop("offsets", None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        maxflow_grid(**args, offsets=offsets)


@pytest.mark.parametrize("seed", range(4))
def test_a_resumed_flow_equals_a_fresh_one(seed):
    """``GridFlowState.maxflow`` resumed after terminal capacities grew (the exact solver's
    rounds) pushes, in total, the flow of a fresh solve, and ends on the same smallest source
    side (PyMaxflow's ``reuse_trees``)."""
    from napari_tv.solvers.maxflow import GridFlowState, _drop_outer_arcs, _shift

    rng = np.random.default_rng(seed)
    shape = (5, 6, 4)
    off = np.asarray(neighbour_offsets(3, 1))
    k = len(off)
    caps = rng.random((k,) + shape)
    src1, snk1 = rng.random(shape), rng.random(shape)
    d_src, d_snk = rng.random(shape) * (rng.random(shape) < 0.3), rng.random(shape) * 0.5

    state = GridFlowState(shape, off)
    both = np.concatenate([caps, np.stack([_shift(caps[j], off[j]) for j in range(k)])])
    state.rc.reshape(state.pshape + (2 * k,))[state.inner] = np.moveaxis(both, 0, -1)
    state.tr.reshape(state.pshape)[state.inner] = src1 - snk1
    inside = np.zeros(state.pshape, dtype=np.bool_)
    inside[state.inner] = True
    _drop_outer_arcs(state.rc, state.nbr, inside.ravel())
    first = state.maxflow() + float(np.minimum(src1, snk1).sum())
    # the capacities grow, the flow pushed stays: a voxel's new source and sink residuals meet
    # in a direct source -> voxel -> sink flow (Kolmogorov's add_tweights)
    residual = state.tr.reshape(state.pshape)[state.inner].copy()
    direct = float(np.minimum(np.maximum(residual, 0) + d_src, np.maximum(-residual, 0) + d_snk)
                   .sum())  # fmt: skip
    state.tr.reshape(state.pshape)[state.inner] += d_src - d_snk
    second = state.maxflow()
    resumed_side = state.source_side().reshape(state.pshape)[state.inner]

    src, snk = src1 + d_src, snk1 + d_snk
    flow, side = maxflow_grid(caps, src, snk, offsets=off)
    assert first + direct + second == pytest.approx(flow, rel=1e-12)
    np.testing.assert_array_equal(resumed_side, side)
    assert cut_value(caps, src, snk, side, offsets=off) == pytest.approx(flow, rel=1e-12)
