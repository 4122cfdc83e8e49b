"""The Salesforce connector against the sandbox through the real simple-salesforce client: its quirks.

Paging, deletes through queryAll, cursor ties, lookback, bulk reads, session re-auth, slow answers, each
auth flow, 412 on write-back, malformed records and the field mapping from the settings. What every CRM
connector does alike (Retry-After, 5xx, churn while paging, the quota stop, a refused credential,
conflicts) is the conformance suite's, test_conformance.py, run against Salesforce as well.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, text

from connectors.base import Batch, Connector, CrmObject, Cursor, OwnerChange, WriteOutcome
from connectors.errors import ConnectorConfigError, QuotaExhausted, RetriableError
from connectors.salesforce import SalesforceConnector
from connectors.salesforce.auth import AuthMethod, Credentials
from connectors.salesforce.client import SalesforceClient, make_session
from connectors.salesforce.mapping import build_mappings
from connectors.salesforce.streams import StreamOptions
from connectors.sandbox.generator import DEFAULT_NOW, Org, generate_org
from connectors.sandbox.salesforce import (
    DEFAULT_PASSWORD,
    DEFAULT_SECURITY_TOKEN,
    DEFAULT_USERNAME,
    SalesforceFaults,
    SandboxServer,
    start_salesforce_sandbox,
)
from connectors.sync import run_sync
from service.settings import Settings

ACCOUNTS = 300
T0 = dt.datetime(2026, 11, 2, 12, 0, 0, tzinfo=dt.UTC)  # after every generated timestamp


@pytest.fixture(scope="module")
def org() -> Org:
    return generate_org(accounts=ACCOUNTS, reps=8, seed=5, now=DEFAULT_NOW)


@pytest.fixture
def server(org: Org, tmp_path: Path) -> Iterator[SandboxServer]:
    srv = start_salesforce_sandbox(
        org, faults=SalesforceFaults(retry_after=0.05), cert_dir=tmp_path / "certs"
    )
    yield srv
    srv.stop()


def creds(server: SandboxServer, method: AuthMethod = AuthMethod.password, **over: Any) -> Credentials:
    base: dict[str, Any] = {
        "method": method,
        "login_url": server.url,
        "instance_url": server.url,
        "access_token": server.access_token,
        "username": DEFAULT_USERNAME,
        "password": DEFAULT_PASSWORD,
        "security_token": DEFAULT_SECURITY_TOKEN,
        "consumer_key": server.state.consumer_key,
        "private_key_path": server.jwt_key_path,
    }
    return Credentials(**{**base, **over})


def connector(
    server: SandboxServer,
    *,
    method: AuthMethod = AuthMethod.password,
    sleeps: list[float] | None = None,
    max_attempts: int = 4,
    timeout: float = 10.0,
    quota_share: float = 0.8,
    **options: Any,
) -> SalesforceConnector:
    recorded = sleeps if sleeps is not None else []
    client = SalesforceClient(
        creds(server, method),
        session=make_session(str(server.ca_path), timeout),
        quota_share=quota_share,
        max_attempts=max_attempts,
        sleep=recorded.append,
    )
    opts = {
        "lookback": dt.timedelta(0),
        "page_size": 200,
        "bulk_threshold_rows": 10_000,
        "bulk_poll_seconds": 0.01,
    } | options
    return SalesforceConnector(client, build_mappings(), StreamOptions(**opts))


def read_all(
    conn: Connector, obj: CrmObject, since: Cursor | None = None, *, full: bool = False
) -> list[Batch]:
    return list(conn.read(obj, since, full=full))


def ids_of(batches: list[Batch]) -> list[str]:
    return [str(r["id"]) for b in batches for r in b.records]


def last_cursor(batches: list[Batch]) -> Cursor:
    cursors = [b.cursor for b in batches if b.cursor is not None]
    assert cursors
    return cursors[-1]


# --- reads -----------------------------------------------------------------------------------------


def test_is_a_connector(server: SandboxServer) -> None:
    conn = connector(server)
    assert isinstance(conn, Connector)
    assert conn.source == "salesforce"


def test_full_read_pages_and_maps_every_object(server: SandboxServer, org: Org) -> None:
    conn = connector(server)
    accounts = read_all(conn, CrmObject.accounts)
    assert len(accounts) == 2  # 300 rows, 200 a page
    assert sorted(ids_of(accounts)) == sorted(org.accounts["id"])
    by_id = {r["id"]: r for b in accounts for r in b.records}
    sample = org.accounts.iloc[17]
    record = by_id[sample["id"]]
    assert record["arr"] == pytest.approx(sample["arr"])
    assert record["tier"] == sample["tier"]
    assert record["owner_id"] == sample["owner_id"]
    assert record["protected"] is bool(sample["protected"])
    newest = org.accounts.sort_values(["modified_at", "id"]).iloc[-1]
    assert last_cursor(accounts) == Cursor(newest["modified_at"].to_pydatetime(), newest["id"])
    opps = read_all(conn, CrmObject.opportunities)
    probs = {r["id"]: r["probability"] for b in opps for r in b.records}
    expected = org.opportunities.set_index("id")["probability"]
    assert len(probs) == len(expected)
    assert all(probs[i] == pytest.approx(p) for i, p in expected.items())  # percent -> share
    owners = read_all(conn, CrmObject.owners)
    assert sorted(ids_of(owners)) == sorted(org.owners["id"])
    assert {r["region"] for b in owners for r in b.records} == set(org.owners["region"])
    assert all(b.deleted_ids == [] for b in owners)


def test_full_read_over_threshold_uses_bulk_api(server: SandboxServer, org: Org) -> None:
    conn = connector(server, bulk_threshold_rows=100, bulk_page_rows=120)
    gone = org.accounts["id"].iloc[3]
    server.state.delete("Account", gone, at=T0)
    batches = read_all(conn, CrmObject.accounts, full=True)
    assert server.state.requests_by_path.get("jobs", 0) >= 3  # create, poll, result pages
    assert server.state.requests_by_path.get("queryAll", 0) == 1  # the COUNT() only
    assert len(batches) == 3
    assert [b.cursor is None for b in batches] == [True, True, False]
    assert sorted(ids_of(batches)) == sorted(set(org.accounts["id"]) - {gone})
    assert [i for b in batches for i in b.deleted_ids] == [gone]
    assert batches[-1].cursor == Cursor(T0, gone)
    assert server.state.jobs == {}  # deleted once read
    sample = org.accounts.iloc[10]
    record = next(r for b in batches for r in b.records if r["id"] == sample["id"])
    assert float(record["arr"]) == pytest.approx(sample["arr"])
    lat = record["lat"]
    assert (lat is None) if sample["lat"] != sample["lat"] else float(lat) == pytest.approx(sample["lat"])


def test_a_throttled_bulk_page_is_retried_alone(server: SandboxServer, org: Org) -> None:
    sleeps: list[float] = []
    conn = connector(server, sleeps=sleeps, bulk_threshold_rows=100, bulk_page_rows=120)
    conn.client.sf  # noqa: B018 - log in first, so the request count below starts at the COUNT()
    server.faults.fail_next = [0, 0, 0, 0, 503]  # count, create, poll, page 1, then page 2 fails
    batches = read_all(conn, CrmObject.accounts, full=True)
    assert len(sleeps) == 1
    assert sorted(ids_of(batches)) == sorted(org.accounts["id"])
    # create, poll, 3 pages (the 503 was answered before routing, its retry counts), delete
    assert server.state.requests_by_path["jobs"] == 6
    assert server.state.jobs == {}


def test_incremental_reads_deletes_through_query_all(server: SandboxServer, org: Org) -> None:
    conn = connector(server)
    cursor = last_cursor(read_all(conn, CrmObject.accounts))
    gone, changed = org.accounts["id"].iloc[0], org.accounts["id"].iloc[1]
    server.state.delete("Account", gone, at=T0)
    server.state.update("Account", changed, {"ARR__c": 1234.5}, at=T0 + dt.timedelta(seconds=1))
    batches = read_all(conn, CrmObject.accounts, cursor)
    assert [i for b in batches for i in b.deleted_ids] == [gone]
    assert [(r["id"], r["arr"]) for b in batches for r in b.records] == [(changed, 1234.5)]
    assert last_cursor(batches) == Cursor(T0 + dt.timedelta(seconds=1), changed)
    assert server.state.requests_by_path.get("queryAll", 0) >= 2


def test_compound_cursor_resumes_inside_a_timestamp_tie(server: SandboxServer, org: Org) -> None:
    conn = connector(server)
    tied = sorted(org.accounts["id"].iloc[20:25])
    for account_id in tied:
        server.state.update("Account", account_id, {"Industry": "Retail"}, at=T0)
    batches = read_all(conn, CrmObject.accounts, Cursor(T0, tied[2]))
    assert ids_of(batches) == tied[3:]
    # The closed start (last_id empty, as the engine passes it after its own lookback) reads the tie whole.
    assert ids_of(read_all(conn, CrmObject.accounts, Cursor(T0, ""))) == tied


def test_lookback_rereads_the_window_before_the_cursor(server: SandboxServer, org: Org) -> None:
    a, b, c = org.accounts["id"].iloc[30:33]
    server.state.update("Account", a, {"Name": "A"}, at=T0 - dt.timedelta(seconds=90))
    server.state.update("Account", b, {"Name": "B"}, at=T0 - dt.timedelta(seconds=30))
    server.state.update("Account", c, {"Name": "C"}, at=T0)
    since = Cursor(T0, c)
    assert ids_of(read_all(connector(server), CrmObject.accounts, since)) == []
    assert ids_of(
        read_all(connector(server, lookback=dt.timedelta(seconds=60)), CrmObject.accounts, since)
    ) == [b, c]
    assert ids_of(
        read_all(connector(server, lookback=dt.timedelta(seconds=120)), CrmObject.accounts, since)
    ) == [a, b, c]


def test_changes_while_paging_are_caught_by_the_next_run(server: SandboxServer, org: Org) -> None:
    conn = connector(server)
    since = Cursor(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), "")
    reader = conn.read(CrmObject.accounts, since)
    first = next(reader)
    seen = [str(r["id"]) for r in first.records]
    edited, deleted = seen[0], seen[1]
    server.state.update("Account", edited, {"Name": "Renamed mid-sync"}, at=T0)
    server.state.delete("Account", deleted, at=T0)
    rest = list(reader)
    cursor = last_cursor([first, *rest])
    assert cursor.modified_at < T0  # the snapshot was taken before the changes
    again = read_all(conn, CrmObject.accounts, cursor)
    assert [(r["id"], r["name"]) for b in again for r in b.records] == [(edited, "Renamed mid-sync")]
    assert [i for b in again for i in b.deleted_ids] == [deleted]


def test_injected_churn_while_paging_does_not_move_the_cursor_past_the_snapshot(
    server: SandboxServer,
) -> None:
    # Salesforce pages a snapshot taken when the query starts: what changes while paging is stamped
    # after it, so the run's cursor is the calm run's and the next run picks the changes up
    # (that it does is the conformance suite's churn test).
    conn = connector(server)
    cursor = last_cursor(read_all(conn, CrmObject.accounts))
    server.faults.modify_per_page, server.faults.delete_per_page = 3, 1
    first = last_cursor(read_all(conn, CrmObject.accounts, full=True))
    server.faults.modify_per_page = server.faults.delete_per_page = 0
    assert first == cursor  # everything touched during the read was stamped after its snapshot
    again = read_all(conn, CrmObject.accounts, first)
    assert 1 <= sum(len(b.deleted_ids) for b in again) <= 2
    assert 3 <= sum(len(b.records) for b in again) + sum(len(b.deleted_ids) for b in again) <= 8


# --- quota, retries, sessions ----------------------------------------------------------------------


def test_daily_limit_answer_is_quota_exhausted(server: SandboxServer) -> None:
    server.state.api_limit = 10
    server.state.api_used = 10
    with pytest.raises(QuotaExhausted):
        read_all(connector(server, quota_share=1.0), CrmObject.owners)


def test_expired_session_reauthenticates_once(server: SandboxServer, org: Org) -> None:
    server.faults.session_requests = 1
    conn = connector(server)
    batches = read_all(conn, CrmObject.accounts)
    assert sorted(ids_of(batches)) == sorted(org.accounts["id"])
    assert conn.client.logins == 3  # the first login, then one per expiry (2 pages, 1 request each)


def test_second_401_in_a_row_fails_clearly(server: SandboxServer) -> None:
    conn = connector(server)
    server.faults.fail_next = [401, 401]
    with pytest.raises(ConnectorConfigError, match="INVALID_SESSION_ID twice"):
        read_all(conn, CrmObject.owners)
    assert conn.client.logins == 2


def test_slow_answers_time_out_as_retriable_or_succeed_within_the_timeout(
    server: SandboxServer, org: Org
) -> None:
    conn = connector(server, timeout=0.2, max_attempts=2)
    conn.client.sf  # noqa: B018
    server.faults.delay_seconds = 0.4
    with pytest.raises(RetriableError, match="unreachable"):
        read_all(conn, CrmObject.owners)
    server.faults.delay_seconds = 0.05
    assert sorted(ids_of(read_all(conn, CrmObject.owners))) == sorted(org.owners["id"])


# --- auth flows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(AuthMethod))
def test_each_auth_flow_reads(server: SandboxServer, org: Org, method: AuthMethod) -> None:
    conn = connector(server, method=method)
    assert sorted(ids_of(read_all(conn, CrmObject.owners))) == sorted(org.owners["id"])
    assert conn.client.logins == 1


def test_wrong_password_is_a_configuration_error(server: SandboxServer) -> None:
    client = SalesforceClient(creds(server, password="wrong"), session=make_session(str(server.ca_path)))
    with pytest.raises(ConnectorConfigError, match="INVALID_LOGIN"):
        client.sf  # noqa: B018


def test_jwt_signed_by_an_unknown_key_is_refused(server: SandboxServer, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "other.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    client = SalesforceClient(
        creds(server, AuthMethod.jwt, private_key_path=path), session=make_session(str(server.ca_path))
    )
    with pytest.raises(ConnectorConfigError, match="invalid_grant"):
        client.sf  # noqa: B018


def test_untrusted_certificate_is_a_configuration_error(server: SandboxServer) -> None:
    client = SalesforceClient(creds(server), session=make_session(None), max_attempts=1)
    with pytest.raises(ConnectorConfigError, match="ca_bundle"):
        client.sf  # noqa: B018


def test_missing_credentials_name_the_setting(server: SandboxServer) -> None:
    with pytest.raises(ConnectorConfigError, match="TERRITORY_SALESFORCE__PASSWORD"):
        creds(server, password=None).check()


# --- write-back ------------------------------------------------------------------------------------


def _move(org: Org, n: int) -> tuple[str, str, str]:
    account = org.accounts.iloc[n]
    other = next(o for o in org.owners["id"] if o != account["owner_id"])
    return str(account["id"]), str(account["owner_id"]), str(other)


def test_change_between_read_and_write_answers_412_and_is_a_conflict(server: SandboxServer, org: Org) -> None:
    account, owner, other = _move(org, 42)
    conn = connector(server)
    third = next(o for o in org.owners["id"] if o not in (owner, other))
    real = conn.client.composite

    def racing(subrequests: list[dict[str, Any]]) -> Any:
        server.state.update(
            "Account", account, {"OwnerId": third}, at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        )
        return real(subrequests)

    conn.client.composite = racing  # type: ignore[method-assign]
    results = conn.apply_owner_changes([OwnerChange(account, owner, other, T0)])
    assert results[0].outcome is WriteOutcome.conflict
    assert results[0].detail["status"] == 412
    assert server.state.record("Account", account)["OwnerId"] == third  # type: ignore[index]


def test_write_back_of_many_is_idempotent_and_reports_each(server: SandboxServer, org: Org) -> None:
    moves = [_move(org, n) for n in range(50, 80)]
    changes = [OwnerChange(a, o, t, T0) for a, o, t in moves]
    changes.append(OwnerChange("001000000000000XXX", moves[0][1], moves[0][2], T0))
    conn = connector(server)
    first = conn.apply_owner_changes(changes)
    assert [r.outcome for r in first] == [WriteOutcome.written] * 30 + [WriteOutcome.failed]
    assert server.state.requests_by_path["composite"] == 2  # 25 a request
    again = conn.apply_owner_changes(changes)  # a re-run after a crash writes nothing twice
    assert [r.outcome for r in again] == [WriteOutcome.written] * 30 + [WriteOutcome.failed]
    assert all(r.detail.get("already") for r in again[:30])
    assert server.state.requests_by_path["composite"] == 2
    assert all(server.state.record("Account", a)["OwnerId"] == t for a, _, t in moves)  # type: ignore[index]


# --- mapping ---------------------------------------------------------------------------------------


def test_malformed_records_are_passed_on_not_fatal(server: SandboxServer, org: Org) -> None:
    account = org.accounts["id"].iloc[60]
    opp = org.opportunities["id"].iloc[0]
    server.state.update(
        "Account", account, {"ARR__c": "lots", "Name": None, "BillingLatitude": "north"}, at=T0
    )
    server.state.update(
        "Opportunity", opp, {"Probability": "high", "Amount": -5.0, "CloseDate": "soon"}, at=T0
    )
    opp2 = org.opportunities["id"].iloc[1]
    server.state.update("Opportunity", opp2, {"Probability": None}, at=T0)
    conn = connector(server)
    since = Cursor(T0, "")
    [acc_batch] = read_all(conn, CrmObject.accounts, since)
    assert acc_batch.records[0] | {} == acc_batch.records[0]
    assert (acc_batch.records[0]["arr"], acc_batch.records[0]["name"], acc_batch.records[0]["lat"]) == (
        "lots",
        None,
        "north",
    )
    assert acc_batch.raw[0]["ARR__c"] == "lots"
    [opp_batch] = read_all(conn, CrmObject.opportunities, since)
    by_id = {r["id"]: r for r in opp_batch.records}
    assert (by_id[opp]["probability"], by_id[opp]["amount"], by_id[opp]["close_date"]) == (
        "high",
        -5.0,
        "soon",
    )
    assert by_id[opp2]["probability"] is None


def test_field_mapping_from_settings(server: SandboxServer, org: Org) -> None:
    settings = Settings(
        salesforce={
            "auth": "jwt",
            "login_url": server.url,
            "username": DEFAULT_USERNAME,
            "consumer_key": server.state.consumer_key,
            "private_key_path": server.jwt_key_path,
            "ca_bundle": server.ca_path,
            "page_size": 200,
            "fields": {"accounts": {"arr": "Potential__c", "tier": None, "industry": "Tier__c"}},
        }
    )
    conn = SalesforceConnector.from_settings(settings.salesforce)
    records = {r["id"]: r for b in read_all(conn, CrmObject.accounts) for r in b.records}
    sample = org.accounts.iloc[9]
    record = records[sample["id"]]
    assert record["arr"] == pytest.approx(sample["potential"])
    assert record["industry"] == sample["tier"]
    assert "tier" not in record


def test_mapping_to_a_field_the_org_lacks_is_a_configuration_error(server: SandboxServer) -> None:
    settings = Settings(
        salesforce={
            "auth": "access_token",
            "instance_url": server.url,
            "access_token": server.access_token,
            "ca_bundle": server.ca_path,
            "fields": {"accounts": {"arr": "AnnualRevenue__c"}},
        }
    )
    with pytest.raises(ConnectorConfigError, match="INVALID_FIELD"):
        read_all(SalesforceConnector.from_settings(settings.salesforce), CrmObject.accounts)


def test_mapping_refuses_unknown_columns_and_bad_names() -> None:
    with pytest.raises(ConnectorConfigError, match="unknown column 'revenue'"):
        build_mappings({"accounts": {"revenue": "ARR__c"}})
    with pytest.raises(ConnectorConfigError, match="not a Salesforce field name"):
        build_mappings({"accounts": {"arr": "ARR__c FROM User --"}})


# --- through the sync engine into Postgres ---------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("bulk", [False, True], ids=["rest", "bulk"])
def test_sync_engine_stores_the_org_then_its_changes(
    server: SandboxServer, org: Org, db: Engine, bulk: bool
) -> None:
    conn = connector(server, bulk_threshold_rows=100 if bulk else 10_000, bulk_page_rows=150)
    summary = run_sync(db, conn, full=True, now=T0)
    assert summary.status == "succeeded", summary
    assert [o.rows_quarantined for o in summary.objects] == [0, 0, 0]
    with db.connect() as c:
        counts = [
            c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608
            for t in ("owners", "accounts", "opportunities")
        ]
        arr = c.execute(text("SELECT sum(arr) FROM accounts")).scalar_one()
        prob = c.execute(text("SELECT max(probability) FROM opportunities")).scalar_one()
    assert counts == [len(org.owners), len(org.accounts), len(org.opportunities)]
    assert float(arr) == pytest.approx(org.accounts["arr"].sum(), rel=1e-9)
    assert float(prob) == pytest.approx(org.opportunities["probability"].max())
    account, _, other = _move(org, 7)
    gone = org.accounts["id"].iloc[8]
    server.state.update("Account", account, {"OwnerId": other}, at=T0)
    server.state.delete("Account", gone, at=T0)
    again = run_sync(db, conn, now=T0, lookback=dt.timedelta(seconds=60))
    assert again.status == "succeeded", again
    assert again.objects[1].rows_deleted == 1
    with db.connect() as c:
        assert (
            c.execute(text("SELECT owner_id FROM accounts WHERE id = :i"), {"i": account}).scalar_one()
            == other
        )
        watermark = c.execute(
            text("SELECT watermark FROM sync_state WHERE source = 'salesforce' AND object = 'accounts'")
        ).scalar_one()
    assert Cursor.from_json(watermark) == Cursor(T0, max(account, gone))


@pytest.mark.integration
def test_sync_engine_stops_at_the_quota_and_resumes_from_the_saved_watermark(
    server: SandboxServer, org: Org, db: Engine
) -> None:
    server.state.api_limit = 100
    # First run: a COUNT() and pages per object; 76 + 2 (owners) + 2 (accounts' COUNT and first page)
    # reaches 80, so the guard stops before the accounts' second page.
    server.state.api_used = 76
    conn = connector(server)
    first = run_sync(db, conn, now=T0)
    assert first.status == "stopped"
    assert [o.status for o in first.objects] == ["succeeded", "stopped"]
    assert "one more call would pass" in str(first.objects[1].error)
    with db.connect() as c:
        stored = c.execute(text("SELECT count(*) FROM accounts")).scalar_one()
        watermark = c.execute(
            text("SELECT watermark FROM sync_state WHERE source = 'salesforce' AND object = 'accounts'")
        ).scalar_one()
    assert stored == 200  # the first page, committed with its cursor
    assert Cursor.from_json(watermark) is not None
    server.state.api_used = 0  # the next day
    again = run_sync(db, conn, now=T0)
    assert again.status == "succeeded", again
    with db.connect() as c:
        counts = [
            c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()  # noqa: S608
            for t in ("owners", "accounts", "opportunities")
        ]
    assert counts == [len(org.owners), len(org.accounts), len(org.opportunities)]
