"""The import layers (README, Layout): arc -> teachers -> student -> distill -> training -> evaluation -> export,
each importing only its own layer, earlier layers and the base (errors, utils); irp/ and robot/ are rooms
of their own. irp may use every layer and robot (its control plugin and runner); robot uses the base and
the one training loop (training/);
no layer imports a room. cli, demo and __main__ sit on top and may import anything. Every import counts,
function-level ones included, and no two modules may import each other (directly or around a loop).

ALLOWED lists the known exceptions, each to be removed by the change that fixes it; an entry that no
longer occurs fails the test too, so the list cannot go stale."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LAYERS = ["arc", "teachers", "student", "distill", "training", "evaluation", "export"]
BASE = {"errors", "utils"}
TOP = {"cli", "demo", "__main__"}

# (importer, imported) module pairs. All are in files being rewritten on another branch (the training
# and distill rework); that branch removes them, and with them these entries.
ALLOWED_UPWARD: set[tuple[str, str]] = set()
ALLOWED_CYCLES: list[set[str]] = []


def _is_module(name: str) -> bool:
    p = SRC / Path(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (`from pkg import mod` counts as importing pkg.mod)."""
    graph: dict[str, set[str]] = {}
    for f in sorted((SRC / "sage_distill").rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        package = name if is_pkg else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "sage_distill"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "sage_distill":
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    deps.add(sub if _is_module(sub) else target)
        graph[name] = deps - {name}
    return graph


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def allowed(importer: str, imported: str) -> bool:
    a, b = room(importer), room(imported)
    if a == b or b in BASE or a in TOP or a == "":
        return True
    if a in BASE:
        return False
    if a == "irp":
        return b in LAYERS or b == "robot"
    if a == "robot":  # the robot room trains with the one training loop
        return b == "training"
    if a in LAYERS:
        return b in LAYERS and LAYERS.index(b) <= LAYERS.index(a)
    raise AssertionError(f"{importer}: {a}/ is in no layer or room; add it to tests/test_layers.py")


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read() -> None:
    g = import_graph()
    assert "sage_distill.arc.datasets" in g["sage_distill.arc.stats"]  # from .datasets import ...
    assert "sage_distill.arc.task" in g["sage_distill.student.sequences"]  # from ..arc.task import ...
    assert "sage_distill.evaluation.commands" in g["sage_distill.cli"]  # from .evaluation import commands
    assert not allowed("sage_distill.arc.commands", "sage_distill.evaluation.scoring")
    assert not allowed("sage_distill.robot.collect", "sage_distill.teachers.base")
    assert allowed("sage_distill.irp.plugins.control", "sage_distill.robot.policies.sage_control")
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_module_imports_a_later_layer() -> None:
    g = import_graph()
    upward = {(a, b) for a, deps in g.items() for b in deps if not allowed(a, b)}
    assert upward - ALLOWED_UPWARD == set(), "imports that climb"
    assert ALLOWED_UPWARD - upward == set(), "fixed: remove these from ALLOWED_UPWARD"


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert [c for c in found if c not in ALLOWED_CYCLES] == []
    assert [c for c in ALLOWED_CYCLES if c not in found] == [], "fixed: remove these from ALLOWED_CYCLES"
