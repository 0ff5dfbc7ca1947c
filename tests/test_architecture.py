"""The package's shape, read from its sources: data flows one way (collectors -> traces ->
analysis -> CLI/dashboard), no module imports itself back through others, and no file
grows past what one reader can hold (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"profiler": "accelscope", "collectors": "accelscope.collectors", "traces": "accelscope.traces", "dashboard": "accelscope.dashboard"}
MAX_LINES = 600

# What each room may import (prefixes of module names; every room may import its own).
BASE = ("accelscope.errors", "accelscope.verdicts")
ALLOWED = {
    "accelscope.traces": BASE,
    "accelscope.collectors": (*BASE, "accelscope.traces", "accelscope.schedule"),
    "recording": (*BASE, "accelscope.traces", "accelscope.collectors", "accelscope.api", "accelscope.oom_capture", "accelscope.schedule", "accelscope.live", "accelscope.keras", "accelscope.distributed"),
    "accelscope.analysis": (*BASE, "accelscope.traces"),
    "accelscope.dashboard": (*BASE, "accelscope.traces", "accelscope.analysis", "accelscope.text"),
    "accelscope.text": (*BASE, "accelscope.analysis"),
}
RECORDING = ("accelscope.api", "accelscope.oom_capture", "accelscope.schedule", "accelscope.live", "accelscope.keras", "accelscope.runner", "accelscope.distributed")
# The command line and the demo drive every room.
ANYTHING = ("accelscope.cli", "accelscope.demo", "accelscope.__main__", "accelscope.errors", "accelscope.verdicts", "accelscope")


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            if "assets" in path.parts:
                continue
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    """accelscope modules ``path`` imports (at module level only, when asked; never under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                name = f"{base}.{a.name}"
                found.add(name if name in MODULES else base)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and top_level_only:
                continue
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(tree, True)
    return {m for m in found if m.startswith("accelscope")}


def _room(module: str) -> str | None:
    if module in ANYTHING:
        return None
    if module.startswith(RECORDING):
        return "recording"
    return next((room for room in ALLOWED if module == room or module.startswith(room + ".")), None)


def test_every_module_belongs_to_a_room():
    rooms = {m: _room(m) for m in MODULES}
    assert not [m for m, r in rooms.items() if r is None and m not in ANYTHING], "a module outside every room: add it to ALLOWED"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_data_flows_one_way(module):
    room = _room(module)
    if room is None:
        return
    allowed = (room, *ALLOWED[room]) if room != "recording" else ALLOWED[room]
    bad = sorted(m for m in _imports(MODULES[module], module, top_level_only=False) if m != "accelscope" and not m.startswith(allowed + tuple(a + "." for a in allowed)))
    assert not bad, f"{module} ({room}) imports {bad}"


def test_the_dashboard_never_imports_collectors_or_the_recorder():
    for module, path in MODULES.items():
        if module.startswith("accelscope.dashboard"):
            bad = [m for m in _imports(path, module, top_level_only=False) if m.startswith(("accelscope.collectors", *RECORDING))]
            assert not bad, f"{module} imports {bad}"


def test_no_import_cycles():
    graph = {m: {i for i in _imports(p, m, top_level_only=True) if i in MODULES and i != m} for m, p in MODULES.items()}
    # A package imports its own submodules in __init__; that is not a cycle back to it.
    graph = {m: {i for i in deps if not (i.startswith(m + ".") and MODULES[m].name == "__init__.py")} for m, deps in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_file_is_over_600_lines():
    long = {str(p.relative_to(REPO)): n for p in MODULES.values() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these (at most {MAX_LINES} lines a file): {long}"


def test_the_test_reads_every_folder():
    assert {m.split(".")[1] if m.count(".") else "accelscope" for m in MODULES} >= {"accelscope", "analysis", "collectors", "traces", "dashboard"}
