"""Proposals: idempotent creation, compare-and-set state transitions with their audit rows, overrides.

Every function takes a ``Connection`` inside the caller's transaction, so a decision, its audit row and
its overrides commit together or not at all. A transition is ``UPDATE ... WHERE state IN (expected)
RETURNING``: of any number of concurrent deciders exactly one gets a row back; the others are told who
decided and when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, Text, cast, func, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from store import outbox
from store.errors import StoreError
from store.models import Account, AuditLog, Opportunity, Override, Owner, Proposal, ProposalMove

TRANSITIONS: dict[str, frozenset[str]] = {
    "proposed": frozenset({"approved", "rejected", "expired", "superseded"}),
    "approved": frozenset({"applying", "cancelled"}),
    "applying": frozenset({"applied", "partially_applied", "failed", "cancelled"}),
    "applied": frozenset({"reverted"}),
    "partially_applied": frozenset({"reverted"}),
}
"""The state machine of docs/approval.md: the states each state may move to."""

DEFAULT_COOLDOWN = dt.timedelta(days=90)


class ProposalError(StoreError):
    """A decision that cannot be taken; the message is one line for the CLI or Slack."""


class UnknownProposalError(ProposalError):
    """No proposal has this id."""


class ReasonRequiredError(ProposalError):
    """Rejecting, or approving without some moves, needs a non-blank reason."""


class UnknownMoveError(ProposalError):
    """An excluded account is not one of the proposal's moves."""


class WrongStateError(ProposalError):
    """The proposal is not in a state that allows the transition (someone else may have decided)."""

    def __init__(self, proposal: ProposalSummary, wanted: str) -> None:
        self.proposal = proposal
        self.wanted = wanted
        if proposal.decided_by is not None and proposal.decided_at is not None:
            who = f" by {proposal.decided_by} at {proposal.decided_at.isoformat()}"
        else:
            who = ""
        super().__init__(f"proposal {proposal.id} is {proposal.state}{who}; it cannot become {wanted}")


@dataclass(frozen=True)
class NewMove:
    """A move as the rebalancer hands it over."""

    account_id: str
    from_owner_id: str
    to_owner_id: str
    expected_owner_id: str
    rationale: str
    wave: int = 1
    effective_date: dt.date | None = None
    orphan: bool = False


@dataclass(frozen=True)
class ProposalSummary:
    """One proposal without its moves (the ``list`` shape plus the decision and Slack fields)."""

    id: int
    scenario: str
    state: str
    moves: int
    created_at: dt.datetime
    expires_at: dt.datetime | None
    decided_by: str | None
    decided_at: dt.datetime | None
    reason: str | None
    slack_channel: str | None
    slack_ts: str | None

    def as_json(self) -> dict[str, Any]:
        """The ``proposals list --format json`` object."""
        return {
            "id": self.id,
            "scenario": self.scenario,
            "state": self.state,
            "moves": self.moves,
            "created_at": self.created_at.isoformat(),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
        }


@dataclass(frozen=True)
class MoveRow:
    """A stored move with its write-back state."""

    id: int
    account_id: str
    from_owner_id: str
    to_owner_id: str
    expected_owner_id: str
    wave: int
    effective_date: dt.date | None
    writeback_state: str
    rationale: str
    orphan: bool

    def as_json(self) -> dict[str, Any]:
        """One element of the ``proposals show --format json`` ``moves`` list."""
        return {
            "account_id": self.account_id,
            "from_owner_id": self.from_owner_id,
            "to_owner_id": self.to_owner_id,
            "wave": self.wave,
            "effective_date": self.effective_date.isoformat() if self.effective_date else None,
            "writeback_state": self.writeback_state,
            "rationale": self.rationale,
        }


@dataclass(frozen=True)
class ProposalDetail:
    """A proposal with its moves and the JSON the solver stored with it."""

    summary: ProposalSummary
    move_rows: tuple[MoveRow, ...]
    before_metrics: dict[str, Any] | None
    after_metrics: dict[str, Any] | None
    solver_report: dict[str, Any] | None
    waves: list[Any] | None
    tradeoff: list[Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``proposals show --format json`` object: the list object, the reason and the moves."""
        out = self.summary.as_json()
        out["reason"] = self.summary.reason
        out["moves"] = [m.as_json() for m in self.move_rows]
        return out


_P = Proposal.__table__
_M = ProposalMove.__table__
_OPP = Opportunity.__table__
_SUMMARY_COLUMNS = (
    _P.c.id,
    _P.c.scenario,
    _P.c.state,
    _P.c.created_at,
    _P.c.expires_at,
    _P.c.decided_by,
    _P.c.decided_at,
    _P.c.reason,
    _P.c.slack_channel,
    _P.c.slack_ts,
)


def _move_count() -> Any:
    """A scalar subquery counting a proposal's moves."""
    return (
        select(func.count())
        .select_from(_M)
        .where(_M.c.proposal_id == _P.c.id)
        .scalar_subquery()
        .label("moves")
    )


def _summary(row: RowMapping) -> ProposalSummary:
    return ProposalSummary(
        id=row["id"],
        scenario=row["scenario"],
        state=row["state"],
        moves=row["moves"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        reason=row["reason"],
        slack_channel=row["slack_channel"],
        slack_ts=row["slack_ts"],
    )


def _audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    proposal_id: int,
    now: dt.datetime,
    detail: dict[str, Any] | None = None,
    move_id: int | None = None,
) -> None:
    conn.execute(
        insert(AuditLog).values(
            at=now,
            actor=actor,
            action=action,
            entity_type="proposal_move" if move_id is not None else "proposal",
            entity_id=str(move_id if move_id is not None else proposal_id),
            details=detail,
            proposal_id=proposal_id,
            move_id=move_id,
        )
    )


def create_proposal(
    conn: Connection,
    *,
    scenario: str,
    fingerprint: str,
    moves: Sequence[NewMove],
    now: dt.datetime,
    expires_at: dt.datetime | None = None,
    params: dict[str, Any] | None = None,
    solver_report: dict[str, Any] | None = None,
    before_metrics: dict[str, Any] | None = None,
    after_metrics: dict[str, Any] | None = None,
    tradeoff: list[Any] | None = None,
    waves: list[Any] | None = None,
    actor: str = "rebalancer",
    reverts: int | None = None,
) -> tuple[int, bool]:
    """Store a proposal and its moves once per input ``fingerprint``; return ``(id, created)``."""
    if not fingerprint.strip():
        raise ProposalError("a proposal needs a non-empty input fingerprint")
    if not moves:
        raise ProposalError("a proposal needs at least one move")
    seen: set[str] = set()
    for move in moves:
        if move.account_id in seen:
            raise ProposalError(f"account {move.account_id} is moved twice in one proposal")
        seen.add(move.account_id)
        if move.from_owner_id == move.to_owner_id:
            raise ProposalError(f"account {move.account_id} moves to its own owner {move.to_owner_id}")
        if move.wave < 1:
            raise ProposalError(f"account {move.account_id} has wave {move.wave}; waves start at 1")
    if expires_at is not None and expires_at <= now:
        raise ProposalError("a proposal cannot expire before it is created")
    new_id = conn.execute(
        pg_insert(Proposal)
        .values(
            scenario=scenario,
            idempotency_key=fingerprint,
            created_at=now,
            expires_at=expires_at,
            params=params,
            solver_report=solver_report,
            before_metrics=before_metrics,
            after_metrics=after_metrics,
            tradeoff=tradeoff,
            waves=waves,
            reverts_proposal_id=reverts,
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(_P.c.id)
    ).scalar_one_or_none()
    if new_id is None:
        existing = conn.execute(select(_P.c.id).where(_P.c.idempotency_key == fingerprint)).scalar_one()
        return int(existing), False
    conn.execute(
        insert(ProposalMove),
        [
            {
                "proposal_id": new_id,
                "account_id": m.account_id,
                "from_owner_id": m.from_owner_id,
                "to_owner_id": m.to_owner_id,
                "expected_owner_id": m.expected_owner_id,
                "rationale": m.rationale,
                "wave": m.wave,
                "effective_date": m.effective_date,
                "orphan": m.orphan,
            }
            for m in moves
        ],
    )
    _audit(conn, actor=actor, action="proposed", proposal_id=new_id, now=now, detail={"moves": len(moves)})
    return int(new_id), True


def get_proposal(conn: Connection, proposal_id: int) -> ProposalSummary:
    """The proposal ``proposal_id``, or ``UnknownProposalError``."""
    row = (
        conn.execute(select(*_SUMMARY_COLUMNS, _move_count()).where(_P.c.id == proposal_id))
        .mappings()
        .first()
    )
    if row is None:
        raise UnknownProposalError(f"no proposal {proposal_id}")
    return _summary(row)


def list_proposals(conn: Connection, *, state: str | None = None) -> list[ProposalSummary]:
    """Proposals, newest first, optionally only those in ``state``."""
    if state is not None and state not in _known_states():
        raise ProposalError(f"unknown state {state!r}; known: {', '.join(sorted(_known_states()))}")
    query = select(*_SUMMARY_COLUMNS, _move_count()).order_by(_P.c.id.desc())
    if state is not None:
        query = query.where(_P.c.state == state)
    return [_summary(r) for r in conn.execute(query).mappings()]


def _move_row(r: RowMapping) -> MoveRow:
    """One ``proposal_moves`` row as the value the store hands out."""
    return MoveRow(
        id=r["id"],
        account_id=r["account_id"],
        from_owner_id=r["from_owner_id"],
        to_owner_id=r["to_owner_id"],
        expected_owner_id=r["expected_owner_id"],
        wave=r["wave"],
        effective_date=r["effective_date"],
        writeback_state=r["writeback_state"],
        rationale=r["rationale"],
        orphan=r["orphan"],
    )


def show_proposal(conn: Connection, proposal_id: int) -> ProposalDetail:
    """The proposal with its moves in wave then account order."""
    summary = get_proposal(conn, proposal_id)
    extra = conn.execute(
        select(_P.c.before_metrics, _P.c.after_metrics, _P.c.solver_report, _P.c.waves, _P.c.tradeoff).where(
            _P.c.id == proposal_id
        )
    ).one()
    rows = conn.execute(
        select(_M).where(_M.c.proposal_id == proposal_id).order_by(_M.c.wave, _M.c.account_id)
    ).mappings()
    moves = tuple(_move_row(r) for r in rows)
    return ProposalDetail(
        summary=summary,
        move_rows=moves,
        before_metrics=extra.before_metrics,
        after_metrics=extra.after_metrics,
        solver_report=extra.solver_report,
        waves=extra.waves,
        tradeoff=extra.tradeoff,
    )


@dataclass(frozen=True)
class MoveLabel:
    """How a move reads to a person: the account's and owners' names and the account's ARR."""

    account_name: str
    from_owner: str
    to_owner: str
    arr: float


def move_labels(conn: Connection, proposal_id: int) -> dict[str, MoveLabel]:
    """The names behind a proposal's moves, by account id (ids stand in for rows that are gone)."""
    acc = Account.__table__
    own = Owner.__table__
    src = own.alias("src")
    dst = own.alias("dst")
    rows = conn.execute(
        select(
            _M.c.account_id,
            func.coalesce(acc.c.name, _M.c.account_id).label("account_name"),
            func.coalesce(src.c.name, _M.c.from_owner_id).label("from_owner"),
            func.coalesce(dst.c.name, _M.c.to_owner_id).label("to_owner"),
            func.coalesce(acc.c.arr, 0).label("arr"),
        )
        .select_from(
            _M.outerjoin(acc, acc.c.id == _M.c.account_id)
            .outerjoin(src, src.c.id == _M.c.from_owner_id)
            .outerjoin(dst, dst.c.id == _M.c.to_owner_id)
        )
        .where(_M.c.proposal_id == proposal_id)
    ).mappings()
    return {
        r["account_id"]: MoveLabel(r["account_name"], r["from_owner"], r["to_owner"], float(r["arr"]))
        for r in rows
    }


def _known_states() -> set[str]:
    return set(TRANSITIONS) | {s for targets in TRANSITIONS.values() for s in targets}


def transition(
    conn: Connection,
    proposal_id: int,
    *,
    to: str,
    actor: str,
    now: dt.datetime,
    expected: Iterable[str] | None = None,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> ProposalSummary:
    """Move the proposal to ``to`` by compare-and-set from ``expected`` (default: every allowed source)."""
    sources = (
        frozenset(expected)
        if expected is not None
        else frozenset(s for s, t in TRANSITIONS.items() if to in t)
    )
    if not sources:
        raise ProposalError(f"no state may become {to!r}")
    bad = sorted(s for s in sources if to not in TRANSITIONS.get(s, frozenset()))
    if bad:
        raise ProposalError(f"{', '.join(bad)} cannot become {to}")
    values: dict[str, Any] = {"state": to}
    if to in ("approved", "rejected"):
        values.update(decided_by=actor, decided_at=now, reason=reason)
    row = (
        conn.execute(
            update(Proposal)
            .where(_P.c.id == proposal_id, _P.c.state.in_(sorted(sources)))
            .values(**values)
            .returning(_P.c.id)
        )
        .scalars()
        .first()
    )
    current = get_proposal(conn, proposal_id)  # raises UnknownProposalError for a wrong id
    if row is None:
        raise WrongStateError(current, to)
    audit_detail = dict(detail or {})
    if reason is not None:
        audit_detail["reason"] = reason
    _audit(conn, actor=actor, action=to, proposal_id=proposal_id, now=now, detail=audit_detail or None)
    return current


def _account_fingerprints(conn: Connection, account_ids: Sequence[str]) -> dict[str, str]:
    """An md5 of each account's owner, potential, ARR and tier: the data whose change lifts an override."""
    acc = Account.__table__
    digest = func.md5(
        func.concat_ws(
            "|",
            func.coalesce(acc.c.owner_id, ""),
            func.coalesce(cast(acc.c.potential, Text), ""),
            func.coalesce(cast(acc.c.arr, Text), ""),
            acc.c.tier,
        )
    )
    rows = conn.execute(select(acc.c.id, digest).where(acc.c.id.in_(account_ids)))
    return {r[0]: r[1] for r in rows}


def account_fingerprints(conn: Connection, account_ids: Sequence[str]) -> dict[str, str]:
    """The current data fingerprints of ``account_ids`` (compare with an override's to see a change)."""
    return _account_fingerprints(conn, list(account_ids))


def _record_overrides(
    conn: Connection,
    proposal_id: int,
    moves: Sequence[RowMapping],
    *,
    actor: str,
    reason: str,
    now: dt.datetime,
    cooldown: dt.timedelta,
) -> None:
    if not moves:
        return
    prints = _account_fingerprints(conn, [m["account_id"] for m in moves])
    conn.execute(
        insert(Override),
        [
            {
                "account_id": m["account_id"],
                "from_owner_id": m["from_owner_id"],
                "to_owner_id": m["to_owner_id"],
                "reason": reason,
                "decided_by": actor,
                "decided_at": now,
                "until": now + cooldown,
                "data_fingerprint": prints.get(m["account_id"]),
                "proposal_id": proposal_id,
            }
            for m in moves
        ],
    )


def _require_reason(reason: str | None, what: str) -> str:
    if reason is None or not reason.strip():
        raise ReasonRequiredError(f"{what} needs a reason")
    return reason.strip()


def _require_real_receivers(conn: Connection, proposal_id: int) -> None:
    """A what-if's moves go to reps that are not owners yet: such a proposal cannot be approved."""
    missing = (
        conn.execute(
            select(_M.c.to_owner_id)
            .where(_M.c.proposal_id == proposal_id, _M.c.to_owner_id.not_in(select(Owner.__table__.c.id)))
            .distinct()
            .order_by(_M.c.to_owner_id)
        )
        .scalars()
        .all()
    )
    if missing:
        raise ProposalError(
            f"proposal {proposal_id} is a what-if: {', '.join(missing)} is not a rep in the CRM yet; "
            "propose again once it is"
        )


def approve(
    conn: Connection,
    proposal_id: int,
    *,
    actor: str,
    now: dt.datetime,
    except_accounts: Sequence[str] = (),
    reason: str | None = None,
    cooldown: dt.timedelta = DEFAULT_COOLDOWN,
) -> ProposalSummary:
    """Approve, optionally without the moves of ``except_accounts`` (then a reason is mandatory)."""
    if not actor.strip():
        raise ProposalError("an approval needs the approver's name")
    _require_real_receivers(conn, proposal_id)
    excluded = list(dict.fromkeys(except_accounts))
    if excluded:
        reason = _require_reason(reason, "approving without some moves")
        moves = (
            conn.execute(
                select(_M.c.id, _M.c.account_id, _M.c.from_owner_id, _M.c.to_owner_id).where(
                    _M.c.proposal_id == proposal_id
                )
            )
            .mappings()
            .all()
        )
        by_account = {m["account_id"]: m for m in moves}
        unknown = [a for a in excluded if a not in by_account]
        if moves and unknown:
            raise UnknownMoveError(f"proposal {proposal_id} does not move {', '.join(unknown)}")
        if moves and len(excluded) == len(moves):
            raise ProposalError(f"excluding every move of proposal {proposal_id} is a rejection; reject it")
    detail = {"excluded": excluded} if excluded else None
    summary = transition(
        conn,
        proposal_id,
        to="approved",
        expected=("proposed",),
        actor=actor,
        now=now,
        reason=reason,
        detail=detail,
    )
    if excluded:
        assert reason is not None  # noqa: S101 - set by _require_reason above
        chosen = [by_account[a] for a in excluded]
        conn.execute(
            update(ProposalMove)
            .where(_M.c.proposal_id == proposal_id, _M.c.account_id.in_(excluded))
            .values(writeback_state="cancelled")
        )
        _record_overrides(conn, proposal_id, chosen, actor=actor, reason=reason, now=now, cooldown=cooldown)
    # The write-back job commits with the decision: an approval is never left without its worker.
    outbox.enqueue(
        conn,
        kind=outbox.WRITEBACK,
        key=outbox.writeback_key(proposal_id),
        payload={"proposal_id": proposal_id},
        available_at=now,
    )
    return summary


def reject(
    conn: Connection,
    proposal_id: int,
    *,
    actor: str,
    now: dt.datetime,
    reason: str | None,
    cooldown: dt.timedelta = DEFAULT_COOLDOWN,
) -> ProposalSummary:
    """Reject with a mandatory reason; every move becomes an override for the cooldown."""
    if not actor.strip():
        raise ProposalError("a rejection needs the approver's name")
    text_reason = _require_reason(reason, "a rejection")
    summary = transition(
        conn, proposal_id, to="rejected", expected=("proposed",), actor=actor, now=now, reason=text_reason
    )
    moves = (
        conn.execute(
            select(_M.c.account_id, _M.c.from_owner_id, _M.c.to_owner_id).where(
                _M.c.proposal_id == proposal_id
            )
        )
        .mappings()
        .all()
    )
    conn.execute(
        update(ProposalMove).where(_M.c.proposal_id == proposal_id).values(writeback_state="cancelled")
    )
    _record_overrides(conn, proposal_id, moves, actor=actor, reason=text_reason, now=now, cooldown=cooldown)
    return summary


def cancel(conn: Connection, proposal_id: int, *, actor: str, now: dt.datetime) -> ProposalSummary:
    """Stop an approved or applying proposal; the moves not yet written are cancelled."""
    summary = transition(
        conn, proposal_id, to="cancelled", expected=("approved", "applying"), actor=actor, now=now
    )
    conn.execute(
        update(ProposalMove)
        .where(_M.c.proposal_id == proposal_id, _M.c.writeback_state == "pending")
        .values(writeback_state="cancelled")
    )
    return summary


def expire_due(conn: Connection, *, now: dt.datetime, actor: str = "system") -> list[int]:
    """Expire every proposed proposal whose ``expires_at`` has passed; return their ids."""
    ids = list(
        conn.execute(
            update(Proposal)
            .where(_P.c.state == "proposed", _P.c.expires_at <= now)
            .values(state="expired")
            .returning(_P.c.id)
        ).scalars()
    )
    for pid in sorted(ids):
        _audit(conn, actor=actor, action="expired", proposal_id=pid, now=now)
    return sorted(ids)


def set_slack_message(conn: Connection, proposal_id: int, *, channel: str, ts: str) -> None:
    """Remember where the proposal's Slack message is, for ``chat.update`` after a decision."""
    done = conn.execute(
        update(Proposal)
        .where(_P.c.id == proposal_id)
        .values(slack_channel=channel, slack_ts=ts)
        .returning(_P.c.id)
    ).first()
    if done is None:
        raise UnknownProposalError(f"no proposal {proposal_id}")


@dataclass(frozen=True)
class ActiveOverride:
    """A refused move still in its cooldown, with whether the account's data changed since."""

    account_id: str
    from_owner_id: str
    to_owner_id: str
    reason: str
    decided_by: str
    until: dt.datetime
    data_changed: bool


def active_overrides(conn: Connection, *, now: dt.datetime) -> list[ActiveOverride]:
    """Overrides whose cooldown has not ended; ``data_changed`` ones no longer block a move."""
    o = Override.__table__
    rows = conn.execute(select(o).where(o.c.until > now).order_by(o.c.account_id, o.c.id)).mappings().all()
    prints = _account_fingerprints(conn, sorted({r["account_id"] for r in rows}))
    return [
        ActiveOverride(
            account_id=r["account_id"],
            from_owner_id=r["from_owner_id"],
            to_owner_id=r["to_owner_id"],
            reason=r["reason"],
            decided_by=r["decided_by"],
            until=r["until"],
            data_changed=prints.get(r["account_id"]) != r["data_fingerprint"],
        )
        for r in rows
    ]


def audit_trail(conn: Connection, proposal_id: int) -> list[dict[str, Any]]:
    """The audit rows of a proposal, oldest first."""
    a = AuditLog.__table__
    rows = conn.execute(
        select(a.c.at, a.c.actor, a.c.action, a.c.move_id, a.c.details)
        .where(a.c.proposal_id == proposal_id)
        .order_by(a.c.id)
    ).mappings()
    return [dict(r) for r in rows]


MOVE_OUTCOMES = ("written", "conflict", "failed", "skipped")


def due_moves(conn: Connection, proposal_id: int, *, today: dt.date) -> list[MoveRow]:
    """The pending moves whose effective date has come (no date: due at once), in wave order."""
    rows = conn.execute(
        select(_M)
        .where(
            _M.c.proposal_id == proposal_id,
            _M.c.writeback_state == "pending",
            (_M.c.effective_date.is_(None)) | (_M.c.effective_date <= today),
        )
        .order_by(_M.c.wave, _M.c.account_id)
    ).mappings()
    return [_move_row(r) for r in rows]


def record_move_result(
    conn: Connection,
    move_id: int,
    *,
    outcome: str,
    crm_response: dict[str, Any] | None,
    actor: str,
    now: dt.datetime,
) -> bool:
    """Set a pending move's outcome and CRM answer once (compare-and-set) with its audit row.

    Returns False when the move was no longer pending (already recorded, or cancelled): nothing changes.
    """
    if outcome not in MOVE_OUTCOMES:
        raise ProposalError(f"unknown move outcome {outcome!r}; known: {', '.join(MOVE_OUTCOMES)}")
    row = conn.execute(
        update(ProposalMove)
        .where(_M.c.id == move_id, _M.c.writeback_state == "pending")
        .values(
            writeback_state=outcome,
            crm_response=crm_response,
            written_at=now if outcome == "written" else None,
        )
        .returning(_M.c.proposal_id)
    ).first()
    if row is None:
        return False
    _audit(
        conn,
        actor=actor,
        action=f"move_{outcome}",
        proposal_id=int(row[0]),
        now=now,
        detail={"crm_response": crm_response},
        move_id=move_id,
    )
    return True


def lock_state(conn: Connection, proposal_id: int) -> str:
    """The proposal's state, with its row locked until the transaction ends.

    The write-back holds this lock while one chunk of moves goes to the CRM and is recorded, so a
    concurrent ``cancel`` waits for the chunk instead of marking moves cancelled that were just written.
    """
    state = conn.execute(
        select(_P.c.state).where(_P.c.id == proposal_id).with_for_update()
    ).scalar_one_or_none()
    if state is None:
        raise UnknownProposalError(f"no proposal {proposal_id}")
    return str(state)


def move_states(conn: Connection, proposal_id: int) -> dict[str, int]:
    """How many of the proposal's moves are in each write-back state."""
    rows = conn.execute(
        select(_M.c.writeback_state, func.count())
        .where(_M.c.proposal_id == proposal_id)
        .group_by(_M.c.writeback_state)
    ).all()
    return {str(state): int(n) for state, n in rows}


def next_effective_date(conn: Connection, proposal_id: int, *, today: dt.date) -> dt.date | None:
    """The earliest effective date of the moves still pending (a move without one is due ``today``)."""
    return conn.execute(
        select(func.min(func.coalesce(_M.c.effective_date, today))).where(
            _M.c.proposal_id == proposal_id, _M.c.writeback_state == "pending"
        )
    ).scalar_one_or_none()


REVERTIBLE = ("applied", "partially_applied")


def create_revert(
    conn: Connection, proposal_id: int, *, actor: str, now: dt.datetime, expires_at: dt.datetime | None
) -> tuple[int, bool]:
    """A proposal that moves every written account of ``proposal_id`` back; ``(id, created)``.

    It is approved and written like any proposal (its expected owner is the one the original wrote);
    once it is applied, the original becomes ``reverted``. Asking twice gives the same revert.
    """
    original = get_proposal(conn, proposal_id)
    if original.state not in REVERTIBLE:
        raise WrongStateError(original, "reverted")
    written = conn.execute(
        select(_M).where(_M.c.proposal_id == proposal_id, _M.c.writeback_state == "written")
        .order_by(_M.c.account_id)
    ).mappings()  # fmt: skip
    moves = [
        NewMove(
            account_id=m["account_id"],
            from_owner_id=m["to_owner_id"],
            to_owner_id=m["from_owner_id"],
            expected_owner_id=m["to_owner_id"],
            rationale=f"reverts proposal {proposal_id}: back to its owner before that proposal",
        )
        for m in written
    ]
    if not moves:
        raise ProposalError(f"proposal {proposal_id} wrote no move; there is nothing to revert")
    return create_proposal(
        conn,
        scenario=f"revert of {proposal_id}",
        fingerprint=f"revert:{proposal_id}",
        moves=moves,
        now=now,
        expires_at=expires_at,
        params={"reverts": proposal_id},
        actor=actor,
        reverts=proposal_id,
    )


def finish_application(
    conn: Connection, proposal_id: int, *, to: str, actor: str, now: dt.datetime, detail: dict[str, Any]
) -> ProposalSummary:
    """Move an applying proposal to its final state; a revert that wrote anything reverts its original."""
    summary = transition(
        conn, proposal_id, to=to, expected=("applying",), actor=actor, now=now, detail=detail
    )
    original = conn.execute(select(_P.c.reverts_proposal_id).where(_P.c.id == proposal_id)).scalar_one()
    if original is not None and to in REVERTIBLE:
        transition(conn, int(original), to="reverted", expected=REVERTIBLE, actor=actor, now=now,
                   detail={"by_proposal": proposal_id})  # fmt: skip
    return summary


def open_opportunities(conn: Connection, moves: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """The open opportunities of each ``(account_id, old_owner_id)`` that the old owner owns, by account.

    These follow an account's owner change when the write-back is configured so (the CRMs' APIs do
    not cascade an account's owner to its opportunities).
    """
    if not moves:
        return {}
    pairs = list(dict.fromkeys(moves))
    rows = conn.execute(
        select(_OPP.c.account_id, _OPP.c.id)
        .where(
            tuple_(_OPP.c.account_id, _OPP.c.owner_id).in_(pairs),
            _OPP.c.is_closed.is_(False),
            _OPP.c.deleted.is_(False),
        )
        .order_by(_OPP.c.account_id, _OPP.c.id)
    ).all()
    found: dict[str, list[str]] = {}
    for account_id, opportunity_id in rows:
        found.setdefault(str(account_id), []).append(str(opportunity_id))
    return found
