"""The outbox on real PostgreSQL: one row per key, concurrent claims disjoint, retry and completion."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from store import outbox

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def test_enqueue_is_idempotent_and_claims_are_disjoint(db: Engine) -> None:
    with db.begin() as conn:
        assert outbox.enqueue(conn, kind="writeback", key="p1:w1", payload={"wave": 1}, available_at=NOW)
        assert not outbox.enqueue(conn, kind="writeback", key="p1:w1", payload={"wave": 9}, available_at=NOW)
        for k in range(2, 6):
            outbox.enqueue(conn, kind="writeback", key=f"p1:w{k}", payload={"wave": k}, available_at=NOW)
        outbox.enqueue(
            conn, kind="writeback", key="later", payload={}, available_at=NOW + dt.timedelta(days=1)
        )
    with db.connect() as first, db.connect() as second, first.begin():
        mine = outbox.claim(first, worker="a", now=NOW, kind="writeback", limit=3)
        with second.begin():
            theirs = outbox.claim(second, worker="b", now=NOW, kind="writeback", limit=10)
    assert [j.idempotency_key for j in mine] == ["p1:w1", "p1:w2", "p1:w3"]
    assert mine[0].payload == {"wave": 1}
    assert [j.idempotency_key for j in theirs] == ["p1:w4", "p1:w5"]


def test_retry_and_complete(db: Engine) -> None:
    with db.begin() as conn:
        outbox.enqueue(conn, kind="writeback", key="k", payload={}, available_at=NOW)
        (job,) = outbox.claim(conn, worker="a", now=NOW, kind="writeback")
        outbox.retry_later(conn, job.id, error="429", at=NOW + dt.timedelta(minutes=5))
        assert outbox.claim(conn, worker="a", now=NOW + dt.timedelta(minutes=1), kind="writeback") == []
        (again,) = outbox.claim(conn, worker="a", now=NOW + dt.timedelta(minutes=5), kind="writeback")
        assert again.attempts == 2
        outbox.complete(conn, again.id, now=NOW)
        assert outbox.claim(conn, worker="a", now=NOW + dt.timedelta(days=9), kind="writeback") == []
    with db.begin() as conn, pytest.raises(outbox.StoreError, match="limit must be positive"):
        outbox.claim(conn, worker="a", now=NOW, kind="writeback", limit=0)
