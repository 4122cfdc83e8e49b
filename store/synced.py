"""The tables a sync writes (owners, accounts, opportunities): which rows are live, the soft delete, the
sweep of rows a full snapshot no longer lists, and the id look-ups the reference checks need.

A row is never removed: an owner gone from the CRM becomes inactive (``active = false``), an account
or opportunity deleted (``deleted = true``); both come back when the CRM lists them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Select,
    Table,
    Text,
    any_,
    column,
    exists,
    func,
    literal,
    select,
    table,
    text,
    update,
)

from store.bulk import copy_csv, temp_table_as
from store.models import Account, Opportunity, Owner

SYNCED: Final[Mapping[str, Table]] = {
    "owners": Owner.__table__,  # type: ignore[dict-item]
    "accounts": Account.__table__,  # type: ignore[dict-item]
    "opportunities": Opportunity.__table__,  # type: ignore[dict-item]
}
"""The tables a sync writes, by object name, in sync order (parents first)."""

_present = table("present", column("id", Text))
_absent_ids = table("absent", column("id", Text))


def _ids(values: Sequence[str]) -> Any:
    return literal(list(values), ARRAY(Text))


def live(t: Table) -> ColumnElement[bool]:
    """Whether a row of ``t`` is live: an active owner, an account or opportunity not deleted."""
    return t.c.active if t.name == "owners" else ~t.c.deleted


def _gone(t: Table) -> dict[str, Any]:
    """The soft delete's values, ``synced_at`` included."""
    return {"active" if t.name == "owners" else "deleted": t.name != "owners", "synced_at": func.now()}


def own(t: Table, source: str) -> ColumnElement[bool]:
    """Whether a row of ``t`` is ``source``'s: the one rule of every delete pass (docs/sync.md,
    "Deletes"): a source deletes, counts for the mass-delete guard and revives only the rows it last
    wrote, never another source's (nor a row whose source is unknown)."""
    return t.c.source == source


def soft_delete(conn: Connection, name: str, ids: Sequence[str], source: str) -> int:
    """Soft-delete the live rows of ``ids`` that are ``source``'s; returns how many changed."""
    if not ids:
        return 0
    t = SYNCED[name]
    where = (t.c.id == any_(_ids(ids)), live(t), own(t, source))
    return int(conn.execute(update(t).where(*where).values(_gone(t))).rowcount)


def existing_ids(conn: Connection, name: str, ids: Iterable[str]) -> set[str]:
    """Those of ``ids`` stored in ``name`` (live or not: a reference to a deleted row is known)."""
    wanted = list(set(ids))
    if not wanted:
        return set()
    t = SYNCED[name]
    return set(conn.execute(select(t.c.id).where(t.c.id == any_(_ids(wanted)))).scalars())


def all_ids(conn: Connection, name: str) -> set[str]:
    """Every id of ``name`` (one array: several times faster than a row per id)."""
    t = SYNCED[name]
    return set(
        conn.execute(select(func.coalesce(func.array_agg(t.c.id), literal([], ARRAY(Text))))).scalar_one()
    )


def is_empty(conn: Connection, name: str) -> bool:
    """Whether ``name`` holds no row at all, deleted ones included."""
    t = SYNCED[name]
    return bool(conn.execute(select(~exists().select_from(t))).scalar_one())


def stage_present(conn: Connection, chunks: Iterable[bytes]) -> int:
    """COPY a snapshot's ids (headerless one-column CSV) into the temp table ``present``; their count."""
    conn.execute(text('CREATE TEMP TABLE present (id text COLLATE "C") ON COMMIT DROP'))
    copy_csv(conn, "present", ["id"], chunks)
    count = int(conn.execute(select(func.count()).select_from(_present)).scalar_one())
    if count:
        conn.execute(text("ANALYZE present"))
    return count


def _absent(t: Table) -> ColumnElement[bool]:
    return ~exists().where(_present.c.id == t.c.id)


def absent_rows(name: str, source: str) -> Select[tuple[str]]:
    """The ids of ``source``'s live rows absent from ``present``: one anti-join (a hash of the listed
    ids, a scan of the table), however often the export lists an id."""
    t = SYNCED[name]
    return select(t.c.id).where(live(t), own(t, source), _absent(t))


def take_absent(conn: Connection, name: str, source: str) -> tuple[int, int]:
    """Put the ids :func:`absent_rows` gives into the temp table ``absent``; returns (``source``'s live
    rows, those absent), what the mass-delete guard weighs before :func:`delete_absent` deletes them."""
    t = SYNCED[name]
    # The listed ids are hashed in memory, not in batches on disk.
    conn.execute(text("SET LOCAL work_mem = '64MB'"))
    temp_table_as(conn, "absent", absent_rows(name, source))
    total = conn.execute(select(func.count()).select_from(t).where(live(t), own(t, source))).scalar_one()
    return int(total), int(conn.execute(select(func.count()).select_from(_absent_ids)).scalar_one())


def delete_absent(conn: Connection, name: str, source: str) -> int:
    """Soft-delete the rows :func:`take_absent` found; returns how many."""
    t = SYNCED[name]
    where = (t.c.id.in_(select(_absent_ids.c.id)), live(t), own(t, source))
    return int(conn.execute(update(t).where(*where).values(_gone(t))).rowcount)


def revive_present(conn: Connection, name: str, source: str) -> int:
    """Make ``source``'s deleted accounts or opportunities listed in ``present`` live again; returns
    how many."""
    t = SYNCED[name]
    where = (t.c.deleted, own(t, source), ~_absent(t))
    return int(conn.execute(update(t).where(*where).values(deleted=False, synced_at=func.now())).rowcount)
