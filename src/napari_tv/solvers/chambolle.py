r"""Chambolle's dual projection algorithm for L2 (ROF) total-variation denoising."""

from __future__ import annotations

import numpy as np

from napari_tv._compile import ready
from napari_tv.fidelity import fidelity_value
from napari_tv.solvers import _quick
from napari_tv.solvers._chambolle_sweep import FusedDualSweep
from napari_tv.solvers._gap import duality_gap
from napari_tv.solvers._monitor import Monitor
from napari_tv.solvers._result import TVResult
from napari_tv.solvers._stencils import (
    CHAMBOLLE,
    CLIP,
    as_3d,
    as_4d,
    inv_steps,
    rescaled_divergence,
    threads_for,
)

__all__ = ["solve_chambolle", "warm"]


def _initial_dual(init, image: np.ndarray) -> np.ndarray | None:
    """The dual warm start: ``init.extra["p"]`` of a TVResult (not copied: the sweep copies
    it), else None (zeros)."""
    shape = (image.ndim,) + image.shape
    p0 = getattr(init, "extra", {}).get("p") if init is not None else None
    if p0 is None:
        return None
    p0 = np.asarray(p0)
    if p0.shape != shape:
        raise ValueError(f"init.extra['p'] must have shape {shape}, got {p0.shape}")
    return p0


def solve_chambolle(
    image: np.ndarray,
    beta: float,
    *,
    fidelity: str = "l2",
    tv: str = "isotropic",
    spacing=None,
    boundary: str = "neumann",
    max_num_iter: int = 500,
    tol: float = 1e-4,
    init=None,
    callback=None,
) -> TVResult:
    r"""Minimise :math:`\tfrac12\|u - v\|^2 + \beta\,\mathrm{TV}(u)` by Chambolle's algorithm.

    Takes an already validated C-contiguous float32/float64 ``image`` (see
    :func:`napari_tv.denoise_tv` for the public entry point and the parameters).

    Parameters
    ----------
    image : ndarray
        The data ``v`` (1-, 2- or 3-D, float32 or float64, C-contiguous; not modified).
    beta : float
        Regularisation weight ≥ 0 (scikit-image's ``weight``).
    fidelity : {"l2"}
        Chambolle's algorithm is specific to the quadratic fidelity.
    tv : {"isotropic", "anisotropic"}
        Isotropic uses Chambolle's semi-implicit step; anisotropic the projected gradient.
    spacing : tuple of float, optional
        Voxel size per axis (forward differences divided by it).
    boundary : {"neumann", "periodic"}
    max_num_iter : int
        Iterations at most.
    tol : float
        Stop when the relative duality gap is below ``tol`` (checked every 10 iterations,
        then every 10 % of the run, at most every 100: ``_gap.check_interval``); ``tol=0``
        runs exactly ``max_num_iter`` iterations.
    init : TVResult, optional
        Warm start from ``init.extra["p"]`` (the dual).  A bare array cannot seed a dual
        method and is ignored.
    callback : callable, optional
        ``callback(info) -> bool`` after every gap evaluation; True stops.

    Returns
    -------
    TVResult
        ``extra["p"]`` holds the dual field ``p`` (shape ``(ndim, *image.shape)``) with
        ``u = v + beta div p``; ``extra["kernels"]`` says which ran: ``"fused"``, or
        ``"quick"`` while the fused ones compile in the background (``napari_tv._compile``).

    Notes
    -----
    With :math:`w = \operatorname{div} p + v/\beta` (so that :math:`u = \beta w`), one
    iteration is

    .. math:: p \leftarrow \frac{p + \tau D w}{1 + \tau |D w|}\ \text{(isotropic)},\qquad
              p \leftarrow \operatorname{clip}(p + \tau D w, -1, 1)\ \text{(anisotropic)},

    with :math:`\tau = 2/L^2`, :math:`L^2 = 4\sum_a h_a^{-2} \ge \|D\|^2` (1/4 in 2-D and 1/6 in
    3-D for unit spacing, the step of ``skimage.restoration.denoise_tv_chambolle``).  In 2-D
    and 3-D five iterations are one fused parallel pass over the slabs of the outer axis
    (``_chambolle_sweep.FusedDualSweep``: :math:`w` of the next slab, then :math:`p` of this
    one, and each further iteration one slab behind the previous one), so :math:`p` is read
    and written once and :math:`v` read once per five iterations.  The stopping
    quantity is the relative duality gap of :mod:`napari_tv.solvers._gap` at
    :math:`u = v + \beta\operatorname{div}p`:

    .. math:: \mathrm{gap} = \frac{P(u) - D(p)}{P(u)}
              = \frac{\beta \sum_s \big(|(Du)_s| - \langle (Du)_s, p_s\rangle\big)}{P(u)},
              \qquad D(p) = \tfrac12\|v\|^2 - \tfrac12\|v + \beta \operatorname{div} p\|^2 .

    References
    ----------
    .. [1] A. Chambolle, "An algorithm for total variation minimization and applications",
       J. Math. Imaging Vis. 20, 89-97 (2004).

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([0.0, 0.1, -0.1, 1.0, 0.9, 1.1])
    >>> res = solve_chambolle(v, 0.1, tol=1e-8, max_num_iter=5000)
    >>> np.round(res.u, 3)
    array([0.033, 0.033, 0.033, 0.95 , 0.95 , 1.   ])
    >>> res.converged, res.gap < 1e-8
    (True, True)
    """
    if fidelity != "l2":
        raise ValueError(f"method='chambolle' supports fidelity='l2' only, got {fidelity!r}")
    monitor = Monitor("chambolle", max_num_iter, tol, callback)
    p = _initial_dual(init, image)
    u = np.empty_like(image)
    periodic = boundary == "periodic"
    if beta == 0:
        p = np.zeros((image.ndim,) + image.shape, image.dtype) if p is None else p.copy()
        u[...] = image
        gap = 0.0
        n_iter = 0
        monitor.converged = True
        energy = fidelity_value(u, image, "l2")  # 0: nothing to regularise
        kernels = "none"
    else:
        fast = ready("chambolle", image.dtype)
        kernels = "fused" if fast else "quick"
        with threads_for(image.size):
            n_iter, gap, energy, p = _iterate(
                image, beta, p, u, tv == "isotropic", spacing, periodic, max_num_iter, monitor,
                fast,
            )
    return TVResult(
        u=u,
        energy=energy,
        n_iter=n_iter,
        converged=monitor.converged,
        gap=float(gap),
        history=monitor.history,
        elapsed=monitor.elapsed(),
        method="chambolle",
        cancelled=monitor.cancelled,
        extra={"p": p, "kernels": kernels},
    )


def _iterate(image, beta, p, u, isotropic, spacing, periodic, max_num_iter, monitor, fast):
    """Run the iterations from the dual ``p`` on the fused kernels (``fast``) or the quick
    ones; leave ``u = v + beta div p``; return ``(n, gap, energy, p)``: the gap and the
    energy (the gap's primal, in float64) at the final ``u``, and the final dual."""
    ih = inv_steps(spacing, image.ndim)
    tau = 2.0 / float(4.0 * np.sum(ih**2))
    mode = CHAMBOLLE if isotropic else CLIP
    inv_beta = 1.0 / beta
    sweep_class = FusedDualSweep if fast else _quick.QuickSweep
    sweep = sweep_class(p, image, ih, periodic, tau, inv_beta, mode)
    run, p = sweep.step, sweep.p  # the sweep iterates on its own copy of p
    v3, u3, p4 = as_3d(image), as_3d(u), as_4d(p)
    divergence = rescaled_divergence if fast else _quick.rescaled_divergence

    def gap_at_u():
        divergence(p4, v3, u3, ih, periodic, inv_beta)  # u = beta w
        u[...] *= beta
        return duality_gap(
            u, image, p, beta, isotropic=isotropic, spacing=spacing, periodic=periodic,
            floor=0.0, quick=not fast,
        )

    n_iter, g = 0, None  # the last run always ends with a gap (``monitor.wants_gap``)
    while n_iter < max_num_iter:
        n = monitor.next_run(n_iter)
        run(n)
        n_iter += n
        if monitor.wants_gap(n_iter):
            g = gap_at_u()
            if monitor.check(n_iter, g):
                break
    if g is None:  # max_num_iter == 0
        g = gap_at_u()
    return n_iter, g.rel, g.primal, p


def warm(dtype) -> None:
    """Run Chambolle's fused kernels (both TV kinds and boundaries; 1-D, 2-D short and long
    rows, 3-D) and its gap on tiny images of ``dtype`` (``napari_tv._compile``)."""
    for shape in ((7,), (6, 5), (3, 400), (4, 3, 5)):
        v = np.linspace(0.0, 1.0, int(np.prod(shape))).reshape(shape).astype(dtype)
        for tv in ("isotropic", "anisotropic"):
            for boundary in ("neumann", "periodic"):
                solve_chambolle(v, 0.1, tv=tv, boundary=boundary, max_num_iter=10, tol=1e-12)
