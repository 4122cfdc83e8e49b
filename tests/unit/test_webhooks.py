"""HubSpot signature v3 and event parsing: valid, forged, stale, future, tampered, and what changed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.base import CrmObject
from service.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadPayload,
    Verdict,
    canonical_uri,
    parse_events,
    sign_v3,
    verify_v3,
)

SECRET = "a1b2c3d4-0000-4000-8000-secretsecret"
URI = "https://territory.example.com/webhooks/hubspot"
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
BODY = json.dumps(
    [{"eventId": 1, "subscriptionType": "company.propertyChange", "objectId": 42, "occurredAt": NOW_MS}]
).encode()


def headers(signature: str, timestamp: int | str) -> dict[str, str]:
    return {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: str(timestamp)}


def check(
    *, body: bytes = BODY, uri: str = URI, method: str = "POST", stamp: int = NOW_MS, sig: str | None = None
) -> Verdict:
    signature = sig if sig is not None else sign_v3(SECRET, "POST", URI, BODY, NOW_MS)
    return verify_v3(SECRET, method=method, uri=uri, body=body, headers=headers(signature, stamp), now=NOW)


def test_signature_is_hmac_sha256_base64_of_method_uri_body_timestamp() -> None:
    # Computed independently of sign_v3: the documented recipe, step by step.
    message = f"POST{URI}{BODY.decode()}{NOW_MS}".encode()
    expected = base64.b64encode(hmac.new(SECRET.encode(), message, hashlib.sha256).digest()).decode()
    assert sign_v3(SECRET, "POST", URI, BODY, NOW_MS) == expected
    assert check(sig=expected) is Verdict.valid


@pytest.mark.parametrize(
    ("change", "verdict"),
    [
        ({"body": BODY.replace(b"42", b"43")}, Verdict.forged),
        ({"uri": URI + "?x=1"}, Verdict.forged),
        ({"method": "PUT"}, Verdict.forged),
        ({"stamp": NOW_MS + 1}, Verdict.forged),  # the timestamp is signed too
        ({"sig": sign_v3("another-secret", "POST", URI, BODY, NOW_MS)}, Verdict.forged),
        ({"sig": "not base64 at all"}, Verdict.forged),
    ],
)
def test_any_tampering_is_refused(change: dict[str, object], verdict: Verdict) -> None:
    assert check(**change) is verdict  # type: ignore[arg-type]


def test_five_minute_window() -> None:
    def at(offset: dt.timedelta) -> Verdict:
        stamp = int((NOW + offset).timestamp() * 1000)
        sig = sign_v3(SECRET, "POST", URI, BODY, stamp)
        return check(stamp=stamp, sig=sig)

    assert at(-dt.timedelta(minutes=4, seconds=59)) is Verdict.valid
    assert at(-dt.timedelta(minutes=5, seconds=1)) is Verdict.stale
    assert at(dt.timedelta(minutes=4)) is Verdict.valid
    assert at(dt.timedelta(minutes=6)) is Verdict.future


@pytest.mark.parametrize(
    ("given", "verdict"),
    [
        ({}, Verdict.missing),
        ({SIGNATURE_HEADER: "x"}, Verdict.missing),
        (headers("x", "soon"), Verdict.malformed),
    ],
)
def test_missing_or_malformed_headers(given: dict[str, str], verdict: Verdict) -> None:
    assert verify_v3(SECRET, method="POST", uri=URI, body=BODY, headers=given, now=NOW) is verdict


def test_uri_escapes_hubspot_decodes_before_signing() -> None:
    assert (
        canonical_uri("https://h/p?a=b%3Ac%2Fd%40e%21%24%27%28%29%2A%2C%3B%3f")
        == "https://h/p?a=b:c/d@e!$'()*,;?"
    )
    assert canonical_uri("https://h/p?a=%20%26%3D") == "https://h/p?a=%20%26%3D"  # kept as sent
    encoded = "https://h/webhooks/hubspot?portal=1%3A2"
    sig = sign_v3(SECRET, "POST", "https://h/webhooks/hubspot?portal=1:2", BODY, NOW_MS)
    assert (
        verify_v3(SECRET, method="POST", uri=encoded, body=BODY, headers=headers(sig, NOW_MS), now=NOW)
        is Verdict.valid
    )


@given(st.binary(max_size=200), st.text(max_size=30))
def test_a_signature_only_verifies_its_own_body(body: bytes, path: str) -> None:
    uri = URI + "/" + path
    sig = sign_v3(SECRET, "POST", uri, body, NOW_MS)
    ok = verify_v3(SECRET, method="POST", uri=uri, body=body, headers=headers(sig, NOW_MS), now=NOW)
    assert ok is Verdict.valid
    other = verify_v3(SECRET, method="POST", uri=uri, body=body + b" ", headers=headers(sig, NOW_MS), now=NOW)
    assert other is Verdict.forged


def test_events_map_to_the_objects_we_sync() -> None:
    events = [
        {"eventId": 1, "subscriptionType": "company.propertyChange", "objectId": 1},
        {"eventId": 2, "subscriptionType": "company.creation", "objectId": 2},
        {"eventId": 3, "subscriptionType": "deal.deletion", "objectId": 3},
        {"eventId": 4, "subscriptionType": "contact.propertyChange", "objectId": 4},
        {"eventId": 5, "subscriptionType": "object.propertyChange", "objectTypeId": "0-3", "objectId": 5},
        {"eventId": 6, "subscriptionType": "object.creation", "objectTypeId": "0-1", "objectId": 6},
    ]
    batch = parse_events(json.dumps(events).encode())
    assert batch.objects == {CrmObject.accounts, CrmObject.opportunities}
    assert batch.event_ids == ("1", "2", "3", "5")
    assert batch.ignored == 2
    only_contacts = parse_events(json.dumps(events[3:4]).encode())
    assert only_contacts.objects == frozenset()
    assert only_contacts.ignored == 1


@pytest.mark.parametrize("body", [b"", b"{", b'{"eventId": 1}', b"[1, 2]", b"\xff\xfe"])
def test_bad_payloads_are_refused(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_events(body)
