"""The HubSpot connector through the real client against the sandbox: its own quirks.

What every CRM connector does alike (Retry-After, 5xx, churn while paging, the quota stop, a refused
credential, conflicts) is the conformance suite's, test_conformance.py, run against HubSpot as well.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import urllib3
from hubspot.crm.companies.exceptions import ApiException as CompaniesApiException
from pydantic import SecretStr
from sqlalchemy import Engine, text

from connectors.base import Batch, Connector, CrmObject, Cursor, OwnerChange, WriteOutcome
from connectors.errors import ConnectorConfigError, FatalError, QuotaExhausted, RetriableError
from connectors.hubspot import HubSpotConnector
from connectors.hubspot.client import HubSpotClient, map_error
from connectors.hubspot.streams import prefetched
from connectors.records import check_records
from connectors.sandbox.generator import generate_org
from connectors.sandbox.hubspot import (
    COMPANY_ID_BASE,
    DEAL_ID_BASE,
    HubSpotFaults,
    SandboxServer,
    start_hubspot_sandbox,
)
from service.settings import HubSpotSettings, load_settings

NOW = datetime(2026, 11, 1, tzinfo=UTC)
ORG = generate_org(accounts=600, reps=8, seed=5, now=NOW)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with start_hubspot_sandbox(ORG, now=NOW) as server:
        yield server


def settings_for(server: SandboxServer, **overrides: Any) -> HubSpotSettings:
    values: dict[str, Any] = {
        "base_url": server.url,
        "access_token": SecretStr(server.access_token),
        "search_requests_per_second": 0,  # unpaced, except in the pacing test
    }
    return HubSpotSettings(**(values | overrides))


class Waits:
    """Stands in for time.sleep: records each wait; sleeps the short ones for real, so tests stay fast."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        if seconds <= 0.2:
            time.sleep(seconds)


def connector_for(server: SandboxServer, waits: Waits | None = None, **overrides: Any) -> HubSpotConnector:
    settings = settings_for(server, **overrides)
    return HubSpotConnector(HubSpotClient(settings, sleep=waits or Waits()), settings)


def read_all(connector: HubSpotConnector, obj: CrmObject, since: Cursor | None = None) -> list[Batch]:
    return list(connector.read(obj, since, full=since is None))


def records(batches: list[Batch]) -> list[dict[str, Any]]:
    return [dict(r) for b in batches for r in b.records]


def deleted(batches: list[Batch]) -> list[str]:
    return [i for b in batches for i in b.deleted_ids]


def test_is_a_connector_built_from_settings(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_HUBSPOT__ACCESS_TOKEN", sandbox.access_token)
    monkeypatch.setenv("TERRITORY_HUBSPOT__BASE_URL", sandbox.url)
    connector = HubSpotConnector.from_settings(load_settings().hubspot)
    assert isinstance(connector, Connector)
    assert connector.source == "hubspot"
    assert len(records(read_all(connector, CrmObject.owners))) == len(ORG.owners)


def test_missing_token_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERRITORY_HUBSPOT__ACCESS_TOKEN", raising=False)
    with pytest.raises(ConnectorConfigError, match="TERRITORY_HUBSPOT__ACCESS_TOKEN"):
        HubSpotConnector.from_settings(load_settings().hubspot)


def test_wrong_token_is_a_configuration_error_with_a_clear_message(sandbox: SandboxServer) -> None:
    connector = connector_for(sandbox, access_token=SecretStr("pat-na1-not-the-token"))
    with pytest.raises(ConnectorConfigError) as info:
        read_all(connector, CrmObject.accounts)
    message = str(info.value)
    assert "401" in message
    assert "TERRITORY_HUBSPOT__ACCESS_TOKEN" in message
    assert "Authentication credentials not found" in message
    assert sandbox.counters.requests == {"POST /crm/v3/objects/companies/search": 1}  # not retried


def test_owners_include_archived_ones_as_inactive(sandbox: SandboxServer) -> None:
    gone = sandbox.state.owners[1]
    sandbox.state.archive_owner(gone.id)
    batches = read_all(connector_for(sandbox), CrmObject.owners)
    owners = {r["id"]: r for r in records(batches)}
    assert len(owners) == len(ORG.owners)
    assert owners[gone.id]["active"] == "false"
    assert owners[gone.id]["name"] == ORG.owners["name"][1]
    assert owners[gone.id]["email"] == ORG.owners["email"][1]
    assert owners[gone.id]["team"] == ORG.owners["team"][1]
    active = sum(1 for r in owners.values() if r["active"] == "true")
    assert active == int(ORG.owners["active"].sum()) - (1 if bool(ORG.owners["active"][1]) else 0)
    assert batches[-1].cursor is not None
    assert batches[-1].cursor.modified_at == datetime.fromtimestamp(gone.updated_ms / 1000, tz=UTC)
    # Incremental: only the owner updated since the cursor comes again.
    again = records(list(connector_for(sandbox).read(CrmObject.owners, batches[-1].cursor)))
    assert [r["id"] for r in again] == [gone.id]


def test_full_read_of_companies_maps_every_column_and_pages_ascending(sandbox: SandboxServer) -> None:
    connector = connector_for(sandbox, search_page_size=50)
    batches = read_all(connector, CrmObject.accounts)
    rows = records(batches)
    assert len(rows) == len({r["id"] for r in rows}) == len(ORG.accounts)
    owner_ids = {o.email: o.id for o in sandbox.state.owners}
    first = next(r for r in rows if r["id"] == str(COMPANY_ID_BASE))
    src = ORG.accounts.iloc[0]
    src_owner_email = ORG.owners.set_index("id").loc[src["owner_id"], "email"]
    assert first["name"] == src["name"]
    assert first["owner_id"] == owner_ids[src_owner_email]
    assert first["tier"] == src["tier"]
    assert first["industry"] == src["industry"]
    assert float(first["arr"]) == pytest.approx(src["arr"])
    assert float(first["potential"]) == pytest.approx(src["potential"])
    assert float(first["lat"]) == pytest.approx(src["lat"])
    assert first["protected"] == ("true" if src["protected"] else "false")
    assert datetime.fromisoformat(first["modified_at"]) == src["modified_at"]
    cursors = [b.cursor for b in batches if b.cursor is not None]
    assert cursors == sorted(cursors)
    stamps = [datetime.fromisoformat(r["modified_at"]) for r in rows]
    assert stamps == sorted(stamps)
    assert cursors[-1].modified_at == max(stamps)
    assert deleted(batches) == []
    # Keyset paging: about one request per page, never an offset.
    assert connector.companies.requests <= len(ORG.accounts) // 49 + 3
    check = check_records(CrmObject.accounts, rows)
    assert check.rejected.empty


def test_deals_carry_their_company_and_deal_columns(sandbox: SandboxServer) -> None:
    rows = records(read_all(connector_for(sandbox, search_page_size=200), CrmObject.opportunities))
    assert len(rows) == len(ORG.opportunities)
    company_of = {str(COMPANY_ID_BASE + i): a for i, a in enumerate(ORG.accounts["id"])}
    by_id = {r["id"]: r for r in rows}
    for i in (0, 17, len(ORG.opportunities) - 1):
        src = ORG.opportunities.iloc[i]
        got = by_id[str(DEAL_ID_BASE + i)]
        assert company_of[got["account_id"]] == src["account_id"]
        assert float(got["amount"]) == pytest.approx(src["amount"])
        assert float(got["probability"]) == pytest.approx(src["probability"])
        assert got["close_date"] == src["close_date"].date().isoformat()
        assert got["is_closed"] == ("true" if src["is_closed"] else "false")
        assert got["is_won"] == ("true" if src["is_won"] else "false")
        assert got["name"] == src["name"]
    assert {r["stage"] for r in rows} <= {"appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                                          "decisionmakerboughtin", "contractsent", "closedwon", "closedlost"}  # fmt: skip
    assert check_records(CrmObject.opportunities, rows).rejected.empty


def test_incremental_read_returns_changes_since_the_cursor_and_deletes(sandbox: SandboxServer) -> None:
    connector = connector_for(sandbox)
    first = read_all(connector, CrmObject.accounts)
    cursor = first[-1].cursor
    assert cursor is not None
    later = int(cursor.modified_at.timestamp() * 1000) + 60_000
    changed = str(COMPANY_ID_BASE + 3)
    sandbox.state.modify("companies", changed, {"annualrevenue": "777"}, at_ms=later)
    gone = str(COMPANY_ID_BASE + 4)
    sandbox.state.delete("companies", gone, at_ms=later)
    since = Cursor(cursor.modified_at, "")
    batches = list(connector.read(CrmObject.accounts, since))
    rows = records(batches)
    ids = [r["id"] for r in rows]
    assert changed in ids
    assert rows[-1]["arr"] == "777"
    # The closed start re-reads what shares the saved timestamp; nothing older comes back.
    assert all(datetime.fromisoformat(r["modified_at"]) >= cursor.modified_at for r in rows)
    assert len(ids) < 5
    assert deleted(batches) == [gone]
    assert batches[-1].deleted_ids == [gone]
    assert batches[-1].cursor is None


def test_more_than_10000_records_sharing_one_timestamp_are_each_read_once() -> None:
    org = generate_org(accounts=10_400, reps=6, seed=9, now=NOW)
    with start_hubspot_sandbox(org, now=NOW) as big:
        ids = [str(COMPANY_ID_BASE + i) for i in range(len(org.accounts))]
        import_ms = int(NOW.timestamp() * 1000) + 1_000
        big.state.touch("companies", ids[:10_150], import_ms)  # a bulk import: one timestamp
        big.state.touch("companies", ids[10_150:10_300], import_ms + 5)
        connector = connector_for(big)
        batches = read_all(connector, CrmObject.accounts)
        rows = records(batches)
        read_ids = [r["id"] for r in rows]
        assert len(read_ids) == len(set(read_ids)) == len(org.accounts)
        assert set(read_ids) == set(ids)
        stamps = [datetime.fromisoformat(r["modified_at"]) for r in rows]
        assert stamps == sorted(stamps)
        tied = [
            r["id"] for r in rows if datetime.fromisoformat(r["modified_at"]).timestamp() * 1000 == import_ms
        ]
        assert tied == sorted(tied)  # swept by hs_object_id
        assert len(tied) == 10_150
        searches = big.counters.requests["POST /crm/v3/objects/companies/search"]
        listings = big.counters.requests["GET /crm/v3/objects/companies"]  # the archived listing
        assert (searches, listings) == (connector.companies.requests - 1, 1)
        assert searches <= len(org.accounts) // 199 + 4
        assert 400 not in big.counters.faults


def test_429_retry_after_is_honoured_for_get_and_post() -> None:
    faults = HubSpotFaults(rate_limit_share=0.4, retry_after_seconds=0.05, seed=3)
    with start_hubspot_sandbox(ORG, now=NOW, faults=faults) as limited:
        waits = Waits()
        connector = connector_for(limited, waits, search_page_size=100)
        owners = records(read_all(connector, CrmObject.owners))  # GET
        accounts = records(read_all(connector, CrmObject.accounts))  # POST search, GET archived list
        assert len(owners) == len(ORG.owners)
        assert len({r["id"] for r in accounts}) == len(accounts) == len(ORG.accounts)
        limited_calls = limited.counters.faults[429]
        assert limited_calls >= 3
        assert connector.client.retries == limited_calls == len(waits.seconds)
        assert all(0.05 <= w <= 0.05 * 1.1 + 0.01 for w in waits.seconds)
        answered = list(limited.counters.answered)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(answered) if a[2] == 429]
        assert len(gaps) == limited_calls
        assert min(gaps) >= 0.05  # the retry came no sooner than Retry-After said
        retried = {a[1] for a, b in itertools.pairwise(answered) if a[2] == 429 and b[1] == a[1]}
        assert {"GET /crm/v3/owners", "POST /crm/v3/objects/companies/search"} <= retried
        posts = limited.counters.requests["POST /crm/v3/objects/companies/search"]
        assert posts > connector.companies.requests - 1  # some searches were sent more than once
        assert limited.counters.requests["GET /crm/v3/owners"] > 2  # 2 listings (active, archived) + retries


def test_slow_responses_time_out_as_retriable_or_complete_within_the_timeout() -> None:
    faults = HubSpotFaults(slow_share=1.0, slow_seconds=0.3)
    with start_hubspot_sandbox(ORG, now=NOW, faults=faults) as slow:
        impatient = connector_for(slow, timeout_seconds=0.1, max_attempts=2)
        with pytest.raises(RetriableError, match="ReadTimeoutError"):
            read_all(impatient, CrmObject.owners)
        patient = connector_for(slow, timeout_seconds=2.0)
        assert len(records(read_all(patient, CrmObject.owners))) == len(ORG.owners)


def test_records_modified_while_paging_come_again_in_the_same_run() -> None:
    # HubSpot's search pages the live data by hs_lastmodifieddate ascending: a record edited mid-run
    # moves ahead of the cursor and is read again before the run ends (that the next run catches the
    # rest is the conformance suite's churn test).
    faults = HubSpotFaults(modify_during_paging=3, delete_during_paging=1, seed=6)
    with start_hubspot_sandbox(ORG, now=NOW, faults=faults) as busy:
        connector = connector_for(busy, search_page_size=50)
        names = {r["id"]: r["name"] for r in records(read_all(connector, CrmObject.accounts))}
        edited = sum(1 for name in names.values() if name.endswith("(edited)"))
        assert edited > 0


def test_write_back_writes_skips_conflicts_and_reports_207_errors(sandbox: SandboxServer) -> None:
    state = sandbox.state
    owners = [o.id for o in state.owners if not o.archived]
    table = state.companies

    def owner_of(row: int) -> str:
        value = table.prop(row, "hubspot_owner_id")
        assert value is not None
        return value

    def other_than(owner: str) -> str:
        return next(o for o in owners if o != owner)

    planned = datetime(2026, 11, 2, tzinfo=UTC)
    ok = OwnerChange(str(COMPANY_ID_BASE + 10), owner_of(10), other_than(owner_of(10)), planned)
    raced = OwnerChange(str(COMPANY_ID_BASE + 11), owner_of(11), other_than(owner_of(11)), planned)
    someone_else = next(o for o in owners if o not in (owner_of(11), raced.to_owner_id))
    state.modify("companies", raced.account_id, {"hubspot_owner_id": someone_else})  # changed meanwhile
    invalid = OwnerChange(str(COMPANY_ID_BASE + 12), owner_of(12), "999999", planned)
    missing = OwnerChange(str(COMPANY_ID_BASE + 90_000), "1", owners[0], planned)
    done = OwnerChange(str(COMPANY_ID_BASE + 13), other_than(owner_of(13)), owner_of(13), planned)
    connector = connector_for(sandbox, batch_size=3)
    results = connector.apply_owner_changes([ok, raced, invalid, missing, done])
    outcome = {r.account_id: r for r in results}
    assert [r.account_id for r in results] == [c.account_id for c in (ok, raced, invalid, missing, done)]
    assert outcome[ok.account_id].outcome is WriteOutcome.written
    assert owner_of(10) == ok.to_owner_id
    assert outcome[raced.account_id].outcome is WriteOutcome.conflict
    assert outcome[raced.account_id].detail["found_owner_id"] == someone_else
    assert owner_of(11) == someone_else  # not overwritten
    assert outcome[invalid.account_id].outcome is WriteOutcome.failed
    assert outcome[invalid.account_id].detail["category"] == "VALIDATION_ERROR"
    assert owner_of(12) == invalid.expected_owner_id
    assert outcome[missing.account_id].outcome is WriteOutcome.failed
    assert outcome[missing.account_id].detail["read"]["category"] == "OBJECT_NOT_FOUND"
    assert outcome[done.account_id].outcome is WriteOutcome.written
    assert outcome[done.account_id].detail["already"] is True
    # Applying the same changes again writes nothing new: exactly once.
    again = {r.account_id: r for r in connector.apply_owner_changes([ok])}
    assert again[ok.account_id].outcome is WriteOutcome.written
    assert again[ok.account_id].detail["already"] is True


def test_write_back_retries_a_rate_limited_batch_update() -> None:
    faults = HubSpotFaults(rate_limit_share=0.5, retry_after_seconds=0.01, seed=12)
    with start_hubspot_sandbox(ORG, now=NOW, faults=faults) as limited:
        table = limited.state.companies
        owners = [o.id for o in limited.state.owners if not o.archived]
        changes = []
        for row in range(20):
            current = table.prop(row, "hubspot_owner_id")
            assert current is not None
            target = next(o for o in owners if o != current)
            changes.append(OwnerChange(str(COMPANY_ID_BASE + row), current, target, NOW))
        results = connector_for(limited, batch_size=5).apply_owner_changes(changes)
        assert [r.outcome for r in results] == [WriteOutcome.written] * 20
        assert all(table.prop(row, "hubspot_owner_id") == changes[row].to_owner_id for row in range(20))
        assert limited.counters.faults[429] >= 2
        batches = 20 // 5  # each: a read, the update and the read-back; the 429s made some go twice
        posts = [f"POST /crm/v3/objects/companies/batch/{verb}" for verb in ("read", "update")]
        assert sum(limited.counters.requests[p] for p in posts) > 3 * batches


def test_custom_properties_come_from_the_settings_mapping(sandbox: SandboxServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config = tmp_path / "territory.yaml"
    config.write_text(
        "hubspot:\n  companies:\n    arr: arr_usd__c\n    tier: segment\n    lat: null\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("TERRITORY_HUBSPOT__ACCESS_TOKEN", sandbox.access_token)
    monkeypatch.setenv("TERRITORY_HUBSPOT__BASE_URL", sandbox.url)
    sandbox.state.modify("companies", str(COMPANY_ID_BASE + 2), {"arr_usd__c": "1234.5", "segment": "growth"})
    connector = HubSpotConnector.from_settings(load_settings(config).hubspot)
    rows = {r["id"]: r for r in records(read_all(connector, CrmObject.accounts))}
    got = rows[str(COMPANY_ID_BASE + 2)]
    assert got["arr"] == "1234.5"
    assert got["tier"] == "growth"
    assert got["lat"] is None
    assert float(got["lon"]) == pytest.approx(ORG.accounts["lon"][2])
    assert rows[str(COMPANY_ID_BASE + 1)]["arr"] is None  # the custom property is unset there


def test_malformed_records_do_not_break_the_mapping_and_are_quarantined(sandbox: SandboxServer) -> None:
    bad_amount, orphan = str(DEAL_ID_BASE + 4), str(DEAL_ID_BASE + 5)
    sandbox.state.modify("deals", bad_amount, {"amount": "12k", "closedate": "soon"})
    sandbox.state.dissociate(orphan)
    rows = records(read_all(connector_for(sandbox), CrmObject.opportunities))
    by_id = {r["id"]: r for r in rows}
    assert by_id[bad_amount]["amount"] == "12k"
    assert by_id[bad_amount]["close_date"] == "soon"
    assert by_id[orphan]["account_id"] is None
    checked = check_records(CrmObject.opportunities, rows)
    reasons = dict(zip(checked.rejected["record_id"], checked.rejected["reason"], strict=True))
    assert reasons == {bad_amount: "unparseable amount: 12k", orphan: "missing account_id"}
    assert len(checked.clean) == len(ORG.opportunities) - 2


@pytest.mark.integration
def test_sync_engine_stores_hubspot_and_catches_up_with_changes(sandbox: SandboxServer, db: Engine) -> None:
    from connectors.sync import run_sync

    bad_deal = str(DEAL_ID_BASE + 2)
    sandbox.state.modify("deals", bad_deal, {"amount": "-5"}, at_ms=int(NOW.timestamp() * 1000) - 10_000)
    connector = connector_for(sandbox)
    first = run_sync(db, connector, full=True, now=NOW)
    assert first.status == "succeeded", first.one_line()
    assert first.total("rows_quarantined") == 1
    changed, gone = str(COMPANY_ID_BASE + 8), str(COMPANY_ID_BASE + 9)
    sandbox.state.modify("companies", changed, {"annualrevenue": "4242.5"})
    sandbox.state.delete("companies", gone)
    second = run_sync(db, connector, now=datetime.now(UTC))  # the sandbox stamps changes with the clock
    assert second.status == "succeeded", second.one_line()
    with db.connect() as conn:
        live = conn.execute(text("SELECT id FROM accounts WHERE NOT deleted ORDER BY id")).scalars().all()
        arr = conn.execute(text("SELECT arr FROM accounts WHERE id = :i"), {"i": changed}).scalar_one()
        deals = conn.execute(text("SELECT count(*) FROM opportunities WHERE NOT deleted")).scalar_one()
        owners = conn.execute(text("SELECT count(*) FROM owners")).scalar_one()
        reason = conn.execute(
            text("SELECT reason FROM quarantine WHERE record_id = :i"), {"i": bad_deal}
        ).scalar()
    assert live == sandbox.state.company_ids()
    assert float(arr) == 4242.5
    assert deals == len(ORG.opportunities) - 1
    assert owners == len(ORG.owners)
    assert reason == "negative amount"
    # Incremental: what changed, plus what the engine's 5-minute lookback re-reads; never the whole org.
    table = sandbox.state.companies
    before = np.delete(table.modified_ms, [table.row(changed), table.row(gone)])
    in_lookback = int((before >= before.max() - 300_000).sum())
    reads = {o.object: o.rows_read for o in second.objects}
    assert reads["accounts"] == in_lookback + 1
    assert reads["owners"] == len(ORG.owners)  # all were updated at the watermark instant (closed start)
    assert reads["opportunities"] < len(ORG.opportunities) // 2


def test_searches_are_paced_to_the_configured_rate(sandbox: SandboxServer) -> None:
    waits = Waits()
    connector = connector_for(sandbox, waits, search_page_size=100, search_requests_per_second=20)
    started = time.monotonic()
    assert len(records(read_all(connector, CrmObject.accounts))) == len(ORG.accounts)
    elapsed = time.monotonic() - started
    searches = [t for t, route, _ in sandbox.counters.answered if route.endswith("/search")]
    assert len(searches) == connector.companies.requests - 1 >= 6
    # 20 a second: each search sent at least 50 ms after the one before.
    assert elapsed >= 0.05 * (len(searches) - 1)
    gaps = [b - a for a, b in itertools.pairwise(searches)]
    assert min(gaps) >= 0.025  # answers jitter by the server's own time, never bunch up
    assert len(waits.seconds) >= len(searches) - 1


def test_prefetch_hands_over_items_errors_and_stops_with_the_caller() -> None:
    produced: list[int] = []

    def numbers(fail_at: int | None = None) -> Iterator[int]:
        for i in range(50):
            if i == fail_at:
                raise RetriableError("boom")
            produced.append(i)
            yield i

    assert list(prefetched(numbers(), depth=2)) == list(range(50))
    with pytest.raises(RetriableError, match="boom"):
        list(prefetched(numbers(fail_at=3), depth=2))
    produced.clear()
    running = set(threading.enumerate())
    early = prefetched(numbers(), depth=2)
    assert [next(early), next(early)] == [0, 1]
    (worker,) = (t for t in threading.enumerate() if t not in running and t.name == "hubspot-prefetch")
    early.close()
    worker.join(timeout=5)  # the worker notices the stop at its next item and ends
    assert not worker.is_alive()
    assert len(produced) <= 2 + 2 + 1  # taken, queued, and the one the worker held when told to stop


def _api_exception(status: int, body: str, headers: dict[str, str] | None = None) -> CompaniesApiException:
    exc = CompaniesApiException(status=status, reason="reason")
    exc.body = body
    exc.headers = headers
    return exc


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry_after"),
    [
        (429, '{"policyName":"SECONDLY","message":"slow down"}', {"Retry-After": "3"}, RetriableError, 3.0),
        (429, '{"policyName":"SECONDLY"}', None, RetriableError, 1.0),
        (429, '{"policyName":"DAILY","message":"You have reached your daily limit."}', None, QuotaExhausted, None),
        (503, "<html>unavailable</html>", {"Retry-After": "7"}, RetriableError, 7.0),
        (401, '{"category":"INVALID_AUTHENTICATION","message":"expired"}', None, ConnectorConfigError, None),
        (403, '{"category":"MISSING_SCOPES","message":"needs crm.objects.companies.write"}', None,
         ConnectorConfigError, None),
        (400, '{"category":"VALIDATION_ERROR","message":"bad filter"}', None, FatalError, None),
    ],
)  # fmt: skip
def test_vendor_errors_map_onto_what_the_caller_does(
    status: int, body: str, headers: dict[str, str] | None, kind: type[Exception], retry_after: float | None
) -> None:
    mapped = map_error(_api_exception(status, body, headers), "search companies")
    assert type(mapped) is kind
    assert str(mapped).startswith("search companies")
    if retry_after is not None:
        assert isinstance(mapped, RetriableError)
        assert mapped.retry_after == retry_after
    assert map_error(urllib3.exceptions.ProtocolError("reset"), "x").__class__ is RetriableError
    plain = KeyError("not ours")
    assert map_error(plain, "x") is plain


def test_the_daily_limit_429_stops_without_retrying() -> None:
    with start_hubspot_sandbox(ORG, now=NOW, faults=HubSpotFaults(daily_limit=3)) as sandbox:
        connector = connector_for(sandbox, quota_share=1.0)
        assert len(records(read_all(connector, CrmObject.owners))) == len(ORG.owners)  # 2 requests
        sandbox.state.requests += 1  # another app spends the last call: the guard could not know
        with pytest.raises(QuotaExhausted, match="daily limit"):
            read_all(connector, CrmObject.accounts)
        assert sandbox.counters.faults == {429: 1}
        assert connector.client.retries == 0


@pytest.mark.integration
def test_sync_engine_stops_on_the_quota_and_resumes_the_next_day(sandbox: SandboxServer, db: Engine) -> None:
    from connectors.sync import run_sync

    sandbox.faults = HubSpotFaults(daily_limit=24)
    connector = connector_for(sandbox, search_page_size=50, quota_share=0.5)
    connector.companies.batch_rows = 50
    stopped = run_sync(db, connector, full=True, now=NOW)
    assert stopped.status == "stopped", stopped.one_line()
    with db.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM accounts")).scalar_one()
        watermark = conn.execute(
            text("SELECT watermark FROM sync_state WHERE source = 'hubspot' AND object = 'accounts'")
        ).scalar()
    assert 0 < stored < len(ORG.accounts)
    assert watermark is not None
    sandbox.faults = HubSpotFaults()  # a new day
    resumed = run_sync(db, connector_for(sandbox), now=NOW)
    assert resumed.status == "succeeded", resumed.one_line()
    assert resumed.total("rows_read") < len(ORG.accounts) + len(ORG.opportunities)
    with db.connect() as conn:
        live = conn.execute(text("SELECT id FROM accounts WHERE NOT deleted ORDER BY id")).scalars().all()
        deals = conn.execute(text("SELECT count(*) FROM opportunities")).scalar_one()
    assert live == sandbox.state.company_ids()
    assert deals == len(ORG.opportunities)


def test_a_change_racing_the_update_is_found_by_the_read_back_and_reported_a_conflict(
    sandbox: SandboxServer,
) -> None:
    state = sandbox.state
    owners = [o.id for o in state.owners if not o.archived]
    current = state.companies.prop(20, "hubspot_owner_id")
    assert current is not None
    target, someone = [o for o in owners if o != current][:2]
    change = OwnerChange(str(COMPANY_ID_BASE + 20), current, target, NOW)
    connector = connector_for(sandbox)
    real = connector.client.call_json

    def racing(what: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        answer = real(what, fn, *args, **kwargs)
        if what.startswith("update"):  # someone else sets the owner just after our update
            state.modify("companies", change.account_id, {"hubspot_owner_id": someone})
        return answer

    connector.client.call_json = racing  # type: ignore[method-assign]
    [result] = connector.apply_owner_changes([change])
    assert result.outcome is WriteOutcome.conflict
    assert result.detail["raced"] is True
    assert result.detail["found_owner_id"] == someone
    assert state.companies.prop(20, "hubspot_owner_id") == someone  # left as they set it


def test_deal_owners_are_written_like_company_owners(sandbox: SandboxServer) -> None:
    state = sandbox.state
    owners = [o.id for o in state.owners if not o.archived]
    current = state.deals.prop(3, "hubspot_owner_id")
    assert current is not None
    target = next(o for o in owners if o != current)
    deal = str(DEAL_ID_BASE + 3)
    connector = connector_for(sandbox)
    [result] = connector.apply_owner_changes(
        [OwnerChange(deal, current, target, NOW)], CrmObject.opportunities
    )
    assert result.outcome is WriteOutcome.written
    assert state.deals.prop(3, "hubspot_owner_id") == target
    assert state.api_writes[("deals", deal)] == 1
