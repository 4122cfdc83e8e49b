"""The fake Slack Web API driven by the real ``slack_sdk.WebClient``: shapes, errors, 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from approval import blocks as bk
from approval.slack import Approvers
from connectors.sandbox.slack import FakeSlack, serve

TOKEN = "xoxb-test-token"


@pytest.fixture
def slack() -> Iterator[tuple[FakeSlack, WebClient]]:
    state = FakeSlack(
        users={"U1": {"id": "U1", "name": "sam", "real_name": "Sam Leader"}}, usergroups={"S1": ["U1"]}
    )
    with serve(state) as (fake, base_url):
        yield fake, WebClient(token=TOKEN, base_url=base_url, timeout=5)


def test_post_then_update_a_proposal_message(slack: tuple[FakeSlack, WebClient]) -> None:
    fake, client = slack
    view = bk.ProposalView(7, "default", 10.0, 1.0, 0.0, [bk.MoveLine("001A", "Acme", "Ada", "Bo", "r", 1)])
    posted = client.chat_postMessage(channel="C0APPROVAL", **bk.proposal_message(view))
    assert posted["ok"] is True
    ts = posted["ts"]
    assert (
        fake.calls_of("chat.postMessage")[0].args["blocks"][-1]["elements"][0]["action_id"]
        == bk.ACTION_APPROVE
    )
    decided = bk.decided_message(view, state="approved", by="Sam", at=None)
    updated = client.chat_update(channel="C0APPROVAL", ts=ts, **decided)
    assert updated["ts"] == ts
    assert fake.messages[("C0APPROVAL", ts)]["blocks"][-1]["text"]["text"] == "*Approved* by Sam"
    thread = client.chat_postMessage(channel="C0APPROVAL", thread_ts=ts, text="wave 1: 1 written")
    assert fake.messages[("C0APPROVAL", thread["ts"])]["thread_ts"] == ts


def test_lookups_and_modals(slack: tuple[FakeSlack, WebClient]) -> None:
    fake, client = slack
    assert client.auth_test()["user_id"] == "U0BOT"
    assert client.users_info(user="U1")["user"]["real_name"] == "Sam Leader"
    assert client.usergroups_users_list(usergroup="S1")["users"] == ["U1"]
    opened = client.views_open(trigger_id="t.1", view=bk.reject_modal(7))
    assert opened["view"]["callback_id"] == bk.VIEW_REJECT
    assert client.chat_postEphemeral(channel="C0APPROVAL", user="U1", text="not allowed")["ok"] is True
    assert [c.method for c in fake.calls] == [
        "auth.test",
        "users.info",
        "usergroups.users.list",
        "views.open",
        "chat.postEphemeral",
    ]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.chat_postMessage(channel="C0NOPE", text="x"), "channel_not_found"),
        (lambda c: c.chat_update(channel="C0APPROVAL", ts="1.2", text="x"), "message_not_found"),
        (lambda c: c.users_info(user="U404"), "user_not_found"),
        (lambda c: c.usergroups_users_list(usergroup="S404"), "no_such_subteam"),
        (lambda c: c.views_open(trigger_id="expired.1", view=bk.reject_modal(1)), "expired_trigger_id"),
    ],
)
def test_errors_come_back_as_slack_sends_them(
    slack: tuple[FakeSlack, WebClient], call: Callable[[WebClient], object], error: str
) -> None:
    _, client = slack
    with pytest.raises(SlackApiError) as err:
        call(client)
    assert err.value.response["error"] == error


def test_a_wrong_token_is_invalid_auth(slack: tuple[FakeSlack, WebClient]) -> None:
    _, client = slack
    with pytest.raises(SlackApiError) as err:
        WebClient(token="xoxb-wrong", base_url=client.base_url).auth_test()
    assert err.value.response["error"] == "invalid_auth"


def test_429_with_retry_after(slack: tuple[FakeSlack, WebClient]) -> None:
    fake, client = slack
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0APPROVAL", text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "1"
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    retrying = WebClient(
        token=TOKEN, base_url=client.base_url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    assert retrying.chat_postMessage(channel="C0APPROVAL", text="x")["ok"] is True
    assert len(fake.calls_of("chat.postMessage")) == 3


def test_approvers_resolve_groups_once_per_max_age_and_fail_closed(
    slack: tuple[FakeSlack, WebClient],
) -> None:
    fake, client = slack
    fake.usergroups["S2"] = ["U2"]
    clock = [0.0]
    approvers = Approvers(client, ["U9"], ["S1", "S2", "S404"], max_age=60, monotonic=lambda: clock[0])
    assert approvers.allows("U1")
    assert approvers.allows("U2")
    assert approvers.allows("U9")
    assert not approvers.allows("U3")
    assert not approvers.allows("")
    assert len(fake.calls_of("usergroups.users.list")) == 3  # once per group, the unknown one included
    fake.usergroups["S1"] = []
    clock[0] = 59.0
    assert approvers.allows("U1")  # still cached
    clock[0] = 61.0
    assert not approvers.allows("U1")  # removed from the group: refused after the cache's age
    assert len(fake.calls_of("usergroups.users.list")) == 6
    assert approvers.allows("U9")  # a configured id needs no lookup
    assert len(fake.calls_of("usergroups.users.list")) == 6


def test_with_nobody_configured_nobody_is_an_approver(slack: tuple[FakeSlack, WebClient]) -> None:
    fake, client = slack
    approvers = Approvers(client, [], [])
    assert not approvers.allows("U1")
    assert fake.calls_of("usergroups.users.list") == []
