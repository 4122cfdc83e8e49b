"""The first load of an empty table: COPY straight into it, keys and indexes rebuilt once, one transaction.

docs/sync.md ("First load into an empty table") states the rules and why; :func:`read_into_empty` is
the entry point, called by the engine for a full read of accounts or opportunities. The checks,
quarantine, history and bookkeeping are those of the batch path (connectors/batches.py); only the
place a new row is COPYed differs: the table itself instead of a staging table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import Connection

from connectors.base import CANONICAL_COLUMNS, Batch, Connector, CrmObject
from connectors.batches import (
    BatchPath,
    BatchState,
    Counts,
    ObjectSummary,
    ProgressFn,
    checked_batch,
    count_in_run,
    known_rows,
    put_quarantine,
    raw_json,
    read_batches,
    save_cursor,
    upsert_stage,
)
from connectors.errors import ConnectorError
from connectors.records import POSITION, Checked, Rejection
from store import history, quarantine, staging, synced
from store.bulk import Stripped, copy_csv, csv_bytes, restore_keys, strip_keys, truncate
from store.sync_runs import relaxed_commit

log = logging.getLogger(__name__)

BATCH_ROWS: Final = 50_000
"""Records a batch of a first load holds: the load is one transaction whatever its batches, so they are
as large as Salesforce's Bulk API pages, where a batch's fixed costs (a COPY, the checks' per-column
steps) are small against its rows; three are in memory at a time (one stored, two read ahead)."""


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
    uncounted: Counts = field(default_factory=Counts)  # the batches' counts, added to the run's row once

    def known(self, table: str, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` stored in ``table`` before the load (the reference checks' look-up)."""
        held = self.owners if table == "owners" else self.accounts
        return [i for i in ids if held is not None and i in held]


@dataclass
class _Direct:
    """A batch's clean rows split: ids new to the load (COPYed straight in) and ids it already holds."""

    ids: list[str]
    rows: bytes  # COPY text of the canonical columns of the new ids
    repeated: pd.DataFrame  # the clean rows of ids the load already holds


def read_into_empty(
    conn: Connection, state: BatchState, connector: Connector, full: bool, progress: ProgressFn | None
) -> bool:
    """A first read into an empty table, as one transaction without the per-row index and FK costs;
    False when the read took the batch-by-batch path after all (the table turned out to hold rows, or
    the database refused a row of the direct COPY).

    The table's indexes (its primary key too) and foreign keys, incoming and outgoing (and those of
    ``assignment_history`` for accounts), are dropped and the empty tables truncated, so that COPY may
    write frozen rows. Each batch's ids new to the load are COPYed straight into the table, their
    references checked in memory (:func:`_store_bulk_batch`); a later copy of an id already loaded
    waits in a deferred table. Then the keys and indexes are rebuilt (one sort each), the foreign keys
    re-added (one validating join each), the deferred copies applied through the usual upsert, in
    their order, and the load commits. A crash rolls everything back to the empty table; a connector
    error keeps what was read, like the batch-by-batch path.
    """
    obj, summary, saved = state.obj, state.summary, state.saved
    tables = [obj.value, *(["assignment_history"] if obj is CrmObject.accounts else [])]
    t0 = time.perf_counter()
    trans = conn.begin()
    stopped: ConnectorError | None = None
    try:
        relaxed_commit(conn)
        stripped = strip_keys(conn, tables) if synced.is_empty(conn, obj.value) else None
        # Re-checked under the ACCESS EXCLUSIVE lock the drops took: another source may have written.
        if stripped is None or not synced.is_empty(conn, obj.value):
            trans.rollback()
            summary.db_seconds += time.perf_counter() - t0
            read_batches(conn, state, connector, None, full=full, progress=progress)
            return False
        truncate(conn, tables)
        log.info(
            "bulk load into an empty table",
            extra={"sync_run_id": state.run_id, "source": state.source, "tables": tables},
        )
        bulk = _bulk_load(conn, state)
        summary.db_seconds += time.perf_counter() - t0

        def prepare(s: BatchState, batch: Batch) -> _Ready:
            return _prepare_bulk_batch(s, bulk, batch)

        def store(c: Connection, s: BatchState, batch: Batch, ready: _Ready) -> None:
            _store_bulk_batch(c, s, bulk, batch, ready)

        try:
            read_batches(
                conn,
                state,
                connector,
                None,
                full=full,
                progress=progress,
                path=BatchPath(prepare, store),
                batch_rows=BATCH_ROWS,
            )
        except ConnectorError as exc:  # what was read is kept, as the batch-by-batch path keeps it
            stopped = exc
        _complete(conn, state, bulk, stripped)
        trans.commit()
    except _Refused as exc:
        trans.rollback()
        _forget(summary)
        state.saved = saved
        log.warning(
            "the database refused a row of the bulk load; reading the object again batch by batch",
            extra={"sync_run_id": state.run_id, "source": state.source, "error": str(exc)},
        )
        read_batches(conn, state, connector, None, full=full, progress=progress)
        return False
    except BaseException:  # nothing of the load is stored (a failed commit included)
        if trans.is_active:
            trans.rollback()
        _forget(summary)
        raise
    if stopped is not None:
        raise stopped
    return True


def _forget(summary: ObjectSummary) -> None:
    """Nothing of a rolled-back load is stored: the counts must not say otherwise."""
    summary.rows_read = summary.rows_upserted = summary.rows_quarantined = 0
    summary.rows_skipped = summary.rows_deleted = 0


def _bulk_load(conn: Connection, state: BatchState) -> _BulkLoad:
    """The in-memory side of a bulk load: the ids its rows may reference, read under its locks."""
    return _BulkLoad(
        owners=synced.all_ids(conn, "owners"),
        accounts=synced.all_ids(conn, "accounts") if state.obj is CrmObject.opportunities else None,
        open_quarantine=quarantine.has_open(conn, state.source, state.obj.value),
    )


def _complete(conn: Connection, state: BatchState, bulk: _BulkLoad, stripped: Stripped) -> None:
    """The accounts' first assignments (while the history has no index to maintain), what
    :func:`strip_keys` dropped, then the deferred copies, in the load's transaction."""
    t0 = time.perf_counter()
    count_in_run(conn, state, bulk.uncounted)
    if state.obj is CrmObject.accounts and not state.history_seeded:
        history.open_first(conn, state.now.date())
    restore_keys(conn, stripped)
    state.summary.db_seconds += time.perf_counter() - t0
    if bulk.deferring:
        _apply_deferred(conn, state)


@dataclass(frozen=True)
class _Ready:
    """A batch of a bulk load prepared without the database (ahead of the store, in the reading thread):
    its checks and rejections, its clean rows split by :func:`_split_direct`, and its deletes of ids the
    load holds by then (the others have nothing to change: the table was empty)."""

    checked: Checked
    rejected: list[Rejection]
    direct: _Direct
    deletes: list[str]


def _prepare_bulk_batch(state: BatchState, bulk: _BulkLoad, batch: Batch) -> _Ready:
    """Validate a batch, check its references in memory and split it. Batches are prepared one after
    the other, in order, so ``bulk.loaded`` (which only this touches) holds the ids of every batch
    before this one, as stored before this one is."""
    checked, rejected = checked_batch(state, batch)
    clean = known_rows(state, checked, rejected, bulk.known)
    direct = _split_direct(state, bulk, clean)
    bulk.loaded.update(direct.ids)
    return _Ready(checked, rejected, direct, [i for i in batch.deleted_ids if i in bulk.loaded])


def _store_bulk_batch(
    conn: Connection, state: BatchState, bulk: _BulkLoad, batch: Batch, ready: _Ready
) -> None:
    """One prepared batch of a bulk load, inside the load's transaction: its new ids COPYed straight in,
    its repeated ids and deletes of loaded ids deferred, its bad records quarantined, its cursor and
    counts recorded."""
    checked, rejected, direct = ready.checked, ready.rejected, ready.direct
    seq, bulk.batches = bulk.batches, bulk.batches + 1
    t0 = time.perf_counter()
    counts = Counts(read=len(batch.records), skipped=checked.duplicates, quarantined=len(rejected))
    if direct.ids:
        _copy_direct(conn, state, direct)
        counts.upserted = len(direct.ids)
        if bulk.open_quarantine:  # a clean copy of a quarantined record resolves its open row
            quarantine.resolve(conn, state.source, state.obj.value, direct.ids)
    if not direct.repeated.empty or ready.deletes:
        _defer(conn, state, bulk, seq, batch, direct.repeated, ready.deletes)
    put_quarantine(conn, state, [(rid, why, raw_json(batch, pos)) for rid, why, pos in rejected])
    bulk.open_quarantine |= bool(rejected)  # a later clean copy of one of them must resolve its row
    new_cursor = save_cursor(conn, state, batch)
    if new_cursor is not None:
        state.saved = new_cursor  # committed with the load, or rolled back with the counts
    # One transaction: the run's row is updated once at the end (a row updated per batch inside one
    # transaction grows a chain of versions that each update walks).
    bulk.uncounted.add(counts)
    state.summary.db_seconds += time.perf_counter() - t0
    counts.add_to(state.summary)


def _split_direct(state: BatchState, bulk: _BulkLoad, clean: pd.DataFrame) -> _Direct:
    """Split off the ids new to the load. The rest are ids the load already holds: a record modified
    while the CRM was paged through, a CSV that lists an id twice."""
    ids = clean["id"].to_numpy(dtype=object)
    new = np.fromiter((i not in bulk.loaded for i in ids), bool, len(ids))
    fresh = clean[new]
    return _Direct(
        ids=ids[new].tolist(),
        rows=csv_bytes(fresh[list(CANONICAL_COLUMNS[state.obj])].assign(source=state.source)),
        repeated=clean[~new],
    )


class _Refused(Exception):
    """The database refused a row of a direct COPY; the load's transaction is aborted."""


def _copy_direct(conn: Connection, state: BatchState, direct: _Direct) -> None:
    """COPY a batch's new rows straight into the table, frozen.

    FREEZE needs the tables truncated in the current subtransaction, so there is no savepoint: a row
    the database refuses (a constraint the checks do not know) aborts the load, and
    :func:`read_into_empty` reads the object again batch by batch, where it is found and quarantined.
    """
    try:
        copy_csv(conn, state.obj.value, [*CANONICAL_COLUMNS[state.obj], "source"], [direct.rows], freeze=True)
    except (psycopg.IntegrityError, psycopg.DataError) as exc:  # COPY runs on the driver's own cursor
        raise _Refused(str(exc).splitlines()[0]) from exc


def _defer(
    conn: Connection,
    state: BatchState,
    bulk: _BulkLoad,
    seq: int,
    batch: Batch,
    rows: pd.DataFrame,
    deletes: Sequence[str],
) -> None:
    """Keep a batch's rows and deletes for after the rebuild (they need the primary key), with the raw
    records that a late rejection quarantines."""
    columns = list(CANONICAL_COLUMNS[state.obj])
    if not bulk.deferring:
        staging.create_deferred(conn, state.obj.value, columns)
        bulk.deferring = True
    if not rows.empty:
        frame = rows[[*columns, POSITION]].assign(
            _seq=seq, _raw=[raw_json(batch, int(p)) for p in rows[POSITION]]
        )
        staging.defer_rows(conn, columns, csv_bytes(frame))
    if deletes:
        staging.defer_deletes(conn, seq, deletes)


def _apply_deferred(conn: Connection, state: BatchState) -> None:
    """Apply a bulk load's deferred copies and deletes, batch by batch in their order, through the
    usual upsert: newest copy wins, owner changes reach the history, refused rows are quarantined."""
    t0 = time.perf_counter()
    columns = CANONICAL_COLUMNS[state.obj]
    for seq in staging.deferred_batches(conn):
        staging.stage_deferred(conn, columns, seq)
        upserted, skipped, late = upsert_stage(conn, state)
        if upserted or skipped:
            quarantine.resolve_staged(conn, state.source, state.obj.value)
        if late:
            raws = staging.deferred_raws(conn, seq, [pos for _, _, pos in late])
            put_quarantine(conn, state, [(rid, why, raws[pos]) for rid, why, pos in late])
        counts = Counts(
            upserted=upserted,
            skipped=skipped,
            quarantined=len(late),
            deleted=synced.soft_delete(
                conn, state.obj.value, staging.deferred_deletes(conn, seq), state.source
            ),
        )
        count_in_run(conn, state, counts)
        counts.add_to(state.summary)
        staging.drop_stage(conn)
    state.summary.db_seconds += time.perf_counter() - t0
