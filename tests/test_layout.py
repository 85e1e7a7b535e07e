"""House rules of the layout (DESIGN.md "Layout", STYLE.md "Layout").

- Layers import one way: events <- projections <- agents <- server, and inside agents
  llm/embeddings <- offline <- tools <- runs.
- A module whose name starts with `_` is private to the package that holds it: nothing
  outside that package imports it.
- No import cycle anywhere in the product, counting imports inside functions and under
  `TYPE_CHECKING` (they hide cycles, they do not remove them).
- Each package and sub-package names its public API in `__all__`.
- Every error class of the project (an `AutoagentError`) is defined in an `errors.py`.

The import graph is read from the source with `ast`, so a rule holds for code that
never runs in the tests too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from events import AutoagentError

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["events", "projections", "agents", "server"]
# Sub-layers of agents, lowest first; a group shares a rank (neither imports the other).
AGENT_LAYERS: list[set[str]] = [
    {"agents.errors"},
    {"agents.llm", "agents.embeddings"},
    {"agents.offline"},
    {"agents.tools"},
    {"agents.runs"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _product_files() -> Iterator[Path]:
    for package in LAYERS:
        yield from sorted((ROOT / package).rglob("*.py"))


MODULES: dict[str, Path] = {_module_name(path): path for path in _product_files()}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(module: str) -> set[str]:
    """Every product module `module` imports, wherever the import statement stands."""
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            submodules = {f"{source}.{a.name}" for a in node.names} & MODULES.keys()
            found.update(submodules)  # `from package import module` imports the module
            if len(submodules) < len(node.names):
                found.add(source)
    return {name for name in found if name in MODULES}


GRAPH: dict[str, set[str]] = {module: imports_of(module) for module in MODULES}


def _edges() -> Iterator[tuple[str, str]]:
    for importer, imported in GRAPH.items():
        for target in imported:
            yield importer, target


@pytest.mark.parametrize("package", LAYERS)
def test_lower_layers_never_import_higher_ones(package: str) -> None:
    higher = set(LAYERS[LAYERS.index(package) + 1 :])
    offenders = sorted(
        (importer, target)
        for importer, target in _edges()
        if importer.split(".")[0] == package and target.split(".")[0] in higher
    )
    assert offenders == []


def _agent_rank(module: str) -> int | None:
    for rank, group in enumerate(AGENT_LAYERS):
        if any(module == name or module.startswith(name + ".") for name in group):
            return rank
    return None


def test_agent_sub_layers_import_only_their_own_rank_or_lower() -> None:
    offenders = []
    for importer, target in _edges():
        low, high = _agent_rank(target), _agent_rank(importer)
        if low is not None and high is not None and low > high:
            offenders.append((importer, target))
    assert offenders == []


def test_every_agents_module_sits_in_a_sub_layer() -> None:
    loose = [m for m in MODULES if m.startswith("agents.") and _agent_rank(m) is None]
    assert loose == []


def _private_owner(target: str) -> str | None:
    """The package a private module belongs to (None: `target` is public)."""
    parts = target.split(".")
    for index, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def test_no_module_imports_another_packages_private_module() -> None:
    offenders = []
    for importer, target in _edges():
        owner = _private_owner(target)
        if owner is not None and not (importer == owner or importer.startswith(owner + ".")):
            offenders.append((importer, target))
    assert offenders == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


PACKAGES = sorted(
    _module_name(path.parent)
    for path in (ROOT / layer / "__init__.py" for layer in LAYERS)
    if path.exists()
) + sorted(
    _module_name(path.parent) for layer in LAYERS for path in (ROOT / layer).glob("*/__init__.py")
)


@pytest.mark.parametrize("package", PACKAGES)
def test_public_api_in_all_is_complete_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    # Names a package imports when first asked for (its `_LAZY` map and `__getattr__`).
    lazy = set(getattr(module, "_LAZY", {}))
    assert exported == lazy | {name for name in vars(module) if not name.startswith("_")} - {
        name for name, value in vars(module).items() if isinstance(value, ModuleType)
    }
    for name in exported:
        assert hasattr(module, name)


def _all_product_modules() -> Iterator[ModuleType]:
    for layer in LAYERS:
        package = importlib.import_module(layer)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{layer}."):
            if not info.name.endswith("__main__"):  # running it would start the CLI
                yield importlib.import_module(info.name)


def test_every_error_class_is_defined_in_an_errors_module() -> None:
    stray = sorted(
        f"{value.__module__}.{name}"
        for module in _all_product_modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, AutoagentError)
        and value.__module__ == module.__name__
        and not module.__name__.endswith(".errors")
    )
    assert stray == []
