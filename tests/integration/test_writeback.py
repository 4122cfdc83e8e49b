"""The write-back worker on real PostgreSQL against the sandbox CRMs through the real clients.

Each failure the approval issue names is made to happen: a conflict (the CRM's owner changed after the
proposal), waves written on their dates, 5xx and 429 during apply, a crash after the CRM took a chunk,
a cancel between waves, two workers racing. The sandboxes count the API writes to each record, so
"exactly once" is counted, not assumed.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from approval.writeback import OwnerWriter, run_due
from connectors.base import Connector, CrmObject, OwnerChange, WriteResult
from connectors.errors import RetriableError
from connectors.registry import build_connector
from connectors.sandbox import hubspot as hubspot_sandbox
from connectors.sandbox import salesforce as salesforce_sandbox
from connectors.sandbox.generator import DEFAULT_NOW, Org, generate_org
from connectors.sync import run_sync
from service.demo import sandbox_settings
from service.settings import Settings
from store import proposals as props

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
WAVE_2 = dt.date(2026, 12, 31)


@pytest.fixture(scope="module")
def org() -> Org:
    return generate_org(accounts=120, reps=6, seed=21, now=DEFAULT_NOW)


@pytest.fixture
def salesforce(org: Org, tmp_path: Path) -> Iterator[salesforce_sandbox.SandboxServer]:
    faults = salesforce_sandbox.SalesforceFaults(retry_after=0.01)
    server = salesforce_sandbox.start_salesforce_sandbox(org, faults=faults, cert_dir=tmp_path / "certs")
    yield server
    server.stop()


def salesforce_connector(server: salesforce_sandbox.SandboxServer) -> Connector:
    settings = sandbox_settings(Settings(), server.url, server.access_token, Path(server.ca_path))
    return build_connector("salesforce", settings)


@pytest.fixture
def synced(db: Engine, salesforce: salesforce_sandbox.SandboxServer) -> Connector:
    """The sandbox org synced into the test database through the real client."""
    crm = salesforce_connector(salesforce)
    assert run_sync(db, crm, now=dt.datetime.now(dt.UTC)).status == "succeeded"
    return crm


def owners_of(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT id, owner_id FROM accounts ORDER BY id")).all())


def planned_moves(engine: Engine, count: int, *, second_wave: int = 0) -> list[props.NewMove]:
    """``count`` moves of distinct accounts to another active owner; the last ``second_wave`` in wave 2."""
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM owners WHERE active ORDER BY id")).scalars().all()
    accounts = [(a, o) for a, o in owners_of(engine).items() if o in active][:count]
    moves = []
    for n, (account, owner) in enumerate(accounts):
        target = next(o for o in active if o != owner)
        later = n >= count - second_wave
        moves.append(
            props.NewMove(
                account, owner, target, owner, "test move",
                wave=2 if later else 1, effective_date=WAVE_2 if later else NOW.date(),
            )
        )  # fmt: skip
    return moves


def approved(engine: Engine, moves: Sequence[props.NewMove], fingerprint: str = "fp") -> int:
    with engine.begin() as conn:
        proposal_id, _ = props.create_proposal(
            conn, scenario="revenue", fingerprint=fingerprint, moves=moves, now=NOW,
            expires_at=NOW + dt.timedelta(days=14), solver_report={}, waves=[],
        )  # fmt: skip
    with engine.begin() as conn:
        props.approve(conn, proposal_id, actor="Sam", now=NOW)
    return proposal_id


def move_states(engine: Engine, proposal_id: int) -> dict[str, str]:
    with engine.connect() as conn:
        return {m.account_id: m.writeback_state for m in props.show_proposal(conn, proposal_id).move_rows}


def state_of(engine: Engine, proposal_id: int) -> str:
    with engine.connect() as conn:
        return props.get_proposal(conn, proposal_id).state


def test_approved_moves_are_written_once_and_the_proposal_ends_applied(
    db: Engine, synced: Connector, salesforce: salesforce_sandbox.SandboxServer
) -> None:
    moves = planned_moves(db, 30)
    with db.connect() as conn:
        following = props.open_opportunities(conn, [(m.account_id, m.from_owner_id) for m in moves])
    opportunities = [o for ids in following.values() for o in ids]
    assert opportunities  # the org has open deals on these accounts
    proposal_id = approved(db, moves)
    calls_before = salesforce.state.api_used
    [report] = run_due(db, synced, now=NOW, worker="w1")
    assert (report.state, report.written, report.conflicts, report.failed) == ("applied", 30, 0, 0)
    for move in moves:
        assert salesforce.state.record("Account", move.account_id)["OwnerId"] == move.to_owner_id  # type: ignore[index]
        assert salesforce.state.api_writes[("Account", move.account_id)] == 1
        for opportunity in following.get(move.account_id, []):  # open deals follow their account
            assert salesforce.state.record("Opportunity", opportunity)["OwnerId"] == move.to_owner_id  # type: ignore[index]
            assert salesforce.state.api_writes[("Opportunity", opportunity)] == 1
    # A read and composites of 25 for the accounts, the same for their deals: never one call a move.
    calls = salesforce.state.api_used - calls_before
    assert calls == 1 + math.ceil(30 / 25) + 1 + math.ceil(len(opportunities) / 25)
    assert set(move_states(db, proposal_id).values()) == {"written"}
    assert run_due(db, synced, now=NOW + dt.timedelta(days=1), worker="w1") == []  # the job is done
    with db.connect() as conn:
        actions = [a["action"] for a in props.audit_trail(conn, proposal_id)]
    assert actions.count("move_written") == 30
    assert actions[-1] == "applied"


def test_a_move_whose_crm_owner_changed_is_a_conflict_never_overwritten(
    db: Engine, synced: Connector, salesforce: salesforce_sandbox.SandboxServer
) -> None:
    moves = planned_moves(db, 5)
    raced = moves[2]
    someone = next(o for o in owners_of(db).values() if o not in (raced.from_owner_id, raced.to_owner_id))
    salesforce.state.update("Account", raced.account_id, {"OwnerId": someone})
    proposal_id = approved(db, moves)
    [report] = run_due(db, synced, now=NOW, worker="w1")
    assert (report.state, report.written, report.conflicts) == ("partially_applied", 4, 1)
    assert salesforce.state.record("Account", raced.account_id)["OwnerId"] == someone  # type: ignore[index]
    assert salesforce.state.api_writes[("Account", raced.account_id)] == 0
    assert move_states(db, proposal_id)[raced.account_id] == "conflict"


def test_waves_are_written_on_their_dates_and_a_cancel_stops_the_rest(
    db: Engine, synced: Connector, salesforce: salesforce_sandbox.SandboxServer
) -> None:
    moves = planned_moves(db, 6, second_wave=3)
    approved(db, moves)
    [first] = run_due(db, synced, now=NOW, worker="w1")
    assert (first.state, first.written, first.pending, first.next_due) == ("applying", 3, 3, WAVE_2)
    assert run_due(db, synced, now=NOW + dt.timedelta(days=10), worker="w1") == []  # not due yet
    [second] = run_due(db, synced, now=dt.datetime.combine(WAVE_2, dt.time(6), dt.UTC), worker="w1")
    assert (second.state, second.written, second.pending) == ("applied", 3, 0)
    assert all(salesforce.state.api_writes[("Account", m.account_id)] == 1 for m in moves)

    others = planned_moves(db, 12, second_wave=3)[6:]  # accounts not moved above
    cancelled_id = approved(db, others, fingerprint="fp-cancel")
    run_due(db, synced, now=NOW, worker="w1")
    with db.begin() as conn:
        props.cancel(conn, cancelled_id, actor="Sam", now=NOW)
    wave_2 = dt.datetime.combine(WAVE_2, dt.time(6), dt.UTC)
    [retired] = run_due(db, synced, now=wave_2, worker="w1")  # the worker retires a cancelled job
    assert (retired.state, retired.written, retired.pending) == ("cancelled", 0, 0)
    assert run_due(db, synced, now=wave_2, worker="w1") == []
    states = move_states(db, cancelled_id)
    assert sorted(states.values()) == ["cancelled"] * 3 + ["written"] * 3
    for move in others[3:]:
        assert salesforce.state.api_writes[("Account", move.account_id)] == 0


def test_server_errors_during_apply_retry_later_and_write_each_move_once(
    db: Engine, synced: Connector, salesforce: salesforce_sandbox.SandboxServer
) -> None:
    moves = planned_moves(db, 10)
    proposal_id = approved(db, moves)
    salesforce.faults.fail_next = [503] * 40 + [429] * 5  # more than the client's own retries
    [failed] = run_due(db, synced, now=NOW, worker="w1")
    assert failed.state == "applying"
    assert failed.pending == 10
    assert failed.errors
    assert run_due(db, synced, now=NOW, worker="w1") == []  # backing off
    salesforce.faults.fail_next = [503, 429]  # the client's own retries get past these
    [done] = run_due(db, synced, now=NOW + dt.timedelta(hours=1), worker="w1")
    assert (done.state, done.written) == ("applied", 10)
    assert all(salesforce.state.api_writes[("Account", m.account_id)] == 1 for m in moves)
    assert set(move_states(db, proposal_id).values()) == {"written"}


class CrashAfterWriting:
    """The CRM takes the chunk, then the worker dies before it records anything (like a SIGKILL)."""

    def __init__(self, crm: OwnerWriter) -> None:
        self.crm = crm

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]:
        self.crm.apply_owner_changes(changes, obj)
        raise SystemExit("killed")


def test_a_crash_after_the_crm_took_a_chunk_repeats_no_write(
    db: Engine, synced: Connector, salesforce: salesforce_sandbox.SandboxServer
) -> None:
    moves = planned_moves(db, 8)
    proposal_id = approved(db, moves)
    with pytest.raises(SystemExit):
        run_due(db, CrashAfterWriting(synced), now=NOW, worker="w1")
    assert set(move_states(db, proposal_id).values()) == {"pending"}  # nothing recorded, job due again
    [report] = run_due(db, synced, now=NOW, worker="w2")
    assert (report.state, report.written) == ("applied", 8)
    assert all(salesforce.state.api_writes[("Account", m.account_id)] == 1 for m in moves)


class Slow:
    """A CRM that holds each call, so a second worker arrives while the first is writing."""

    def __init__(self, crm: OwnerWriter, entered: threading.Event, release: threading.Event) -> None:
        self.crm, self.entered, self.release = crm, entered, release

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]:
        self.entered.set()
        assert self.release.wait(10)
        return self.crm.apply_owner_changes(changes, obj)


def test_two_workers_racing_write_each_move_once(
    db: Engine, synced: Connector, salesforce: salesforce_sandbox.SandboxServer
) -> None:
    moves = planned_moves(db, 12)
    approved(db, moves)
    entered, release = threading.Event(), threading.Event()
    first: list[object] = []
    worker = threading.Thread(
        target=lambda: first.extend(run_due(db, Slow(synced, entered, release), now=NOW, worker="a"))
    )
    worker.start()
    assert entered.wait(10)
    assert run_due(db, synced, now=NOW, worker="b") == []  # the job is locked: skipped, not awaited
    release.set()
    worker.join(10)
    assert len(first) == 1
    assert all(salesforce.state.api_writes[("Account", m.account_id)] == 1 for m in moves)


def test_a_crm_that_stays_down_fails_the_moves_after_the_last_attempt(db: Engine, synced: Connector) -> None:
    class Down:
        def apply_owner_changes(
            self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
        ) -> list[WriteResult]:
            raise RetriableError("503 Service Unavailable")

    proposal_id = approved(db, planned_moves(db, 3))
    at = NOW
    for _ in range(2):
        [report] = run_due(db, Down(), now=at, worker="w1", max_attempts=3)
        assert report.state == "applying"
        at += dt.timedelta(hours=2)
    [last] = run_due(db, Down(), now=at, worker="w1", max_attempts=3)
    assert (last.state, last.failed) == ("failed", 3)
    with db.connect() as conn:
        rows = props.show_proposal(conn, proposal_id).move_rows
    assert {m.writeback_state for m in rows} == {"failed"}


def test_hubspot_moves_are_written_once_and_conflicts_skipped(db: Engine, org: Org) -> None:
    with hubspot_sandbox.start_hubspot_sandbox(org, now=NOW) as server:
        base = Settings()
        hubspot = base.hubspot.model_copy(
            update={"base_url": server.url, "access_token": SecretStr(server.access_token),
                    "search_requests_per_second": 0}
        )  # fmt: skip
        crm = build_connector("hubspot", base.model_copy(update={"hubspot": hubspot}))
        assert run_sync(db, crm, now=dt.datetime.now(dt.UTC)).status == "succeeded"
        moves = planned_moves(db, 7)
        raced = moves[0]
        someone = next(o.id for o in server.state.owners if o.id not in (raced.from_owner_id, raced.to_owner_id)
                       and not o.archived)  # fmt: skip
        server.state.modify("companies", raced.account_id, {"hubspot_owner_id": someone})
        proposal_id = approved(db, moves)
        [report] = run_due(db, crm, now=NOW, worker="w1")
        assert (report.state, report.written, report.conflicts) == ("partially_applied", 6, 1)
        for move in moves[1:]:
            assert server.state.api_writes[("companies", move.account_id)] == 1
        assert server.state.api_writes[("companies", raced.account_id)] == 0
        assert move_states(db, proposal_id)[raced.account_id] == "conflict"


def test_a_revert_is_a_proposal_that_moves_the_written_accounts_back(
    db: Engine, synced: Connector, salesforce: salesforce_sandbox.SandboxServer
) -> None:
    moves = planned_moves(db, 4)
    proposal_id = approved(db, moves)
    run_due(db, synced, now=NOW, worker="w1")
    with db.begin() as conn:
        revert_id, created = props.create_revert(conn, proposal_id, actor="Sam", now=NOW, expires_at=None)
        again, created_again = props.create_revert(conn, proposal_id, actor="Sam", now=NOW, expires_at=None)
        reverse = props.show_proposal(conn, revert_id).move_rows
    assert (created, created_again, again) == (True, False, revert_id)
    assert {(m.account_id, m.from_owner_id, m.to_owner_id, m.expected_owner_id) for m in reverse} == {
        (m.account_id, m.to_owner_id, m.from_owner_id, m.to_owner_id) for m in moves
    }
    assert state_of(db, proposal_id) == "applied"  # a revert is approved like any proposal
    with db.begin() as conn:
        props.approve(conn, revert_id, actor="Sam", now=NOW)
    [report] = run_due(db, synced, now=NOW, worker="w1")
    assert (report.state, report.written) == ("applied", 4)
    assert state_of(db, proposal_id) == "reverted"
    for move in moves:
        assert salesforce.state.record("Account", move.account_id)["OwnerId"] == move.from_owner_id  # type: ignore[index]
    with db.begin() as conn, pytest.raises(props.WrongStateError):
        props.create_revert(conn, proposal_id, actor="Sam", now=NOW, expires_at=None)
