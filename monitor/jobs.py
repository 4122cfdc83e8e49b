"""The health jobs as plain functions of their dependencies: measure, snapshot, backfill.

The service layer registers :func:`take_snapshot` (monthly, on demand, after a sync) and :func:`backfill`
with its scheduler; here they only take an engine, the settings sections they need and the dates.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd
from sqlalchemy import Connection, Engine

from monitor.balance import STATS, balance
from monitor.catalog import CATALOG, METRICS
from monitor.drift import Rule, apply_hysteresis, evaluate, lookback, outside_band
from monitor.frames import load_inputs
from monitor.metrics import UNLOCATED, territory_metrics
from monitor.snapshots import (
    EventChanges,
    delete_snapshots,
    latest_event_date,
    open_events,
    previous_values,
    store_snapshot,
    sync_drift_events,
)

log = logging.getLogger(__name__)

INTEGRAL = frozenset({m.name for m in CATALOG if m.integral} | {UNLOCATED})  # JSON integers
BACKFILL = "backfill"


class MetricsConfig(Protocol):
    """What the jobs need of the ``metrics`` settings section."""

    def touches_per_tier(self) -> Mapping[str, float]: ...


class RulesConfig(Protocol):
    """What the jobs need of the ``rules`` settings section."""

    def drift_rules(self) -> Sequence[Rule]: ...


@dataclass(frozen=True)
class Health:
    """Every territory's metrics, the balance across territories and the breaches, as of a date.

    ``territories``: index owner id, ``owner_name``, ``METRICS``, ``UNLOCATED``. ``breaches``: every
    breach of this snapshot with ``streak``, ``first_seen`` and ``fired`` (hysteresis applied).
    """

    as_of: dt.date
    territories: pd.DataFrame
    balance: pd.DataFrame
    breaches: pd.DataFrame
    unassigned: int

    @property
    def fired(self) -> pd.DataFrame:
        """The breaches that fire (what drift events record)."""
        if self.breaches.empty:
            return self.breaches
        return self.breaches.loc[self.breaches["fired"].astype(bool)]

    def as_json(self) -> dict[str, Any]:
        """The ``territory health --format json`` document."""
        territories = []
        for owner_id, row in self.territories.iterrows():
            entry: dict[str, Any] = {"owner_id": str(owner_id), "owner_name": row["owner_name"]}
            entry |= {m: _json_number(row[m], m in INTEGRAL) for m in METRICS}
            territories.append(entry)
        stats = {
            metric: {s: _json_number(row[s], s == "outside_band") for s in STATS}
            for metric, row in self.balance.iterrows()
        }
        breaches = [
            {
                "owner_id": str(r.owner_id),
                "metric": str(r.metric),
                "value": _json_number(r.value),
                "mean": _json_number(r.mean),
                "deviation": _json_number(r.deviation),
                "rule": str(r.rule),
            }
            for r in self.fired.itertuples(index=False)
        ]
        return {
            "as_of": self.as_of.isoformat(),
            "territories": territories,
            "balance": stats,
            "breaches": breaches,
        }


@dataclass(frozen=True)
class SnapshotResult:
    """A stored snapshot: its id, what it measured, and what it did to the drift events."""

    snapshot_id: int
    health: Health
    events: EventChanges | None


def _json_number(value: Any, integer: bool = False) -> float | int | None:
    """A JSON number: None for NaN/None, an int for counts."""
    if value is None:
        return None
    number = float(value)
    if math.isnan(number):
        return None
    return round(number) if integer else number


def compute_health(
    conn: Connection,
    touches: Mapping[str, float],
    rules: Sequence[Rule],
    as_of: dt.date,
    *,
    hysteresis: bool = True,
) -> Health:
    """Measure every territory as of ``as_of`` and evaluate the rules; writes nothing.

    With ``hysteresis`` the earlier snapshots in the database decide which breaches fire; without it
    every breach of a rule with ``consecutive`` 1 fires.
    """
    inputs = load_inputs(conn, as_of)
    territories = territory_metrics(inputs.owners, inputs.accounts, touches, sums=inputs.sums)
    raw = evaluate(territories, rules)
    stats = balance(territories, METRICS, outside_band(raw))
    previous: list[tuple[dt.date, pd.DataFrame]] = []
    events: list[tuple[str, str]] = []
    if hysteresis:
        depth = lookback(rules)
        metrics = {rule.metric for rule in rules}
        previous = [(d, evaluate(frame, rules)) for d, frame in previous_values(conn, as_of, metrics, depth)]
        events = open_events(conn)
    breaches = apply_hysteresis(raw, as_of, previous, rules, events)
    territories.insert(0, "owner_name", inputs.owners["name"].reindex(territories.index))
    return Health(
        as_of=as_of,
        territories=territories,
        balance=stats,
        breaches=breaches,
        unassigned=inputs.unassigned,
    )


def take_snapshot(
    engine: Engine,
    metrics: MetricsConfig,
    rules: RulesConfig,
    *,
    as_of: dt.date,
    kind: str,
) -> SnapshotResult:
    """Measure as of ``as_of``, store the snapshot of ``kind``, and update the drift events.

    Drift events follow only the newest snapshots: a backfill, or a snapshot dated before the last
    event change, leaves them alone (a measurement of the past does not rewrite the present).
    """
    drift_rules = list(rules.drift_rules())
    with engine.begin() as conn:
        health = compute_health(conn, metrics.touches_per_tier(), drift_rules, as_of)
        snapshot_id = store_snapshot(
            conn, as_of, kind, health.territories, (*METRICS, UNLOCATED), health.balance
        )
        events: EventChanges | None = None
        latest = latest_event_date(conn)
        if kind != BACKFILL and (latest is None or as_of >= latest):
            events = sync_drift_events(conn, as_of, health.breaches, [r.name for r in drift_rules])
    return SnapshotResult(snapshot_id=snapshot_id, health=health, events=events)


def month_starts(today: dt.date, months: int) -> list[dt.date]:
    """The first days of the ``months`` months ending with ``today``'s month, oldest first."""
    first = today.replace(day=1)
    index = first.year * 12 + first.month - 1
    return [dt.date(i // 12, i % 12 + 1, 1) for i in range(index - months + 1, index + 1)]


def backfill(
    engine: Engine,
    metrics: MetricsConfig,
    rules: RulesConfig,
    *,
    months: int,
    today: dt.date,
) -> list[SnapshotResult]:
    """Recompute a ``backfill`` snapshot as of the first of each of the past ``months`` months.

    Each date is one transaction that replaces an earlier backfill snapshot of that date; snapshots
    taken at the time (monthly, on demand, event) are kept as they are. Drift events are not touched.
    """
    if months < 1:
        raise ValueError(f"months must be >= 1, got {months}")
    touches = metrics.touches_per_tier()
    drift_rules = list(rules.drift_rules())
    results = []
    for as_of in month_starts(today, months):
        with engine.begin() as conn:
            replaced = delete_snapshots(conn, as_of, BACKFILL)
            health = compute_health(conn, touches, drift_rules, as_of)
            snapshot_id = store_snapshot(
                conn, as_of, BACKFILL, health.territories, (*METRICS, UNLOCATED), health.balance
            )
        log.info(
            "backfilled snapshot",
            extra={"as_of": as_of.isoformat(), "snapshot_id": snapshot_id, "replaced": replaced},
        )
        results.append(SnapshotResult(snapshot_id=snapshot_id, health=health, events=None))
    return results
