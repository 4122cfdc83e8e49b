"""Staging and the set-based upsert of synced rows: COPY into a temp ``stage``, one INSERT ... ON CONFLICT.

The upsert never lets an older copy overwrite a newer one (``modified_at``), writes nothing for an
identical copy (no dead row, no index churn), and makes a deleted row live again when the CRM lists it.
A batch that breaks a constraint the checks do not know is stored row by row, the failures named.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    Connection,
    Table,
    Text,
    and_,
    bindparam,
    column,
    false,
    func,
    literal,
    or_,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.sql.dml import Insert

from store.bulk import copy_csv
from store.synced import SYNCED

log = logging.getLogger(__name__)
_COUNTED: Final = {"preserve_rowcount": True}  # an INSERT's rowcount is kept only when asked

POSITION: Final = "_pos"
"""The staged row's position in its batch: how a refused row finds its raw record."""

Failure = tuple[Any, str, int]
"""(record id, reason, position) of a row the database refused."""


def create_stage(conn: Connection, name: str) -> None:
    """The temp table ``stage``: the columns of ``name`` and the position, dropped at commit."""
    conn.execute(
        text(
            f"CREATE TEMP TABLE stage (LIKE {SYNCED[name].name} INCLUDING DEFAULTS, _pos integer) "
            "ON COMMIT DROP"
        )
    )


def stage_rows(conn: Connection, name: str, columns: Sequence[str], rows_csv: bytes) -> None:
    """COPY headerless CSV of ``columns`` and the position into a new ``stage``."""
    create_stage(conn, name)
    copy_csv(conn, "stage", [*columns, POSITION], [rows_csv])


def _stage(columns: Sequence[str]) -> Any:
    return table("stage", *(column(c) for c in (*columns, POSITION)))


def _upsert(t: Table, columns: Sequence[str], source: str, *, one: bool = False) -> Insert:
    """The upsert from ``stage`` into ``t`` by ``source`` (of the row at ``:pos`` alone when ``one``).
    A row written belongs to ``source`` from then on (store/synced.py ``own``)."""
    stage = _stage(columns)
    rows = select(*(stage.c[c] for c in columns), literal(source, Text))
    if one:
        rows = rows.where(stage.c[POSITION] == bindparam("pos"))
    stmt = pg_insert(t).from_select([*columns, "source"], rows)
    new = stmt.excluded
    values = [c for c in columns if c != "id"]
    assigns: dict[str, Any] = {c: new[c] for c in (*values, "source")}
    changed: Any = tuple_(*(t.c[c] for c in (*values, "source"))).is_distinct_from(
        tuple_(*(new[c] for c in (*values, "source")))
    )
    if t.name != "owners":
        assigns["deleted"] = false()
        changed = or_(changed, t.c.deleted)
    assigns["synced_at"] = func.now()
    newer = or_(t.c.modified_at.is_(None), new.modified_at.is_(None), new.modified_at >= t.c.modified_at)
    return stmt.on_conflict_do_update(index_elements=[t.c.id], set_=assigns, where=and_(newer, changed))


def staged_count(conn: Connection) -> int:
    """Rows in ``stage``."""
    return int(conn.execute(select(func.count()).select_from(table("stage"))).scalar_one())


def upsert_stage(
    conn: Connection, name: str, columns: Sequence[str], source: str
) -> tuple[int, list[Failure]]:
    """Upsert the rows of ``stage`` into ``name`` for ``source``; returns (rows written, rows refused).
    Refused rows leave the stage."""
    t = SYNCED[name]
    try:
        with conn.begin_nested():
            return int(conn.execute(_upsert(t, columns, source), execution_options=_COUNTED).rowcount), []
    except DBAPIError as exc:  # a row the checks let through broke a constraint: find it, row by row
        if not isinstance(exc, IntegrityError | DataError):
            raise
    return _upsert_one_by_one(conn, t, columns, source)


def _upsert_one_by_one(
    conn: Connection, t: Table, columns: Sequence[str], source: str
) -> tuple[int, list[Failure]]:
    """The slow path after a failed batch upsert: each staged row alone, failures leave the stage."""
    log.warning("a batch broke a constraint; storing it row by row", extra={"table": t.name})
    stage = _stage(columns)
    rows = conn.execute(select(stage.c.id, stage.c[POSITION]).order_by(stage.c[POSITION])).all()
    single = _upsert(t, columns, source, one=True)
    upserted = 0
    failed: list[Failure] = []
    for rid, pos in rows:
        try:
            with conn.begin_nested():
                upserted += conn.execute(single, {"pos": pos}, execution_options=_COUNTED).rowcount
        except (IntegrityError, DataError) as exc:
            message = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
            failed.append((rid, f"constraint: {message}", pos))
    if failed:
        positions = [pos for _, _, pos in failed]
        conn.execute(stage.delete().where(stage.c[POSITION].in_(positions)))
    return upserted, failed


# --- the first load's deferred copies: later copies of ids it already holds ---------------------------

_deferred_deletes = table("deferred_deletes", column("_seq"), column("id", Text))


def create_deferred(conn: Connection, name: str, columns: Sequence[str]) -> None:
    """Plain temp tables for a first load's deferred rows (with their batch and raw record) and
    deletes: no constraint refuses them here."""
    conn.execute(
        text(
            f"CREATE TEMP TABLE deferred ON COMMIT DROP AS SELECT {', '.join(columns)}, "  # noqa: S608
            f"0 AS _pos, 0 AS _seq, ''::text AS _raw FROM {SYNCED[name].name} WITH NO DATA"
        )
    )
    conn.execute(text("CREATE TEMP TABLE deferred_deletes (_seq integer, id text) ON COMMIT DROP"))


def defer_rows(conn: Connection, columns: Sequence[str], rows_csv: bytes) -> None:
    """COPY headerless CSV of ``columns``, the position, the batch and the raw record into ``deferred``."""
    copy_csv(conn, "deferred", [*columns, POSITION, "_seq", "_raw"], [rows_csv])


def defer_deletes(conn: Connection, seq: int, ids: Sequence[str]) -> None:
    """Keep a batch's deletes for after the rebuild."""
    conn.execute(
        _deferred_deletes.insert().from_select(
            ["_seq", "id"], select(literal(seq), func.unnest(literal(list(ids), ARRAY(Text))))
        )
    )


def deferred_batches(conn: Connection) -> list[int]:
    """The batches with deferred rows or deletes, in order."""
    conn.execute(text("CREATE INDEX ON deferred (_seq)"))
    deferred = table("deferred", column("_seq"))
    seqs = select(deferred.c._seq).union(select(_deferred_deletes.c._seq)).order_by("_seq")
    return [int(s) for s in conn.execute(seqs).scalars()]


def stage_deferred(conn: Connection, columns: Sequence[str], seq: int) -> None:
    """A new ``stage`` from the deferred rows of batch ``seq``."""
    conn.execute(
        text(
            f"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {', '.join(columns)}, _pos "  # noqa: S608
            "FROM deferred WHERE _seq = :seq"
        ),
        {"seq": seq},
    )


def deferred_raws(conn: Connection, seq: int, positions: Sequence[int]) -> dict[int, str]:
    """The raw records of batch ``seq`` at ``positions``."""
    deferred = table("deferred", column("_seq"), column(POSITION), column("_raw", Text))
    rows = conn.execute(
        select(deferred.c[POSITION], deferred.c._raw).where(
            deferred.c._seq == seq, deferred.c[POSITION].in_(list(positions))
        )
    ).all()
    return {int(pos): str(raw) for pos, raw in rows}


def deferred_deletes(conn: Connection, seq: int) -> list[str]:
    """The deferred deletes of batch ``seq``."""
    return list(conn.execute(select(_deferred_deletes.c.id).where(_deferred_deletes.c._seq == seq)).scalars())


def drop_stage(conn: Connection) -> None:
    """Drop ``stage`` and ``owner_change`` before the next deferred batch stages its rows."""
    conn.execute(text("DROP TABLE IF EXISTS stage, owner_change"))
