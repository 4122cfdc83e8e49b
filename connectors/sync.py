"""The sync engine: a connector's batches into Postgres, one transaction per batch, watermark included.

Per object (owners, accounts, opportunities: parents first) the engine reads the saved cursor, asks the
connector for what changed since it (minus the lookback), and stores every batch in one transaction
(connectors/batches.py); a first full read into an empty table is one bulk load instead
(connectors/bulk_load.py). A crash at any point loses nothing: the next run resumes from the last
committed batch. docs/sync.md states the rules exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol, runtime_checkable

import pandas as pd
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from connectors.base import Connector, CrmObject, Cursor
from connectors.batches import (
    CLOCK_SKEW,
    TABLES,
    BatchState,
    ObjectSummary,
    ProgressFn,
    json_safe,
    read_batches,
    relaxed_commit,
)
from connectors.bulk_load import read_into_empty
from connectors.errors import ConnectorError, QuotaExhausted
from store.bulk import copy_csv

__all__ = [
    "DEFAULT_LOOKBACK",
    "HistorySource",
    "ObjectSummary",
    "ProgressFn",
    "SnapshotSource",
    "SyncBusyError",
    "SyncSummary",
    "run_sync",
]

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK: Final = dt.timedelta(seconds=300)

_HISTORY_COLUMNS: Final = ("account_id", "owner_id", "start_date", "end_date")


class SyncBusyError(ConnectorError):
    """Another sync of the same source holds the lock: run again once it has finished."""


@runtime_checkable
class SnapshotSource(Protocol):
    """A connector whose export is a full snapshot: ids it no longer lists are deleted in the CRM."""

    def snapshot_ids(self, obj: CrmObject) -> Iterator[Sequence[str]]:
        """Every id of ``obj`` present in the export, in chunks."""
        ...


@runtime_checkable
class HistorySource(Protocol):
    """A connector that carries ownership history (assignments.csv) to seed the assignment history."""

    def history(self) -> Iterator[pd.DataFrame]:
        """Chunks of ``account_id, owner_id, start_date, end_date`` as text (empty end = current)."""
        ...


DEFAULT_MAX_DELETE_SHARE = 0.10


@dataclass(frozen=True)
class DeleteGuard:
    """How much of an object's live rows one full export may delete (docs/sync.md, "Mass deletes")."""

    max_share: float = DEFAULT_MAX_DELETE_SHARE
    allow_mass_delete: bool = False


DEFAULT_GUARD = DeleteGuard()


class MassDeleteRefused(Exception):
    """A full export would delete more than the guard allows: nothing of that object is deleted."""

    def __init__(self, table: str, would_delete: int, live: int, guard: DeleteGuard) -> None:
        super().__init__(
            f"refused to delete {would_delete:,} of {live:,} live {table} "
            f"({would_delete / live:.0%}, over the {guard.max_share:.0%} limit); "
            "if the export is complete, rerun with --allow-mass-delete"
        )
        self.would_delete = would_delete


@dataclass(frozen=True)
class SyncSummary:
    """The result of :func:`run_sync`: one entry per object attempted, in sync order."""

    source: str
    objects: tuple[ObjectSummary, ...]
    seconds: float

    @property
    def status(self) -> str:
        """``succeeded`` when every object did; else the first other status (failed, stopped)."""
        for obj in self.objects:
            if obj.status != "succeeded":
                return obj.status
        return "succeeded"

    def total(self, name: str) -> int:
        """The sum of one ``rows_*`` counter over the objects."""
        return sum(int(getattr(o, name)) for o in self.objects)

    def one_line(self) -> str:
        """The CLI's closing line."""
        parts = [
            f"{self.source} sync {self.status}:",
            f"{self.total('rows_read'):,} read,",
            f"{self.total('rows_upserted'):,} upserted,",
            f"{self.total('rows_deleted'):,} deleted,",
            f"{self.total('rows_quarantined'):,} quarantined",
            f"in {self.seconds:.1f} s",
        ]
        errors = [f"{o.object}: {o.error}" for o in self.objects if o.error]
        return " ".join(parts) + (f" ({'; '.join(errors)})" if errors else "")

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values."""
        return {
            "source": self.source,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "objects": [asdict(o) for o in self.objects],
        }


def run_sync(
    engine: Engine,
    connector: Connector,
    *,
    objects: Sequence[CrmObject] = tuple(CrmObject),
    full: bool = False,
    progress: ProgressFn | None = None,
    now: dt.datetime,
    lookback: dt.timedelta = DEFAULT_LOOKBACK,
    roster: pd.DataFrame | None = None,
    bulk_load: bool = True,
    delete_guard: DeleteGuard = DEFAULT_GUARD,
) -> SyncSummary:
    """Sync ``objects`` of ``connector`` into the store; stops at the first object that fails or stops.

    Connector errors end that object's run (failed, or stopped on QuotaExhausted) with every committed
    batch kept; they are reported in the summary, not raised. Anything else is raised after the run
    row is marked failed. ``bulk_load`` allows the empty-table path (docs/sync.md); tests turn it off
    to compare it with the batch-by-batch one.
    """
    started = time.perf_counter()
    source = connector.source
    ordered = [o for o in CrmObject if o in set(objects)]
    results: list[ObjectSummary] = []
    with engine.connect() as lock:
        got = lock.execute(
            text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": f"territory-sync:{source}"}
        ).scalar_one()
        lock.commit()
        if not got:
            raise SyncBusyError(f"another sync of {source} is running; try again when it has finished")
        try:
            with engine.begin() as conn:
                relaxed_commit(conn)
                conn.execute(
                    text(
                        "UPDATE sync_runs SET status = 'interrupted', finished_at = now(), "
                        "error = 'the process ended before the run finished' "
                        "WHERE source = :s AND status = 'running'"
                    ),
                    {"s": source},
                )
            for obj in ordered:
                summary = _sync_object(
                    engine, connector, obj, full, progress, now, lookback, roster, bulk_load, delete_guard
                )
                results.append(summary)
                if summary.status != "succeeded":
                    break
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": f"territory-sync:{source}"})
            lock.commit()
    return SyncSummary(source, tuple(results), time.perf_counter() - started)


def _sync_object(
    engine: Engine,
    connector: Connector,
    obj: CrmObject,
    full: bool,
    progress: ProgressFn | None,
    now: dt.datetime,
    lookback: dt.timedelta,
    roster: pd.DataFrame | None,
    bulk_load: bool = True,
    delete_guard: DeleteGuard = DEFAULT_GUARD,
) -> ObjectSummary:
    """One object's run: its sync_runs row, its batches, its deletes sweep, its final status."""
    source = connector.source
    started = time.perf_counter()
    summary = ObjectSummary(object=obj.value)
    with engine.begin() as conn:
        relaxed_commit(conn)
        run_id = conn.execute(
            text('INSERT INTO sync_runs (source, object, "full") VALUES (:s, :o, :f) RETURNING id'),
            {"s": source, "o": obj.value, "f": full},
        ).scalar_one()
        saved_json = conn.execute(
            text("SELECT watermark FROM sync_state WHERE source = :s AND object = :o"),
            {"s": source, "o": obj.value},
        ).scalar()
    summary.run_id = int(run_id)
    saved = Cursor.from_json(saved_json)
    if saved is not None and saved.modified_at > now + CLOCK_SKEW:
        saved = _repair_future_cursor(engine, source, obj, saved, now)
    since = None if full or saved is None else Cursor(saved.modified_at - lookback, "")
    state = BatchState(
        source, obj, int(run_id), saved, summary, isinstance(connector, HistorySource), now, roster
    )
    extra = {"sync_run_id": run_id, "source": source, "object": obj.value}
    log.info("sync of an object started", extra={**extra, "since": since and since.to_json()})
    try:
        with engine.connect() as conn:
            loaded_empty = False
            if bulk_load and obj is not CrmObject.owners and since is None:
                loaded_empty = read_into_empty(conn, state, connector, full, progress)
            else:
                read_batches(conn, state, connector, since, full=full, progress=progress)
            # After a bulk load every stored row came from this very export: nothing to sweep.
            if isinstance(connector, SnapshotSource) and not loaded_empty:
                with conn.begin():
                    relaxed_commit(conn)
                    t0 = time.perf_counter()
                    ids = connector.snapshot_ids(obj)
                    summary.rows_deleted += _sweep_deletes(conn, state, ids, delete_guard)
                    summary.db_seconds += time.perf_counter() - t0
            if obj is CrmObject.accounts and isinstance(connector, HistorySource):
                with conn.begin():
                    relaxed_commit(conn)
                    if _history_missing(conn):
                        _seed_history(conn, state, connector.history())
                    _open_missing_history(conn, state)
        summary.status = "succeeded"
    except MassDeleteRefused as exc:
        summary.status, summary.error = "refused", str(exc)
        log.error("sync refused a mass delete", extra={**extra, "would_delete": exc.would_delete})  # noqa: TRY400
    except QuotaExhausted as exc:
        summary.status, summary.error = "stopped", str(exc)
        log.warning("sync stopped: API quota", extra={**extra, "error": str(exc)})
    except ConnectorError as exc:
        summary.status, summary.error = "failed", f"{type(exc).__name__}: {exc}"
        log.error("sync failed", extra={**extra, "error": summary.error})  # noqa: TRY400 - expected
    except BaseException as exc:
        stopped_by_user = isinstance(exc, KeyboardInterrupt | SystemExit)
        summary.status = "interrupted" if stopped_by_user else "failed"
        summary.error = f"{type(exc).__name__}: {exc}"
        summary.seconds = time.perf_counter() - started
        _finish(engine, state)
        raise
    summary.seconds = time.perf_counter() - started
    _finish(engine, state)
    log.info("sync of an object finished", extra={**extra, **asdict(summary)})
    return summary


def _repair_future_cursor(
    engine: Engine, source: str, obj: CrmObject, saved: Cursor, now: dt.datetime
) -> Cursor | None:
    """A watermark past the clock (saved by an older version from a record stamped in the future)
    would hide every later change: move it back to the newest stored change not in the future."""
    table = TABLES[obj]
    with engine.begin() as conn:
        newest = conn.execute(
            text(f"SELECT max(modified_at) FROM {table} WHERE modified_at <= :now"),  # noqa: S608
            {"now": now},
        ).scalar()
        repaired = Cursor(newest) if newest is not None else None
        conn.execute(
            text("UPDATE sync_state SET watermark = :w WHERE source = :s AND object = :o").bindparams(
                bindparam("w", type_=JSONB)
            ),
            {"w": repaired.to_json() if repaired else None, "s": source, "o": obj.value},
        )
    log.warning(
        "the saved cursor was in the future; moved back",
        extra={
            "source": source,
            "object": obj.value,
            "was": saved.to_json(),
            "now": repaired.to_json() if repaired else None,
        },
    )
    return repaired


def _finish(engine: Engine, state: BatchState) -> None:
    """Record the object's final status in sync_runs and sync_state."""
    s = state.summary
    with engine.begin() as conn:
        relaxed_commit(conn)
        conn.execute(
            text(
                "UPDATE sync_runs SET status = :st, finished_at = now(), error = :e, rows_read = :r, "
                "rows_upserted = :u, rows_deleted = :d, rows_quarantined = :q WHERE id = :id"
            ),
            {
                "st": s.status,
                "e": s.error,
                "r": s.rows_read,
                "u": s.rows_upserted,
                "d": s.rows_deleted,
                "q": s.rows_quarantined,
                "id": state.run_id,
            },
        )
        conn.execute(
            text(
                "INSERT INTO sync_state (source, object, last_run_at, last_success_at, last_status, "
                "last_error) VALUES (:s, :o, now(), CASE WHEN :st = 'succeeded' THEN now() END, :st, :e) "
                "ON CONFLICT (source, object) DO UPDATE SET last_run_at = now(), "
                "last_success_at = coalesce(EXCLUDED.last_success_at, sync_state.last_success_at), "
                "last_status = EXCLUDED.last_status, last_error = EXCLUDED.last_error"
            ),
            {"s": state.source, "o": state.obj.value, "st": s.status, "e": s.error},
        )


def _id_chunks(chunks: Iterable[Sequence[str]]) -> Iterator[bytes]:
    """Id chunks as headerless one-column CSV for COPY."""
    for chunk in chunks:
        frame = pd.DataFrame({"id": list(chunk)})
        yield frame.to_csv(header=False, index=False).encode()


def _sweep_deletes(
    conn: Connection, state: BatchState, ids: Iterable[Sequence[str]], guard: DeleteGuard
) -> int:
    """Soft-delete stored rows absent from a full snapshot's ids, and make deleted ones it lists live
    again; refuses an export with no id at all, and one that would delete more of the live rows than
    ``guard`` allows (raises, deleting nothing)."""
    conn.execute(text("CREATE TEMP TABLE present (id text) ON COMMIT DROP"))
    copy_csv(conn, "present", ["id"], _id_chunks(ids))
    count = int(conn.execute(text("SELECT count(*) FROM present")).scalar_one())
    table = TABLES[state.obj]
    if count == 0:
        log.warning(
            "the export lists no %s at all; not treating that as deleting every one",
            table,
            extra={"sync_run_id": state.run_id, "source": state.source, "object": state.obj.value},
        )
        return 0
    conn.execute(text("ANALYZE present"))
    live = "t.active" if state.obj is CrmObject.owners else "NOT t.deleted"
    absent = "NOT EXISTS (SELECT 1 FROM present p WHERE p.id = t.id)"
    counts = conn.execute(
        text(f"SELECT count(*), count(*) FILTER (WHERE {absent}) FROM {table} t WHERE {live}")  # noqa: S608
    ).one()
    total, would = int(counts[0]), int(counts[1])
    if would and not guard.allow_mass_delete and would > guard.max_share * total:
        raise MassDeleteRefused(table, would, total, guard)
    gone = "active = false" if state.obj is CrmObject.owners else "deleted = true"
    sql = f"UPDATE {table} t SET {gone}, synced_at = now() WHERE {live} AND {absent}"  # noqa: S608
    deleted = int(conn.execute(text(sql)).rowcount)
    if state.obj is not CrmObject.owners:
        # A record back in the export is live again, even when an incremental read skipped it as
        # unchanged since the cursor (its stored values are the ones it came back with).
        revive = f"UPDATE {table} t SET deleted = false, synced_at = now() WHERE t.deleted AND NOT {absent}"  # noqa: S608
        revived = int(conn.execute(text(revive)).rowcount)
        if revived:
            log.info(
                "records back in the export are live again",
                extra={"sync_run_id": state.run_id, "object": state.obj.value, "revived": revived},
            )
    conn.execute(
        text("UPDATE sync_runs SET rows_deleted = rows_deleted + :d WHERE id = :id"),
        {"d": deleted, "id": state.run_id},
    )
    return deleted


def _history_missing(conn: Connection) -> bool:
    """Whether some live account with an owner lacks a current assignment (else the seed, which only
    fills accounts without any history, has nothing to do). Uses the partial index of current rows."""
    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM accounts a WHERE NOT a.deleted AND a.owner_id IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM assignment_history h "
                "WHERE h.account_id = a.id AND h.end_date IS NULL))"
            )
        ).scalar_one()
    )


def _open_missing_history(conn: Connection, state: BatchState) -> None:
    """Give every live account with an owner and no current row one (from its last end date, else its
    modified date, else today)."""
    opened = conn.execute(
        text(
            "INSERT INTO assignment_history (account_id, owner_id, start_date, source) "
            "SELECT a.id, a.owner_id, greatest("
            "coalesce((a.modified_at AT TIME ZONE 'UTC')::date, CAST(:today AS date)), last.end_date), "
            "'sync' FROM accounts a LEFT JOIN (SELECT account_id, max(end_date) AS end_date "
            "FROM assignment_history GROUP BY account_id) last ON last.account_id = a.id "
            "WHERE a.owner_id IS NOT NULL AND NOT a.deleted AND NOT EXISTS "
            "(SELECT 1 FROM assignment_history h WHERE h.account_id = a.id AND h.end_date IS NULL)"
        ),
        {"today": state.now.date()},
    ).rowcount
    if opened:
        log.info(
            "current assignments opened",
            extra={"sync_run_id": state.run_id, "source": state.source, "opened": opened},
        )


def _seed_history(conn: Connection, state: BatchState, chunks: Iterable[pd.DataFrame]) -> None:
    """Seed the history of accounts that have none from the export's assignments.

    Rows naming an unknown account or owner, with unparseable dates, or a second current row for one
    account go to the quarantine (object ``assignments``).
    """
    conn.execute(
        text(
            "CREATE TEMP TABLE history_stage (account_id text, owner_id text, start_date date, "
            "end_date date, _pos bigint) ON COMMIT DROP"
        )
    )
    bad: list[dict[str, Any]] = []
    offset = 0

    def clean_chunks() -> Iterator[bytes]:
        nonlocal offset
        for chunk in chunks:
            frame = chunk.reset_index(drop=True)
            start = pd.to_datetime(frame["start_date"], format="%Y-%m-%d", errors="coerce")
            end_blank = frame["end_date"].isna() | (frame["end_date"].astype(str).str.strip() == "")
            end = pd.to_datetime(frame["end_date"].where(~end_blank), format="%Y-%m-%d", errors="coerce")
            reasons = pd.Series(None, index=frame.index, dtype=object)
            reasons[(frame["account_id"].fillna("") == "")] = "missing account_id"
            reasons[reasons.isna() & (frame["owner_id"].fillna("") == "")] = "missing owner_id"
            reasons[reasons.isna() & start.isna()] = "unparseable start_date"
            reasons[reasons.isna() & ~end_blank & end.isna()] = "unparseable end_date"
            reasons[reasons.isna() & end.notna() & (end < start)] = "end_date before start_date"
            for pos in frame.index[reasons.notna()]:
                row = {k: str(frame.at[pos, k]) for k in _HISTORY_COLUMNS}
                bad.append(
                    {
                        "record_id": f"{row['account_id']}:{row['start_date']}",
                        "reason": reasons[pos],
                        "raw": row,
                    }
                )
            good = frame[reasons.isna()]
            out = pd.DataFrame(
                {
                    "account_id": good["account_id"],
                    "owner_id": good["owner_id"],
                    "start_date": start[reasons.isna()].dt.strftime("%Y-%m-%d"),
                    "end_date": end[reasons.isna()].dt.strftime("%Y-%m-%d"),
                    "_pos": good.index + offset,
                }
            )
            offset += len(frame)
            yield out.to_csv(header=False, index=False).encode()

    copy_csv(
        conn, "history_stage", ["account_id", "owner_id", "start_date", "end_date", "_pos"], clean_chunks()
    )
    conn.execute(text("ANALYZE history_stage"))
    conn.execute(
        text(
            "CREATE TEMP TABLE history_bad ON COMMIT DROP AS "
            "SELECT s._pos, s.account_id, s.owner_id, s.start_date, s.end_date, "
            "a.id IS NOT NULL AS account_known, o.id IS NOT NULL AS owner_known "
            "FROM (SELECT h.*, CASE WHEN h.end_date IS NULL THEN row_number() OVER "
            "(PARTITION BY h.account_id, h.end_date IS NULL ORDER BY h._pos DESC) END AS open_rank "
            "FROM history_stage h) s "
            "LEFT JOIN accounts a ON a.id = s.account_id LEFT JOIN owners o ON o.id = s.owner_id "
            "WHERE a.id IS NULL OR o.id IS NULL OR s.open_rank > 1"
        )
    )
    conn.execute(text("DELETE FROM history_stage s USING history_bad b WHERE s._pos = b._pos"))
    refs = conn.execute(
        text(
            "SELECT account_id, owner_id, start_date, end_date, account_known, owner_known "
            "FROM history_bad ORDER BY _pos"
        )
    ).all()
    for account_id, owner_id, start, end, account_known, owner_known in refs:
        reason = (
            f"unknown account: {account_id}"
            if not account_known
            else f"unknown owner: {owner_id}"
            if not owner_known
            else "a second current assignment of the account"
        )
        raw = {
            "account_id": account_id,
            "owner_id": owner_id,
            "start_date": str(start),
            "end_date": end and str(end),
        }
        bad.append({"record_id": f"{account_id}:{start}", "reason": reason, "raw": raw})
    if bad:
        rows = {b["record_id"]: {**b, "raw": json.dumps(json_safe(b["raw"]), default=str)} for b in bad}
        conn.execute(
            text(
                "INSERT INTO quarantine (source, object, record_id, reason, raw, sync_run_id) "
                "SELECT :s, 'assignments', record_id, reason, raw::jsonb, :run FROM "
                "jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(record_id text, reason text, raw text) "
                "ON CONFLICT (source, object, record_id) WHERE resolved_at IS NULL DO UPDATE SET "
                "reason = EXCLUDED.reason, raw = EXCLUDED.raw, last_seen_at = now(), "
                "sync_run_id = EXCLUDED.sync_run_id"
            ),
            {"s": state.source, "run": state.run_id, "rows": json.dumps(list(rows.values()))},
        )
    seeded = conn.execute(
        text(
            "INSERT INTO assignment_history (account_id, owner_id, start_date, end_date, source) "
            "SELECT s.account_id, s.owner_id, s.start_date, s.end_date, 'import' FROM history_stage s "
            "LEFT JOIN (SELECT DISTINCT account_id FROM assignment_history) h "
            "ON h.account_id = s.account_id WHERE h.account_id IS NULL"
        )
    ).rowcount
    if seeded:  # a first import just filled the table: plan the next statements on real statistics
        conn.execute(text("ANALYZE assignment_history"))
    log.info(
        "assignment history seeded",
        extra={
            "sync_run_id": state.run_id,
            "source": state.source,
            "seeded": seeded,
            "quarantined": len(bad),
        },
    )
