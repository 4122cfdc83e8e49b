"""Writing one batch of CRM records, in one transaction: the batch-by-batch path of the sync engine.

The batch is validated (connectors/records.py), its references checked against the store, its clean
rows COPYed into a staging table and upserted (store/staging.py) so that an older copy never
overwrites a newer one; then the quarantine of bad rows (store/quarantine.py), soft deletes, owner
changes appended to the assignment history (store/history.py), the batch's cursor and counts
(store/sync_runs.py). The first load (connectors/bulk_load.py) runs the same checks and bookkeeping and
differs only in where it COPYs. docs/sync.md states the rules exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import pandas as pd
from sqlalchemy import Connection

from connectors.ahead import ahead
from connectors.base import CANONICAL_COLUMNS, Batch, Connector, CrmObject, Cursor
from connectors.records import (
    POSITION,
    Checked,
    KnownIds,
    Rejection,
    check_records,
    drop_unknown_references,
    records_frame,
)
from connectors.roster import apply_roster
from store import history, quarantine, staging, sync_runs, synced
from store.bulk import csv_bytes
from store.sync_runs import relaxed_commit

log = logging.getLogger(__name__)

P = TypeVar("P")

ProgressFn = Callable[[CrmObject, int], None]
"""Called after each stored batch with the object and the rows read from it so far."""


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
    history_quarantined: int = 0  # accounts: rows of the export's ownership history quarantined
    seconds: float = 0.0
    db_seconds: float = 0.0  # time spent in the database (COPY, upsert, history, cursor)
    error: str | None = None
    run_id: int | None = None


# How far a CRM's clock may run ahead of ours: a record stamped later than the run's start plus this is
# quarantined (docs/sync.md, "Cursors never run ahead of time").
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass
class BatchState:
    """Per-object bookkeeping carried across batches."""

    source: str
    obj: CrmObject
    run_id: int
    saved: Cursor | None
    summary: ObjectSummary
    history_seeded: bool
    now: dt.datetime
    roster: pd.DataFrame | None


@dataclass
class Counts:
    """What one batch (or one deferred part of a bulk load) did."""

    read: int = 0
    upserted: int = 0
    skipped: int = 0
    quarantined: int = 0
    deleted: int = 0

    def add(self, other: Counts) -> None:
        self.read += other.read
        self.upserted += other.upserted
        self.skipped += other.skipped
        self.quarantined += other.quarantined
        self.deleted += other.deleted

    def add_to(self, summary: ObjectSummary) -> None:
        summary.rows_read += self.read
        summary.rows_upserted += self.upserted
        summary.rows_skipped += self.skipped
        summary.rows_quarantined += self.quarantined
        summary.rows_deleted += self.deleted


def checked_batch(state: BatchState, batch: Batch) -> tuple[Checked, list[Rejection]]:
    """A batch validated and converted (connectors/records.py), with its rejections as (record id,
    reason, position in the batch). Its references are not checked yet: :func:`known_rows` does."""
    frame = records_frame(state.obj, batch.records)
    if state.obj is CrmObject.owners and state.roster is not None:
        frame = apply_roster(frame, state.roster)
    checked = check_records(state.obj, frame, not_after=state.now + CLOCK_SKEW)
    rejected = [
        (rid, reason, pos) for pos, rid, reason in checked.rejected.itertuples(index=False, name=None)
    ]
    return checked, rejected


def known_rows(
    state: BatchState, checked: Checked, rejected: list[Rejection], known: KnownIds
) -> pd.DataFrame:
    """The clean rows whose owner and account the store holds; the others join ``rejected``."""
    clean, unknown = drop_unknown_references(state.obj, checked.clean, known)
    rejected += unknown
    return clean


@dataclass(frozen=True)
class Checks:
    """A batch after the checks that need no database: what :func:`store_batch` stores."""

    checked: Checked
    rejected: list[Rejection]


def check_batch(state: BatchState, batch: Batch) -> Checks:
    """:func:`checked_batch` as the batch path's preparation of a batch (run ahead of the store)."""
    return Checks(*checked_batch(state, batch))


def store_batch(conn: Connection, state: BatchState, batch: Batch, checks: Checks) -> None:
    """Everything one batch changes, in one transaction: rows, quarantine, deletes, history, cursor."""
    obj = state.obj
    checked, rejected = checks.checked, checks.rejected
    t0 = time.perf_counter()
    with conn.begin():
        relaxed_commit(conn)
        clean = known_rows(state, checked, rejected, lambda t, ids: synced.existing_ids(conn, t, ids))
        # Rows to COPY text is conversion, like the checks: it is not timed as the database phase.
        t1 = time.perf_counter()
        staged = csv_bytes(clean[[*CANONICAL_COLUMNS[obj], POSITION]])
        converting = time.perf_counter() - t1
        upserted, skipped, late_rejects = upsert(conn, state, staged)
        rejected += late_rejects
        put_quarantine(conn, state, [(rid, why, raw_json(batch, pos)) for rid, why, pos in rejected])
        if upserted or skipped:
            quarantine.resolve_staged(conn, state.source, obj.value)
        counts = Counts(
            read=len(batch.records),
            upserted=upserted,
            skipped=skipped + checked.duplicates,
            quarantined=len(rejected),
            deleted=synced.soft_delete(conn, obj.value, batch.deleted_ids, state.source),
        )
        new_cursor = close_batch(conn, state, batch, counts)
    # Only once committed does the batch count.
    if new_cursor is not None:
        state.saved = new_cursor
    state.summary.db_seconds += time.perf_counter() - t0 - converting
    counts.add_to(state.summary)


@dataclass(frozen=True)
class BatchPath(Generic[P]):
    """How each batch is stored: ``prepare`` (no database: the checks, COPY text) runs a batch or two
    ahead in a thread (connectors/ahead.py) while ``store`` writes the one before in the database."""

    prepare: Callable[[BatchState, Batch], P]
    store: Callable[[Connection, BatchState, Batch, P], None]


BATCH_BY_BATCH: Final[BatchPath[Checks]] = BatchPath(check_batch, store_batch)


def read_batches(
    conn: Connection,
    state: BatchState,
    connector: Connector,
    since: Cursor | None,
    *,
    full: bool,
    progress: ProgressFn | None,
    path: BatchPath[Any] = BATCH_BY_BATCH,
    batch_rows: int | None = None,
) -> None:
    """Read what changed since ``since`` and store each batch (by default with :func:`store_batch`, its
    own transaction), reporting progress after each. The next batches are read and prepared while one
    is stored; a connector's error still comes after every batch read before it is stored.
    ``batch_rows`` bounds a batch (None: the connector's size, ``sync.batch_size``)."""
    batches = connector.read(state.obj, since, full=full, batch_rows=batch_rows)
    with ahead(batches, lambda batch: path.prepare(state, batch)) as prepared:
        for batch, ready in prepared:
            path.store(conn, state, batch, ready)
            if progress is not None:
                progress(state.obj, state.summary.rows_read)


def close_batch(conn: Connection, state: BatchState, batch: Batch, counts: Counts) -> Cursor | None:
    """Save the batch's cursor when it is ahead of the saved one, and add its counts to its run's row;
    returns the cursor saved, if any (it counts as saved once the transaction commits)."""
    new_cursor = save_cursor(conn, state, batch)
    count_in_run(conn, state, counts)
    return new_cursor


def save_cursor(conn: Connection, state: BatchState, batch: Batch) -> Cursor | None:
    """Save the batch's cursor when it is ahead of the saved one; returns the cursor saved, if any."""
    new_cursor = batch.cursor
    if new_cursor is not None and new_cursor.modified_at > state.now:
        new_cursor = Cursor(state.now)  # never past the run's start: later changes must still be read
    if new_cursor is not None and state.saved is not None and not new_cursor > state.saved:
        new_cursor = None
    if new_cursor is not None:
        sync_runs.save_watermark(conn, state.source, state.obj.value, new_cursor.to_json())
    return new_cursor


def count_in_run(conn: Connection, state: BatchState, counts: Counts) -> None:
    """Add ``counts`` to the run's row."""
    sync_runs.add_counts(
        conn,
        state.run_id,
        read=counts.read,
        upserted=counts.upserted,
        deleted=counts.deleted,
        quarantined=counts.quarantined,
    )


def upsert(conn: Connection, state: BatchState, staged_csv: bytes) -> tuple[int, int, list[Rejection]]:
    """Stage the clean rows (COPY text of the canonical columns and the position) and upsert them.

    Returns (rows upserted, rows skipped as older than or identical to the stored copy, late
    rejections as (record id, reason, position)).
    """
    if not staged_csv:
        return 0, 0, []
    staging.stage_rows(conn, state.obj.value, CANONICAL_COLUMNS[state.obj], staged_csv)
    return upsert_stage(conn, state)


def upsert_stage(conn: Connection, state: BatchState) -> tuple[int, int, list[Rejection]]:
    """:func:`upsert` from the rows in the ``stage`` table, owner changes into the history."""
    obj = state.obj
    if obj is CrmObject.accounts:  # compare the staged owner with the stored one before the upsert
        history.note_owner_changes(conn, state.now.date(), seeded=state.history_seeded)
    staged = staging.staged_count(conn)
    upserted, failed = staging.upsert_stage(conn, obj.value, CANONICAL_COLUMNS[obj], state.source)
    if obj is CrmObject.accounts:
        history.apply_owner_changes(conn)
    return upserted, staged - upserted - len(failed), failed


def json_safe(value: Any) -> Any:
    """``value`` with NaN as null, so that it is valid JSON for jsonb."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def raw_json(batch: Batch, pos: int) -> str:
    """The record at ``pos`` as the CRM sent it, as JSON text that jsonb accepts."""
    raw = batch.raw[pos] if pos < len(batch.raw) else batch.records[pos]
    return json.dumps(json_safe(dict(raw)), default=str).replace("\\u0000", "\\ufffd")


def put_quarantine(conn: Connection, state: BatchState, rejected: Sequence[tuple[Any, str, str]]) -> None:
    """Insert or refresh the quarantine rows of ``rejected`` (record id, reason, raw record as JSON)."""
    quarantine.put(conn, source=state.source, obj=state.obj.value, run_id=state.run_id, rejected=rejected)
