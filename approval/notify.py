"""What the daemon tells Slack about a proposal: the message, its decision, its expiry, write-back results.

Each function reads the stored proposal, builds the blocks with :mod:`approval.blocks` and makes one
Web API call with the ``slack_sdk.WebClient`` it is given. The message's channel and ts are stored
when it is posted (``store.proposals.set_slack_message``), so later updates do not depend on a
``response_url`` that expires.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine

from approval import blocks as bk
from store import proposals as props

log = logging.getLogger(__name__)

DECIDED_STATES = frozenset(
    {"approved", "rejected", "expired", "superseded", "applying", "applied", "partially_applied"}
    | {"failed", "cancelled", "reverted"}
)
"""States whose message shows the decision instead of the buttons."""


def _number(data: dict[str, Any] | None, key: str) -> float:
    value = (data or {}).get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def build_view(detail: props.ProposalDetail, labels: dict[str, props.MoveLabel]) -> bk.ProposalView:
    """The message's plain values from a stored proposal and the names behind its moves (pure)."""
    summary = detail.summary
    moves = []
    for m in detail.move_rows:
        label = labels.get(m.account_id) or props.MoveLabel(m.account_id, m.from_owner_id, m.to_owner_id, 0.0)
        moves.append(
            bk.MoveLine(
                account_id=m.account_id,
                account_name=label.account_name,
                from_owner=label.from_owner,
                to_owner=label.to_owner,
                rationale=m.rationale,
                wave=m.wave,
                value=label.arr,
            )
        )
    per_wave = Counter((m.wave, m.effective_date) for m in detail.move_rows)
    waves = [
        bk.WaveLine(wave, date, count)
        for (wave, date), count in sorted(per_wave.items(), key=lambda kv: kv[0][0])
        if date is not None
    ]
    gap = (detail.solver_report or {}).get("optimality_gap")  # as rebalancer.edge stores it
    return bk.ProposalView(
        proposal_id=summary.id,
        scenario=summary.scenario,
        violation_before=_number(detail.before_metrics, "band_violation"),
        violation_after=_number(detail.after_metrics, "band_violation"),
        gap=float(gap) if isinstance(gap, int | float) else None,
        moves=moves,
        waves=waves,
        expires_at=summary.expires_at,
        full_list_hint=f"Every move: `territory proposals show {summary.id}`",
    )


def load_view(engine: Engine, proposal_id: int) -> tuple[props.ProposalSummary, bk.ProposalView]:
    """The stored proposal and its message's plain values."""
    with engine.connect() as conn:
        detail = props.show_proposal(conn, proposal_id)
        labels = props.move_labels(conn, proposal_id)
    return detail.summary, build_view(detail, labels)


def post_proposal(engine: Engine, client: WebClient, *, channel: str, proposal_id: int) -> str:
    """Post the proposal with its buttons to ``channel`` once and store where; return the message ts."""
    summary, view = load_view(engine, proposal_id)
    if summary.slack_ts is not None:
        return summary.slack_ts  # posted before (a rerun after a crash): never twice
    if summary.state != "proposed":
        raise props.WrongStateError(summary, "posted to Slack")
    answer = client.chat_postMessage(channel=channel, **bk.proposal_message(view))
    ts = str(answer["ts"])
    with engine.begin() as conn:
        props.set_slack_message(conn, proposal_id, channel=str(answer["channel"]), ts=ts)
    log.info("proposal posted to Slack", extra={"proposal_id": proposal_id, "channel": channel, "ts": ts})
    return ts


def show_decision(engine: Engine, client: WebClient, proposal_id: int) -> bool:
    """Replace the buttons of the proposal's message with its state; False when it has no message."""
    summary, view = load_view(engine, proposal_id)
    if summary.slack_channel is None or summary.slack_ts is None:
        return False
    if summary.state not in DECIDED_STATES:
        return False
    client.chat_update(
        channel=summary.slack_channel,
        ts=summary.slack_ts,
        **bk.decided_message(view, state=summary.state, by=summary.decided_by, at=summary.decided_at),
    )
    log.info("Slack message updated", extra={"proposal_id": proposal_id, "state": summary.state})
    return True


def expire_and_show(engine: Engine, client: WebClient | None, *, now: dt.datetime) -> list[int]:
    """Expire the proposals that are due and say so on their messages; return the expired ids."""
    with engine.begin() as conn:
        expired = props.expire_due(conn, now=now)
    if client is not None:
        show_expired(engine, client, expired)
    return expired


def show_expired(engine: Engine, client: WebClient, proposal_ids: list[int]) -> int:
    """Update the messages of expired proposals; return how many were updated (a failure is logged)."""
    updated = 0
    for pid in proposal_ids:
        try:
            updated += show_decision(engine, client, pid)
        except Exception:
            log.exception("updating an expired proposal's message failed", extra={"proposal_id": pid})
    return updated


def writeback_text(
    proposal_id: int,
    *,
    wave: int | None,
    written: int,
    conflicts: int,
    failed: int,
    state: str | None = None,
) -> str:
    """The thread reply for one write-back pass (one wave, or all moves due when ``wave`` is None)."""
    parts = [f"{written} written"]
    if conflicts:
        parts.append(f"{conflicts} skipped as conflicts (the CRM owner changed since the proposal)")
    if failed:
        parts.append(f"{failed} failed")
    where = f"Proposal {proposal_id}" + (f", wave {wave}" if wave is not None else "")
    text = f"{where}: " + ", ".join(parts) + "."
    if state is not None:
        text += f" The proposal is now {state.replace('_', ' ')}."
    return text


def post_writeback_result(
    engine: Engine,
    client: WebClient,
    proposal_id: int,
    *,
    wave: int | None,
    written: int,
    conflicts: int,
    failed: int,
    state: str | None = None,
) -> str | None:
    """Reply in the proposal message's thread with a pass's counts; None when it has no message.

    Plain values, so the write-back worker can call it with what it counted (``ApplyReport``'s
    ``written``, ``conflicts``, ``failed`` and, once the proposal is finished, its ``state``).
    """
    with engine.connect() as conn:
        summary = props.get_proposal(conn, proposal_id)
    if summary.slack_channel is None or summary.slack_ts is None:
        return None
    text = writeback_text(
        proposal_id, wave=wave, written=written, conflicts=conflicts, failed=failed, state=state
    )
    answer = client.chat_postMessage(channel=summary.slack_channel, thread_ts=summary.slack_ts, text=text)
    return str(answer["ts"])
