"""The documentation does what it says: examples run, the API page is current, and CI runs the
README's test command."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re
import runpy

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = [
    "napari_tv.operators",
    "napari_tv.fidelity",
    "napari_tv._sample_data",
    "napari_tv._io",
    "napari_tv.cli",
    "napari_tv.levelsets",
    "napari_tv.sweep",
    "napari_tv._scheduling",
    "napari_tv.beta_choice",
    "napari_tv.solvers.api",
    "napari_tv.solvers.chambolle",
    "napari_tv.solvers.primal_dual",
    "napari_tv.solvers.bregman",
    "napari_tv.solvers.gradient_descent",
    "napari_tv.solvers.exact",
    "napari_tv.solvers.maxflow",
    "napari_tv._compile",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0


def test_api_reference_is_current():
    script = runpy.run_path(str(ROOT / "scripts" / "gen_api_docs.py"))
    current = (ROOT / "docs" / "api.md").read_text()
    assert current == script["render"](), "run scripts/gen_api_docs.py"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) == 2, commands  # the two set-up commands, nothing else
    view, test = commands
    assert "napari-tv view" in view and "pytest" in test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines


def test_manifest_is_symlinked_into_the_package():
    link = ROOT / "src" / "napari_tv" / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari.yaml").resolve()
