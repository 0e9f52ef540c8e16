r"""Data-fidelity terms ``f(u, v)``: value, proximal map and their Numba scalar forms.

==========  =====================================  ===========================================
name        f(u, v)                                prox of τ·f(·, v) at x
==========  =====================================  ===========================================
``l2``      ½ (u − v)²                             (x + τ v) / (1 + τ)
``l1``      |u − v|                                v + sign(x − v) · max(|x − v| − τ, 0)
``poisson`` u − v log u  (u > 0; 0·log 0 := 0)     ½ (x − τ + sqrt((x − τ)² + 4 τ v))
==========  =====================================  ===========================================

The Poisson term is the negative log-likelihood of counts ``v ~ Poisson(u)`` up to a constant
(the Kullback–Leibler divergence of ``v`` from ``u`` minus terms free of ``u``); it is ``+inf``
where ``u ≤ 0 < v`` and equals ``u`` where ``v = 0`` and ``u ≥ 0``.  It needs ``v ≥ 0``.

All three are convex and separable, which is what both the iterative solvers (through the
prox) and the exact solver (through the level costs ``f(λ_{k+1}, v) − f(λ_k, v)``, monotone in
``k`` by convexity) rely on.
"""

from __future__ import annotations

import math

import numpy as np

from ._config import jit
from ._validation import check_choice, check_real

__all__ = [
    "FIDELITIES",
    "FIDELITY_CODE",
    "check_fidelity_data",
    "fidelity_pointwise",
    "fidelity_value",
    "fidelity_prox",
    "dual_domain_update",
    "fenchel_young",
    "prox_scalar",
    "value_scalar",
]

FIDELITIES = ("l2", "l1", "poisson")
#: integer codes for the Numba kernels
FIDELITY_CODE = {"l2": 0, "l1": 1, "poisson": 2}


def check_fidelity_data(image: np.ndarray, fidelity: str) -> str:
    """Check ``fidelity`` is known and the data suits it (Poisson counts must be ≥ 0)."""
    check_choice("fidelity", fidelity, FIDELITIES)
    if fidelity == "poisson" and image.size and float(np.min(image)) < 0:
        raise ValueError(
            f"image must be >= 0 for fidelity='poisson' (photon counts), "
            f"got minimum {float(np.min(image))!r}"
        )
    return fidelity


def fidelity_pointwise(u, v, fidelity: str) -> np.ndarray:
    """``f(u_s, v_s)`` for every sample, in float64 (``inf`` where Poisson is undefined)."""
    check_choice("fidelity", fidelity, FIDELITIES)
    u, v = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
    if fidelity == "l2":
        return 0.5 * (u - v) ** 2
    if fidelity == "l1":
        return np.abs(u - v)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = u - np.where(v > 0, v * np.log(np.where(u > 0, u, 1.0)), 0.0)
    out[(u <= 0) & (v > 0)] = np.inf
    out[u < 0] = np.inf
    return out


def fidelity_value(u, v, fidelity: str) -> float:
    """``Σ_s f(u_s, v_s)`` accumulated in float64.

    Examples
    --------
    >>> fidelity_value([1.0, 2.0], [0.0, 0.0], "l2")
    2.5
    """
    return float(fidelity_pointwise(u, v, fidelity).sum())


def fidelity_prox(x, v, tau: float, fidelity: str) -> np.ndarray:
    r"""The proximal map :math:`\arg\min_u \tfrac12 (u-x)^2 + \tau f(u, v)`, elementwise.

    Parameters
    ----------
    x, v : array_like
        Point and data, broadcastable.
    tau : float
        Step > 0.
    fidelity : {"l2", "l1", "poisson"}

    Returns
    -------
    ndarray (float64 unless ``x`` is float32)

    Examples
    --------
    >>> fidelity_prox([3.0], [1.0], 1.0, "l1")
    array([2.])
    """
    check_choice("fidelity", fidelity, FIDELITIES)
    tau = check_real("tau", tau, minimum=0.0, strict=True)
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    x = x.astype(np.float64)
    v = np.asarray(v, dtype=np.float64)
    if fidelity == "l2":
        out = (x + tau * v) / (1.0 + tau)
    elif fidelity == "l1":
        d = x - v
        out = v + np.sign(d) * np.maximum(np.abs(d) - tau, 0.0)
    else:
        a = x - tau
        out = 0.5 * (a + np.sqrt(a * a + 4.0 * tau * v))
    return out.astype(dtype)


@jit
def prox_scalar(x, v, tau, code):
    """Numba scalar prox of ``tau·f(·, v)`` at ``x`` (``code`` from FIDELITY_CODE)."""
    if code == 0:
        return (x + tau * v) / (1.0 + tau)
    if code == 1:
        d = x - v
        if d > tau:
            return x - tau
        if d < -tau:
            return x + tau
        return v
    a = x - tau
    return 0.5 * (a + np.sqrt(a * a + 4.0 * tau * v))


@jit
def value_scalar(u, v, code):
    """Numba scalar ``f(u, v)`` (``inf`` where Poisson is undefined)."""
    if code == 0:
        return 0.5 * (u - v) * (u - v)
    if code == 1:
        return abs(u - v)
    if u < 0.0 or (u == 0.0 and v > 0.0):
        return np.inf
    if v > 0.0:
        return u - v * np.log(u)
    return u


@jit
def fenchel_young(u, v, z, code):
    """Numba scalar ``f(u, v) + f*(z, v) - z u >= 0``, the Fenchel-Young gap of ``u`` and a dual
    value ``z`` (``inf`` outside the conjugate's domain; the conjugates are in
    ``solvers._gap``)."""
    if code == 0:
        d = u - v - z
        return 0.5 * d * d
    if code == 1:
        return abs(u - v) - z * (u - v)
    if v > 0.0:
        if u <= 0.0 or z >= 1.0:
            return np.inf
        t = (1.0 - z) * u / v
        return v * (t - 1.0 - math.log(t))
    if u < 0.0 or z > 1.0:
        return np.inf
    return (1.0 - z) * u


@jit
def dual_domain_update(m_pos, m_zero, z, v, code):
    """Fold a dual value ``z`` at a sample ``v`` into the running maxima that decide whether
    ``z`` lies in the domain of the conjugate ``f*``: ``(max |z|, m_zero)`` for L1 (``|z| <= 1``
    needed), ``(max z over v > 0, max z over v == 0)`` for Poisson (``z < 1``, resp. ``<= 1``);
    L2 has no bound."""
    if code == 1:
        return max(m_pos, abs(z)), m_zero
    if v > 0.0:
        return max(m_pos, z), m_zero
    return m_pos, max(m_zero, z)
