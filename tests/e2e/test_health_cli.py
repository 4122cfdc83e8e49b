"""``territory health`` through the real executable against a fresh database: JSON shape, save, backfill."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from connectors.sandbox.generator import generate_org
from connectors.sandbox.seed import load_org
from monitor.balance import STATS
from monitor.catalog import METRICS
from service.cli import app
from store.db import make_engine
from tests.helpers.processes import run
from tests.pg import url_text

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def org_url(fresh_database: Callable[[], URL]) -> URL:
    """A fresh database, migrated by ``territory migrate`` and loaded with a small generated org."""
    url = fresh_database()
    migrated = run("migrate", env={"TERRITORY_DATABASE_URL": url_text(url)})
    assert migrated.returncode == 0, migrated.stderr
    engine = make_engine(url)
    try:
        load_org(
            engine, generate_org(accounts=500, reps=9, seed=11, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
        )
    finally:
        engine.dispose()
    return url


def snapshot_kinds(url: URL) -> list[tuple[str, str]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT as_of::text, kind FROM snapshots ORDER BY as_of, id")).all()
    finally:
        engine.dispose()
    return [(r[0], r[1]) for r in rows]


def test_health_json_shape_without_saving(org_url: URL) -> None:
    env = {"TERRITORY_DATABASE_URL": url_text(org_url)}
    result = run("health", "--as-of", "2026-11-01", "--format", "json", "--no-save", env=env)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"as_of", "territories", "balance", "breaches"}
    assert doc["as_of"] == "2026-11-01"
    assert len(doc["territories"]) >= 2
    for territory in doc["territories"]:
        assert list(territory) == ["owner_id", "owner_name", *METRICS]
        assert isinstance(territory["accounts"], int)
    assert sum(t["accounts"] for t in doc["territories"]) == 500
    assert list(doc["balance"]) == list(METRICS)
    for stats in doc["balance"].values():
        assert list(stats) == list(STATS)
        assert isinstance(stats["outside_band"], int)
    arr = [t["arr"] for t in doc["territories"]]
    assert doc["balance"]["arr"]["mean"] == pytest.approx(sum(arr) / len(arr))
    assert doc["breaches"], "a generated org has deliberately over- and under-loaded territories"
    owners = {t["owner_id"] for t in doc["territories"]}
    for breach in doc["breaches"]:
        assert list(breach) == ["owner_id", "metric", "value", "mean", "deviation", "rule"]
        assert breach["owner_id"] in owners
    assert snapshot_kinds(org_url) == []


def test_health_saves_an_on_demand_snapshot_and_backfills(org_url: URL) -> None:
    env = {"TERRITORY_DATABASE_URL": url_text(org_url)}
    saved = run("health", "--as-of", "2026-11-02", env=env)
    assert saved.returncode == 0, saved.stderr
    assert "Territory health as of 2026-11-02" in saved.stdout
    assert "saved snapshot" in saved.stdout
    backfilled = run("health", "--backfill", "3", "--as-of", "2026-11-02", "--format", "json", env=env)
    assert backfilled.returncode == 0, backfilled.stderr
    written = json.loads(backfilled.stdout)["backfill"]
    assert [w["as_of"] for w in written] == ["2026-09-01", "2026-10-01", "2026-11-01"]
    assert snapshot_kinds(org_url) == [
        ("2026-09-01", "backfill"),
        ("2026-10-01", "backfill"),
        ("2026-11-01", "backfill"),
        ("2026-11-02", "on_demand"),
    ]


def test_health_refuses_an_unmigrated_database(fresh_database: Callable[[], URL]) -> None:
    result = run("health", "--no-save", env={"TERRITORY_DATABASE_URL": url_text(fresh_database())})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "territory: database error: the database is not migrated to the latest schema; run `territory migrate`"
    )
    assert "Traceback" not in result.stderr


def test_backfill_and_no_save_do_not_mix() -> None:
    # Refused before any database is opened, so the in-process runner is enough (and fast).
    result = CliRunner().invoke(app, ["health", "--backfill", "2", "--no-save"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "cannot be combined with --no-save" in result.output
