"""The sync engine: a connector's batches into Postgres, one transaction per batch, watermark included.

Per object (owners, accounts, opportunities: parents first) the engine reads the saved cursor, asks the
connector for what changed since it (minus the lookback), and stores every batch in one transaction:
COPY into a staging table, quarantine of bad rows, set-based upsert that never lets an older copy
overwrite a newer one, soft deletes, owner changes appended to the assignment history, the batch's
cursor. A crash at any point loses nothing: the next run resumes from the last committed batch.
docs/sync.md states the rules exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.sql.elements import TextClause

from connectors.base import CANONICAL_COLUMNS, Batch, Connector, CrmObject, Cursor
from connectors.errors import ConnectorError, QuotaExhausted
from connectors.records import POSITION, Checked, check_records, records_frame
from connectors.roster import apply_roster
from store.bulk import copy_csv

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK: Final = dt.timedelta(seconds=300)
ProgressFn = Callable[[CrmObject, int], None]
"""Called after each stored batch with the object and the rows read from it so far."""

_TABLES: Final = {
    CrmObject.owners: "owners",
    CrmObject.accounts: "accounts",
    CrmObject.opportunities: "opportunities",
}
_HISTORY_COLUMNS: Final = ("account_id", "owner_id", "start_date", "end_date")
_FIRST_ASSIGNMENT: Final = ("account_id", "owner_id", "start_date", "source")


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


@dataclass
class ObjectSummary:
    """What one object's sync did; ``rows_read == rows_upserted + rows_quarantined + rows_skipped``."""

    object: str
    status: str = "running"
    rows_read: int = 0
    rows_upserted: int = 0
    rows_deleted: int = 0
    rows_quarantined: int = 0
    rows_skipped: int = 0  # older than or identical to the stored copy, or an older duplicate in a batch
    seconds: float = 0.0
    db_seconds: float = 0.0  # time spent in the database (COPY, upsert, history, cursor)
    error: str | None = None
    run_id: int | None = None


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


@dataclass
class _State:
    """Per-object bookkeeping carried across batches."""

    source: str
    obj: CrmObject
    run_id: int
    saved: Cursor | None
    summary: ObjectSummary
    history_seeded: bool
    now: dt.datetime
    roster: pd.DataFrame | None
    bulk: _BulkLoad | None = None  # inside an empty-table bulk load: batches share its one transaction


@dataclass
class _Counts:
    """What one batch (or one deferred part of a bulk load) did."""

    read: int = 0
    upserted: int = 0
    skipped: int = 0
    quarantined: int = 0
    deleted: int = 0

    def add_to(self, summary: ObjectSummary) -> None:
        summary.rows_read += self.read
        summary.rows_upserted += self.upserted
        summary.rows_skipped += self.skipped
        summary.rows_quarantined += self.quarantined
        summary.rows_deleted += self.deleted


@dataclass
class _BulkLoad:
    """What an empty-table bulk load knows in memory so that new rows can be COPYed straight in.

    ``owners`` and ``accounts`` are every stored id (inactive and deleted ones too, as the SQL checks
    count them), read once at the start under the load's locks; ``loaded`` the ids this load has put
    in the table or deferred, so that a later copy of one of them is deferred too (in order).
    """

    owners: set[str]
    accounts: set[str] | None  # opportunities only
    loaded: set[str] = field(default_factory=set)
    open_quarantine: bool = False  # some quarantine row of this source and object is unresolved
    batches: int = 0  # batches stored so far: the order of the deferred parts
    deferring: bool = False  # the deferred tables exist


@dataclass
class _Direct:
    """A batch's rows for the direct COPY: ids new to the load, references checked in memory."""

    ids: list[str]
    rows: bytes  # COPY text of the canonical columns
    history: bytes  # COPY text of the accounts' first assignment rows (empty for other objects)
    rejected: list[tuple[Any, str, int]]  # unknown owner or account: (record id, reason, position)
    referenced: pd.DataFrame  # every clean row whose references are known (new and repeated ids)
    repeated: pd.DataFrame  # the clean rows of ids the load already holds


@dataclass
class _Stripped:
    """What an empty-table bulk load dropped and must put back before it commits."""

    tables: list[str]
    primary_keys: list[tuple[str, str, str]] = field(default_factory=list)  # table, name, definition
    indexes: list[str] = field(default_factory=list)  # CREATE INDEX statements
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)  # table, name, definition


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
                _relaxed_commit(conn)
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
                    engine, connector, obj, full, progress, now, lookback, roster, bulk_load
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
) -> ObjectSummary:
    """One object's run: its sync_runs row, its batches, its deletes sweep, its final status."""
    source = connector.source
    started = time.perf_counter()
    summary = ObjectSummary(object=obj.value)
    with engine.begin() as conn:
        _relaxed_commit(conn)
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
    since = None if full or saved is None else Cursor(saved.modified_at - lookback, "")
    state = _State(
        source, obj, int(run_id), saved, summary, isinstance(connector, HistorySource), now, roster
    )
    extra = {"sync_run_id": run_id, "source": source, "object": obj.value}
    log.info("sync of an object started", extra={**extra, "since": since and since.to_json()})
    try:
        with engine.connect() as conn:
            if bulk_load and obj is not CrmObject.owners and since is None:
                _read_into_empty(conn, state, connector, full, progress)
            else:
                for batch in connector.read(obj, since, full=full):
                    _store_batch(conn, state, batch)
                    if progress is not None:
                        progress(obj, summary.rows_read)
            if isinstance(connector, SnapshotSource):
                with conn.begin():
                    _relaxed_commit(conn)
                    t0 = time.perf_counter()
                    summary.rows_deleted += _sweep_deletes(conn, state, connector.snapshot_ids(obj))
                    summary.db_seconds += time.perf_counter() - t0
            if obj is CrmObject.accounts and isinstance(connector, HistorySource):
                with conn.begin():
                    _relaxed_commit(conn)
                    if _history_missing(conn):
                        _seed_history(conn, state, connector.history())
                    _open_missing_history(conn, state)
        summary.status = "succeeded"
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


def _relaxed_commit(conn: Connection) -> None:
    """Commit without waiting for the WAL flush: atomicity is kept (rows and watermark together), and a
    database crash can only lose the last few batches with their watermark, which the next run re-reads."""
    conn.execute(text("SET LOCAL synchronous_commit = off"))


def _finish(engine: Engine, state: _State) -> None:
    """Record the object's final status in sync_runs and sync_state."""
    s = state.summary
    with engine.begin() as conn:
        _relaxed_commit(conn)
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


# --- one batch ---------------------------------------------------------------------------------------


def _store_batch(conn: Connection, state: _State, batch: Batch) -> None:
    """Everything one batch changes, in one transaction: rows, quarantine, deletes, history, cursor."""
    obj = state.obj
    frame = records_frame(obj, batch.records)
    if obj is CrmObject.owners and state.roster is not None:
        frame = apply_roster(frame, state.roster)
    checked = check_records(obj, frame)
    rejected = [
        (rid, reason, pos) for pos, rid, reason in checked.rejected.itertuples(index=False, name=None)
    ]
    if state.bulk is not None:
        _store_bulk_batch(conn, state, state.bulk, batch, checked, rejected)
        return
    # Rows to COPY text is conversion, like the checks: it happens before the database phase is timed.
    staged = (
        _csv_bytes(checked.clean[[*CANONICAL_COLUMNS[obj], POSITION]]) if not checked.clean.empty else b""
    )
    t0 = time.perf_counter()
    with conn.begin():
        _relaxed_commit(conn)
        upserted, skipped, late_rejects = _upsert(conn, state, checked, staged)
        rejected += late_rejects
        _quarantine(conn, state, [(rid, why, _raw_json(batch, pos)) for rid, why, pos in rejected])
        if upserted or skipped:
            _resolve_staged(conn, state)
        counts = _Counts(
            read=len(batch.records),
            upserted=upserted,
            skipped=skipped + checked.duplicates,
            quarantined=len(rejected),
            deleted=_delete(conn, obj, batch.deleted_ids),
        )
        new_cursor = _close_batch(conn, state, batch, counts)
    # Only once committed does the batch count.
    if new_cursor is not None:
        state.saved = new_cursor
    state.summary.db_seconds += time.perf_counter() - t0
    counts.add_to(state.summary)


def _resolve_staged(conn: Connection, state: _State) -> None:
    """Mark resolved the open quarantine rows of the ids in the stage, stored cleanly now."""
    conn.execute(
        text(
            "UPDATE quarantine q SET resolved_at = now() FROM stage s WHERE q.source = :s "
            "AND q.object = :o AND q.resolved_at IS NULL AND q.record_id = s.id"
        ),
        {"s": state.source, "o": state.obj.value},
    )


def _close_batch(conn: Connection, state: _State, batch: Batch, counts: _Counts) -> Cursor | None:
    """Save the batch's cursor when it is ahead of the saved one, and add its counts to its run's row;
    returns the cursor saved, if any (it counts as saved once the transaction commits)."""
    new_cursor = batch.cursor if batch.cursor is not None else None
    if new_cursor is not None and state.saved is not None and not new_cursor > state.saved:
        new_cursor = None
    if new_cursor is not None:
        conn.execute(
            text(
                "INSERT INTO sync_state (source, object, watermark, last_run_at) "
                "VALUES (:s, :o, :w, now()) ON CONFLICT (source, object) "
                "DO UPDATE SET watermark = EXCLUDED.watermark, last_run_at = now()"
            ).bindparams(bindparam("w", type_=JSONB)),
            {"s": state.source, "o": state.obj.value, "w": new_cursor.to_json()},
        )
    _count_in_run(conn, state, counts)
    return new_cursor


def _count_in_run(conn: Connection, state: _State, counts: _Counts) -> None:
    conn.execute(
        text(
            "UPDATE sync_runs SET rows_read = rows_read + :r, rows_upserted = rows_upserted + :u, "
            "rows_deleted = rows_deleted + :d, rows_quarantined = rows_quarantined + :q WHERE id = :id"
        ),
        {
            "r": counts.read,
            "u": counts.upserted,
            "d": counts.deleted,
            "q": counts.quarantined,
            "id": state.run_id,
        },
    )


# --- the empty-table bulk load --------------------------------------------------------------------


def _read_into_empty(
    conn: Connection, state: _State, connector: Connector, full: bool, progress: ProgressFn | None
) -> None:
    """A first read into an empty table, as one transaction without the per-row index and FK costs.

    The table's indexes (its primary key too) and foreign keys, incoming and outgoing (and those of
    ``assignment_history`` for accounts), are dropped. Each batch's ids new to the load are COPYed
    straight into the table, their references checked in memory (:func:`_store_bulk_batch`); a later
    copy of an id already loaded waits in a deferred table. Then the keys and indexes are rebuilt (one
    sort each), the foreign keys re-added (one validating join each), the deferred copies applied
    through the usual upsert, in their order, and the load commits. A crash rolls everything back to
    the empty table; a connector error keeps what was read, like the batch-by-batch path. A table that
    holds rows takes the batch-by-batch path.
    """
    obj, summary = state.obj, state.summary
    tables = [_TABLES[obj], *(["assignment_history"] if obj is CrmObject.accounts else [])]
    t0 = time.perf_counter()
    trans = conn.begin()
    committed = False
    try:
        _relaxed_commit(conn)
        stripped = _strip(conn, tables) if _is_empty(conn, tables[0]) else None
        # Re-checked under the ACCESS EXCLUSIVE lock the drops took: another source may have written.
        if stripped is None or not _is_empty(conn, tables[0]):
            trans.rollback()
            summary.db_seconds += time.perf_counter() - t0
            for batch in connector.read(obj, None, full=full):
                _store_batch(conn, state, batch)
                if progress is not None:
                    progress(obj, summary.rows_read)
            return
        log.info(
            "bulk load into an empty table",
            extra={"sync_run_id": state.run_id, "source": state.source, "tables": tables},
        )
        state.bulk = bulk = _bulk_load(conn, state)
        summary.db_seconds += time.perf_counter() - t0
        try:
            for batch in connector.read(obj, None, full=full):
                _store_batch(conn, state, batch)
                if progress is not None:
                    progress(obj, summary.rows_read)
        except ConnectorError:
            _complete(conn, state, bulk, stripped)
            trans.commit()
            committed = True
            raise
        _complete(conn, state, bulk, stripped)
        trans.commit()
        committed = True
    except BaseException:
        if not committed:
            if trans.is_active:
                trans.rollback()
            # Nothing of the load is stored: the counts must not say otherwise.
            summary.rows_read = summary.rows_upserted = summary.rows_quarantined = 0
            summary.rows_skipped = summary.rows_deleted = 0
        raise
    finally:
        state.bulk = None


def _bulk_load(conn: Connection, state: _State) -> _BulkLoad:
    """The in-memory side of a bulk load: the ids its rows may reference, read under its locks."""

    def ids(table: str) -> set[str]:  # one array: several times faster than a row per id
        sql = f"SELECT coalesce(array_agg(id), '{{}}') FROM {table}"  # noqa: S608 - fixed names
        return set(conn.execute(text(sql)).scalar_one())

    open_quarantine = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM quarantine WHERE source = :s AND object = :o "
            "AND resolved_at IS NULL)"
        ),
        {"s": state.source, "o": state.obj.value},
    ).scalar_one()
    return _BulkLoad(
        owners=ids("owners"),
        accounts=ids("accounts") if state.obj is CrmObject.opportunities else None,
        open_quarantine=bool(open_quarantine),
    )


def _is_empty(conn: Connection, table: str) -> bool:
    """Whether ``table`` (a fixed name) holds no row at all, deleted ones included."""
    sql = f"SELECT NOT EXISTS (SELECT 1 FROM {table})"  # noqa: S608 - a fixed name
    return bool(conn.execute(text(sql)).scalar_one())


def _strip(conn: Connection, tables: Sequence[str]) -> _Stripped:
    """Drop the indexes, primary keys and foreign keys (incoming and outgoing) of ``tables``, remembering
    how to recreate them. NOT NULL and CHECK constraints stay and judge every row; keys and unique
    indexes judge them all when they are rebuilt."""
    stripped = _Stripped(list(tables))
    rels = {"t": list(tables)}
    in_tables = "IN (SELECT CAST(unnest(CAST(:t AS text[])) AS regclass))"

    def constraints(where: str) -> list[tuple[str, str, str]]:
        sql = (
            "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid) "  # noqa: S608
            f"FROM pg_constraint WHERE {where} ORDER BY 1, 2"
        )
        return [(str(t), str(n), str(d)) for t, n, d in conn.execute(text(sql), rels).all()]

    stripped.foreign_keys = constraints(f"contype = 'f' AND (conrelid {in_tables} OR confrelid {in_tables})")
    stripped.primary_keys = constraints(f"contype = 'p' AND conrelid {in_tables}")
    indexes = conn.execute(
        text(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i "  # noqa: S608
            "WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c "
            f"WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) AND indrelid {in_tables} "
            "ORDER BY 1"
        ),
        rels,
    ).all()
    stripped.indexes = [str(d) for _, d in indexes]
    for table, name, _ in [*stripped.foreign_keys, *stripped.primary_keys]:
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
    for name, _ in indexes:
        conn.execute(text(f"DROP INDEX {name}"))
    return stripped


def _complete(conn: Connection, state: _State, bulk: _BulkLoad, stripped: _Stripped) -> None:
    """Recreate what :func:`_strip` dropped, then apply the deferred copies, in the load's transaction.

    Statistics are autovacuum's: it analyses a table once a tenth of it has changed, as after any
    large write.
    """
    t0 = time.perf_counter()
    for table, name, definition in stripped.primary_keys:
        conn.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"))
    for ddl in stripped.indexes:
        conn.execute(text(ddl))
    for table, name, definition in stripped.foreign_keys:
        conn.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"))
    state.summary.db_seconds += time.perf_counter() - t0
    if bulk.deferring:
        _apply_deferred(conn, state)


def _store_bulk_batch(
    conn: Connection,
    state: _State,
    bulk: _BulkLoad,
    batch: Batch,
    checked: Checked,
    rejected: list[tuple[Any, str, int]],
) -> None:
    """One batch of a bulk load, inside the load's transaction: its new ids COPYed straight in (with
    the accounts' first assignments), its repeated ids and deletes of loaded ids deferred, its bad
    records quarantined, its cursor and counts recorded."""
    # The in-memory checks and the COPY text are conversion: they happen before the timing starts.
    direct = _split_direct(state, bulk, checked)
    rejected += direct.rejected
    seq, bulk.batches = bulk.batches, bulk.batches + 1
    t0 = time.perf_counter()
    counts = _Counts(read=len(batch.records), skipped=checked.duplicates, quarantined=len(rejected))
    deferred = direct.repeated
    if direct.ids:
        if _copy_direct(conn, state, direct):
            counts.upserted = len(direct.ids)
            if bulk.open_quarantine:  # a clean copy of a quarantined record resolves its open row
                conn.execute(
                    text(
                        "UPDATE quarantine SET resolved_at = now() WHERE source = :s AND object = :o "
                        "AND resolved_at IS NULL AND record_id = ANY(:ids)"
                    ),
                    {"s": state.source, "o": state.obj.value, "ids": direct.ids},
                )
        else:  # the database refused a row: the whole batch waits for the upsert, which finds it
            deferred = direct.referenced
        bulk.loaded.update(direct.ids)
    # A delete of an id the load does not hold has nothing to change: the table was empty.
    deletes = [i for i in batch.deleted_ids if i in bulk.loaded]
    if not deferred.empty or deletes:
        _defer(conn, state, bulk, seq, batch, deferred, deletes)
    _quarantine(conn, state, [(rid, why, _raw_json(batch, pos)) for rid, why, pos in rejected])
    new_cursor = _close_batch(conn, state, batch, counts)
    if new_cursor is not None:
        state.saved = new_cursor  # committed with the load, or rolled back with the counts
    state.summary.db_seconds += time.perf_counter() - t0
    counts.add_to(state.summary)


def _split_direct(state: _State, bulk: _BulkLoad, checked: Checked) -> _Direct:
    """Check a bulk-loaded batch's references in memory and split off the ids new to the load.

    The reasons and their order are those of the SQL checks in :func:`_upsert`. The rest are ids the
    load already holds: a record modified while the CRM was paged through, a CSV that lists an id twice.
    """
    obj, clean = state.obj, checked.clean
    rejected: list[tuple[Any, str, int]] = []
    bad = np.zeros(len(clean), dtype=bool)
    rids, positions = clean["id"].to_numpy(dtype=object), clean[POSITION].to_numpy(dtype=np.int64)
    if obj is not CrmObject.owners:
        owner = clean["owner_id"].to_numpy(dtype=object)
        unknown = np.fromiter((o is not None and o not in bulk.owners for o in owner), bool, len(owner))
        rejected += [
            (rids[i], f"unknown owner: {owner[i]}", int(positions[i])) for i in np.flatnonzero(unknown)
        ]
        bad |= unknown
    if bulk.accounts is not None:
        account = clean["account_id"].to_numpy(dtype=object)
        unknown = ~bad & np.fromiter((a not in bulk.accounts for a in account), bool, len(account))
        rejected += [
            (rids[i], f"unknown account: {account[i]}", int(positions[i])) for i in np.flatnonzero(unknown)
        ]
        bad |= unknown
    rejected.sort(key=lambda r: r[2])
    ok = clean[~bad]
    new = np.fromiter((i not in bulk.loaded for i in ok["id"]), bool, len(ok))
    fresh = ok[new]
    history = b""
    if obj is CrmObject.accounts and not state.history_seeded:
        owned = fresh[fresh["owner_id"].notna()]
        # The first assignment starts on the account's modification day (UTC), as _upsert's does.
        start = owned["modified_at"].str[:10].fillna(state.now.date().isoformat())
        history = _csv_bytes(
            pd.DataFrame(
                {"account_id": owned["id"], "owner_id": owned["owner_id"], "start_date": start}
            ).assign(source="sync")
        )
    return _Direct(
        ids=fresh["id"].tolist(),
        rows=_csv_bytes(fresh[list(CANONICAL_COLUMNS[obj])]),
        history=history,
        rejected=rejected,
        referenced=ok,
        repeated=ok[~new],
    )


def _copy_direct(conn: Connection, state: _State, direct: _Direct) -> bool:
    """COPY a batch's new rows (and accounts' first assignments) straight into the tables, in a
    savepoint; False when the database refused one of them (nothing of the batch is then stored)."""
    table = _TABLES[state.obj]
    try:
        with conn.begin_nested():
            copy_csv(conn, table, CANONICAL_COLUMNS[state.obj], [direct.rows])
            if direct.history:
                copy_csv(conn, "assignment_history", _FIRST_ASSIGNMENT, [direct.history])
    except (psycopg.IntegrityError, psycopg.DataError):  # COPY runs on the driver's own cursor
        log.warning("a batch broke a constraint; deferring it to the upsert", extra={"table": table})
        return False
    return True


def _defer(
    conn: Connection,
    state: _State,
    bulk: _BulkLoad,
    seq: int,
    batch: Batch,
    rows: pd.DataFrame,
    deletes: Sequence[str],
) -> None:
    """Keep a batch's rows and deletes for after the rebuild (they need the primary key), with the raw
    records that a late rejection quarantines. Plain tables: no constraint refuses them here."""
    columns = list(CANONICAL_COLUMNS[state.obj])
    if not bulk.deferring:
        conn.execute(
            text(
                f"CREATE TEMP TABLE deferred ON COMMIT DROP AS SELECT {', '.join(columns)}, "  # noqa: S608
                f"0 AS _pos, 0 AS _seq, ''::text AS _raw FROM {_TABLES[state.obj]} WITH NO DATA"
            )
        )
        conn.execute(text("CREATE TEMP TABLE deferred_deletes (_seq integer, id text) ON COMMIT DROP"))
        bulk.deferring = True
    if not rows.empty:
        frame = rows[[*columns, POSITION]].assign(
            _seq=seq, _raw=[_raw_json(batch, int(p)) for p in rows[POSITION]]
        )
        copy_csv(conn, "deferred", [*columns, POSITION, "_seq", "_raw"], [_csv_bytes(frame)])
    if deletes:
        conn.execute(
            text("INSERT INTO deferred_deletes SELECT :seq, unnest(CAST(:ids AS text[]))"),
            {"seq": seq, "ids": list(deletes)},
        )


def _apply_deferred(conn: Connection, state: _State) -> None:
    """Apply a bulk load's deferred copies and deletes, batch by batch in their order, through the
    usual upsert: newest copy wins, owner changes reach the history, refused rows are quarantined."""
    t0 = time.perf_counter()
    columns = ", ".join(CANONICAL_COLUMNS[state.obj])
    conn.execute(text("CREATE INDEX ON deferred (_seq)"))
    seqs = conn.execute(
        text("SELECT _seq FROM deferred UNION SELECT _seq FROM deferred_deletes ORDER BY 1")
    ).scalars()
    for seq in list(seqs):
        conn.execute(
            text(
                f"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {columns}, _pos "  # noqa: S608
                "FROM deferred WHERE _seq = :seq"
            ),
            {"seq": seq},
        )
        upserted, skipped, late = _upsert_stage(conn, state)
        if upserted or skipped:
            _resolve_staged(conn, state)
        raws: dict[int, str] = dict(
            conn.execute(
                text("SELECT _pos, _raw FROM deferred WHERE _seq = :seq AND _pos = ANY(:p)"),
                {"seq": seq, "p": [pos for _, _, pos in late]},
            ).all()
        )
        _quarantine(conn, state, [(rid, why, raws[pos]) for rid, why, pos in late])
        deletes = conn.execute(
            text("SELECT id FROM deferred_deletes WHERE _seq = :seq"), {"seq": seq}
        ).scalars()
        counts = _Counts(
            upserted=upserted,
            skipped=skipped,
            quarantined=len(late),
            deleted=_delete(conn, state.obj, list(deletes)),
        )
        _count_in_run(conn, state, counts)
        counts.add_to(state.summary)
        conn.execute(text("DROP TABLE IF EXISTS stage, owner_change"))
    state.summary.db_seconds += time.perf_counter() - t0


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    """Headerless CSV for COPY of a frame of text (None = NULL, never an empty string).

    A column is quoted only when one of its values holds a comma, quote or line break (checked once
    over the joined column, at C speed); then rows are joined with ``str.join``. About three times
    faster than ``DataFrame.to_csv`` on object columns.
    """
    if frame.empty:
        return b""
    cells: list[list[str]] = []
    for column in frame.columns:
        arr = frame[column].to_numpy(dtype=object)
        present = ~pd.isna(arr)
        values = _to_text(arr[present]) if present.any() else np.array([], dtype=object)
        joined = "".join(values.tolist())
        if any(c in joined for c in ',"\n\r'):
            values = '"' + _escape(values) + '"'
        cell = np.full(len(arr), "", dtype=object)
        cell[present] = values
        cells.append(cell.tolist())
    return ("\n".join(map(",".join, zip(*cells, strict=True))) + "\n").encode()


_to_text = np.frompyfunc(str, 1, 1)
_escape = np.frompyfunc(lambda v: v.replace('"', '""'), 1, 1)


_STAGE_DDL: Final = "CREATE TEMP TABLE stage (LIKE {table} INCLUDING DEFAULTS, _pos integer) ON COMMIT DROP"


def _upsert(
    conn: Connection, state: _State, checked: Checked, staged_csv: bytes
) -> tuple[int, int, list[tuple[Any, str, int]]]:
    """Stage the clean rows, reject bad references, record owner changes, upsert.

    Returns (rows upserted, rows skipped as older than the stored copy, late rejections as
    (record id, reason, position)).
    """
    if checked.clean.empty:
        return 0, 0, []
    conn.execute(text(_STAGE_DDL.format(table=_TABLES[state.obj])))
    copy_csv(conn, "stage", [*CANONICAL_COLUMNS[state.obj], POSITION], [staged_csv])
    return _upsert_stage(conn, state)


def _upsert_stage(conn: Connection, state: _State) -> tuple[int, int, list[tuple[Any, str, int]]]:
    """:func:`_upsert` from the rows in the ``stage`` table."""
    obj = state.obj
    table = _TABLES[obj]
    columns = list(CANONICAL_COLUMNS[obj])
    rejects: list[tuple[Any, str, int]] = []
    if obj is not CrmObject.owners:
        rows = conn.execute(
            text(
                "DELETE FROM stage s WHERE s.owner_id IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM owners o WHERE o.id = s.owner_id) RETURNING s.id, s.owner_id, s._pos"
            )
        ).all()
        rejects += [(rid, f"unknown owner: {owner}", pos) for rid, owner, pos in rows]
    if obj is CrmObject.opportunities:
        rows = conn.execute(
            text(
                "DELETE FROM stage s WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = s.account_id) "
                "RETURNING s.id, s.account_id, s._pos"
            )
        ).all()
        rejects += [(rid, f"unknown account: {account}", pos) for rid, account, pos in rows]
    if obj is CrmObject.accounts:
        # Compare the staged owner with the stored one before the upsert overwrites it.
        conn.execute(
            text(
                "CREATE TEMP TABLE owner_change ON COMMIT DROP AS "
                "SELECT s.id, s.owner_id, "
                "greatest(coalesce((s.modified_at AT TIME ZONE 'UTC')::date, CAST(:today AS date)), "
                "h.start_date) AS day "
                "FROM stage s LEFT JOIN accounts t ON t.id = s.id "
                "LEFT JOIN assignment_history h ON h.account_id = s.id AND h.end_date IS NULL "
                "WHERE (t.id IS NULL AND NOT :seeded) OR (t.id IS NOT NULL "
                "AND t.owner_id IS DISTINCT FROM s.owner_id AND (t.modified_at IS NULL "
                "OR s.modified_at IS NULL OR s.modified_at >= t.modified_at))"
            ),
            {"today": state.now.date(), "seeded": state.history_seeded},
        )
    assigns = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "id")
    if obj is not CrmObject.owners:
        assigns += ", deleted = false"
    col_list = ", ".join(columns)
    stored = ", ".join(f"t.{c}" for c in columns if c != "id")
    incoming = ", ".join(f"EXCLUDED.{c}" for c in columns if c != "id")
    revive = "" if obj is CrmObject.owners else " OR t.deleted"
    upsert = text(
        f"INSERT INTO {table} AS t ({col_list}) SELECT {col_list} FROM stage "  # noqa: S608 - fixed names
        f"ON CONFLICT (id) DO UPDATE SET {assigns}, synced_at = now() "
        "WHERE (t.modified_at IS NULL OR EXCLUDED.modified_at IS NULL "
        "OR EXCLUDED.modified_at >= t.modified_at) "
        # An identical copy (a lookback re-read, a re-import) writes nothing: no dead row, no index churn.
        f"AND (({stored}) IS DISTINCT FROM ({incoming}){revive})"
    )
    staged = int(conn.execute(text("SELECT count(*) FROM stage")).scalar_one())
    failed: list[tuple[Any, str, int]] = []
    try:
        with conn.begin_nested():
            upserted = conn.execute(upsert).rowcount
    except DBAPIError as exc:  # a row the checks let through broke a constraint: find it, row by row
        if not isinstance(exc, IntegrityError | DataError):
            raise
        upserted, failed = _upsert_one_by_one(conn, table, upsert)
    rejects += failed
    if obj is CrmObject.accounts:
        conn.execute(
            text("DELETE FROM owner_change c WHERE NOT EXISTS (SELECT 1 FROM stage s WHERE s.id = c.id)")
        )
        conn.execute(
            text(
                "UPDATE assignment_history h SET end_date = c.day FROM owner_change c "
                "WHERE h.account_id = c.id AND h.end_date IS NULL"
            )
        )
        conn.execute(
            text(
                "INSERT INTO assignment_history (account_id, owner_id, start_date, source) "
                "SELECT id, owner_id, day, 'sync' FROM owner_change WHERE owner_id IS NOT NULL"
            )
        )
    return upserted, staged - upserted - len(failed), rejects


def _upsert_one_by_one(
    conn: Connection, table: str, upsert: TextClause
) -> tuple[int, list[tuple[Any, str, int]]]:
    """The slow path after a failed batch upsert: each staged row alone, failures leave the stage."""
    log.warning("a batch broke a constraint; storing it row by row", extra={"table": table})
    rows = conn.execute(text("SELECT id, _pos FROM stage ORDER BY _pos")).all()
    single = text(str(upsert).replace("FROM stage ", "FROM stage WHERE _pos = :pos "))
    upserted = 0
    failed: list[tuple[Any, str, int]] = []
    for rid, pos in rows:
        try:
            with conn.begin_nested():
                upserted += conn.execute(single, {"pos": pos}).rowcount
        except (IntegrityError, DataError) as exc:
            message = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
            failed.append((rid, f"constraint: {message}", pos))
    if failed:
        conn.execute(text("DELETE FROM stage WHERE _pos = ANY(:p)"), {"p": [pos for _, _, pos in failed]})
    return upserted, failed


def _json_safe(value: Any) -> Any:
    """``value`` with NaN as null, so that it is valid JSON for jsonb."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _raw_json(batch: Batch, pos: int) -> str:
    """The record at ``pos`` as the CRM sent it, as JSON text that jsonb accepts."""
    raw = batch.raw[pos] if pos < len(batch.raw) else batch.records[pos]
    return json.dumps(_json_safe(dict(raw)), default=str).replace("\\u0000", "\\ufffd")


def _quarantine(conn: Connection, state: _State, rejected: Sequence[tuple[Any, str, str]]) -> None:
    """Insert or refresh the quarantine rows of ``rejected`` (record id, reason, raw record as JSON)."""
    if not rejected:
        return
    by_key: dict[Any, dict[str, Any]] = {}
    for rid, reason, raw_json in rejected:
        key = rid if rid is not None else ("", raw_json)
        by_key[key] = {"record_id": rid, "reason": reason, "raw": raw_json}
    rows = json.dumps(list(by_key.values()))
    conn.execute(
        text(
            "WITH r AS (SELECT record_id, reason, raw::jsonb AS raw FROM "
            "jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(record_id text, reason text, raw text)), "
            "seen AS (UPDATE quarantine q SET last_seen_at = now(), sync_run_id = :run, reason = r.reason "
            "FROM r WHERE r.record_id IS NULL AND q.record_id IS NULL AND q.source = :s AND q.object = :o "
            "AND q.resolved_at IS NULL AND q.raw = r.raw RETURNING q.raw) "
            "INSERT INTO quarantine (source, object, record_id, reason, raw, sync_run_id) "
            "SELECT :s, :o, record_id, reason, raw, :run FROM r "
            "WHERE record_id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM seen WHERE seen.raw = r.raw) "
            "ON CONFLICT (source, object, record_id) WHERE resolved_at IS NULL DO UPDATE SET "
            "reason = EXCLUDED.reason, raw = EXCLUDED.raw, last_seen_at = now(), "
            "sync_run_id = EXCLUDED.sync_run_id"
        ),
        {"rows": rows, "run": state.run_id, "s": state.source, "o": state.obj.value},
    )


def _delete(conn: Connection, obj: CrmObject, ids: Sequence[str]) -> int:
    """Soft-delete ``ids`` (owners: active = false); returns the rows that changed."""
    if not ids:
        return 0
    if obj is CrmObject.owners:
        sql = "UPDATE owners SET active = false, synced_at = now() WHERE id = ANY(:ids) AND active"
    else:
        table = _TABLES[obj]  # a fixed name, not input
        sql = f"UPDATE {table} SET deleted = true, synced_at = now() WHERE id = ANY(:ids) AND NOT deleted"  # noqa: S608
    return int(conn.execute(text(sql), {"ids": list(ids)}).rowcount)


def _id_chunks(chunks: Iterable[Sequence[str]]) -> Iterator[bytes]:
    """Id chunks as headerless one-column CSV for COPY."""
    for chunk in chunks:
        frame = pd.DataFrame({"id": list(chunk)})
        yield frame.to_csv(header=False, index=False).encode()


def _sweep_deletes(conn: Connection, state: _State, ids: Iterable[Sequence[str]]) -> int:
    """Soft-delete stored rows absent from a full snapshot's ids; refuses an export with no id at all."""
    conn.execute(text("CREATE TEMP TABLE present (id text) ON COMMIT DROP"))
    copy_csv(conn, "present", ["id"], _id_chunks(ids))
    count = int(conn.execute(text("SELECT count(*) FROM present")).scalar_one())
    table = _TABLES[state.obj]
    if count == 0:
        log.warning(
            "the export lists no %s at all; not treating that as deleting every one",
            table,
            extra={"sync_run_id": state.run_id, "source": state.source, "object": state.obj.value},
        )
        return 0
    conn.execute(text("ANALYZE present"))
    if state.obj is CrmObject.owners:
        sql = (
            "UPDATE owners t SET active = false, synced_at = now() WHERE t.active "
            "AND NOT EXISTS (SELECT 1 FROM present p WHERE p.id = t.id)"
        )
    else:
        sql = (
            f"UPDATE {table} t SET deleted = true, synced_at = now() WHERE NOT t.deleted "  # noqa: S608
            "AND NOT EXISTS (SELECT 1 FROM present p WHERE p.id = t.id)"
        )
    deleted = int(conn.execute(text(sql)).rowcount)
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


def _open_missing_history(conn: Connection, state: _State) -> None:
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


def _seed_history(conn: Connection, state: _State, chunks: Iterable[pd.DataFrame]) -> None:
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
        rows = {b["record_id"]: {**b, "raw": json.dumps(_json_safe(b["raw"]), default=str)} for b in bad}
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
