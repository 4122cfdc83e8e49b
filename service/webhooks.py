"""HubSpot webhooks, pure: the signature v3 check and which of our objects an event batch changed.

HubSpot signs ``method + uri + body + timestamp`` with the app's client secret (HMAC-SHA256, base64)
and sends it as ``X-HubSpot-Signature-v3`` next to ``X-HubSpot-Request-Timestamp`` (milliseconds since
the epoch). A request older than five minutes is refused, so a captured delivery cannot be replayed.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from connectors.base import CrmObject

SIGNATURE_HEADER: Final = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER: Final = "X-HubSpot-Request-Timestamp"
MAX_AGE: Final = dt.timedelta(minutes=5)

# HubSpot decodes these escapes in the URI before signing it; everything else stays as sent.
_DECODED: Final = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}

# Object types of HubSpot's generic ``object.*`` events, and the prefixes of the classic ones.
_TYPE_IDS: Final = {"0-2": CrmObject.accounts, "0-3": CrmObject.opportunities}
_PREFIXES: Final = {"company": CrmObject.accounts, "deal": CrmObject.opportunities}


class Verdict(enum.StrEnum):
    """Why a delivery was accepted or refused (the label of the webhook counter)."""

    valid = "valid"
    missing = "missing_headers"
    malformed = "malformed_timestamp"
    stale = "stale"
    future = "future"
    forged = "bad_signature"


def canonical_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the listed percent-escapes decoded (either case), others kept."""
    out: list[str] = []
    i = 0
    while i < len(uri):
        chunk = uri[i : i + 3].upper()
        if uri[i] == "%" and chunk in _DECODED:
            out.append(_DECODED[chunk])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """The v3 signature of a request (what HubSpot sends; the load bench signs with it too)."""
    message = method.upper().encode() + canonical_uri(uri).encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_v3(
    secret: str,
    *,
    method: str,
    uri: str,
    body: bytes,
    headers: Mapping[str, str],
    now: dt.datetime,
    max_age: dt.timedelta = MAX_AGE,
) -> Verdict:
    """Check a delivery's v3 signature and age; ``headers`` must be case-insensitive (as Starlette's)."""
    signature = headers.get(SIGNATURE_HEADER)
    stamp = headers.get(TIMESTAMP_HEADER)
    if not signature or not stamp:
        return Verdict.missing
    try:
        timestamp_ms = int(stamp)
        sent = dt.datetime.fromtimestamp(timestamp_ms / 1000, tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        return Verdict.malformed
    if now - sent > max_age:
        return Verdict.stale
    if sent - now > max_age:  # a clock far ahead is as suspicious as one far behind
        return Verdict.future
    expected = sign_v3(secret, method, uri, body, timestamp_ms)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        return Verdict.forged
    return Verdict.valid


@dataclass(frozen=True)
class EventBatch:
    """What a delivery asks of us: the objects to sync incrementally, and the event ids it carried."""

    objects: frozenset[CrmObject]
    event_ids: tuple[str, ...]
    ignored: int


class BadPayload(ValueError):
    """A signed delivery whose body is not HubSpot's event array."""


def _object_of(event: Mapping[str, Any]) -> CrmObject | None:
    kind = str(event.get("subscriptionType", ""))
    prefix = kind.split(".", 1)[0]
    if prefix == "object":
        return _TYPE_IDS.get(str(event.get("objectTypeId", "")))
    return _PREFIXES.get(prefix)


MAX_JSON_DEPTH = 16  # HubSpot's event arrays are two levels deep


def json_depth(value: object) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_JSON_DEPTH:
            return deepest  # deep enough to refuse; no need to walk the rest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_events(body: bytes) -> EventBatch:
    """The objects a batch of events changed (companies: accounts; deals: opportunities)."""
    try:
        events = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPayload(f"not JSON: {exc}") from None
    except RecursionError:
        raise BadPayload(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(events) > MAX_JSON_DEPTH:
        raise BadPayload(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadPayload("expected a JSON array of event objects")
    objects: set[CrmObject] = set()
    ids: list[str] = []
    ignored = 0
    for event in events:
        obj = _object_of(event)
        if obj is None:
            ignored += 1
            continue
        objects.add(obj)
        if "eventId" in event:
            ids.append(str(event["eventId"]))
    return EventBatch(frozenset(objects), tuple(ids), ignored)
