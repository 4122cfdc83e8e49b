"""The one retry policy: Retry-After in both forms, jitter bounds, the retry loop and the quota guard."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from connectors.errors import FatalError, QuotaExhausted, RetriableError
from connectors.retry import QuotaGuard, RetryPolicy, parse_retry_after

NOW = dt.datetime(2026, 11, 2, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-3", 0.0),  # a negative delay is no delay
        ("Mon, 02 Nov 2026 12:00:30 GMT", 30.0),  # IMF-fixdate
        ("Monday, 02-Nov-26 12:01:00 GMT", 60.0),  # RFC 850, read as GMT
        ("Mon Nov  2 12:00:05 2026", 5.0),  # asctime
        ("Mon, 02 Nov 2026 11:59:00 GMT", 0.0),  # a date in the past: go now
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    ],
)
def test_retry_after_as_seconds_or_http_date(header: str, seconds: float) -> None:
    assert parse_retry_after(header, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("header", [None, "", "  ", "soon", "inf", "nan", "Mon, 99 Nov 2026 12:00:00 GMT"])
def test_unreadable_retry_after_is_as_if_unsaid(header: str | None) -> None:
    assert parse_retry_after(header, NOW) is None


@pytest.mark.parametrize("seed", range(5))
def test_backoff_is_full_jitter_within_the_capped_exponential(seed: int) -> None:
    policy = RetryPolicy(max_attempts=10, max_wait_seconds=5.0, base_seconds=0.5)
    rng = random.Random(seed)
    for attempt in range(1, 11):
        ceiling = min(5.0, 0.5 * 2 ** (attempt - 1))
        waits = [policy.wait(attempt, None, rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert min(waits) < 0.1 * ceiling  # full jitter: the draws reach down towards zero
        assert max(waits) > 0.9 * ceiling  # and up towards the ceiling


def test_backoff_is_reproducible_from_a_seeded_rng() -> None:
    policy = RetryPolicy()
    first = [policy.wait(n, None, random.Random(42)) for n in range(1, 6)]
    again = [policy.wait(n, None, random.Random(42)) for n in range(1, 6)]
    assert first == again
    assert len(set(first)) == len(first)


@pytest.mark.parametrize(("told", "spread"), [(0.0, 0.01), (0.05, 0.015), (2.0, 0.21), (30.0, 1.0)])
def test_retry_after_is_honoured_plus_a_little_jitter(told: float, spread: float) -> None:
    policy = RetryPolicy(max_wait_seconds=60.0)
    rng = random.Random(3)
    waits = [policy.wait(1, told, rng) for _ in range(500)]
    assert all(told <= w <= told + spread + 1e-12 for w in waits)
    assert max(waits) - told > 0.8 * spread


def test_every_wait_is_capped() -> None:
    policy = RetryPolicy(max_wait_seconds=3.0)
    rng = random.Random(1)
    assert policy.wait(1, 120.0, rng) == 3.0
    assert all(policy.wait(n, None, rng) <= 3.0 for n in range(1, 200))


def test_call_retries_retriable_errors_with_the_waits_it_computed() -> None:
    policy = RetryPolicy(max_attempts=4, max_wait_seconds=10.0)
    outcomes: list[Exception | str] = [RetriableError("429", retry_after=1.5), RetriableError("503"), "ok"]
    slept: list[float] = []
    heard: list[tuple[int, float, str]] = []

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = policy.call(
        flaky,
        sleep=slept.append,
        rng=random.Random(7),
        on_retry=lambda attempt, wait, error: heard.append((attempt, wait, str(error))),
    )
    assert result == "ok"
    assert len(slept) == 2
    assert 1.5 <= slept[0] <= 1.5 + 0.16
    assert 0 <= slept[1] <= 1.0
    assert heard == [(1, slept[0], "429"), (2, slept[1], "503")]


def test_call_gives_up_after_the_attempts_and_raises_the_last_error() -> None:
    policy = RetryPolicy(max_attempts=3)
    tries: list[int] = []
    slept: list[float] = []

    def failing() -> None:
        tries.append(1)
        raise RetriableError(f"try {len(tries)}")

    with pytest.raises(RetriableError, match="try 3"):
        policy.call(failing, sleep=slept.append, rng=random.Random(0))
    assert len(tries) == 3
    assert len(slept) == 2


def test_call_does_not_retry_other_errors() -> None:
    slept: list[float] = []

    def fatal() -> None:
        raise FatalError("400")

    with pytest.raises(FatalError):
        RetryPolicy().call(fatal, sleep=slept.append, rng=random.Random(0))
    assert slept == []


def test_quota_guard_stops_before_the_call_that_would_pass_the_share() -> None:
    guard = QuotaGuard(0.8, crm="salesforce", setting="salesforce.quota_share")
    guard.check("first call")  # nothing known yet: the call goes and tells the usage
    guard.observe(79, 100)
    guard.check("query")  # the 80th call still keeps to 80%
    guard.observe(80, 100)
    with pytest.raises(QuotaExhausted) as info:
        guard.check("query_more")
    message = str(info.value)
    assert message.startswith("query_more: salesforce daily API usage is 80 of 100 calls")
    assert "salesforce.quota_share=0.8 (80%)" in message
    assert guard.usage == (80, 100)
    guard.forget()  # a new run: the quota may have reset, the next answer says
    guard.check("query")
    assert guard.usage == (0, 0)


def test_quota_guard_with_the_whole_allowance_lets_every_call_of_it_through() -> None:
    guard = QuotaGuard(1.0, crm="HubSpot", setting="hubspot.quota_share")
    guard.observe(2, 3)
    guard.check("search")
    guard.observe(3, 3)
    with pytest.raises(QuotaExhausted, match="3 of 3 calls"):
        guard.check("search")
