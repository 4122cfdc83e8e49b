"""The one retry policy of every CRM client: when to try again, how long to wait, when to stop for the day.

A client maps its vendor's failures onto :mod:`connectors.errors` and hands the call to
:meth:`RetryPolicy.call`, which retries only :class:`RetriableError`: after the ``Retry-After`` the
server gave (plus a little jitter, so that many workers told the same second do not return together),
else after an exponential backoff with full jitter (a uniform draw between 0 and the capped
exponential). The random source and the sleep are injected, so tests see every wait without waiting.

:class:`QuotaGuard` keeps a client inside its share of the CRM's daily API allowance: it remembers the
usage the last answer reported and refuses, before it is sent, the call that would pass the share.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from connectors.errors import QuotaExhausted, RetriableError

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_AFTER_JITTER_SHARE = 0.1  # of the Retry-After, added at most
RETRY_AFTER_JITTER_MIN = 0.01  # seconds, so a Retry-After of 0 still spreads the callers
RETRY_AFTER_JITTER_MAX = 1.0  # seconds: a long Retry-After is not stretched by much


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """A ``Retry-After`` header as seconds to wait from ``now``: delay-seconds or an HTTP date.

    A date in the past means no wait (0); a value that is neither form, or not finite, is None, as
    if the server had said nothing.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition; RFC 850 forms parse naive
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class RetryPolicy:
    """How often a call is tried and how long each wait is (seconds)."""

    max_attempts: int = 5
    max_wait_seconds: float = 60.0
    base_seconds: float = 0.5

    def wait(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """The wait after failed try number ``attempt`` (1-based), never over ``max_wait_seconds``.

        With ``retry_after``: that, plus jitter of up to a tenth of it (between 0.01 s and 1 s).
        Without: full jitter, uniform in ``[0, min(max_wait, base * 2 ** (attempt - 1))]``.
        """
        cap = self.max_wait_seconds
        if retry_after is not None:
            spread = min(
                RETRY_AFTER_JITTER_MAX, RETRY_AFTER_JITTER_SHARE * retry_after + RETRY_AFTER_JITTER_MIN
            )
            return min(cap, retry_after + rng.uniform(0, spread))
        exponent = min(attempt - 1, 62)  # keeps the float finite for any attempt count
        return rng.uniform(0, min(cap, self.base_seconds * 2.0**exponent))

    def call(
        self,
        fn: Callable[[], T],
        *,
        sleep: Callable[[float], None],
        rng: random.Random,
        what: str = "call",
        on_retry: Callable[[int, float, RetriableError], None] | None = None,
    ) -> T:
        """``fn()``, tried up to ``max_attempts`` times while it raises :class:`RetriableError`.

        The last error is raised as it came; anything else is raised at once. ``on_retry`` hears of
        each retry (the failed attempt's number, the wait, the error) before the wait.
        """

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            told = exc.retry_after if isinstance(exc, RetriableError) else None
            return self.wait(state.attempt_number, told, rng)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            seconds = state.next_action.sleep if state.next_action is not None else 0.0
            log.warning(
                "%s failed; retrying",
                what,
                extra={
                    "what": what,
                    "attempt": state.attempt_number,
                    "wait_seconds": seconds,
                    "error": str(exc),
                },
            )
            if on_retry is not None and isinstance(exc, RetriableError):
                on_retry(state.attempt_number, seconds, exc)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=retry_if_exception_type(RetriableError),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)


class QuotaGuard:
    """Stops a client before its calls pass ``share`` of the CRM's daily API allowance.

    ``setting`` names the share's key (``salesforce.quota_share``) for the message; ``crm`` the CRM.
    """

    def __init__(self, share: float, *, crm: str, setting: str) -> None:
        self.share = share
        self.crm = crm
        self.setting = setting
        self._lock = threading.Lock()
        self._usage: tuple[int, int] = (0, 0)

    @property
    def usage(self) -> tuple[int, int]:
        """The calls used and the daily limit, as the last answer reported them ((0, 0): not known)."""
        return self._usage

    def observe(self, used: int, limit: int) -> None:
        """Remember the usage an answer reported."""
        with self._lock:
            self._usage = (used, limit)

    def forget(self) -> None:
        """Let the next call through to learn the usage afresh (a new run: the quota may have reset)."""
        self.observe(0, 0)

    def check(self, what: str) -> None:
        """Raise :class:`QuotaExhausted` when one more call would pass the share; else nothing."""
        used, limit = self._usage
        if limit > 0 and used + 1 > self.share * limit:
            raise QuotaExhausted(
                f"{what}: {self.crm} daily API usage is {used:,} of {limit:,} calls: one more call would "
                f"pass {self.setting}={self.share:g} ({self.share:.0%}); stopped until the daily quota resets"
            )
