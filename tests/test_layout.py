"""The import graph of src/rlhf (issue #20): no import cycles, and the bundled toy world and the benchmark
harnesses stay at the edge -- nothing under the product's packages imports them.

Every import statement counts, at module level or inside a function (a deferred import is still a
dependency). `KNOWN` lists the imports that break the rule today; the list may only shrink: a new one
fails, and so does a listed one that is gone (remove it from the list).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PRODUCT = ("rlhf.algorithms", "rlhf.data", "rlhf.feedback", "rlhf.evaluation", "rlhf.web")
EDGE = ("rlhf.world", "rlhf.bench", "rlhf.active", "rlhf.web.bench")  # the toy world and the harnesses
KNOWN = {
    ("rlhf.algorithms.dpo", "rlhf.world.report"),
    ("rlhf.algorithms.ilql", "rlhf.world.report"),
    ("rlhf.algorithms.ppo", "rlhf.world"),
    ("rlhf.algorithms.ppo", "rlhf.world.corpus"),
    ("rlhf.algorithms.ppo", "rlhf.world.gold"),
    ("rlhf.algorithms.ppo", "rlhf.world.report"),
    ("rlhf.algorithms.reward", "rlhf.world"),
    ("rlhf.algorithms.reward", "rlhf.world.corpus"),
    ("rlhf.algorithms.reward", "rlhf.world.gold"),
    ("rlhf.algorithms.reward", "rlhf.world.report"),
    ("rlhf.evaluation.compare", "rlhf.world"),
    ("rlhf.evaluation.compare", "rlhf.world.build"),
    ("rlhf.evaluation.compare", "rlhf.world.corpus"),
    ("rlhf.evaluation.compare", "rlhf.world.gold"),
    ("rlhf.evaluation.compare", "rlhf.world.report"),
    ("rlhf.evaluation.frontier", "rlhf.world.report"),
    ("rlhf.evaluation.policy", "rlhf.world"),
    ("rlhf.evaluation.policy", "rlhf.world.corpus"),
    ("rlhf.evaluation.policy", "rlhf.world.export"),
    ("rlhf.evaluation.policy", "rlhf.world.gold"),
    ("rlhf.feedback.labellers", "rlhf.active"),
    ("rlhf.feedback.labellers", "rlhf.world"),
    ("rlhf.feedback.labellers", "rlhf.world.corpus"),
    ("rlhf.feedback.labellers", "rlhf.world.gold"),
    ("rlhf.feedback.labellers", "rlhf.world.panel"),
    ("rlhf.feedback.labellers", "rlhf.world.report"),
}
KNOWN_CYCLES = {("rlhf.evaluation", "rlhf.evaluation.compare", "rlhf.world.report")}


def modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "rlhf").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the rlhf modules it imports. `from pkg import sub` is an edge to pkg.sub when sub is a
    module (Python runs pkg's __init__ first, but from inside pkg that is the package itself)."""
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against the package
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in mods]
                outside = not name.startswith(base + ".") and name != base
                targets = subs + ([base] if len(subs) < len(node.names) or outside else [])
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycles_finder_by_hand():
    # a -> b -> c -> a is one cycle; d -> a hangs off it; e alone
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == {("a", "b", "c")}


def test_no_new_import_cycles():
    found = cycles(import_graph())
    assert found - KNOWN_CYCLES == set(), "new import cycle(s)"
    assert KNOWN_CYCLES - found == set(), "a known cycle is gone: remove it from KNOWN_CYCLES"


def test_product_does_not_import_the_world_or_the_benches():
    graph = import_graph()
    found = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith(PRODUCT)
        for target in targets
        if target.startswith(EDGE)
    }
    assert found - KNOWN == set(), "a product module imports the toy world or a bench harness"
    assert KNOWN - found == set(), "a known violation is gone: remove it from KNOWN"
