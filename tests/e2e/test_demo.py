"""``territory demo`` on the embedded default: its own PostgreSQL, migrated, loaded, and re-runnable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli import run

pytestmark = pytest.mark.e2e


def test_demo_loads_the_org_into_embedded_postgres_twice(tmp_path: Path) -> None:
    env = {"TERRITORY_DATA_DIR": str(tmp_path / "data")}
    args = ("demo", "--accounts", "800", "--reps", "12", "--format", "json")
    first = run(*args, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    loaded = json.loads(first.stdout)
    assert loaded["accounts"] == 800
    assert loaded["owners"] == 12
    assert 0 < loaded["active_owners"] <= 12
    assert loaded["opportunities"] > 800
    assert sum(r["accounts"] for r in loaded["regions"]) == 800
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").is_file()

    again = run(*args, env=env, timeout=300)  # the data folder is reused and the org replaced, not doubled
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["accounts"] == 800
    assert json.loads(again.stdout)["arr"] == loaded["arr"]
