"""The connector conformance suite: what every CRM connector does alike, run against each sandbox.

Retry-After is honoured, server errors are retried and then surface as retriable, churn while paging
is caught by the next run, the quota guard stops before the share, a refused credential is a
configuration error naming its variable, and write-back never overwrites an owner changed in the CRM.
Each CRM's quirks are tested beside it (test_salesforce_connector.py, test_hubspot_connector.py).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Batch, Connector, CrmObject, Cursor, OwnerChange, WriteOutcome
from connectors.errors import ConnectorConfigError, QuotaExhausted, RetriableError
from tests.contract.conformance import HARNESSES, ORG, Crm, RecordedSleep

T0 = dt.datetime(2026, 11, 2, 12, 0, 0, tzinfo=dt.UTC)
SINCE = Cursor(dt.datetime(2000, 1, 1, tzinfo=dt.UTC), "")


@pytest.fixture(params=sorted(HARNESSES))
def crm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Crm]:
    with HARNESSES[request.param](tmp_path) as harness:
        yield harness


def read(conn: Connector, obj: CrmObject, since: Cursor | None = None) -> list[Batch]:
    return list(conn.read(obj, since, full=since is None))


def ids(batches: list[Batch]) -> list[str]:
    return [str(r["id"]) for b in batches for r in b.records]


def test_retry_after_is_honoured_and_the_read_completes(crm: Crm) -> None:
    accounts = sorted(crm.account_ids())
    crm.throttle(retry_after=0.05)
    sleep = RecordedSleep()
    batches = read(crm.connector(sleep=sleep, max_attempts=6), CrmObject.accounts)
    assert sorted(ids(batches)) == accounts
    throttled = crm.throttled()
    assert throttled >= 1
    assert len(sleep.seconds) == throttled
    assert all(0.05 <= w <= 0.05 * 1.1 + 0.01 for w in sleep.seconds)  # Retry-After plus a little jitter


def test_retry_after_is_really_waited(crm: Crm) -> None:
    crm.throttle(retry_after=0.2)
    started = time.perf_counter()
    batches = read(crm.connector(sleep=time.sleep, max_attempts=6), CrmObject.accounts)
    elapsed = time.perf_counter() - started
    assert len(set(ids(batches))) == len(ORG.accounts)
    assert crm.throttled() >= 1
    assert elapsed >= 0.2 * crm.throttled()


def test_server_errors_are_retried_then_surface_as_retriable(crm: Crm) -> None:
    sleep = RecordedSleep()
    conn = crm.connector(sleep=sleep, max_attempts=3)
    read(conn, CrmObject.owners)  # logged in and paced: what follows counts only the failing call
    sleep.seconds.clear()
    crm.fail(share=1.0)
    before = crm.api_calls()
    with pytest.raises(RetriableError, match=crm.server_error):
        read(conn, CrmObject.accounts, SINCE)
    assert crm.api_calls() - before == 3  # the attempts, no more
    assert len(sleep.seconds) == 2
    # Full jitter: each wait lies between 0 and the capped exponential of its attempt.
    assert all(0 <= w <= 0.5 * 2**n for n, w in enumerate(sleep.seconds))


def test_some_server_errors_are_retried_and_the_read_completes(crm: Crm) -> None:
    crm.fail(share=0.3)
    sleep = RecordedSleep()
    conn = crm.connector(sleep=sleep, max_attempts=8)
    rows = [ids(read(conn, obj)) for obj in (CrmObject.owners, CrmObject.accounts, CrmObject.opportunities)]
    counts = [len(ORG.owners), len(ORG.accounts), len(ORG.opportunities)]
    assert [len(set(r)) for r in rows] == [len(r) for r in rows] == counts
    assert len(sleep.seconds) >= 1


def test_churn_while_paging_is_caught_by_the_next_run(crm: Crm) -> None:
    conn = crm.connector()
    store: dict[str, str] = {}

    def apply(batches: list[Batch]) -> Cursor | None:
        last = None
        for batch in batches:
            for rec in batch.records:
                store[str(rec["id"])] = str(rec["name"])
            for gone in batch.deleted_ids:
                store.pop(gone, None)
            last = batch.cursor or last
        return last

    crm.churn(modify=3, delete=1)
    cursor = apply(read(conn, CrmObject.accounts))
    crm.calm()
    assert cursor is not None
    # The next run starts at the watermark's timestamp (the engine subtracts its lookback as well).
    apply(read(conn, CrmObject.accounts, Cursor(cursor.modified_at, "")))
    live = crm.live_accounts()
    assert len(live) < len(ORG.accounts)  # the churn deleted some
    assert store == live  # every rename and delete made while paging was caught


def test_quota_stops_before_the_call_that_would_pass_the_share(crm: Crm) -> None:
    crm.set_usage(used=79, limit=100)
    conn = crm.connector(quota_share=0.8, page_size=100)
    batches: list[Batch] = []
    with pytest.raises(QuotaExhausted, match=r"80 of 100 calls.*\(80%\)"):
        batches.extend(conn.read(CrmObject.accounts, SINCE))
    assert crm.api_calls() == 80  # the call that would have passed 80% was never sent
    assert batches
    assert batches[-1].cursor is not None  # what was read keeps its cursor: the next run resumes


def test_a_refused_credential_is_a_configuration_error_naming_its_variable(crm: Crm) -> None:
    sleep = RecordedSleep()
    conn = crm.connector(sleep=sleep, refused_credential=True)
    with pytest.raises(ConnectorConfigError, match=crm.secret_env):
        read(conn, CrmObject.accounts)
    assert sleep.seconds == []  # not retried


def test_write_back_writes_and_never_overwrites_an_owner_changed_in_the_crm(crm: Crm) -> None:
    accounts, owners = crm.account_ids(), crm.owner_ids()

    def move(account: str) -> OwnerChange:
        current = crm.owner_of(account)
        return OwnerChange(account, current, next(o for o in owners if o != current), T0)

    ok, raced = move(accounts[40]), move(accounts[41])
    someone_else = next(o for o in owners if o not in (raced.expected_owner_id, raced.to_owner_id))
    crm.set_owner(raced.account_id, someone_else)  # changed in the CRM since the proposal
    conn = crm.connector()
    results = conn.apply_owner_changes([ok, raced])
    assert [r.account_id for r in results] == [ok.account_id, raced.account_id]
    assert [r.outcome for r in results] == [WriteOutcome.written, WriteOutcome.conflict]
    assert crm.owner_of(ok.account_id) == ok.to_owner_id
    assert crm.owner_of(raced.account_id) == someone_else  # not overwritten
    assert someone_else in {str(v) for v in results[1].detail.values()}  # the conflict says who owns it
    again = conn.apply_owner_changes([ok])  # a re-run after a crash writes nothing twice
    detail: dict[str, Any] = dict(again[0].detail)
    assert again[0].outcome is WriteOutcome.written
    assert detail.get("already") is True
