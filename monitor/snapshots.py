"""Storing snapshots (metric and balance rows) and keeping drift events in step with the latest one.

Set-based: metric rows go in with COPY, drift events with one ``INSERT ... ON CONFLICT`` on the open
(owner, rule) index and one ``UPDATE`` that resolves the events whose breach has ended. An event that
persists is updated (value, mean, deviation, last_seen, consecutive), never duplicated.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from monitor.balance import STATS
from store.bulk import copy_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventChanges:
    """What one snapshot did to the drift events."""

    opened: int
    updated: int
    resolved: int


def _long(frame: pd.DataFrame, id_name: str, columns: Sequence[str], var_name: str) -> pd.DataFrame:
    """``frame[columns]`` as (id, var, value) rows with NaN as a missing value (NULL once copied)."""
    part = frame[list(columns)].astype(np.float64)
    part.index.name = id_name
    long = part.reset_index().melt(id_vars=id_name, var_name=var_name, value_name="value")
    long[id_name] = long[id_name].astype(object)
    return long


def store_snapshot(
    conn: Connection,
    as_of: dt.date,
    kind: str,
    territories: pd.DataFrame,
    metric_columns: Sequence[str],
    balance: pd.DataFrame,
) -> int:
    """Insert a snapshot with a metric row per (territory, metric) and a row per (metric, stat)."""
    snapshot_id = int(
        conn.execute(
            text("INSERT INTO snapshots (as_of, kind) VALUES (:as_of, :kind) RETURNING id"),
            {"as_of": as_of, "kind": kind},
        ).scalar_one()
    )
    metrics = _long(territories, "owner_id", metric_columns, "metric")
    metrics.insert(0, "snapshot_id", snapshot_id)
    copy_frame(conn, "metric_snapshots", metrics)
    stats = _long(balance, "metric", STATS, "stat")
    stats.insert(0, "snapshot_id", snapshot_id)
    copy_frame(conn, "balance_snapshots", stats)
    log.info(
        "stored snapshot",
        extra={"snapshot_id": snapshot_id, "as_of": as_of.isoformat(), "kind": kind, "rows": len(metrics)},
    )
    return snapshot_id


def delete_snapshots(conn: Connection, as_of: dt.date, kind: str) -> int:
    """Delete the snapshots of ``kind`` as of ``as_of`` (their rows go with them); returns how many."""
    result = conn.execute(
        text("DELETE FROM snapshots WHERE as_of = :as_of AND kind = :kind"), {"as_of": as_of, "kind": kind}
    )
    return int(result.rowcount)


def previous_values(
    conn: Connection, before: dt.date, metrics: Iterable[str], limit: int
) -> list[tuple[dt.date, pd.DataFrame]]:
    """Per-territory values of ``metrics`` in the latest snapshot of each of the ``limit`` dates before
    ``before``, newest first: what hysteresis re-evaluates the rules on."""
    wanted = sorted(set(metrics))
    if limit <= 0 or not wanted:
        return []
    rows = conn.execute(
        text(
            """
            WITH latest AS (
                SELECT DISTINCT ON (as_of) id, as_of FROM snapshots
                WHERE as_of < :before ORDER BY as_of DESC, id DESC
            ), chosen AS (SELECT id, as_of FROM latest ORDER BY as_of DESC LIMIT :limit)
            SELECT c.as_of, m.owner_id, m.metric, m.value
            FROM chosen c JOIN metric_snapshots m ON m.snapshot_id = c.id
            WHERE m.metric = ANY(:metrics)
            """
        ),
        {"before": before, "limit": limit, "metrics": wanted},
    ).all()
    frame = pd.DataFrame(rows, columns=["as_of", "owner_id", "metric", "value"])
    out: list[tuple[dt.date, pd.DataFrame]] = []
    for as_of in sorted(set(frame["as_of"])):
        part = frame.loc[frame["as_of"] == as_of]
        wide = part.pivot(index="owner_id", columns="metric", values="value")
        out.append((as_of, wide.reindex(columns=wanted).astype(np.float64)))
    out.reverse()
    return out


def open_events(conn: Connection) -> list[tuple[str, str]]:
    """(owner id, rule) of every open drift event."""
    rows = conn.execute(text("SELECT owner_id, rule FROM drift_events WHERE resolved_at IS NULL")).all()
    return [(str(r.owner_id), str(r.rule)) for r in rows]


def latest_event_date(conn: Connection) -> dt.date | None:
    """The newest date a drift event was seen or resolved on (events never move back in time)."""
    value = conn.execute(
        text("SELECT greatest(max(last_seen), max(resolved_at)) FROM drift_events")
    ).scalar_one()
    return value if isinstance(value, dt.date) else None


def sync_drift_events(
    conn: Connection, as_of: dt.date, breaches: pd.DataFrame, rule_names: Iterable[str]
) -> EventChanges:
    """Bring the drift events in line with the breaches of the snapshot as of ``as_of``.

    ``breaches`` are the rows of ``monitor.drift.apply_hysteresis``; those with ``fired`` open an event
    or update the open one of the same (owner, rule). Open events with no breach now, or of a rule that
    no longer exists, are resolved as of ``as_of``.
    """
    fired = breaches.loc[breaches["fired"].astype(bool)] if len(breaches) else breaches
    _stage_breaches(conn, fired)
    resolved = _resolve_events(conn, as_of, rule_names)
    opened, updated = _upsert_events(conn, as_of)
    changes = EventChanges(opened=opened, updated=updated, resolved=resolved)
    log.info(
        "drift events updated",
        extra={
            "as_of": as_of.isoformat(),
            "opened": changes.opened,
            "updated": changes.updated,
            "resolved": changes.resolved,
        },
    )
    return changes


def _stage_breaches(conn: Connection, fired: pd.DataFrame) -> None:
    """The fired breaches in a temporary table ``current_breaches`` (dropped at commit)."""
    conn.execute(
        text(
            "CREATE TEMPORARY TABLE current_breaches (owner_id text, rule text, metric text, value float8,"
            " mean float8, deviation float8, streak int, first_seen date) ON COMMIT DROP"
        )
    )
    if not len(fired):
        return
    streaks = fired["streak"].to_numpy(dtype=np.int64).tolist()
    rows = [
        {
            "owner_id": str(r.owner_id),
            "rule": str(r.rule),
            "metric": str(r.metric),
            "value": _nullable(r.value),
            "mean": _nullable(r.mean),
            "deviation": _nullable(r.deviation),
            "streak": streak,
            "first_seen": r.first_seen,
        }
        for r, streak in zip(fired.itertuples(index=False), streaks, strict=True)
    ]
    conn.execute(
        text(
            "INSERT INTO current_breaches VALUES"
            " (:owner_id, :rule, :metric, :value, :mean, :deviation, :streak, :first_seen)"
        ),
        rows,
    )


def _resolve_events(conn: Connection, as_of: dt.date, rule_names: Iterable[str]) -> int:
    """Resolve the open events with no staged breach, or of a rule no longer configured; how many."""
    return int(
        conn.execute(
            text(
                """
                UPDATE drift_events e SET resolved_at = :as_of
                WHERE e.resolved_at IS NULL
                  AND (NOT (e.rule = ANY(:rules))
                       OR NOT EXISTS (SELECT 1 FROM current_breaches b
                                      WHERE b.owner_id = e.owner_id AND b.rule = e.rule))
                """
            ),
            {"as_of": as_of, "rules": list(rule_names)},
        ).rowcount
    )


def _upsert_events(conn: Connection, as_of: dt.date) -> tuple[int, int]:
    """Open an event per staged breach, or update the open one (a later day adds to its streak).

    Returns (opened, updated).
    """
    upserted = conn.execute(
        text(
            """
            INSERT INTO drift_events (owner_id, rule, metric, value, mean, deviation, consecutive,
                                      first_seen, last_seen)
            SELECT owner_id, rule, metric, value, mean, deviation, streak, first_seen, :as_of
            FROM current_breaches
            ON CONFLICT (owner_id, rule) WHERE resolved_at IS NULL DO UPDATE
            SET metric = excluded.metric, value = excluded.value, mean = excluded.mean,
                deviation = excluded.deviation, last_seen = excluded.last_seen,
                consecutive = drift_events.consecutive
                              + (excluded.last_seen > drift_events.last_seen)::int
            RETURNING (xmax = 0) AS inserted
            """
        ),
        {"as_of": as_of},
    ).all()
    opened = sum(1 for r in upserted if r.inserted)
    return opened, len(upserted) - opened


def _nullable(value: object) -> float | None:
    """A float, or None for NaN/None (stored as NULL)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if np.isnan(number) else number
