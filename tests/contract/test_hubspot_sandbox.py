"""The HubSpot sandbox as the real ``hubspot.HubSpot`` client sees it: every shape parses into its models."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hubspot import HubSpot
from hubspot.crm.companies.exceptions import ApiException
from hubspot.crm.owners.exceptions import UnauthorizedException

from connectors.sandbox.generator import generate_org
from connectors.sandbox.hubspot import (
    COMPANY_ID_BASE,
    DEAL_ID_BASE,
    HubSpotFaults,
    SandboxServer,
    start_hubspot_sandbox,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)
ORG = generate_org(accounts=450, reps=9, seed=11, now=NOW)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    server = start_hubspot_sandbox(ORG, now=NOW)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(sandbox: SandboxServer) -> HubSpot:
    return HubSpot(access_token=sandbox.access_token, host=sandbox.url)


def by_modified(
    filters: list[dict[str, str]], limit: int = 100, after: str | None = None
) -> dict[str, object]:
    body: dict[str, object] = {
        "filterGroups": [{"filters": filters}] if filters else [],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["name", "hubspot_owner_id"],
        "limit": limit,
    }
    if after is not None:
        body["after"] = after
    return body


def test_owners_page_with_after_and_archived_ones_apart(sandbox: SandboxServer, client: HubSpot) -> None:
    gone = sandbox.state.owners[2].id
    sandbox.state.archive_owner(gone)
    api = client.crm.owners.owners_api
    seen: list[str] = []
    after = None
    while True:
        page = api.get_page(limit=4, after=after) if after else api.get_page(limit=4)
        seen += [o.id for o in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    archived = api.get_page(archived=True).results
    active_in_org = int(ORG.owners["active"].sum())
    assert gone not in seen
    assert len(seen) == len(set(seen)) == active_in_org - 1
    assert gone in [o.id for o in archived]
    assert all(o.archived for o in archived)
    first = api.get_page(limit=1).results[0]
    assert first.email == ORG.owners["email"][0] or not bool(ORG.owners["active"][0])
    assert first.teams[0].primary is True
    assert first.updated_at.tzinfo is not None


def test_company_list_pages_by_after_and_lists_archived_apart(
    sandbox: SandboxServer, client: HubSpot
) -> None:
    deleted = str(COMPANY_ID_BASE + 7)
    sandbox.state.delete("companies", deleted)
    api = client.crm.companies.basic_api
    ids: list[str] = []
    after = None
    while True:
        page = api.get_page(limit=100, after=after, properties=["name", "annualrevenue"])
        ids += [c.id for c in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert len(ids) == len(set(ids)) == len(ORG.accounts) - 1
    assert deleted not in ids
    assert ids == sorted(ids)
    first = api.get_page(limit=1, properties=["name", "annualrevenue"]).results[0]
    assert first.properties["name"] == ORG.accounts["name"][0]
    assert float(first.properties["annualrevenue"]) == pytest.approx(ORG.accounts["arr"][0])
    archived = api.get_page(archived=True).results
    assert [c.id for c in archived] == [deleted]
    assert archived[0].archived is True
    assert archived[0].archived_at is not None


def test_search_filters_and_sorts_ascending_with_total(client: HubSpot) -> None:
    cutoff = ORG.accounts["modified_at"].median()
    cutoff_ms = int(cutoff.timestamp() * 1000)
    api = client.crm.companies.search_api
    stamps: list[datetime] = []
    after = None
    total = None
    while True:
        page = api.do_search(by_modified([{"propertyName": "hs_lastmodifieddate", "operator": "GTE",
                                           "value": str(cutoff_ms)}], limit=50, after=after))  # fmt: skip
        total = page.total
        stamps += [datetime.fromisoformat(c.properties["hs_lastmodifieddate"]) for c in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    expected = int((ORG.accounts["modified_at"] >= cutoff).sum())
    assert total == expected == len(stamps)
    assert stamps == sorted(stamps)
    assert min(stamps) >= cutoff


def test_search_by_id_with_or_groups_and_in(client: HubSpot) -> None:
    low, high = str(COMPANY_ID_BASE + 3), str(COMPANY_ID_BASE + 400)
    body = {
        "filterGroups": [
            {"filters": [{"propertyName": "hs_object_id", "operator": "LT", "value": low}]},
            {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": [high]}]},
        ],
        "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}],
        "limit": 10,
    }
    page = client.crm.companies.search_api.do_search(body)
    assert [c.id for c in page.results] == [high, str(COMPANY_ID_BASE + 2), str(COMPANY_ID_BASE + 1),
                                            str(COMPANY_ID_BASE)]  # fmt: skip
    assert page.total == 4


def test_search_refuses_to_page_past_10000_results(client: HubSpot) -> None:
    api = client.crm.companies.search_api
    near = api.do_search(by_modified([], limit=200, after="9990"))
    assert near.results == []  # the org has fewer records; the offset itself is allowed
    with pytest.raises(ApiException) as info:
        api.do_search(by_modified([], limit=10, after="10000"))
    assert info.value.status == 400
    assert '"category":"VALIDATION_ERROR"' in info.value.body
    with pytest.raises(ApiException) as too_big:
        api.do_search(by_modified([], limit=201))
    assert too_big.value.status == 400


def test_search_cap_with_more_than_10000_records(sandbox: SandboxServer) -> None:
    org = generate_org(accounts=10_050, reps=5, seed=2, now=NOW)
    with start_hubspot_sandbox(org, now=NOW) as big:
        api = HubSpot(access_token=big.access_token, host=big.url).crm.companies.search_api
        page = api.do_search(by_modified([], limit=200, after="9900"))
        assert page.total == 10_050
        assert len(page.results) == 100  # the page stops at the 10,000th result
        assert page.paging.next.after == "10000"  # HubSpot still offers the next page, which then fails
        with pytest.raises(ApiException) as info:
            api.do_search(by_modified([], limit=200, after=page.paging.next.after))
        assert info.value.status == 400


def test_batch_read_207_names_the_missing_ids(sandbox: SandboxServer, client: HubSpot) -> None:
    present = str(COMPANY_ID_BASE + 1)
    sandbox.state.delete("companies", str(COMPANY_ID_BASE + 2))
    answer = client.crm.companies.batch_api.read(
        {"inputs": [{"id": present}, {"id": str(COMPANY_ID_BASE + 2)}, {"id": "12"}],
         "properties": ["hubspot_owner_id"]}
    )  # fmt: skip
    assert [r.id for r in answer.results] == [present]
    assert answer.num_errors == 2
    assert answer.errors[0].category == "OBJECT_NOT_FOUND"
    assert answer.errors[0].context["ids"] == [str(COMPANY_ID_BASE + 2), "12"]
    assert answer.results[0].properties["hubspot_owner_id"] == sandbox.state.companies.prop(
        1, "hubspot_owner_id"
    )


def test_batch_update_writes_some_and_reports_207_errors(sandbox: SandboxServer, client: HubSpot) -> None:
    owner = sandbox.state.owners[0].id
    ok, bad_owner, missing = str(COMPANY_ID_BASE + 5), str(COMPANY_ID_BASE + 6), str(COMPANY_ID_BASE + 99_999)
    before = sandbox.state.companies.prop(6, "hubspot_owner_id")
    answer = client.crm.companies.batch_api.update(
        {"inputs": [{"id": ok, "properties": {"hubspot_owner_id": owner}},
                    {"id": bad_owner, "properties": {"hubspot_owner_id": "424242"}},
                    {"id": missing, "properties": {"hubspot_owner_id": owner}}]}
    )  # fmt: skip
    assert [r.id for r in answer.results] == [ok]
    assert answer.results[0].properties["hubspot_owner_id"] == owner
    categories = {e.category: e.context["ids"] for e in answer.errors}
    assert categories == {"OBJECT_NOT_FOUND": [missing], "VALIDATION_ERROR": [bad_owner]}
    assert sandbox.state.companies.prop(5, "hubspot_owner_id") == owner
    assert sandbox.state.companies.prop(6, "hubspot_owner_id") == before


def test_deal_associations_list_and_v4_batch_read(sandbox: SandboxServer, client: HubSpot) -> None:
    deal = client.crm.deals.basic_api.get_page(limit=1, associations=["companies"]).results[0]
    expected_company = ORG.accounts.index[ORG.accounts["id"] == ORG.opportunities["account_id"][0]][0]
    assert deal.id == str(DEAL_ID_BASE)
    assert deal.associations["companies"].results[0].id == str(COMPANY_ID_BASE + expected_company)
    sandbox.state.dissociate(str(DEAL_ID_BASE + 1))
    answer = client.crm.associations.v4.batch_api.get_page(
        "deals", "companies", {"inputs": [{"id": str(DEAL_ID_BASE)}, {"id": str(DEAL_ID_BASE + 1)}]}
    )
    assert [r._from.id for r in answer.results] == [str(DEAL_ID_BASE)]
    to = answer.results[0].to[0]
    assert str(to.to_object_id) == str(COMPANY_ID_BASE + expected_company)
    assert {t.label for t in to.association_types} == {"Primary", None}
    assert answer.errors[0].context["ids"] == [str(DEAL_ID_BASE + 1)]


def test_wrong_token_gets_the_401_body(sandbox: SandboxServer) -> None:
    bad = HubSpot(access_token="pat-na1-wrong", host=sandbox.url)
    with pytest.raises(UnauthorizedException) as info:
        bad.crm.owners.owners_api.get_page()
    assert info.value.status == 401
    assert '"category":"INVALID_AUTHENTICATION"' in info.value.body


def test_429_body_retry_after_and_rate_limit_headers() -> None:
    faults = HubSpotFaults(rate_limit_share=1.0, retry_after_seconds=0.25)
    with start_hubspot_sandbox(ORG, now=NOW, faults=faults) as limited:
        api = HubSpot(access_token=limited.access_token, host=limited.url).crm.companies.search_api
        with pytest.raises(ApiException) as info:
            api.do_search(by_modified([]))
    exc = info.value
    assert exc.status == 429
    assert exc.headers["Retry-After"] == "0.25"
    assert '"policyName":"SECONDLY"' in exc.body
    assert '"errorType":"RATE_LIMIT"' in exc.body
    assert int(exc.headers["X-HubSpot-RateLimit-Max"]) == 190
    assert int(exc.headers["X-HubSpot-RateLimit-Daily-Remaining"]) < int(
        exc.headers["X-HubSpot-RateLimit-Daily"]
    )
    assert limited.counters.faults == {429: 1}


def test_server_errors_are_drawn_from_the_configured_statuses() -> None:
    faults = HubSpotFaults(server_error_share=1.0, server_error_statuses=(502, 503), seed=4)
    with start_hubspot_sandbox(ORG, now=NOW, faults=faults) as failing:
        api = HubSpot(access_token=failing.access_token, host=failing.url).crm.owners.owners_api
        statuses = set()
        for _ in range(12):
            with pytest.raises(Exception) as info:  # noqa: PT011 - ServiceException of the owners module
                api.get_page()
            statuses.add(info.value.status)  # type: ignore[attr-defined]
    assert statuses == {502, 503}


def test_a_malformed_request_gets_a_400_not_a_dropped_connection(client: HubSpot) -> None:
    with pytest.raises(ApiException) as info:
        client.crm.companies.search_api.do_search({"limit": "many"})
    assert info.value.status == 400
    assert '"category":"VALIDATION_ERROR"' in info.value.body
    assert client.crm.companies.search_api.do_search({"limit": 1}).total == len(ORG.accounts)
