"""The house rule on imports: data -> quantizers/search -> models/metrics -> runs -> recipes (train)
-> experiments -> cli.

Walks every module under ``src/simvq`` (function-level imports included) and fails on an import from
a higher layer, on a cycle between modules or between top-level packages, and on a training framework
imported by the layers that read runs. A new top-level package must be given a layer here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "simvq"

# the first component under simvq -> its layer; a module may import its own layer and lower ones
LAYERS = {
    "utils": 0,
    "cpu": 0,  # the CPU's bf16 probe, for the search and the training recipes
    "data": 1,
    "search": 2,
    "quantizers": 2,
    "models": 3,
    "metrics": 3,
    "compat": 3,  # adapters to peer libraries' interfaces, over the quantizers
    "runs": 4,  # configs, run-directory files, weights, the registry of recipe kinds: no Lightning
    "tokenizer": 5,  # the inference API over trained runs, read through runs (the prior recipe encodes with it)
    "train": 6,  # the recipes on Lightning
    "export": 6,  # trained runs out of simvq: Hub layout and ONNX commands (no Lightning)
    "experiments": 7,
    "cli": 8,
    "": 9,  # simvq/__init__.py, the public API: nothing inside the package imports it
}
# the layers that read configs and runs: loading a config or a run never imports these
NO_TRAINING_FRAMEWORK = ("runs", "tokenizer", "export")
TRAINING_FRAMEWORKS = ("lightning", "pytorch_lightning", "matplotlib")
# within a layer, imports go one way too
SAME_LAYER_ORDER = {("quantizers", "search"), ("metrics", "search")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(path: Path) -> set[str]:
    """Every ``simvq`` module ``path`` imports, resolving relative imports."""
    name = module_name(path)
    package = name if is_package(path) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "simvq")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "simvq":
                continue
            for alias in node.names:  # `from . import plots` imports a module, not a name
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (SOURCE / relative).with_suffix(".py").is_file() or (SOURCE / relative / "__init__.py").is_file()


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in sorted(SOURCE.rglob("*.py"))}


def test_every_top_level_module_has_a_layer():
    assert {top(module) for module in import_graph()} <= set(LAYERS), "give the new package a layer in LAYERS"


def test_no_import_from_a_higher_layer():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            source_top, target_top = top(module), top(target)
            if source_top == target_top:
                continue
            if LAYERS[target_top] > LAYERS[source_top] or (
                LAYERS[target_top] == LAYERS[source_top] and (target_top, source_top) in SAME_LAYER_ORDER
            ):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of modules (package ``__init__`` re-exports count), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between top-level packages (``simvq.train``, ``simvq.runs``, ...)."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(top(module), set()).update(top(target) for target in targets if top(target) != top(module))
    return packages


def test_no_package_cycle():
    # the root package (the public API) imports its subpackages and every module imports it: left out
    packages = {name: targets - {""} for name, targets in package_graph(import_graph()).items() if name}
    cycle = find_cycle(packages)
    assert cycle is None, "package cycle: " + " -> ".join(cycle)


def external_imports(path: Path) -> set[str]:
    """The top-level names of the non-``simvq`` modules ``path`` imports (function-level ones included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"simvq"}


def test_the_run_readers_import_no_training_framework():
    offending = [f"{module_name(path)} imports {sorted(external_imports(path) & set(TRAINING_FRAMEWORKS))}"
                 for path in sorted(SOURCE.rglob("*.py"))
                 if top(module_name(path)) in NO_TRAINING_FRAMEWORK and external_imports(path) & set(TRAINING_FRAMEWORKS)]
    assert not offending, "\n".join(offending)


def test_no_import_cycle():
    graph = import_graph()
    # a package importing its own submodules (re-exports) is not a cycle of design
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, has_cycle",
    [({"a": {"b"}, "b": {"c"}, "c": set()}, False), ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True)],
)
def test_cycle_finder_finds_cycles(graph, has_cycle):
    assert (find_cycle(graph) is not None) == has_cycle


def test_walker_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "simvq.runs" in graph["simvq.train.commands"]  # `from ..runs import ...` inside a function
    assert "simvq.train.plots" in graph["simvq.train.image"]  # `from . import plots` names a module


def test_the_package_graph_follows_the_layers():
    packages = package_graph(import_graph())
    assert packages["tokenizer"] == {"runs"}  # the inference API reads runs through the runs layer only
    assert "tokenizer" in packages["train"]  # the prior encodes with it
    assert packages["runs"] <= {"utils", "data", "quantizers", "search", "models", "metrics", ""}
