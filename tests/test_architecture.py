"""The package's layers, read from its source with ``ast``: imports point inward and never in a circle.

Layers, outermost first: ``cli`` and ``bundle`` (what the bundle configs call) may import anything;
``engines``, ``inference`` and ``evaluation`` may import each other and the inner layers; ``tracking``
and ``data`` only the inner layers; ``losses`` nothing else of gdlseg. ``settings`` and ``versions``
are leaves; ``precision`` (which floating-point precision a device runs, for training and inference)
imports ``settings`` only. Every import counts, also one inside a function: a circle closed only when a function
runs is still a circle (``engines.tracking`` and ``tracking_spool`` once had one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin" / "gdlseg"
OUTER = {"cli", "bundle"}
MIDDLE = {"engines", "inference", "evaluation"}
LEAVES = {"settings", "versions"}
# What each part may import besides itself and the root package (``gdlseg.__version__``).
ALLOWED = {
    "losses": set(),
    "settings": set(),
    "versions": set(),
    "data": {"settings", "versions"},
    "tracking": {"data", "settings", "versions"},
    "precision": {"settings"},
    **{part: MIDDLE | {"tracking", "data", "losses", "precision"} | LEAVES for part in MIDDLE},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The gdlseg modules an import statement in module ``name`` loads."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
            base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], node.module or ""])
        else:
            base = node.module or ""
        base = base.rstrip(".")
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    found = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target.startswith("gdlseg"):
            found.add(target)
    return found


def imports(name: str, module_level_only: bool) -> set[str]:
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # statements under a module-level if/try run at load time too
        nodes = [child for statement in tree.body for child in ast.walk(statement) if _loads_with(statement, child)]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= imported(name, node)
    found.discard(name)
    return found


def _loads_with(statement: ast.stmt, node: ast.AST) -> bool:
    """Whether ``node`` (inside the module-level ``statement``) runs when the module is loaded."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return False
    if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
        return False
    return True


def part(name: str) -> str:
    return name.split(".")[1] if "." in name else "root"


def test_the_package_is_found():
    assert {"gdlseg.losses", "gdlseg.tracking.run", "gdlseg.engines.mlflow_handler", "gdlseg.bundle"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_inward(name):
    own = part(name)
    if own in OUTER or own == "root":
        return
    wrong = sorted(
        target for target in imports(name, module_level_only=False) if part(target) not in ALLOWED[own] | {own, "root"}
    )
    assert not wrong, f"{name} ({own}) imports {wrong}: only {sorted(ALLOWED[own])} lie inside it"


def test_nothing_imports_the_command_line_or_the_bundle_functions():
    wrong = {
        name: sorted(target for target in imports(name, module_level_only=False) if part(target) in OUTER)
        for name in MODULES
        if part(name) not in OUTER
    }
    assert not {name: targets for name, targets in wrong.items() if targets}


def test_the_losses_import_nothing_else_of_gdlseg():
    for name in MODULES:
        if part(name) == "losses":
            others = [target for target in imports(name, module_level_only=False) if part(target) != "losses"]
            assert not others, f"{name} imports {others}"


def test_the_import_graph_has_no_cycle():
    graph = {name: imports(name, module_level_only=False) for name in MODULES}
    for name, targets in graph.items():  # importing a.b.c also runs the __init__ of a.b, unless inside it
        for target in list(targets):
            parent = target.rpartition(".")[0]
            while parent.count(".") >= 1:
                if not name.startswith(parent + ".") and parent != name:
                    targets.add(parent)
                parent = parent.rpartition(".")[0]
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_a_cycle_would_be_found(tmp_path, monkeypatch):
    """The checks read what they claim to: a circle written into two fake modules is reported."""
    package = tmp_path / "gdlseg"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "a.py").write_text("from gdlseg.data import b\n")
    (package / "data" / "b.py").write_text("from gdlseg.data.a import thing\nimport gdlseg.engines.x\n")
    (package / "engines").mkdir()
    (package / "engines" / "__init__.py").write_text("")
    (package / "engines" / "x.py").write_text("")
    monkeypatch.setattr(__import__(__name__, fromlist=["_"]), "PACKAGE", package)
    fake = {module_name(path): path for path in sorted(package.rglob("*.py"))}
    monkeypatch.setattr(__import__(__name__, fromlist=["_"]), "MODULES", fake)
    assert imports("gdlseg.data.a", module_level_only=True) == {"gdlseg.data.b"}
    assert imports("gdlseg.data.b", module_level_only=True) == {"gdlseg.data.a", "gdlseg.engines.x"}
    with pytest.raises(AssertionError, match="import cycle"):
        test_the_import_graph_has_no_cycle()
    with pytest.raises(AssertionError, match="engines"):
        test_imports_point_inward("gdlseg.data.b")
