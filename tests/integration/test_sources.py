"""Two sources on one database: a delete pass only ever touches its own source's rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text

from connectors.hubspot import HubSpotConnector
from connectors.hubspot.client import HubSpotClient
from connectors.sandbox.generator import generate_org
from connectors.sandbox.hubspot import COMPANY_ID_BASE, SandboxServer, start_hubspot_sandbox
from connectors.sync import DeleteGuard, run_sync
from service.settings import HubSpotSettings
from tests.helpers.records import NOW, account, owner, rows, sync, write_export

pytestmark = pytest.mark.integration

ORG = generate_org(accounts=300, reps=6, seed=8, now=NOW)
LIVE = "SELECT source, count(*) FROM accounts WHERE NOT deleted GROUP BY 1 ORDER BY 1"


@pytest.fixture
def hubspot() -> Iterator[SandboxServer]:
    with start_hubspot_sandbox(ORG, now=NOW) as server:
        yield server


def _connector(server: SandboxServer) -> HubSpotConnector:
    settings = HubSpotSettings(
        base_url=server.url, access_token=SecretStr(server.access_token), search_requests_per_second=0
    )
    return HubSpotConnector(HubSpotClient(settings), settings)


def _csv_export(folder: Path, accounts: int, *extra: dict[str, str]) -> Path:
    owners = [owner(1), owner(2)]
    return write_export(folder, owners=owners, accounts=[*(account(i) for i in range(accounts)), *extra])


def test_a_csv_full_import_deletes_only_its_own_rows(
    db: Engine, hubspot: SandboxServer, tmp_path: Path
) -> None:
    assert run_sync(db, _connector(hubspot), full=True, now=NOW).status == "succeeded"
    folder = _csv_export(tmp_path / "x", 10)
    assert sync(db, folder).status == "succeeded"
    assert rows(db, LIVE) == [("csv", 10), ("hubspot", 300)]

    # Two of CSV's ten accounts gone is 20% of its own rows: over the 10% guard, whatever HubSpot holds.
    _csv_export(folder, 8)
    refused = sync(db, folder, full=True)
    assert refused.status == "refused", refused.one_line()
    assert "refused to delete 2 of 10 live accounts" in refused.one_line()
    assert rows(db, LIVE) == [("csv", 10), ("hubspot", 300)]

    allowed = sync(db, folder, full=True, guard=DeleteGuard(allow_mass_delete=True))
    assert allowed.status == "succeeded", allowed.one_line()
    assert {o.object: o.rows_deleted for o in allowed.objects} == {
        "owners": 0,
        "accounts": 2,
        "opportunities": 0,
    }
    assert rows(db, LIVE) == [("csv", 8), ("hubspot", 300)]  # not one of HubSpot's 300 swept
    # HubSpot's owners are not in the export either, and stay active.
    assert rows(db, "SELECT source, bool_and(active) FROM owners GROUP BY 1 ORDER BY 1") == [
        ("csv", True),
        ("hubspot", True),
    ]


def test_a_record_belongs_to_the_source_that_last_wrote_it(
    db: Engine, hubspot: SandboxServer, tmp_path: Path
) -> None:
    assert run_sync(db, _connector(hubspot), full=True, now=NOW).status == "succeeded"
    shared, gone = str(COMPANY_ID_BASE + 9), str(COMPANY_ID_BASE + 10)
    # The CSV export lists one of HubSpot's companies (same id): it is CSV's from then on.
    folder = _csv_export(tmp_path / "x", 3, account(0, id=shared))
    assert sync(db, folder).status == "succeeded"
    assert rows(db, "SELECT source FROM accounts WHERE id = :i", i=shared) == [("csv",)]
    # HubSpot deletes both companies: its delete pass takes only the one that is still its own.
    hubspot.state.delete("companies", shared)
    hubspot.state.delete("companies", gone)
    second = run_sync(db, _connector(hubspot), now=datetime.now(UTC))  # the sandbox stamps with the clock
    assert second.status == "succeeded", second.one_line()
    status = "SELECT id, source, deleted FROM accounts WHERE id IN (:a, :b) ORDER BY id"
    assert rows(db, status, a=shared, b=gone) == [(shared, "csv", False), (gone, "hubspot", True)]


def test_a_crm_deletion_leaves_a_bulk_loaded_export_alone(
    db: Engine, hubspot: SandboxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The export comes first: its accounts are COPYed into the empty table (the first load's path).
    caplog.set_level("INFO", logger="connectors.bulk_load")
    folder = _csv_export(tmp_path / "x", 10)
    assert sync(db, folder).status == "succeeded"
    loaded = [r.tables for r in caplog.records if r.getMessage() == "bulk load into an empty table"]
    assert ["accounts", "assignment_history"] in loaded
    assert run_sync(db, _connector(hubspot), full=True, now=NOW).status == "succeeded"
    assert rows(db, LIVE) == [("csv", 10), ("hubspot", 300)]

    hubspot.state.delete("companies", str(COMPANY_ID_BASE + 3))
    second = run_sync(db, _connector(hubspot), now=datetime.now(UTC))
    assert second.status == "succeeded", second.one_line()
    assert rows(db, LIVE) == [("csv", 10), ("hubspot", 299)]

    # One of the export's ten gone is 10% of its own rows: within the guard, and only that one goes.
    _csv_export(folder, 9)
    reduced = sync(db, folder, full=True)
    assert reduced.status == "succeeded", reduced.one_line()
    assert rows(db, LIVE) == [("csv", 9), ("hubspot", 299)]


def test_an_older_copy_does_not_change_hands_and_a_full_sync_claims_unknown_rows(
    db: Engine, hubspot: SandboxServer, tmp_path: Path
) -> None:
    assert run_sync(db, _connector(hubspot), full=True, now=NOW).status == "succeeded"
    shared, gone = str(COMPANY_ID_BASE + 9), str(COMPANY_ID_BASE + 10)
    hubspot.state.delete("companies", gone)
    assert run_sync(db, _connector(hubspot), now=datetime.now(UTC)).status == "succeeded"
    # The export lists both with copies older than HubSpot's: skipped, so both stay HubSpot's, and the
    # one HubSpot deleted is not made live again by the export's revival either.
    old = "2001-01-01T00:00:00Z"
    folder = _csv_export(
        tmp_path / "x", 3, account(0, id=shared, modified_at=old), account(0, id=gone, modified_at=old)
    )
    imported = sync(db, folder)
    assert {o.object: o.rows_skipped for o in imported.objects}["accounts"] == 2
    status = "SELECT id, source, deleted FROM accounts WHERE id IN (:a, :b) ORDER BY id"
    assert rows(db, status, a=shared, b=gone) == [(shared, "hubspot", False), (gone, "hubspot", True)]

    # Rows of no known source (stored before sources were kept by two of them): a full sync claims them.
    with db.begin() as conn:
        conn.execute(text("UPDATE accounts SET source = NULL WHERE source = 'hubspot'"))
    claimed = run_sync(db, _connector(hubspot), full=True, now=NOW)
    assert {o.object: o.rows_upserted for o in claimed.objects}["accounts"] == 299
    assert rows(db, LIVE) == [("csv", 3), ("hubspot", 299)]


def test_the_sweeps_absent_rows_are_one_join_not_a_scan_per_row(db: Engine) -> None:
    """The sweep's count of absent rows once ran its NOT EXISTS once per stored row (a full scan of
    the export's ids each time: minutes for a 200,000-account re-import); the query that finds them,
    for the guard's count and the delete alike, has no subplan."""
    from sqlalchemy.dialects import postgresql

    from store import synced

    with db.connect() as conn, conn.begin():
        synced.stage_present(conn, [b"001A1\n001A2\n"])
        for name in synced.SYNCED:
            stmt = synced.absent_rows(name, "csv")
            sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
            plan = "\n".join(conn.execute(text(f"EXPLAIN {sql}")).scalars())
            assert "SubPlan" not in plan, plan
