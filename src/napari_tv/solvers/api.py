r"""``denoise_tv``: the one entry point to every TV denoising method."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_tv._memory import estimate_bytes, require
from napari_tv._validation import (
    as_float_array,
    check_real,
    check_spacing,
    float_dtype,
    is_dask_array,
)
from napari_tv.fidelity import check_fidelity_data
from napari_tv.operators import level_count, level_grid, tv_energy
from napari_tv.solvers._extremes import check_magnitude, solve_guarded
from napari_tv.solvers._multilevel import coarse_start
from napari_tv.solvers._result import TVResult
from napari_tv.solvers.methods import DEFAULT_METHOD, check_parameters, get_method
from napari_tv.solvers.methods import METHODS as _TABLE

__all__ = ["denoise_tv", "DEFAULT_METHOD", "METHODS", "SUPPORTED", "DEFAULT_MAX_NUM_ITER"]

# Views of the table of methods (:mod:`napari_tv.solvers.methods`) for older callers:
#: the methods' names, the default first (the order of the CLI's help and the widgets' menus)
METHODS = tuple(_TABLE)
#: what each method supports: fidelities and boundaries (both TV kinds everywhere; ``exact``
#: minimises the graph TV chosen by ``connectivity``/``weights`` and ignores ``tv``)
SUPPORTED: dict[str, dict[str, tuple[str, ...]]] = {
    m.name: {"fidelity": m.fidelities, "boundary": m.boundaries} for m in _TABLE.values()
}
#: ``max_num_iter=None`` means this many iterations (None: the method does not iterate); a
#: cap that a run at the default ``tol`` should not reach (the iterations measured to a 1e-4
#: gap are in docs/benchmarks.md)
DEFAULT_MAX_NUM_ITER: dict[str, int | None] = {m.name: m.max_num_iter for m in _TABLE.values()}


def _solver(method: str) -> Callable[..., TVResult]:
    """The method's solver (from the table; imported on first use)."""
    return get_method(method).solver


def _check_graph_parameters(record, connectivity, weights, levels) -> None:
    if record.name != "exact" and (connectivity != 1 or weights is not None or levels is not None):
        raise ValueError(
            f"connectivity, weights and levels belong to method='exact'; method={record.name!r} "
            f"needs connectivity=1, weights=None, levels=None (got connectivity="
            f"{connectivity!r}, weights={weights!r}, levels={levels!r})"
        )


def _check_channel_axis(channel_axis, ndim: int) -> int | None:
    if channel_axis is None:
        return None
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise TypeError(f"channel_axis must be None or an integer, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(
            f"channel_axis must be in [{-ndim}, {ndim}) for a {ndim}-D image, got {channel_axis}"
        )
    return int(channel_axis) % ndim


def _cancel_only(callback):
    """A callback for the coarse solves of ``init="coarse"``: the user's, with progress 0
    (so that Cancel works while they run and the bar does not run ahead)."""
    if callback is None:
        return None
    return lambda info: bool(callback({**info, "fraction": 0.0}))


def _check_layout(raw: np.ndarray, channel_axis: int | None) -> None:
    """Say what to do with a 4-D stack; warn when a last axis of 3 or 4 looks like colour."""
    if channel_axis is not None:
        return
    if raw.ndim == 4:
        raise ValueError(
            f"image must have 1, 2 or 3 spatial dimensions, got 4 (shape {raw.shape}); for a "
            "time series or channels pass channel_axis=<axis> (command line: --channel-axis "
            "AXIS), and each entry along that axis is denoised on its own"
        )
    if raw.ndim == 3 and raw.shape[-1] in (3, 4):
        warnings.warn(
            f"image of shape {raw.shape} is treated as a 3-D volume of {raw.shape[-1]} planes "
            "along its last axis; if that axis holds RGB(A) colour channels, pass "
            "channel_axis=-1 (command line: --channel-axis -1)",
            UserWarning,
            stacklevel=3,
        )


def _channel_inits(init, n_channels: int, channel_axis: int):
    """Per-channel warm starts from a multichannel ``init`` (array or TVResult)."""
    if init is None:
        return [None] * n_channels
    if isinstance(init, TVResult):
        chans = init.extra.get("channels")
        if chans is None or len(chans) != n_channels:
            raise ValueError(
                f"init must be a TVResult of a {n_channels}-channel run (extra['channels'])"
            )
        return list(chans)
    arr = np.moveaxis(np.asarray(init), channel_axis, 0)
    if arr.shape[0] != n_channels:
        raise ValueError(f"init must have {n_channels} channels, got shape {np.shape(init)}")
    return [arr[c] for c in range(n_channels)]


def denoise_tv(
    image,
    beta: float | str,
    *,
    method: str = DEFAULT_METHOD,
    fidelity: str = "l2",
    tv: str = "isotropic",
    spacing: float | Sequence[float] | None = None,
    boundary: str = "neumann",
    max_num_iter: int | None = None,
    tol: float = 1e-4,
    init: np.ndarray | TVResult | None = None,
    callback: Callable[[dict[str, Any]], bool] | None = None,
    return_info: bool = False,
    channel_axis: int | None = None,
    connectivity: int = 1,
    weights: float | Sequence[float] | None = None,
    levels: int | Sequence[float] | None = None,
    beta_rule: str | None = None,
    options: dict[str, Any] | None = None,
) -> np.ndarray | tuple[np.ndarray, TVResult]:
    r"""Total-variation denoising: minimise :math:`\sum_s f(u_s, v_s) + \beta\,\mathrm{TV}(u)`.

    Parameters
    ----------
    image : array_like
        The data ``v``: 1-, 2- or 3-D (plus a channel axis if ``channel_axis`` is given).
        bool, 8- and 16-bit integers and float16 become float32 (exact for them), wider
        integers float64; float32 and float64 are kept.
        Non-contiguous views are copied.  Never modified.  A **dask array** gives a lazy dask
        array of the same shape and chunks, built without computing anything: computing it
        runs :func:`napari_tv.chunked.denoise_tv_chunked` once (the primal-dual iteration in
        rounds of block solves, stopped on the *global* duality gap, so the result has the
        in-memory certificate) and reads the result chunk by chunk; with ``return_info`` the
        solve runs at the call and the :class:`~napari_tv.chunked.ChunkedResult` says how it
        went.  ``method="exact"`` runs the exact solver block by block
        (:mod:`napari_tv._exact_chunked`): the result is certified to be the in-memory exact
        minimiser, and computing it raises if the certificate was not reached.  ``init``,
        ``options`` and ``beta_rule`` are not supported for dask input.
    beta : float or "auto"
        ``"auto"``: chosen from the data by :func:`napari_tv.beta_choice.suggest_beta` with
        ``beta_rule`` (default: J-invariance for L2 and L1, PURE for Poisson; recorded
        in ``result.extra["beta"]`` and ``["beta_rule"]``).  Otherwise the regularisation
        weight ≥ 0, in the data's units for L2 (intensity per pixel of the
        finest axis: multiply the data by 1000 and β by 1000 for the same result) and without
        unit for L1 and Poisson.  For L2 on float data it is the ``weight`` of
        ``skimage.restoration.denoise_tv_chambolle``; scikit-image first rescales integer
        images to [0, 1], so its ``weight`` w on a uint8 image is β = 255 w here (on uint16,
        65535 w).
    method : {"primal_dual", "chambolle", "bregman", "gradient_descent", "exact"}
        ``"primal_dual"`` (default): Chambolle–Pock (every fidelity); ``"chambolle"``:
        Chambolle's dual projection (L2 only); ``"gradient_descent"``: descent on an ε-smoothed TV;
        ``"bregman"``: split Bregman (L2); ``"exact"``: the Darbon–Sigelle max-flow dichotomy
        for the graph TV on a grid of levels (exact up to the grid).  The table of methods,
        :data:`napari_tv.solvers.methods.METHODS`, says what each supports and its options.
    fidelity : {"l2", "l1", "poisson"}
        ``½(u−v)²``, ``|u−v|`` or ``u − v log u`` (Poisson needs ``image >= 0``).
    tv : {"isotropic", "anisotropic"}
        ``Σ_s |(Du)_s|_2`` or ``Σ_s |(Du)_s|_1`` with forward differences ``D``.  Not used by
        ``"exact"``, which minimises the graph TV of ``connectivity`` and ``weights``
        (``connectivity=1`` is the anisotropic TV).
    spacing : float or sequence of float, optional
        Voxel size per spatial axis, in any length unit: differences along axis ``a`` are
        divided by ``spacing[a] / min(spacing)``.  Only the anisotropy counts, so ``beta``
        means the same with a spacing in µm, nm or none (intensity units per finest pixel).
    boundary : {"neumann", "periodic"}
    max_num_iter : int, optional
        Iteration cap (None: the method's budget, ``METHODS[method].max_num_iter`` of
        :mod:`napari_tv.solvers.methods`).  Not used by ``"exact"``.
    tol : float
        Stop when the method's relative duality gap falls below ``tol`` (see each solver's
        Notes); ``tol=0`` runs exactly ``max_num_iter`` iterations.  Not used by ``"exact"``.
    init : ndarray, TVResult or "coarse", optional
        Warm start: a primal estimate, or a previous result (primal ``u`` and the dual
        ``extra["p"]``; for multichannel runs ``extra["channels"]``), or ``"coarse"``: start
        from the same problem solved on the image averaged over 2×2(×2) blocks, twice
        coarsened (:mod:`napari_tv.solvers._multilevel`; 2-3x faster on a large volume with
        much smoothing, slightly slower with little).  Iterative methods only.
    callback : callable, optional
        ``callback(info) -> bool`` called every few iterations with at least ``method, iter,
        max_iter, energy, gap, elapsed, fraction``; returning True stops cleanly
        (``result.cancelled``).  Kernels that must be compiled first (a new install or data
        type: a few seconds) are announced by :func:`napari_tv._compile.compile_notice`,
        not here.
    return_info : bool
        Also return the :class:`~napari_tv.solvers._result.TVResult`.
    channel_axis : int, optional
        Axis of channels, each denoised separately (energies summed), as in scikit-image.
    beta_rule : {"sure", "pure", "jinv", "discrepancy"}, optional
        The rule of ``beta="auto"``.
    connectivity, weights, levels
        Graph neighbourhood, edge weights and grey-level grid of ``method="exact"`` (see
        :func:`napari_tv.operators.resolve_weights` and :func:`napari_tv.operators.level_grid`;
        the grid is computed from the raw input, so integer images get every integer level).
    options : dict, optional
        The method's own options, name -> value (``METHODS[method].options`` of
        :mod:`napari_tv.solvers.methods` lists them with their defaults), e.g.
        ``{"rho": 2.0, "sweeps": 2}`` for ``"bregman"`` or ``{"eps": 0.01}`` for
        ``"gradient_descent"``.

    Returns
    -------
    u : ndarray
        The denoised image (float32 or float64, the input's shape).
    result : TVResult
        Only if ``return_info``: energy, iterations, gap, history, timings, dual variable.

    Raises
    ------
    ValueError
        Negative ``beta``; unknown method, fidelity, tv or boundary; a combination the
        method does not support; an option the method does not have, or out of range; bad
        ``channel_axis``, ``spacing`` or ``init``; NaN/inf, empty or >3-D (spatial) input;
        negative data for Poisson; float64 data beyond 1e±150 in magnitude
        (``napari_tv.solvers._extremes``).
    MemoryError
        When the call would need more than 90 % of the available memory
        (:mod:`napari_tv._memory`: bytes per voxel for each method), before allocating.
    TypeError
        Complex or non-numeric input, non-numeric parameters, an option of the wrong type.

    Notes
    -----
    All methods minimise the same energy,

    .. math:: E(u) = \sum_s f(u_s, v_s) + \beta\, \mathrm{TV}(u),

    and report it as :func:`napari_tv.operators.tv_energy` of the returned ``u``.  The
    iterative methods stop on a relative duality gap :math:`(P(u) - D(p)) / (P(u) -
    \sum_s f(v_s, v_s))` (:mod:`napari_tv.solvers._gap`), an upper bound of the relative
    distance to the optimal energy.

    Extreme cases are solved without iterating into them
    (:mod:`napari_tv.solvers._extremes`): a β so small that :math:`u^* = v` (to the data's
    rounding; exactly for L1 when :math:`2\beta\sum_a 1/h_a \le 1`), a β so large that
    :math:`u^*` is the fidelity's best constant, and float32 data near the ends of its range
    (solved scaled by a power of two); ``result.extra["shortcut"]`` says which.

    References
    ----------
    .. [1] L. Rudin, S. Osher, E. Fatemi, "Nonlinear total variation based noise removal
       algorithms", Physica D 60, 259-268 (1992).
    .. [2] A. Chambolle, "An algorithm for total variation minimization and applications",
       J. Math. Imaging Vis. 20, 89-97 (2004).
    .. [3] A. Chambolle, T. Pock, "A first-order primal-dual algorithm for convex problems
       with applications to imaging", J. Math. Imaging Vis. 40, 120-145 (2011).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.kron([[0.0, 1.0], [1.0, 0.0]], np.ones((8, 8)))
    >>> noisy = clean + 0.1 * rng.standard_normal((16, 16))
    >>> u, info = denoise_tv(noisy, 0.2, return_info=True)  # Chambolle, gap < 1e-4
    >>> info.converged, info.gap < 1e-4, u.shape
    (True, True, (16, 16))
    >>> bool(np.abs(u - clean).mean() < np.abs(noisy - clean).mean())
    True
    """
    if is_dask_array(image):  # lazy in, lazy out: the chunked solve (napari_tv.chunked)
        from napari_tv.chunked import denoise_dask

        return denoise_dask(
            image, beta, method=method, fidelity=fidelity, tv=tv, spacing=spacing,
            boundary=boundary, max_num_iter=max_num_iter, tol=tol, init=init, callback=callback,
            return_info=return_info, channel_axis=channel_axis, connectivity=connectivity,
            weights=weights, levels=levels, beta_rule=beta_rule, options=options,
        )  # fmt: skip
    auto = isinstance(beta, str)
    if auto:
        if beta != "auto":
            raise ValueError(f"beta must be a number >= 0 or 'auto', got {beta!r}")
    else:
        beta = check_real("beta", beta, minimum=0.0)
    if beta_rule is not None and not auto:
        raise ValueError(f"beta_rule goes with beta='auto', got beta={beta!r}")
    record, params = check_parameters(
        method, fidelity=fidelity, tv=tv, boundary=boundary, max_num_iter=max_num_iter,
        tol=tol, callback=callback, options=options,
    )  # fmt: skip
    _check_graph_parameters(record, connectivity, weights, levels)
    coarse = isinstance(init, str)
    if coarse:
        if init != "coarse" or not record.iterative:
            raise ValueError(
                f"init must be an array, a TVResult or 'coarse' (iterative methods); got "
                f"{init!r} with method={method!r}"
            )
        init = None
    elif init is not None and not isinstance(init, TVResult):
        init = as_float_array(init, "init", ndims=(1, 2, 3, 4))

    _guard_memory(image, method, fidelity, channel_axis, levels, coarse, connectivity)
    raw = np.asarray(image)
    channel_axis = _check_channel_axis(channel_axis, raw.ndim)
    _check_layout(raw, channel_axis)
    spatial_ndims = (2, 3, 4) if channel_axis is not None else (1, 2, 3)
    arr = as_float_array(raw, "image", ndims=spatial_ndims)
    check_fidelity_data(arr, fidelity)
    check_magnitude(arr)
    spatial_ndim = arr.ndim - (channel_axis is not None)
    spacing = check_spacing(spacing, spatial_ndim)
    if auto:
        beta, beta_rule = _auto_beta(
            arr, method, fidelity, tv, spacing, boundary, connectivity, channel_axis, beta_rule,
            callback,
        )

    kwargs = {"fidelity": fidelity, "spacing": spacing, **{k: params[k] for k in record.options}}
    if record.iterative:
        kwargs.update({k: params[k] for k in ("tv", "boundary", "max_num_iter", "tol")})
    else:
        kwargs.update(connectivity=connectivity, weights=weights)
    solve = _solver(method)

    def run(channel_raw, channel_arr, channel_init, cb):
        if method == "exact":
            n_levels = level_count(channel_raw, levels)
            require(
                estimate_bytes("exact", fidelity, channel_arr.shape, channel_arr.itemsize,
                               n_levels=n_levels, connectivity=connectivity),
                f"method='exact' with {n_levels} grey levels on {channel_arr.size} voxels",
                "pass fewer levels (levels=256 is exact up to 1/255 of the range), a smaller "
                "region, or use an iterative method such as method='primal_dual'",
            )  # fmt: skip
            grid = level_grid(channel_raw, levels)
            return solve(
                np.ascontiguousarray(channel_arr), beta, levels=grid, callback=cb, **kwargs
            )
        if channel_init is not None and not isinstance(channel_init, TVResult):
            if np.shape(channel_init) != channel_arr.shape:
                raise ValueError(
                    f"init must have the image's shape {channel_arr.shape}, "
                    f"got {np.shape(channel_init)}"
                )
        channel_arr = np.ascontiguousarray(channel_arr)

        def guarded(img, b, sp, ini, cb):
            def energy(u, v):
                return tv_energy(u, v, b, fidelity=fidelity, tv=tv, boundary=boundary,
                                 spacing=sp)  # fmt: skip

            return solve_guarded(solve, img, b, init=ini, callback=cb, method=method,
                                 energy=energy, **{**kwargs, "spacing": sp})  # fmt: skip

        if coarse:
            channel_init = coarse_start(
                channel_arr,
                beta,
                spacing,
                lambda img, b, sp, ini: guarded(img, b, sp, ini, _cancel_only(cb)),
            )
        return guarded(channel_arr, beta, spacing, channel_init, cb)

    if channel_axis is None:
        result = run(raw, arr, init, callback)
    else:
        result = _run_channels(run, raw, arr, init, callback, channel_axis, method)
    n_bad = result.u.size - int(np.count_nonzero(np.isfinite(result.u)))
    if n_bad:  # never a silent NaN: a case the guards above do not know
        raise FloatingPointError(
            f"method={method!r} produced {n_bad} non-finite value(s) with beta={beta!r}, "
            f"fidelity={fidelity!r}, spacing={spacing!r} on data in [{float(arr.min())!r}, "
            f"{float(arr.max())!r}]; please report this (another method may work meanwhile)"
        )
    if auto:
        result.extra.update(beta=beta, beta_rule=beta_rule)
    return (result.u, result) if return_info else result.u


def _guard_memory(image, method, fidelity, channel_axis, levels, coarse,
                  connectivity=1) -> None:  # fmt: skip
    """MemoryError before anything is allocated (a dask array is not computed yet) when the
    call would need more memory than is available (:mod:`napari_tv._memory`)."""
    shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", None)
    try:
        shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    except TypeError:
        return  # a list or scalar: checked after conversion, and small
    if dtype.kind not in "biuf" or not shape:
        return  # rejected with a TypeError/ValueError later
    channels = 1
    if isinstance(channel_axis, (int, np.integer)) and -len(shape) <= channel_axis < len(shape):
        channels = shape[channel_axis]
        shape = shape[:channel_axis % len(shape)] + shape[channel_axis % len(shape) + 1 :]
    work = float_dtype(dtype)
    n_levels = levels if isinstance(levels, (int, np.integer)) else np.size(levels)
    needed = estimate_bytes(
        method, fidelity, shape, work.itemsize, n_levels=int(n_levels or 0), channels=channels,
        converted=work != dtype,
        connectivity=connectivity if isinstance(connectivity, int) else 1,  # (checked later)
    )  # fmt: skip
    voxels = math.prod(shape) * channels
    if not isinstance(image, np.ndarray):
        needed += voxels * dtype.itemsize  # a dask (or other) array is computed first
    if coarse:
        needed += voxels * work.itemsize * (len(shape) + 1)  # the prolonged start
    if method == "exact":
        advice = ("pass fewer levels (levels=256 is exact up to 1/255 of the range), a smaller "
                  "region, or use an iterative method such as method='primal_dual'")  # fmt: skip
    else:
        advice = "denoise a smaller region (or fewer channels at a time)"
        if work.itemsize > 4:
            advice += ", pass float32 data (half the memory)"
        if method in ("bregman", "gradient_descent"):
            advice += ", or use method='primal_dual' (7 words per voxel)"
    size = "x".join(str(n) for n in shape)
    require(needed, f"method={method!r} on a {size} {work} image", advice)


def _auto_beta(arr, method, fidelity, tv, spacing, boundary, conn, channel_axis, rule, callback):
    """``beta="auto"``: (β, rule) by :func:`napari_tv.beta_choice.suggest_beta`; its search
    reports to ``callback`` as ``stage="choosing beta"`` (fraction 0; True stops it)."""
    from napari_tv.beta_choice import default_rule, suggest_beta

    rule = default_rule(fidelity) if rule is None else rule
    if method == "exact":  # searched with the iterative TV closest to the graph TV
        method, tv = "primal_dual", ("anisotropic" if conn == 1 else "isotropic")
    t0 = time.perf_counter()

    def report(info):
        return bool(
            callback(
                {
                    "method": method,
                    "stage": "choosing beta",
                    "iter": info["step"],
                    "max_iter": 0,
                    "energy": math.nan,
                    "gap": math.nan,
                    "elapsed": time.perf_counter() - t0,
                    "fraction": 0.0,
                    "beta": info["beta"],
                    "risk": info["risk"],
                }
            )
        )

    beta = suggest_beta(
        arr,
        rule=rule,
        fidelity=fidelity,
        method=method if method in ("primal_dual", "chambolle") else "primal_dual",
        tv=tv,
        spacing=spacing,
        boundary=boundary,
        channel_axis=channel_axis,
        callback=None if callback is None else report,
    )
    return float(beta), rule


def _run_channels(run, raw, arr, init, callback, channel_axis, method) -> TVResult:
    """Denoise every channel separately; combine the results (energies summed)."""
    t0 = time.perf_counter()
    raw_c = np.moveaxis(raw, channel_axis, 0)
    arr_c = np.moveaxis(arr, channel_axis, 0)
    n = arr_c.shape[0]
    inits = _channel_inits(init, n, channel_axis)
    out = np.array(arr_c, order="C")  # unprocessed channels (after a cancel) keep the input
    results: list[TVResult] = []
    for c in range(n):

        def cb(info, c=c):
            info = dict(info, channel=c, fraction=(c + float(info.get("fraction", 0.0))) / n)
            return bool(callback(info))

        res = run(raw_c[c], arr_c[c], inits[c], cb if callback is not None else None)
        out[c] = res.u
        results.append(res)
        if res.cancelled:
            break
    history = [dict(h, channel=c) for c, r in enumerate(results) for h in r.history]
    return TVResult(
        u=np.ascontiguousarray(np.moveaxis(out, 0, channel_axis)),
        energy=float(sum(r.energy for r in results)),
        n_iter=max(r.n_iter for r in results),
        converged=all(r.converged for r in results) and len(results) == n,
        gap=max(r.gap for r in results),
        history=history,
        elapsed=time.perf_counter() - t0,
        method=method,
        cancelled=any(r.cancelled for r in results),
        extra={"channels": results},
    )
