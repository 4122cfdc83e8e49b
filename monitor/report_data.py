"""What the HTML report shows, read from the store: the snapshot, its balance, trend, drift and a map."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Connection, text

from monitor.balance import describe
from monitor.catalog import METRICS
from monitor.collector import band_limits, number, read_balance, read_snapshot
from monitor.drift import Rule, RuleKind
from monitor.report import AccountPoint, Balance, Band, DriftRow, ReportData, Territory, TrendPoint

_TREND = text(
    "WITH picked AS ("
    "  SELECT DISTINCT ON (as_of) id, as_of FROM snapshots WHERE as_of <= :as_of"
    "  ORDER BY as_of DESC, taken_at DESC, id DESC LIMIT :limit) "
    "SELECT p.as_of, m.metric, m.value FROM picked p JOIN metric_snapshots m ON m.snapshot_id = p.id "
    "WHERE m.metric = ANY(:metrics) AND m.value IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM balance_snapshots b WHERE b.snapshot_id = p.id)"
)
_STORED_TREND = text(
    "WITH picked AS ("
    "  SELECT DISTINCT ON (as_of) id, as_of FROM snapshots WHERE as_of <= :as_of"
    "  ORDER BY as_of DESC, taken_at DESC, id DESC LIMIT :limit) "
    "SELECT p.as_of, b.metric, b.stat, b.value "
    "FROM picked p JOIN balance_snapshots b ON b.snapshot_id = p.id "
    "WHERE b.metric = ANY(:metrics) AND b.stat IN ('cv', 'gini')"
)
_DRIFT_AS_OF = text(
    "SELECT d.owner_id, o.name, d.rule, d.metric, d.value, d.mean, d.deviation, d.consecutive, d.first_seen "
    "FROM drift_events d JOIN owners o ON o.id = d.owner_id "
    "WHERE d.first_seen <= :as_of AND (d.resolved_at IS NULL OR d.resolved_at > :as_of)"
)
_LOCATED = "FROM accounts a WHERE NOT a.deleted AND a.lat IS NOT NULL AND a.lon IS NOT NULL"
# Who held each located account on D: the tenure covering D (latest start wins), else its current owner.
_ACCOUNT_POINTS = (
    "WITH held AS ("
    "  SELECT DISTINCT ON (account_id) account_id, owner_id FROM assignment_history"
    "  WHERE start_date <= :as_of AND (end_date IS NULL OR end_date > :as_of)"
    "  ORDER BY account_id, start_date DESC, id DESC) "
    "SELECT a.lat, a.lon, coalesce(h.owner_id, a.owner_id) AS owner_id "
    "FROM accounts a {sample} LEFT JOIN held h ON h.account_id = a.id "
    "WHERE NOT a.deleted AND a.lat IS NOT NULL AND a.lon IS NOT NULL ORDER BY a.id"
)


def load_report(
    conn: Connection,
    *,
    as_of: dt.date | None,
    rules: Sequence[Rule],
    generated_at: dt.datetime,
    trend_snapshots: int = 36,
    max_points: int = 5000,
) -> ReportData | None:
    """What the HTML report shows, for the latest snapshot on or before ``as_of``; None without one.

    The accounts of the map are a repeatable Bernoulli sample of about ``max_points`` located accounts.
    """
    snapshot = read_snapshot(conn, as_of)
    if snapshot is None:
        return None
    values = snapshot.values
    day = snapshot.as_of
    territories = [
        Territory(
            str(owner_id),
            str(row["name"]),
            str(row["region"]),
            {m: number(row[m]) for m in METRICS},
        )
        for owner_id, row in values.iterrows()
    ]
    stats = read_balance(conn, snapshot, rules)
    balances = [
        Balance(
            metric,
            number(stats.at[metric, "mean"]),
            number(stats.at[metric, "cv"]),
            number(stats.at[metric, "gini"]),
            number(stats.at[metric, "min_max_ratio"]),
            int(number(stats.at[metric, "outside_band"]) or 0),
        )
        for metric in METRICS
    ]
    bands = [Band(r.name, r.metric, *band_limits(values, r)) for r in rules if r.metric in values.columns]
    # the trend follows the metrics that bands and ceilings keep even (an outperformer rule's metric,
    # quota attainment, is uneven by nature and would flatten every other line)
    watched = list(dict.fromkeys(r.metric for r in rules if r.kind is not RuleKind.above_mean))
    params = {"as_of": day, "limit": trend_snapshots, "metrics": watched}
    stat_points: dict[tuple[dt.date, str], dict[str, float | None]] = {}
    for row in conn.execute(_STORED_TREND, params):
        stat_points.setdefault((row.as_of, row.metric), {})[row.stat] = number(row.value)
    grouped: dict[tuple[dt.date, str], list[float]] = {}
    for row in conn.execute(_TREND, params):  # snapshots stored without their balance
        grouped.setdefault((row.as_of, row.metric), []).append(float(row.value))
    for key, numbers in grouped.items():
        described = describe(numbers)
        stat_points[key] = {"cv": number(described["cv"]), "gini": number(described["gini"])}
    trend = [
        TrendPoint(
            when, metric, stat_points[(when, metric)].get("cv"), stat_points[(when, metric)].get("gini")
        )
        for when, metric in sorted(stat_points, key=lambda key: (watched.index(key[1]), key[0]))
    ]
    drift = [
        DriftRow(
            r.owner_id, r.name, r.rule, r.metric, number(r.value), number(r.mean), number(r.deviation),
            int(r.consecutive), r.first_seen,
        )
        for r in conn.execute(_DRIFT_AS_OF, {"as_of": day})
    ]  # fmt: skip
    total = int(conn.execute(text(f"SELECT count(*) {_LOCATED}")).scalar_one())
    sample = ""
    if total > max_points:
        sample = f"TABLESAMPLE BERNOULLI ({100.0 * max_points / total:.6f}) REPEATABLE (7)"
    points = [
        AccountPoint(float(r.lat), float(r.lon), r.owner_id)
        for r in conn.execute(text(_ACCOUNT_POINTS.format(sample=sample)), {"as_of": day})
    ]
    notes = []
    if as_of is not None and day != as_of:
        notes.append(
            f"No snapshot as of {as_of.isoformat()}: the latest before it, {day.isoformat()}, is shown."
        )
    return ReportData(
        as_of=day,
        snapshot_kind=snapshot.kind,
        generated_at=generated_at,
        territories=territories,
        balance=balances,
        bands=bands,
        trend=trend,
        drift=drift,
        accounts=points,
        accounts_total=total,
        notes=notes,
    )
