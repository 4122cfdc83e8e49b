"""The empty-table bulk load: the same rows, quarantine and history as batch by batch; a crash undoes it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from connectors.base import Batch, CrmObject, Cursor, OwnerChange, WriteResult
from connectors.csv_files import CsvConnector
from connectors.errors import RetriableError
from connectors.sandbox.generator import generate_org, write_csv
from connectors.sync import run_sync
from store.db import truncate_all
from tests.helpers.records import NOW, ScriptedConnector, account, opportunity, owner, rows
from tests.helpers.records import scripted_batch as _batch

pytestmark = pytest.mark.integration

_SCHEMA_SQL = (
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid::regclass::text IN ('accounts', 'opportunities', 'assignment_history', 'proposal_moves') "
    "UNION ALL SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE tablename IN ('accounts', 'opportunities', 'assignment_history') ORDER BY 1, 2, 3"
)


def _stored(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a sync writes, without the columns that depend on the clock or on sequences."""
    return {
        "owners": rows(
            db, "SELECT id, name, email, active, capacity, modified_at, source FROM owners ORDER BY id"
        ),
        "accounts": rows(
            db, "SELECT id, name, owner_id, tier, arr, modified_at, deleted, source FROM accounts ORDER BY id"
        ),
        "opportunities": rows(
            db,
            "SELECT id, account_id, owner_id, amount, probability, close_date, is_won, modified_at, "
            "deleted, source FROM opportunities ORDER BY id",
        ),
        "history": rows(
            db,
            "SELECT account_id, owner_id, start_date, end_date, source FROM assignment_history "
            "ORDER BY account_id, start_date, end_date NULLS LAST",
        ),
        "quarantine": rows(
            db,
            "SELECT object, record_id, reason, raw, resolved_at IS NULL FROM quarantine "
            "ORDER BY object, record_id, reason",
        ),
        "state": rows(db, "SELECT object, watermark FROM sync_state ORDER BY object"),
        "runs": rows(
            db,
            "SELECT object, status, rows_read, rows_upserted, rows_deleted, rows_quarantined "
            "FROM sync_runs ORDER BY id",
        ),
    }


def _both_ways(db: Engine, make: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``make()``'s connector batch by batch, then into the emptied store by bulk load."""
    normal = run_sync(db, make(), full=True, now=NOW, bulk_load=False)
    before = _stored(db)
    with db.begin() as conn:
        truncate_all(conn)
    bulk = run_sync(db, make(), full=True, now=NOW, bulk_load=True)
    assert normal.status == bulk.status == "succeeded"
    assert [o.rows_skipped for o in normal.objects] == [o.rows_skipped for o in bulk.objects]
    return before, _stored(db)


def _scripted() -> ScriptedConnector:
    at = "2026-10-03T00:00:00+00:00"
    return ScriptedConnector(
        {
            CrmObject.owners: [_batch(owner(1), owner(2), at=at)],
            CrmObject.accounts: [
                _batch(
                    account(1),
                    account(2, owner_id="005O2"),
                    account(3, owner_id="005NOBODY"),
                    account(4, owner_id=""),
                    # The first assignment's day: today without a modified_at, else its UTC date.
                    account(7, modified_at=""),
                    account(8, modified_at="2026-10-01T23:30:00-05:00"),
                    account(5, tier="enterprise"),
                    at=at,
                ),
                # Account 2 again, newer and moved to owner 1 (history closes and reopens); 6 is deleted.
                _batch(
                    account(2, modified_at="2026-10-02T00:00:00Z"),
                    account(6),
                    at=at,
                    deleted=["001A6"],
                ),
                # An older copy of account 1 in a later batch: skipped, never overwrites.
                _batch(account(1, arr="5.00", modified_at="2026-09-01T00:00:00Z"), at=at),
            ],
            CrmObject.opportunities: [
                _batch(
                    opportunity(1),
                    opportunity(2, account_id="001NOWHERE"),
                    opportunity(3, owner_id="005NOBODY", account_id="001NOWHERE"),
                    opportunity(4, amount="-1"),
                    at=at,
                ),
                _batch(opportunity(1, amount="750.00", modified_at="2026-10-02T00:00:00Z"), at=at),
            ],
        }
    )


def test_bulk_load_stores_what_the_batch_path_stores(db: Engine) -> None:
    normal, bulk = _both_ways(db, _scripted)
    assert bulk == normal
    # The COPYed rows and the deferred copies (account 2 again) keep their source, as upserted ones do.
    assert {r[-1] for t in ("owners", "accounts", "opportunities") for r in bulk[t]} == {"scripted"}
    history = [(a, o, str(s), str(e), src) for a, o, s, e, src in bulk["history"]]
    assert ("001A2", "005O2", "2026-10-01", "2026-10-02", "sync") in history
    assert ("001A7", "005O1", str(NOW.date()), "None", "sync") in history
    assert ("001A8", "005O1", "2026-10-02", "None", "sync") in history
    assert [r[:3] for r in bulk["quarantine"]] == [
        ("accounts", "001A3", "unknown owner: 005NOBODY"),
        ("accounts", "001A5", "tier outside strategic|growth|core: enterprise"),
        ("opportunities", "006P2", "unknown account: 001NOWHERE"),
        ("opportunities", "006P3", "unknown owner: 005NOBODY"),
        ("opportunities", "006P4", "negative amount"),
    ]


def test_bulk_load_of_a_generated_export_matches_the_batch_path(db: Engine, tmp_path: Path) -> None:
    org = generate_org(accounts=400, reps=8, seed=11, now=NOW)
    write_csv(org, tmp_path)
    normal, bulk = _both_ways(db, lambda: CsvConnector(tmp_path, chunk_rows=150))
    assert bulk == normal
    assert len(bulk["accounts"]) == len(org.accounts)
    assert len(bulk["history"]) >= len(org.accounts) - 1


def test_bulk_load_puts_back_every_index_and_foreign_key(db: Engine) -> None:
    schema = rows(db, _SCHEMA_SQL)
    assert any("FOREIGN KEY (account_id)" in d for _, _, d in schema)
    run_sync(db, _scripted(), full=True, now=NOW)
    assert rows(db, _SCHEMA_SQL) == schema


class _Crash(Exception):
    """Not a connector error: the process dies (as with SIGKILL, the transaction is not committed)."""


def test_a_crash_during_the_bulk_load_leaves_the_previous_state(db: Engine) -> None:
    schema = rows(db, _SCHEMA_SQL)
    at = "2026-10-03T00:00:00+00:00"
    connector = ScriptedConnector(
        {
            CrmObject.owners: [_batch(owner(1), at=at)],
            CrmObject.accounts: [_batch(account(1), account(2), at=at), _batch(account(3), at=at), _Crash()],
        }
    )
    with pytest.raises(_Crash):
        run_sync(db, connector, full=True, now=NOW)
    assert rows(db, "SELECT count(*) FROM accounts") == [(0,)]
    assert rows(db, "SELECT count(*) FROM assignment_history") == [(0,)]
    assert rows(db, "SELECT object FROM sync_state WHERE watermark IS NOT NULL") == [("owners",)]
    assert rows(db, "SELECT object, status, rows_read FROM sync_runs ORDER BY id") == [
        ("owners", "succeeded", 1),
        ("accounts", "failed", 0),
    ]
    assert rows(db, _SCHEMA_SQL) == schema


def test_a_connector_error_during_the_bulk_load_keeps_what_was_read(db: Engine) -> None:
    schema = rows(db, _SCHEMA_SQL)
    at = "2026-10-03T00:00:00+00:00"
    connector = ScriptedConnector(
        {
            CrmObject.owners: [_batch(owner(1), at=at)],
            CrmObject.accounts: [
                _batch(account(1), account(2), at=at),
                # A newer copy of account 1 waits for the primary key; it is applied before the commit.
                _batch(account(1, arr="7.00", modified_at="2026-10-02T00:00:00Z"), at=at),
                RetriableError("503"),
            ],
        }
    )
    summary = run_sync(db, connector, full=True, now=NOW)
    assert summary.status == "failed"
    assert rows(db, "SELECT id, arr FROM accounts ORDER BY id") == [("001A1", 7), ("001A2", 1000)]
    assert (summary.objects[1].rows_read, summary.objects[1].rows_upserted) == (3, 3)
    assert rows(db, "SELECT account_id FROM assignment_history ORDER BY 1") == [("001A1",), ("001A2",)]
    assert rows(db, "SELECT watermark->>'last_id' FROM sync_state WHERE object = 'accounts'") == [("001A2",)]
    assert rows(db, _SCHEMA_SQL) == schema


def test_a_table_with_rows_takes_the_batch_path(db: Engine, caplog: pytest.LogCaptureFixture) -> None:
    at = "2026-10-03T00:00:00+00:00"
    run_sync(db, _scripted(), full=True, now=NOW)
    caplog.set_level("INFO", logger="connectors.bulk_load")
    caplog.clear()  # only the second sync's records count (the first one's depend on the root level)
    again = ScriptedConnector(
        {CrmObject.accounts: [_batch(account(1, arr="2.00", modified_at="2026-10-04T00:00:00Z"), at=at)]}
    )
    summary = run_sync(db, again, objects=[CrmObject.accounts], full=True, now=NOW)
    assert summary.objects[0].rows_upserted == 1
    assert not [r for r in caplog.records if r.getMessage() == "bulk load into an empty table"]
    assert rows(db, "SELECT arr FROM accounts WHERE id = '001A1'")[0][0] == 2


_REFUSED = "the database refused a row of the bulk load; reading the object again batch by batch"


@pytest.mark.parametrize(
    ("refused", "logged"),
    [
        # A new row: the direct COPY fails, the load rolls back and the object is read batch by batch.
        (account(2, name="forbidden"), [_REFUSED]),
        # A newer copy of a loaded row: it waits for the key and the upsert refuses it alone.
        (account(1, name="forbidden", modified_at="2026-10-02T00:00:00Z"), []),
    ],
    ids=["new row", "deferred copy"],
)
def test_a_row_the_database_refuses_during_a_bulk_load_is_quarantined_alone(
    db: Engine, caplog: pytest.LogCaptureFixture, refused: dict[str, Any], logged: list[str]
) -> None:
    """A row breaks a constraint the checks do not know; both paths end the same, with that row alone
    quarantined (and the stored copy of its id kept, when it had one)."""
    with db.begin() as conn:
        conn.execute(
            text("ALTER TABLE accounts ADD CONSTRAINT ck_test_no_forbidden CHECK (name <> 'forbidden')")
        )
    try:
        at = "2026-10-03T00:00:00+00:00"

        def make() -> ScriptedConnector:
            return ScriptedConnector(
                {
                    CrmObject.owners: [_batch(owner(1), at=at)],
                    CrmObject.accounts: [
                        _batch(account(1), account(3), at=at),
                        _batch(account(4), refused, at=at),
                    ],
                }
            )

        caplog.set_level("WARNING", logger="connectors.bulk_load")
        normal, bulk = _both_ways(db, make)
        assert bulk == normal
        assert [r.getMessage() for r in caplog.records if r.name == "connectors.bulk_load"] == logged
        assert [a[:2] for a in bulk["accounts"]] == [
            ("001A1", "Account 1"),
            ("001A3", "Account 3"),
            ("001A4", "Account 4"),
        ]
        ((_, record_id, reason, raw, still_open),) = bulk["quarantine"]
        assert (record_id, still_open) == (refused["id"], True)
        assert raw["name"] == "forbidden"
        assert reason.startswith("constraint:")
        assert "ck_test_no_forbidden" in reason
    finally:
        with db.begin() as conn:
            conn.execute(text("ALTER TABLE accounts DROP CONSTRAINT ck_test_no_forbidden"))


def test_a_bulk_load_resolves_the_quarantine_of_the_records_it_stores(
    db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A first sync quarantines every account (its owner is unknown), so the table stays empty; the
    next one, with the owner, is a bulk load again and closes those quarantine rows."""
    at = "2026-10-03T00:00:00+00:00"
    accounts: list[Batch | Exception] = [_batch(account(1), account(2), at=at)]
    run_sync(db, ScriptedConnector({CrmObject.accounts: accounts}), full=True, now=NOW)
    assert rows(db, "SELECT record_id, resolved_at IS NULL FROM quarantine ORDER BY 1") == [
        ("001A1", True),
        ("001A2", True),
    ]
    caplog.set_level("INFO", logger="connectors.bulk_load")
    caplog.clear()
    fixed = ScriptedConnector({CrmObject.owners: [_batch(owner(1), at=at)], CrmObject.accounts: accounts})
    summary = run_sync(db, fixed, full=True, now=NOW)
    assert [r for r in caplog.records if r.getMessage() == "bulk load into an empty table"]
    assert summary.objects[1].rows_upserted == 2
    assert rows(db, "SELECT record_id, resolved_at IS NULL FROM quarantine ORDER BY 1") == [
        ("001A1", False),
        ("001A2", False),
    ]


def test_a_record_quarantined_and_fixed_within_one_bulk_load_is_resolved(db: Engine) -> None:
    """Account 1 arrives with an unknown owner, then fixed in a later batch of the same load."""
    at = "2026-10-03T00:00:00+00:00"

    def make() -> ScriptedConnector:
        return ScriptedConnector(
            {
                CrmObject.owners: [_batch(owner(1), at=at)],
                CrmObject.accounts: [
                    _batch(account(1, owner_id="005NOBODY"), account(2), at=at),
                    _batch(account(1, modified_at="2026-10-02T00:00:00Z"), at=at),
                ],
            }
        )

    normal, bulk = _both_ways(db, make)
    assert bulk == normal
    assert [(r[1], r[4]) for r in bulk["quarantine"]] == [("001A1", False)]
    assert [a[:3] for a in bulk["accounts"]] == [
        ("001A1", "Account 1", "005O1"),
        ("001A2", "Account 2", "005O1"),
    ]


class _ReadOnly:
    """A CSV export seen as a CRM that carries no history (the accounts' first assignments are then
    written by the load itself) and is no snapshot."""

    source = "csv"

    def __init__(self, inner: CsvConnector) -> None:
        self.inner = inner

    def read(
        self, obj: CrmObject, since: Cursor | None, *, full: bool = False, batch_rows: int | None = None
    ) -> Iterator[Batch]:
        return self.inner.read(obj, since, full=full, batch_rows=batch_rows)

    def apply_owner_changes(self, changes: Sequence[OwnerChange]) -> list[WriteResult]:
        return []


def test_a_bulk_load_writes_its_rows_frozen(db: Engine, tmp_path: Path) -> None:
    """COPY FREEZE into the truncated tables: every page is all-visible and all-frozen at commit, so
    neither the index rebuilds nor the first readers nor autovacuum rewrite them."""
    with db.begin() as conn:
        available = conn.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_visibility'")
        ).scalar_one()
        if not available:
            pytest.skip("the server lacks the pg_visibility extension (PostgreSQL contrib)")
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_visibility"))
    write_csv(generate_org(accounts=2_000, reps=10, seed=5, now=NOW), tmp_path)
    summary = run_sync(db, _ReadOnly(CsvConnector(tmp_path, chunk_rows=500)), full=True, now=NOW)
    assert summary.status == "succeeded"
    for table in ("accounts", "opportunities", "assignment_history"):
        pages, visible, frozen = rows(
            db,
            "SELECT pg_relation_size(CAST(:t AS regclass)) / current_setting('block_size')::int, "
            "all_visible, all_frozen FROM pg_visibility_map_summary(CAST(:t AS regclass))",
            t=table,
        )[0]
        assert pages > 1
        assert (visible, frozen) == (pages, pages), table
