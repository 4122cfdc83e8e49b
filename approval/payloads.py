"""Parsing Slack interaction payloads (block_actions, view_submission) into plain values, or a clear error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from approval.blocks import (
    ACTIONS,
    BLOCK_EXCLUDED,
    BLOCK_REASON,
    INPUT_EXCLUDED,
    INPUT_REASON,
    VIEW_APPROVE_WITHOUT,
    VIEWS,
)
from approval.errors import MalformedPayloadError


@dataclass(frozen=True)
class ButtonClick:
    """A click on one of the proposal message's buttons."""

    action_id: str
    proposal_id: int
    user_id: str
    trigger_id: str
    channel_id: str | None
    message_ts: str | None
    response_url: str | None


@dataclass(frozen=True)
class ModalSubmission:
    """A submitted Reject or Approve-without modal."""

    callback_id: str
    proposal_id: int
    user_id: str
    reason: str
    excluded_accounts: tuple[str, ...]


def form_payload(body: bytes) -> dict[str, Any]:
    """The JSON ``payload`` field of Slack's ``application/x-www-form-urlencoded`` interaction body."""
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedPayloadError(f"the body is not a form: {exc}") from None
    values = fields.get("payload")
    if not values or len(values) != 1:
        raise MalformedPayloadError("the body has no single payload field")
    try:
        payload = json.loads(values[0])
    except json.JSONDecodeError as exc:
        raise MalformedPayloadError(f"the payload is not JSON: {exc.msg} at {exc.pos}") from None
    if not isinstance(payload, dict):
        raise MalformedPayloadError("the payload is not a JSON object")
    return payload


def _get(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...`` or a MalformedPayloadError naming the missing key."""
    for i, key in enumerate(path):
        if not isinstance(obj, dict) or key not in obj:
            raise MalformedPayloadError(f"the payload has no {'.'.join(path[: i + 1])}")
        obj = obj[key]
    return obj


def _str(obj: Any, *path: str) -> str:
    value = _get(obj, *path)
    if not isinstance(value, str) or not value:
        raise MalformedPayloadError(f"{'.'.join(path)} is not a non-empty string")
    return value


def _proposal_id(raw: str, where: str) -> int:
    if not raw.isdigit() or int(raw) <= 0:
        raise MalformedPayloadError(f"{where} is not a proposal id: {raw[:40]!r}")
    return int(raw)


def parse_interaction(payload: dict[str, Any]) -> ButtonClick | ModalSubmission:
    """A ``block_actions`` click on our buttons or a ``view_submission`` of our modals."""
    kind = _get(payload, "type")
    user_id = _str(payload, "user", "id")
    if kind == "block_actions":
        actions = _get(payload, "actions")
        if not isinstance(actions, list) or len(actions) != 1:
            raise MalformedPayloadError("block_actions must carry exactly one action")
        action_id = _str(actions[0], "action_id")
        if action_id not in ACTIONS:
            raise MalformedPayloadError(f"unknown action id {action_id[:60]!r}")
        channel = payload.get("channel") or payload.get("container") or {}
        message = payload.get("message") or {}
        return ButtonClick(
            action_id=action_id,
            proposal_id=_proposal_id(_str(actions[0], "value"), "actions[0].value"),
            user_id=user_id,
            trigger_id=_str(payload, "trigger_id"),
            channel_id=channel.get("id") or channel.get("channel_id") if isinstance(channel, dict) else None,
            message_ts=message.get("ts") if isinstance(message, dict) else None,
            response_url=payload.get("response_url")
            if isinstance(payload.get("response_url"), str)
            else None,
        )
    if kind == "view_submission":
        callback_id = _str(payload, "view", "callback_id")
        if callback_id not in VIEWS:
            raise MalformedPayloadError(f"unknown view callback id {callback_id[:60]!r}")
        values = _get(payload, "view", "state", "values")
        reason = _get(values, BLOCK_REASON, INPUT_REASON, "value")
        if not isinstance(reason, str) or not reason.strip():
            raise MalformedPayloadError("the reason is empty")
        excluded: tuple[str, ...] = ()
        if callback_id == VIEW_APPROVE_WITHOUT:
            chosen = _get(values, BLOCK_EXCLUDED, INPUT_EXCLUDED, "selected_options")
            if not isinstance(chosen, list) or not chosen:
                raise MalformedPayloadError("no move was chosen to leave out")
            excluded = tuple(_str(option, "value") for option in chosen)
        return ModalSubmission(
            callback_id=callback_id,
            proposal_id=_proposal_id(_str(payload, "view", "private_metadata"), "view.private_metadata"),
            user_id=user_id,
            reason=reason.strip(),
            excluded_accounts=excluded,
        )
    raise MalformedPayloadError(f"unsupported interaction type {str(kind)[:40]!r}")
