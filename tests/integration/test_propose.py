"""Proposals from a stored org on real PostgreSQL: hard rules kept, stored once, idempotent, superseded.

The org is the sandbox generator's, loaded into the store; the solve is the real HiGHS one.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, text

from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from connectors.sandbox.seed import load_org
from monitor.metrics import DEFAULT_TOUCHES
from rebalancer.edge import AddedRep, WhatIfs, load_problem, propose_from_store
from rebalancer.scenarios import builtin_scenarios
from store import proposals as props

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
EXPIRY = dt.timedelta(days=14)


@pytest.fixture
def org_db(db: Engine) -> Engine:
    load_org(db, generate_org(accounts=600, reps=8, seed=9, now=DEFAULT_NOW))
    return db


def _propose(engine: Engine, **kwargs: object) -> dict[str, object]:
    scenario = builtin_scenarios()["revenue"]
    options = {"touches": DEFAULT_TOUCHES, "as_of": NOW.date(), "now": NOW, "expires_in": EXPIRY,
               "time_limit": 20.0, "with_curve": False} | kwargs  # fmt: skip
    return propose_from_store(engine, scenario, **options)  # type: ignore[arg-type]


def test_a_proposal_is_stored_once_and_keeps_every_hard_rule(org_db: Engine) -> None:
    first = _propose(org_db)
    assert first["stored"] is True
    assert first["moves"], "the generated org drifts: there is something to fix"
    again = _propose(org_db)
    assert (again["proposal_id"], again["stored"]) == (first["proposal_id"], False)  # same inputs, same one
    with org_db.connect() as conn:
        stored = props.show_proposal(conn, int(first["proposal_id"]))  # type: ignore[call-overload]
        owners = dict(conn.execute(text("SELECT id, owner_id FROM accounts")).all())
        protected = set(conn.execute(text("SELECT id FROM accounts WHERE protected")).scalars())
        region = dict(conn.execute(text("SELECT id, region FROM owners")).all())
        active = set(conn.execute(text("SELECT id FROM owners WHERE active")).scalars())
    assert len(stored.move_rows) == len(first["moves"])  # type: ignore[arg-type]
    for move in stored.move_rows:
        assert move.expected_owner_id == owners[move.account_id] == move.from_owner_id
        assert move.account_id not in protected
        assert move.to_owner_id in active
        assert region[move.to_owner_id] == region[move.from_owner_id]
        assert move.effective_date == NOW.date() + dt.timedelta(days=30 * (move.wave - 1))


def test_changed_data_makes_a_new_proposal_that_supersedes_the_undecided_one(org_db: Engine) -> None:
    first = _propose(org_db)
    with org_db.begin() as conn:
        conn.execute(
            text("UPDATE accounts SET potential = potential * 3 WHERE id = (SELECT min(id) FROM accounts)")
        )
    second = _propose(org_db)
    assert second["stored"] is True
    assert second["proposal_id"] != first["proposal_id"]
    assert second["superseded"] == [first["proposal_id"]]
    with org_db.connect() as conn:
        assert props.get_proposal(conn, int(first["proposal_id"])).state == "superseded"  # type: ignore[call-overload]


def test_an_overridden_move_is_not_proposed_again_until_the_data_changes(org_db: Engine) -> None:
    first = _propose(org_db)
    left_out = first["moves"][0]["account_id"]  # type: ignore[index]
    with org_db.begin() as conn:
        props.approve(conn, int(first["proposal_id"]), actor="Sam", now=NOW, except_accounts=[left_out],  # type: ignore[call-overload]
                      reason="a relationship we keep")  # fmt: skip
    with org_db.connect() as conn:
        loaded = load_problem(conn, NOW.date(), DEFAULT_TOUCHES, now=NOW)
    assert loaded.overridden == 1
    second = _propose(org_db)
    assert left_out not in {m["account_id"] for m in second["moves"]}  # type: ignore[attr-defined]
    assert second["overridden"] == 1
    assert any("an approver refused their move" in line for line in second["blocked"])  # type: ignore[attr-defined]


def test_an_added_rep_makes_a_what_if_that_cannot_be_approved(org_db: Engine) -> None:
    with org_db.connect() as conn:
        region = conn.execute(text("SELECT region FROM owners WHERE active LIMIT 1")).scalar_one()
    doc = _propose(org_db, what_ifs=WhatIfs(add=(AddedRep("New Hire", region, 150.0),)))
    assert doc["hypothetical"] is True
    assert any(m["to_owner_id"] == "whatif:New Hire" for m in doc["moves"])  # type: ignore[attr-defined]
    with org_db.begin() as conn, pytest.raises(props.ProposalError, match="what-if"):
        props.approve(conn, int(doc["proposal_id"]), actor="Sam", now=NOW)  # type: ignore[call-overload]


def test_the_comparison_counts_what_the_moves_cost(org_db: Engine) -> None:
    from monitor.frames import load_account_rows

    doc = _propose(org_db, store=False)
    moved = [m["account_id"] for m in doc["moves"]]  # type: ignore[attr-defined]
    with org_db.connect() as conn:
        rows = load_account_rows(conn, NOW.date())
    pipeline = float(rows.loc[moved, "open_amount"].sum())
    assert doc["comparison"]["pipeline_changing_hands"] == pytest.approx(pipeline)  # type: ignore[index]
    assert 0 <= doc["comparison"]["relationships_disrupted"] <= len(moved)  # type: ignore[index]
