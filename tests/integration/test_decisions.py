"""The CLI's decision functions on real PostgreSQL: the JSON shapes of the issue, one-line refusals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from approval import decisions
from store import proposals as props

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def proposal(db: Engine) -> int:
    with db.begin() as conn:
        conn.execute(text("INSERT INTO owners (id, name, capacity) VALUES ('005A','A',1),('005B','B',1)"))
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, owner_id) VALUES ('001A','Acme','005A'),('001B','Bolt','005A')"
            )
        )
        pid, _ = props.create_proposal(
            conn,
            scenario="default",
            fingerprint="fp",
            now=NOW,
            moves=[
                props.NewMove("001A", "005A", "005B", "005A", "balance", effective_date=dt.date(2026, 12, 2)),
                props.NewMove("001B", "005A", "005B", "005A", "balance", wave=2),
            ],
        )
    return pid


def test_list_and_show_shapes(db: Engine, proposal: int) -> None:
    listed = decisions.list_proposals(db)
    assert listed == [
        {
            "id": proposal,
            "scenario": "default",
            "state": "proposed",
            "moves": 2,
            "created_at": "2026-12-01T09:00:00+00:00",
            "decided_by": None,
            "decided_at": None,
        }
    ]
    shown = decisions.show_proposal(db, proposal)
    assert shown["reason"] is None
    assert [m["account_id"] for m in shown["moves"]] == ["001A", "001B"]
    assert set(shown["moves"][0]) == {
        "account_id",
        "from_owner_id",
        "to_owner_id",
        "wave",
        "effective_date",
        "writeback_state",
        "rationale",
    }


def test_approve_except_then_cancel(db: Engine, proposal: int) -> None:
    shown = decisions.approve(db, proposal, actor="Sam", now=NOW, except_accounts=["001B"], reason="renewal")
    assert (shown["state"], shown["decided_by"], shown["reason"]) == ("approved", "Sam", "renewal")
    assert [m["writeback_state"] for m in shown["moves"]] == ["pending", "cancelled"]
    cancelled = decisions.cancel(db, proposal, actor="Sam", now=NOW)
    assert [m["writeback_state"] for m in cancelled["moves"]] == ["cancelled", "cancelled"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e, p: decisions.reject(e, p, actor="Sam", now=NOW, reason=""), "a rejection needs a reason"),
        (lambda e, p: decisions.approve(e, p + 100, actor="Sam", now=NOW), "no proposal"),
        (
            lambda e, p: decisions.cancel(e, p, actor="Sam", now=NOW),
            "is proposed; it cannot become cancelled",
        ),
        (lambda e, p: decisions.list_proposals(e, state="bogus"), "unknown state"),
    ],
)
def test_refusals_are_one_line_with_exit_code_2(
    db: Engine, proposal: int, call: Callable[[Engine, int], Any], message: str
) -> None:
    with pytest.raises(decisions.DecisionRefusedError, match=message) as err:
        call(db, proposal)
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)
    assert decisions.show_proposal(db, proposal)["state"] == "proposed"


def test_fail_closed_approvers() -> None:
    assert decisions.may_decide("U1", approvers=set(), group_members=set()) is False
    assert decisions.may_decide("U1", approvers={"U1"}, group_members=set()) is True
    assert decisions.may_decide("U2", approvers={"U1"}, group_members=["U2"]) is True
    assert decisions.may_decide(" ", approvers={" "}, group_members=set()) is False
