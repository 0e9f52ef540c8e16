"""The table of methods drives the API and the CLI; options reach the solvers; one Monitor."""

from __future__ import annotations

import doctest
import pathlib
import re

import numpy as np
import pytest

from napari_tv import cli
from napari_tv.operators import tv_energy
from napari_tv.solvers import api, bregman, methods
from napari_tv.solvers._monitor import Monitor, check_interval
from napari_tv.solvers.api import denoise_tv
from napari_tv.solvers.bregman import solve_bregman
from napari_tv.solvers.gradient_descent import solve_gradient_descent
from napari_tv.solvers.methods import METHODS, check_options, get_method

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = list(METHODS)


def blocky(rng, shape, noise=0.3):
    v = np.zeros(shape)
    v[tuple(slice(n // 4, 3 * n // 4) for n in shape)] = 1.0
    return v + noise * rng.standard_normal(shape)


@pytest.fixture
def image(rng):
    return blocky(rng, (9, 8))


def denoise_parser_action(option: str):
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    (action,) = [a for a in sub.choices["denoise"]._actions if option in a.option_strings]
    return action


# ------------------------------------------------------------------------------ the table


def test_table_is_consistent():
    assert NAMES[0] == methods.DEFAULT_METHOD and len(set(NAMES)) == len(NAMES) == 5
    for name, m in METHODS.items():
        assert m.name == name and m.description and callable(m.solver)
        assert set(m.fidelities) <= {"l2", "l1", "poisson"} and m.boundaries
        assert m.iterative == (m.max_num_iter is not None)
        for opt_name, option in m.options.items():
            assert option.type in (bool, int, float, str) and option.doc
            assert option.check(opt_name, option.default) == option.default
    with pytest.raises(TypeError):
        METHODS["bregman"].options["sweeps"] = None  # read-only


def test_api_views_come_from_the_table():
    assert api.METHODS == tuple(NAMES)
    assert api.SUPPORTED == {
        m.name: {"fidelity": m.fidelities, "boundary": m.boundaries} for m in METHODS.values()
    }
    assert api.DEFAULT_MAX_NUM_ITER == {m.name: m.max_num_iter for m in METHODS.values()}
    assert api._solver("bregman") is bregman._solve_bregman


def test_get_method_names_the_parameter():
    assert get_method("exact") is METHODS["exact"]
    with pytest.raises(ValueError, match=r"method must be one of 'primal_dual', .*; got 'x'"):
        get_method("x")


def test_module_examples_run():
    result = doctest.testmod(methods, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0


def test_cli_choices_and_help_come_from_the_table():
    action = denoise_parser_action("--method")
    assert list(action.choices) == NAMES and action.default == methods.DEFAULT_METHOD
    for m in METHODS.values():
        assert f"{m.name}: {m.description}" in action.help
    option_help = denoise_parser_action("--option").help
    for m in METHODS.values():
        if m.options:
            assert f"{m.name}: {', '.join(m.options)}" in option_help


def test_docs_list_every_option():
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text[text.index("### Method options") :]
    for m in METHODS.values():
        for name in m.options:
            assert re.search(rf"\| `[^|]*{m.name}[^|]*` \| `{name}` \|", section), (m.name, name)


# ------------------------------------------------------------------ every method runs


@pytest.mark.parametrize("name", NAMES)
def test_every_method_in_the_table_reaches_the_minimum(rng, name):
    m = METHODS[name]
    if m.iterative:  # L2 and the isotropic TV: every iterative method has them
        v, kw = blocky(rng, (9, 8)), {"fidelity": "l2", "tv": "isotropic"}
        tol = 1e-5
        ref = denoise_tv(v, 0.25, method="primal_dual", tol=1e-10, max_num_iter=100000,
                         return_info=True, **kw)[1]  # fmt: skip
        res = denoise_tv(v, 0.25, method=name, tol=tol, max_num_iter=20000, return_info=True,
                         **kw)[1]  # fmt: skip
        assert res.method == name and res.converged and res.gap < tol
        assert res.energy == pytest.approx(tv_energy(res.u, v, 0.25, **kw), rel=1e-12)
        assert -1e-9 <= (res.energy - ref.energy) / ref.energy <= tol
    else:  # L1 on integer data: the minimiser of the continuous problem takes data values,
        # so the exact solver on every integer level attains the continuous minimum
        v = np.clip(np.round(4 * blocky(rng, (9, 8)) + 3), 0, 9).astype(np.uint8)
        kw = {"fidelity": "l1"}
        ref = denoise_tv(v, 0.6, method="primal_dual", tv="anisotropic", tol=1e-9,
                         max_num_iter=200000, return_info=True, **kw)[1]  # fmt: skip
        res = denoise_tv(v, 0.6, method=name, return_info=True, **kw)[1]
        assert res.method == name and res.converged and np.all(np.isin(res.u, np.arange(10)))
        assert res.energy == pytest.approx(ref.energy, rel=1e-6)
        assert res.energy <= ref.energy * (1 + 1e-9)


# -------------------------------------------------------------------------- options


def test_bregman_options_reach_the_solver(image):
    default = denoise_tv(image, 0.2, method="bregman", return_info=True)[1]
    fixed = denoise_tv(image, 0.2, method="bregman", return_info=True,
                       options={"rho": 4.0, "adapt": False, "check_every": 7})[1]  # fmt: skip
    assert default.extra["rho"] != 4.0 and fixed.extra["rho"] == 4.0
    assert [h["iter"] for h in fixed.history] == list(range(0, fixed.n_iter + 1, 7))
    assert [h["iter"] for h in default.history] == list(range(0, default.n_iter + 1, 10))
    assert fixed.n_iter != default.n_iter and fixed.converged and default.converged
    exact = denoise_tv(image, 0.2, method="bregman", return_info=True,
                       options={"u_solver": "exact", "sweeps": 3})[1]  # fmt: skip
    assert exact.extra["u_solver"] == "exact" and default.extra["u_solver"] == "gauss_seidel"
    # the same options through the public solver give the same result, to the bit
    direct = solve_bregman(image, 0.2, rho=4.0, adapt=False, check_every=7)
    np.testing.assert_array_equal(direct.u, fixed.u)


def test_gradient_descent_options_reach_the_solver(image):
    default = denoise_tv(image, 0.2, method="gradient_descent", return_info=True)[1]
    fixed = denoise_tv(image, 0.2, method="gradient_descent", tol=1e-6, return_info=True,
                       options={"eps": 0.05, "check_every": 5})[1]  # fmt: skip
    assert fixed.extra["eps"] == 0.05 and default.extra["eps"] < 0.05
    assert {h["eps"] for h in fixed.history} == {0.05}
    assert fixed.converged and fixed.extra["smoothed_gap"] < 1e-6 < fixed.gap  # E_ε's optimum
    assert all(h["iter"] % 5 == 0 for h in fixed.history)
    assert np.abs(fixed.u - default.u).max() > 1e-4
    direct = solve_gradient_descent(image, 0.2, tol=1e-6, eps=0.05, check_every=5)
    np.testing.assert_array_equal(direct.u, fixed.u)


def test_exact_option_reaches_the_solver(image):
    plain = denoise_tv(image, 0.3, method="exact", return_info=True)[1]
    traced = denoise_tv(image, 0.3, method="exact", return_info=True, options={"trace": True})[1]
    assert "trace" not in plain.extra and len(traced.extra["trace"]) == traced.n_iter
    np.testing.assert_array_equal(plain.u, traced.u)


@pytest.mark.parametrize(
    ("method", "options", "error", "match"),
    [
        ("bregman", {"penalty": 1.0}, ValueError,
         r"unknown option 'penalty' for method='bregman'; its options: 'rho', 'u_solver', "
         r"'sweeps', 'adapt', 'check_every'"),
        ("gradient_descent", {"rho": 1.0}, ValueError,
         r"unknown option 'rho' for method='gradient_descent'; its options: 'eps', 'check_every'"),
        ("primal_dual", {"eps": 0.1}, ValueError,
         r"unknown option 'eps' for method='primal_dual'; it has no options"),
        ("bregman", {"sweeps": 1.5}, TypeError, r"sweeps must be an integer, got 1\.5"),
        ("bregman", {"adapt": "yes"}, TypeError, r"adapt must be True or False, got 'yes'"),
        ("bregman", {"rho": "big"}, TypeError, r"rho must be a real number, got 'big'"),
        ("bregman", {"u_solver": 3}, TypeError, r"u_solver must be a string, got 3"),
        ("gradient_descent", {"check_every": True}, TypeError, "check_every must be an integer"),
        ("exact", {"trace": 1}, TypeError, r"trace must be True or False, got 1"),
        ("bregman", {"sweeps": 0}, ValueError, r"sweeps must be >= 1, got 0"),
        ("bregman", {"u_solver": "cg"}, ValueError, r"u_solver must be one of .*; got 'cg'"),
        ("gradient_descent", {"eps": -1.0}, ValueError, r"eps must be > 0, got -1\.0"),
        ("bregman", ["rho"], TypeError, r"options must be a dict or None, got \['rho'\]"),
    ],
)  # fmt: skip
def test_bad_options_name_themselves(image, method, options, error, match):
    with pytest.raises(error, match=match):
        denoise_tv(image, 0.2, method=method, options=options)


def test_option_combinations_are_checked(image):
    with pytest.raises(ValueError, match=r"u_solver='gauss_seidel' supports boundary 'neumann'"):
        denoise_tv(image, 0.2, method="bregman", boundary="periodic",
                   options={"u_solver": "gauss_seidel"})  # fmt: skip
    assert check_options("bregman", None, "periodic")["u_solver"] is None  # the solver's choice


def test_options_are_validated_once(monkeypatch, rng):
    """denoise_tv checks the options once, not per channel, and the solver does not again."""
    calls = []
    real = methods.check_options

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("the public solver's checks ran on the denoise_tv path")

    monkeypatch.setattr(methods, "check_options", counting)
    monkeypatch.setattr(bregman, "check_solver_call", refuse)
    stack = np.stack([blocky(rng, (6, 7)), blocky(rng, (6, 7))])
    res = denoise_tv(stack, 0.2, method="bregman", channel_axis=0, options={"sweeps": 2},
                     return_info=True)[1]  # fmt: skip
    assert len(calls) == 1 and res.converged and len(res.extra["channels"]) == 2


# ------------------------------------------------------------------------------ cli


def run_cli(capsys, *args):
    rc = cli.main([str(a) for a in args])
    return rc, capsys.readouterr().err


@pytest.fixture
def image_npy(tmp_path, rng):
    path = tmp_path / "in.npy"
    np.save(path, blocky(rng, (12, 10)))
    return path


def test_cli_option_reaches_the_solver(capsys, tmp_path, image_npy):
    out = tmp_path / "out.npy"
    rc, err = run_cli(capsys, "denoise", image_npy, out, "--beta", "0.3", "--method", "bregman",
                      "--option", "rho=4", "--option", "adapt=false", "--option",
                      "u_solver=exact", "-q")  # fmt: skip
    assert rc == 0, err
    expected = denoise_tv(np.load(image_npy), 0.3, method="bregman",
                          options={"rho": 4.0, "adapt": False, "u_solver": "exact"})  # fmt: skip
    np.testing.assert_array_equal(np.load(out), expected)
    assert np.abs(expected - denoise_tv(np.load(image_npy), 0.3, method="bregman")).max() > 0
    out2 = tmp_path / "out2.npy"
    rc, err = run_cli(capsys, "denoise", image_npy, out2, "--beta", "0.3", "--method",
                      "gradient_descent", "--option", "eps=0.05", "--option", "eps=none",
                      "--option", "check_every=20", "-q")  # fmt: skip
    assert rc == 0, err
    expected = denoise_tv(np.load(image_npy), 0.3, method="gradient_descent",
                          options={"check_every": 20})  # fmt: skip
    np.testing.assert_array_equal(np.load(out2), expected)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method", "bregman", "--option", "penalty=2"], "unknown option 'penalty'"),
        (["--method", "bregman", "--option", "sweeps=1.5"],
         "--option sweeps: expected a whole number, got '1.5'"),
        (["--method", "bregman", "--option", "rho=big"], "--option rho: expected a number"),
        (["--method", "bregman", "--option", "adapt=maybe"], "--option adapt: expected true"),
        (["--method", "bregman", "--option", "rho=0"], "rho must be > 0"),
        (["--method", "bregman", "--option", "sweeps"], "expected NAME=VALUE, got 'sweeps'"),
        (["--option", "eps=0.1"], "method='primal_dual'; it has no options"),
        (["--method", "magic"], "invalid choice: 'magic'"),
    ],
)  # fmt: skip
def test_cli_option_errors_are_one_line(capsys, tmp_path, image_npy, args, match):
    out = tmp_path / "out.npy"
    rc, err = run_cli(capsys, "denoise", image_npy, out, "--beta", "0.3", "-q", *args)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("napari-tv: error: "), err
    assert match in lines[0] and not out.exists()


# --------------------------------------------------------------------- one Monitor


@pytest.mark.parametrize("name", ["bregman", "gradient_descent"])
def test_callback_cancels_after_the_first_report(image, name):
    calls = []

    def stop(info):
        calls.append(info)
        return True

    u, res = denoise_tv(image, 0.2, method=name, callback=stop, return_info=True)
    assert res.cancelled and not res.converged and res.n_iter == 0
    assert len(calls) == 1 and calls[0]["method"] == name and calls[0]["iter"] == 0
    assert len(res.history) == 1 and res.gap == calls[0]["gap"] > 0
    np.testing.assert_array_equal(u, image)  # nothing ran: the start, the data
    keep_going = denoise_tv(image, 0.2, method=name, callback=lambda info: False,
                            return_info=True)[1]  # fmt: skip
    assert not keep_going.cancelled and keep_going.n_iter > 0


@pytest.mark.parametrize("name", ["bregman", "gradient_descent"])
def test_progress_reaches_one_on_convergence(image, name):
    fractions = []
    res = denoise_tv(image, 0.2, method=name, tol=1e-4, return_info=True,
                     callback=lambda info: fractions.append(info["fraction"]))[1]  # fmt: skip
    assert res.converged and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)


def test_monitor_cadence():
    free = Monitor("m", 1000, 0.0)  # nothing looks at the gap: one run
    assert free.next_run(0) == 1000 and not free.wants_gap(10)
    watched = Monitor("m", 1000, 1e-4)
    assert [watched.next_run(n) for n in (0, 250, 990)] == [10, 20, 10]
    assert check_interval(5000) == 100
    fixed = Monitor("m", 25, 0.0, every=7)  # a solver that adapts itself at every check
    assert [fixed.next_run(n) for n in (0, 7, 21)] == [7, 7, 4] and fixed.wants_gap(3)
