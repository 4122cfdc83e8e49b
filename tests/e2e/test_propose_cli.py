"""``territory propose`` as a user runs it: the documented JSON, --scenario all, one-line refusals."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest
from sqlalchemy.engine import URL

from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from connectors.sandbox.seed import load_org
from store import migrate
from store.db import make_engine
from tests.helpers.processes import run
from tests.pg import url_text

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def url(fresh_database: Callable[[], URL]) -> str:
    database = fresh_database()
    engine = make_engine(database)
    migrate.upgrade(engine)
    load_org(engine, generate_org(accounts=500, reps=8, seed=12, now=DEFAULT_NOW))
    engine.dispose()
    return url_text(database)


def _territory(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run("propose", "--time-limit", "10", *args, env={"TERRITORY_DATABASE_URL": url})


def _stored(url: str) -> int:
    listed = run("proposals", "list", "--format", "json", env={"TERRITORY_DATABASE_URL": url})
    return len(json.loads(listed.stdout))


def test_dry_run_prints_the_documented_json_and_stores_nothing(url: str) -> None:
    before = _stored(url)
    result = _territory(url, "--dry-run", "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # nothing but the document on stdout (no solver banner)
    assert {"proposal_id", "scenario", "status", "moves", "objective", "solver", "before", "after",
            "territories", "tradeoff", "blocked", "risks"} <= set(doc)  # fmt: skip
    assert doc["proposal_id"] is None
    assert doc["status"] in ("ok", "partial", "infeasible")
    assert {"moves", "disruption", "band_violation"} <= set(doc["objective"])
    assert {"name", "status", "seconds", "bound", "optimality_gap"} <= set(doc["solver"])
    for move in doc["moves"]:
        assert {
            "account_id",
            "account_name",
            "from_owner_id",
            "to_owner_id",
            "orphan",
            "wave",
            "rationale",
        } <= set(move)
        assert move["rationale"]
    assert [p["max_moves"] for p in doc["tradeoff"]] == sorted(p["max_moves"] for p in doc["tradeoff"])
    assert _stored(url) == before


def test_all_scenarios_side_by_side_and_stored(url: str) -> None:
    result = _territory(url, "--scenario", "all", "--format", "json")
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    assert [d["scenario"] for d in docs] == ["revenue", "strategic", "growth", "geography"]
    for doc in docs:
        assert set(doc["comparison"]) == {
            "travel_change_km",
            "pipeline_changing_hands",
            "relationships_disrupted",
        }
        assert doc["comparison"]["relationships_disrupted"] <= len(doc["moves"])
    table = _territory(url, "--scenario", "all")  # the same inputs: the same proposals, printed as a table
    assert table.returncode == 0, table.stderr
    for doc in docs:
        assert doc["scenario"] in table.stdout


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--band", "potential"], "--band 'potential'"),
        (["--band", "potential=wide"], "--band potential"),
        (["--band", "win_rate_12m=0.1"], "win_rate_12m"),
        (["--tier-range", "strategic=2"], "--tier-range strategic=2"),
        (["--scenario", "fairness"], "--scenario 'fairness'"),
        (["--add-rep", "Ann:EMEA"], "--add-rep 'Ann:EMEA'"),
        (["--remove-rep", "nobody"], "remove-rep nobody"),
    ],
)
def test_a_bad_option_is_one_line_naming_it_and_exit_2(url: str, args: list[str], names: str) -> None:
    result = _territory(url, "--dry-run", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
