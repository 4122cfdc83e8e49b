"""Block Kit for a proposal: the message with its buttons, the decided variant, the two modals (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_BLOCKS = 50
MAX_TEXT = 3000
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_HEADER = 150
LARGEST_MOVES = 10

ACTION_APPROVE = "proposal_approve"
ACTION_REJECT = "proposal_reject"
ACTION_APPROVE_WITHOUT = "proposal_approve_without"
ACTIONS = (ACTION_APPROVE, ACTION_REJECT, ACTION_APPROVE_WITHOUT)
VIEW_REJECT = "proposal_reject_reason"
VIEW_APPROVE_WITHOUT = "proposal_approve_without"
VIEWS = (VIEW_REJECT, VIEW_APPROVE_WITHOUT)
BLOCK_REASON = "reason"
BLOCK_EXCLUDED = "excluded"
INPUT_REASON = "reason_input"
INPUT_EXCLUDED = "excluded_input"


@dataclass(frozen=True)
class TerritoryLine:
    """One affected territory's headline figure before and after."""

    name: str
    before: str
    after: str


@dataclass(frozen=True)
class MoveLine:
    """One move as the message shows it."""

    account_id: str
    account_name: str
    from_owner: str
    to_owner: str
    rationale: str
    wave: int
    value: float = 0.0


@dataclass(frozen=True)
class WaveLine:
    """One wave: its number, its date and how many moves it writes."""

    wave: int
    effective_date: dt.date
    moves: int


@dataclass(frozen=True)
class ProposalView:
    """What the message says about a proposal, as plain values."""

    proposal_id: int
    scenario: str
    violation_before: float
    violation_after: float
    gap: float | None
    moves: Sequence[MoveLine]
    territories: Sequence[TerritoryLine] = ()
    waves: Sequence[WaveLine] = ()
    expires_at: dt.datetime | None = None
    full_list_hint: str = field(default="")


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_TEXT)}}


def _plain(text: str, limit: int = MAX_OPTION_TEXT) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": False}


def _escape(text: str) -> str:
    """Escape Slack's control characters in user data."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _body(view: ProposalView) -> list[dict[str, Any]]:
    gap = "n/a" if view.gap is None else f"{view.gap:.2%}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"Proposal {view.proposal_id}: {view.scenario}", MAX_HEADER)},
        _mrkdwn(
            f"*{len(view.moves)} moves* · band violation {view.violation_before:,.2f} → "
            f"{view.violation_after:,.2f} · optimality gap {gap}"
        ),
    ]
    if view.territories:
        lines = [f"• {_escape(t.name)}: {_escape(t.before)} → {_escape(t.after)}" for t in view.territories]
        blocks.append(_mrkdwn("*Territories before → after*\n" + "\n".join(lines)))
    largest = sorted(view.moves, key=lambda m: (-m.value, m.account_id))[:LARGEST_MOVES]
    if largest:
        lines = [
            f"• *{_escape(m.account_name)}* {_escape(m.from_owner)} → {_escape(m.to_owner)} "
            f"(wave {m.wave}): {_escape(m.rationale)}"
            for m in largest
        ]
        blocks.append(_mrkdwn("*Largest moves*\n" + "\n".join(lines)))
    if view.waves:
        lines = [f"• wave {w.wave}: {w.effective_date.isoformat()}, {w.moves} moves" for w in view.waves]
        blocks.append(_mrkdwn("*Waves*\n" + "\n".join(lines)))
    if view.full_list_hint:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _clip(view.full_list_hint, MAX_TEXT)}],
            }
        )
    return blocks


def proposal_message(view: ProposalView) -> dict[str, Any]:
    """``chat.postMessage`` arguments (``text`` and ``blocks``) with Approve, Reject, Approve without..."""
    value = str(view.proposal_id)
    actions = {
        "type": "actions",
        "block_id": f"proposal_{view.proposal_id}",
        "elements": [
            {
                "type": "button",
                "action_id": ACTION_APPROVE,
                "text": _plain("Approve"),
                "style": "primary",
                "value": value,
                "confirm": {
                    "title": _plain("Approve the proposal?", 100),
                    "text": _plain(f"{len(view.moves)} owner changes will be written to the CRM.", 300),
                    "confirm": _plain("Approve", 30),
                    "deny": _plain("Cancel", 30),
                },
            },
            {
                "type": "button",
                "action_id": ACTION_REJECT,
                "text": _plain("Reject"),
                "style": "danger",
                "value": value,
            },
            {
                "type": "button",
                "action_id": ACTION_APPROVE_WITHOUT,
                "text": _plain("Approve without..."),
                "value": value,
            },
        ],
    }
    blocks = [*_body(view), actions]
    return {
        "text": f"Proposal {view.proposal_id} ({view.scenario}): {len(view.moves)} moves",
        "blocks": blocks,
    }


def decided_message(
    view: ProposalView, *, state: str, by: str | None, at: dt.datetime | None
) -> dict[str, Any]:
    """``chat.update`` arguments: the proposal with its decision in place of the buttons."""
    who = f" by {_escape(by)}" if by else ""
    when = f" at {at.isoformat(timespec='minutes')}" if at else ""
    blocks = [*_body(view), _mrkdwn(f"*{state.replace('_', ' ').capitalize()}*{who}{when}")]
    return {"text": f"Proposal {view.proposal_id}: {state}{who}", "blocks": blocks}


def _reason_input() -> dict[str, Any]:
    """The modals' mandatory "Why?" field."""
    return {
        "type": "input",
        "block_id": BLOCK_REASON,
        "label": _plain("Why?", 2000),
        "element": {
            "type": "plain_text_input",
            "action_id": INPUT_REASON,
            "multiline": True,
            "min_length": 1,
        },
    }


def reject_modal(proposal_id: int) -> dict[str, Any]:
    """``views.open`` view asking for the reason of a rejection."""
    return {
        "type": "modal",
        "callback_id": VIEW_REJECT,
        "private_metadata": str(proposal_id),
        "title": _plain("Reject proposal", 24),
        "submit": _plain("Reject", 24),
        "close": _plain("Cancel", 24),
        "blocks": [_reason_input()],
    }


def approve_without_modal(proposal_id: int, moves: Sequence[MoveLine]) -> dict[str, Any]:
    """``views.open`` view listing up to 100 moves to leave out, with a mandatory reason."""
    if not moves:
        raise ValueError(f"proposal {proposal_id} has no moves to leave out")
    options = [
        {
            "text": _plain(f"{m.account_name}: {m.from_owner} → {m.to_owner}"),
            "value": _clip(m.account_id, 150),
        }
        for m in sorted(moves, key=lambda m: (-m.value, m.account_id))[:MAX_OPTIONS]
    ]
    note = []
    if len(moves) > MAX_OPTIONS:
        note = [
            _mrkdwn(
                f"The {MAX_OPTIONS} largest of {len(moves)} moves are listed; use the CLI for the others."
            )
        ]
    return {
        "type": "modal",
        "callback_id": VIEW_APPROVE_WITHOUT,
        "private_metadata": str(proposal_id),
        "title": _plain("Approve without...", 24),
        "submit": _plain("Approve", 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            *note,
            {
                "type": "input",
                "block_id": BLOCK_EXCLUDED,
                "label": _plain("Moves to leave out", 2000),
                "element": {"type": "multi_static_select", "action_id": INPUT_EXCLUDED, "options": options},
            },
            _reason_input(),
        ],
    }
