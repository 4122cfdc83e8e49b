"""Proposals on real PostgreSQL: idempotent creation, compare-and-set decisions, audit, overrides, expiry."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, text

from store import proposals as props
from store.db import make_engine

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
MOVES = [
    props.NewMove(
        "001A", "005A", "005B", "005A", "balances potential", wave=1, effective_date=dt.date(2026, 12, 1)
    ),
    props.NewMove(
        "001B", "005A", "005C", "005A", "closer to home", wave=2, effective_date=dt.date(2026, 12, 15)
    ),
    props.NewMove("001C", "005B", "005C", "005B", "orphaned by a leaver", wave=2, orphan=True),
]


def _seed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO owners (id, name, capacity) VALUES ('005A','A',100),('005B','B',100),('005C','C',100)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, owner_id, tier, arr, potential) VALUES"
                " ('001A','Acme','005A','core',100,1000), ('001B','Bolt','005A','growth',200,2000),"
                " ('001C','Cog','005B','core',300,3000)"
            )
        )


def _create(engine: Engine, fingerprint: str = "fp-1") -> tuple[int, bool]:
    with engine.begin() as conn:
        return props.create_proposal(
            conn,
            scenario="default",
            fingerprint=fingerprint,
            moves=MOVES,
            now=NOW,
            expires_at=NOW + dt.timedelta(days=14),
            solver_report={"gap": 0.001},
            waves=[{"wave": 1, "date": "2026-12-01"}, {"wave": 2, "date": "2026-12-15"}],
        )


@pytest.fixture
def seeded(db: Engine) -> Engine:
    _seed(db)
    return db


def test_same_fingerprint_gives_the_same_proposal(seeded: Engine) -> None:
    first, created = _create(seeded)
    again, created_again = _create(seeded)
    other, _ = _create(seeded, "fp-2")
    assert (created, created_again) == (True, False)
    assert again == first
    assert other != first
    with seeded.connect() as conn:
        assert [p.id for p in props.list_proposals(conn)] == [other, first]
        detail = props.show_proposal(conn, first)
    assert detail.summary.moves == 3
    assert [m.account_id for m in detail.move_rows] == ["001A", "001B", "001C"]
    assert detail.solver_report == {"gap": 0.001}
    shown = detail.as_json()
    assert shown["state"] == "proposed"
    assert shown["moves"][1] == {
        "account_id": "001B",
        "from_owner_id": "005A",
        "to_owner_id": "005C",
        "wave": 2,
        "effective_date": "2026-12-15",
        "writeback_state": "pending",
        "rationale": "closer to home",
    }


def test_bad_moves_are_refused(seeded: Engine) -> None:
    with seeded.begin() as conn, pytest.raises(props.ProposalError, match="moved twice"):
        props.create_proposal(conn, scenario="s", fingerprint="x", moves=[MOVES[0], MOVES[0]], now=NOW)
    with seeded.begin() as conn, pytest.raises(props.ProposalError, match="own owner"):
        props.create_proposal(
            conn,
            scenario="s",
            fingerprint="x",
            moves=[props.NewMove("001A", "005A", "005A", "005A", "r")],
            now=NOW,
        )


def test_approve_then_a_second_decision_is_told_who_decided(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    with seeded.begin() as conn:
        done = props.approve(conn, pid, actor="Sam Leader", now=NOW)
    assert (done.state, done.decided_by, done.decided_at) == ("approved", "Sam Leader", NOW)
    with seeded.begin() as conn, pytest.raises(props.WrongStateError) as err:
        props.reject(conn, pid, actor="Other", now=NOW, reason="no")
    assert "approved by Sam Leader at 2026-12-01T09:00:00+00:00" in str(err.value)
    with seeded.connect() as conn:
        trail = props.audit_trail(conn, pid)
    assert [(r["actor"], r["action"]) for r in trail] == [
        ("rebalancer", "proposed"),
        ("Sam Leader", "approved"),
    ]


def test_approve_without_some_moves_records_overrides(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    with seeded.begin() as conn, pytest.raises(props.ReasonRequiredError):
        props.approve(conn, pid, actor="Sam", now=NOW, except_accounts=["001B"], reason="  ")
    with seeded.begin() as conn, pytest.raises(props.UnknownMoveError, match="001Z"):
        props.approve(conn, pid, actor="Sam", now=NOW, except_accounts=["001Z"], reason="r")
    with seeded.begin() as conn:
        props.approve(conn, pid, actor="Sam", now=NOW, except_accounts=["001B"], reason="Bolt renews in Q1")
    with seeded.connect() as conn:
        states = {m.account_id: m.writeback_state for m in props.show_proposal(conn, pid).move_rows}
        overrides = props.active_overrides(conn, now=NOW + dt.timedelta(days=1))
        later = props.active_overrides(conn, now=NOW + dt.timedelta(days=91))
        trail = props.audit_trail(conn, pid)
    assert states == {"001A": "pending", "001B": "cancelled", "001C": "pending"}
    assert [(o.account_id, o.to_owner_id, o.reason, o.data_changed) for o in overrides] == [
        ("001B", "005C", "Bolt renews in Q1", False)
    ]
    assert later == []
    assert trail[-1]["details"] == {"excluded": ["001B"], "reason": "Bolt renews in Q1"}
    with seeded.begin() as conn:
        conn.execute(text("UPDATE accounts SET potential = 5000 WHERE id = '001B'"))
        assert props.active_overrides(conn, now=NOW)[0].data_changed is True


def test_reject_needs_a_reason_and_refuses_every_move(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    with seeded.begin() as conn, pytest.raises(props.ReasonRequiredError):
        props.reject(conn, pid, actor="Sam", now=NOW, reason=None)
    with seeded.begin() as conn:
        done = props.reject(conn, pid, actor="Sam", now=NOW, reason="mid-quarter")
    assert (done.state, done.reason) == ("rejected", "mid-quarter")
    with seeded.connect() as conn:
        assert sorted(o.account_id for o in props.active_overrides(conn, now=NOW)) == ["001A", "001B", "001C"]


def test_unknown_id_and_illegal_transitions(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    with seeded.begin() as conn, pytest.raises(props.UnknownProposalError, match="no proposal 999"):
        props.approve(conn, 999, actor="Sam", now=NOW)
    with seeded.begin() as conn, pytest.raises(props.ProposalError, match="proposed cannot become applied"):
        props.transition(conn, pid, to="applied", expected=["proposed"], actor="x", now=NOW)
    with seeded.begin() as conn, pytest.raises(props.WrongStateError, match="is proposed"):
        props.cancel(conn, pid, actor="Sam", now=NOW)


def test_the_applying_path_and_cancel(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    second, _ = _create(seeded, "fp-2")
    with seeded.begin() as conn:
        props.approve(conn, pid, actor="Sam", now=NOW)
        props.transition(conn, pid, to="applying", actor="worker", now=NOW)
        conn.execute(text("UPDATE proposal_moves SET writeback_state = 'written' WHERE account_id = '001A'"))
        props.cancel(conn, pid, actor="Sam", now=NOW)
        props.approve(conn, second, actor="Sam", now=NOW)
        props.transition(conn, second, to="applying", actor="worker", now=NOW)
        props.transition(conn, second, to="partially_applied", actor="worker", now=NOW)
        props.transition(conn, second, to="reverted", actor="Sam", now=NOW)
    with seeded.connect() as conn:
        cancelled = props.show_proposal(conn, pid)
        assert props.get_proposal(conn, second).state == "reverted"
        assert [p.id for p in props.list_proposals(conn, state="cancelled")] == [pid]
        with pytest.raises(props.ProposalError, match="unknown state"):
            props.list_proposals(conn, state="nope")
    assert cancelled.summary.state == "cancelled"
    assert [m.writeback_state for m in cancelled.move_rows] == ["written", "cancelled", "cancelled"]


def test_expiry(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    with seeded.begin() as conn:
        assert props.expire_due(conn, now=NOW + dt.timedelta(days=13)) == []
        assert props.expire_due(conn, now=NOW + dt.timedelta(days=14)) == [pid]
        assert props.expire_due(conn, now=NOW + dt.timedelta(days=15)) == []
    with seeded.begin() as conn, pytest.raises(props.WrongStateError, match="is expired"):
        props.approve(conn, pid, actor="Sam", now=NOW)


def test_fifty_concurrent_approvals_make_one_decision(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    engine = make_engine(seeded.url, pool_size=50)
    barrier = threading.Barrier(50)

    def click(n: int) -> str:
        with engine.connect() as conn:
            barrier.wait()
            try:
                with conn.begin():
                    props.approve(conn, pid, actor=f"user{n}", now=NOW + dt.timedelta(seconds=n))
            except props.WrongStateError as exc:
                return f"lost to {exc.proposal.decided_by}"
            return "won"

    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            outcomes = list(pool.map(click, range(50)))
    finally:
        engine.dispose()
    with seeded.connect() as conn:
        final = props.get_proposal(conn, pid)
        decisions = [r for r in props.audit_trail(conn, pid) if r["action"] == "approved"]
    assert outcomes.count("won") == 1
    assert outcomes.count(f"lost to {final.decided_by}") == 49
    assert len(decisions) == 1
    assert decisions[0]["actor"] == final.decided_by


def test_due_moves_follow_the_wave_dates_and_results_are_recorded_once(seeded: Engine) -> None:
    pid, _ = _create(seeded)
    with seeded.begin() as conn:
        props.approve(conn, pid, actor="Sam", now=NOW)
        first = props.due_moves(conn, pid, today=dt.date(2026, 12, 1))
        assert [m.account_id for m in first] == ["001A", "001C"]  # 001C has no date: due at once
        assert [m.account_id for m in props.due_moves(conn, pid, today=dt.date(2026, 12, 15))] == [
            "001A",
            "001B",
            "001C",
        ]
        answer = {"status": 204, "etag": "abc"}
        assert props.record_move_result(
            conn, first[0].id, outcome="written", crm_response=answer, actor="w", now=NOW
        )
        assert not props.record_move_result(
            conn, first[0].id, outcome="failed", crm_response=None, actor="w", now=NOW
        )
        with pytest.raises(props.ProposalError, match="unknown move outcome"):
            props.record_move_result(conn, first[1].id, outcome="done", crm_response=None, actor="w", now=NOW)
        assert [m.account_id for m in props.due_moves(conn, pid, today=dt.date(2026, 12, 1))] == ["001C"]
        trail = props.audit_trail(conn, pid)
    assert (trail[-1]["action"], trail[-1]["move_id"], trail[-1]["details"]) == (
        "move_written",
        first[0].id,
        {"crm_response": answer},
    )
