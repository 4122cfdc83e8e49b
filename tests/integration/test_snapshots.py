"""Snapshots on the real PostgreSQL: as-of loading, stored rows, drift events, hysteresis, backfill."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Connection, Engine, text

from connectors.sandbox.generator import generate_org
from connectors.sandbox.seed import load_org
from monitor.balance import STATS
from monitor.catalog import METRICS
from monitor.drift import DEFAULT_RULES, Rule, RuleKind
from monitor.frames import _FIELDS, column_arrays, load_account_rows, load_inputs
from monitor.jobs import backfill, compute_health, month_starts, take_snapshot
from monitor.metrics import (
    ACCOUNT_COLUMNS,
    DEFAULT_TOUCHES,
    PIPELINE_COLUMNS,
    UNLOCATED,
    account_opportunities,
    territory_metrics,
    territory_pipeline,
)

pytestmark = pytest.mark.integration

D = dt.date(2026, 3, 1)


class Touches:
    def touches_per_tier(self) -> dict[str, float]:
        return dict(DEFAULT_TOUCHES)


class Rules:
    def __init__(self, rules: Sequence[Rule] = DEFAULT_RULES) -> None:
        self.rules = list(rules)

    def drift_rules(self) -> list[Rule]:
        return self.rules


def seed(conn: Connection) -> None:
    """Three reps (Cy inactive since handing b2 to Bo on 2026-02-01) and a handful of accounts."""
    conn.execute(
        text(
            "INSERT INTO owners (id, name, capacity, quota, home_lat, home_lon, active) VALUES"
            " ('A', 'Ada', 20, 1000, 0, 0, true), ('B', 'Bo', 10, NULL, 0, 0, true),"
            " ('C', 'Cy', 10, 100, NULL, NULL, false)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO accounts (id, name, owner_id, tier, arr, potential, lat, lon, deleted) VALUES"
            " ('a1', 'a1', 'A', 'strategic', 100, 200, 0, 1, false),"
            " ('a2', 'a2', 'A', 'core', 300, 100, NULL, NULL, false),"
            " ('b1', 'b1', 'B', 'growth', 50, 60, 1, 0, false),"
            " ('b2', 'b2', 'B', 'core', 70, 70, 0, 2, false),"
            " ('n1', 'n1', 'A', 'core', 999, 999, 0, 0, false),"
            " ('d1', 'd1', 'A', 'core', 5000, 5000, 0, 0, true)"
        )
    )
    conn.execute(
        text(
            "INSERT INTO assignment_history (account_id, owner_id, start_date, end_date, source) VALUES"
            " ('a1', 'B', '2025-01-01', '2026-01-15', 'import'), ('a1', 'A', '2026-01-15', NULL, 'import'),"
            " ('b2', 'C', '2025-06-01', '2026-02-01', 'import'), ('b2', 'B', '2026-02-01', NULL, 'import'),"
            " ('n1', 'A', '2026-04-01', NULL, 'import')"
        )
    )
    conn.execute(
        text(
            "INSERT INTO opportunities (id, account_id, amount, probability, close_date, is_closed, is_won)"
            " VALUES ('o1', 'a1', 1000, 0.5, '2026-06-01', false, false),"
            " ('o2', 'a1', 400, 0.2, '2026-03-15', true, true),"
            " ('o3', 'a2', 600, 1, '2026-02-01', true, true),"
            " ('o4', 'a2', 700, 0, '2025-12-01', true, false),"
            " ('o5', 'b1', 40, 1, '2025-02-28', true, true),"
            " ('o6', 'b2', 30, 1, '2025-08-01', true, true)"
        )
    )


def test_inputs_as_of_follow_the_ownership_history(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
    with db.connect() as conn:
        jan = load_inputs(conn, dt.date(2026, 1, 14), by_id=True)
        feb = load_inputs(conn, dt.date(2026, 2, 1), by_id=True)
        may = load_inputs(conn, dt.date(2026, 5, 1), by_id=True)
    # Before 2026-01-15 a1 was Bo's; Cy (inactive now) held b2 until 2026-02-01, so was a territory.
    assert list(jan.owners.index) == ["A", "B", "C"]
    owners = dict(zip(["a1", "a2", "b1", "b2", "n1"], jan.accounts["owner_id"].astype(object), strict=True))
    assert owners == {"a1": "B", "a2": "A", "b1": "B", "b2": "C", "n1": None} | {"n1": owners["n1"]}
    assert pd.isna(owners["n1"])  # its only tenure begins 2026-04-01: nobody's before that
    assert jan.unassigned == 1
    assert len(jan.accounts) == 5  # the deleted account is not loaded
    # The tenure's end day belongs to the next owner: on 2026-02-01 b2 is Bo's and Cy has no territory.
    assert list(feb.owners.index) == ["A", "B"]
    assert feb.accounts["owner_id"].astype(object).tolist()[3] == "B"
    assert may.unassigned == 0


def test_sql_aggregates_agree_with_the_pure_definitions(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
        accounts = pd.read_sql("SELECT * FROM accounts WHERE NOT deleted ORDER BY id", conn)
        opportunities = pd.read_sql("SELECT * FROM opportunities", conn)
    with db.connect() as conn:
        loaded = load_inputs(conn, D, by_id=True)
        health = compute_health(conn, DEFAULT_TOUCHES, DEFAULT_RULES, D, hysteresis=False)
    per_account = account_opportunities(opportunities, D)
    pure = (
        accounts.set_index("id")
        .join(per_account)
        .fillna(
            {c: 0.0 for c in ("open_amount", "weighted_amount", "won_amount", "won_count", "closed_count")}
        )
    )
    pure["owner_id"] = loaded.accounts["owner_id"].astype(object).to_numpy()  # sorted by id in both
    expected = territory_metrics(loaded.owners, pure[list(ACCOUNT_COLUMNS)].reset_index(drop=True))
    got = health.territories[list(expected.columns)]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    # and by hand: Ada on 2026-03-01 holds a1 and a2 (n1 not yet), Bo holds b1 and b2
    assert got.loc["A", "arr"] == 400.0
    assert got.loc["A", "open_pipeline"] == 1400.0  # o2 closes 2026-03-15: still open on D
    assert got.loc["A", "won_12m"] == 600.0
    assert got.loc["A", "win_rate_12m"] == 0.5
    assert got.loc["A", "quota_attainment"] == 0.6
    assert got.loc["B", "won_12m"] == 30.0  # o5 is more than 365 days old
    assert np.isnan(got.loc["B", "quota_attainment"])
    assert got.loc["A", UNLOCATED] == 1


def test_account_rows_give_the_metrics_of_the_snapshot_path(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
    with db.connect() as conn:
        rows = load_account_rows(conn, D)
        loaded = load_inputs(conn, D)
        health = compute_health(conn, DEFAULT_TOUCHES, DEFAULT_RULES, D, hysteresis=False)
    assert list(rows.index) == ["a1", "a2", "b1", "b2", "n1"]  # in id order, the deleted one left out
    assert rows.loc["a1", "owner_id"] == "A"
    assert pd.isna(rows.loc["n1", "owner_id"])  # nobody's at D
    assert rows.loc["a1", "max_open_probability"] == 0.5  # o1; o2 is closed after D, so open at D too
    assert np.isnan(rows.loc["b1", "max_open_probability"])
    expected = territory_metrics(loaded.owners, rows[list(ACCOUNT_COLUMNS)].reset_index(drop=True))
    got = health.territories[list(expected.columns)]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_pipeline_goes_with_the_account_to_its_owner_at_d(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
        opportunities = pd.read_sql("SELECT * FROM opportunities", conn)
    day = dt.date(2026, 1, 14)
    with db.connect() as conn:
        loaded = load_inputs(conn, day, by_id=True)
    owner_of = pd.Series(
        loaded.accounts["owner_id"].astype(object).to_numpy(), index=["a1", "a2", "b1", "b2", "n1"]
    )
    expected = territory_pipeline(opportunities, owner_of, day).reindex(loaded.owners.index, fill_value=0.0)
    got = loaded.sums[list(PIPELINE_COLUMNS)]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_names=False)
    assert got.loc["B", "open_amount"] == 1400.0  # a1 was Bo's on D, and its deals with it
    assert got.loc["B", "won_amount"] == 40.0
    assert got.loc["C", "won_amount"] == 30.0  # Cy held b2 when its deal was won
    assert got.loc["A", "weighted_amount"] == 600.0  # o3 closes after D: open at D, probability 1


def stored(conn: Connection, snapshot_id: int) -> pd.DataFrame:
    rows = conn.execute(
        text("SELECT owner_id, metric, value FROM metric_snapshots WHERE snapshot_id = :s"),
        {"s": snapshot_id},
    ).all()
    return pd.DataFrame(rows, columns=["owner_id", "metric", "value"]).pivot(
        index="owner_id", columns="metric", values="value"
    )


def test_snapshot_stores_every_metric_and_balance_row(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
    result = take_snapshot(db, Touches(), Rules(), as_of=D, kind="on_demand")
    with db.connect() as conn:
        snap = conn.execute(
            text("SELECT as_of, kind FROM snapshots WHERE id = :s"), {"s": result.snapshot_id}
        ).one()
        values = stored(conn, result.snapshot_id)
        stats = conn.execute(
            text("SELECT metric, stat, value FROM balance_snapshots WHERE snapshot_id = :s"),
            {"s": result.snapshot_id},
        ).all()
    assert (snap.as_of, snap.kind) == (D, "on_demand")
    assert sorted(values.columns) == sorted([*METRICS, UNLOCATED])
    assert values.loc["A", "arr"] == 400.0
    assert pd.isna(values.loc["B", "quota_attainment"])  # NaN is stored as NULL
    assert len(stats) == len(METRICS) * len(STATS)
    by_key = {(m, s): v for m, s, v in stats}
    assert by_key[("arr", "mean")] == pytest.approx((400 + 120) / 2)
    assert by_key[("arr", "outside_band")] == 2.0


def events(conn: Connection) -> list[tuple[str, str, float, int, dt.date, dt.date, dt.date | None]]:
    return [
        tuple(r)  # type: ignore[misc]
        for r in conn.execute(
            text(
                "SELECT owner_id, rule, value, consecutive, first_seen, last_seen, resolved_at"
                " FROM drift_events ORDER BY id"
            )
        ).all()
    ]


ARR_RULE = Rules([Rule("arr_band", "arr", RuleKind.band, 0.20)])


def set_arr(db: Engine, account: str, arr: float) -> None:
    with db.begin() as conn:
        conn.execute(text("UPDATE accounts SET arr = :arr WHERE id = :id"), {"arr": arr, "id": account})


def test_a_persisting_event_is_updated_then_resolved_then_reopened(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
        conn.execute(text("UPDATE accounts SET deleted = true WHERE id = 'n1'"))
    first = take_snapshot(db, Touches(), ARR_RULE, as_of=dt.date(2026, 3, 1), kind="monthly")
    assert first.events is not None
    assert (first.events.opened, first.events.updated, first.events.resolved) == (2, 0, 0)
    set_arr(db, "a2", 310)
    second = take_snapshot(db, Touches(), ARR_RULE, as_of=dt.date(2026, 4, 1), kind="monthly")
    assert second.events is not None
    assert (second.events.opened, second.events.updated, second.events.resolved) == (0, 2, 0)
    with db.connect() as conn:
        rows = events(conn)
    assert len(rows) == 2  # updated, not duplicated
    ada = next(r for r in rows if r[0] == "A")
    assert ada[2:] == (410.0, 2, dt.date(2026, 3, 1), dt.date(2026, 4, 1), None)
    # Balanced books end both events; a new breach later opens a new event.
    set_arr(db, "a2", 0)
    set_arr(db, "a1", 100)
    set_arr(db, "b1", 50)
    set_arr(db, "b2", 50)
    third = take_snapshot(db, Touches(), ARR_RULE, as_of=dt.date(2026, 5, 1), kind="monthly")
    assert third.events is not None
    assert (third.events.opened, third.events.resolved) == (0, 2)
    set_arr(db, "a2", 300)
    take_snapshot(db, Touches(), ARR_RULE, as_of=dt.date(2026, 6, 1), kind="monthly")
    with db.connect() as conn:
        rows = events(conn)
        open_rows = conn.execute(
            text("SELECT count(*) FROM drift_events WHERE resolved_at IS NULL")
        ).scalar_one()
    assert [r[6] for r in rows[:2]] == [dt.date(2026, 5, 1)] * 2
    assert len(rows) == 4
    assert open_rows == 2


def test_hysteresis_across_stored_snapshots(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
    rules = Rules([Rule("arr_band", "arr", RuleKind.band, 0.20, consecutive=2)])
    first = take_snapshot(db, Touches(), rules, as_of=dt.date(2026, 3, 1), kind="monthly")
    again_same_day = take_snapshot(db, Touches(), rules, as_of=dt.date(2026, 3, 1), kind="on_demand")
    assert first.events is not None
    assert first.events.opened == 0
    assert again_same_day.events is not None
    assert again_same_day.events.opened == 0
    assert first.health.fired.empty  # in breach, but only once so far
    assert len(first.health.breaches) == 2
    second = take_snapshot(db, Touches(), rules, as_of=dt.date(2026, 4, 1), kind="monthly")
    assert second.events is not None
    assert second.events.opened == 2
    with db.connect() as conn:
        rows = events(conn)
    assert {r[4] for r in rows} == {dt.date(2026, 3, 1)}  # first seen in the first snapshot in breach
    assert {r[3] for r in rows} == {2}


def test_a_snapshot_of_the_past_leaves_the_events_alone(db: Engine) -> None:
    with db.begin() as conn:
        seed(conn)
    take_snapshot(db, Touches(), ARR_RULE, as_of=dt.date(2026, 4, 1), kind="monthly")
    past = take_snapshot(db, Touches(), ARR_RULE, as_of=dt.date(2026, 1, 1), kind="on_demand")
    assert past.events is None
    with db.connect() as conn:
        assert {r[5] for r in events(conn)} == {dt.date(2026, 4, 1)}


def test_backfill_matches_snapshots_taken_at_the_time(db: Engine) -> None:
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    load_org(db, generate_org(accounts=600, reps=8, seed=5, now=now))
    at_the_time = take_snapshot(db, Touches(), Rules(), as_of=dt.date(2026, 11, 1), kind="monthly")
    # Two weeks later: a quarter of the accounts change hands, and open deals close.
    later = dt.date(2026, 11, 15)
    with db.begin() as conn:
        owners = [r[0] for r in conn.execute(text("SELECT id FROM owners WHERE active ORDER BY id")).all()]
        moved = conn.execute(
            text(
                "SELECT id, owner_id FROM accounts WHERE NOT deleted AND owner_id IS NOT NULL"
                " ORDER BY id LIMIT 150"
            )
        ).all()
        for i, (account, owner) in enumerate(moved):
            target = next(o for o in owners[i % len(owners) :] + owners if o != owner)
            conn.execute(
                text(
                    "UPDATE assignment_history SET end_date = :d WHERE account_id = :a AND end_date IS NULL"
                ),
                {"d": later, "a": account},
            )
            conn.execute(
                text(
                    "INSERT INTO assignment_history (account_id, owner_id, start_date, source)"
                    " VALUES (:a, :o, :d, 'sync')"
                ),
                {"a": account, "o": target, "d": later},
            )
            conn.execute(text("UPDATE accounts SET owner_id = :o WHERE id = :a"), {"o": target, "a": account})
        closed = conn.execute(
            text(
                "UPDATE opportunities SET is_closed = true, is_won = true, close_date = :d"
                " WHERE id IN (SELECT id FROM opportunities WHERE NOT is_closed ORDER BY id LIMIT 200)"
            ),
            {"d": later},
        ).rowcount
    assert closed == 200
    with db.connect() as conn:
        today = compute_health(conn, DEFAULT_TOUCHES, DEFAULT_RULES, later, hysteresis=False)
    assert not np.allclose(
        today.territories["arr"].reindex(at_the_time.health.territories.index),
        at_the_time.health.territories["arr"],
    )  # the change is visible today ...

    results = backfill(db, Touches(), Rules(), months=2, today=dt.date(2026, 11, 20))
    assert [r.health.as_of for r in results] == [dt.date(2026, 10, 1), dt.date(2026, 11, 1)]
    with db.connect() as conn:
        then = stored(conn, at_the_time.snapshot_id)
        rebuilt = stored(conn, results[-1].snapshot_id)
        kinds = conn.execute(text("SELECT kind, count(*) FROM snapshots GROUP BY kind ORDER BY kind")).all()
    # ... but not in the backfill as of the first of November
    pd.testing.assert_frame_equal(rebuilt.sort_index(), then.sort_index(), rtol=1e-9)
    assert [tuple(k) for k in kinds] == [("backfill", 2), ("monthly", 1)]

    again = backfill(db, Touches(), Rules(), months=1, today=dt.date(2026, 11, 20))
    with db.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM snapshots WHERE kind = 'backfill' AND as_of = '2026-11-01'")
        ).scalar_one()
    assert count == 1  # replaced, not doubled
    assert again[0].snapshot_id != results[-1].snapshot_id


def test_month_starts() -> None:
    assert month_starts(dt.date(2026, 2, 17), 3) == [
        dt.date(2025, 12, 1),
        dt.date(2026, 1, 1),
        dt.date(2026, 2, 1),
    ]
    assert len(month_starts(dt.date(2026, 11, 23), 24)) == 24
    assert month_starts(dt.date(2026, 11, 23), 24)[0] == dt.date(2024, 12, 1)


def test_column_blobs_are_read_as_arrays() -> None:
    lats = [np.array([1.5], dtype=">f8").tobytes(), np.array([np.nan, -2.0], dtype=">f8").tobytes()]
    lons = [np.array([3.0, 4.0, 5.0], dtype=">f8").tobytes()]
    ranks = [np.array([2, 0, 1], dtype=">i8").tobytes()]
    got = column_arrays([lats, lons, ranks])
    assert [name for name, _ in _FIELDS] == ["lat", "lon", "position"]
    assert got["lat"][0] == 1.5
    assert np.isnan(got["lat"][1])
    assert got["lon"].tolist() == [3.0, 4.0, 5.0]
    assert got["position"].tolist() == [2, 0, 1]
    assert all(len(v) == 0 for v in column_arrays([[None], [None]]).values())
    with pytest.raises(ValueError, match="different lengths"):
        column_arrays([lats, [*lons[:1], b""], [ranks[0][:8]]])
