"""`territory report --proposal ID` on a stored proposal, rendered in headless Chromium."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from connectors.sandbox.seed import load_org
from monitor.metrics import DEFAULT_TOUCHES
from rebalancer.edge import propose_from_store
from rebalancer.scenarios import builtin_scenarios
from store import migrate
from store.db import make_engine
from tests.helpers.browser import MEASURE
from tests.helpers.processes import TERRITORY
from tests.pg import url_text

pytestmark = pytest.mark.e2e

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _report(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    env["TERRITORY_DATABASE_URL"] = url
    return subprocess.run(
        [TERRITORY, "report", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_the_proposal_report_draws_the_map_the_curve_and_every_move(
    fresh_database: Callable[[], URL], browser: Any, tmp_path: Path
) -> None:
    database = fresh_database()
    engine = make_engine(database)
    migrate.upgrade(engine)
    load_org(engine, generate_org(accounts=900, reps=10, seed=4, now=DEFAULT_NOW))
    doc = propose_from_store(
        engine, builtin_scenarios()["revenue"], touches=DEFAULT_TOUCHES, as_of=NOW.date(), now=NOW,
        expires_in=dt.timedelta(days=14), time_limit=20.0,
    )  # fmt: skip
    with engine.connect() as conn:
        located = conn.execute(
            text(
                "SELECT count(*) FROM accounts WHERE NOT deleted AND lat IS NOT NULL AND owner_id IS NOT NULL"
            )
        ).scalar_one()
    engine.dispose()
    assert doc["moves"], "the generated org drifts"
    out = tmp_path / "proposal.html"
    result = _report(url_text(database), "--proposal", str(doc["proposal_id"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"proposal {doc['proposal_id']}, {len(doc['moves'])} moves" in result.stdout
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "http://" not in page
    assert "https://" not in page

    browser.get(out.as_uri())
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    charts = browser.execute_script(MEASURE)
    assert set(charts) == {"proposal-map", "tradeoff"}
    assert charts["proposal-map"]["marks"] == charts["proposal-map"]["drawn"] == located
    assert charts["tradeoff"]["marks"] == charts["tradeoff"]["drawn"] == len(doc["tradeoff"])
    drawn_moves = browser.execute_script("return document.querySelectorAll('svg polyline.move').length")
    assert drawn_moves == len(doc["moves"])  # every rep of the generated org has a home
    rows = browser.execute_script("return document.querySelectorAll('table.moves tbody tr').length")
    assert rows == len(doc["moves"])
    assert browser.execute_script(
        "return document.querySelectorAll('table.territories tbody tr').length"
    ) == len(doc["territories"])
    assert browser.title == f"Proposal {doc['proposal_id']} (revenue)"
    png = tmp_path / "proposal.png"
    assert browser.save_screenshot(str(png))
    assert png.stat().st_size > 10_000


def test_an_unknown_proposal_is_one_line_and_exit_2(
    fresh_database: Callable[[], URL], tmp_path: Path
) -> None:
    database = fresh_database()
    engine = make_engine(database)
    migrate.upgrade(engine)
    engine.dispose()
    result = _report(url_text(database), "--proposal", "404", "--out", str(tmp_path / "x.html"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["territory: no proposal 404"]
