"""The code's shape: imports point down the layers of docs/layers.md, no private name crosses a
room, and no import cycles between zoobench's modules (function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "benchmark", "ensembles", "reports")


def _modules(root: Path = REPO) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports anywhere in its source."""
    return {module: {dep for dep, _ in deps} for module, deps in _imports(root).items()}


def _imports(root: Path) -> dict[str, set[tuple[str, str]]]:
    """Module -> (first-party module, imported name) for every import anywhere in its source."""
    modules = _modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        deps: set[tuple[str | None, str]] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update((resolve(alias.name), "") for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = resolve(f"{node.module}.{alias.name}")
                    name = "" if target == f"{node.module}.{alias.name}" else alias.name
                    deps.add((target, name))
        graph[module] = {(d, name) for d, name in deps if d and d != module}
    return graph


# docs/layers.md, bottom to top: a module may import its own layer and the layers below it.
# The longest matching prefix places a module; benchmark's base modules sit with config and data.
LAYERS = (
    ("zoo",),
    (
        "benchmark.errors",
        "benchmark.formatting",
        "benchmark.naming",
        "benchmark.metrics",
        "benchmark.atomic",
        "benchmark.modelfile",
        "benchmark.runtimes",
        "benchmark.datasets",
        "benchmark.config",
        "benchmark.data",
    ),
    ("benchmark.train", "benchmark.tune", "benchmark.plan"),
    ("benchmark.store",),
    ("ensembles",),
    ("reports",),
    ("benchmark", "benchmark.run", "benchmark.cli", "benchmark.api"),
)
LAYER_NAMES = ("zoo", "config/data", "training", "store", "ensembles", "reports", "orchestration")


def layer_of(module: str) -> int:
    best, level = "", None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    assert level is not None, f"{module} is in no layer of LAYERS"
    return level


def room_of(module: str) -> str:
    """The package a module lives in: ``benchmark.train``, ``ensembles``, ``zoo``..."""
    parts = module.split(".")
    if parts[0] == "benchmark" and len(parts) > 2:
        return ".".join(parts[:2])
    return "benchmark.base" if parts[0] == "benchmark" else parts[0]


def boundary_violations(root: Path = REPO) -> list[str]:
    """Every import that points up a layer, and every private name imported from another room."""
    found = set()
    for module, deps in _imports(root).items():
        for dep, name in deps:
            if layer_of(dep) > layer_of(module):
                up = f"{LAYER_NAMES[layer_of(module)]} -> {LAYER_NAMES[layer_of(dep)]}"
                found.add(f"{module} imports {dep} ({up})")
            if name.startswith("_") and room_of(dep) != room_of(module):
                found.add(f"{module} imports the private {dep}.{name}")
    return sorted(found)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert (
        "benchmark.run.runner" in graph
        and "benchmark.store.runstore" in graph["benchmark.run.runner"]
    )
    assert cycles(graph) == []


def test_imports_point_down_the_layers_and_no_private_name_crosses_a_room():
    assert boundary_violations() == []


def test_a_planted_upward_import_and_a_private_name_are_both_caught(tmp_path):
    """The check above can fail: a function-level import of reports from the data layer, and a
    private helper of ensembles imported by training, each planted in a copy of the tree."""
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            copy = tmp_path / path.relative_to(REPO)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    images = tmp_path / "benchmark" / "data" / "images.py"
    images.write_text(
        images.read_text() + "\n\ndef planted():\n    from reports import leaderboard\n"
    )
    fit = tmp_path / "benchmark" / "train" / "training.py"
    fit.write_text(
        fit.read_text() + "\n\ndef planted():\n    from ensembles.methods import _private\n"
    )
    assert boundary_violations(tmp_path) == [
        "benchmark.data.images imports reports.leaderboard (config/data -> reports)",
        "benchmark.train.training imports ensembles.methods (training -> ensembles)",
        "benchmark.train.training imports the private ensembles.methods._private",
    ]


def test_only_the_run_store_names_the_files_of_a_run_folder():
    """The folder layout is RunStore's: nobody else spells its file names."""
    layout = ('"metrics.json"', '"diversity.json"', '"run.json"', '"sample_x', "_probs.npy")
    offenders = []
    for module, path in _modules().items():
        if module == "benchmark.store.runstore":
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{module}: {name}" for name in layout if name in text]
    assert offenders == []
