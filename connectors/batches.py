"""Writing one batch of CRM records, in one transaction: the batch-by-batch path of the sync engine.

COPY into a staging table, quarantine of bad rows, a set-based upsert that never lets an older copy
overwrite a newer one, soft deletes, owner changes appended to the assignment history, the batch's
cursor and counts. The bulk load (connectors/bulk_load.py) shares the upsert, quarantine and
bookkeeping. docs/sync.md states the rules exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.sql.elements import TextClause

from connectors.base import CANONICAL_COLUMNS, Batch, Connector, CrmObject, Cursor
from connectors.records import POSITION, Checked, check_records, records_frame
from connectors.roster import apply_roster
from store.bulk import copy_csv

log = logging.getLogger(__name__)

ProgressFn = Callable[[CrmObject, int], None]
"""Called after each stored batch with the object and the rows read from it so far."""

TABLES: Final = {
    CrmObject.owners: "owners",
    CrmObject.accounts: "accounts",
    CrmObject.opportunities: "opportunities",
}


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

    def add_to(self, summary: ObjectSummary) -> None:
        summary.rows_read += self.read
        summary.rows_upserted += self.upserted
        summary.rows_skipped += self.skipped
        summary.rows_quarantined += self.quarantined
        summary.rows_deleted += self.deleted


def relaxed_commit(conn: Connection) -> None:
    """Commit without waiting for the WAL flush: atomicity is kept (rows and watermark together), and a
    database crash can only lose the last few batches with their watermark, which the next run re-reads."""
    conn.execute(text("SET LOCAL synchronous_commit = off"))


def checked_batch(state: BatchState, batch: Batch) -> tuple[Checked, list[tuple[Any, str, int]]]:
    """A batch validated and converted (connectors/records.py), with its rejections as (record id,
    reason, position in the batch)."""
    frame = records_frame(state.obj, batch.records)
    if state.obj is CrmObject.owners and state.roster is not None:
        frame = apply_roster(frame, state.roster)
    checked = check_records(state.obj, frame, not_after=state.now + CLOCK_SKEW)
    rejected = [
        (rid, reason, pos) for pos, rid, reason in checked.rejected.itertuples(index=False, name=None)
    ]
    return checked, rejected


def store_batch(conn: Connection, state: BatchState, batch: Batch) -> None:
    """Everything one batch changes, in one transaction: rows, quarantine, deletes, history, cursor."""
    obj = state.obj
    checked, rejected = checked_batch(state, batch)
    # Rows to COPY text is conversion, like the checks: it happens before the database phase is timed.
    staged = csv_bytes(checked.clean[[*CANONICAL_COLUMNS[obj], POSITION]]) if not checked.clean.empty else b""
    t0 = time.perf_counter()
    with conn.begin():
        relaxed_commit(conn)
        upserted, skipped, late_rejects = upsert(conn, state, checked, staged)
        rejected += late_rejects
        quarantine(conn, state, [(rid, why, raw_json(batch, pos)) for rid, why, pos in rejected])
        if upserted or skipped:
            resolve_staged(conn, state)
        counts = Counts(
            read=len(batch.records),
            upserted=upserted,
            skipped=skipped + checked.duplicates,
            quarantined=len(rejected),
            deleted=delete_ids(conn, obj, batch.deleted_ids),
        )
        new_cursor = close_batch(conn, state, batch, counts)
    # Only once committed does the batch count.
    if new_cursor is not None:
        state.saved = new_cursor
    state.summary.db_seconds += time.perf_counter() - t0
    counts.add_to(state.summary)


def read_batches(
    conn: Connection,
    state: BatchState,
    connector: Connector,
    since: Cursor | None,
    *,
    full: bool,
    progress: ProgressFn | None,
    store: Callable[[Connection, BatchState, Batch], None] | None = None,
) -> None:
    """Read what changed since ``since`` and store each batch (with :func:`store_batch`, its own
    transaction, unless ``store`` says otherwise), reporting progress after each."""
    for batch in connector.read(state.obj, since, full=full):
        (store or store_batch)(conn, state, batch)
        if progress is not None:
            progress(state.obj, state.summary.rows_read)


def resolve_staged(conn: Connection, state: BatchState) -> None:
    """Mark resolved the open quarantine rows of the ids in the stage, stored cleanly now."""
    conn.execute(
        text(
            "UPDATE quarantine q SET resolved_at = now() FROM stage s WHERE q.source = :s "
            "AND q.object = :o AND q.resolved_at IS NULL AND q.record_id = s.id"
        ),
        {"s": state.source, "o": state.obj.value},
    )


def close_batch(conn: Connection, state: BatchState, batch: Batch, counts: Counts) -> Cursor | None:
    """Save the batch's cursor when it is ahead of the saved one, and add its counts to its run's row;
    returns the cursor saved, if any (it counts as saved once the transaction commits)."""
    new_cursor = batch.cursor
    if new_cursor is not None and new_cursor.modified_at > state.now:
        new_cursor = Cursor(state.now)  # never past the run's start: later changes must still be read
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
    count_in_run(conn, state, counts)
    return new_cursor


def count_in_run(conn: Connection, state: BatchState, counts: Counts) -> None:
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


def csv_bytes(frame: pd.DataFrame) -> bytes:
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


def upsert(
    conn: Connection, state: BatchState, checked: Checked, staged_csv: bytes
) -> tuple[int, int, list[tuple[Any, str, int]]]:
    """Stage the clean rows, reject bad references, record owner changes, upsert.

    Returns (rows upserted, rows skipped as older than the stored copy, late rejections as
    (record id, reason, position)).
    """
    if checked.clean.empty:
        return 0, 0, []
    conn.execute(text(_STAGE_DDL.format(table=TABLES[state.obj])))
    copy_csv(conn, "stage", [*CANONICAL_COLUMNS[state.obj], POSITION], [staged_csv])
    return upsert_stage(conn, state)


def upsert_stage(conn: Connection, state: BatchState) -> tuple[int, int, list[tuple[Any, str, int]]]:
    """:func:`upsert` from the rows in the ``stage`` table."""
    obj = state.obj
    table = TABLES[obj]
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


def quarantine(conn: Connection, state: BatchState, rejected: Sequence[tuple[Any, str, str]]) -> None:
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


def delete_ids(conn: Connection, obj: CrmObject, ids: Sequence[str]) -> int:
    """Soft-delete ``ids`` (owners: active = false); returns the rows that changed."""
    if not ids:
        return 0
    if obj is CrmObject.owners:
        sql = "UPDATE owners SET active = false, synced_at = now() WHERE id = ANY(:ids) AND active"
    else:
        table = TABLES[obj]  # a fixed name, not input
        sql = f"UPDATE {table} SET deleted = true, synced_at = now() WHERE id = ANY(:ids) AND NOT deleted"  # noqa: S608
    return int(conn.execute(text(sql), {"ids": list(ids)}).rowcount)
