"""Block Kit of a proposal within Slack's limits, and parsing of the interactions it produces."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from approval import blocks as bk
from approval.errors import MalformedPayloadError
from approval.payloads import ButtonClick, ModalSubmission, form_payload, parse_interaction


def _view(n_moves: int = 3, rationale: str = "balances potential") -> bk.ProposalView:
    moves = [
        bk.MoveLine(f"001{i:04d}", f"Account {i}", "Ada", "Bo", rationale, wave=1 + i % 2, value=float(i))
        for i in range(n_moves)
    ]
    return bk.ProposalView(
        proposal_id=42,
        scenario="default",
        violation_before=1234.5,
        violation_after=10.0,
        gap=0.0123,
        moves=moves,
        territories=[bk.TerritoryLine("Ada <West>", "130%", "104%")],
        waves=[bk.WaveLine(1, dt.date(2026, 12, 1), 2), bk.WaveLine(2, dt.date(2026, 12, 15), 1)],
        full_list_hint="`territory proposals show 42`",
    )


def _texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [b["text"]["text"] for b in blocks if "text" in b]


def test_message_has_summary_moves_waves_and_three_buttons() -> None:
    msg = bk.proposal_message(_view())
    blocks = msg["blocks"]
    assert len(blocks) <= bk.MAX_BLOCKS
    texts = _texts(blocks)
    assert texts[0] == "Proposal 42: default"
    assert texts[1] == "*3 moves* · band violation 1,234.50 → 10.00 · optimality gap 1.23%"
    assert "Ada &lt;West&gt;: 130% → 104%" in texts[2]
    assert texts[3].splitlines()[1].startswith("• *Account 2* Ada → Bo (wave 1)")  # largest first
    assert "wave 2: 2026-12-15, 1 moves" in texts[4]
    buttons = blocks[-1]["elements"]
    assert [b["action_id"] for b in buttons] == list(bk.ACTIONS)
    assert {b["value"] for b in buttons} == {"42"}
    assert "confirm" in buttons[0]
    assert "confirm" not in buttons[1]


def test_long_texts_and_many_moves_stay_within_limits() -> None:
    msg = bk.proposal_message(_view(n_moves=500, rationale="x" * 900))
    assert all(len(t) <= bk.MAX_TEXT for t in _texts(msg["blocks"]))
    largest = _texts(msg["blocks"])[3]
    assert len(largest) == bk.MAX_TEXT
    assert largest.endswith("…")
    modal = bk.approve_without_modal(42, _view(n_moves=500).moves)
    options = modal["blocks"][1]["element"]["options"]
    assert len(options) == bk.MAX_OPTIONS
    assert options[0]["value"] == "0010499"
    assert all(len(o["text"]["text"]) <= bk.MAX_OPTION_TEXT for o in options)
    assert "100 largest of 500" in modal["blocks"][0]["text"]["text"]
    assert len(modal["title"]["text"]) <= 24


def test_decided_message_replaces_the_buttons() -> None:
    msg = bk.decided_message(
        _view(), state="approved", by="Sam", at=dt.datetime(2026, 12, 1, 9, 5, tzinfo=dt.UTC)
    )
    assert all(b["type"] != "actions" for b in msg["blocks"])
    assert msg["blocks"][-1]["text"]["text"] == "*Approved* by Sam at 2026-12-01T09:05+00:00"


def test_approve_without_needs_moves() -> None:
    with pytest.raises(ValueError, match="no moves"):
        bk.approve_without_modal(1, [])


def _click(action_id: str = bk.ACTION_APPROVE, value: str = "42") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": "U1"},
        "trigger_id": "t.1",
        "channel": {"id": "C1"},
        "message": {"ts": "1700000000.000100"},
        "response_url": "https://hooks.slack.test/x",
        "actions": [{"action_id": action_id, "value": value}],
    }


def test_a_click_round_trips_through_the_form_body() -> None:
    body = urlencode({"payload": json.dumps(_click())}).encode()
    parsed = parse_interaction(form_payload(body))
    assert parsed == ButtonClick(
        bk.ACTION_APPROVE, 42, "U1", "t.1", "C1", "1700000000.000100", "https://hooks.slack.test/x"
    )


def test_submissions_of_both_modals() -> None:
    values = {
        bk.BLOCK_REASON: {bk.INPUT_REASON: {"value": "  renewals  "}},
        bk.BLOCK_EXCLUDED: {bk.INPUT_EXCLUDED: {"selected_options": [{"value": "001A"}, {"value": "001B"}]}},
    }
    base = {"type": "view_submission", "user": {"id": "U2"}}
    without = {
        **base,
        "view": {
            "callback_id": bk.VIEW_APPROVE_WITHOUT,
            "private_metadata": "7",
            "state": {"values": values},
        },
    }
    reject = {
        **base,
        "view": {"callback_id": bk.VIEW_REJECT, "private_metadata": "7", "state": {"values": values}},
    }
    assert parse_interaction(without) == ModalSubmission(
        bk.VIEW_APPROVE_WITHOUT, 7, "U2", "renewals", ("001A", "001B")
    )
    assert parse_interaction(reject) == ModalSubmission(bk.VIEW_REJECT, 7, "U2", "renewals", ())


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_click(action_id="drop_tables"), "unknown action id"),
        (_click(value="42; DROP"), "not a proposal id"),
        (_click(value="0"), "not a proposal id"),
        ({**_click(), "actions": []}, "exactly one action"),
        ({**_click(), "user": {}}, "no user.id"),
        ({**_click(), "type": "shortcut"}, "unsupported interaction type"),
        ({"type": "view_submission", "user": {"id": "U"}, "view": {"callback_id": "other"}}, "unknown view"),
        (
            {
                "type": "view_submission",
                "user": {"id": "U"},
                "view": {
                    "callback_id": bk.VIEW_REJECT,
                    "private_metadata": "1",
                    "state": {"values": {bk.BLOCK_REASON: {bk.INPUT_REASON: {"value": " "}}}},
                },
            },
            "reason is empty",
        ),
    ],
)
def test_malformed_payloads_are_refused(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(MalformedPayloadError, match=match):
        parse_interaction(payload)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"payload=\xff", "not a form"),
        (b"", "no single payload"),
        (b"other=1", "no single payload"),
        (b"payload=%7Bnope", "not JSON"),
        (b"payload=%5B%5D", "not a JSON object"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, match: str) -> None:
    with pytest.raises(MalformedPayloadError, match=match):
        form_payload(body)
