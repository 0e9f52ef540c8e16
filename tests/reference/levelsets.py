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
