"""Naive oracles for the difference operators, written from the definitions with loops."""

from __future__ import annotations

import itertools

import numpy as np


def diff_1d(f: np.ndarray, scheme: str, boundary: str, h: float = 1.0) -> np.ndarray:
    """One line of differences, sample by sample, straight from the definition."""
    n = len(f)
    out = np.zeros(n)
    for i in range(n):
        if boundary == "periodic":
            nxt, prv = f[(i + 1) % n], f[(i - 1) % n]
        else:  # Neumann: reflect, f[-1] = f[0], f[n] = f[n-1]
            nxt, prv = f[min(i + 1, n - 1)], f[max(i - 1, 0)]
        if scheme == "forward":
            out[i] = (nxt - f[i]) / h
        elif scheme == "backward":
            out[i] = (f[i] - prv) / h
        else:
            out[i] = (nxt - prv) / (2 * h)
    return out


def gradient_naive(f, scheme="forward", boundary="neumann", spacing=None) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    spacing = np.ones(f.ndim) if spacing is None else np.broadcast_to(spacing, (f.ndim,))
    spacing = spacing / np.min(spacing)  # relative, the package's convention
    out = np.zeros((f.ndim, *f.shape))
    for axis in range(f.ndim):
        moved = np.moveaxis(f, axis, -1)
        res = np.moveaxis(out[axis], axis, -1)
        for idx in np.ndindex(moved.shape[:-1]):
            res[idx] = diff_1d(moved[idx], scheme, boundary, spacing[axis])
    return out


def circulant_R(m: int, n: int) -> np.ndarray:
    """Seed 001's R = [R_I ⊗ I_n ; I_m ⊗ R_J] for backward periodic differences, built from
    the circulant matrices written out in the seed."""
    R_I = np.eye(m) - np.roll(np.eye(m), 1, axis=0)  # 1 on the diagonal, −1 below, −1 top-right
    R_J = np.eye(n) - np.roll(np.eye(n), 1, axis=1)  # 1 on the diagonal, −1 right, −1 bottom-left
    # seed 001: Δ_J X = X R_J, so vec(Δ_J X) = (I_m ⊗ R_Jᵀ) vec(X) in C (row-major) order
    return np.vstack([np.kron(R_I, np.eye(n)), np.kron(np.eye(m), R_J.T)])


def tv_naive(f, kind="isotropic", spacing=None, eps=0.0) -> float:
    g = gradient_naive(f, "forward", "neumann", spacing)
    if kind == "isotropic":
        return float(np.sqrt((g**2).sum(axis=0) + eps**2).sum())
    return float(np.sqrt(g**2 + eps**2).sum())


def graph_tv_naive(u, offsets, weights) -> float:
    u = np.asarray(u, dtype=np.float64)
    total = 0.0
    for s in itertools.product(*(range(n) for n in u.shape)):
        for o, w in zip(offsets, weights, strict=True):
            t = tuple(a + b for a, b in zip(s, o, strict=True))
            if all(0 <= x < n for x, n in zip(t, u.shape, strict=True)):
                total += w * abs(u[s] - u[t])
    return total


def numerical_gradient(fun, f: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar function of an array (float64)."""
    f = np.array(f, dtype=np.float64)
    out = np.zeros_like(f)
    for idx in np.ndindex(f.shape):
        old = f[idx]
        f[idx] = old + h
        up = fun(f)
        f[idx] = old - h
        down = fun(f)
        f[idx] = old
        out[idx] = (up - down) / (2 * h)
    return out
