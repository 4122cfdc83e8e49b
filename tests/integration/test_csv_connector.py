"""The CSV connector through the sync engine on real PostgreSQL: generated exports and hand-written ones."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine, text

from connectors.base import CrmObject, Cursor
from connectors.batches import CLOCK_SKEW
from connectors.csv_files import CsvConnector
from connectors.errors import ConnectorConfigError
from connectors.sandbox.generator import Org, generate_org, write_csv
from connectors.sync import DeleteGuard
from tests.helpers.records import NOW, account, assert_balanced, opportunity, owner, rows, sync, write_export

pytestmark = pytest.mark.integration


ALLOW = DeleteGuard(allow_mass_delete=True)  # tests of what a delete does, on exports of a few rows


@pytest.fixture(scope="module")
def small_org() -> Org:
    return generate_org(accounts=600, reps=12, seed=3, now=NOW)


def assert_store_equals_org(engine: Engine, org: Org) -> None:
    """Every table holds exactly the export's rows and values."""
    stored = rows(
        engine, "SELECT id, name, email, capacity, quota, active FROM owners WHERE active ORDER BY id"
    )
    expected = org.owners[org.owners["active"]].sort_values("id")
    assert [r[0] for r in stored] == expected["id"].tolist()
    assert [r[3] for r in stored] == expected["capacity"].astype(int).tolist()
    stored_acc = pd.DataFrame(
        rows(engine, "SELECT id, owner_id, tier, arr, protected FROM accounts WHERE NOT deleted ORDER BY id"),
        columns=["id", "owner_id", "tier", "arr", "protected"],
    )
    exp_acc = org.accounts.sort_values("id").reset_index(drop=True)
    assert stored_acc["id"].tolist() == exp_acc["id"].tolist()
    assert stored_acc["owner_id"].tolist() == exp_acc["owner_id"].tolist()
    assert stored_acc["tier"].tolist() == exp_acc["tier"].tolist()
    assert stored_acc["protected"].tolist() == exp_acc["protected"].tolist()
    assert float(sum(stored_acc["arr"].dropna())) == pytest.approx(exp_acc["arr"].round(2).sum(), abs=0.05)
    stored_opp = rows(
        engine, "SELECT id, account_id, amount, is_won FROM opportunities WHERE NOT deleted ORDER BY id"
    )
    exp_opp = org.opportunities.sort_values("id")
    assert [r[0] for r in stored_opp] == exp_opp["id"].tolist()
    assert [r[1] for r in stored_opp] == exp_opp["account_id"].tolist()
    assert [bool(r[3]) for r in stored_opp] == exp_opp["is_won"].tolist()
    history = rows(
        engine, "SELECT count(*), count(*) FILTER (WHERE end_date IS NULL) FROM assignment_history"
    )
    assert history == [(len(org.assignments), int(org.assignments["end_date"].isna().sum()))]


def test_full_import_of_a_generated_org_matches_the_files(db: Engine, small_org: Org, tmp_path: Path) -> None:
    folder = tmp_path / "org"
    written = write_csv(small_org, folder)
    summary = sync(db, folder, chunk_rows=250)
    assert summary.status == "succeeded"
    assert_balanced(summary)
    by_object = {o.object: o for o in summary.objects}
    assert by_object["accounts"].rows_upserted == written["accounts.csv"]
    assert by_object["opportunities"].rows_upserted == written["opportunities.csv"]
    assert summary.total("rows_quarantined") == 0
    assert_store_equals_org(db, small_org)
    # The watermark is the newest modified_at of the file, saved with the rows.
    newest = small_org.accounts["modified_at"].max()
    (watermark,) = rows(db, "SELECT watermark FROM sync_state WHERE source = 'csv' AND object = 'accounts'")
    cursor = Cursor.from_json(watermark[0])
    assert cursor is not None
    assert cursor.modified_at == newest.to_pydatetime()
    runs = rows(db, "SELECT object, status, rows_read, rows_upserted FROM sync_runs ORDER BY id")
    assert runs == [(o.object, "succeeded", o.rows_read, o.rows_upserted) for o in summary.objects]


def test_the_same_import_twice_changes_nothing(db: Engine, small_org: Org, tmp_path: Path) -> None:
    folder = tmp_path / "org"
    write_csv(small_org, folder)
    sync(db, folder)
    dump_sql = (
        "SELECT (SELECT md5(string_agg(a::text, '' ORDER BY id)) FROM (SELECT id, name, owner_id, tier, arr, "
        "potential, lat, lon, protected, modified_at, deleted FROM accounts) a), "
        "(SELECT md5(string_agg(o::text, '' ORDER BY id)) FROM (SELECT id, account_id, amount, probability, "
        "close_date, is_closed, is_won, deleted FROM opportunities) o), "
        "(SELECT md5(string_agg(h::text, '' ORDER BY id)) FROM assignment_history h)"
    )
    before = rows(db, dump_sql)
    again = sync(db, folder, full=True)
    assert again.status == "succeeded"
    assert_balanced(again)
    assert rows(db, dump_sql) == before
    assert again.total("rows_deleted") == 0
    assert_store_equals_org(db, small_org)


def test_incremental_import_reads_only_what_changed(db: Engine, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "x",
        owners=[owner(1), owner(2)],
        accounts=[account(i, modified_at=f"2026-10-0{i}T00:00:00Z") for i in range(1, 6)],
    )
    sync(db, folder)
    write_export(
        folder,
        owners=[owner(1), owner(2)],
        accounts=[
            *(account(i, modified_at=f"2026-10-0{i}T00:00:00Z") for i in range(1, 5)),
            account(5, arr="2500.50", modified_at="2026-10-09T00:00:00Z"),
        ],
    )
    summary = sync(db, folder)
    accounts = next(o for o in summary.objects if o.object == "accounts")
    assert accounts.rows_read == 1  # only account 5: the others are older than the watermark - lookback
    assert rows(db, "SELECT arr FROM accounts WHERE id = '001A5'") == [(Decimal("2500.50"),)]


def test_ids_missing_from_a_full_export_are_deleted(db: Engine, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "x",
        owners=[owner(1), owner(2)],
        accounts=[account(1), account(2), account(3)],
        opportunities=[opportunity(1), opportunity(2)],
    )
    sync(db, folder)
    write_export(folder, owners=[owner(1)], accounts=[account(1), account(3)], opportunities=[opportunity(2)])
    summary = sync(db, folder, guard=ALLOW)
    assert summary.status == "succeeded"
    deleted = {o.object: o.rows_deleted for o in summary.objects}
    assert deleted == {"owners": 1, "accounts": 1, "opportunities": 1}
    assert rows(db, "SELECT id, active FROM owners ORDER BY id") == [("005O1", True), ("005O2", False)]
    assert rows(db, "SELECT id FROM accounts WHERE deleted") == [("001A2",)]
    assert rows(db, "SELECT id FROM opportunities WHERE deleted") == [("006P1",)]
    # A record that comes back is live again.
    write_export(folder, owners=[owner(1)], accounts=[account(1), account(2), account(3)])
    sync(db, folder)
    assert rows(db, "SELECT count(*) FROM accounts WHERE deleted") == [(0,)]


def test_an_export_cut_short_deletes_nothing_and_is_refused(db: Engine, tmp_path: Path) -> None:
    folder = write_export(
        tmp_path / "x",
        owners=[owner(i) for i in range(1, 4)],
        accounts=[account(i) for i in range(1, 501)],
        opportunities=[opportunity(i) for i in range(1, 41)],
    )
    sync(db, folder)
    # The export is cut to its header and one row: 499 of 500 accounts would go.
    write_export(
        folder, owners=[owner(i) for i in range(1, 4)], accounts=[account(1)], opportunities=[opportunity(1)]
    )
    summary = sync(db, folder)
    assert summary.status == "refused"
    accounts = next(o for o in summary.objects if o.object == "accounts")
    assert accounts.status == "refused"
    assert accounts.rows_deleted == 0
    assert accounts.error == (
        "refused to delete 499 of 500 live accounts (100%, over the 10% limit); "
        "if the export is complete, rerun with --allow-mass-delete"
    )
    assert [o.object for o in summary.objects] == ["owners", "accounts"]  # the run stops there
    assert rows(db, "SELECT count(*) FROM accounts WHERE NOT deleted") == [(500,)]
    assert rows(db, "SELECT count(*) FROM opportunities WHERE NOT deleted") == [(40,)]
    assert rows(db, "SELECT status FROM sync_runs WHERE object = 'accounts' ORDER BY id DESC LIMIT 1") == [
        ("refused",)
    ]


def test_deletes_within_the_share_go_ahead_and_a_person_can_allow_more(db: Engine, tmp_path: Path) -> None:
    folder = write_export(tmp_path / "x", owners=[owner(1)], accounts=[account(i) for i in range(1, 21)])
    sync(db, folder)
    write_export(folder, owners=[owner(1)], accounts=[account(i) for i in range(1, 19)])  # 2 of 20: 10%
    within = sync(db, folder)
    assert within.status == "succeeded"
    assert within.total("rows_deleted") == 2
    write_export(folder, owners=[owner(1)], accounts=[account(i) for i in range(1, 10)])  # 9 of 18
    assert sync(db, folder).status == "refused"
    assert rows(db, "SELECT count(*) FROM accounts WHERE NOT deleted") == [(18,)]
    allowed = sync(db, folder, guard=ALLOW)
    assert allowed.status == "succeeded"
    assert allowed.total("rows_deleted") == 9
    stricter = DeleteGuard(max_share=0.0)
    write_export(folder, owners=[owner(1)], accounts=[account(i) for i in range(1, 9)])
    assert sync(db, folder, guard=stricter).status == "refused"


def test_a_record_back_in_the_export_is_live_again_on_an_incremental_sync(db: Engine, tmp_path: Path) -> None:
    everyone = [account(i) for i in range(1, 21) if i != 2] + [account(2, modified_at="2026-09-01T00:00:00Z")]
    folder = write_export(tmp_path / "x", owners=[owner(1)], accounts=everyone)
    sync(db, folder)
    write_export(folder, owners=[owner(1)], accounts=[a for a in everyone if a["id"] != "001A2"])
    assert sync(db, folder).total("rows_deleted") == 1
    assert rows(db, "SELECT id FROM accounts WHERE deleted") == [("001A2",)]
    write_export(folder, owners=[owner(1)], accounts=everyone)  # back, with its old modified_at
    summary = sync(db, folder)  # incremental: the row is older than the cursor and is not read
    assert summary.status == "succeeded"
    assert {o.object: o.rows_upserted for o in summary.objects}["accounts"] == 0
    assert rows(db, "SELECT count(*) FROM accounts WHERE deleted") == [(0,)]


def _watermark(db: Engine, obj: str) -> Any:
    return rows(db, "SELECT watermark FROM sync_state WHERE source = 'csv' AND object = :o", o=obj)[0][0]


def test_a_record_stamped_in_the_future_is_quarantined_and_the_cursor_stays_behind_the_clock(
    db: Engine, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "x",
        owners=[owner(1)],
        accounts=[account(1), account(2, modified_at="2099-01-01T00:00:00Z")],
    )
    summary = sync(db, folder)
    accounts = next(o for o in summary.objects if o.object == "accounts")
    assert accounts.rows_quarantined == 1
    assert rows(db, "SELECT record_id, reason FROM quarantine WHERE resolved_at IS NULL") == [
        ("001A2", f"modified_at in the future (after {(NOW + CLOCK_SKEW).isoformat()}): 2099-01-01T00:00:00Z")
    ]
    assert dt.datetime.fromisoformat(_watermark(db, "accounts")["modified_at"]) <= NOW
    # A change made after the first run started is still read by the next incremental one.
    write_export(
        folder, owners=[owner(1)], accounts=[account(1, name="Renamed", modified_at="2026-11-01T00:01:00Z")]
    )
    sync(db, folder)
    assert rows(db, "SELECT name FROM accounts WHERE id = '001A1'") == [("Renamed",)]


def test_a_saved_cursor_in_the_future_is_repaired(db: Engine, tmp_path: Path) -> None:
    folder = write_export(tmp_path / "x", owners=[owner(1)], accounts=[account(1), account(2)])
    sync(db, folder)
    with db.begin() as conn:  # what an older version saved from a row stamped 2099
        conn.execute(
            text(
                'UPDATE sync_state SET watermark = \'{"modified_at": "2099-01-01T00:00:00+00:00", '
                "\"last_id\": \"\"}' WHERE source = 'csv' AND object = 'accounts'"
            )
        )
    write_export(
        folder,
        owners=[owner(1)],
        accounts=[account(1), account(2, name="Later", modified_at="2026-10-25T00:00:00Z")],
    )
    sync(db, folder)
    assert rows(db, "SELECT name FROM accounts WHERE id = '001A2'") == [("Later",)]
    assert dt.datetime.fromisoformat(_watermark(db, "accounts")["modified_at"]) <= NOW


def test_an_export_without_any_row_deletes_nothing(db: Engine, tmp_path: Path) -> None:
    folder = write_export(tmp_path / "x", owners=[owner(1)], accounts=[account(1)])
    sync(db, folder)
    write_export(folder, owners=[owner(1)], accounts=[])
    summary = sync(db, folder)
    assert summary.total("rows_deleted") == 0
    assert rows(db, "SELECT deleted FROM accounts") == [(False,)]


def test_assignments_seed_the_history_once(db: Engine, tmp_path: Path) -> None:
    history = [
        {"account_id": "001A1", "owner_id": "005O2", "start_date": "2025-01-01", "end_date": "2026-03-01"},
        {"account_id": "001A1", "owner_id": "005O1", "start_date": "2026-03-01", "end_date": ""},
        {"account_id": "001A9", "owner_id": "005O1", "start_date": "2026-03-01", "end_date": ""},
        {"account_id": "001A2", "owner_id": "005O1", "start_date": "someday", "end_date": ""},
    ]
    folder = write_export(
        tmp_path / "x", owners=[owner(1), owner(2)], accounts=[account(1), account(2)], assignments=history
    )
    sync(db, folder)
    sql = "SELECT account_id, owner_id, start_date, end_date, source FROM assignment_history ORDER BY account_id, start_date"
    seeded = rows(db, sql)
    assert seeded == [
        ("001A1", "005O2", dt.date(2025, 1, 1), dt.date(2026, 3, 1), "import"),
        ("001A1", "005O1", dt.date(2026, 3, 1), None, "import"),
        # no usable history row for 001A2: opened from its modified date
        ("001A2", "005O1", dt.date(2026, 10, 1), None, "sync"),
    ]
    reasons = rows(db, "SELECT record_id, reason FROM quarantine WHERE object = 'assignments' ORDER BY 1")
    assert reasons == [
        ("001A2:someday", "unparseable start_date"),
        ("001A9:2026-03-01", "unknown account: 001A9"),
    ]
    sync(db, folder, full=True)
    assert rows(db, sql) == seeded
    assert rows(db, "SELECT count(*) FROM quarantine") == [(2,)]


def _tenure(account_id: str, owner_id: str, start: str, end: str = "") -> dict[str, str]:
    return {"account_id": account_id, "owner_id": owner_id, "start_date": start, "end_date": end}


def test_assignment_history_stays_consistent(db: Engine, tmp_path: Path) -> None:
    first = _tenure("001A1", "005O2", "2025-01-01", "2026-03-01")
    history = [
        first,
        _tenure("001A1", "005O1", "2026-03-01"),
        first,  # an exact duplicate: stored once
        _tenure("001A2", "005O2", "2025-01-01", "2025-09-01"),
        _tenure("001A2", "005O2", "2025-06-01", "2026-01-01"),  # overlaps the row before
        _tenure("001A2", "005O1", "2026-01-01"),
        _tenure("001A3", "005O2", "2026-01-01"),  # current, but accounts.csv says 005O1 owns it
    ]
    accounts = [account(1), account(2), account(3)]
    folder = write_export(tmp_path / "x", owners=[owner(1), owner(2)], accounts=accounts, assignments=history)
    summary = sync(db, folder)
    sql = "SELECT account_id, owner_id, start_date, end_date, source FROM assignment_history ORDER BY 1, 3"
    assert rows(db, sql) == [
        ("001A1", "005O2", dt.date(2025, 1, 1), dt.date(2026, 3, 1), "import"),
        ("001A1", "005O1", dt.date(2026, 3, 1), None, "import"),
        ("001A2", "005O2", dt.date(2025, 1, 1), dt.date(2025, 9, 1), "import"),
        ("001A2", "005O1", dt.date(2026, 1, 1), None, "import"),
        ("001A3", "005O1", dt.date(2026, 10, 1), None, "sync"),  # its bad row left it without one
    ]
    open_rows = "SELECT record_id, reason FROM quarantine WHERE object = 'assignments' AND resolved_at IS NULL ORDER BY 1"
    assert rows(db, open_rows) == [
        ("001A2:2025-06-01", "overlaps an earlier tenure of the account, which ends 2025-09-01"),
        ("001A3:2026-01-01", "the current assignment names owner 005O2, the account's owner is 005O1"),
    ]
    # The closing line's quarantined count includes the history's rows; the accounts' own stay balanced.
    accounts_run = next(o for o in summary.objects if o.object == "accounts")
    assert accounts_run.history_quarantined == 2
    assert accounts_run.rows_quarantined == 0
    assert " 2 quarantined " in summary.one_line()

    # The export fixed: the rows that were quarantined are clean now and their quarantine rows resolve;
    # the overlap of 001A2 went away by correcting the earlier row's end, which the store already holds
    # as the first import had it (an account's stored history is never rewritten by an import).
    history[3] = _tenure("001A2", "005O2", "2025-01-01", "2025-06-01")
    history[6] = _tenure("001A3", "005O1", "2026-01-01")
    write_export(folder, owners=[owner(1), owner(2)], accounts=accounts, assignments=history)
    again = sync(db, folder)
    assert rows(db, open_rows) == []
    assert sum(o.history_quarantined for o in again.objects) == 0
    assert " 0 quarantined " in again.one_line()
    resolved = "SELECT count(*) FROM quarantine WHERE object = 'assignments' AND resolved_at IS NOT NULL"
    assert rows(db, resolved) == [(2,)]
    assert rows(db, "SELECT count(*) FROM assignment_history WHERE account_id = '001A1'") == [(2,)]


def test_a_quarantined_tenure_is_stored_once_the_export_is_fixed(db: Engine, tmp_path: Path) -> None:
    """A corrected row that fits the stored history goes in on the import that finds the account's
    history clean, and the account's quarantined rows resolve (whatever their start said)."""
    history = [
        _tenure("001A1", "005O2", "2025-01-01", "2025-09-01"),
        _tenure("001A1", "005O2", "2025-06-01", "2026-01-01"),  # overlaps: quarantined
        _tenure("001A1", "005O1", "2026-03-01"),
        _tenure("001A2", "005O2", "2025-01-01", "2024-01-01"),  # ends before it starts: quarantined
    ]
    export = {"owners": [owner(1), owner(2)], "accounts": [account(1), account(2)]}
    folder = write_export(tmp_path / "x", **export, assignments=history)
    sync(db, folder)
    history[1] = _tenure("001A1", "005O2", "2025-09-01", "2026-01-01")  # its start corrected
    write_export(folder, **export, assignments=history)
    sync(db, folder)
    sql = (
        "SELECT owner_id, start_date, end_date FROM assignment_history WHERE account_id = '001A1' ORDER BY 2"
    )
    assert rows(db, sql) == [
        ("005O2", dt.date(2025, 1, 1), dt.date(2025, 9, 1)),
        ("005O2", dt.date(2025, 9, 1), dt.date(2026, 1, 1)),
        ("005O1", dt.date(2026, 3, 1), None),
    ]
    open_rows = "SELECT record_id, reason FROM quarantine WHERE resolved_at IS NULL"
    assert rows(db, open_rows) == [("001A2:2025-01-01", "end_date before start_date")]


def test_a_quarantined_tenure_does_not_push_out_the_rows_after_it(db: Engine, tmp_path: Path) -> None:
    """A row quarantined for overlapping is not in the history, so the rows after it are judged
    against the tenures that stay: a corrected copy with a longer end (a usual export mistake) takes
    neither the current row nor the next tenure with it."""
    history = [
        _tenure("001A1", "005O2", "2025-01-01", "2025-06-01"),
        _tenure("001A1", "005O2", "2025-01-01", "2025-09-01"),  # overlaps the row before: quarantined
        _tenure("001A1", "005O1", "2025-06-01"),  # starts where the first ends: stays
        _tenure("001A2", "005O2", "2025-01-01", "2025-03-01"),
        _tenure("001A2", "005O2", "2025-02-01", "2025-12-01"),  # overlaps the row before: quarantined
        _tenure("001A2", "005O2", "2025-06-01", "2025-08-01"),  # overlaps only the quarantined one
        _tenure("001A2", "005O1", "2025-11-01"),  # so does the current one
    ]
    folder = write_export(
        tmp_path / "x", owners=[owner(1), owner(2)], accounts=[account(1), account(2)], assignments=history
    )
    summary = sync(db, folder)
    sql = "SELECT account_id, owner_id, start_date, end_date, source FROM assignment_history ORDER BY 1, 3"
    assert rows(db, sql) == [
        ("001A1", "005O2", dt.date(2025, 1, 1), dt.date(2025, 6, 1), "import"),
        ("001A1", "005O1", dt.date(2025, 6, 1), None, "import"),
        ("001A2", "005O2", dt.date(2025, 1, 1), dt.date(2025, 3, 1), "import"),
        ("001A2", "005O2", dt.date(2025, 6, 1), dt.date(2025, 8, 1), "import"),
        ("001A2", "005O1", dt.date(2025, 11, 1), None, "import"),
    ]
    open_rows = "SELECT record_id, reason FROM quarantine WHERE resolved_at IS NULL ORDER BY 1"
    assert rows(db, open_rows) == [
        ("001A1:2025-01-01", "overlaps an earlier tenure of the account, which ends 2025-06-01"),
        ("001A2:2025-02-01", "overlaps an earlier tenure of the account, which ends 2025-03-01"),
    ]
    assert " 2 quarantined " in summary.one_line()


def test_an_unchanged_history_is_not_read_again_for_its_quarantine(db: Engine, tmp_path: Path) -> None:
    """A row that stays bad (an account the CRM purged) keeps its quarantine row open; an incremental
    import of the same assignments.csv does not read and check the whole file again for it (it would
    only quarantine the same row again), a full one does, and so does one whose file changed."""
    history = [_tenure("001A1", "005O1", "2025-01-01"), _tenure("001A9", "005O1", "2025-01-01")]
    export = {"owners": [owner(1)], "accounts": [account(1)]}
    folder = write_export(tmp_path / "x", **export, assignments=history)
    first = sync(db, folder)
    assert sum(o.history_quarantined for o in first.objects) == 1
    open_rows = "SELECT record_id, reason FROM quarantine WHERE resolved_at IS NULL"
    assert rows(db, open_rows) == [("001A9:2025-01-01", "unknown account: 001A9")]
    seen = "SELECT sync_run_id FROM quarantine WHERE record_id = '001A9:2025-01-01'"
    (before,) = rows(db, seen)

    again = sync(db, folder)
    assert sum(o.history_quarantined for o in again.objects) == 0
    assert rows(db, seen) == [before]  # not seen again: the file was not read
    assert rows(db, open_rows) == [("001A9:2025-01-01", "unknown account: 001A9")]

    full = sync(db, folder, full=True)
    assert sum(o.history_quarantined for o in full.objects) == 1
    assert rows(db, seen) != [before]

    write_export(folder, **export, assignments=history[:1])  # the purged account's row dropped
    changed = sync(db, folder)
    assert sum(o.history_quarantined for o in changed.objects) == 0
    assert rows(db, "SELECT count(*) FROM assignment_history") == [(1,)]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda p: p.write_text("id,name,email\n1,a,b\n", encoding="utf-8"),
            "owners.csv: header lacks column 'region'",
        ),
        (lambda p: p.write_bytes(b"id,name\xe9,email\n"), "owners.csv: not UTF-8"),
        (lambda p: p.write_text("", encoding="utf-8"), "owners.csv: empty file"),
        (lambda p: p.unlink(), "owners.csv is missing"),
    ],
    ids=["missing-column", "latin-1", "empty", "absent"],
)
def test_malformed_files_are_config_errors_naming_file_and_column(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    folder = write_export(tmp_path / "x", owners=[owner(1)])
    mutate(folder / "owners.csv")
    with pytest.raises(ConnectorConfigError, match=message):
        CsvConnector(folder)


def test_bad_encoding_past_the_header_is_refused_before_anything_is_read(db: Engine, tmp_path: Path) -> None:
    """The whole file is checked when the export is opened, so nothing of it is half imported; a row
    both malformed and not UTF-8 (which Arrow's reader cannot hand over) is refused the same way."""
    folder = write_export(tmp_path / "x", owners=[owner(1)], accounts=[account(1)])
    with (folder / "opportunities.csv").open("ab") as fh:
        fh.write(b"006P1,001A1,005O1,Caf\xe9 deal,,,,,,,\n")
    with pytest.raises(ConnectorConfigError, match=r"opportunities.csv: not UTF-8 text \(line 2: "):
        CsvConnector(folder)
    with (folder / "accounts.csv").open("ab") as fh:
        fh.write(b"001A2,Caf\xe9,005O1,core,,,,,,,,,extra\n")
    with pytest.raises(ConnectorConfigError, match=r"accounts.csv: not UTF-8 text \(line 3: "):
        CsvConnector(folder)
    assert rows(db, "SELECT count(*) FROM sync_runs") == [(0,)]


def test_chunks_stay_bounded(tmp_path: Path, small_org: Org) -> None:
    folder = tmp_path / "org"
    write_csv(small_org, folder)
    connector = CsvConnector(folder, chunk_rows=100)
    sizes = [len(b.records) for b in connector.read(CrmObject.opportunities, None)]
    assert max(sizes) == 100
    assert sum(sizes) == len(small_org.opportunities)


def test_the_engine_may_ask_for_other_batch_sizes_and_the_cursor_does_not_depend_on_them(
    tmp_path: Path,
) -> None:
    """A first load asks for batches of 50,000 whatever the connector's own size; the file's cursor is
    its largest (modified_at, id), however the file is cut (rows sharing the newest stamp: the largest
    id, wherever in the file it is)."""
    newest = "2026-10-02T00:00:00Z"
    accounts = [
        account(3, modified_at=newest),
        account(9, modified_at=newest),
        account(5, modified_at=newest),
    ]
    folder = write_export(tmp_path / "x", owners=[owner(1)], accounts=[account(1), *accounts, account(2)])
    connector = CsvConnector(folder, chunk_rows=2)
    cursors = []
    for asked, largest in ((None, 2), (1, 1), (3, 3), (50_000, 5)):  # None: the connector's own size
        batches = list(connector.read(CrmObject.accounts, None, batch_rows=asked))
        assert max(len(b.records) for b in batches) == largest
        cursors.append(batches[-1].cursor)
    assert cursors == [Cursor(dt.datetime(2026, 10, 2, tzinfo=dt.UTC), "001A9")] * 4


def test_the_registry_builds_the_csv_connector_and_names_what_is_missing(tmp_path: Path) -> None:
    from connectors.registry import build_connector
    from service.settings import Settings

    settings = Settings(sync={"batch_size": 123})
    folder = write_export(tmp_path / "x", owners=[owner(1)])
    connector = build_connector("csv", settings, folder)
    assert isinstance(connector, CsvConnector)
    assert connector.chunk_rows == 123
    with pytest.raises(ConnectorConfigError, match="needs --path"):
        build_connector("csv", settings, None)
    with pytest.raises(ConnectorConfigError, match="unknown source 'pipedrive'"):
        build_connector("pipedrive", settings, None)


def _mangle_rows(folder: Path) -> None:
    """Cut account 2 short, give account 3 a surplus field, add account 4 with two fields only."""
    lines = (folder / "accounts.csv").read_text(encoding="utf-8").splitlines()
    lines[2] = "001A2,Account 2,005O1"  # the rest would have overwritten good values with blanks
    lines[3] += ",surplus"
    (folder / "accounts.csv").write_text("\n".join([*lines, "001A4,Account 4"]) + "\n", encoding="utf-8")


def _field_count_reasons(db: Engine) -> dict[str, str]:
    sql = "SELECT record_id, reason FROM quarantine WHERE object = 'accounts' AND resolved_at IS NULL"
    return dict(rows(db, sql))  # type: ignore[arg-type]


def test_a_row_with_fewer_or_more_fields_than_its_header_is_quarantined_and_nothing_overwritten(
    db: Engine, tmp_path: Path
) -> None:
    folder = write_export(
        tmp_path / "x", owners=[owner(1)], accounts=[account(1, arr="250.00"), account(2), account(3)]
    )
    sync(db, folder, full=True)
    _mangle_rows(folder)
    summary = sync(db, folder, full=True)
    assert_balanced(summary)
    accounts = next(o for o in summary.objects if o.object == "accounts")
    assert (accounts.rows_read, accounts.rows_quarantined, accounts.rows_deleted) == (4, 3, 0)
    assert rows(db, "SELECT id, arr, deleted FROM accounts ORDER BY id") == [
        ("001A1", Decimal("250.00"), False),
        ("001A2", Decimal("1000.00"), False),  # stored values kept, and not deleted as absent
        ("001A3", Decimal("1000.00"), False),
    ]
    reasons = _field_count_reasons(db)
    assert reasons["001A2"] == "row has 3 fields, the header 11: 001A2,Account 2,005O1"
    assert reasons["001A3"].startswith("row has 12 fields, the header 11: 001A3,Account 3,")
    assert reasons["001A4"] == "row has 2 fields, the header 11: 001A4,Account 4"


def test_a_first_load_quarantines_rows_with_the_wrong_field_count_too(db: Engine, tmp_path: Path) -> None:
    folder = write_export(tmp_path / "x", owners=[owner(1)], accounts=[account(1), account(2), account(3)])
    _mangle_rows(folder)
    summary = sync(db, folder, full=True)
    assert_balanced(summary)
    assert rows(db, "SELECT id FROM accounts ORDER BY id") == [("001A1",)]
    assert sorted(_field_count_reasons(db)) == ["001A2", "001A3", "001A4"]
