"""The import direction of docs/architecture.md holds: each package imports only the layers below it.

Every import counts, including those under ``TYPE_CHECKING`` and those inside functions: a lower layer
that names a higher one, even for a type, has its settings or its rules in the wrong home.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("store", "connectors", "monitor", "rebalancer", "approval", "service", "bench", "tests")
ALLOWED: dict[str, frozenset[str]] = {
    "store": frozenset(),
    "connectors": frozenset({"store"}),
    "monitor": frozenset({"store"}),
    "rebalancer": frozenset({"store", "monitor"}),
    "approval": frozenset({"store", "connectors", "monitor", "rebalancer"}),
    "service": frozenset({"store", "connectors", "monitor", "rebalancer", "approval"}),
    "alembic": frozenset({"store", "service"}),  # env.py reads the database URL from the settings
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages of ours that a module imports anywhere in its body."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(OURS)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported - ALLOWED[package] - {package})
        for path in modules(package)
        if (imported := imported_packages(path)) - ALLOWED[package] - {package}
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_no_package_is_left_out_of_the_map() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(ALLOWED), sorted(packages - set(ALLOWED))
