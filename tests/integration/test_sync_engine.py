"""The sync engine on real PostgreSQL: quarantine of every bad-record kind, cursors, ties, history, errors."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from connectors.base import Batch, CrmObject, Cursor
from connectors.csv_files import CsvConnector
from connectors.errors import QuotaExhausted, RetriableError
from connectors.roster import apply_roster, load_roster
from connectors.sync import SyncBusyError, run_sync
from tests.helpers.records import (
    NOW,
    ScriptedConnector,
    account,
    assert_balanced,
    opportunity,
    owner,
    rows,
    sync,
    write_export,
)
from tests.helpers.records import scripted_batch as _batch

pytestmark = pytest.mark.integration

BASE_OWNERS = [owner(1), owner(2)]
BASE_ACCOUNTS = [account(1)]


@pytest.mark.parametrize(
    ("obj", "bad", "reason"),
    [
        ("accounts", account(7, id=""), "missing id"),
        ("accounts", account(7, name=""), "missing name"),
        ("accounts", account(7, owner_id="005NOBODY"), "unknown owner: 005NOBODY"),
        ("opportunities", opportunity(7, account_id="001NOWHERE"), "unknown account: 001NOWHERE"),
        ("opportunities", opportunity(7, amount="-5"), "negative amount"),
        ("accounts", account(7, arr="12,000"), "unparseable arr: 12,000"),
        ("opportunities", opportunity(7, close_date="2026-02-30"), "unparseable close_date: 2026-02-30"),
        ("accounts", account(7, modified_at="last tuesday"), "unparseable modified_at: last tuesday"),
        ("accounts", account(7, protected="yes"), "unparseable protected: yes"),
        ("opportunities", opportunity(7, probability="1.2"), "probability outside 0..1"),
        ("accounts", account(7, tier="enterprise"), "tier outside strategic|growth|core: enterprise"),
        ("accounts", account(7, lat="91"), "lat outside -90..90"),
        ("opportunities", opportunity(7, is_won="true", is_closed="false"), "is_won without is_closed"),
        ("owners", owner(7, capacity="0"), "capacity must be positive"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v and len(v) < 20 else None,
)
def test_each_bad_record_kind_is_quarantined_and_the_rest_goes_on(
    db: Engine, tmp_path: Path, obj: str, bad: dict[str, Any], reason: str
) -> None:
    export: dict[str, list[dict[str, Any]]] = {
        "owners": [*BASE_OWNERS],
        "accounts": [*BASE_ACCOUNTS, account(2)],
        "opportunities": [opportunity(1), opportunity(2)],
    }
    export[obj].insert(1, bad)
    folder = write_export(tmp_path / "x", **export)
    summary = sync(db, folder)
    assert summary.status == "succeeded"
    assert_balanced(summary)
    counts = {o.object: o.rows_quarantined for o in summary.objects}
    assert counts == {o.value: int(o.value == obj) for o in CrmObject}
    stored = rows(db, "SELECT object, record_id, reason, raw FROM quarantine")
    assert len(stored) == 1
    q_obj, record_id, q_reason, raw = stored[0]
    assert (q_obj, q_reason) == (obj, reason)
    assert record_id == (bad["id"] or None)
    # The raw record is the CSV row as it was, every column included.
    assert raw["id"] == bad["id"]
    assert raw["name"] == bad.get("name", "")
    # The good rows around it are stored.
    assert rows(db, "SELECT count(*) FROM accounts") == [(2,)]
    assert rows(db, "SELECT count(*) FROM opportunities") == [(2,)]


def test_the_same_bad_records_again_refresh_their_quarantine_rows(db: Engine, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "x",
        owners=BASE_OWNERS,
        accounts=[account(1), account(2, arr="n/a"), account(3, id=""), account(4, owner_id="005NOBODY")],
    )
    sync(db, folder)
    before = rows(db, "SELECT id, record_id, reason, last_seen_at FROM quarantine ORDER BY id")
    assert [(r[1], r[2]) for r in before] == [
        ("001A2", "unparseable arr: n/a"),
        (None, "missing id"),
        ("001A4", "unknown owner: 005NOBODY"),
    ]
    again = sync(db, folder, full=True)
    assert again.total("rows_quarantined") == 3
    after = rows(db, "SELECT id, record_id, reason, last_seen_at FROM quarantine ORDER BY id")
    assert [r[:3] for r in after] == [r[:3] for r in before]  # the same rows, no duplicate
    assert all(a[3] > b[3] for a, b in zip(after, before, strict=True))  # seen again


def test_a_row_breaking_a_database_constraint_is_quarantined_alone(db: Engine, tmp_path: Path) -> None:
    with db.begin() as conn:
        conn.execute(
            text("ALTER TABLE accounts ADD CONSTRAINT ck_test_no_forbidden CHECK (name <> 'forbidden')")
        )
    try:
        folder = write_export(
            tmp_path / "x",
            owners=BASE_OWNERS,
            accounts=[account(1), account(2, name="forbidden"), account(3)],
        )
        summary = sync(db, folder)
        assert_balanced(summary)
        assert rows(db, "SELECT id FROM accounts ORDER BY id") == [("001A1",), ("001A3",)]
        ((record_id, reason),) = rows(db, "SELECT record_id, reason FROM quarantine")
        assert record_id == "001A2"
        assert reason.startswith("constraint:")
        assert "ck_test_no_forbidden" in reason
    finally:
        with db.begin() as conn:
            conn.execute(text("ALTER TABLE accounts DROP CONSTRAINT ck_test_no_forbidden"))


def test_a_fixed_record_resolves_its_quarantine_row(db: Engine, tmp_path: Path) -> None:
    folder = write_export(tmp_path / "x", owners=BASE_OWNERS, accounts=[account(1, arr="lots")])
    sync(db, folder)
    write_export(folder, owners=BASE_OWNERS, accounts=[account(1, arr="7")])
    sync(db, folder)
    assert rows(db, "SELECT resolved_at IS NOT NULL FROM quarantine") == [(True,)]
    assert rows(db, "SELECT arr FROM accounts") == [(7,)]


def test_records_at_the_watermark_instant_and_inside_the_lookback_are_not_lost(
    db: Engine, tmp_path: Path
) -> None:
    t = "2026-10-05T12:00:00Z"
    folder = write_export(tmp_path / "x", owners=BASE_OWNERS, accounts=[account(1, modified_at=t)])
    sync(db, folder)
    write_export(
        folder,
        owners=BASE_OWNERS,
        accounts=[
            account(1, modified_at=t),
            account(2, modified_at=t),  # same instant as the watermark, committed late
            account(3, modified_at="2026-10-05T11:58:00Z"),  # inside the 300 s lookback
            account(4, modified_at="2026-10-05T10:00:00Z"),  # far behind: only a full sync finds it
        ],
    )
    summary = sync(db, folder)
    assert_balanced(summary)
    assert rows(db, "SELECT id FROM accounts ORDER BY id") == [("001A1",), ("001A2",), ("001A3",)]
    sync(db, folder, full=True)
    assert rows(db, "SELECT count(*) FROM accounts") == [(4,)]


def test_an_older_copy_never_overwrites_a_newer_one(db: Engine, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "x",
        owners=BASE_OWNERS,
        accounts=[account(1, arr="200", modified_at="2026-10-09T00:00:00Z")],
    )
    sync(db, folder)
    write_export(
        folder, owners=BASE_OWNERS, accounts=[account(1, arr="100", modified_at="2026-10-08T00:00:00Z")]
    )
    summary = sync(db, folder, full=True)
    accounts = next(o for o in summary.objects if o.object == "accounts")
    assert (accounts.rows_read, accounts.rows_upserted, accounts.rows_skipped) == (1, 0, 1)
    assert rows(db, "SELECT arr FROM accounts") == [(200,)]


def test_duplicates_inside_a_batch_keep_the_newest(db: Engine, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "x",
        owners=BASE_OWNERS,
        accounts=[
            account(1, arr="3", modified_at="2026-10-03T00:00:00Z"),
            account(1, arr="1", modified_at="2026-10-01T00:00:00Z"),
        ],
    )
    summary = sync(db, folder)
    accounts = next(o for o in summary.objects if o.object == "accounts")
    assert (accounts.rows_read, accounts.rows_upserted, accounts.rows_skipped) == (2, 1, 1)
    assert rows(db, "SELECT arr FROM accounts") == [(3,)]


def test_owner_changes_append_to_the_assignment_history(db: Engine, tmp_path: Path) -> None:
    folder = write_export(tmp_path / "x", owners=BASE_OWNERS, accounts=[account(1), account(2)])
    sync(db, folder)
    write_export(
        folder,
        owners=BASE_OWNERS,
        accounts=[account(1, owner_id="005O2", modified_at="2026-10-20T08:00:00Z"), account(2)],
    )
    sync(db, folder)
    history = rows(
        db,
        "SELECT account_id, owner_id, start_date, end_date, source FROM assignment_history "
        "ORDER BY account_id, start_date",
    )
    assert history == [
        ("001A1", "005O1", dt.date(2026, 10, 1), dt.date(2026, 10, 20), "sync"),
        ("001A1", "005O2", dt.date(2026, 10, 20), None, "sync"),
        ("001A2", "005O1", dt.date(2026, 10, 1), None, "sync"),
    ]
    sync(db, folder, full=True)  # the same state again appends nothing
    assert len(rows(db, "SELECT 1 FROM assignment_history")) == 3


def test_a_retriable_error_fails_the_object_keeps_its_batches_and_the_next_run_resumes(db: Engine) -> None:
    first = _batch(owner(1, modified_at="2026-10-01T00:00:00Z"), at="2026-10-01T00:00:00+00:00")
    second = _batch(owner(2, modified_at="2026-10-02T00:00:00Z"), at="2026-10-02T00:00:00+00:00")
    connector = ScriptedConnector({CrmObject.owners: [first, second, RetriableError("503 after 5 tries")]})
    summary = run_sync(db, connector, now=NOW)
    assert summary.status == "failed"
    assert [o.object for o in summary.objects] == ["owners"]  # children wait for their parents
    assert summary.objects[0].error == "RetriableError: 503 after 5 tries"
    assert rows(db, "SELECT id FROM owners ORDER BY id") == [("005O1",), ("005O2",)]
    assert rows(db, "SELECT status, rows_read, error FROM sync_runs") == [
        ("failed", 2, "RetriableError: 503 after 5 tries")
    ]
    (state,) = rows(db, "SELECT watermark, last_status FROM sync_state WHERE object = 'owners'")
    assert state == ({"modified_at": "2026-10-02T00:00:00+00:00", "last_id": "005O2"}, "failed")
    connector.script[CrmObject.owners] = []
    again = run_sync(db, connector, now=NOW, lookback=dt.timedelta(seconds=60))
    assert again.status == "succeeded"
    resumed = connector.calls[-3]
    assert resumed == (CrmObject.owners, Cursor(dt.datetime(2026, 10, 1, 23, 59, tzinfo=dt.UTC), ""), False)


def test_quota_exhausted_stops_cleanly_with_the_watermark_saved(db: Engine) -> None:
    batch = _batch(owner(1, modified_at="2026-10-01T00:00:00Z"), at="2026-10-01T00:00:00+00:00")
    connector = ScriptedConnector(
        {CrmObject.owners: [batch, QuotaExhausted("80% of the daily API quota used")]}
    )
    summary = run_sync(db, connector, now=NOW)
    assert summary.status == "stopped"
    assert "quota" in summary.one_line()
    assert rows(db, "SELECT status FROM sync_runs") == [("stopped",)]
    assert rows(db, "SELECT watermark->>'last_id' FROM sync_state") == [("005O1",)]


def test_deleted_ids_from_the_crm_soft_delete(db: Engine) -> None:
    owners = _batch(owner(1), owner(2), at="2026-10-01T00:00:00+00:00")
    accounts = _batch(account(1), account(2), at="2026-10-01T00:00:00+00:00")
    run_sync(db, ScriptedConnector({CrmObject.owners: [owners], CrmObject.accounts: [accounts]}), now=NOW)
    gone = Batch(records=(), raw=(), deleted_ids=["001A2", "001UNKNOWN"])
    summary = run_sync(db, ScriptedConnector({CrmObject.accounts: [gone]}), now=NOW)
    assert {o.object: o.rows_deleted for o in summary.objects}["accounts"] == 1
    assert rows(db, "SELECT id, deleted FROM accounts ORDER BY id") == [("001A1", False), ("001A2", True)]


def test_the_watermark_never_moves_back(db: Engine) -> None:
    late = _batch(owner(1), at="2026-10-05T00:00:00+00:00")
    early = _batch(owner(2), at="2026-10-01T00:00:00+00:00")
    run_sync(db, ScriptedConnector({CrmObject.owners: [late, early]}), now=NOW)
    assert rows(db, "SELECT watermark->>'modified_at' FROM sync_state WHERE object = 'owners'") == [
        ("2026-10-05T00:00:00+00:00",)
    ]


def test_a_second_sync_of_the_same_source_is_refused_while_one_runs(db: Engine) -> None:
    started, release = threading.Event(), threading.Event()

    class Slow(ScriptedConnector):
        def read(
            self, obj: CrmObject, since: Cursor | None, *, full: bool = False, batch_rows: int | None = None
        ) -> Iterator[Batch]:
            started.set()
            release.wait(10)
            yield from ()

    worker = threading.Thread(target=lambda: run_sync(db, Slow({}), objects=[CrmObject.owners], now=NOW))
    worker.start()
    try:
        assert started.wait(10)
        with pytest.raises(SyncBusyError, match="another sync of scripted is running"):
            run_sync(db, ScriptedConnector({}), now=NOW)
    finally:
        release.set()
        worker.join(10)


def test_runs_left_running_by_a_dead_process_are_marked_interrupted(db: Engine) -> None:
    with db.begin() as conn:
        conn.execute(text("INSERT INTO sync_runs (source, object) VALUES ('scripted', 'owners')"))
    run_sync(db, ScriptedConnector({}), now=NOW)
    assert rows(db, "SELECT status FROM sync_runs ORDER BY id") == [("interrupted",), *[("succeeded",)] * 3]


def test_the_roster_fills_what_the_crm_lacks(db: Engine, tmp_path: Path) -> None:
    roster_file = tmp_path / "roster.csv"
    roster_file.write_text(
        "email,capacity,home_lat,home_lon,quota,region,team\n"
        "REP1@example.com,120,40.7,-74.0,1000000,NA-East,NA-East-01\n"
        "rep2@example.com,90,,,,,\n",
        encoding="utf-8",
    )
    folder = write_export(tmp_path / "x", owners=[owner(1), owner(2, region="EMEA", capacity="60")])
    run_sync(db, CsvConnector(folder), objects=[CrmObject.owners], now=NOW, roster=load_roster(roster_file))
    assert rows(db, "SELECT id, capacity, home_lat, quota, region FROM owners ORDER BY id") == [
        ("005O1", 120, 40.7, 1000000, "NA-East"),
        ("005O2", 60, None, None, "EMEA"),  # the CRM's values win
    ]


def test_apply_roster_matches_by_id_before_email(tmp_path: Path) -> None:
    roster_file = tmp_path / "roster.csv"
    roster_file.write_text("id,email,team\n005O1,,by-id\n,rep1@example.com,by-email\n", encoding="utf-8")
    from connectors.records import records_frame

    frame = records_frame(CrmObject.owners, [owner(1), owner(3, email="Rep1@Example.com")])
    filled = apply_roster(frame, load_roster(roster_file))
    assert filled["team"].tolist() == ["by-id", "by-email"]
