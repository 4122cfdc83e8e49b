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
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from connectors.ahead import ahead
from connectors.base import Connector, CrmObject, Cursor
from connectors.batches import (
    CLOCK_SKEW,
    BatchState,
    ObjectSummary,
    ProgressFn,
    json_safe,
    read_batches,
)
from connectors.bulk_load import read_into_empty
from connectors.errors import ConnectorError, QuotaExhausted
from connectors.records import check_history
from store import history, quarantine, sync_runs, synced
from store.bulk import csv_bytes
from store.errors import database_reason
from store.history import HISTORY_COLUMNS
from store.sync_runs import relaxed_commit

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

    def history_version(self) -> str | None:
        """A fingerprint of that history (None: none carried); the same fingerprint, the same rows."""
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
            f"{self.total('rows_quarantined') + self.total('history_quarantined'):,} quarantined",
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
        got = sync_runs.try_lock(lock, source)
        lock.commit()
        if not got:
            raise SyncBusyError(f"another sync of {source} is running; try again when it has finished")
        try:
            with engine.begin() as conn:
                relaxed_commit(conn)
                sync_runs.interrupt_running(conn, source)
            for obj in ordered:
                summary = _sync_object(
                    engine, connector, obj, full, progress, now, lookback, roster, bulk_load, delete_guard
                )
                results.append(summary)
                if summary.status != "succeeded":
                    break
        finally:
            sync_runs.unlock(lock, source)
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
        run_id = sync_runs.start_run(conn, source, obj.value, full=full)
        saved_json = sync_runs.watermark(conn, source, obj.value)
    summary.run_id = run_id
    saved = Cursor.from_json(saved_json)
    if saved is not None and saved.modified_at > now + CLOCK_SKEW:
        saved = _repair_future_cursor(engine, source, obj, saved, now)
    since = None if full or saved is None else Cursor(saved.modified_at - lookback, "")
    state = BatchState(source, obj, run_id, saved, summary, isinstance(connector, HistorySource), now, roster)
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
                    if _history_wanted(conn, state, connector, full):
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
    except DBAPIError as exc:  # the database lost mid-sync, a statement timed out: committed batches stay
        summary.status, summary.error = "failed", f"database error: {database_reason(exc)}"
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
    with engine.begin() as conn:
        newest = sync_runs.newest_change(conn, obj.value, now)
        repaired = Cursor(newest) if newest is not None else None
        sync_runs.replace_watermark(conn, source, obj.value, repaired.to_json() if repaired else None)
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
        sync_runs.finish_run(
            conn,
            state.run_id,
            status=s.status,
            error=s.error,
            read=s.rows_read,
            upserted=s.rows_upserted,
            deleted=s.rows_deleted,
            quarantined=s.rows_quarantined,
        )
        sync_runs.record_outcome(conn, state.source, state.obj.value, status=s.status, error=s.error)


def _id_chunks(chunks: Iterable[Sequence[str]]) -> Iterator[bytes]:
    """Id chunks as headerless one-column CSV for COPY (Arrow's writer: a tenth of pandas' time)."""
    for chunk in chunks:
        yield csv_bytes(pd.DataFrame({"id": list(chunk)}))


def _sweep_deletes(
    conn: Connection, state: BatchState, ids: Iterable[Sequence[str]], guard: DeleteGuard
) -> int:
    """Soft-delete the source's stored rows absent from a full snapshot's ids, and make its deleted ones
    the snapshot lists live again; refuses an export with no id at all, and one that would delete more
    of the source's live rows than ``guard`` allows (raises, deleting nothing)."""
    table = state.obj.value
    if synced.stage_present(conn, _id_chunks(ids)) == 0:
        log.warning(
            "the export lists no %s at all; not treating that as deleting every one",
            table,
            extra={"sync_run_id": state.run_id, "source": state.source, "object": state.obj.value},
        )
        return 0
    total, would = synced.take_absent(conn, table, state.source)
    if would and not guard.allow_mass_delete and would > guard.max_share * total:
        raise MassDeleteRefused(table, would, total, guard)
    deleted = synced.delete_absent(conn, table, state.source)
    if state.obj is not CrmObject.owners:
        # A record back in the export is live again, even when an incremental read skipped it as
        # unchanged since the cursor (its stored values are the ones it came back with).
        revived = synced.revive_present(conn, table, state.source)
        if revived:
            log.info(
                "records back in the export are live again",
                extra={"sync_run_id": state.run_id, "object": state.obj.value, "revived": revived},
            )
    sync_runs.add_counts(conn, state.run_id, deleted=deleted)
    return deleted


def _open_missing_history(conn: Connection, state: BatchState) -> None:
    """Give every live account with an owner and no current row one (store/history.py says from when)."""
    opened = history.open_missing(conn, state.now.date())
    if opened:
        log.info(
            "current assignments opened",
            extra={"sync_run_id": state.run_id, "source": state.source, "opened": opened},
        )


HISTORY_OBJECT: Final = "assignments"
"""The object of the history's quarantine rows and of the fingerprint of the history last read."""


def _history_wanted(conn: Connection, state: BatchState, connector: HistorySource, full: bool) -> bool:
    """Whether to read the export's history: while an account lacks a current row, or while rows of it
    wait in the quarantine and either the run is full or the history changed since it was last read
    (an unchanged file would only quarantine the same rows again). Saves the fingerprint it read."""
    version = connector.history_version()
    saved = sync_runs.watermark(conn, state.source, HISTORY_OBJECT)
    changed = saved is None or saved.get("version") != version
    wanted = history.missing(conn) or (
        quarantine.has_open(conn, state.source, HISTORY_OBJECT) and (full or changed)
    )
    if wanted and changed:
        sync_runs.save_watermark(conn, state.source, HISTORY_OBJECT, {"version": version})
    return wanted


def _seed_history(conn: Connection, state: BatchState, chunks: Iterable[pd.DataFrame]) -> None:
    """Seed the history from the export's assignments (store/history.py says which rows go in).

    A row that fails a check (its own fields, or against the other rows and the store) goes to the
    quarantine (object ``assignments``); an account all of whose rows pass has its quarantined rows
    resolved.
    """
    bad: list[tuple[str, str, dict[str, Any]]] = []  # record id, reason, raw row
    # The export is read and checked in a thread while the COPY takes the chunks before; ``bad`` is
    # complete once the block has joined it.
    with ahead(_checked_history(chunks, bad), lambda text: None) as checked:
        history.stage_history(conn, (text for text, _ in checked))
    failed, duplicates = history.take_bad_history(conn)
    for account_id, owner_id, start, end, reason in failed:
        raw = {
            "account_id": account_id,
            "owner_id": owner_id,
            "start_date": str(start),
            "end_date": end and str(end),
        }
        bad.append((f"{account_id}:{start}", reason, raw))
    if quarantine.has_open(conn, state.source, "assignments"):  # accounts whose history is clean now
        clean = history.clean_accounts({str(raw["account_id"]) for _, _, raw in bad})
        quarantine.resolve_by_field(conn, state.source, "assignments", "account_id", clean)
    rows = [(rid, why, json.dumps(json_safe(raw), default=str)) for rid, why, raw in bad]
    quarantine.put(conn, source=state.source, obj="assignments", run_id=state.run_id, rejected=rows)
    state.summary.history_quarantined += len(bad)
    seeded = history.seed_staged(conn)
    log.info(
        "assignment history seeded",
        extra={
            "sync_run_id": state.run_id,
            "source": state.source,
            "seeded": seeded,
            "duplicates": duplicates,
            "quarantined": len(bad),
        },
    )


def _checked_history(
    chunks: Iterable[pd.DataFrame], bad: list[tuple[str, str, dict[str, Any]]]
) -> Iterator[bytes]:
    """The export's assignment rows checked (connectors/records.py), as COPY text of the good ones and
    their position in the export; the bad ones are appended to ``bad``."""
    offset = 0
    for chunk in chunks:
        frame = chunk.reset_index(drop=True)
        dates, reasons = check_history(frame)
        for pos in frame.index[reasons.notna()]:
            row = {k: str(frame.at[pos, k]) for k in HISTORY_COLUMNS}
            bad.append((f"{row['account_id']}:{row['start_date']}", str(reasons[pos]), row))
        good = reasons.isna()
        out = pd.DataFrame(
            {
                "account_id": frame["account_id"][good],
                "owner_id": frame["owner_id"][good],
                "start_date": dates["start_date"][good],
                "end_date": dates["end_date"][good],
                "_pos": frame.index[good] + offset,
            }
        )
        offset += len(frame)
        yield csv_bytes(out)
