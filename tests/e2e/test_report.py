"""`territory report` on a generated org, rendered in headless Chromium: every chart drew its marks.

Chromium is driven through chromedriver (Debian's ``chromium`` and ``chromium-driver``); the page is
opened from a file and must fetch nothing. Skipped with a reason outside CI when they are missing, a
failure in CI.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from connectors.sandbox.generator import generate_org
from connectors.sandbox.seed import load_org
from monitor.drift import DEFAULT_RULES, RuleKind
from monitor.jobs import backfill, take_snapshot
from monitor.report import (
    AccountPoint,
    Balance,
    Band,
    DriftRow,
    ReportData,
    Territory,
    TrendPoint,
    render_report,
)
from monitor.report_data import load_report
from service.settings import Settings
from store import migrate
from store.db import make_engine
from tests.helpers.browser import MEASURE
from tests.helpers.processes import TERRITORY
from tests.pg import url_text

pytestmark = pytest.mark.e2e

AS_OF = dt.date(2026, 11, 1)
REPS = 24


@pytest.fixture(scope="module")
def org_database(fresh_database: Callable[[], URL]) -> Iterator[Engine]:
    """A generated org with four monthly backfill snapshots and an on-demand one, as of AS_OF."""
    engine = make_engine(fresh_database())
    migrate.upgrade(engine)
    load_org(
        engine, generate_org(accounts=1500, reps=REPS, seed=7, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    )
    settings = Settings()
    backfill(engine, settings.metrics, settings.rules, months=4, today=AS_OF)
    take_snapshot(engine, settings.metrics, settings.rules, as_of=AS_OF, kind="on_demand")
    yield engine
    engine.dispose()


def report_command(engine: Engine, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    env["TERRITORY_DATABASE_URL"] = url_text(engine.url)
    return subprocess.run(
        [TERRITORY, "report", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_report_draws_every_chart_in_chromium(org_database: Engine, browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = report_command(org_database, out)
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    with org_database.connect() as conn:
        territories = conn.execute(
            text(
                "SELECT count(DISTINCT owner_id) FROM metric_snapshots m JOIN snapshots s "
                "ON s.id = m.snapshot_id WHERE s.kind = 'on_demand'"
            )
        ).scalar_one()
        located = conn.execute(
            text("SELECT count(*) FROM accounts WHERE NOT deleted AND lat IS NOT NULL AND lon IS NOT NULL")
        ).scalar_one()
        snapshot_dates = conn.execute(text("SELECT count(DISTINCT as_of) FROM snapshots")).scalar_one()
        with_quota = conn.execute(
            text(
                "SELECT count(*) FROM metric_snapshots m JOIN snapshots s ON s.id = m.snapshot_id "
                "WHERE s.kind = 'on_demand' AND m.metric = 'quota_attainment' AND m.value IS NOT NULL"
            )
        ).scalar_one()
    assert f"{territories:,} territories, snapshot as of {AS_OF}" in result.stdout
    assert REPS - 3 <= territories <= REPS  # the generator makes a few reps inactive
    browser.get(out.as_uri())
    charts = browser.execute_script(MEASURE)
    # nothing was fetched: the page is self-contained
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    band_rules = {f"band-{r.name}" for r in DEFAULT_RULES}
    expected = {"trend", "map"} | {b for b in band_rules if b != "band-quota_outperformer" or with_quota}
    assert set(charts) == expected
    for name, chart in charts.items():
        assert chart["width"] > 300, (name, chart)
        assert chart["height"] > 100, (name, chart)
        assert chart["marks"] > 0, (name, chart)
        assert chart["drawn"] == chart["marks"], (name, chart)
    # one bar per territory in the band charts, one point per snapshot and watched metric in the trend
    for rule in ("potential_band", "arr_band", "accounts_band"):
        assert charts[f"band-{rule}"]["marks"] == territories
    watched = len({r.metric for r in DEFAULT_RULES if r.kind is not RuleKind.above_mean})
    assert charts["trend"]["marks"] == snapshot_dates * watched
    assert charts["map"]["marks"] == min(located, 5000)
    # the scorecard lists every metric, and the page reads as a report
    rows = browser.execute_script("return document.querySelectorAll('table.scorecard tbody tr').length")
    assert rows == 13
    assert browser.title == f"Territory health as of {AS_OF}"
    png = tmp_path / "report.png"
    assert browser.save_screenshot(str(png))
    assert png.stat().st_size > 10_000


def test_report_as_of_picks_the_snapshot_on_or_before_that_day(org_database: Engine) -> None:
    now = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    with org_database.connect() as conn:
        assert load_report(conn, as_of=dt.date(2001, 1, 1), rules=DEFAULT_RULES, generated_at=now) is None
        data = load_report(conn, as_of=dt.date(2026, 9, 15), rules=DEFAULT_RULES, generated_at=now)
    assert data is not None
    assert data.as_of == dt.date(2026, 9, 1)
    assert data.snapshot_kind == "backfill"
    assert data.notes == ["No snapshot as of 2026-09-15: the latest before it, 2026-09-01, is shown."]
    # the trend stops at the snapshot shown: the backfills of August and September
    assert sorted({p.as_of for p in data.trend}) == [dt.date(2026, 8, 1), dt.date(2026, 9, 1)]
    page = render_report(data)
    assert "<h1>Territory health as of 2026-09-01</h1>" in page
    assert "backfill snapshot" in page


def test_render_escapes_text_and_marks_breaches() -> None:
    data = ReportData(
        as_of=AS_OF,
        snapshot_kind="monthly",
        generated_at=dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC),
        territories=[
            Territory("o1", "<b>Ada</b> & Co", "EMEA", {"potential": 100.0}),
            Territory("o2", "Bo", "EMEA", {"potential": 200.0}),
        ],
        balance=[Balance("potential", 150.0, 1 / 3, 1 / 6, 0.5, 2)],
        bands=[Band("potential_band", "potential", 127.5, 172.5)],
        trend=[TrendPoint(AS_OF, "potential", 1 / 3, 1 / 6)],
        drift=[
            DriftRow("o1", "<b>Ada</b> & Co", "potential_band", "potential", 100.0, 150.0, -1 / 3, 2, AS_OF)
        ],
        accounts=[
            AccountPoint(48.1, 11.6, "o1"),
            AccountPoint(52.5, 13.4, "o2"),
            AccountPoint(50.0, 8.0, None),
        ],
    )
    page = render_report(data)
    assert "<b>Ada</b>" not in page
    assert "&lt;b&gt;Ada&lt;/b&gt; &amp; Co" in page
    # both territories are outside 127.5 to 172.5: two red bars, and the scorecard row is flagged
    assert page.count('fill="#d62728"><title>') == 2
    assert '<tr class="bad"><th scope="row">potential</th>' in page
    assert "2 of 2 territories outside" in page
    assert "-33%" in page  # the drift event's deviation
    assert page.count('<circle class="mark"') == 1 + 3  # one trend point, three accounts


def test_render_many_territories_as_sorted_columns() -> None:
    territories = [Territory(f"o{k:03d}", f"Rep {k}", "EMEA", {"accounts": float(k)}) for k in range(1, 101)]
    data = ReportData(
        as_of=AS_OF,
        snapshot_kind="monthly",
        generated_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        territories=territories,
        balance=[Balance("accounts", 50.5, 0.57, 0.33, 0.01, 50)],
        bands=[Band("accounts_band", "accounts", 37.875, 63.125)],
    )
    page = render_report(data)
    chart = page[page.index('data-chart="band-accounts_band"') : page.index("</svg>")]
    assert chart.count('class="mark"') == 100
    assert "100 territories, sorted" in chart
    # 1..37 below the band, 64..100 above it: 74 red columns
    assert chart.count('fill="#d62728"') == 74
    assert "74 of 100 territories outside" in page
    assert "<text" in chart
    assert "Rep 1<" not in chart  # too many to label
