"""The quarantine: records a sync could not store, with their reason and the record as the CRM sent it.

One open row per (source, object, record id): a record rejected again refreshes its row, one stored
cleanly later resolves it. A record without an id is matched on its raw form instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Select,
    Text,
    any_,
    cast,
    column,
    exists,
    func,
    literal,
    or_,
    select,
    table,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from store.models import Quarantine

_Q = Quarantine.__table__
_stage = table("stage", column("id", Text))

Rejection = tuple[str | None, str, str]
"""(record id or None, reason, the raw record as JSON text)."""


def put(conn: Connection, *, source: str, obj: str, run_id: int, rejected: Sequence[Rejection]) -> None:
    """Insert or refresh the open quarantine rows of ``rejected`` (the last of one id wins)."""
    if not rejected:
        return
    by_key: dict[Any, dict[str, Any]] = {}
    for rid, reason, raw in rejected:
        key = rid if rid is not None else ("", raw)
        by_key[key] = {"record_id": rid, "reason": reason, "raw": raw}
    given = (
        func.jsonb_to_recordset(literal(list(by_key.values()), JSONB))
        .table_valued(column("record_id", Text), column("reason", Text), column("raw", Text))
        .render_derived(name="x", with_types=True)
    )
    r = select(given.c.record_id, given.c.reason, cast(given.c.raw, JSONB).label("raw")).cte("r")
    seen = (
        update(Quarantine)
        .where(
            r.c.record_id.is_(None),
            _Q.c.record_id.is_(None),
            _Q.c.source == source,
            _Q.c.object == obj,
            _Q.c.resolved_at.is_(None),
            _Q.c.raw == r.c.raw,
        )
        .values(last_seen_at=func.now(), sync_run_id=run_id, reason=r.c.reason)
        .returning(_Q.c.raw)
        .cte("seen")
    )
    rows = select(literal(source), literal(obj), r.c.record_id, r.c.reason, r.c.raw, literal(run_id)).where(
        or_(r.c.record_id.is_not(None), ~exists().where(seen.c.raw == r.c.raw))
    )
    stmt = pg_insert(Quarantine).from_select(
        ["source", "object", "record_id", "reason", "raw", "sync_run_id"], rows
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[_Q.c.source, _Q.c.object, _Q.c.record_id],
        index_where=_Q.c.resolved_at.is_(None),
        set_={
            "reason": stmt.excluded.reason,
            "raw": stmt.excluded.raw,
            "last_seen_at": func.now(),
            "sync_run_id": stmt.excluded.sync_run_id,
        },
    )
    conn.execute(stmt.add_cte(r).add_cte(seen))


def _open(source: str, obj: str) -> Any:
    return (_Q.c.source == source) & (_Q.c.object == obj) & _Q.c.resolved_at.is_(None)


def resolve_staged(conn: Connection, source: str, obj: str) -> None:
    """Resolve the open rows of the ids in the temp table ``stage``: they were stored cleanly now."""
    conn.execute(
        update(Quarantine)
        .where(_open(source, obj), _Q.c.record_id == _stage.c.id)
        .values(resolved_at=func.now())
    )


def resolve(conn: Connection, source: str, obj: str, ids: Sequence[str]) -> None:
    """Resolve the open rows of ``ids``: they were stored cleanly now."""
    conn.execute(
        update(Quarantine)
        .where(_open(source, obj), _Q.c.record_id == any_(literal(list(ids), ARRAY(Text))))
        .values(resolved_at=func.now())
    )


def resolve_by_field(conn: Connection, source: str, obj: str, field: str, values: Select[tuple[str]]) -> None:
    """Resolve the open rows whose raw record's ``field`` is one of the ``values`` the query gives (an
    account's history rows, say, once an import carries that account's history cleanly)."""
    conn.execute(
        update(Quarantine)
        .where(_open(source, obj), _Q.c.raw[field].astext.in_(values))
        .values(resolved_at=func.now())
    )


def has_open(conn: Connection, source: str, obj: str) -> bool:
    """Whether some row of ``source`` and ``obj`` is unresolved."""
    return bool(conn.execute(select(exists().where(_open(source, obj)))).scalar_one())
