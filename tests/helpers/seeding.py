"""A small org in the database with everything the collector and the alert rules read.

Three snapshots, open and resolved drift events, syncs, job runs and proposals, dated relative to a
``now`` of the caller's (the collector tests, promtool, a live Prometheus).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Engine, insert

from store.models import (
    Account,
    DriftEvent,
    JobRun,
    MetricSnapshot,
    Owner,
    Proposal,
    ProposalMove,
    Snapshot,
    SyncRun,
)

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


OWNERS = [("o1", "Ada", "EMEA"), ("o2", "Bo", "EMEA"), ("o3", "Cy", "AMER"), ("o4", "Di", None)]


# The latest snapshot's values; a missing key is a metric not stored (NULL) for that territory.
LATEST: Mapping[str, Mapping[str, float | None]] = {
    "o1": {"potential": 100, "accounts": 10, "arr": 50, "utilization": 0.5, "travel_km": 12.5},
    "o2": {"potential": 140, "accounts": 10, "arr": 50, "utilization": 0.9, "travel_km": 20.0},
    "o3": {"potential": 160, "accounts": 10, "arr": 50, "utilization": 1.2, "travel_km": 30.0},
    "o4": {"potential": 200, "accounts": 10, "arr": 50, "utilization": None, "travel_km": 40.0},
}


JOB_INTERVALS = {"sync": 300.0, "monthly_snapshot": 31 * 86400.0}


SYNC_DEFAULTS = {"finished_at": None, "error": None} | dict.fromkeys(
    ("rows_read", "rows_upserted", "rows_deleted", "rows_quarantined"), 0
)


def fill(rows: list[dict[str, Any]], defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows with the same keys (an executemany needs that), missing ones taken from ``defaults``."""
    return [dict(defaults) | row for row in rows]


def seed(engine: Engine, now: dt.datetime) -> None:
    """A small org with three snapshots, open and resolved drift, syncs, job runs and proposals.

    Relative to ``now`` so that a live Prometheus sees every alert condition hold: a drift event open
    for 60 days, a ``sync`` job whose last success is an hour old (interval 5 minutes), a monthly
    snapshot last done 70 days ago, and a sync whose latest run failed.
    """
    with engine.begin() as conn:
        _org(conn)
        _snapshots(conn, now)
        _drift_events(conn, now.date())
        _sync_runs(conn, now)
        _job_runs(conn, now)
        _proposals(conn)


def _org(conn: Connection) -> None:
    """The four owners, and five accounts of the first."""
    conn.execute(
        insert(Owner),
        [{"id": i, "name": n, "region": r, "active": True, "capacity": 100} for i, n, r in OWNERS],
    )
    conn.execute(
        insert(Account),
        [{"id": f"a{k}", "name": f"Account {k}", "owner_id": "o1"} for k in range(1, 6)],
    )


def _snapshots(conn: Connection, now: dt.datetime) -> None:
    """Monthly snapshots 60 and 30 days back (potential only), and today's with every value of LATEST."""
    today = now.date()
    for days_ago, potentials in ((60, (150, 150, 150, 150)), (30, (120, 140, 160, 180))):
        sid = conn.execute(
            insert(Snapshot).returning(Snapshot.id),
            {"as_of": today - dt.timedelta(days=days_ago), "kind": "monthly", "taken_at": now},
        ).scalar_one()
        conn.execute(
            insert(MetricSnapshot),
            [
                {"snapshot_id": sid, "owner_id": o, "metric": "potential", "value": p}
                for (o, _, _), p in zip(OWNERS, potentials, strict=True)
            ],
        )
    latest = conn.execute(
        insert(Snapshot).returning(Snapshot.id), {"as_of": today, "kind": "on_demand", "taken_at": now}
    ).scalar_one()
    conn.execute(
        insert(MetricSnapshot),
        [
            {"snapshot_id": latest, "owner_id": o, "metric": m, "value": v}
            for o, values in LATEST.items()
            for m, v in values.items()
        ]
        + [
            {"snapshot_id": latest, "owner_id": o, "metric": "quota_attainment", "value": None}
            for o in LATEST
        ],
    )


def _drift_events(conn: Connection, today: dt.date) -> None:
    """Three open events (one open for 60 days) and one resolved 30 days ago."""
    day = dt.timedelta(days=1)
    conn.execute(
        insert(DriftEvent),
        fill([
            {"owner_id": "o1", "rule": "potential_band", "metric": "potential", "value": 100.0, "mean": 150.0,
             "deviation": -1 / 3, "consecutive": 3, "first_seen": today - 60 * day, "last_seen": today},
            {"owner_id": "o4", "rule": "potential_band", "metric": "potential", "value": 200.0, "mean": 150.0,
             "deviation": 1 / 3, "consecutive": 1, "first_seen": today, "last_seen": today},
            {"owner_id": "o3", "rule": "utilization_max", "metric": "utilization", "value": 1.2, "mean": 0.8667,
             "deviation": None, "consecutive": 2, "first_seen": today - 20 * day, "last_seen": today},
            {"owner_id": "o2", "rule": "arr_band", "metric": "arr", "value": 80.0, "mean": 50.0,
             "deviation": 0.6, "consecutive": 1, "first_seen": today - 60 * day, "last_seen": today - 60 * day,
             "resolved_at": today - 30 * day},
        ], {"resolved_at": None}),
    )  # fmt: skip


def _sync_runs(conn: Connection, now: dt.datetime) -> None:
    """Salesforce syncs whose latest run failed; HubSpot's latest succeeded and one is running."""
    minute = dt.timedelta(minutes=1)
    conn.execute(
        insert(SyncRun),
        fill([
            {"source": "salesforce", "object": "Account", "status": "succeeded", "started_at": now - 30 * minute,
             "finished_at": now - 29 * minute, "rows_read": 100, "rows_upserted": 90, "rows_deleted": 1,
             "rows_quarantined": 2},
            {"source": "salesforce", "object": "Account", "status": "succeeded", "started_at": now - 20 * minute,
             "finished_at": now - 19 * minute, "rows_read": 50, "rows_upserted": 40, "rows_deleted": 0,
             "rows_quarantined": 1},
            {"source": "salesforce", "object": "Account", "status": "failed", "started_at": now - 10 * minute,
             "finished_at": now - 9 * minute, "rows_read": 5, "error": "session expired"},
            {"source": "hubspot", "object": "companies", "status": "failed", "started_at": now - 25 * minute,
             "finished_at": now - 24 * minute},
            {"source": "hubspot", "object": "companies", "status": "succeeded", "started_at": now - 5 * minute,
             "finished_at": now - 4 * minute, "rows_read": 7, "rows_upserted": 7},
            {"source": "hubspot", "object": "companies", "status": "running", "started_at": now - minute},
        ], SYNC_DEFAULTS),
    )  # fmt: skip


def _job_runs(conn: Connection, now: dt.datetime) -> None:
    """A ``sync`` job last successful an hour ago, and a monthly snapshot done 70 days ago."""
    minute, day = dt.timedelta(minutes=1), dt.timedelta(days=1)
    conn.execute(
        insert(JobRun),
        fill([
            {"job": "sync", "holder": "pod-a", "status": "succeeded", "started_at": now - 61 * minute,
             "finished_at": now - 60 * minute},
            {"job": "sync", "holder": "pod-a", "status": "failed", "started_at": now - 5 * minute,
             "finished_at": now - 4 * minute, "error": "boom"},
            {"job": "monthly_snapshot", "run_key": "m-70", "holder": "pod-a", "status": "succeeded",
             "started_at": now - 70 * day, "finished_at": now - 70 * day + minute},
        ], {"run_key": None, "error": None}),
    )  # fmt: skip


def _proposals(conn: Connection) -> None:
    """Two proposed proposals and an applied one whose moves are written, in conflict or pending."""
    ids = conn.execute(
        insert(Proposal).returning(Proposal.id),
        [
            {"state": state, "scenario": "default", "idempotency_key": f"k{n}"}
            for n, state in enumerate(("proposed", "proposed", "applied"))
        ],
    ).scalars()
    applied = list(ids)[-1]
    conn.execute(
        insert(ProposalMove),
        [
            {"proposal_id": applied, "account_id": f"a{k}", "from_owner_id": "o1", "to_owner_id": "o2",
             "expected_owner_id": "o1", "rationale": "balance potential", "writeback_state": state}
            for k, state in enumerate(("written", "written", "written", "conflict", "pending"), start=1)
        ],
    )  # fmt: skip
