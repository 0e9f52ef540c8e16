"""Slow, obviously-correct oracles for the exact solver and the max-flow.

* ``energy_naive``: the graph-TV energy with explicit loops over voxels and offsets.
* ``brute_force_tv``: enumerate all ``L**N`` labelings of a tiny image, return the minimum.
* ``naive_dichotomy``: the *wrong* dichotomy that drops edges between different intervals
  (kept to show, in a test, that the exact solver does not make that mistake).
* ``pymaxflow_grid``: the same grid graph built edge by edge with PyMaxflow.
"""

from __future__ import annotations

import itertools

import numpy as np


def fidelity_naive(u, v, fidelity):
    """Elementwise f(u, v) written out plainly (inf where Poisson is undefined)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if fidelity == "l2":
        return 0.5 * (u - v) ** 2
    if fidelity == "l1":
        return np.abs(u - v)
    u, v = np.broadcast_arrays(u, v)
    undefined = (u < 0) | ((u == 0) & (v > 0))
    safe_u = np.where(u > 0, u, 1.0)
    out = np.where(v > 0, u - v * np.log(safe_u), u)  # 0 log 0 := 0
    return np.where(undefined, np.inf, out)


def graph_tv_naive(u, offsets, weights):
    """sum_k w_k sum_{s, s+o_k inside} |u_s - u_{s+o_k}|, one voxel at a time."""
    u = np.asarray(u, dtype=np.float64)
    total = 0.0
    for s in np.ndindex(u.shape):
        for o, w in zip(offsets, weights, strict=True):
            t = tuple(int(a + b) for a, b in zip(s, o, strict=True))
            if all(0 <= c < n for c, n in zip(t, u.shape, strict=True)):
                total += w * abs(u[s] - u[t])
    return total


def energy_naive(u, v, beta, fidelity, offsets, weights):
    return float(fidelity_naive(u, v, fidelity).sum()) + beta * graph_tv_naive(u, offsets, weights)


def brute_force_tv(v, beta, grid, fidelity, offsets, weights):
    """Minimum energy and one minimiser over all labelings with values in ``grid``.

    Vectorised over labelings (``L**N`` rows); keep ``L**N`` below ~1e5.
    """
    v = np.asarray(v, dtype=np.float64)
    grid = np.asarray(grid, dtype=np.float64)
    n = v.size
    labels = np.array(list(itertools.product(range(len(grid)), repeat=n)), dtype=np.int64)
    vals = grid[labels].reshape((-1,) + v.shape)  # (M, *shape)
    with np.errstate(invalid="ignore"):
        data = fidelity_naive(vals.reshape(len(vals), -1), v.ravel()[None, :], fidelity)
    energy = data.sum(axis=1)
    for o, w in zip(offsets, weights, strict=True):
        src = tuple(slice(max(-c, 0), m - max(c, 0)) for c, m in zip(o, v.shape, strict=True))
        dst = tuple(slice(max(c, 0), m + min(c, 0)) for c, m in zip(o, v.shape, strict=True))
        diff = np.abs(vals[(slice(None),) + src] - vals[(slice(None),) + dst])
        energy = energy + beta * w * diff.reshape(len(vals), -1).sum(axis=1)
    best = int(np.argmin(energy))
    return float(energy[best]), vals[best]


def level_cut_naive(v, beta, grid, k, fidelity, offsets, weights):
    """Brute-force *largest* lower level set {u <= grid[k]} minimising the level energy
    E^k(x) = sum_s c_s(k) x_s + beta sum w |x_s - x_t| (x = 1 - lower set)."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        c = (fidelity_naive(grid[k + 1], v, fidelity) - fidelity_naive(grid[k], v, fidelity)) / (
            grid[k + 1] - grid[k]
        )
    up = c == -np.inf  # f(grid[k]) infinite: u must lie above grid[k]
    down = c == np.inf
    c = np.where(np.isfinite(c), c, 0.0)
    best, best_x = np.inf, None
    for bits in itertools.product((0, 1), repeat=v.size):
        x = np.array(bits, dtype=np.float64).reshape(v.shape)
        if (x[up] == 0).any() or (x[down] == 1).any():
            continue
        e = float((c * x).sum()) + beta * graph_tv_naive(x, offsets, weights)
        if e < best - 1e-12 or (abs(e - best) <= 1e-12 and x.sum() < best_x.sum()):
            best, best_x = e, x
    return best_x == 0


def naive_dichotomy(v, beta, grid, fidelity, offsets, weights):
    """The tempting but WRONG dichotomy: each round, pixels are cut at their own midpoint and
    edges between pixels of different intervals are simply dropped (no unary term).
    Brute force per group (tiny inputs only)."""
    v = np.asarray(v, dtype=np.float64)
    lo = np.zeros(v.shape, dtype=np.int64)
    hi = np.full(v.shape, len(grid) - 1, dtype=np.int64)
    while (lo < hi).any():
        new_lo, new_hi = lo.copy(), hi.copy()
        for key in {(a, b) for a, b in zip(lo.ravel(), hi.ravel(), strict=True) if a < b}:
            mask = (lo == key[0]) & (hi == key[1])
            m = (key[0] + key[1]) // 2
            # cut the group alone: pairwise terms only inside the group
            idx = np.argwhere(mask)
            best, best_x = np.inf, None
            for bits in itertools.product((0, 1), repeat=len(idx)):
                x = np.zeros(v.shape)
                x[tuple(idx.T)] = bits
                c = fidelity_naive(grid[m + 1], v, fidelity) - fidelity_naive(grid[m], v, fidelity)
                c = c / (grid[m + 1] - grid[m])
                e = float((c * x)[mask].sum())
                for o, w in zip(offsets, weights, strict=True):
                    for s in map(tuple, idx):
                        t = tuple(int(a + b) for a, b in zip(s, o, strict=True))
                        inside = all(0 <= q < n for q, n in zip(t, v.shape, strict=True))
                        if inside and mask[t]:
                            e += beta * w * abs(x[s] - x[t])
                if e < best:
                    best, best_x = e, x
            up = mask & (best_x > 0)
            down = mask & ~(best_x > 0)
            new_lo[up] = m + 1
            new_hi[down] = m
        lo, hi = new_lo, new_hi
    return grid[lo]


def pymaxflow_grid(capacities, source_caps, sink_caps, offsets):
    """Max-flow value and source set with PyMaxflow; capacities (2K, *shape) per direction."""
    import maxflow

    src = np.asarray(source_caps, dtype=np.float64)
    g = maxflow.Graph[float]()
    ids = g.add_grid_nodes(src.shape)
    k = len(offsets)
    for d in range(2 * k):
        o = np.asarray(offsets[d] if d < k else -np.asarray(offsets[d - k]))
        structure = np.zeros((3,) * src.ndim)
        structure[tuple(o + 1)] = 1.0
        g.add_grid_edges(ids, weights=capacities[d], structure=structure, symmetric=False)
    g.add_grid_tedges(ids, src, np.asarray(sink_caps, dtype=np.float64))
    flow = g.maxflow()
    return float(flow), ~g.get_grid_segments(ids)


def level_energy_naive(below, v, beta, grid, k, fidelity, offsets, weights):
    """E^k(x) = sum_s c_s(k) x_s + beta sum w |x_s - x_t| for x = 1 - below (finite part;
    inf if a forced pixel (c = ±inf) is on the wrong side)."""
    x = 1.0 - np.asarray(below, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        c = (fidelity_naive(grid[k + 1], v, fidelity) - fidelity_naive(grid[k], v, fidelity)) / (
            grid[k + 1] - grid[k]
        )
    if ((c == -np.inf) & (x == 0)).any() or ((c == np.inf) & (x == 1)).any():
        return np.inf
    c = np.where(np.isfinite(c), c, 0.0)
    return float((c * x).sum()) + beta * graph_tv_naive(x, offsets, weights)
