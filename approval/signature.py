"""Slack request signing (``v0``): HMAC-SHA256 over ``v0:{timestamp}:{raw body}``, five-minute window."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from approval.errors import BadSignatureError, SlackNotConfiguredError

MAX_AGE_SECONDS = 300
"""Slack's advice: refuse a request whose timestamp is more than five minutes from now (replays)."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value Slack sends for ``body`` at ``timestamp``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str | None, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
    """Raise unless ``body`` carries a valid, fresh Slack signature; ``now`` is Unix seconds."""
    if secret is None or not secret.strip():
        raise SlackNotConfiguredError("no Slack signing secret is configured; Slack requests are refused")
    raw_ts = _header(headers, "X-Slack-Request-Timestamp")
    signature = _header(headers, "X-Slack-Signature")
    if not raw_ts or not signature:
        raise BadSignatureError("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    try:
        timestamp = int(raw_ts.strip())
    except ValueError:
        raise BadSignatureError(f"X-Slack-Request-Timestamp is not an integer: {raw_ts[:40]!r}") from None
    if abs(now - timestamp) > MAX_AGE_SECONDS:
        raise BadSignatureError(f"request timestamp {timestamp} is more than {MAX_AGE_SECONDS} s from now")
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise BadSignatureError("the request signature does not match")


def retry_number(headers: Mapping[str, str]) -> int:
    """Slack's ``X-Slack-Retry-Num`` (0 for a first delivery); a retry must change nothing."""
    raw = _header(headers, "X-Slack-Retry-Num")
    if raw is None or not raw.strip():
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadSignatureError(f"X-Slack-Retry-Num is not an integer: {raw[:40]!r}") from None
    if value < 0:
        raise BadSignatureError(f"X-Slack-Retry-Num is negative: {value}")
    return value
