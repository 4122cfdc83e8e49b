"""The CLI's proposal commands as plain functions: JSON-ready results, one-line errors (exit code 2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Engine

from store import proposals as props

EXIT_REFUSED = 2
"""The exit code of a decision that cannot be taken (unknown id, wrong state, missing reason)."""


class DecisionRefusedError(Exception):
    """A decision that cannot be taken; ``str()`` is the one line the CLI prints."""

    exit_code = EXIT_REFUSED


def _refused(exc: props.ProposalError) -> DecisionRefusedError:
    return DecisionRefusedError(str(exc))


def may_decide(user_id: str, *, approvers: Collection[str], group_members: Collection[str]) -> bool:
    """Whether ``user_id`` is a configured approver; with none configured nobody is (fail closed)."""
    if not user_id.strip():
        return False
    return user_id in approvers or user_id in group_members


def list_proposals(engine: Engine, *, state: str | None = None) -> list[dict[str, Any]]:
    """``proposals list --format json``."""
    try:
        with engine.connect() as conn:
            return [p.as_json() for p in props.list_proposals(conn, state=state)]
    except props.ProposalError as exc:
        raise _refused(exc) from None


def show_proposal(engine: Engine, proposal_id: int) -> dict[str, Any]:
    """``proposals show ID --format json``."""
    try:
        with engine.connect() as conn:
            return props.show_proposal(conn, proposal_id).as_json()
    except props.ProposalError as exc:
        raise _refused(exc) from None


def approve(
    engine: Engine,
    proposal_id: int,
    *,
    actor: str,
    now: dt.datetime,
    except_accounts: Sequence[str] = (),
    reason: str | None = None,
    cooldown: dt.timedelta = props.DEFAULT_COOLDOWN,
) -> dict[str, Any]:
    """``proposals approve ID [--as NAME] [--except ACCOUNT_ID ... --reason TEXT]``."""
    try:
        with engine.begin() as conn:
            props.approve(
                conn,
                proposal_id,
                actor=actor,
                now=now,
                except_accounts=except_accounts,
                reason=reason,
                cooldown=cooldown,
            )
        return show_proposal(engine, proposal_id)
    except props.ProposalError as exc:
        raise _refused(exc) from None


def reject(
    engine: Engine,
    proposal_id: int,
    *,
    actor: str,
    now: dt.datetime,
    reason: str | None,
    cooldown: dt.timedelta = props.DEFAULT_COOLDOWN,
) -> dict[str, Any]:
    """``proposals reject ID --reason TEXT``."""
    try:
        with engine.begin() as conn:
            props.reject(conn, proposal_id, actor=actor, now=now, reason=reason, cooldown=cooldown)
        return show_proposal(engine, proposal_id)
    except props.ProposalError as exc:
        raise _refused(exc) from None


def cancel(engine: Engine, proposal_id: int, *, actor: str, now: dt.datetime) -> dict[str, Any]:
    """``proposals cancel ID``: stop the waves not yet written."""
    try:
        with engine.begin() as conn:
            props.cancel(conn, proposal_id, actor=actor, now=now)
        return show_proposal(engine, proposal_id)
    except props.ProposalError as exc:
        raise _refused(exc) from None


def revert(
    engine: Engine, proposal_id: int, *, actor: str, now: dt.datetime, expires_in: dt.timedelta
) -> dict[str, Any]:
    """``proposals revert ID``: a new proposal moving the written accounts back, to approve as any."""
    try:
        with engine.begin() as conn:
            revert_id, _ = props.create_revert(
                conn, proposal_id, actor=actor, now=now, expires_at=now + expires_in
            )
        return show_proposal(engine, revert_id)
    except props.ProposalError as exc:
        raise _refused(exc) from None
