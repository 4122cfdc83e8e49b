"""The first load of an empty table: COPY straight into it, keys and indexes rebuilt once, one transaction.

docs/sync.md ("First load into an empty table") states the rules and why; :func:`read_into_empty` is
the entry point, called by the engine for a full read of accounts or opportunities.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import Connection, text

from connectors.base import CANONICAL_COLUMNS, Batch, Connector, CrmObject
from connectors.batches import (
    TABLES,
    BatchState,
    Counts,
    ObjectSummary,
    ProgressFn,
    checked_batch,
    close_batch,
    count_in_run,
    csv_bytes,
    delete_ids,
    quarantine,
    raw_json,
    read_batches,
    relaxed_commit,
    resolve_staged,
    upsert_stage,
)
from connectors.errors import ConnectorError
from connectors.records import POSITION, Checked
from store.bulk import copy_csv

log = logging.getLogger(__name__)

_FIRST_ASSIGNMENT: Final = ("account_id", "owner_id", "start_date", "source")


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
    repeated: pd.DataFrame  # the clean rows of ids the load already holds


@dataclass
class _Stripped:
    """What an empty-table bulk load dropped and must put back before it commits."""

    tables: list[str]
    primary_keys: list[tuple[str, str, str]] = field(default_factory=list)  # table, name, definition
    indexes: list[str] = field(default_factory=list)  # CREATE INDEX statements
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)  # table, name, definition


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
    tables = [TABLES[obj], *(["assignment_history"] if obj is CrmObject.accounts else [])]
    t0 = time.perf_counter()
    trans = conn.begin()
    stopped: ConnectorError | None = None
    try:
        relaxed_commit(conn)
        stripped = _strip(conn, tables) if _is_empty(conn, tables[0]) else None
        # Re-checked under the ACCESS EXCLUSIVE lock the drops took: another source may have written.
        if stripped is None or not _is_empty(conn, tables[0]):
            trans.rollback()
            summary.db_seconds += time.perf_counter() - t0
            read_batches(conn, state, connector, None, full=full, progress=progress)
            return False
        conn.execute(text(f"TRUNCATE {', '.join(tables)}"))  # empty already; it allows COPY FREEZE
        log.info(
            "bulk load into an empty table",
            extra={"sync_run_id": state.run_id, "source": state.source, "tables": tables},
        )
        bulk = _bulk_load(conn, state)
        summary.db_seconds += time.perf_counter() - t0

        def store(c: Connection, s: BatchState, batch: Batch) -> None:
            _store_bulk_batch(c, s, bulk, batch)

        try:
            read_batches(conn, state, connector, None, full=full, progress=progress, store=store)
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


def _complete(conn: Connection, state: BatchState, bulk: _BulkLoad, stripped: _Stripped) -> None:
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


def _store_bulk_batch(conn: Connection, state: BatchState, bulk: _BulkLoad, batch: Batch) -> None:
    """One batch of a bulk load, inside the load's transaction: its new ids COPYed straight in (with
    the accounts' first assignments), its repeated ids and deletes of loaded ids deferred, its bad
    records quarantined, its cursor and counts recorded."""
    # Validation, the in-memory checks and the COPY text are conversion: before the timing starts.
    checked, rejected = checked_batch(state, batch)
    direct = _split_direct(state, bulk, checked)
    rejected += direct.rejected
    seq, bulk.batches = bulk.batches, bulk.batches + 1
    t0 = time.perf_counter()
    counts = Counts(read=len(batch.records), skipped=checked.duplicates, quarantined=len(rejected))
    if direct.ids:
        _copy_direct(conn, state, direct)
        counts.upserted = len(direct.ids)
        if bulk.open_quarantine:  # a clean copy of a quarantined record resolves its open row
            conn.execute(
                text(
                    "UPDATE quarantine SET resolved_at = now() WHERE source = :s AND object = :o "
                    "AND resolved_at IS NULL AND record_id = ANY(:ids)"
                ),
                {"s": state.source, "o": state.obj.value, "ids": direct.ids},
            )
        bulk.loaded.update(direct.ids)
    # A delete of an id the load does not hold has nothing to change: the table was empty.
    deletes = [i for i in batch.deleted_ids if i in bulk.loaded]
    if not direct.repeated.empty or deletes:
        _defer(conn, state, bulk, seq, batch, direct.repeated, deletes)
    quarantine(conn, state, [(rid, why, raw_json(batch, pos)) for rid, why, pos in rejected])
    bulk.open_quarantine |= bool(rejected)  # a later clean copy of one of them must resolve its row
    new_cursor = close_batch(conn, state, batch, counts)
    if new_cursor is not None:
        state.saved = new_cursor  # committed with the load, or rolled back with the counts
    state.summary.db_seconds += time.perf_counter() - t0
    counts.add_to(state.summary)


def _split_direct(state: BatchState, bulk: _BulkLoad, checked: Checked) -> _Direct:
    """Check a bulk-loaded batch's references in memory and split off the ids new to the load.

    The reasons and their order are those of the SQL checks in :func:`upsert`. The rest are ids the
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
        # The first assignment starts on the account's modification day (UTC), as upsert's does.
        start = owned["modified_at"].str[:10].fillna(state.now.date().isoformat())
        history = csv_bytes(
            pd.DataFrame(
                {"account_id": owned["id"], "owner_id": owned["owner_id"], "start_date": start}
            ).assign(source="sync")
        )
    return _Direct(
        ids=fresh["id"].tolist(),
        rows=csv_bytes(fresh[list(CANONICAL_COLUMNS[obj])]),
        history=history,
        rejected=rejected,
        repeated=ok[~new],
    )


class _Refused(Exception):
    """The database refused a row of a direct COPY; the load's transaction is aborted."""


def _copy_direct(conn: Connection, state: BatchState, direct: _Direct) -> None:
    """COPY a batch's new rows (and accounts' first assignments) straight into the tables, frozen.

    FREEZE needs the tables truncated in the current subtransaction, so there is no savepoint: a row
    the database refuses (a constraint the checks do not know) aborts the load, and
    :func:`read_into_empty` reads the object again batch by batch, where it is found and quarantined.
    """
    try:
        copy_csv(conn, TABLES[state.obj], CANONICAL_COLUMNS[state.obj], [direct.rows], freeze=True)
        if direct.history:
            copy_csv(conn, "assignment_history", _FIRST_ASSIGNMENT, [direct.history], freeze=True)
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
    records that a late rejection quarantines. Plain tables: no constraint refuses them here."""
    columns = list(CANONICAL_COLUMNS[state.obj])
    if not bulk.deferring:
        conn.execute(
            text(
                f"CREATE TEMP TABLE deferred ON COMMIT DROP AS SELECT {', '.join(columns)}, "  # noqa: S608
                f"0 AS _pos, 0 AS _seq, ''::text AS _raw FROM {TABLES[state.obj]} WITH NO DATA"
            )
        )
        conn.execute(text("CREATE TEMP TABLE deferred_deletes (_seq integer, id text) ON COMMIT DROP"))
        bulk.deferring = True
    if not rows.empty:
        frame = rows[[*columns, POSITION]].assign(
            _seq=seq, _raw=[raw_json(batch, int(p)) for p in rows[POSITION]]
        )
        copy_csv(conn, "deferred", [*columns, POSITION, "_seq", "_raw"], [csv_bytes(frame)])
    if deletes:
        conn.execute(
            text("INSERT INTO deferred_deletes SELECT :seq, unnest(CAST(:ids AS text[]))"),
            {"seq": seq, "ids": list(deletes)},
        )


def _apply_deferred(conn: Connection, state: BatchState) -> None:
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
        upserted, skipped, late = upsert_stage(conn, state)
        if upserted or skipped:
            resolve_staged(conn, state)
        if late:
            raws: dict[int, str] = dict(
                conn.execute(
                    text("SELECT _pos, _raw FROM deferred WHERE _seq = :seq AND _pos = ANY(:p)"),
                    {"seq": seq, "p": [pos for _, _, pos in late]},
                ).all()
            )
            quarantine(conn, state, [(rid, why, raws[pos]) for rid, why, pos in late])
        deletes = conn.execute(
            text("SELECT id FROM deferred_deletes WHERE _seq = :seq"), {"seq": seq}
        ).scalars()
        counts = Counts(
            upserted=upserted,
            skipped=skipped,
            quarantined=len(late),
            deleted=delete_ids(conn, state.obj, list(deletes)),
        )
        count_in_run(conn, state, counts)
        counts.add_to(state.summary)
        conn.execute(text("DROP TABLE IF EXISTS stage, owner_change"))
    state.summary.db_seconds += time.perf_counter() - t0
