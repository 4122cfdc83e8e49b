"""The write-back worker: approved moves written to the CRM through the outbox, at most once each.

One outbox job per approved proposal (``store.proposals.approve`` enqueues it with the decision). A
worker claims it with ``FOR UPDATE SKIP LOCKED`` and keeps that row lock while it works, so two workers
(two replicas, the daemon and ``territory apply``) never write the same proposal at once; a worker that
dies loses the lock with its connection and the job is due again.

The moves whose effective date has come go to the CRM in chunks. Each chunk is one transaction that
locks the proposal's row (a concurrent ``cancel`` waits for the chunk), sends the owner changes through
the connector's conflict-checked ``apply_owner_changes`` and records every outcome. A crash after the
CRM took a chunk but before its transaction committed leaves those moves pending; the next run reads
the CRM, finds the new owner already there and records them written without writing again (the
connectors report an account that already has its target owner as written). So every move reaches the
CRM at most once, and a conflict (the CRM's owner is no longer the expected one) is skipped, never
overwritten.

Transient CRM failures (429, 5xx, timeouts, an expired session that could not be renewed) leave the
chunk pending and the job due again after a backoff; after ``max_attempts`` claims the moves still
pending are recorded failed. Moves of later waves keep the job waiting until their date. When no move
is pending the proposal ends ``applied`` (every move written), ``partially_applied`` (some written,
the others with their reasons) or ``failed`` (none written).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import Connection, Engine

from connectors.base import CrmObject, OwnerChange, WriteOutcome, WriteResult
from connectors.errors import ConnectorError
from store import outbox
from store import proposals as props

log = logging.getLogger(__name__)

ACTOR = "writeback"
"""``audit_log.actor`` of what the worker records."""
DEFAULT_CHUNK = 200
DEFAULT_MAX_ATTEMPTS = 8
_BACKOFF_CAP = dt.timedelta(hours=1)


class OwnerWriter(Protocol):
    """What the worker needs of a connector."""

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]: ...


@dataclass
class ApplyReport:
    """What one pass over a proposal did."""

    proposal_id: int
    state: str
    written: int = 0
    conflicts: int = 0
    failed: int = 0
    pending: int = 0
    next_due: dt.date | None = None
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        """One element of ``territory apply --format json``."""
        return {
            "proposal_id": self.proposal_id,
            "state": self.state,
            "written": self.written,
            "conflicts": self.conflicts,
            "failed": self.failed,
            "pending": self.pending,
            "next_due": self.next_due.isoformat() if self.next_due else None,
            "errors": self.errors,
        }


def backoff(attempt: int) -> dt.timedelta:
    """The wait before claim ``attempt + 1`` after a transient failure: 1, 2, 4 ... minutes, at most 1 h."""
    return min(dt.timedelta(minutes=2 ** max(attempt - 1, 0)), _BACKOFF_CAP)


def run_due(
    engine: Engine,
    crm: OwnerWriter,
    *,
    now: dt.datetime,
    worker: str,
    proposal_id: int | None = None,
    chunk: int = DEFAULT_CHUNK,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    opportunities_follow: bool = True,
) -> list[ApplyReport]:
    """Work every due write-back job (only ``proposal_id``'s, if given); one report per job worked.

    The claimed jobs stay row-locked until every one is worked, then their outcomes commit together;
    a crash before that leaves them all due again, and the re-run repeats no CRM write (see above).
    """
    if chunk < 1 or max_attempts < 1:
        raise ValueError("chunk and max_attempts must be positive")
    key = None if proposal_id is None else outbox.writeback_key(proposal_id)
    reports: list[ApplyReport] = []
    with engine.connect() as job_conn, job_conn.begin():
        jobs = outbox.claim(job_conn, worker=worker, now=now, kind=outbox.WRITEBACK, limit=1000, key=key)
        for job in jobs:
            report = apply_proposal(
                engine,
                crm,
                int(job.payload["proposal_id"]),
                now=now,
                chunk=chunk,
                give_up=job.attempts >= max_attempts,
                opportunities_follow=opportunities_follow,
            )
            _finish_job(job_conn, job, report, now)
            reports.append(report)
    return reports


def _finish_job(conn: Connection, job: outbox.Job, report: ApplyReport, now: dt.datetime) -> None:
    """Complete the job, or leave it for the next wave's date or a retry after a transient failure."""
    if report.errors:
        outbox.retry_later(conn, job.id, error="; ".join(report.errors), at=now + backoff(job.attempts))
    elif report.next_due is not None:
        wave_start = dt.datetime.combine(report.next_due, dt.time(), tzinfo=dt.UTC)
        outbox.retry_later(conn, job.id, error=f"next wave due {report.next_due}", at=max(wave_start, now))
    else:
        outbox.complete(conn, job.id, now=now)


def apply_proposal(
    engine: Engine,
    crm: OwnerWriter,
    proposal_id: int,
    *,
    now: dt.datetime,
    chunk: int = DEFAULT_CHUNK,
    give_up: bool = False,
    opportunities_follow: bool = True,
) -> ApplyReport:
    """Write the proposal's due moves; with ``give_up``, a transient failure records them failed.

    With ``opportunities_follow`` the open opportunities that the old owner owns move with the account.
    """
    today = now.astimezone(dt.UTC).date()
    with engine.begin() as conn:
        state = props.get_proposal(conn, proposal_id).state
        if state == "approved":
            props.transition(conn, proposal_id, to="applying", expected=("approved",), actor=ACTOR, now=now)
            state = "applying"
        due = props.due_moves(conn, proposal_id, today=today) if state == "applying" else []
    report = ApplyReport(proposal_id, state)
    for start in range(0, len(due), chunk):
        moves = due[start : start + chunk]
        if not _write_chunk(engine, crm, moves, report, now=now, give_up=give_up,
                            opportunities_follow=opportunities_follow):  # fmt: skip
            break
    return _settle(engine, report, now=now, today=today)


def _send(crm: OwnerWriter, changes: Sequence[OwnerChange], obj: CrmObject) -> list[WriteResult]:
    """The connector's answer per change; a connector error is a transient failure of every change."""
    try:
        return crm.apply_owner_changes(changes, obj)
    except ConnectorError as exc:
        detail = {"error": str(exc), "retriable": True}
        return [WriteResult(c.account_id, WriteOutcome.failed, detail) for c in changes]


def _transient(result: WriteResult) -> bool:
    return result.outcome is WriteOutcome.failed and bool(result.detail.get("retriable"))


def _write_chunk(
    engine: Engine,
    crm: OwnerWriter,
    moves: Sequence[props.MoveRow],
    report: ApplyReport,
    *,
    now: dt.datetime,
    give_up: bool,
    opportunities_follow: bool,
) -> bool:
    """One chunk in one transaction under the proposal's row lock; False when the pass should stop."""
    with engine.begin() as conn:
        if props.lock_state(conn, report.proposal_id) != "applying":  # cancelled meanwhile
            return False
        changes = [OwnerChange(m.account_id, m.expected_owner_id, m.to_owner_id, now) for m in moves]
        results = _send(crm, changes, CrmObject.accounts)
        followed = _follow(conn, crm, moves, results, now) if opportunities_follow else {}
        errors: list[str] = []
        for move, result in zip(moves, results, strict=True):
            opportunities = followed.get(move.id, [])
            stuck = [r for r in (result, *opportunities) if _transient(r)]
            if stuck and not give_up:  # stays pending: the next pass finds what was written and goes on
                errors.append(str(stuck[0].detail.get("error") or "a transient CRM error"))
                continue
            response = dict(result.detail)
            if opportunities:
                response["opportunities"] = [
                    {"id": r.account_id, "outcome": r.outcome.value, **dict(r.detail)} for r in opportunities
                ]
            if props.record_move_result(
                conn, move.id, outcome=result.outcome.value, crm_response=response, actor=ACTOR, now=now
            ):
                _count(report, result.outcome)
        if errors:
            report.errors.append(errors[0])
            log.warning(
                "write-back will retry", extra={"proposal_id": report.proposal_id, "error": errors[0]}
            )
        return not errors


def _follow(
    conn: Connection,
    crm: OwnerWriter,
    moves: Sequence[props.MoveRow],
    results: Sequence[WriteResult],
    now: dt.datetime,
) -> dict[int, list[WriteResult]]:
    """Move the open opportunities the old owner owns along with each written account, by move id.

    Conflict-checked like the accounts: an opportunity whose CRM owner changed meanwhile is left as
    it is and reported. A re-run finds the ones already moved and writes them no second time.
    """
    written = [m for m, r in zip(moves, results, strict=True) if r.outcome is WriteOutcome.written]
    opportunities = props.open_opportunities(conn, [(m.account_id, m.from_owner_id) for m in written])
    owners: list[int] = []
    changes: list[OwnerChange] = []
    for move in written:
        for opportunity_id in opportunities.get(move.account_id, []):
            owners.append(move.id)
            changes.append(OwnerChange(opportunity_id, move.from_owner_id, move.to_owner_id, now))
    followed: dict[int, list[WriteResult]] = {}
    if changes:
        for move_id, result in zip(owners, _send(crm, changes, CrmObject.opportunities), strict=True):
            followed.setdefault(move_id, []).append(result)
    return followed


def _count(report: ApplyReport, outcome: WriteOutcome) -> None:
    if outcome is WriteOutcome.written:
        report.written += 1
    elif outcome is WriteOutcome.conflict:
        report.conflicts += 1
    else:
        report.failed += 1


def _settle(engine: Engine, report: ApplyReport, *, now: dt.datetime, today: dt.date) -> ApplyReport:
    """Count what is left; with nothing pending, move the proposal to its final state."""
    with engine.begin() as conn:
        states = props.move_states(conn, report.proposal_id)
        report.pending = states.get("pending", 0)
        if report.state != "applying":
            return report
        if report.pending:
            if not report.errors:
                report.next_due = props.next_effective_date(conn, report.proposal_id, today=today)
            return report
        written = states.get("written", 0)
        others = sum(n for s, n in states.items() if s not in ("written", "cancelled"))
        final = "applied" if not others else "partially_applied" if written else "failed"
        try:
            props.finish_application(conn, report.proposal_id, to=final, actor=ACTOR, now=now,
                                     detail={"moves": states})  # fmt: skip
        except props.WrongStateError:  # cancelled between the last chunk and now: the cancel stands
            return report
        report.state = final
    log.info("write-back finished", extra={"proposal_id": report.proposal_id, "state": final, **states})
    return report
