"""Sync runs and cursors: ``sync_runs`` (one row per object synced) and ``sync_state`` (the watermark).

The engine (connectors/sync.py) decides; these statements record. A watermark is the JSON form of a
connector's cursor; the store keeps it as it is given.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from store.models import SyncRun, SyncState
from store.synced import SYNCED

_R = SyncRun.__table__
_S = SyncState.__table__


def relaxed_commit(conn: Connection) -> None:
    """Commit the current transaction without waiting for the WAL flush: atomicity is kept (rows and
    watermark together), and a database crash can only lose the last few batches with their
    watermark, which the next run re-reads."""
    conn.execute(text("SET LOCAL synchronous_commit = off"))


def _lock_key(source: str) -> str:
    return f"territory-sync:{source}"


def try_lock(conn: Connection, source: str) -> bool:
    """Take the session-level advisory lock of ``source``'s syncs; False when another session holds it."""
    return bool(
        conn.execute(select(func.pg_try_advisory_lock(func.hashtext(_lock_key(source))))).scalar_one()
    )


def unlock(conn: Connection, source: str) -> None:
    """Release what :func:`try_lock` took."""
    conn.execute(select(func.pg_advisory_unlock(func.hashtext(_lock_key(source)))))


def interrupt_running(conn: Connection, source: str) -> None:
    """Runs of ``source`` still marked running belong to a process that ended (the lock is ours now)."""
    conn.execute(
        update(SyncRun)
        .where(_R.c.source == source, _R.c.status == "running")
        .values(
            status="interrupted", finished_at=func.now(), error="the process ended before the run finished"
        )
    )


def start_run(conn: Connection, source: str, obj: str, *, full: bool) -> int:
    """A new running row of one object's sync; its id."""
    return int(
        conn.execute(
            pg_insert(SyncRun).values(source=source, object=obj, full=full).returning(_R.c.id)
        ).scalar_one()
    )


def watermark(conn: Connection, source: str, obj: str) -> dict[str, Any] | None:
    """The saved watermark of ``source``'s ``obj``, if any."""
    return conn.execute(select(_S.c.watermark).where(_S.c.source == source, _S.c.object == obj)).scalar()


def save_watermark(conn: Connection, source: str, obj: str, value: dict[str, Any]) -> None:
    """Save a batch's watermark, in the batch's transaction."""
    stmt = pg_insert(SyncState).values(source=source, object=obj, watermark=value, last_run_at=func.now())
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[_S.c.source, _S.c.object],
            set_={"watermark": stmt.excluded.watermark, "last_run_at": func.now()},
        )
    )


def replace_watermark(conn: Connection, source: str, obj: str, value: dict[str, Any] | None) -> None:
    """Overwrite a saved watermark (the repair of one in the future)."""
    conn.execute(update(SyncState).where(_S.c.source == source, _S.c.object == obj).values(watermark=value))


def add_counts(
    conn: Connection, run_id: int, *, read: int = 0, upserted: int = 0, deleted: int = 0, quarantined: int = 0
) -> None:
    """Add one batch's counts to its run's row."""
    conn.execute(
        update(SyncRun)
        .where(_R.c.id == run_id)
        .values(
            rows_read=_R.c.rows_read + read,
            rows_upserted=_R.c.rows_upserted + upserted,
            rows_deleted=_R.c.rows_deleted + deleted,
            rows_quarantined=_R.c.rows_quarantined + quarantined,
        )
    )


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    status: str,
    error: str | None,
    read: int,
    upserted: int,
    deleted: int,
    quarantined: int,
) -> None:
    """Record a run's final status and totals."""
    conn.execute(
        update(SyncRun)
        .where(_R.c.id == run_id)
        .values(
            status=status,
            finished_at=func.now(),
            error=error,
            rows_read=read,
            rows_upserted=upserted,
            rows_deleted=deleted,
            rows_quarantined=quarantined,
        )
    )


def record_outcome(conn: Connection, source: str, obj: str, *, status: str, error: str | None) -> None:
    """The object's last run in ``sync_state`` (its last success too, when it succeeded)."""
    stmt = pg_insert(SyncState).values(
        source=source,
        object=obj,
        last_run_at=func.now(),
        last_success_at=func.now() if status == "succeeded" else None,
        last_status=status,
        last_error=error,
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[_S.c.source, _S.c.object],
            set_={
                "last_run_at": func.now(),
                "last_success_at": func.coalesce(stmt.excluded.last_success_at, _S.c.last_success_at),
                "last_status": stmt.excluded.last_status,
                "last_error": stmt.excluded.last_error,
            },
        )
    )


def newest_change(conn: Connection, table: str, not_after: dt.datetime) -> dt.datetime | None:
    """The newest ``modified_at`` of a synced table that is not after ``not_after``."""
    t = SYNCED[table]
    return conn.execute(select(func.max(t.c.modified_at)).where(t.c.modified_at <= not_after)).scalar()
