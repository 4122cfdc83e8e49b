"""The inputs of the metrics as of a date D, loaded from Postgres as DataFrames.

Postgres does the set-based work: it decides who owned each account at D (assignment history), which
opportunities were open, closed and won at D, and aggregates them per account. The account rows come
back column by column, each column one ``bytea`` of fixed-width binary numbers (``string_agg`` of
``int8send`` ...), read with ``np.frombuffer``: a handful of messages instead of a million rows, and no
per-row Python. The rules for the past are in docs/metrics.md ("As of a past date").
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from monitor.metrics import OWNER_COLUMNS, TIERS, WON_WINDOW_DAYS

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
              AND h.start_date <= :as_of AND h.end_date > :as_of)
    ORDER BY o.id
    """
)

# One fixed-width row per non-deleted account. Ownership at D: the ended tenure covering D
# ([start_date, end_date), latest start wins); none when the account's current tenure began after D and
# no ended tenure covers D; otherwise the account's current owner. Opportunities at D: closed when closed
# today with a close date on or before D (or none), else open; won/closed counts over (D - 365 days, D].
_ACCOUNTS = """
WITH moved AS (
    SELECT DISTINCT ON (account_id) account_id,
           CASE WHEN end_date IS NULL THEN NULL ELSE owner_id END AS owner_id
    FROM assignment_history
    WHERE (start_date <= %(as_of)s AND end_date > %(as_of)s)
       OR (end_date IS NULL AND start_date > %(as_of)s)
    ORDER BY account_id, (end_date IS NULL), start_date DESC, id DESC
),
opp AS (
    SELECT account_id,
           sum(amount) FILTER (WHERE NOT closed) AS open_amount,
           sum(amount * probability) FILTER (WHERE NOT closed) AS weighted_amount,
           sum(amount) FILTER (WHERE in_window AND is_won) AS won_amount,
           count(*) FILTER (WHERE in_window AND is_won) AS won_count,
           count(*) FILTER (WHERE in_window) AS closed_count
    FROM (
        SELECT account_id, amount, coalesce(probability, 0) AS probability, is_won,
               is_closed AND (close_date IS NULL OR close_date <= %(as_of)s) AS closed,
               is_closed AND close_date <= %(as_of)s
                   AND close_date > %(as_of)s::date - %(window)s AS in_window
        FROM opportunities
        WHERE NOT deleted
          AND (NOT is_closed OR close_date > %(as_of)s::date - %(window)s)
    ) o
    GROUP BY account_id
)
SELECT (coalesce(t.k, 0) - 1)::int4 AS owner_code,
       (CASE a.tier WHEN %(tier0)s THEN 0 WHEN %(tier1)s THEN 1 WHEN %(tier2)s THEN 2
        ELSE -1 END)::int4 AS tier_code,
       coalesce(a.arr * 100, 0)::int8 AS arr,
       coalesce(a.potential * 100, 0)::int8 AS potential,
       coalesce(a.lat, 'NaN')::float8 AS lat,
       coalesce(a.lon, 'NaN')::float8 AS lon,
       coalesce(o.open_amount * 100, 0)::int8 AS open_amount,
       coalesce(o.weighted_amount * 100, 0)::int8 AS weighted_amount,
       coalesce(o.won_amount * 100, 0)::int8 AS won_amount,
       coalesce(o.won_count, 0)::int4 AS won_count,
       coalesce(o.closed_count, 0)::int4 AS closed_count
FROM accounts a
LEFT JOIN moved m ON m.account_id = a.id
LEFT JOIN pg_temp.territory_codes t
       ON t.id = CASE WHEN m.account_id IS NULL THEN a.owner_id ELSE m.owner_id END
LEFT JOIN opp o ON o.account_id = a.id
WHERE NOT a.deleted
"""

# Field types of a row: int4 codes and counts, int8 money in cents (numeric to int8 is far cheaper in
# Postgres than numeric to float8), float8 coordinates.
_FIELDS: Final = (
    ("owner_code", ">i4"),
    ("tier_code", ">i4"),
    ("arr", ">i8"),
    ("potential", ">i8"),
    ("lat", ">f8"),
    ("lon", ">f8"),
    ("open_amount", ">i8"),
    ("weighted_amount", ">i8"),
    ("won_amount", ">i8"),
    ("won_count", ">i4"),
    ("closed_count", ">i4"),
)
_CENTS: Final = frozenset({"arr", "potential", "open_amount", "weighted_amount", "won_amount"})
_SEND: Final = {">i4": "int4send", ">i8": "int8send", ">f8": "float8send"}
# Built from the constant names above only (no input), hence the noqa. Every column is aggregated from
# the same row stream, so the columns line up; their row order is otherwise unspecified, and sorted by
# account id only on request (a sort of every account that the metrics do not need).
_COLUMNS_QUERY: Final = (
    "SELECT "  # noqa: S608
    + ", ".join(f"string_agg({_SEND[kind]}({name}), ''::bytea)" for name, kind in _FIELDS)
    + " FROM ({accounts}) AS account_rows"
)


@dataclass(frozen=True)
class Inputs:
    """What the metrics need as of ``as_of``: the territories and one row per account.

    ``accounts.owner_id`` is categorical over ``owners.index`` (NaN for accounts outside every
    territory, counted in ``unassigned``).
    """

    as_of: dt.date
    owners: pd.DataFrame
    accounts: pd.DataFrame

    @property
    def unassigned(self) -> int:
        """Non-deleted accounts that belong to no territory at ``as_of``."""
        return int(self.accounts["owner_id"].isna().sum())


def column_arrays(blobs: Sequence[bytes | None]) -> dict[str, np.ndarray]:
    """The per-account columns from their ``bytea`` blobs (None when there are no accounts)."""
    columns = {}
    for (name, kind), blob in zip(_FIELDS, blobs, strict=True):
        values = np.frombuffer(blob or b"", dtype=kind)
        columns[name] = values.astype(np.float64 if kind == ">f8" or name in _CENTS else np.int64)
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


def load_accounts(
    conn: Connection, as_of: dt.date, territories: pd.Index, *, by_id: bool = False
) -> pd.DataFrame:
    """One row per non-deleted account as of ``as_of`` (``ACCOUNT_COLUMNS``), column by column.

    Rows come in no particular order unless ``by_id`` (what a row-by-row comparison needs).
    """
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    with raw.cursor() as cur:
        # Territory positions as a small analysed table: the planner then hash-joins it with the right
        # row estimate (an unnest() of the ids has no statistics and led it to sort a million rows).
        cur.execute("DROP TABLE IF EXISTS pg_temp.territory_codes")
        cur.execute(
            "CREATE TEMPORARY TABLE territory_codes (id text NOT NULL, k int4 NOT NULL) ON COMMIT DROP"
        )
        with cur.copy("COPY pg_temp.territory_codes (id, k) FROM STDIN") as copy:
            for k, owner_id in enumerate(territories, start=1):
                copy.write_row((owner_id, k))
        cur.execute("ANALYZE pg_temp.territory_codes")
        # Per-account aggregation of millions of opportunities wants its hash table in memory; JIT
        # compilation costs more than it saves on this one-pass query.
        cur.execute("SET LOCAL work_mem = '256MB'")
        cur.execute("SET LOCAL jit = off")
        params: dict[str, object] = {"as_of": as_of, "window": WON_WINDOW_DAYS}
        params |= {f"tier{i}": tier for i, tier in enumerate(TIERS)}
        accounts = _ACCOUNTS + ("ORDER BY a.id" if by_id else "")
        row = cur.execute(_COLUMNS_QUERY.format(accounts=accounts), params, binary=True).fetchone()
    if row is None:
        raise RuntimeError("the account query returned no row")
    values = column_arrays(list(row))
    columns: dict[str, object] = {
        "owner_id": pd.Categorical.from_codes(values["owner_code"], dtype=pd.CategoricalDtype(territories)),
        "tier": pd.Categorical.from_codes(values["tier_code"], dtype=pd.CategoricalDtype(list(TIERS))),
    }
    for name, _ in _FIELDS[2:]:
        columns[name] = values[name] / 100.0 if name in _CENTS else values[name]
    return pd.DataFrame(columns)


def load_inputs(conn: Connection, as_of: dt.date, *, by_id: bool = False) -> Inputs:
    """The territories and accounts as of ``as_of`` (read in the caller's transaction)."""
    owners = load_territories(conn, as_of)
    accounts = load_accounts(conn, as_of, owners.index, by_id=by_id)
    log.debug("loaded metric inputs", extra={"as_of": as_of.isoformat(), "accounts": len(accounts)})
    return Inputs(as_of=as_of, owners=owners, accounts=accounts)
