"""The package's shape: which of its modules import which (read from the source with ``ast``).

* No cycle among the imports a module runs when it is loaded (module level, counting the
  ``__init__`` of every package an import enters): any module can be imported first.
* No module imports one that imports it back, counting the imports inside functions too,
  except the pairs of :data:`KNOWN_MUTUAL`; longer cycles that function-level imports close
  must lie within the groups of :data:`KNOWN_CYCLES` (each with its reason), so that a new one
  fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "napari_tv"

_CLI = frozenset({"napari_tv._console", "napari_tv.cli"})
_AUTO = frozenset({"napari_tv.beta_choice", "napari_tv.solvers.api"})

#: mutual imports that a function-level import closes, with the reason each stays
KNOWN_MUTUAL = {
    _AUTO: "denoise_tv(beta='auto') calls suggest_beta, whose risk estimates call denoise_tv",
    _CLI: "the console entry point (_console) installs Ctrl-C handling, then imports cli",
}

#: groups of modules joined by cycles once function-level imports count, with the reason
KNOWN_CYCLES = {
    _AUTO | {"napari_tv.sweep", "napari_tv.chunked"}: (
        "beta='auto': api -> beta_choice -> sweep -> api; on a dask image api -> chunked -> "
        "beta_choice (chosen on a crop)"
    ),
    _CLI: KNOWN_MUTUAL[_CLI],
    frozenset({
        "napari_tv._io", "napari_tv._memory", "napari_tv.levelsets", "napari_tv.operators",
        "napari_tv.solvers.exact", "napari_tv.solvers.maxflow",
    }): (
        "the memory guard (_memory, which operators use) imports _io for human_bytes, and _io "
        "writes level sets (levelsets, in a function), which use operators and, in a function, "
        "the exact solver"
    ),
}  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """``(target, in_function, line)`` for every import of a module of the package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                for alias in child.names:  # ``from pkg import module`` names the module
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target.split(".")[0] == PACKAGE:
                    found.append((target, in_function, child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _graph(with_functions: bool) -> dict[str, set[str]]:
    """Importer -> imported modules.  Module level (``with_functions=False``): also the
    packages whose ``__init__`` an import runs (not those the importer lives in, whose
    ``__init__`` is already running).  With function-level imports: the modules named only
    (a function runs after its package has been loaded)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, in_function, _ in _imports(name, path, modules):
            if in_function and not with_functions:
                continue
            parts = target.split(".")
            first = len(parts) if with_functions else 1
            for k in range(first, len(parts) + 1):
                dep = ".".join(parts[:k])
                inside = name == dep or name.startswith(dep + ".")
                if dep in modules and dep != name and (k == len(parts) or not inside):
                    graph[name].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def _describe(groups) -> str:
    return "; ".join(" <-> ".join(sorted(g)) for g in groups)


def test_the_graph_sees_both_kinds_of_import():
    """The walk finds module-level and function-level imports (so the tests below can pass
    only for the right reason)."""
    modules = _modules()
    found = {
        (target, in_function)
        for name in ("napari_tv.solvers.chambolle", "napari_tv.levelsets")
        for target, in_function, _ in _imports(name, modules[name], modules)
    }
    assert ("napari_tv.solvers._stencils", False) in found  # from ... import (...)
    assert ("napari_tv.solvers._quick", False) in found  # from napari_tv.solvers import _quick
    assert ("napari_tv.solvers.exact", True) in found  # inside a function
    graph = _graph(with_functions=False)
    assert "napari_tv.solvers" in graph["napari_tv.sweep"]  # the package's __init__ runs
    assert "napari_tv.solvers" not in graph["napari_tv.solvers.chambolle"]  # already running


def test_module_level_imports_form_no_cycle():
    cycles = _cycles(_graph(with_functions=False))
    assert not cycles, f"modules that import each other when loaded: {_describe(cycles)}"


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph(with_functions=True)
    mutual = {frozenset({a, b}) for a in graph for b in graph[a] if a in graph[b]}
    new = mutual - set(KNOWN_MUTUAL)
    assert not new, f"modules importing each other (function-level imports count): {_describe(new)}"


def test_function_level_import_cycles_are_the_known_ones():
    """Function-level imports break no import but may hide a tangle: each group of modules
    they join in cycles must lie within a known one."""
    cycles = _cycles(_graph(with_functions=True))
    new = [g for g in cycles if not any(g <= known for known in KNOWN_CYCLES)]
    assert not new, f"new import cycles through function-level imports: {_describe(new)}"


def test_beta_choice_builds_on_the_sweep_and_not_the_reverse():
    """The β-choice rules use the sweep engine; the engine knows nothing of them."""
    graph = _graph(with_functions=True)
    assert "napari_tv.sweep" in graph["napari_tv.beta_choice"]
    assert "napari_tv.beta_choice" not in graph["napari_tv.sweep"]
