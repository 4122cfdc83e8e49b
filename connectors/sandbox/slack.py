"""A fake Slack Web API on loopback: the methods the approval flow calls, with Slack's error shapes.

It speaks what ``slack_sdk.WebClient(base_url=...)`` sends (form or JSON bodies, a Bearer token) and
answers as Slack does: HTTP 200 with ``{"ok": false, "error": ...}`` for API errors, HTTP 429 with
``Retry-After`` when rate limited. Every call is recorded for the tests; faults are injected per method.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from connectors.sandbox.http import App, Request, Response, SandboxHttpServer

Handler = Callable[["FakeSlack", dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class SlackCall:
    """One recorded request: the method and its arguments (JSON fields decoded)."""

    method: str
    args: dict[str, Any]


@dataclass
class FakeSlack:
    """The state of the fake workspace and the record of calls."""

    token: str = "xoxb-test-token"  # noqa: S105 - a fake workspace's token, not a secret
    app_token: str = "xapp-test-token"  # noqa: S105 - the app-level token apps.connections.open takes
    socket_url: str | None = None
    """What ``apps.connections.open`` answers: the Socket Mode server's ws:// URL (see slack_socket.py)."""
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    channels: set[str] = field(default_factory=lambda: {"C0APPROVAL"})
    calls: list[SlackCall] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    rate_limits: dict[str, list[int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ts: int = 0

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``Retry-After``."""
        self.rate_limits.setdefault(method, []).extend([retry_after] * times)

    def calls_of(self, method: str) -> list[SlackCall]:
        """The recorded calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    def _next_ts(self) -> str:
        self._ts += 1
        return f"1700000000.{self._ts:06d}"


def _err(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def _channel(slack: FakeSlack, args: dict[str, Any]) -> str | None:
    channel = args.get("channel")
    return channel if isinstance(channel, str) and channel in slack.channels else None


def _post_message(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel = _channel(slack, args)
    if channel is None:
        return _err("channel_not_found")
    if not args.get("text") and not args.get("blocks"):
        return _err("no_text")
    if isinstance(args.get("blocks"), list) and len(args["blocks"]) > 50:
        return _err("invalid_blocks")
    ts = slack._next_ts()
    message = {"type": "message", "text": args.get("text", ""), "blocks": args.get("blocks", []), "ts": ts}
    if args.get("thread_ts"):
        message["thread_ts"] = args["thread_ts"]
    slack.messages[(channel, ts)] = message
    return {"ok": True, "channel": channel, "ts": ts, "message": message}


def _update(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel = _channel(slack, args)
    if channel is None:
        return _err("channel_not_found")
    key = (channel, str(args.get("ts", "")))
    if key not in slack.messages:
        return _err("message_not_found")
    slack.messages[key].update({k: args[k] for k in ("text", "blocks") if k in args})
    return {"ok": True, "channel": channel, "ts": key[1], "text": slack.messages[key]["text"]}


def _ephemeral(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    if _channel(slack, args) is None:
        return _err("channel_not_found")
    if args.get("user") not in slack.users:
        return _err("user_not_in_channel")
    return {"ok": True, "message_ts": slack._next_ts()}


def _views_open(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    trigger = args.get("trigger_id")
    view = args.get("view")
    if not trigger or not isinstance(view, dict):
        return _err("invalid_arguments")
    if str(trigger).startswith("expired"):
        return _err("expired_trigger_id")
    return {"ok": True, "view": {"id": f"V{len(slack.calls):08d}", **view}}


def _users_info(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    user = slack.users.get(str(args.get("user", "")))
    return {"ok": True, "user": user} if user is not None else _err("user_not_found")


def _usergroup_users(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    members = slack.usergroups.get(str(args.get("usergroup", "")))
    return {"ok": True, "users": members} if members is not None else _err("no_such_subteam")


def _auth_test(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "ok": True,
        "url": "https://fake.slack.test/",
        "team": "Fake",
        "user": "territory",
        "team_id": "T0FAKE",
        "user_id": "U0BOT",
        "bot_id": "B0BOT",
    }


def _connections_open(slack: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    if slack.socket_url is None:
        return _err("socket_mode_not_enabled")
    return {"ok": True, "url": slack.socket_url}


APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
"""Methods called with the app-level token instead of the bot token."""

METHODS: dict[str, Handler] = {
    "apps.connections.open": _connections_open,
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _ephemeral,
    "views.open": _views_open,
    "users.info": _users_info,
    "usergroups.users.list": _usergroup_users,
    "auth.test": _auth_test,
}


def _decode_args(content_type: str, raw: bytes) -> dict[str, Any]:
    """Form or JSON arguments; JSON-valued form fields (``blocks``, ``view``) decoded."""
    if content_type.startswith("application/json"):
        decoded = json.loads(raw or b"{}")
        return decoded if isinstance(decoded, dict) else {}
    args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8")).items()}
    for key in ("blocks", "view", "attachments"):
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except json.JSONDecodeError:
                args[key] = None
    return args


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    out = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return Response(status, json.dumps(body).encode(), out)


def _app(slack: FakeSlack) -> App:
    """Routes ``POST /api/<method>`` to the fake's methods."""

    def app(request: Request) -> Response:
        if request.method != "POST":
            return _answer(405, _err("method_not_allowed"))
        method = request.path.removeprefix("/api/").strip("/")
        try:
            args = _decode_args(request.headers.get("Content-Type", ""), request.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _answer(200, _err("invalid_json"))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else args.pop("token", "")
        with slack._lock:
            slack.calls.append(SlackCall(method, args))
            if method not in METHODS:
                return _answer(404, _err("unknown_method"))
            if not token:
                return _answer(200, _err("not_authed"))
            if token != (slack.app_token if method in APP_TOKEN_METHODS else slack.token):
                return _answer(200, _err("invalid_auth"))
            pending = slack.rate_limits.get(method)
            if pending:
                retry_after = pending.pop(0)
                return _answer(429, _err("ratelimited"), {"Retry-After": str(retry_after)})
            body = METHODS[method](slack, args)
        return _answer(200, body)

    return app


@contextmanager
def serve(slack: FakeSlack | None = None) -> Iterator[tuple[FakeSlack, str]]:
    """Run the fake on a free loopback port; yield it and the ``base_url`` for ``WebClient``."""
    state = slack or FakeSlack()
    server = SandboxHttpServer(_app(state), name="fake-slack").start()
    try:
        yield state, f"{server.url}/api/"
    finally:
        server.stop()
