"""Naive oracles for level sets and their perimeters, written from the definitions with loops."""

from __future__ import annotations

import itertools

import numpy as np


def level_sets_naive(u, grid) -> np.ndarray:
    """``stack[k, s] = u_s <= grid[k]`` for ``k < len(grid) - 1``, pixel by pixel."""
    u = np.asarray(u)
    out = np.zeros((len(grid) - 1, *u.shape), dtype=bool)
    for k in range(len(grid) - 1):
        for s in np.ndindex(u.shape):
            out[(k, *s)] = bool(u[s] <= grid[k])
    return out


def from_level_sets_naive(stack, grid) -> np.ndarray:
    """``u_s = min{grid[k] : stack[k, s]}``, ``grid[-1]`` when no level is set."""
    stack = np.asarray(stack, dtype=bool)
    out = np.empty(stack.shape[1:])
    for s in np.ndindex(out.shape):
        ks = [k for k in range(stack.shape[0]) if stack[(k, *s)]]
        out[s] = grid[min(ks)] if ks else grid[-1]
    return out


def neighbourhood(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Every neighbour offset (both orientations), as scipy's generate_binary_structure."""
    return [
        o
        for o in itertools.product((-1, 0, 1), repeat=ndim)
        if 1 <= sum(map(abs, o)) <= connectivity
    ]


def perimeter_naive(mask, connectivity: int, weight_of) -> float:
    """``sum over ordered pairs (s, s+o) of w(o) |x_s - x_{s+o}|``, halved (each pair twice).

    ``weight_of(o)`` returns the weight of offset ``o`` (the same for ``o`` and ``-o``).
    """
    x = np.asarray(mask, dtype=np.float64)
    total = 0.0
    for o in neighbourhood(x.ndim, connectivity):
        w = weight_of(o)
        for s in np.ndindex(x.shape):
            t = tuple(a + b for a, b in zip(s, o, strict=True))
            if all(0 <= ti < n for ti, n in zip(t, x.shape, strict=True)):
                total += w * abs(x[s] - x[t])
    return total / 2.0


def weight_lookup(offsets, weights):
    """``weight_of(o)`` from half-neighbourhood offsets and their weights."""
    table = {}
    for o, w in zip(np.asarray(offsets), np.asarray(weights), strict=True):
        table[tuple(int(v) for v in o)] = float(w)
        table[tuple(-int(v) for v in o)] = float(w)
    return table.__getitem__


def level_perimeters_naive(u, grid, connectivity: int, weight_of) -> np.ndarray:
    """One full perimeter pass per level: ``P(u <= grid[k])`` for ``k < len(grid) - 1``."""
    u = np.asarray(u)
    return np.array(
        [perimeter_naive(u <= lam, connectivity, weight_of) for lam in grid[:-1]],
        dtype=np.float64,
    )


def level_energy(x, lam, lam_next, v, beta, fidelity_pointwise, perimeter_of) -> float:
    """``E^k(x) = β Δλ P(x) + Σ_s (g_s(λ_{k+1}) − g_s(λ_k)) (1 − x_s)`` (seed 002, eq. 3)."""
    lam_arr = np.full(v.shape, lam)
    next_arr = np.full(v.shape, lam_next)
    slope = fidelity_pointwise(next_arr, v) - fidelity_pointwise(lam_arr, v)
    return beta * (lam_next - lam) * perimeter_of(x) + float(np.sum(slope * (1 - x)))


def levelwise_minimiser_pymaxflow(v, beta, grid, fidelity_pointwise) -> np.ndarray:
    """Minimise every binary level energy separately (4/6-neighbourhood, unit weights) with
    PyMaxflow and stack the minimisers: ``x_s = 1`` (``u_s <= λ_k``) on the source side."""
    import maxflow

    v = np.asarray(v, dtype=np.float64)
    stack = []
    for k in range(len(grid) - 1):
        lam, lam_next = grid[k], grid[k + 1]
        cost_above = fidelity_pointwise(np.full(v.shape, lam_next), v) - fidelity_pointwise(
            np.full(v.shape, lam), v
        )  # the price of x_s = 0
        graph = maxflow.Graph[float]()
        ids = graph.add_grid_nodes(v.shape)
        for axis in range(v.ndim):
            structure = np.zeros((3,) * v.ndim)
            centre = [1] * v.ndim
            centre[axis] = 2
            structure[tuple(centre)] = 1
            graph.add_grid_edges(
                ids, weights=beta * (lam_next - lam), structure=structure, symmetric=True
            )
        # a sink-side node (x_s = 0) cuts its source link; a source-side one its sink link
        graph.add_grid_tedges(ids, np.maximum(cost_above, 0), np.maximum(-cost_above, 0))
        graph.maxflow()
        stack.append(~graph.get_grid_segments(ids))
    return np.array(stack, dtype=bool)
