"""The inputs of the metrics as of a date D, loaded from Postgres as DataFrames.

Postgres does the set-based work: it decides who owned each account at D (assignment history), which
opportunities were open, closed and won at D, and sums money and counts per territory exactly. Two
queries run side by side on two connections that share one snapshot: the opportunities summed per
owner, and the accounts grouped by owner and tier with their coordinates as ``bytea`` blobs of
fixed-width numbers (``string_agg`` of ``float8send``), read with ``np.frombuffer``: a few thousand
rows instead of a million, and no per-row Python. The rules for the past are in docs/metrics.md ("As of
a past date"); how the work is split, and why, under "Performance"."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import psycopg
from sqlalchemy import Connection, Engine, text

from monitor.metrics import (
    ACCOUNT_COLUMNS,
    BOOK_SUMS,
    OWNER_COLUMNS,
    PIPELINE_COLUMNS,
    TIERS,
    WON_WINDOW_DAYS,
)

log = logging.getLogger(__name__)

# Territories as of D: owners active today, plus owners who held an account at D through a tenure that
# has since ended (reps who have left since D still had a territory at D).
_TERRITORIES = text(
    """
    SELECT o.id AS owner_id, o.name, o.capacity::float8 AS capacity, o.quota::float8 AS quota,
           o.home_lat, o.home_lon
    FROM owners o
    WHERE o.active
       OR EXISTS (
            SELECT 1 FROM assignment_history h
            WHERE h.owner_id = o.id AND h.end_date IS NOT NULL
              AND coalesce(h.end_date, h.start_date) > :as_of  -- what the as-of index serves
              AND h.start_date <= :as_of AND h.end_date > :as_of)
    ORDER BY o.id
    """
)

# The tenures that decide ownership at D where it is not the account's current owner: the ended tenure
# covering D ([start_date, end_date), latest start wins), else a current tenure that began after D (no
# owner at D). Both have coalesce(end_date, start_date) > D: the as-of index makes a recent D cheap.
_MOVED = """
moved AS (
    SELECT DISTINCT ON (account_id) account_id,
           CASE WHEN end_date IS NULL THEN NULL ELSE owner_id END AS owner_id
    FROM assignment_history
    WHERE coalesce(end_date, start_date) > %(as_of)s
      AND ((start_date <= %(as_of)s AND end_date > %(as_of)s)
           OR (end_date IS NULL AND start_date > %(as_of)s))
    ORDER BY account_id, (end_date IS NULL), start_date DESC, id DESC
)
"""

# The accounts grouped by owner at D and tier (a few thousand groups): the owner at D is the moved
# tenure's owner, else the account's current owner (grouped on both, so that the planner sees keys with
# known statistics). ARR and potential are summed exactly per owner (numeric, over the owner's groups)
# and the largest ARR taken; the coordinates come per account as bytea blobs of float8, and with
# {position} the account's rank by id when the caller wants rows in id order.
_ACCOUNTS = (
    "WITH"  # noqa: S608 (built from constants only, no input)
    + _MOVED
    + """, book AS (
    SELECT a.owner_id AS current_owner, m.account_id IS NOT NULL AS moved, m.owner_id AS owner_at_d,
           a.tier, coalesce(a.arr, 0) AS arr, coalesce(a.potential, 0) AS potential,
           coalesce(a.lat, 'NaN')::float8 AS lat, coalesce(a.lon, 'NaN')::float8 AS lon{position}
    FROM accounts a
    LEFT JOIN moved m ON m.account_id = a.id
    WHERE NOT a.deleted
)
SELECT CASE WHEN moved THEN owner_at_d ELSE current_owner END AS owner_id, tier, count(*)::int8,
       (sum(sum(arr)) OVER territory)::float8, (sum(sum(potential)) OVER territory)::float8,
       (max(max(arr)) OVER territory)::float8,
       string_agg(float8send(lat), ''::bytea), string_agg(float8send(lon), ''::bytea){positions}
FROM book
GROUP BY current_owner, moved, owner_at_d, tier
WINDOW territory AS (PARTITION BY CASE WHEN moved THEN owner_at_d ELSE current_owner END)
"""
)
_POSITION: Final = {
    "position": ", row_number() OVER (ORDER BY a.id) AS position",
    "positions": ", string_agg(int8send(position), ''::bytea)",
}

# The opportunities that count at D, each flagged closed at D (closed today with a close date on or
# before D, or none) and in the won window (D - 365 days, D]: the one definition of docs/metrics.md.
_OPPORTUNITIES_AT_D = """
        SELECT account_id, amount, coalesce(probability, 0) AS probability, is_won,
               is_closed AND (close_date IS NULL OR close_date <= %(as_of)s) AS closed,
               is_closed AND close_date <= %(as_of)s
                   AND close_date > %(as_of)s::date - %(window)s AS in_window
        FROM opportunities
        WHERE NOT deleted
          AND (NOT is_closed OR close_date > %(as_of)s::date - %(window)s)
"""
_PIPELINE_SUMS = """
           sum(o.amount) FILTER (WHERE NOT o.closed) AS open_amount,
           sum(o.amount * o.probability) FILTER (WHERE NOT o.closed) AS weighted_amount,
           sum(o.amount) FILTER (WHERE o.in_window AND o.is_won) AS won_amount,
           count(*) FILTER (WHERE o.in_window AND o.is_won) AS won_count,
           count(*) FILTER (WHERE o.in_window) AS closed_count"""

# Opportunities as of D summed per owner at D, exactly (numeric), then handed over as float8: closed at
# D when closed today with a close date on or before D (or none), else open; won/closed counts over
# (D - 365 days, D]. The inner grouping has a few thousand groups with known statistics, so Postgres
# aggregates in parallel workers; the outer one folds moved accounts onto their owner at D.
_PIPELINE = (
    "WITH"  # noqa: S608 (built from constants only, no input)
    + _MOVED
    + """, per_owner AS (
    SELECT a.owner_id AS current_owner, m.account_id IS NOT NULL AS moved, m.owner_id AS owner_at_d,"""
    + _PIPELINE_SUMS
    + """
    FROM ("""
    + _OPPORTUNITIES_AT_D
    + """    ) o
    JOIN accounts a ON a.id = o.account_id
    LEFT JOIN moved m ON m.account_id = a.id
    WHERE NOT a.deleted
    GROUP BY 1, 2, 3
)
SELECT CASE WHEN moved THEN owner_at_d ELSE current_owner END AS owner_id,
       coalesce(sum(open_amount), 0)::float8, coalesce(sum(weighted_amount), 0)::float8,
       coalesce(sum(won_amount), 0)::float8, sum(won_count)::float8, sum(closed_count)::float8
FROM per_owner
GROUP BY 1
"""
)

# One row per non-deleted account as of D, in id order: its owner at D, its book columns and its
# opportunities summed per account with the same definitions as _PIPELINE, plus the highest
# probability among its opportunities open at D (what the rebalancer's deal lock reads).
_ACCOUNT_ROWS = (
    "WITH"  # noqa: S608 (built from constants only, no input)
    + _MOVED
    + """, per_account AS (
    SELECT o.account_id,"""
    + _PIPELINE_SUMS
    + """,
           max(o.probability) FILTER (WHERE NOT o.closed) AS max_open_probability
    FROM ("""
    + _OPPORTUNITIES_AT_D
    + """    ) o
    GROUP BY o.account_id
)
SELECT a.id, CASE WHEN m.account_id IS NOT NULL THEN m.owner_id ELSE a.owner_id END AS owner_id, a.tier,
       coalesce(a.arr, 0)::float8, coalesce(a.potential, 0)::float8,
       coalesce(a.lat, 'NaN')::float8, coalesce(a.lon, 'NaN')::float8,
       coalesce(p.open_amount, 0)::float8, coalesce(p.weighted_amount, 0)::float8,
       coalesce(p.won_amount, 0)::float8, coalesce(p.won_count, 0)::float8,
       coalesce(p.closed_count, 0)::float8, p.max_open_probability::float8
FROM accounts a
LEFT JOIN moved m ON m.account_id = a.id
LEFT JOIN per_account p ON p.account_id = a.id
WHERE NOT a.deleted
ORDER BY a.id
"""
)
ACCOUNT_ROW_COLUMNS: Final = (*ACCOUNT_COLUMNS, "max_open_probability")

# Per-account columns of the accounts query and their wire types: float8 coordinates, int8 rank by id.
_FIELDS: Final = (("lat", ">f8"), ("lon", ">f8"), ("position", ">i8"))
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


@dataclass(frozen=True)
class Inputs:
    """What the metrics need as of ``as_of``: the territories, one row per account, and sums.

    ``accounts`` (``owner_id``, ``tier``, ``lat``, ``lon``): ``owner_id`` is categorical over
    ``owners.index`` (NaN for accounts outside every territory, counted in ``unassigned``). ``sums``:
    what Postgres summed per territory (index ``owners.index``, ``TERRITORY_SUMS``).
    """

    as_of: dt.date
    owners: pd.DataFrame
    accounts: pd.DataFrame
    sums: pd.DataFrame

    @property
    def unassigned(self) -> int:
        """Non-deleted accounts that belong to no territory at ``as_of``."""
        return int(self.accounts["owner_id"].isna().sum())


def column_arrays(blobs: Sequence[Sequence[bytes | None]]) -> dict[str, np.ndarray]:
    """The per-account columns from each group's ``bytea`` blobs, concatenated in group order.

    ``blobs`` holds the parts of each column of ``_FIELDS`` in order; trailing columns may be left out.
    """
    columns = {}
    for (name, kind), parts in zip(_FIELDS, blobs, strict=False):
        values = np.frombuffer(b"".join(p or b"" for p in parts), dtype=kind)
        columns[name] = values.astype(np.int64 if name == "position" else np.float64)
    sizes = {len(v) for v in columns.values()}
    if len(sizes) > 1:
        raise ValueError(f"the account columns came back with different lengths: {sorted(sizes)}")
    return columns


def load_territories(conn: Connection, as_of: dt.date) -> pd.DataFrame:
    """The territories as of ``as_of``: index owner id, columns ``OWNER_COLUMNS``."""
    rows = conn.execute(_TERRITORIES, {"as_of": as_of}).all()
    frame = pd.DataFrame(rows, columns=["owner_id", *OWNER_COLUMNS])
    for column in OWNER_COLUMNS[1:]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
    frame["owner_id"] = frame["owner_id"].astype(object)
    frame["name"] = frame["name"].astype(object)
    return frame.set_index("owner_id")


def _cursor(conn: Connection) -> psycopg.Cursor[Any]:
    """A psycopg cursor on ``conn``'s driver connection, inside its transaction."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    cur: psycopg.Cursor[Any] = raw.cursor()
    # No JIT: compiling costs more than it saves on these one-pass queries.
    cur.execute("SET LOCAL jit = off")
    cur.execute("SET LOCAL work_mem = '256MB'")
    return cur


def _params(as_of: dt.date) -> dict[str, object]:
    return {"as_of": as_of, "window": WON_WINDOW_DAYS}


@dataclass(frozen=True)
class Books:
    """The accounts as of D: one row per account and their ``BOOK_SUMS`` per territory."""

    accounts: pd.DataFrame
    sums: pd.DataFrame


def load_books(conn: Connection, as_of: dt.date, territories: pd.Index, *, by_id: bool = False) -> Books:
    """Every non-deleted account as of ``as_of``, and ``BOOK_SUMS`` per territory (index ``territories``).

    ``accounts`` has the columns ``owner_id``, ``tier``, ``lat`` and ``lon``; its rows come grouped by
    owner and tier unless ``by_id`` (what a row-by-row comparison needs).
    """
    query = _ACCOUNTS.format(**(_POSITION if by_id else dict.fromkeys(_POSITION, "")))
    with _cursor(conn) as cur:
        rows = cur.execute(query, _params(as_of), binary=True).fetchall()
    owner_code = territories.get_indexer(pd.Index([r[0] for r in rows], dtype=object))
    tier_code = pd.Index(TIERS).get_indexer(pd.Index([r[1] for r in rows], dtype=object))
    counts = np.array([r[2] for r in rows], dtype=np.int64)
    fields = len(_FIELDS) if by_id else len(_FIELDS) - 1
    values = column_arrays([[r[6 + i] for r in rows] for i in range(fields)])
    if len(values["lat"]) != counts.sum():
        raise ValueError("the account columns do not add up to the group counts")
    order = np.argsort(values["position"], kind="stable") if by_id else slice(None)
    accounts = pd.DataFrame(
        {
            "owner_id": pd.Categorical.from_codes(
                np.repeat(owner_code, counts)[order], dtype=pd.CategoricalDtype(territories)
            ),
            "tier": pd.Categorical.from_codes(
                np.repeat(tier_code, counts)[order], dtype=pd.CategoricalDtype(list(TIERS))
            ),
            "lat": values["lat"][order],
            "lon": values["lon"][order],
        }
    )
    known = owner_code >= 0
    sums = pd.DataFrame(
        [r[3:6] for r, k in zip(rows, known, strict=True) if k], columns=list(BOOK_SUMS), dtype=np.float64
    )
    sums.index = territories[owner_code[known]]
    sums = sums.groupby(level=0).first().reindex(territories, fill_value=0.0)
    return Books(accounts=accounts, sums=sums)


def load_pipeline(conn: Connection, as_of: dt.date, territories: pd.Index) -> pd.DataFrame:
    """The opportunities as of ``as_of`` summed per territory: index ``territories``, ``PIPELINE_COLUMNS``."""
    with _cursor(conn) as cur:
        # Parallel workers for the join and the partial aggregates even on a small server.
        cur.execute("SET LOCAL parallel_setup_cost = 100")
        rows = cur.execute(_PIPELINE, _params(as_of), binary=True).fetchall()
    frame = pd.DataFrame(rows, columns=["owner_id", *PIPELINE_COLUMNS]).astype(
        {c: np.float64 for c in PIPELINE_COLUMNS}
    )
    frame = frame.loc[frame["owner_id"].notna()].set_index("owner_id")
    return frame.reindex(territories, fill_value=0.0)


def _pipeline_in_snapshot(
    engine: Engine, snapshot: str, as_of: dt.date, territories: pd.Index
) -> pd.DataFrame:
    """:func:`load_pipeline` on a connection of its own that sees the exported ``snapshot``."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise RuntimeError(f"not a snapshot id: {snapshot!r}")
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as helper:
        helper.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        try:
            return load_pipeline(helper, as_of, territories)
        finally:
            helper.rollback()


def load_account_rows(conn: Connection, as_of: dt.date) -> pd.DataFrame:
    """Every non-deleted account as of ``as_of``, one row each (index ``account_id``, in id order).

    The columns are ``ACCOUNT_ROW_COLUMNS``: the per-account inputs of
    ``monitor.metrics.territory_metrics`` (so the metrics of any assignment of these accounts are that
    function of these rows, and a move changes exactly its two territories), and
    ``max_open_probability`` (NaN without an open opportunity). ``owner_id`` is the owner at ``as_of``.
    """
    with _cursor(conn) as cur:
        rows = cur.execute(_ACCOUNT_ROWS, _params(as_of), binary=True).fetchall()
    frame = pd.DataFrame(rows, columns=["account_id", *ACCOUNT_ROW_COLUMNS])
    numbers = [c for c in ACCOUNT_ROW_COLUMNS if c not in ("owner_id", "tier")]
    frame[numbers] = frame[numbers].astype(np.float64)
    return frame.set_index("account_id")


def load_inputs(conn: Connection, as_of: dt.date, *, by_id: bool = False) -> Inputs:
    """The territories, accounts and pipeline as of ``as_of``.

    The accounts are read in the caller's transaction while a second connection sums the
    opportunities on the other core, in the snapshot the caller's transaction exports: it does not see
    the caller's uncommitted changes, and in READ COMMITTED each statement sees what was committed
    when it started (use REPEATABLE READ for one snapshot throughout).
    """
    owners = load_territories(conn, as_of)
    snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline") as pool:
        pipeline = pool.submit(_pipeline_in_snapshot, conn.engine, snapshot, as_of, owners.index)
        books = load_books(conn, as_of, owners.index, by_id=by_id)
        per_territory = pipeline.result()
    log.debug("loaded metric inputs", extra={"as_of": as_of.isoformat(), "accounts": len(books.accounts)})
    return Inputs(as_of=as_of, owners=owners, accounts=books.accounts, sums=books.sums.join(per_territory))
