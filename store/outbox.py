"""The outbox: side effects recorded before they are done, claimed once with ``FOR UPDATE SKIP LOCKED``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from store.errors import StoreError
from store.models import Outbox

_O = Outbox.__table__


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


def claim(conn: Connection, *, worker: str, now: dt.datetime, kind: str, limit: int = 10) -> list[Job]:
    """Claim up to ``limit`` due jobs of ``kind``; rows another transaction holds are skipped, not awaited."""
    if limit < 1:
        raise StoreError(f"claim limit must be positive, not {limit}")
    due = (
        select(_O.c.id)
        .where(_O.c.kind == kind, _O.c.done_at.is_(None), _O.c.available_at <= now)
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


def complete(conn: Connection, job_id: int, *, now: dt.datetime) -> None:
    """Mark a job done; it is never claimed again."""
    conn.execute(update(Outbox).where(_O.c.id == job_id).values(done_at=now, last_error=None))


def retry_later(conn: Connection, job_id: int, *, error: str, at: dt.datetime) -> None:
    """Leave a job for a later claim after a transient error."""
    conn.execute(update(Outbox).where(_O.c.id == job_id).values(available_at=at, last_error=error[:2000]))
