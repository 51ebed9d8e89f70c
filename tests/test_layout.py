"""The package map's dependency direction (layers <- models / losses / kd <- train <- cli), read from the source:
every ``import`` statement of every module, function-local ones included. Command modules (``commands.py``,
``*_commands.py``) belong to the cli layer (see :mod:`gsp_hub.cli`) wherever they sit."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gsp_hub"

# sub-package -> the gsp_hub sub-packages / modules its modules may not import
FORBIDDEN = {
    "layers": {"models", "losses", "kd", "train", "cli", "hub", "data", "metrics", "viz", "index", "export"},
    **{name: {"train", "cli"} for name in ("models", "losses", "kd", "metrics", "data", "hub", "viz", "index")},
}


def gsp_hub_imports(path: Path) -> set[str]:
    """Second components of the ``gsp_hub.<x>...`` modules imported anywhere in ``path`` (``gsp_hub.layers.ops`` ->
    ``layers``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] if node.module != "gsp_hub" else [f"gsp_hub.{a.name}" for a in node.names]
        names |= {module.split(".")[1] for module in modules if module.startswith("gsp_hub.")}
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down_the_package_map(package: str) -> None:
    wrong = {
        str(path.relative_to(PACKAGE.parent)): sorted(gsp_hub_imports(path) & FORBIDDEN[package])
        for path in sorted((PACKAGE / package).rglob("*.py"))
        if not path.stem.endswith("commands")
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_pure_ops_import_only_torch_and_the_stdlib_checks() -> None:
    tree = ast.parse((PACKAGE / "layers" / "ops.py").read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    foreign = {m for m in modules if m.split(".")[0] not in {*sys.stdlib_module_names, "torch"}} - {"gsp_hub.checks"}
    assert foreign == set()
