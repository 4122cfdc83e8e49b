"""The outbox: side effects recorded before they are done, claimed once with ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from store.errors import StoreError
from store.models import Outbox

_O = Outbox.__table__

WRITEBACK = "writeback"
"""``outbox.kind`` of a proposal's write-back: one job per approved proposal, key ``writeback:{id}``."""


def writeback_key(proposal_id: int) -> str:
    """The idempotency key of a proposal's write-back job."""
    return f"{WRITEBACK}:{proposal_id}"


@dataclass(frozen=True)
class Job:
    """A claimed outbox row."""

    id: int
    kind: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int


def enqueue(
    conn: Connection, *, kind: str, key: str, payload: dict[str, Any], available_at: dt.datetime
) -> bool:
    """Record a job once per ``key``; True when it is new."""
    if not kind.strip() or not key.strip():
        raise StoreError("an outbox job needs a kind and an idempotency key")
    new = conn.execute(
        pg_insert(Outbox)
        .values(
            kind=kind,
            idempotency_key=key,
            payload=payload,
            created_at=available_at,
            available_at=available_at,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(_O.c.id)
    ).first()
    return new is not None


def claim(
    conn: Connection, *, worker: str, now: dt.datetime, kind: str, limit: int = 10, key: str | None = None
) -> list[Job]:
    """Claim up to ``limit`` due jobs of ``kind`` (only the one of ``key``, if given).

    Rows another transaction holds are skipped, not awaited. The row lock lasts until the caller's
    transaction ends, so a worker that keeps it open while it works is the only one on that job; if the
    worker dies, the lock goes with its connection and the job is due again.
    """
    if limit < 1:
        raise StoreError(f"claim limit must be positive, not {limit}")
    conditions = [_O.c.kind == kind, _O.c.done_at.is_(None), _O.c.available_at <= now]
    if key is not None:
        conditions.append(_O.c.idempotency_key == key)
    due = (
        select(_O.c.id)
        .where(*conditions)
        .order_by(_O.c.available_at, _O.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    rows = conn.execute(
        update(Outbox)
        .where(_O.c.id.in_(due))
        .values(claimed_by=worker, claimed_at=now, attempts=_O.c.attempts + 1)
        .returning(_O.c.id, _O.c.kind, _O.c.idempotency_key, _O.c.payload, _O.c.attempts)
    ).all()
    return sorted((Job(r[0], r[1], r[2], r[3], r[4]) for r in rows), key=lambda j: j.id)


def due_count(conn: Connection, *, kind: str, now: dt.datetime) -> int:
    """How many jobs of ``kind`` are due (the scheduler's cheap check before it runs a worker)."""
    return int(
        conn.execute(
            select(func.count()).where(_O.c.kind == kind, _O.c.done_at.is_(None), _O.c.available_at <= now)
        ).scalar_one()
    )


def complete(conn: Connection, job_id: int, *, now: dt.datetime) -> None:
    """Mark a job done; it is never claimed again."""
    conn.execute(update(Outbox).where(_O.c.id == job_id).values(done_at=now, last_error=None))


def retry_later(conn: Connection, job_id: int, *, error: str, at: dt.datetime) -> None:
    """Leave a job for a later claim after a transient error."""
    conn.execute(update(Outbox).where(_O.c.id == job_id).values(available_at=at, last_error=error[:2000]))
