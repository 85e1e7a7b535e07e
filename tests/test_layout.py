"""House rules of the layout: layers import one way, and each package names its API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["events", "projections", "agents", "server"]


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_lower_layers_never_import_higher_ones(package: str) -> None:
    higher = set(LAYERS[LAYERS.index(package) + 1 :])
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_packages(path) & higher)
        for path in (ROOT / package).rglob("*.py")
        if _imported_packages(path) & higher
    }
    assert offenders == {}


@pytest.mark.parametrize("package", ["events", "projections", "agents"])
def test_public_api_in_all_is_complete_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    exported = set(module.__all__)
    assert exported == {name for name in vars(module) if not name.startswith("_")} - {
        name for name, value in vars(module).items() if type(value).__name__ == "module"
    }
    for name in exported:
        assert hasattr(module, name)
