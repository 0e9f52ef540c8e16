"""The table of TV denoising methods: one record per method, read by the API, the CLI and the
widgets (a dictionary of records, like pynndescent's ``named_distances``).

Each :class:`Method` says what the method is (``description``), where its solver lives
(imported on first use, so that importing this table loads no solver kernels), what it
supports (fidelities, TV kinds, boundaries), its default iteration budget and its own options
(:class:`Option`: default, type and a one-line doc), which ``denoise_tv(options={...})`` and
``napari-tv denoise --option NAME=VALUE`` reach.  Adding a method is adding a record here.

Examples
--------
>>> from napari_tv.solvers.methods import METHODS, get_method
>>> list(METHODS)
['primal_dual', 'chambolle', 'bregman', 'gradient_descent', 'exact']
>>> get_method("bregman").options["sweeps"].default
1
>>> check_options("gradient_descent", {"eps": 0.01})
{'eps': 0.01, 'check_every': 10}
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from napari_tv._validation import (
    as_float_array,
    check_choice,
    check_int,
    check_real,
    check_spacing,
)
from napari_tv.fidelity import FIDELITIES, check_fidelity_data
from napari_tv.operators import BOUNDARIES, TV_KINDS

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Method",
    "Option",
    "check_options",
    "check_parameters",
    "check_solver_call",
    "get_method",
]

#: the default method everywhere (API, CLI, widgets): it reaches a 1e-4 gap in 60-2000
#: iterations on the samples and on real images at any intensity scale (Chambolle needs
#: 3000-20000; docs/benchmarks.md), supports every fidelity and compiles in seconds
DEFAULT_METHOD = "primal_dual"

#: the types an option may declare (what the command line can parse)
OPTION_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class Option:
    """One option of a method: its default, its type and a line of documentation.

    ``default=None`` means "chosen by the solver" (``doc`` says how) and accepts None.  Numbers
    may have a ``minimum`` (exclusive when ``strict``); strings may have ``choices``.
    """

    default: Any
    type: type
    doc: str
    minimum: float | None = None
    strict: bool = False
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any) -> Any:
        """``value`` checked: TypeError for a wrong type, ValueError for a wrong value (both
        naming the option)."""
        if value is None and self.default is None:
            return None
        if self.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {value!r}")
            return bool(value)
        if self.type is int:
            return check_int(name, value, minimum=self.minimum)
        if self.type is float:
            return check_real(name, value, minimum=self.minimum, strict=self.strict)
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r}")
        return check_choice(name, value, self.choices) if self.choices else value


@dataclass(frozen=True)
class Method:
    """A TV denoising method: what it is, where its solver is, what it supports.

    ``solver`` (a property) is ``solve(image, beta, *, fidelity, spacing, callback, ...,
    **options) -> TVResult`` from ``module``, trusting its (validated) arguments.
    ``max_num_iter`` is the iteration budget of ``max_num_iter=None`` (None for a method that
    does not iterate).  ``check`` (optional) checks a combination of resolved options with the
    other parameters, ``check(options, boundary)``.
    """

    name: str
    description: str
    module: str
    function: str
    fidelities: tuple[str, ...] = FIDELITIES
    tv_kinds: tuple[str, ...] = TV_KINDS
    boundaries: tuple[str, ...] = BOUNDARIES
    max_num_iter: int | None = None
    iterative: bool = True
    options: Mapping[str, Option] = field(default_factory=dict, hash=False)
    check: Callable[[dict[str, Any], str], None] | None = field(default=None, compare=False)

    def __post_init__(self):
        for name, option in self.options.items():
            if option.type not in OPTION_TYPES:
                raise TypeError(f"option {name!r} of {self.name!r} has type {option.type!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def solver(self) -> Callable[..., Any]:
        """The solver function (its module is imported on first use)."""
        return getattr(importlib.import_module(self.module), self.function)

    def supports(self, name: str, value: str) -> None:
        """ValueError unless the method supports ``fidelity`` or ``boundary`` ``value``."""
        allowed = self.fidelities if name == "fidelity" else self.boundaries
        if value not in allowed:
            what = " or ".join(map(repr, allowed)) + (" only" if len(allowed) == 1 else "")
            raise ValueError(
                f"method={self.name!r} does not support {name}={value!r}; it supports "
                f"{name} {what}"
            )


def _check_bregman(options: dict[str, Any], boundary: str) -> None:
    if options["u_solver"] == "gauss_seidel" and boundary == "periodic":
        raise ValueError(
            "u_solver='gauss_seidel' supports boundary 'neumann' only; use u_solver='exact' "
            "(or the default) with boundary 'periodic'"
        )


_CHECK_EVERY = Option(10, int, "iterations between gap evaluations and callbacks", minimum=1)

_TABLE = (
    Method(
        "primal_dual",
        "Chambolle–Pock primal-dual, every fidelity, the fastest to a small gap",
        "napari_tv.solvers.primal_dual",
        "solve_primal_dual",
        max_num_iter=5000,
    ),
    Method(
        "chambolle",
        "Chambolle's dual projection, L2 only (scikit-image's denoise_tv_chambolle)",
        "napari_tv.solvers.chambolle",
        "solve_chambolle",
        fidelities=("l2",),
        max_num_iter=20000,
    ),
    Method(
        "bregman",
        "split Bregman (ADMM), L2 only (scikit-image's denoise_tv_bregman)",
        "napari_tv.solvers.bregman",
        "_solve_bregman",
        fidelities=("l2",),
        max_num_iter=2000,
        options={
            "rho": Option(None, float, "initial penalty ρ > 0 (default 2·min(h)²)", 0.0, True),
            "u_solver": Option(
                None, str, "u-step: gauss_seidel sweeps or the exact DCT/FFT solve "
                "(default: gauss_seidel, exact for periodic)",
                choices=("gauss_seidel", "exact"),
            ),  # fmt: skip
            "sweeps": Option(1, int, "Gauss–Seidel sweeps per iteration", minimum=1),
            "adapt": Option(True, bool, "adapt ρ by residual balancing"),
            "check_every": _CHECK_EVERY,
        },
        check=_check_bregman,
    ),
    Method(
        "gradient_descent",
        "accelerated gradient descent on an ε-smoothed TV, every fidelity",
        "napari_tv.solvers.gradient_descent",
        "_solve_gradient_descent",
        max_num_iter=3000,
        options={
            "eps": Option(
                None, float, "a fixed smoothing ε > 0 (default: continuation, ε down by 5s)",
                0.0, True,
            ),  # fmt: skip
            "check_every": _CHECK_EVERY,
        },
    ),
    Method(
        "exact",
        "Darbon–Sigelle max-flow dichotomy, the exact graph-TV minimiser on a grid of levels",
        "napari_tv.solvers.exact",
        "solve_exact",
        boundaries=("neumann",),
        iterative=False,
        options={"trace": Option(False, bool, "keep the partition of every round (extra)")},
    ),
)

#: every method by name, the default first (the order of the CLI's help and the menus)
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in _TABLE})


def get_method(name: str) -> Method:
    """The record of method ``name``; ValueError naming ``method`` and listing the choices."""
    return METHODS[check_choice("method", name, METHODS)]


def check_options(method: str | Method, options: Mapping[str, Any] | None,
                  boundary: str = "neumann") -> dict[str, Any]:  # fmt: skip
    """``options`` of ``method`` checked and completed with the defaults.

    ValueError for an unknown name (naming it, the method and the allowed names) or a value
    out of range, TypeError for a value of the wrong type (naming the option).
    """
    method = method if isinstance(method, Method) else get_method(method)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise TypeError(f"options must be a dict or None, got {options!r}")
    unknown = [name for name in options if name not in method.options]
    if unknown:
        allowed = ", ".join(map(repr, method.options))
        raise ValueError(
            f"unknown option {unknown[0]!r} for method={method.name!r}; "
            + (f"its options: {allowed}" if allowed else "it has no options")
        )
    checked = {
        name: option.check(name, options.get(name, option.default))
        for name, option in method.options.items()
    }
    if method.check is not None:
        method.check(checked, boundary)
    return checked


#: the parameters :func:`check_parameters` checks
PARAMETERS = ("fidelity", "tv", "boundary", "max_num_iter", "tol", "callback")


def check_parameters(
    method: str, *, fidelity: str, tv: str, boundary: str, max_num_iter: int | None,
    tol: float, callback, options: Mapping[str, Any] | None,
) -> tuple[Method, dict[str, Any]]:  # fmt: skip
    """The checks every entry shares: ``(record, kwargs)`` with ``kwargs`` the solver's
    checked ``fidelity, tv, boundary, max_num_iter`` (None: the method's budget), ``tol``,
    ``callback`` and options."""
    record = get_method(method)
    check_choice("fidelity", fidelity, FIDELITIES)
    check_choice("tv", tv, TV_KINDS)
    check_choice("boundary", boundary, BOUNDARIES)
    record.supports("fidelity", fidelity)
    record.supports("boundary", boundary)
    if max_num_iter is None:
        max_num_iter = record.max_num_iter
    else:
        max_num_iter = check_int("max_num_iter", max_num_iter, minimum=0)
    tol = check_real("tol", tol, minimum=0.0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {callback!r}")
    kwargs = {"fidelity": fidelity, "tv": tv, "boundary": boundary,
              "max_num_iter": max_num_iter, "tol": tol, "callback": callback}  # fmt: skip
    return record, {**kwargs, **check_options(record, options, boundary)}


#: the parameters every solver takes besides its options, with their defaults (those of
#: :func:`napari_tv.denoise_tv`)
COMMON_DEFAULTS = MappingProxyType(
    {"fidelity": "l2", "tv": "isotropic", "spacing": None, "boundary": "neumann",
     "max_num_iter": None, "tol": 1e-4, "init": None, "callback": None}
)  # fmt: skip


def check_solver_call(method: str, image: np.ndarray, beta: float, options: Mapping[str, Any],
                      params: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The checks of a public ``solve_<method>(image, beta, **options, **params)`` called
    directly (not through ``denoise_tv``): the keyword arguments of the method's solver.

    ``image`` must be a float32/float64 array (TypeError otherwise); ``params`` are names of
    :data:`COMMON_DEFAULTS` (TypeError for another), ``init`` None, a TVResult or an array of
    the image's shape.
    """
    unknown = [name for name in params if name not in COMMON_DEFAULTS]
    if unknown:
        raise TypeError(f"solve_{method}() got an unexpected keyword argument {unknown[0]!r}")
    params = {**COMMON_DEFAULTS, **params}
    if not isinstance(image, np.ndarray) or image.dtype not in (np.float32, np.float64):
        raise TypeError(f"image must be a float32 or float64 array, got {type(image)} of "
                        f"dtype {getattr(image, 'dtype', None)}")  # fmt: skip
    _, kwargs = check_parameters(
        method, options=options, **{k: params[k] for k in COMMON_DEFAULTS if k in PARAMETERS}
    )
    check_fidelity_data(image, kwargs["fidelity"])
    beta = check_real("beta", beta, minimum=0.0)
    init = params["init"]
    if init is not None and not hasattr(init, "extra"):  # an array, not a TVResult
        init = as_float_array(init, "init")
        if init.shape != image.shape:
            raise ValueError(f"init must have the image's shape {image.shape}, got {init.shape}")
    spacing = check_spacing(params["spacing"], image.ndim)
    return {"image": np.ascontiguousarray(image), "beta": beta, "spacing": spacing,
            "init": init, **kwargs}  # fmt: skip
