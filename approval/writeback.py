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

from connectors.base import OwnerChange, WriteOutcome, WriteResult
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

    def apply_owner_changes(self, changes: Sequence[OwnerChange]) -> list[WriteResult]: ...


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
) -> ApplyReport:
    """Write the proposal's due moves; with ``give_up``, a transient failure records them failed."""
    today = now.astimezone(dt.UTC).date()
    with engine.begin() as conn:
        state = props.get_proposal(conn, proposal_id).state
        if state == "approved":
            props.transition(conn, proposal_id, to="applying", expected=("approved",), actor=ACTOR, now=now)
            state = "applying"
        due = props.due_moves(conn, proposal_id, today=today) if state == "applying" else []
    report = ApplyReport(proposal_id, state)
    for start in range(0, len(due), chunk):
        if not _write_chunk(engine, crm, due[start : start + chunk], report, now=now, give_up=give_up):
            break
    return _settle(engine, report, now=now, today=today)


def _write_chunk(
    engine: Engine,
    crm: OwnerWriter,
    moves: Sequence[props.MoveRow],
    report: ApplyReport,
    *,
    now: dt.datetime,
    give_up: bool,
) -> bool:
    """One chunk in one transaction under the proposal's row lock; False when the pass should stop."""
    with engine.begin() as conn:
        if props.lock_state(conn, report.proposal_id) != "applying":  # cancelled meanwhile
            return False
        changes = [OwnerChange(m.account_id, m.expected_owner_id, m.to_owner_id, now) for m in moves]
        try:
            results = crm.apply_owner_changes(changes)
        except ConnectorError as exc:
            results = [WriteResult(c.account_id, WriteOutcome.failed, {"error": str(exc), "retriable": True})
                       for c in changes]  # fmt: skip
        transient = False
        for move, result in zip(moves, results, strict=True):
            retriable = result.outcome is WriteOutcome.failed and bool(result.detail.get("retriable"))
            if retriable and not give_up:
                transient = True
                continue
            outcome = result.outcome.value
            if props.record_move_result(
                conn, move.id, outcome=outcome, crm_response=dict(result.detail), actor=ACTOR, now=now
            ):
                _count(report, result.outcome)
        if transient:
            error = next(str(r.detail.get("error", "")) for r in results if r.detail.get("retriable"))
            report.errors.append(error or "a transient CRM error")
            log.warning("write-back will retry", extra={"proposal_id": report.proposal_id, "error": error})
        return not transient


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
