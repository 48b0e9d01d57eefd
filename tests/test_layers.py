"""The package's import structure: no cycles, and every module imports only from its own layer or those below it.

Layers, bottom to top (a module may import its own layer and anything below):
core (pure) <- support (config, data, checkpoint, tracking, curves, memory) <- engines <- rollout <- worlds <- factory
<- trainer <- runtime <- serve / eval <- cli. Function-level (lazy) and ``TYPE_CHECKING`` imports count: a lazy
import that goes upwards is still a dependency upwards.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "waltz_ray"

LAYERS: list[tuple[str, ...]] = [
    ("types", "core"),
    ("config", "data", "checkpoint", "tracking", "curves", "memory"),
    ("engines",),
    ("rollout",),
    ("worlds",),
    ("factory",),
    ("trainer",),
    ("runtime",),
    ("serve", "eval"),
    ("cli", ""),  # "" is the package's own __init__
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its body)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        while parts:
            if ".".join(parts) in mods:
                return ".".join(parts)
            parts.pop()
        return None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(resolve(a.name) for a in node.names if a.name.startswith("waltz_ray"))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("waltz_ray"):
                assert node.level == 0, f"{name}: relative import"
                targets.update(resolve(f"{node.module}.{a.name}") for a in node.names)
        graph[name] = {t for t in targets if t and t != name}
    return graph


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_every_import_goes_to_the_same_layer_or_below() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("waltz_ray.core.rewards") < layer_of("waltz_ray.trainer.loop") < layer_of("waltz_ray.cli")


def test_no_runtime_class_subclasses_a_trainer() -> None:
    """The Ray run is the trainer handed Ray parts, never a subclass of another trainer."""
    for path in (PACKAGE / "runtime").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                assert not any("Trainer" in b for b in bases), f"{path.name}: {node.name}({', '.join(bases)})"
