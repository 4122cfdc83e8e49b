"""CRM records for the sync tests: rows of a CSV export, the export itself, and a scripted connector."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from connectors.base import Batch, CrmObject, Cursor, OwnerChange, WriteResult
from connectors.csv_files import FILES, CsvConnector
from connectors.sync import DEFAULT_GUARD, DeleteGuard, SyncSummary, run_sync

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def write_export(
    folder: Path,
    owners: Sequence[Mapping[str, Any]] = (),
    accounts: Sequence[Mapping[str, Any]] = (),
    opportunities: Sequence[Mapping[str, Any]] = (),
    assignments: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write a small export; columns not given are empty."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Sequence[Mapping[str, Any]]] = {
        "owners.csv": owners,
        "accounts.csv": accounts,
        "opportunities.csv": opportunities,
    }
    if assignments is not None:
        files["assignments.csv"] = assignments
    for name, rows in files.items():
        with (folder / name).open("w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FILES[name], lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in FILES[name]})
    return folder


def owner(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"005O{i}", "name": f"Rep {i}", "email": f"rep{i}@example.com", "active": "true"} | kw


def account(i: int, owner_id: str = "005O1", **kw: Any) -> dict[str, Any]:
    return {
        "id": f"001A{i}",
        "name": f"Account {i}",
        "owner_id": owner_id,
        "tier": "core",
        "arr": "1000.00",
        "modified_at": "2026-10-01T00:00:00Z",
    } | kw


def opportunity(i: int, account_id: str = "001A1", **kw: Any) -> dict[str, Any]:
    return {
        "id": f"006P{i}",
        "account_id": account_id,
        "owner_id": "005O1",
        "name": f"Deal {i}",
        "stage": "Proposal",
        "amount": "500.00",
        "probability": "0.6",
        "close_date": "2026-12-15",
        "is_closed": "false",
        "is_won": "false",
        "modified_at": "2026-10-01T00:00:00Z",
    } | kw


def sync(
    engine: Engine,
    folder: Path,
    *,
    full: bool = False,
    chunk_rows: int = 1000,
    guard: DeleteGuard = DEFAULT_GUARD,
) -> SyncSummary:
    connector = CsvConnector(folder, chunk_rows=chunk_rows)
    return run_sync(engine, connector, full=full, now=NOW, delete_guard=guard)


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def assert_balanced(summary: SyncSummary) -> None:
    """Nothing silently dropped: every row read is upserted, quarantined or counted as skipped."""
    for o in summary.objects:
        assert o.rows_read == o.rows_upserted + o.rows_quarantined + o.rows_skipped, o


class ScriptedConnector:
    """A connector that yields the given batches per object and then raises, as a CRM client would."""

    source = "scripted"

    def __init__(self, script: dict[CrmObject, list[Batch | Exception]]) -> None:
        self.script = script
        self.calls: list[tuple[CrmObject, Cursor | None, bool]] = []

    def read(
        self, obj: CrmObject, since: Cursor | None, *, full: bool = False, batch_rows: int | None = None
    ) -> Iterator[Batch]:
        self.calls.append((obj, since, full))
        for step in self.script.get(obj, []):
            if isinstance(step, Exception):
                raise step
            yield step

    def apply_owner_changes(self, changes: Sequence[OwnerChange]) -> list[WriteResult]:
        return []


def scripted_batch(*records: dict[str, Any], at: str, deleted: Sequence[str] = ()) -> Batch:
    stamp = dt.datetime.fromisoformat(at)
    return Batch(
        records=records,
        raw=records,
        deleted_ids=deleted,
        cursor=Cursor(stamp, records[-1]["id"] if records else ""),
    )
