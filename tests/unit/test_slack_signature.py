"""Slack request signing: accepted, tampered, stale, replayed, unconfigured; retry recognition."""

from __future__ import annotations

import pytest

from approval.errors import BadSignatureError, SlackNotConfiguredError
from approval.signature import retry_number, sign, verify

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = b"payload=%7B%22type%22%3A%22block_actions%22%7D"
TS = 1_700_000_000


def _headers(signature: str, ts: int | str = TS) -> dict[str, str]:
    return {"x-slack-request-timestamp": str(ts), "X-Slack-Signature": signature}


def test_known_vector_from_slacks_documentation() -> None:
    # The example of Slack's "Verifying requests" page.
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert (
        sign(secret, 1531420618, body)
        == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


def test_a_fresh_correct_signature_is_accepted() -> None:
    verify(SECRET, _headers(sign(SECRET, TS, BODY)), BODY, now=TS + 299)


@pytest.mark.parametrize(
    ("headers", "body", "now", "match"),
    [
        (_headers(sign(SECRET, TS, BODY)), BODY + b"x", TS, "does not match"),
        (_headers(sign("other-secret", TS, BODY)), BODY, TS, "does not match"),
        (_headers(sign(SECRET, TS, BODY)), BODY, TS + 301, "more than 300 s"),
        (_headers(sign(SECRET, TS, BODY)), BODY, TS - 301, "more than 300 s"),
        (_headers(sign(SECRET, TS, BODY), ts=TS + 1), BODY, TS, "does not match"),
        (_headers(sign(SECRET, TS, BODY), ts="soon"), BODY, TS, "not an integer"),
        ({"X-Slack-Signature": sign(SECRET, TS, BODY)}, BODY, TS, "missing"),
    ],
)
def test_bad_requests_are_refused(headers: dict[str, str], body: bytes, now: int, match: str) -> None:
    with pytest.raises(BadSignatureError, match=match):
        verify(SECRET, headers, body, now=now)


def test_a_replay_after_the_window_is_refused() -> None:
    headers = _headers(sign(SECRET, TS, BODY))
    verify(SECRET, headers, BODY, now=TS + 10)
    with pytest.raises(BadSignatureError):
        verify(SECRET, headers, BODY, now=TS + 10 + 300)


@pytest.mark.parametrize("secret", [None, "", "   \t"])
def test_no_secret_means_not_configured(secret: str | None) -> None:
    with pytest.raises(SlackNotConfiguredError):
        verify(secret, _headers(sign(secret or "", TS, BODY)), BODY, now=TS)


def test_retry_number() -> None:
    assert retry_number({}) == 0
    assert retry_number({"x-slack-retry-num": "2"}) == 2
    with pytest.raises(BadSignatureError, match="not an integer"):
        retry_number({"X-Slack-Retry-Num": "two"})
