"""The sandbox Salesforce as the real simple-salesforce client sees it: shapes, paging, bulk, errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from connectors.sandbox.generator import DEFAULT_NOW, Org, generate_org
from connectors.sandbox.salesforce import (
    SalesforceFaults,
    SandboxServer,
    start_salesforce_sandbox,
)
from connectors.sandbox.soql import SoqlError, parse

ACCOUNTS = 300


@pytest.fixture(scope="module")
def org() -> Org:
    return generate_org(accounts=ACCOUNTS, reps=8, seed=3, now=DEFAULT_NOW)


@pytest.fixture
def server(org: Org, tmp_path: Path) -> Iterator[SandboxServer]:
    srv = start_salesforce_sandbox(org, faults=SalesforceFaults(), cert_dir=tmp_path / "certs")
    yield srv
    srv.stop()


def client(server: SandboxServer) -> Salesforce:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace verify=
    session.verify = str(server.ca_path)
    return Salesforce(instance_url=server.url, session_id=server.access_token, session=session)


SMALL_PAGES = {"Sforce-Query-Options": "batchSize=200"}


def test_query_pages_by_next_records_url(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    first = sf.query("SELECT Id, Name FROM Account ORDER BY Id", headers=SMALL_PAGES)
    assert first["totalSize"] == ACCOUNTS
    assert first["done"] is False
    assert len(first["records"]) == 200
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
    assert first["records"][0]["attributes"]["type"] == "Account"
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM Account ORDER BY Id", headers=SMALL_PAGES)]
    assert ids == sorted(org.accounts["id"].tolist())


def test_default_page_is_2000_records(server: SandboxServer) -> None:
    sf = client(server)
    page = sf.query("SELECT Id FROM Opportunity")
    assert len(page["records"]) == min(2000, page["totalSize"])
    assert page["done"] is (page["totalSize"] <= 2000)


def test_fields_carry_salesforce_names_and_types(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    first = org.opportunities.iloc[0]
    record = sf.Opportunity.get(first["id"])
    assert record["AccountId"] == first["account_id"]
    assert record["Probability"] == pytest.approx(first["probability"] * 100)
    assert record["CloseDate"] == first["close_date"].strftime("%Y-%m-%d")
    assert record["IsWon"] is bool(first["is_won"])
    assert record["SystemModstamp"] == first["modified_at"].strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def test_query_all_returns_deleted_records_and_query_does_not(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    gone = org.accounts["id"].iloc[5]
    server.state.delete("Account", gone)
    live = {r["Id"] for r in sf.query_all_iter("SELECT Id FROM Account")}
    everything = {
        r["Id"]: r["IsDeleted"]
        for r in sf.query_all_iter("SELECT Id, IsDeleted FROM Account", include_deleted=True)
    }
    assert gone not in live
    assert everything[gone] is True
    assert len(live) == ACCOUNTS - 1


def test_where_order_and_limit(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    cutoff = org.accounts["modified_at"].sort_values().iloc[-10]
    stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = sf.query(
        f"SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp >= {stamp} ORDER BY SystemModstamp DESC, Id LIMIT 5"  # noqa: S608
    )
    stamps = [r["SystemModstamp"] for r in result["records"]]
    assert len(stamps) == 5
    assert stamps == sorted(stamps, reverse=True)
    expected = sorted(org.accounts.loc[org.accounts["modified_at"] >= cutoff, "modified_at"], reverse=True)[
        :5
    ]
    assert stamps == [s.strftime("%Y-%m-%dT%H:%M:%S.000+0000") for s in expected]
    assert sf.query("SELECT COUNT() FROM Account WHERE Tier__c = 'strategic'")["totalSize"] == int(
        (org.accounts["tier"] == "strategic").sum()
    )


def test_errors_are_json_arrays(server: SandboxServer) -> None:
    sf = client(server)
    with pytest.raises(SalesforceMalformedRequest) as bad_field:
        sf.query("SELECT Id, Nope__c FROM Account")
    assert bad_field.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert set(bad_field.value.content[0]) == {"message", "errorCode", "fields"}
    with pytest.raises(SalesforceMalformedRequest) as bad_syntax:
        sf.query("SELECT FROM")
    assert bad_syntax.value.content[0]["errorCode"] == "MALFORMED_QUERY"


def test_limit_info_on_every_response(server: SandboxServer) -> None:
    sf = client(server)
    sf.query("SELECT Id FROM User")
    sf.query("SELECT Id FROM User")
    usage = sf.api_usage["api-usage"]
    assert (usage.used, usage.total) == (2, 1_000_000)
    server.state.api_used = server.state.api_limit
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM User")
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_patch_with_if_unmodified_since(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    account = org.accounts.iloc[0]
    other = next(o for o in org.owners["id"] if o != account["owner_id"])
    modified = account["modified_at"].to_pydatetime()
    later = "Sun, 01 Nov 2026 00:00:00 GMT" if modified < DEFAULT_NOW else None
    assert later is not None
    status = sf.Account.update(account["id"], {"OwnerId": other}, headers={"If-Unmodified-Since": later})
    assert status == 204
    assert sf.Account.get(account["id"])["OwnerId"] == other
    # The record was just modified (now), so a date before that is a conflict: 412, nothing written.
    with pytest.raises(SalesforceGeneralError) as conflict:
        sf.Account.update(
            account["id"], {"OwnerId": account["owner_id"]}, headers={"If-Unmodified-Since": later}
        )
    assert conflict.value.status == 412
    assert conflict.value.content[0]["errorCode"] == "PRECONDITION_FAILED"
    assert sf.Account.get(account["id"])["OwnerId"] == other


def test_patch_refuses_unknown_owner_and_read_only_fields(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    account_id = org.accounts["id"].iloc[1]
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.Account.update(account_id, {"OwnerId": "005000000000999AAA"})
    assert unknown.value.content[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"
    with pytest.raises(SalesforceMalformedRequest) as read_only:
        sf.Account.update(account_id, {"SystemModstamp": "2020-01-01T00:00:00.000+0000"})
    assert read_only.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_composite_and_composite_sobjects(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    a, b = org.accounts["id"].iloc[2], org.accounts["id"].iloc[3]
    owner = org.owners["id"].iloc[0]
    answer = sf.restful(
        "composite",
        method="POST",
        data=json.dumps(
            {
                "allOrNone": False,
                "compositeRequest": [
                    {
                        "method": "PATCH",
                        "url": f"/services/data/v59.0/sobjects/Account/{a}",
                        "referenceId": "r1",
                        "body": {"OwnerId": owner},
                    },
                    {
                        "method": "GET",
                        "url": f"/services/data/v59.0/sobjects/Account/{b}?fields=Id,OwnerId",
                        "referenceId": "r2",
                    },
                    {
                        "method": "PATCH",
                        "url": "/services/data/v59.0/sobjects/Account/001000000000000XXX",
                        "referenceId": "r3",
                        "body": {"OwnerId": owner},
                    },
                ],
            }
        ),
    )
    statuses = [r["httpStatusCode"] for r in answer["compositeResponse"]]
    assert statuses == [204, 200, 404]
    assert answer["compositeResponse"][1]["body"]["Id"] == b
    assert server.state.record("Account", a)["OwnerId"] == owner  # type: ignore[index]
    rows = sf.restful("composite/sobjects/Account", params={"ids": f"{a},{b}", "fields": "Id,OwnerId"})
    assert [r["Id"] for r in rows] == [a, b]
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        data=json.dumps(
            {"allOrNone": False, "records": [{"attributes": {"type": "Account"}, "id": b, "OwnerId": owner}]}
        ),
    )
    assert results == [{"id": b, "success": True, "errors": []}]


def test_composite_all_or_none_rolls_back(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    a = org.accounts["id"].iloc[4]
    before = server.state.record("Account", a)
    owner = next(o for o in org.owners["id"] if o != before["OwnerId"])  # type: ignore[index]
    answer = sf.restful(
        "composite",
        method="POST",
        data=json.dumps(
            {
                "allOrNone": True,
                "compositeRequest": [
                    {
                        "method": "PATCH",
                        "url": f"/services/data/v59.0/sobjects/Account/{a}",
                        "referenceId": "r1",
                        "body": {"OwnerId": owner},
                    },
                    {
                        "method": "PATCH",
                        "url": f"/services/data/v59.0/sobjects/Account/{a}",
                        "referenceId": "r2",
                        "body": {"Bogus__c": 1},
                    },
                    {
                        "method": "GET",
                        "url": f"/services/data/v59.0/sobjects/Account/{a}",
                        "referenceId": "r3",
                    },
                ],
            }
        ),
    )
    assert [r["httpStatusCode"] for r in answer["compositeResponse"]] == [204, 400, 400]
    assert answer["compositeResponse"][2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert server.state.record("Account", a) == before


def test_bulk2_query_pages_csv_by_locator(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    pages = list(
        sf.bulk2.Account.query(
            "SELECT Id, Name, ARR__c, Protected__c, SystemModstamp FROM Account", max_records=120, wait=0.01
        )
    )
    assert len(pages) == 3
    rows = [row for page in pages for row in csv.DictReader(io.StringIO(page))]
    assert len(rows) == ACCOUNTS
    assert {r["Id"] for r in rows} == set(org.accounts["id"])
    first = org.accounts.set_index("id").loc[rows[0]["Id"]]
    assert float(rows[0]["ARR__c"]) == pytest.approx(first["arr"])
    assert rows[0]["Protected__c"] in ("true", "false")
    assert rows[0]["SystemModstamp"].endswith(".000Z")


def test_bulk2_query_all_includes_deleted(server: SandboxServer, org: Org) -> None:
    sf = client(server)
    gone = org.accounts["id"].iloc[7]
    server.state.delete("Account", gone)
    live = [
        row
        for page in sf.bulk2.Account.query("SELECT Id FROM Account", wait=0.01)
        for row in csv.DictReader(io.StringIO(page))
    ]
    every = [
        row
        for page in sf.bulk2.Account.query_all("SELECT Id, IsDeleted FROM Account", wait=0.01)
        for row in csv.DictReader(io.StringIO(page))
    ]
    assert gone not in {r["Id"] for r in live}
    assert {r["Id"]: r["IsDeleted"] for r in every}[gone] == "true"


def test_throttle_answers_429_with_retry_after(server: SandboxServer) -> None:
    sf = client(server)
    server.faults.retry_after = 7
    server.faults.fail_next = [429, 503, 500]
    for status in (429, 503, 500):
        with pytest.raises(SalesforceGeneralError) as err:
            sf.query("SELECT Id FROM User")
        assert err.value.status == status
    response = requests.get(
        f"{server.url}/services/data/v59.0/limits",
        headers={"Authorization": f"Bearer {server.access_token}"},
        verify=str(server.ca_path),
        timeout=5,
    )
    assert response.status_code == 200
    server.faults.fail_next = [429]
    response = requests.get(
        f"{server.url}/services/data/v59.0/limits",
        headers={"Authorization": f"Bearer {server.access_token}"},
        verify=str(server.ca_path),
        timeout=5,
    )
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert response.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_session_expires_after_n_requests(server: SandboxServer) -> None:
    sf = client(server)
    server.faults.session_requests = 2
    sf.query("SELECT Id FROM User")
    sf.query("SELECT Id FROM User")
    with pytest.raises(SalesforceExpiredSession) as expired:
        sf.query("SELECT Id FROM User")
    assert expired.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


def test_records_change_while_paging(server: SandboxServer) -> None:
    sf = client(server)
    server.faults.modify_per_page = 2
    server.faults.delete_per_page = 1
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    list(sf.query_all_iter("SELECT Id FROM Account", headers=SMALL_PAGES))
    server.faults.modify_per_page = server.faults.delete_per_page = 0
    changed = sf.query_all(
        f"SELECT Id, IsDeleted FROM Account WHERE SystemModstamp >= {started[:19]}Z",  # noqa: S608
        include_deleted=True,
    )["records"]
    assert 1 <= sum(r["IsDeleted"] for r in changed) <= 2
    assert 3 <= len(changed) <= 6


# --- the SOQL subset, as pure code -----------------------------------------------------------------

SCHEMA = {"Account": ["Id", "Name", "Amount__c", "SystemModstamp", "IsDeleted"]}


def rec(**values: object) -> dict[str, object]:
    return {
        "Id": "001A",
        "Name": None,
        "Amount__c": None,
        "SystemModstamp": None,
        "IsDeleted": False,
    } | values


def test_soql_precedence_in_and_null() -> None:
    q = parse("select id from ACCOUNT where Name = 'a' or Name = 'b' and Amount__c > 5", SCHEMA)
    assert q.obj == "Account"
    assert q.fields == ("Id",)
    assert q.where is not None
    test = q.where.test
    assert test(rec(Name="a"))  # AND binds tighter than OR
    assert not test(rec(Name="b", Amount__c=1.0))
    assert test(rec(Name="b", Amount__c=6.0))
    assert not test(rec(Name="b"))  # a null never compares greater
    q2 = parse("SELECT Id FROM Account WHERE Name NOT IN ('x', 'it\\'s') AND Name != null", SCHEMA)
    assert q2.where is not None
    assert q2.where.test(rec(Name="y"))
    assert not q2.where.test(rec(Name="it's"))
    assert not q2.where.test(rec(Name=None))


def test_soql_implied_bounds_and_ids() -> None:
    q = parse(
        "SELECT Id FROM Account WHERE SystemModstamp > 2026-01-01T00:00:00Z "
        "OR (SystemModstamp = 2025-12-31T23:00:00.5+01:00 AND Id > '001B')",
        SCHEMA,
    )
    assert q.where is not None
    assert q.where.lower == {"SystemModstamp": "2025-12-31T22:00:00.500+0000"}
    ids = parse("SELECT Id FROM Account WHERE Id IN ('a', 'b') AND Name = 'n'", SCHEMA).where
    assert ids is not None
    assert ids.ids == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SELECT Id FROM Contact", "INVALID_TYPE"),
        ("SELECT Id, Bogus FROM Account", "INVALID_FIELD"),
        ("SELECT Id FROM Account WHERE", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account LIMIT", "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE Name = 'x' extra", "MALFORMED_QUERY"),
    ],
)
def test_soql_errors_carry_salesforce_codes(text: str, code: str) -> None:
    with pytest.raises(SoqlError) as err:
        parse(text, SCHEMA)
    assert err.value.code == code
