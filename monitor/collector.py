"""The Prometheus view of the store: a custom collector that reads the latest snapshot at scrape time.

Nothing is recomputed per territory at scrape time: per-territory values come from the latest
``metric_snapshots`` rows, the balance from ``balance_snapshots``, drift from open ``drift_events``,
sync and job health from ``sync_runs`` and ``job_runs``, proposals and write-backs from their tables:
a handful of set-based queries in one read-only transaction. Only the band limits and the ranking for
``max_territories`` are derived from the snapshot's values (``monitor.drift``), which is cheap for
thousands of territories. Every series is documented in docs/observability.md; the HTML report
reads the same snapshot through ``read_snapshot`` (monitor/report_data.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from monitor.balance import STATS, balance
from monitor.catalog import BY_NAME, CATALOG, METRICS
from monitor.drift import DEFAULT_RULES, Rule, RuleKind, evaluate, outside_band
from store.models import MOVE_WRITEBACK_STATES, PROPOSAL_STATES, RUN_STATUSES, SYNC_RUN_STATUSES

log = logging.getLogger(__name__)

TERRITORY_LABELS: Final = ("owner_id", "owner", "region")
MAX_LABEL_CHARS: Final = 128  # CRM names and regions are free text; a label value stays this short


def label(value: object) -> str:
    """A label value from CRM text, cut to ``MAX_LABEL_CHARS`` (an ellipsis marks the cut)."""
    text_value = str(value)
    return text_value if len(text_value) <= MAX_LABEL_CHARS else text_value[: MAX_LABEL_CHARS - 1] + "\u2026"


_LATEST_SNAPSHOT = text(
    "SELECT id, as_of, kind, taken_at FROM snapshots "
    # Without a date, the newest snapshot of a day not in the future (a snapshot dated ahead of the
    # clock, from a bad --as-of of an older version, is never "the latest").
    "WHERE as_of <= COALESCE(CAST(:as_of AS date), CAST(now() AT TIME ZONE 'UTC' AS date)) "
    "ORDER BY as_of DESC, taken_at DESC, id DESC LIMIT 1"
)
_STORED_BALANCE = text("SELECT metric, stat, value FROM balance_snapshots WHERE snapshot_id = :snapshot_id")
# One row per territory, one column per metric: Postgres pivots, Python gets 2,000 rows, not 26,000.
_SNAPSHOT_VALUES = text(
    "SELECT m.owner_id, o.name, coalesce(o.region, '') AS region, "  # noqa: S608 - constant metric names
    + ", ".join(f"max(m.value) FILTER (WHERE m.metric = '{m}') AS {m}" for m in METRICS)
    + " FROM metric_snapshots m JOIN owners o ON o.id = m.owner_id WHERE m.snapshot_id = :snapshot_id"
    " GROUP BY m.owner_id, o.name, o.region ORDER BY m.owner_id"
)
_OPEN_DRIFT = text(
    "SELECT d.owner_id, d.rule, d.metric, d.value, d.mean, d.deviation, d.consecutive, d.first_seen, "
    "d.last_seen, o.name, coalesce(o.region, '') AS region "
    "FROM drift_events d JOIN owners o ON o.id = d.owner_id WHERE d.resolved_at IS NULL "
    "ORDER BY d.first_seen, d.owner_id, d.rule"
)
_SYNC_TOTALS = text(
    "SELECT source, object, status, count(*) AS runs, sum(rows_read) AS rows_read, "
    "sum(rows_upserted) AS rows_upserted, sum(rows_deleted) AS rows_deleted, "
    "sum(rows_quarantined) AS rows_quarantined, max(finished_at) AS last_finished "
    "FROM sync_runs GROUP BY source, object, status"
)
_SYNC_LAST = text(
    "SELECT DISTINCT ON (source, object) source, object, status FROM sync_runs "
    "WHERE status <> 'running' ORDER BY source, object, started_at DESC, id DESC"
)
_JOB_TOTALS = text(
    "SELECT job, status, count(*) AS runs, max(finished_at) AS last_finished "
    "FROM job_runs GROUP BY job, status"
)
_PROPOSALS = text("SELECT state, count(*) FROM proposals GROUP BY state")
_WRITEBACKS = text("SELECT writeback_state, count(*) FROM proposal_moves GROUP BY writeback_state")


@dataclass(frozen=True)
class SnapshotFrame:
    """One stored snapshot as a frame: one row per territory (index owner_id), one column per metric."""

    id: int
    as_of: dt.date
    kind: str
    taken_at: dt.datetime
    values: pd.DataFrame  # columns: name, region, and every metric of METRICS (NaN where undefined)


def date_seconds(day: dt.date) -> float:
    """Unix time of midnight UTC starting ``day``."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def read_snapshot(conn: Connection, as_of: dt.date | None = None) -> SnapshotFrame | None:
    """The latest snapshot (by as-of date, then time taken) on or before ``as_of``; None if there is none."""
    head = conn.execute(_LATEST_SNAPSHOT, {"as_of": as_of}).one_or_none()
    if head is None:
        return None
    rows = conn.execute(_SNAPSHOT_VALUES, {"snapshot_id": head.id}).all()
    columns = ["owner_id", "name", "region", *METRICS]
    values = pd.DataFrame([tuple(r) for r in rows], columns=columns).set_index("owner_id")
    values = values.astype(dict.fromkeys(METRICS, np.float64))
    return SnapshotFrame(head.id, head.as_of, head.kind, head.taken_at, values)


def band_limits(values: pd.DataFrame, rule: Rule) -> tuple[float | None, float | None]:
    """The lower and upper limit of ``rule`` in the metric's unit, for this snapshot's values.

    Band rules: org mean times (1 -/+ threshold); max rules: the threshold (no lower limit);
    above-mean rules: mean times (1 + threshold). None where the limit is undefined (no positive mean).
    """
    if rule.kind is RuleKind.max:
        return None, rule.threshold
    column = values[rule.metric].to_numpy(dtype=np.float64, na_value=np.nan)
    finite = column[np.isfinite(column)]
    mean = float(finite.mean()) if len(finite) else math.nan
    if not (math.isfinite(mean) and mean > 0):
        return None, None
    upper = mean * (1.0 + rule.threshold)
    if rule.kind is RuleKind.band:
        return mean * (1.0 - rule.threshold), upper
    return None, upper


def snapshot_balance(values: pd.DataFrame, rules: Sequence[Rule]) -> pd.DataFrame:
    """``monitor.balance`` statistics of every metric of a snapshot, outside-band counts from ``rules``."""
    metrics = values[list(METRICS)]
    return balance(metrics, METRICS, outside_band(evaluate(metrics, rules)))


def read_balance(conn: Connection, snapshot: SnapshotFrame, rules: Sequence[Rule]) -> pd.DataFrame:
    """The snapshot's balance as stored with it (``balance_snapshots``), one row per metric.

    A snapshot stored without balance rows (one written by hand or by an older version) gets them
    computed from its values with the same code, so the answer has the same shape either way.
    """
    rows = conn.execute(_STORED_BALANCE, {"snapshot_id": snapshot.id}).all()
    if not rows:
        return snapshot_balance(snapshot.values, rules)
    stored = pd.DataFrame(rows, columns=["metric", "stat", "value"]).astype({"value": np.float64})
    wide = stored.pivot(index="metric", columns="stat", values="value")
    return wide.reindex(index=list(METRICS), columns=list(STATS)).astype(np.float64)


def worst_first(values: pd.DataFrame, rules: Sequence[Rule], open_owners: Iterable[str]) -> list[str]:
    """Territories ordered for the ``max_territories`` limit: most in need of attention first.

    First the territories with an open drift event, then those breaching a rule in this snapshot, each
    group by its largest relative deviation from the org mean over the rules' metrics, then owner id.
    """
    if values.empty:
        return []
    metrics = sorted({r.metric for r in rules if r.metric in values.columns})
    score = np.zeros(len(values), dtype=np.float64)
    for metric in metrics:
        column = values[metric].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = column[np.isfinite(column)]
        mean = float(finite.mean()) if len(finite) else math.nan
        if math.isfinite(mean) and mean > 0:
            score = np.fmax(score, np.nan_to_num(np.abs(column / mean - 1.0), nan=0.0))
    worst = dict(zip(values.index, score.tolist(), strict=True))
    breaching = set(evaluate(values[list(METRICS)], rules)["owner_id"]) if rules else set()
    open_set = set(open_owners)
    order = sorted(
        values.index,
        key=lambda owner: (owner not in open_set, owner not in breaching, -worst[owner], owner),
    )
    return [str(owner) for owner in order]


def number(value: Any) -> float | None:
    """A finite float, or None for NULL and NaN (such samples are left out, not exported as NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class TerritoryCollector(Collector):
    """Yields fresh metric families from the store at every scrape.

    ``max_territories`` limits the per-territory series to that many territories, worst first
    (:func:`worst_first`); ``rules`` are the drift rules (for bands and outside-band counts);
    ``job_intervals`` maps each scheduled job to its interval in seconds, exported so that an alert can
    tell a job that missed two runs.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_territories: int | None = None,
        rules: Sequence[Rule] = DEFAULT_RULES,
        job_intervals: Mapping[str, float] | None = None,
    ) -> None:
        if max_territories is not None and max_territories < 1:
            raise ValueError(f"max_territories must be at least 1, got {max_territories}")
        self._engine = engine
        self._max = max_territories
        self._rules = tuple(rules)
        self._job_intervals = dict(job_intervals or {})

    def describe(self) -> Iterable[Metric]:
        """The names this collector exposes, without touching the database (for duplicate checks)."""
        return [GaugeMetricFamily(m.prometheus, m.help) for m in CATALOG] + [
            GaugeMetricFamily("territory_collector_up", "")
        ]

    def collect(self) -> Iterable[Metric]:
        """Every family, read in one read-only transaction; on a database error only ``_up 0``."""
        up = GaugeMetricFamily(
            "territory_collector_up", "1 when the last scrape could read the database, else 0."
        )
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
                families = list(self._families(conn))
        except SQLAlchemyError as exc:  # one line per scrape, not a traceback: the alert says the rest
            log.warning("the metrics collector could not read the database", extra={"error": str(exc)})
            up.add_metric([], 0.0)
            return [up]
        up.add_metric([], 1.0)
        return [*families, up]

    def _families(self, conn: Connection) -> Iterator[Metric]:
        drift_rows = conn.execute(_OPEN_DRIFT).all()
        snapshot = read_snapshot(conn)
        exported: set[str] = set()
        if snapshot is not None:
            values = snapshot.values
            order = worst_first(values, self._rules, (r.owner_id for r in drift_rows))
            exported = set(order if self._max is None else order[: self._max])
            yield from self._snapshot_families(snapshot, exported)
            yield from self._balance_families(values, read_balance(conn, snapshot, self._rules))
        yield from self._drift_families(drift_rows, exported)
        yield from self._sync_families(conn)
        yield from self._job_families(conn)
        yield from self._proposal_families(conn)

    def _snapshot_families(self, snapshot: SnapshotFrame, exported: set[str]) -> Iterator[Metric]:
        values = snapshot.values
        yield GaugeMetricFamily(
            "territory_snapshot_timestamp_seconds",
            "When the latest snapshot was taken.",
            value=snapshot.taken_at.timestamp(),
        )
        yield GaugeMetricFamily(
            "territory_snapshot_as_of_timestamp_seconds",
            "The date the latest snapshot measures (midnight UTC).",
            value=date_seconds(snapshot.as_of),
        )
        yield GaugeMetricFamily(
            "territory_territories", "Territories in the latest snapshot.", value=float(len(values))
        )
        yield GaugeMetricFamily(
            "territory_territories_exported",
            "Territories with per-territory series (metrics.max_territories).",
            value=float(len(exported)),
        )
        chosen = values.loc[values.index.isin(exported)]
        keys = [
            [label(owner_id), label(name), label(region)]
            for owner_id, name, region in zip(
                chosen.index.tolist(), chosen["name"].tolist(), chosen["region"].tolist(), strict=True
            )
        ]
        for metric in CATALOG:
            family = GaugeMetricFamily(metric.prometheus, metric.help, labels=TERRITORY_LABELS)
            column = chosen[metric.name].to_numpy(dtype=np.float64, na_value=np.nan) * metric.scale
            for key, value in zip(keys, column.tolist(), strict=True):
                if math.isfinite(value):
                    family.add_metric(key, value)
            yield family

    def _balance_families(self, values: pd.DataFrame, stats: pd.DataFrame) -> Iterator[Metric]:
        metrics = values[list(METRICS)]
        specs = (
            ("mean", "territory_balance_mean", "Org mean of the metric, in the unit of its series."),
            ("cv", "territory_balance_coefficient_of_variation", "Population std deviation over mean."),
            ("gini", "territory_balance_gini", "Gini coefficient of the metric across territories."),
            ("min_max_ratio", "territory_balance_min_max_ratio", "Smallest over largest territory."),
            ("outside_band", "territory_balance_territories_outside_band", "Territories breaching a rule."),
        )
        for stat, name, help_text in specs:
            family = GaugeMetricFamily(name, help_text, labels=["metric"])
            for metric in METRICS:
                value = number(stats.at[metric, stat])
                if value is not None:
                    scale = BY_NAME[metric].scale if stat == "mean" else 1.0
                    family.add_metric([metric], value * scale)
            yield family
        lower = GaugeMetricFamily(
            "territory_band_lower", "Lower limit of a drift rule's band.", labels=["rule", "metric"]
        )
        upper = GaugeMetricFamily(
            "territory_band_upper", "Upper limit of a drift rule's band.", labels=["rule", "metric"]
        )
        for rule in self._rules:
            if rule.metric not in metrics.columns:
                continue
            low, high = band_limits(metrics, rule)
            scale = BY_NAME[rule.metric].scale
            if low is not None:
                lower.add_metric([rule.name, rule.metric], low * scale)
            if high is not None:
                upper.add_metric([rule.name, rule.metric], high * scale)
        yield lower
        yield upper

    def _drift_families(self, rows: Sequence[Any], exported: set[str]) -> Iterator[Metric]:
        counts = {rule.name: 0 for rule in self._rules}
        for row in rows:
            counts[row.rule] = counts.get(row.rule, 0) + 1
        family = GaugeMetricFamily(
            "territory_drift_events_open", "Open drift events by rule.", labels=["rule"]
        )
        for rule_name, count in sorted(counts.items()):
            family.add_metric([rule_name], float(count))
        yield family
        labels = [*TERRITORY_LABELS, "rule", "metric"]
        first_seen = GaugeMetricFamily(
            "territory_drift_event_first_seen_timestamp_seconds",
            "First snapshot date of an open drift event (midnight UTC).",
            labels=labels,
        )
        deviation = GaugeMetricFamily(
            "territory_drift_event_deviation_ratio",
            "Value over org mean minus one, of an open drift event.",
            labels=labels,
        )
        for row in rows:
            if row.owner_id not in exported:
                continue
            key = [label(v) for v in (row.owner_id, row.name, row.region, row.rule, row.metric)]
            first_seen.add_metric(key, date_seconds(row.first_seen))
            dev = number(row.deviation)
            if dev is not None:
                deviation.add_metric(key, dev)
        yield first_seen
        yield deviation

    def _sync_families(self, conn: Connection) -> Iterator[Metric]:
        rows = conn.execute(_SYNC_TOTALS).all()
        labels = ["source", "object"]
        runs = CounterMetricFamily(
            "territory_sync_runs", "Sync runs by final status.", labels=[*labels, "status"]
        )
        errors = CounterMetricFamily("territory_sync_errors", "Sync runs that failed.", labels=labels)
        kinds = ("read", "upserted", "deleted", "quarantined")
        row_families = {
            kind: CounterMetricFamily(
                f"territory_sync_rows_{kind}", f"CRM rows {kind} by syncs.", labels=labels
            )
            for kind in kinds
        }
        last_success = GaugeMetricFamily(
            "territory_sync_last_success_timestamp_seconds",
            "When the last successful sync of the object finished.",
            labels=labels,
        )
        totals: dict[tuple[str, str], dict[str, float]] = {}
        statuses: dict[tuple[str, str], dict[str, float]] = {}
        for row in rows:
            key = (row.source, row.object)
            sums = totals.setdefault(key, dict.fromkeys(kinds, 0.0))
            for kind in kinds:
                sums[kind] += float(getattr(row, f"rows_{kind}") or 0)
            statuses.setdefault(key, dict.fromkeys(SYNC_RUN_STATUSES, 0.0))[row.status] = float(row.runs)
            if row.status == "succeeded" and row.last_finished is not None:
                last_success.add_metric(list(key), row.last_finished.timestamp())
        for key in sorted(totals):
            for kind in kinds:
                row_families[kind].add_metric(list(key), totals[key][kind])
            for status, count in statuses[key].items():
                runs.add_metric([*key, status], count)
            errors.add_metric(list(key), statuses[key]["failed"])
        last_failed = GaugeMetricFamily(
            "territory_sync_last_run_failed",
            "1 when the latest finished sync of the object failed, else 0.",
            labels=labels,
        )
        for row in conn.execute(_SYNC_LAST):
            last_failed.add_metric([row.source, row.object], 1.0 if row.status == "failed" else 0.0)
        yield runs
        yield errors
        yield from row_families.values()
        yield last_success
        yield last_failed

    def _job_families(self, conn: Connection) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "territory_job_runs", "Scheduled job runs by status.", labels=["name", "status"]
        )
        last_success = GaugeMetricFamily(
            "territory_job_last_success_timestamp_seconds",
            "When the last successful run of the job finished.",
            labels=["name"],
        )
        by_job: dict[str, dict[str, float]] = {}
        for row in conn.execute(_JOB_TOTALS):
            by_job.setdefault(row.job, dict.fromkeys(RUN_STATUSES, 0.0))[row.status] = float(row.runs)
            if row.status == "succeeded" and row.last_finished is not None:
                last_success.add_metric([row.job], row.last_finished.timestamp())
        for job in sorted(by_job):
            for status, count in by_job[job].items():
                runs.add_metric([job, status], count)
        interval = GaugeMetricFamily(
            "territory_job_interval_seconds", "How often the scheduler runs the job.", labels=["name"]
        )
        for job, seconds in sorted(self._job_intervals.items()):
            interval.add_metric([job], float(seconds))
        yield runs
        yield last_success
        yield interval

    def _proposal_families(self, conn: Connection) -> Iterator[Metric]:
        proposals = dict.fromkeys(PROPOSAL_STATES, 0.0)
        for state, count in conn.execute(_PROPOSALS):
            proposals[state] = float(count)
        family = GaugeMetricFamily("territory_proposals", "Rebalancing proposals by state.", labels=["state"])
        for state, count in proposals.items():
            family.add_metric([state], count)
        yield family
        moves = dict.fromkeys(MOVE_WRITEBACK_STATES, 0.0)
        for state, count in conn.execute(_WRITEBACKS):
            moves[state] = float(count)
        writebacks = GaugeMetricFamily(
            "territory_writeback_moves", "Account moves of proposals by write-back state.", labels=["state"]
        )
        for state, count in moves.items():
            writebacks.add_metric([state], count)
        yield writebacks


def register(
    registry: CollectorRegistry,
    engine: Engine,
    *,
    max_territories: int | None = None,
    rules: Sequence[Rule] = DEFAULT_RULES,
    job_intervals: Mapping[str, float] | None = None,
) -> TerritoryCollector:
    """Create a :class:`TerritoryCollector` and register it on ``registry`` (the service's wiring)."""
    collector = TerritoryCollector(
        engine, max_territories=max_territories, rules=rules, job_intervals=job_intervals
    )
    registry.register(collector)
    return collector
