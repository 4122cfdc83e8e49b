"""The assignment history: who owned an account from when to when, as the syncs record it.

One rule decides the day an assignment starts (:func:`assignment_day`): the account's modification day
in UTC, else the run's day, never before the account's previous assignment. The batch path, the first
load and the repair of accounts without a current row all use it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from typing import Any, Final

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Date,
    Select,
    Text,
    all_,
    and_,
    cast,
    column,
    exists,
    func,
    literal,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from store.bulk import copy_csv, copy_out, restore_keys, strip_keys, temp_table_as
from store.models import Account, Assignment

_A = Account.__table__
_COUNTED: Final = {"preserve_rowcount": True}  # an INSERT's rowcount is kept only when asked
_H = Assignment.__table__

HISTORY_COLUMNS: Final = ("account_id", "owner_id", "start_date", "end_date")
"""The columns of an assignment as an export carries it (empty end date = the current one)."""


def assignment_day(
    modified_at: ColumnElement[Any], today: dt.date, after: ColumnElement[Any] | None = None
) -> ColumnElement[Any]:
    """The day an assignment starts: the modification day (UTC), else ``today``; not before ``after``."""
    day = func.coalesce(cast(func.timezone("UTC", modified_at), Date), cast(literal(today), Date))
    return day if after is None else func.greatest(day, after)


# --- the batch path: owner changes of the staged accounts -------------------------------------------

_stage = table("stage", column("id", Text), column("owner_id", Text), column("modified_at"))
_change = table("owner_change", column("id", Text), column("owner_id", Text), column("day", Date))


def note_owner_changes(conn: Connection, today: dt.date, *, seeded: bool) -> None:
    """Before the upsert overwrites them: the staged accounts whose owner changes, and from which day,
    into the temp table ``owner_change`` (new accounts too, unless an export seeds the history)."""
    t = _A.alias("t")
    h = _H.alias("h")
    changes = (
        select(
            _stage.c.id,
            _stage.c.owner_id,
            assignment_day(_stage.c.modified_at, today, h.c.start_date).label("day"),
        )
        .select_from(
            _stage.outerjoin(t, t.c.id == _stage.c.id).outerjoin(
                h, and_(h.c.account_id == _stage.c.id, h.c.end_date.is_(None))
            )
        )
        .where(
            or_(
                and_(t.c.id.is_(None), literal(not seeded)),
                and_(
                    t.c.id.is_not(None),
                    t.c.owner_id.is_distinct_from(_stage.c.owner_id),
                    or_(
                        t.c.modified_at.is_(None),
                        _stage.c.modified_at.is_(None),
                        _stage.c.modified_at >= t.c.modified_at,
                    ),
                ),
            )
        )
    )
    temp_table_as(conn, "owner_change", changes)


def apply_owner_changes(conn: Connection) -> None:
    """After the upsert: close the current rows of the accounts whose owner changed, open the new ones.
    Changes of rows the upsert refused (they left the stage) are dropped first."""
    conn.execute(_change.delete().where(~exists().where(_stage.c.id == _change.c.id)))
    conn.execute(
        update(Assignment)
        .where(_H.c.account_id == _change.c.id, _H.c.end_date.is_(None))
        .values(end_date=_change.c.day)
    )
    conn.execute(
        pg_insert(Assignment).from_select(
            ["account_id", "owner_id", "start_date", "source"],
            select(_change.c.id, _change.c.owner_id, _change.c.day, literal("sync")).where(
                _change.c.owner_id.is_not(None)
            ),
        )
    )


# --- accounts without a current assignment -----------------------------------------------------------


def _without_current(a: Any) -> ColumnElement[bool]:
    return ~exists().where(_H.c.account_id == a.c.id, _H.c.end_date.is_(None))


def missing(conn: Connection) -> bool:
    """Whether some live account with an owner lacks a current assignment (the partial index of current
    rows answers it)."""
    a = _A.alias("a")
    cond = exists().where(~a.c.deleted, a.c.owner_id.is_not(None), _without_current(a))
    return bool(conn.execute(select(cond)).scalar_one())


def open_missing(conn: Connection, today: dt.date) -> int:
    """Give every live account with an owner and no current row one, from :func:`assignment_day`, not
    before its last end date; returns how many were opened."""
    a = _A.alias("a")
    last = (
        select(_H.c.account_id, func.max(_H.c.end_date).label("end_date"))
        .group_by(_H.c.account_id)
        .subquery("last")
    )
    rows = (
        select(a.c.id, a.c.owner_id, assignment_day(a.c.modified_at, today, last.c.end_date), literal("sync"))
        .select_from(a.outerjoin(last, last.c.account_id == a.c.id))
        .where(a.c.owner_id.is_not(None), ~a.c.deleted, _without_current(a))
    )
    cols = ["account_id", "owner_id", "start_date", "source"]
    return int(
        conn.execute(pg_insert(Assignment).from_select(cols, rows), execution_options=_COUNTED).rowcount
    )


def open_first(conn: Connection, today: dt.date) -> int:
    """The first load: every account with an owner gets its first assignment (the tables were empty,
    truncated in this transaction), COPYed in frozen like the accounts themselves."""
    rows = select(_A.c.id, _A.c.owner_id, assignment_day(_A.c.modified_at, today), literal("sync")).where(
        _A.c.owner_id.is_not(None)
    )
    data = copy_out(conn, rows)
    copy_csv(
        conn, "assignment_history", ["account_id", "owner_id", "start_date", "source"], [data], freeze=True
    )
    return data.count(b"\n")


# --- seeding from an export ----------------------------------------------------------------------------

_hs = table(
    "history_stage",
    column("account_id", Text),
    column("owner_id", Text),
    column("start_date", Date),
    column("end_date", Date),
    column("_pos"),
)


def stage_history(conn: Connection, chunks: Iterable[bytes]) -> None:
    """COPY checked assignment rows (headerless CSV of ``HISTORY_COLUMNS`` and their position in the
    export) into the temp table ``history_stage``."""
    conn.execute(
        text(
            'CREATE TEMP TABLE history_stage (account_id text COLLATE "C", owner_id text COLLATE "C", '
            "start_date date, end_date date, _pos bigint) ON COMMIT DROP"
        )
    )
    copy_csv(conn, "history_stage", [*HISTORY_COLUMNS, "_pos"], chunks)
    conn.execute(text("ANALYZE history_stage"))


# The export's rows against each other and the store, in one pass over the staged rows and one sort, by
# account, start date, end date (latest first, a current row before all) and owner, then export order:
# an exact copy of an earlier row (dropped, not quarantined) follows it in that order; then, for the
# other rows, the references, one current row per account (the last in export order stays) and a
# current row naming the account's owner (what accounts.csv says, stored just before); and whether the
# row starts before an earlier row of its account in that order ends, which flags the accounts the
# overlap walk below has to look at. Flagged is a superset of the accounts the walk drops a row of: such
# a row t starts before the end of some row i that comes earlier by (start, export order); if i comes
# later in this order, they start on the same day and t ends no earlier than i, so i is flagged.
# ``span`` is the end date as the sort needs it (start - end in days, a current row the least), one to
# one with it for a given start. Only the rows that are copies, fail or are flagged are kept.
_CHECK: Final = """
    CREATE TEMP TABLE history_checked ON COMMIT DROP AS
    SELECT * FROM (
      SELECT s._pos, s.account_id, s.copy > 1 AS duplicate, s.start_date < s.earlier_end AS tangled,
        CASE
          WHEN s.copy > 1 THEN NULL
          WHEN a.id IS NULL THEN 'unknown account: ' || s.account_id
          WHEN o.id IS NULL THEN 'unknown owner: ' || s.owner_id
          WHEN s.end_date IS NULL AND s._pos < s.last_current THEN
            'a second current assignment of the account'
          WHEN s.end_date IS NULL AND a.owner_id IS DISTINCT FROM s.owner_id THEN
            'the current assignment names owner ' || s.owner_id || ', the account''s owner is '
            || coalesce(a.owner_id, 'none')
        END AS reason
      FROM (
        SELECT d.*,
          max(d._pos) FILTER (WHERE d.end_date IS NULL AND d.copy = 1) OVER (PARTITION BY d.account_id)
            AS last_current,
          max(coalesce(d.end_date, 'infinity')) OVER (PARTITION BY d.account_id
            ORDER BY d.start_date, d.span, d.owner_id, d._pos
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_end
        FROM (
          SELECT h.*,
            row_number() OVER (PARTITION BY h.account_id, h.start_date, h.span, h.owner_id ORDER BY h._pos)
              AS copy
          FROM (
            SELECT *, CASE WHEN end_date IS NULL THEN -2147483648 ELSE start_date - end_date END AS span
            FROM history_stage
          ) h
        ) d
      ) s
      LEFT JOIN accounts a ON a.id = s.account_id LEFT JOIN owners o ON o.id = s.owner_id
    ) c
    WHERE duplicate OR reason IS NOT NULL OR tangled
"""

# Tenures of one account may not overlap ([start, end), an open end lasting for ever). In order of start
# (then export order) a row that starts before the tenures kept so far end is the one that goes; a row
# that goes does not count against the rows after it, so one bad row takes no good one with it. That is a
# walk per account (recursive, one step per row, all accounts at once, each step an index look-up), taken
# only over the accounts the check flagged (a superset of those whose kept rows overlap: removing rows
# removes no overlap), so over none at all in a clean export.
_WALK: Final = (
    """
    CREATE TEMP TABLE tenure_walk ON COMMIT DROP AS
    SELECT h._pos, h.account_id, h.start_date, coalesce(h.end_date, 'infinity') AS end_date,
      row_number() OVER (PARTITION BY h.account_id ORDER BY h.start_date, h._pos) AS rn
    FROM history_stage h
    WHERE h.account_id IN (SELECT account_id FROM history_checked WHERE tangled)
    """,
    "CREATE INDEX ON tenure_walk (account_id, rn)",
    "ANALYZE tenure_walk",
    """
    INSERT INTO history_drop
    WITH RECURSIVE walk AS (
      SELECT t.account_id, t.rn, t._pos, t.end_date AS kept_end, NULL::date AS clash
      FROM tenure_walk t WHERE t.rn = 1
      UNION ALL
      SELECT t.account_id, t.rn, t._pos,
        CASE WHEN t.start_date < w.kept_end THEN w.kept_end ELSE greatest(w.kept_end, t.end_date) END,
        CASE WHEN t.start_date < w.kept_end THEN w.kept_end END
      FROM walk w JOIN tenure_walk t ON t.account_id = w.account_id AND t.rn = w.rn + 1
    )
    SELECT _pos, 'overlaps an earlier tenure of the account, which ends '
      || CASE WHEN clash = 'infinity' THEN 'never (a current one)' ELSE clash::text END
    FROM walk WHERE clash IS NOT NULL
    """,
)

# The rows that go leave ``history_stage``; the quarantined ones (all but the copies) into ``history_bad``.
_REMOVE: Final = """
    WITH gone AS (
      DELETE FROM history_stage h USING history_drop d WHERE h._pos = d._pos
      RETURNING h._pos, h.account_id, h.owner_id, h.start_date, h.end_date, d.reason
    )
    INSERT INTO history_bad SELECT * FROM gone WHERE reason IS NOT NULL
"""


def take_bad_history(conn: Connection) -> tuple[list[tuple[str, str, dt.date, dt.date | None, str]], int]:
    """Check the rows in ``history_stage`` against each other and the store (docs/csv-format.md,
    "Ownership history"): an exact duplicate is dropped (the first stays), and each row that fails a
    check is removed. Returns the removed rows in export order as (account, owner, start, end, reason),
    and how many duplicates were dropped."""
    for statement in (
        # The check sorts every staged row (400,000 rows of a 200,000-account export): in memory, not in
        # temporary files, for the rest of this transaction.
        "SET LOCAL work_mem = '64MB'",
        "CREATE TEMP TABLE history_bad (_pos bigint, account_id text, owner_id text, start_date date, "
        "end_date date, reason text) ON COMMIT DROP",
        "CREATE TEMP TABLE history_drop (_pos bigint, reason text) ON COMMIT DROP",
        _CHECK,
    ):
        conn.execute(text(statement))
    found = conn.execute(
        text(
            "SELECT count(*) FILTER (WHERE duplicate), count(*) FILTER (WHERE reason IS NOT NULL), "
            "count(*) FILTER (WHERE tangled) FROM history_checked"
        )
    ).one()
    duplicates, failed, tangled = (int(v) for v in found)
    if duplicates or failed:
        conn.execute(
            text(
                "INSERT INTO history_drop SELECT _pos, reason FROM history_checked "
                "WHERE duplicate OR reason IS NOT NULL"
            )
        )
        conn.execute(text(_REMOVE))
    if tangled:  # the overlap walk sees only the rows the check kept
        conn.execute(text("TRUNCATE history_drop"))
        for statement in _WALK:
            conn.execute(text(statement))
        conn.execute(text(_REMOVE))
    rows = conn.execute(
        text("SELECT account_id, owner_id, start_date, end_date, reason FROM history_bad ORDER BY _pos")
    ).all()
    return [tuple(r) for r in rows], duplicates


def clean_accounts(also_bad: Collection[str]) -> Select[tuple[str]]:
    """After :func:`take_bad_history`: the accounts with rows left in ``history_stage`` and none removed
    (nor among ``also_bad``, the accounts of rows that failed before staging)."""
    bad = table("history_bad", column("account_id", Text))
    return (
        select(_hs.c.account_id)
        .distinct()
        .where(
            ~exists().where(bad.c.account_id == _hs.c.account_id),
            _hs.c.account_id != all_(literal(sorted(also_bad), ARRAY(Text))),
        )
    )


def _is_empty(conn: Connection) -> bool:
    return bool(conn.execute(select(~exists().select_from(_H))).scalar_one())


def seed_staged(conn: Connection) -> int:
    """Insert the staged rows that neither repeat nor overlap a stored tenure of their account (the
    store's history wins; a first import stores them all); returns the rows inserted."""
    far = literal(dt.date.max, Date)
    clash = exists().where(
        _H.c.account_id == _hs.c.account_id,
        or_(
            and_(_H.c.start_date == _hs.c.start_date, _H.c.end_date.is_not_distinct_from(_hs.c.end_date)),
            and_(
                _hs.c.start_date < func.coalesce(_H.c.end_date, far),
                _H.c.start_date < func.coalesce(_hs.c.end_date, far),
            ),
        ),
    )
    rows = select(
        _hs.c.account_id, _hs.c.owner_id, _hs.c.start_date, _hs.c.end_date, literal("import")
    ).where(~clash)
    cols = ["account_id", "owner_id", "start_date", "end_date", "source"]
    # Into an empty history (a first import) the rows go in without keys and indexes, rebuilt once.
    stripped = strip_keys(conn, ["assignment_history"]) if _is_empty(conn) else None
    seeded = int(
        conn.execute(pg_insert(Assignment).from_select(cols, rows), execution_options=_COUNTED).rowcount
    )
    if stripped is not None:
        restore_keys(conn, stripped)
    if seeded:  # a first import just filled the table: plan the next statements on real statistics
        conn.execute(text("ANALYZE assignment_history"))
    return seeded
