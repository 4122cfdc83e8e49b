"""Sync benchmark: a full sync, an incremental sync of 1% changed rows, and a raw COPY of the same rows.

Usage: python -m bench.sync [--accounts 200000] [--reps 400] [--database-url URL]

Runs on a fresh, dropped-afterwards database on the server of --database-url (default: the local
PostgreSQL at 127.0.0.1:5432). The source is the sandbox Salesforce through simple-salesforce once
connectors.salesforce offers it; until then the CSV connector (the output says which). Prints each
phase's seconds and rows/s, the database phase against the raw COPY rate, and the peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text

from connectors.csv_files import CsvConnector
from connectors.sync import SyncSummary, run_sync
from store import migrate
from store.bulk import copy_csv
from store.db import ensure_database, make_engine, normalize_url

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # the clock of `territory sandbox export`
LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _report(name: str, summary: SyncSummary, rows: int) -> None:
    db = sum(o.db_seconds for o in summary.objects)
    print(
        f"{name:<28} {summary.seconds:8.2f} s  {rows / summary.seconds:>10,.0f} rows/s end to end; "
        f"database phase {db:.2f} s = {rows / db:,.0f} rows/s  ({summary.one_line()})"
    )


def _file_chunks(path: Path, size: int = 1 << 20) -> tuple[list[str], Iterator[bytes]]:
    """A CSV file's header columns and its remaining bytes in chunks, for a raw COPY."""
    fh = path.open("rb")
    columns = fh.readline().decode().strip().split(",")

    def chunks() -> Iterator[bytes]:
        with fh:
            while block := fh.read(size):
                yield block

    return columns, chunks()


def _change_one_percent(folder: Path, seed: int) -> int:
    """Rewrite accounts.csv and opportunities.csv with 1% of the rows changed (newer modified_at)."""
    rng = np.random.default_rng(seed)
    changed = 0
    later = "2026-11-02T09:30:00Z"
    for name, column, value in (("accounts.csv", "arr", "777.77"), ("opportunities.csv", "amount", "999.99")):
        frame = pd.read_csv(folder / name, dtype=str, keep_default_na=False)
        pick = rng.choice(len(frame), size=max(1, len(frame) // 100), replace=False)
        frame.loc[pick, column] = value
        frame.loc[pick, "modified_at"] = later
        frame.to_csv(folder / name, index=False)
        changed += len(pick)
    return changed


def main() -> None:
    """Run the three phases once and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--database-url", default=LOCAL)
    args = parser.parse_args()

    try:
        from connectors import salesforce  # noqa: F401

        source_note = "CSV connector (connectors.salesforce exists but is not wired into this bench yet)"
    except ImportError:
        source_note = "CSV connector (connectors.salesforce is not available yet)"
    server = normalize_url(args.database_url)
    name = f"territory_bench_{secrets.token_hex(4)}"
    url = ensure_database(server, name)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with tempfile.TemporaryDirectory(prefix="territory-bench-") as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            # Generated in a child process, so that the peak RSS below is the sync's, not the generator's.
            export = subprocess.run(
                [
                    str(Path(sys.executable).with_name("territory")),
                    "sandbox",
                    "export",
                    "--out",
                    str(folder),
                    f"--accounts={args.accounts}",
                    f"--reps={args.reps}",
                    f"--seed={args.seed}",
                    "--format=json",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            written = json.loads(export.stdout)["files"]
            print(f"source: {source_note}")
            print(f"generated and wrote {written} in {time.perf_counter() - started:.1f} s")
            rows = written["owners.csv"] + written["accounts.csv"] + written["opportunities.csv"]

            connector = CsvConnector(folder, chunk_rows=args.batch_size)
            full = run_sync(engine, connector, full=True, now=NOW)
            _report("full sync", full, rows)

            changed = _change_one_percent(folder, args.seed)
            incremental = run_sync(engine, CsvConnector(folder, chunk_rows=args.batch_size), now=NOW)
            _report(f"incremental ({changed:,} changed)", incremental, incremental.total("rows_read"))

            # Raw COPY of the same rows into bare tables (same column types, no key, index or check).
            with engine.begin() as conn:
                for table in ("accounts", "opportunities"):
                    conn.execute(text(f"CREATE TABLE bare_{table} (LIKE {table} INCLUDING DEFAULTS)"))
            copy_started = time.perf_counter()
            with engine.begin() as conn:
                for table in ("accounts", "opportunities"):
                    columns, chunks = _file_chunks(folder / f"{table}.csv")
                    copy_csv(conn, f"bare_{table}", columns, chunks)
            raw_seconds = time.perf_counter() - copy_started
            copied = written["accounts.csv"] + written["opportunities.csv"]
            raw_rate = copied / raw_seconds
            print(f"{'raw COPY into bare tables':<28} {raw_seconds:8.2f} s  {raw_rate:>10,.0f} rows/s")
            synced = {o.object: o for o in full.objects}
            db_seconds = synced["accounts"].db_seconds + synced["opportunities"].db_seconds
            db_rate = copied / db_seconds
            print(f"database phase / raw COPY rate (accounts + opportunities): {db_rate / raw_rate:.2f}")
    finally:
        engine.dispose()
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(f"peak RSS: {_peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
