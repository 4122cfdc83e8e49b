"""Slack approvals end to end: the real Starlette app (through httpx) and the real slack_bolt/slack_sdk
against the fake Slack Web API, on real PostgreSQL. Socket Mode through slack_sdk's built-in client
against a fake Socket Mode server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from slack_sdk import WebClient
from sqlalchemy import Engine, text

from approval import blocks as bk
from approval import notify
from approval import slack as slack_approval
from approval.errors import SlackNotConfiguredError
from connectors.sandbox.slack import FakeSlack, serve
from connectors.sandbox.slack_socket import (
    block_actions,
    form_body,
    serve_socket_mode,
    signed_headers,
    values_of,
    view_submission,
)
from service.app import create_app
from service.settings import Settings
from store import proposals as props

pytestmark = pytest.mark.integration

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0APPROVAL"
NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
APPROVER, GROUP_MEMBER, OUTSIDER = "U0SAM", "U0GIL", "U0EVE"


class _Scheduler:
    stopping = False
    is_leader = True

    def heartbeat_age(self) -> float:
        return 0.0


class Clock:
    """A settable clock for the app (decisions, signature windows, expiry)."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    fake: FakeSlack
    base_url: str
    engine: Engine
    clock: Clock
    proposal_id: int
    ts: str

    def client(self) -> WebClient:
        return WebClient(token=self.fake.token, base_url=self.base_url, timeout=5)

    def summary(self) -> props.ProposalSummary:
        with self.engine.connect() as conn:
            return props.get_proposal(conn, self.proposal_id)

    def decisions(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            trail = props.audit_trail(conn, self.proposal_id)
        return [r for r in trail if r["action"] in ("approved", "rejected")]

    def click(self, action_id: str, *, user: str = APPROVER, trigger_id: str = "t.1") -> bytes:
        payload = block_actions(
            action_id, str(self.proposal_id), user=user, channel=CHANNEL, ts=self.ts, trigger_id=trigger_id
        )
        return form_body(payload)

    def submit(
        self, callback_id: str, *, reason: str, excluded: tuple[str, ...] = (), user: str = APPROVER
    ) -> bytes:
        pairs: list[tuple[str, str, dict[str, Any]]] = [
            (bk.BLOCK_REASON, bk.INPUT_REASON, {"type": "plain_text_input", "value": reason})
        ]
        if excluded:
            options = [{"text": {"type": "plain_text", "text": a}, "value": a} for a in excluded]
            pairs.append(
                (
                    bk.BLOCK_EXCLUDED,
                    bk.INPUT_EXCLUDED,
                    {"type": "multi_static_select", "selected_options": options},
                )
            )
        return form_body(
            view_submission(callback_id, str(self.proposal_id), user=user, values=values_of(pairs))
        )

    def headers(
        self, body: bytes, *, at: dt.datetime | None = None, retry: int | None = None
    ) -> dict[str, str]:
        return signed_headers(SECRET, body, timestamp=int((at or self.clock.now).timestamp()), retry=retry)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    """Give background listeners the time to do what they (wrongly) might."""
    time.sleep(seconds)


@pytest.fixture
def world(db: Engine) -> Iterator[World]:
    fake = FakeSlack(
        users={
            APPROVER: {"id": APPROVER, "name": "sam", "real_name": "Sam Leader"},
            GROUP_MEMBER: {"id": GROUP_MEMBER, "name": "gil", "real_name": "Gil Group"},
            OUTSIDER: {"id": OUTSIDER, "name": "eve", "real_name": "Eve Outsider"},
        },
        usergroups={"S0LEADS": [GROUP_MEMBER]},
    )
    with db.begin() as conn:
        conn.execute(text("INSERT INTO owners (id, name, capacity) VALUES ('005A','Ada',1),('005B','Bo',1)"))
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, owner_id, arr) VALUES "
                "('001A','Acme','005A',300),('001B','Bolt','005A',200),('001C','Crane','005A',100)"
            )
        )
        pid, _ = props.create_proposal(
            conn,
            scenario="default",
            fingerprint="fp-slack",
            now=NOW - dt.timedelta(hours=1),
            expires_at=NOW + dt.timedelta(days=14),
            moves=[
                props.NewMove(
                    a, "005A", "005B", "005A", "balances potential", effective_date=dt.date(2026, 12, 2)
                )
                for a in ("001A", "001B", "001C")
            ],
            before_metrics={"band_violation": 12.5},
            after_metrics={"band_violation": 1.25},
            solver_report={"optimality_gap": 0.0},
        )
    with serve(fake) as (state, base_url):
        client = WebClient(token=state.token, base_url=base_url, timeout=5)
        ts = notify.post_proposal(db, client, channel=CHANNEL, proposal_id=pid)
        yield World(state, base_url, db, Clock(NOW), pid, ts)


def _settings(world: World, **slack: Any) -> Settings:
    section = {
        "channel": CHANNEL,
        "approvers": [APPROVER],
        "approver_groups": ["S0LEADS"],
        "bot_token": world.fake.token,
        "signing_secret": SECRET,
        "api_url": world.base_url,
        **slack,
    }
    return Settings.model_validate({"slack": section})


def _app(world: World, registry: CollectorRegistry | None = None, **slack: Any) -> Any:
    return create_app(
        _settings(world, **slack),
        world.engine,
        scheduler=_Scheduler(),
        registry=registry or CollectorRegistry(),
        clock=world.clock,
    )


def post(app: Any, bodies: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    """POST every body to /slack/actions at once."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://territory.test") as client:
            return list(
                await asyncio.gather(
                    *(client.post("/slack/actions", content=b, headers=h) for b, h in bodies)
                )
            )

    return asyncio.run(run())


def post_one(app: Any, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return post(app, [(body, headers)])[0]


def ephemerals(world: World, user: str | None = None) -> list[str]:
    return [
        c.args["text"]
        for c in world.fake.calls_of("chat.postEphemeral")
        if user is None or c.args.get("user") == user
    ]


def test_the_posted_message_has_the_buttons_and_its_place_is_stored(world: World) -> None:
    summary = world.summary()
    assert (summary.slack_channel, summary.slack_ts) == (CHANNEL, world.ts)
    message = world.fake.messages[(CHANNEL, world.ts)]
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    assert [e["action_id"] for e in actions["elements"]] == list(bk.ACTIONS)
    assert "12.50 → 1.25" in message["blocks"][1]["text"]["text"]
    # Posting again (a rerun) posts nothing.
    assert (
        notify.post_proposal(world.engine, world.client(), channel=CHANNEL, proposal_id=world.proposal_id)
        == world.ts
    )
    assert len(world.fake.calls_of("chat.postMessage")) == 1


def test_approve_decides_and_updates_the_message(world: World) -> None:
    registry = CollectorRegistry()
    app = _app(world, registry)
    body = world.click(bk.ACTION_APPROVE)
    answer = post_one(app, body, world.headers(body))
    assert answer.status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("chat.update")))
    summary = world.summary()
    assert summary.state == "approved"
    assert summary.decided_by == "Sam Leader (U0SAM)"
    update = world.fake.calls_of("chat.update")[0].args
    assert (update["channel"], update["ts"]) == (CHANNEL, world.ts)
    last = world.fake.messages[(CHANNEL, world.ts)]["blocks"][-1]["text"]["text"]
    assert last.startswith("*Approved* by Sam Leader (U0SAM) at 2026-12-01T09:00")
    assert not any(b["type"] == "actions" for b in world.fake.messages[(CHANNEL, world.ts)]["blocks"])
    count = registry.get_sample_value(
        "territory_http_request_duration_seconds_count", {"endpoint": "slack_actions"}
    )
    assert count == 1.0


def test_approve_without_some_moves_opens_the_modal_then_approves_the_rest(world: World) -> None:
    app = _app(world)
    body = world.click(bk.ACTION_APPROVE_WITHOUT, trigger_id="t.without")
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("views.open")))
    opened = world.fake.calls_of("views.open")[0].args
    assert opened["trigger_id"] == "t.without"
    assert opened["view"]["callback_id"] == bk.VIEW_APPROVE_WITHOUT
    options = opened["view"]["blocks"][0]["element"]["options"]
    assert [o["value"] for o in options] == ["001A", "001B", "001C"]  # largest ARR first
    assert world.summary().state == "proposed"

    body = world.submit(bk.VIEW_APPROVE_WITHOUT, reason="Acme renews next week", excluded=("001A",))
    answer = post_one(app, body, world.headers(body))
    assert answer.status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("chat.update")))
    summary = world.summary()
    assert (summary.state, summary.reason) == ("approved", "Acme renews next week")
    with world.engine.connect() as conn:
        states = {
            m.account_id: m.writeback_state for m in props.show_proposal(conn, world.proposal_id).move_rows
        }
    assert states == {"001A": "cancelled", "001B": "pending", "001C": "pending"}


def test_reject_opens_the_modal_then_rejects_with_the_reason(world: World) -> None:
    app = _app(world)
    body = world.click(bk.ACTION_REJECT, trigger_id="t.reject")
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("views.open")))
    opened = world.fake.calls_of("views.open")[0].args
    assert (opened["trigger_id"], opened["view"]["callback_id"]) == ("t.reject", bk.VIEW_REJECT)
    assert opened["view"]["private_metadata"] == str(world.proposal_id)

    body = world.submit(bk.VIEW_REJECT, reason="  Q4 freeze  ")
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("chat.update")))
    summary = world.summary()
    assert (summary.state, summary.reason) == ("rejected", "Q4 freeze")
    assert world.fake.messages[(CHANNEL, world.ts)]["blocks"][-1]["text"]["text"].startswith(
        "*Rejected* by Sam"
    )


def test_fifty_concurrent_clicks_make_one_decision_and_the_others_are_told_who(world: World) -> None:
    app = _app(world)
    bodies = []
    for i in range(50):
        body = world.click(bk.ACTION_APPROVE, user=APPROVER if i % 2 else GROUP_MEMBER, trigger_id=f"t.{i}")
        bodies.append((body, world.headers(body)))
    answers = post(app, bodies)
    assert [a.status_code for a in answers] == [200] * 50
    wait_for(
        lambda: (
            len(ephemerals(world)) + len(world.decisions()) >= 50 and bool(world.fake.calls_of("chat.update"))
        )
    )
    settle()
    decided = world.decisions()
    assert len(decided) == 1
    assert len(world.fake.calls_of("chat.update")) == 1
    told = ephemerals(world)
    assert len(told) == 49
    winner = world.summary().decided_by
    assert winner in ("Sam Leader (U0SAM)", "Gil Group (U0GIL)")
    assert all(f"is approved by {winner} at 2026-12-01T09:00:00+00:00" in t for t in told)
    assert len(world.fake.calls_of("usergroups.users.list")) == 1  # members cached, not asked per click


def test_an_outsider_is_told_no_and_nothing_changes(world: World, caplog: pytest.LogCaptureFixture) -> None:
    app = _app(world)
    for action in bk.ACTIONS:
        body = world.click(action, user=OUTSIDER)
        assert post_one(app, body, world.headers(body)).status_code == 200
    body = world.submit(bk.VIEW_REJECT, reason="no", user=OUTSIDER)
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: len(ephemerals(world, OUTSIDER)) == 4)
    settle()
    assert ephemerals(world, OUTSIDER) == [slack_approval.NOT_ALLOWED] * 4
    assert world.summary().state == "proposed"
    assert world.fake.calls_of("views.open") == []
    assert world.fake.calls_of("chat.update") == []
    assert sum("not an approver" in r.getMessage() for r in caplog.records) == 4


def test_with_no_approvers_configured_nobody_may_decide(world: World) -> None:
    app = _app(world, approvers=[], approver_groups=[])
    body = world.click(bk.ACTION_APPROVE, user=APPROVER)
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(ephemerals(world, APPROVER)))
    settle()
    assert ephemerals(world, APPROVER) == [slack_approval.NOT_ALLOWED]
    assert world.summary().state == "proposed"


def test_an_unresolvable_group_fails_closed(world: World) -> None:
    app = _app(world, approvers=[], approver_groups=["S0GONE"])
    body = world.click(bk.ACTION_APPROVE, user=GROUP_MEMBER)
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(ephemerals(world, GROUP_MEMBER)))
    assert world.summary().state == "proposed"


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("bad signature", 401),
        ("stale timestamp", 401),
        ("future timestamp", 401),
        ("replayed after the window", 401),
        ("no signature", 401),
        ("timestamp not a number", 401),
        ("malformed payload", 400),
        ("not a form", 400),
        ("unknown action id", 400),
        ("two actions", 400),
        ("proposal id not a number", 400),
        ("unknown view", 400),
        ("blank reason", 400),
        ("retry number not a number", 400),
    ],
)
def test_refused_requests_change_nothing(world: World, case: str, status: int) -> None:
    app = _app(world)
    body = world.click(bk.ACTION_APPROVE)
    headers = world.headers(body)
    if case == "bad signature":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    elif case == "stale timestamp":
        headers = world.headers(body, at=NOW - dt.timedelta(seconds=301))
    elif case == "future timestamp":
        headers = world.headers(body, at=NOW + dt.timedelta(seconds=301))
    elif case == "replayed after the window":
        assert (
            post_one(
                app,
                world.click(bk.ACTION_REJECT, user=OUTSIDER),
                world.headers(world.click(bk.ACTION_REJECT, user=OUTSIDER)),
            ).status_code
            == 200
        )
        world.clock.now = NOW + dt.timedelta(minutes=6)  # the captured approve is replayed 6 minutes later
    elif case == "no signature":
        del headers["X-Slack-Signature"]
    elif case == "timestamp not a number":
        headers["X-Slack-Request-Timestamp"] = "soon"
    else:
        payload = block_actions(
            bk.ACTION_APPROVE, str(world.proposal_id), user=APPROVER, channel=CHANNEL, ts=world.ts
        )
        if case == "malformed payload":
            body = b"payload=%7B%22type%22%3A"
        elif case == "not a form":
            body = b'{"type": "block_actions"}'
        elif case == "unknown action id":
            payload["actions"][0]["action_id"] = "proposal_delete"
            body = form_body(payload)
        elif case == "two actions":
            payload["actions"] = payload["actions"] * 2
            body = form_body(payload)
        elif case == "proposal id not a number":
            payload["actions"][0]["value"] = "7; DROP TABLE proposals"
            body = form_body(payload)
        elif case == "unknown view":
            body = form_body(view_submission("other_modal", str(world.proposal_id), user=APPROVER, values={}))
        elif case == "blank reason":
            body = world.submit(bk.VIEW_REJECT, reason="   ")
        headers = world.headers(body)
        if case == "retry number not a number":
            body = world.click(bk.ACTION_APPROVE)
            headers = {**world.headers(body), "X-Slack-Retry-Num": "soon"}
    answer = post_one(app, body, headers)
    assert answer.status_code == status, answer.text
    settle()
    assert world.summary().state == "proposed"
    assert world.decisions() == []
    assert world.fake.calls_of("chat.update") == []
    assert world.fake.calls_of("views.open") == []


def test_a_replay_inside_the_window_decides_once(world: World) -> None:
    app = _app(world)
    body = world.click(bk.ACTION_APPROVE)
    headers = world.headers(body)
    assert post_one(app, body, headers).status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("chat.update")))
    assert post_one(app, body, headers).status_code == 200
    wait_for(lambda: bool(ephemerals(world, APPROVER)))
    assert len(world.decisions()) == 1
    assert len(world.fake.calls_of("chat.update")) == 1
    assert "is approved by Sam Leader (U0SAM)" in ephemerals(world, APPROVER)[0]


def test_a_slack_retry_changes_nothing(world: World) -> None:
    app = _app(world)
    body = world.click(bk.ACTION_APPROVE)
    answer = post_one(app, body, world.headers(body, retry=1))
    assert answer.status_code == 200
    settle()
    assert world.summary().state == "proposed"
    assert world.fake.calls_of("chat.postEphemeral") == []
    # The first delivery decides; its retry afterwards tells nobody anything and updates nothing.
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("chat.update")))
    assert post_one(app, body, world.headers(body, retry=2)).status_code == 200
    settle()
    assert len(world.decisions()) == 1
    assert world.fake.calls_of("chat.postEphemeral") == []
    assert len(world.fake.calls_of("chat.update")) == 1


def test_without_slack_settings_the_endpoint_answers_503(world: World) -> None:
    app = create_app(
        Settings(), world.engine, scheduler=_Scheduler(), registry=CollectorRegistry(), clock=world.clock
    )
    body = world.click(bk.ACTION_APPROVE)
    answer = post_one(app, body, world.headers(body))
    assert (answer.status_code, answer.json()) == (503, {"error": "Slack is not configured"})
    blank = _app(world, signing_secret="  ")
    assert post_one(blank, body, world.headers(body)).status_code == 503
    assert world.summary().state == "proposed"


def test_expiry_updates_the_message(world: World) -> None:
    client = world.client()
    assert notify.expire_and_show(world.engine, client, now=NOW + dt.timedelta(days=13)) == []
    assert notify.expire_and_show(world.engine, client, now=NOW + dt.timedelta(days=14)) == [
        world.proposal_id
    ]
    assert world.summary().state == "expired"
    update = world.fake.calls_of("chat.update")[0].args
    assert (update["channel"], update["ts"]) == (CHANNEL, world.ts)
    assert world.fake.messages[(CHANNEL, world.ts)]["blocks"][-1]["text"]["text"] == "*Expired*"
    # A click on the expired message is told so.
    app = _app(world)
    world.clock.now = NOW + dt.timedelta(days=14)
    body = world.click(bk.ACTION_APPROVE)
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(ephemerals(world, APPROVER)))
    assert ephemerals(world, APPROVER) == [
        f"Proposal {world.proposal_id} is expired; it cannot become approved."
    ]


def test_writeback_results_go_to_the_thread(world: World) -> None:
    ts = notify.post_writeback_result(
        world.engine, world.client(), world.proposal_id, wave=1, written=2, conflicts=1, failed=0
    )
    message = world.fake.messages[(CHANNEL, str(ts))]
    assert message["thread_ts"] == world.ts
    assert message["text"] == (
        f"Proposal {world.proposal_id}, wave 1: 2 written, "
        "1 skipped as conflicts (the CRM owner changed since the proposal)."
    )


def test_socket_mode_delivers_a_click_to_the_same_handler(world: World) -> None:
    config = slack_approval.SlackConfig(
        channel=CHANNEL,
        approvers=(APPROVER,),
        bot_token=world.fake.token,
        app_token=world.fake.app_token,
        base_url=world.base_url,
    )
    with serve_socket_mode() as server:
        world.fake.socket_url = server.url
        surface = slack_approval.SlackApproval(config, world.engine, clock=world.clock)
        try:
            assert surface.start_socket_mode() is True
            server.wait_connected()
            payload = block_actions(
                bk.ACTION_APPROVE, str(world.proposal_id), user=APPROVER, channel=CHANNEL, ts=world.ts
            )
            envelope = server.deliver(payload)
            assert server.wait_ack(envelope) == {"envelope_id": envelope}
            wait_for(lambda: bool(world.fake.calls_of("chat.update")))
            assert world.summary().state == "approved"
            # Something that is not our interaction is acknowledged (else Slack redelivers) and ignored.
            odd = server.deliver({"type": "block_actions", "user": {"id": APPROVER}, "actions": []})
            assert server.wait_ack(odd) == {"envelope_id": odd}
            event = server.deliver({"type": "event_callback"}, kind="events_api")
            assert server.wait_ack(event) == {"envelope_id": event}
            # A redelivery (retry_attempt 1) is acknowledged and changes nothing.
            again = server.deliver(payload, retry=1)
            assert server.wait_ack(again)["envelope_id"] == again
            settle()
            assert len(world.decisions()) == 1
            assert world.fake.calls_of("chat.postEphemeral") == []
        finally:
            surface.close()
    assert [c.method for c in world.fake.calls if c.method == "apps.connections.open"] == [
        "apps.connections.open"
    ]


def test_a_modal_button_on_a_decided_proposal_opens_nothing_and_says_who_decided(world: World) -> None:
    with world.engine.begin() as conn:
        props.approve(conn, world.proposal_id, actor="Pat (CLI)", now=NOW)
    app = _app(world)
    for action in (bk.ACTION_REJECT, bk.ACTION_APPROVE_WITHOUT):
        body = world.click(action)
        assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: len(ephemerals(world, APPROVER)) == 2)
    assert world.fake.calls_of("views.open") == []
    assert sorted(ephemerals(world, APPROVER)) == [
        f"Proposal {world.proposal_id} is approved by Pat (CLI) at 2026-12-01T09:00:00+00:00; it cannot become {w}."
        for w in ("approved", "rejected")
    ]


def test_a_click_on_an_unknown_proposal_is_answered(world: World) -> None:
    app = _app(world)
    payload = block_actions(bk.ACTION_APPROVE, "999", user=APPROVER, channel=CHANNEL, ts=world.ts)
    body = form_body(payload)
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(ephemerals(world, APPROVER)))
    assert ephemerals(world, APPROVER) == ["No proposal 999."]


def test_an_expired_trigger_is_reported_to_the_user(world: World) -> None:
    app = _app(world)
    body = world.click(bk.ACTION_REJECT, trigger_id="expired.1")
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(ephemerals(world, APPROVER)))
    assert ephemerals(world, APPROVER) == [
        "The dialog could not be opened (expired_trigger_id); click the button again."
    ]
    assert world.summary().state == "proposed"


def test_a_refused_app_token_stops_socket_mode_with_one_line(world: World) -> None:
    config = slack_approval.SlackConfig(
        bot_token=world.fake.token, app_token="xapp-wrong", base_url=world.base_url
    )
    surface = slack_approval.SlackApproval(config, world.engine, clock=world.clock)
    try:
        with pytest.raises(SlackNotConfiguredError, match=r"refused apps.connections.open \(invalid_auth\)"):
            surface.start_socket_mode()
    finally:
        surface.close()


@contextlib.contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    """The app under a real uvicorn (lifespan included) on a free loopback port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_app_opens_socket_mode_at_start_up_when_an_app_token_is_set(world: World) -> None:
    with serve_socket_mode() as server:
        world.fake.socket_url = server.url
        app = _app(world, signing_secret=None, app_token=world.fake.app_token)
        with _uvicorn(app) as url:  # the lifespan connects Socket Mode
            server.wait_connected()
            payload = block_actions(
                bk.ACTION_APPROVE, str(world.proposal_id), user=APPROVER, channel=CHANNEL, ts=world.ts
            )
            envelope = server.deliver(payload)
            assert server.wait_ack(envelope) == {"envelope_id": envelope}
            wait_for(lambda: bool(world.fake.calls_of("chat.update")))
            assert world.summary().state == "approved"
            # No signing secret: HTTP clicks are refused, Socket Mode is the only way in.
            body = world.click(bk.ACTION_APPROVE)
            answer = httpx.post(f"{url}/slack/actions", content=body, headers=world.headers(body))
            assert answer.status_code == 503
        wait_for(lambda: server.connections == 0)  # closed at shutdown


@pytest.mark.parametrize(
    ("excluded", "told"),
    [
        (("001A", "001B", "001C"), "Excluding every move of proposal {pid} is a rejection; reject it."),
        (("001Z",), "Proposal {pid} does not move 001Z."),
    ],
)
def test_approve_without_that_cannot_be_taken_is_explained(
    world: World, excluded: tuple[str, ...], told: str
) -> None:
    app = _app(world)
    body = world.submit(bk.VIEW_APPROVE_WITHOUT, reason="because", excluded=excluded)
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(ephemerals(world, APPROVER)))
    assert ephemerals(world, APPROVER) == [told.format(pid=world.proposal_id)]
    assert world.summary().state == "proposed"
    assert world.fake.calls_of("chat.postEphemeral")[0].args["channel"] == CHANNEL  # the stored channel


def test_an_approver_slack_cannot_name_is_recorded_by_id(world: World) -> None:
    app = _app(world, approvers=["U0NEW"])
    body = world.click(bk.ACTION_APPROVE, user="U0NEW")
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: bool(world.fake.calls_of("chat.update")))
    assert (world.summary().state, world.summary().decided_by) == ("approved", "U0NEW")


def test_a_decided_proposal_is_not_posted(world: World) -> None:
    with world.engine.begin() as conn:
        pid, _ = props.create_proposal(
            conn,
            scenario="other",
            fingerprint="fp-other",
            now=NOW,
            moves=[props.NewMove("001A", "005A", "005B", "005A", "r")],
        )
        props.reject(conn, pid, actor="Pat", now=NOW, reason="no")
    with pytest.raises(props.WrongStateError, match="is rejected by Pat"):
        notify.post_proposal(world.engine, world.client(), channel=CHANNEL, proposal_id=pid)
    assert len(world.fake.calls_of("chat.postMessage")) == 1  # only the fixture's


def test_a_rate_limited_chat_update_is_retried_after_retry_after(world: World) -> None:
    world.fake.rate_limit("chat.update", times=1, retry_after=1)
    app = _app(world)
    body = world.click(bk.ACTION_APPROVE)
    started = time.monotonic()
    assert post_one(app, body, world.headers(body)).status_code == 200
    wait_for(lambda: len(world.fake.calls_of("chat.update")) == 2)
    assert time.monotonic() - started >= 1.0
    wait_for(
        lambda: world.fake.messages[(CHANNEL, world.ts)]["blocks"][-1]["text"]["text"].startswith(
            "*Approved*"
        )
    )
