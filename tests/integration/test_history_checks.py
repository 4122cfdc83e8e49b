"""The export's assignment rows checked in SQL (store/history.py) against the rules as docs/csv-format.md
states them ("Ownership history", checks 2-6), written here the plain way, row by row.

Hypothesis draws small histories over few accounts, owners and days, so that the cases the one-sort
check has to get right come often: rows starting on the same day, tenures of no length, exact copies,
several current rows, references the store does not hold, overlaps that only a walk can settle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from store import history
from store.bulk import csv_bytes
from store.db import truncate_all

pytestmark = pytest.mark.integration

OWNERS = ("O1", "O2")  # in the store; "O9" is not
ACCOUNTS = {"A1": "O1", "A2": "O2", "A3": None}  # account: its owner; "A9" is not in the store
DAY0 = dt.date(2026, 1, 1)

Row = tuple[str, str, dt.date, dt.date | None]


@pytest.fixture(scope="module")
def store(engine: Engine) -> Iterator[Engine]:
    with engine.begin() as conn:
        truncate_all(conn)
        conn.execute(text("INSERT INTO owners (id, name) VALUES (:id, :id)"), [{"id": o} for o in OWNERS])
        conn.execute(
            text("INSERT INTO accounts (id, name, owner_id) VALUES (:id, :id, :owner)"),
            [{"id": a, "owner": owner} for a, owner in ACCOUNTS.items()],
        )
    yield engine
    with engine.begin() as conn:
        truncate_all(conn)


@st.composite
def tenures(draw: Any) -> Row:
    start = DAY0 + dt.timedelta(days=draw(st.integers(0, 4)))
    length = draw(st.sampled_from([None, 0, 0, 1, 2, 3]))  # None: a current row; 0: no length
    end = None if length is None else start + dt.timedelta(days=length)
    account = draw(st.sampled_from(["A1", "A1", "A1", "A2", "A3", "A9"]))  # mostly one account's rows
    return account, draw(st.sampled_from([*OWNERS, *OWNERS, "O9"])), start, end


def expected(rows: list[Row]) -> tuple[list[tuple[str, str, dt.date, dt.date | None, str]], int]:
    """The rules, one row at a time: the rows that fail in export order with their reason, and the
    number of exact copies dropped."""
    reason: dict[int, str] = {}
    copies = {i for i, r in enumerate(rows) if r in rows[:i]}
    for i, (account, owner, _, end) in enumerate(rows):
        if i in copies:
            continue
        later_current = any(
            j not in copies and rows[j][0] == account and rows[j][3] is None for j in range(i + 1, len(rows))
        )
        if account not in ACCOUNTS:
            reason[i] = f"unknown account: {account}"
        elif owner not in OWNERS:
            reason[i] = f"unknown owner: {owner}"
        elif end is None and later_current:
            reason[i] = "a second current assignment of the account"
        elif end is None and ACCOUNTS[account] != owner:
            reason[i] = (
                f"the current assignment names owner {owner}, the account's owner is {ACCOUNTS[account] or 'none'}"
            )
    far = dt.date.max
    for account in ACCOUNTS:
        kept_end: dt.date | None = None
        walk = sorted(
            (r[2], i) for i, r in enumerate(rows) if r[0] == account and i not in copies and i not in reason
        )
        for start, i in walk:
            end = rows[i][3] or far
            if kept_end is not None and start < kept_end:
                shown = "never (a current one)" if kept_end == far else str(kept_end)
                reason[i] = f"overlaps an earlier tenure of the account, which ends {shown}"
            else:
                kept_end = end if kept_end is None else max(kept_end, end)
    return [(*rows[i], reason[i]) for i in sorted(reason)], len(copies)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(tenures(), min_size=1, max_size=14))
# A tenure of no length starting the day a longer, earlier one starts: that one's end is the clash.
@example([("A1", "O1", DAY0, DAY0 + dt.timedelta(days=2)), ("A1", "O1", DAY0, DAY0)])
def test_the_sql_check_follows_the_documented_rules(store: Engine, rows: list[Row]) -> None:
    frame = pd.DataFrame(
        {
            "account_id": [r[0] for r in rows],
            "owner_id": [r[1] for r in rows],
            "start_date": [str(r[2]) for r in rows],
            "end_date": [str(r[3]) if r[3] else None for r in rows],
            "_pos": range(len(rows)),
        }
    )
    with store.connect() as conn, conn.begin() as trans:
        history.stage_history(conn, [csv_bytes(frame)])
        failed, duplicates = history.take_bad_history(conn)
        trans.rollback()
    assert (failed, duplicates) == expected(rows)
