"""The duality gap every iterative solver stops on, against the NumPy oracle, term by term.

``_gap.duality_gap`` is one fused pass (``div p`` on the fly, every value widened to float64
as it is read); the oracle builds ``grad``, ``div``, the conjugates and the primal from
``np.diff`` / ``np.roll`` in float64.  Any slip in the boundary handling, the component/axis
order, the spacing or the float32 path changes the primal or the gap.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_tv.solvers._gap import duality_gap
from reference.iterative import conjugate, div, primal_energy

SHAPES = [(9,), (1,), (6, 7), (1, 5), (5, 1), (4, 5, 3), (3, 1, 4), (1, 1, 6)]


def _data(rng, shape, fid):
    if fid == "poisson":
        v = rng.poisson(3.0, size=shape).astype(np.float64)
        u = rng.uniform(0.5, 5.0, size=shape)
    else:
        v = rng.normal(size=shape)
        u = v + 0.3 * rng.normal(size=shape)
    p = rng.uniform(-1.0, 1.0, size=(len(shape),) + shape)
    p /= np.maximum(1.0, np.sqrt((p**2).sum(axis=0)))  # in the isotropic (so any) ball
    return u, v, p


def _oracle(u, v, p, beta, fid, kind, weights, periodic):
    """(primal, P(u) - D(p)) with the dual at scale 1 (the test keeps beta div p feasible)."""
    primal = primal_energy(u, v, beta, fid, kind, weights, periodic)
    dual = -conjugate(beta * div(p, weights, periodic), v, fid)
    return primal, primal - dual


@pytest.mark.parametrize("quick", [False, True], ids=["fused", "quick"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(
    ("fid", "kind", "periodic"),
    list(itertools.product(["l2", "l1", "poisson"], ["isotropic", "anisotropic"], [False, True])),
)
def test_gap_matches_oracle(rng, shape, fid, kind, periodic, quick):
    """Both the fused kernels and their quick twins (``solvers/_quick.py``)."""
    u, v, p = _data(rng, shape, fid)
    spacing = tuple(rng.uniform(0.5, 2.0, size=len(shape)))
    weights = np.min(spacing) / np.asarray(spacing)  # spacing is relative
    # L1 and Poisson need |beta div p| < 1 for the unscaled dual to be feasible
    beta = 0.7 if fid == "l2" else 0.9 / (2.0 * weights.sum())
    g = duality_gap(
        u,
        v,
        p,
        beta,
        fidelity=fid,
        isotropic=kind == "isotropic",
        spacing=spacing,
        periodic=periodic,
        quick=quick,
    )
    primal, gap_abs = _oracle(u, v, p, beta, fid, kind, weights, periodic)
    assert g.scale == 1.0
    assert g.primal == pytest.approx(primal, rel=1e-12)
    assert g.abs == pytest.approx(gap_abs, rel=1e-9, abs=1e-12)
    assert g.dual == pytest.approx(primal - gap_abs, rel=1e-9, abs=1e-12)
    assert g.abs >= 0


@pytest.mark.parametrize("quick", [False, True], ids=["fused", "quick"])
@pytest.mark.parametrize("shape", [(40, 50), (12, 13, 14)], ids=str)
@pytest.mark.parametrize("fid", ["l2", "l1", "poisson"])
def test_float32_gap_read_as_float64(rng, shape, fid, quick):
    """float32 arrays are read directly (no converted copies) but every term is float64: the
    result equals the float64 gap of the same (float32-representable) values."""
    u, v, p = (a.astype(np.float32) for a in _data(rng, shape, fid))
    beta = 0.8 if fid == "l2" else 0.2
    g32 = duality_gap(u, v, p, beta, fidelity=fid, quick=quick)
    g64 = duality_gap(
        *(a.astype(np.float64) for a in (u, v, p)), beta, fidelity=fid, quick=quick
    )
    assert g32.primal == pytest.approx(g64.primal, rel=1e-12)
    assert g32.abs == pytest.approx(g64.abs, rel=1e-9)
    assert g32.rel == pytest.approx(g64.rel, rel=1e-9)


def test_gap_vanishes_at_the_rof_optimum():
    """1-D ROF with a known minimiser: a unit step on 3 + 3 samples, beta = 0.1, has
    u = (1, 1, 1, 29, 29, 29)/30 and the dual p = (1/3, 2/3, 1, 2/3, 1/3, ·): u = v + beta div p
    and p = Du/|Du| = 1 on the jump, so the gap is exactly zero there and positive elsewhere."""
    v = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    beta = 0.1
    u = np.array([1, 1, 1, 29, 29, 29]) / 30.0
    p = np.array([[1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3, 0.0]])
    # optimality: u = v + beta div p (div is the negative adjoint of the forward difference)
    np.testing.assert_allclose(u, v + beta * div(p), atol=1e-15)
    g = duality_gap(u, v, p, beta)
    assert g.abs < 1e-15
    assert g.primal == pytest.approx(0.5 * 6 * (1 / 30) ** 2 + beta * 28 / 30, rel=1e-14)
    # any other u has a positive gap
    assert duality_gap(u + 0.01, v, p, beta).abs > 1e-6
