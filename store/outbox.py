"""The outbox: side effects recorded before they are done, claimed once with ``FOR UPDATE SKIP LOCKED``.

Two kinds of use: jobs claimed one by one (:func:`claim`, the write-back worker), and the sync requests
webhooks queue, which the scheduler's leader drains many at a time for one sync
(:func:`claim_sync_requests`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    Text,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
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


# --- webhook sync requests: queued by any replica, drained by the leader ------------------------------

SYNC_REQUEST_KIND: Final = "sync_request"
"""``outbox.kind`` of the sync requests webhooks queue; the leader drains them."""


@dataclass(frozen=True)
class SyncRequest:
    """A request to sync ``objects``; ``key`` identifies the delivery (a retry carries the same key)."""

    key: str
    objects: tuple[str, ...]
    payload: Mapping[str, Any] = field(default_factory=dict)

    def as_payload(self) -> dict[str, Any]:
        """The outbox payload: the objects, sorted, and the rest as JSON values."""
        payload: dict[str, Any] = json.loads(
            json.dumps({"objects": sorted(self.objects), **self.payload}, default=str)
        )
        return payload


def _queue_statement() -> Any:
    """The insert of a batch of sync requests, their rows one JSON parameter (``rows``)."""
    given = (
        func.jsonb_to_recordset(bindparam("rows", type_=JSONB))
        .table_valued(column("key", Text), column("payload", JSONB))
        .render_derived(name="r", with_types=True)
    )
    return (
        pg_insert(Outbox)
        .from_select(
            ["kind", "idempotency_key", "payload"],
            select(literal(SYNC_REQUEST_KIND), given.c.key, given.c.payload),
        )
        .on_conflict_do_nothing(index_elements=[_O.c.idempotency_key])
        .returning(_O.c.idempotency_key)
    )


# Built once: the same statement whatever the number of requests, compiled once and cached, and not
# rebuilt per webhook (a multi-row VALUES is a new statement for every batch size; compiling it was
# most of a webhook's time under load, building this one a third of what is left).
_QUEUE: Final = _queue_statement()


def queue_sync_requests(engine: Engine, requests: Sequence[SyncRequest]) -> set[str]:
    """Record requests in one transaction; returns the keys that were new (the rest were queued before)."""
    if not requests:
        return set()
    rows = [{"key": r.key, "payload": r.as_payload()} for r in requests]
    with engine.begin() as conn:
        return set(conn.execute(_QUEUE, {"rows": rows}).scalars())


def queue_sync_request(engine: Engine, objects: Iterable[str], key: str, payload: Mapping[str, Any]) -> bool:
    """Record one request; False when the same delivery (``key``) was queued before."""
    return bool(queue_sync_requests(engine, [SyncRequest(key, tuple(objects), payload)]))


def _due_requests() -> Any:
    return (_O.c.kind == SYNC_REQUEST_KIND) & _O.c.done_at.is_(None) & (_O.c.available_at <= func.now())


def pending_sync_requests(engine: Engine) -> int:
    """How many queued sync requests wait (the drain job's cheap check)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(_O).where(_due_requests())).scalar_one())


@dataclass(frozen=True)
class ClaimedRequests:
    """Sync requests claimed (row-locked) in an open transaction: mark them done, or roll back."""

    conn: Connection
    ids: tuple[int, ...]
    objects: frozenset[str]


@contextlib.contextmanager
def claim_sync_requests(engine: Engine, holder: str, limit: int = 10_000) -> Iterator[ClaimedRequests]:
    """Lock the due sync requests (SKIP LOCKED) for one sync; done when the block exits cleanly.

    The rows stay locked in this transaction while the sync runs: if the process dies, the lock goes
    with it and the requests are pending again, so none is lost and none is claimed twice. When the
    block raises, they are put back with a growing delay (at most five minutes) and the error.
    """
    ids: list[int] = []
    with engine.connect() as conn:
        try:
            with conn.begin():
                rows = conn.execute(
                    select(_O.c.id, _O.c.payload)
                    .where(_due_requests())
                    .order_by(_O.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).all()
                ids = [int(r.id) for r in rows]
                objects = frozenset(o for r in rows for o in r.payload.get("objects", ()))
                yield ClaimedRequests(conn, tuple(ids), objects)
                if ids:
                    conn.execute(
                        update(Outbox)
                        .where(_O.c.id.in_(ids))
                        .values(
                            done_at=func.now(),
                            claimed_by=holder,
                            claimed_at=func.now(),
                            attempts=_O.c.attempts + 1,
                        )
                    )
        except BaseException as exc:
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                delay = func.least(func.power(2, _O.c.attempts + 1), 300) * literal_column(
                    "interval '1 second'"
                )
                conn.execute(
                    update(Outbox)
                    .where(_O.c.id.in_(ids), _O.c.done_at.is_(None))
                    .values(
                        attempts=_O.c.attempts + 1,
                        last_error=f"{type(exc).__name__}: {exc}"[:2000],
                        available_at=func.now() + delay,
                    )
                )
            raise
