"""The house: every module on its floor, imports only downward (or sideways), no circles.

The imports are read from the source with ``ast``, function-level imports included (a lazy
import is still a dependency); imports under ``if TYPE_CHECKING:`` are annotations only and
allowed anywhere. docs/architecture.md draws the same floors.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "segdend"

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("segdend", "segdend.errors", "segdend.atomic", "segdend.rng")),
    ("config and data", ("segdend.config", "segdend.presets", "segdend.data")),
    ("dynamics", ("segdend.dynamics",)),
    ("network and plasticity", ("segdend.network", "segdend.plasticity", "segdend.feedback",
                                "segdend.model")),
    ("engines and checkpoint", ("segdend.engines", "segdend.checkpoint")),
    ("run records, analyses and figures",
     ("segdend.rundir", "segdend.lifecycle", "segdend.runfiles", "segdend.analysis",
      "segdend.plots")),
    ("train", ("segdend.train",)),
    ("api, evaluate, experiments", ("segdend.api", "segdend.evaluate", "segdend.experiments")),
    ("sweep and report", ("segdend.sweep", "segdend.sweep_report", "segdend.report")),
    ("cli", ("segdend.cli", "segdend.__main__")),
]
"""Floors from the bottom up; a name stands for the module and, for a package, everything in
it. ``segdend`` is the package face: it loads only its version and resolves its public names
lazily (see :data:`segdend._EXPORTS`), so importing it (e.g. for ``__version__``) is free."""

KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}
"""``(importer, imported)`` edges that break the rules today, each with the reason and who
fixes it; the test fails when one of them is gone, so that this list only shrinks. Empty."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {
    _module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))
    if "__pycache__" not in p.parts
}


def _face_exports() -> dict[str, str]:
    tree = ast.parse(MODULES[PACKAGE].read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS":
            return ast.literal_eval(node.value)
    return {}


FACE_EXPORTS = _face_exports()


def floor_of(module: str) -> int:
    best, floor = "", -1
    for i, (_, names) in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, floor = name, i
    return floor


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, importer: str, level: int, names: list[str]) -> list[str]:
    """The segdend modules an ``import``/``from ... import`` statement depends on."""
    if level:
        base = importer.split(".")
        if MODULES[importer].name != "__init__.py":
            base.pop()
        base = base[:len(base) - (level - 1)]
        module = ".".join(base + ([module] if module else []))
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return []
    if not names:  # import a.b.c
        return [module]
    out = []
    for name in names:
        if f"{module}.{name}" in MODULES:  # from package import submodule
            out.append(f"{module}.{name}")
        elif module == PACKAGE and name in FACE_EXPORTS:  # from segdend import Network
            out.append(FACE_EXPORTS[name])
        else:
            out.append(module)
    return out


def imports_of(module: str) -> set[str]:
    """Every segdend module ``module`` imports, at any depth, outside TYPE_CHECKING blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_resolve(alias.name, module, 0, []))
        elif isinstance(node, ast.ImportFrom):
            found.update(_resolve(node.module or "", module, node.level,
                                  [a.name for a in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(MODULES[module].read_text(), str(MODULES[module])))
    found.discard(module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_every_module_has_a_floor():
    assert [m for m in MODULES if floor_of(m) < 0] == []
    names = [n for _, ns in FLOORS for n in ns]
    assert len(names) == len(set(names))
    assert [n for n in names if not any(m == n or m.startswith(n + ".") for m in MODULES)] == []


def test_imports_only_go_down_or_sideways():
    upward = sorted(
        f"{m} (floor {floor_of(m)}, {FLOORS[floor_of(m)][0]}) imports {t} "
        f"(floor {floor_of(t)}, {FLOORS[floor_of(t)][0]})"
        for m, targets in GRAPH.items() for t in targets
        if t in MODULES and floor_of(t) > floor_of(m) and (m, t) not in KNOWN_EXCEPTIONS)
    assert upward == []


def test_no_import_cycles():
    graph = {m: {t for t in ts if (m, t) not in KNOWN_EXCEPTIONS} for m, ts in GRAPH.items()}
    assert _cycles(graph) == []


def test_imported_modules_exist():
    missing = sorted(f"{m} imports {t}" for m, ts in GRAPH.items() for t in ts
                     if t not in MODULES)
    assert missing == []


def test_known_exceptions_still_exist():
    gone = [edge for edge in KNOWN_EXCEPTIONS if edge[1] not in GRAPH.get(edge[0], ())]
    assert gone == [], "fixed: remove these from KNOWN_EXCEPTIONS"


@pytest.mark.parametrize("source, edge", [
    ("from segdend.train import run_config\n", "segdend.train"),
    ("def f():\n    import segdend.sweep.worker\n", "segdend.sweep.worker"),
    ("from segdend import rng, Network\n", "segdend.rng segdend.api"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from segdend.train import X\n",
     ""),
])
def test_the_import_reader(tmp_path, monkeypatch, source, edge):
    path = tmp_path / "probe.py"
    path.write_text(source)
    monkeypatch.setitem(MODULES, "segdend.probe", path)
    assert sorted(imports_of("segdend.probe")) == sorted(edge.split())


def test_cycle_finder():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_importing_the_config_loads_neither_torch_numba_nor_the_trainer():
    code = ("import sys, segdend.config\n"
            "print(' '.join(m for m in ('torch', 'numba', 'segdend.train', 'segdend.api')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
