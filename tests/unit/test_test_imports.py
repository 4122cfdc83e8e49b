"""Test modules share code through ``tests/helpers`` (and ``tests/pg.py``), never by importing each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(source: str, module: str) -> set[str]:
    """The dotted names under ``tests`` that ``source`` (the text of ``module``) imports."""
    package = module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = (package[: len(package) - node.level + 1] if node.level else []) + (
                node.module.split(".") if node.module else []
            )
            base = ".".join(parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from tests.e2e import test_cli`
    return {n for n in names if n == "tests" or n.startswith("tests.")}


def is_test_module(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("test_")


def test_no_test_module_imports_another() -> None:
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        module = ".".join(path.relative_to(TESTS.parent).with_suffix("").parts)
        names = imported_modules(path.read_text(encoding="utf-8"), module)
        found[module] = sorted(n for n in names if is_test_module(n))
    assert len(found) > 40  # the walk saw the suite
    assert {module: names for module, names in found.items() if names} == {}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from tests.e2e.test_cli import run", {"tests.e2e.test_cli", "tests.e2e.test_cli.run"}),
        ("import tests.integration.test_collector", {"tests.integration.test_collector"}),
        ("from .test_cli import run", {"tests.e2e.test_cli", "tests.e2e.test_cli.run"}),
        (
            "from ..integration import test_collector",
            {"tests.integration", "tests.integration.test_collector"},
        ),
        (
            "from tests.helpers.processes import run",
            {"tests.helpers.processes", "tests.helpers.processes.run"},
        ),
        ("import os\nfrom store import migrate", set()),
    ],
)
def test_the_check_sees_absolute_relative_and_from_package_imports(source: str, expected: set[str]) -> None:
    found = imported_modules(source, "tests.e2e.test_example")
    assert found == expected
    assert any(is_test_module(n) for n in found) == ("test_" in source)
