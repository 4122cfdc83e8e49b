"""Sync benchmark: a full sync, incremental syncs of changed rows, a CSV full import, and raw COPYs.

Usage: python -m bench.sync [--accounts 200000] [--reps 400] [--database-url URL] [--no-csv]

Salesforce path: the sandbox Salesforce, served by a child process (so that the peak RSS printed is the
sync's own) and read through the real simple-salesforce client: the full sync through Bulk API 2.0,
the incremental ones through REST ``queryAll``, after the child changed records through the sandbox's
state as a user would (their ``SystemModstamp`` moves to now). Then the synced rows are exported and
COPYed into bare tables (no key, index or constraint) three times; the median of those is the raw COPY
rate.

CSV path: the child also writes the same org as a CSV export (docs/csv-format.md); ``territory sync
--source csv --full`` is timed end to end into a second fresh database, then the export's accounts.csv
and opportunities.csv themselves are COPYed into bare tables three times (the raw COPY rate of the
same data), and the import's rate of accounts + opportunities is set against it; last, the unchanged
export is imported again incrementally (the delete sweep reads every id of it).

Every timed phase starts once autovacuum is idle, after a CHECKPOINT. Runs on fresh, dropped-afterwards
databases on the server of --database-url (default: the local PostgreSQL at 127.0.0.1:5432). Prints
each phase's seconds and rows/s, the ratios to the raw COPY rates of the same run, and the peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import multiprocessing as mp
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from bench.rss import peak_rss_mib
from connectors.base import CANONICAL_COLUMNS, CrmObject
from connectors.csv_files import CsvConnector
from connectors.salesforce import SalesforceConnector
from connectors.salesforce.auth import AuthMethod, Credentials
from connectors.salesforce.client import SalesforceClient, make_session
from connectors.salesforce.mapping import build_mappings
from connectors.salesforce.streams import StreamOptions
from connectors.sync import SyncSummary, run_sync
from store import migrate
from store.bulk import copy_csv
from store.db import ensure_database, make_engine, normalize_url

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
RAW_COPIES = 3  # a 3-second COPY is at the mercy of a checkpoint or autovacuum: its median is steadier


def _serve(pipe: Pipe, accounts: int, reps: int, seed: int, cert_dir: str, csv_dir: str | None) -> None:
    """The child: generate the org, write its CSV export, serve it, and change records when asked."""
    from connectors.sandbox.generator import DEFAULT_NOW, generate_org, write_csv
    from connectors.sandbox.salesforce import start_salesforce_sandbox

    org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
    if csv_dir is not None:
        write_csv(org, Path(csv_dir))
    counts = {
        "owners": len(org.owners),
        "accounts": len(org.accounts),
        "opportunities": len(org.opportunities),
    }
    server = start_salesforce_sandbox(org, cert_dir=Path(cert_dir))
    del org
    pipe.send((server.url, str(server.ca_path), server.access_token, counts))
    rng = np.random.default_rng(seed)
    try:
        while True:
            message = pipe.recv()
            if message[0] == "stop":
                break
            _, shares = message  # {sobject: rows to change}
            changed = 0
            for sobject, count in shares.items():
                field, value = ("ARR__c", 777.77) if sobject == "Account" else ("Amount", 999.99)
                ids = server.state.tables[sobject].cols["Id"]
                for i in rng.choice(len(ids), size=count, replace=False):
                    server.state.update(sobject, ids[int(i)], {field: value})
                    changed += 1
            pipe.send(changed)
    finally:
        server.stop()


def _now() -> dt.datetime:
    """A run's start, as the CLI takes it: the sandbox stamps the records it changes with the clock, so a
    fixed date in the past would quarantine every changed record as stamped in the future."""
    return dt.datetime.now(dt.UTC)


def _report(name: str, summary: SyncSummary, rows: int) -> None:
    db = sum(o.db_seconds for o in summary.objects)
    print(
        f"{name:<34} {summary.seconds:8.2f} s  {rows / summary.seconds:>10,.0f} rows/s end to end; "
        f"database phase {db:.2f} s = {rows / db:,.0f} rows/s  ({summary.one_line()})"
    )


def _connector(url: str, ca_path: str, token: str) -> SalesforceConnector:
    """The production connector with the settings' defaults, pointed at the sandbox."""
    creds = Credentials(method=AuthMethod.access_token, login_url=url, instance_url=url, access_token=token)
    client = SalesforceClient(creds, session=make_session(ca_path, 60.0), quota_share=0.8, max_attempts=5)
    return SalesforceConnector(client, build_mappings(), StreamOptions(lookback=dt.timedelta(0)))


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(size):
            yield block


def _export(engine: Engine, folder: Path) -> None:
    """Write the synced accounts and opportunities as the CSV the raw COPY reads."""
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:  # type: ignore[attr-defined]
            for table in ("accounts", "opportunities"):
                cols = ", ".join(CANONICAL_COLUMNS[CrmObject(table)])
                with (
                    (folder / f"{table}.csv").open("wb") as out,
                    cur.copy(
                        f"COPY (SELECT {cols} FROM {table}) TO STDOUT (FORMAT csv)"  # noqa: S608 - fixed
                    ) as copy,
                ):
                    for block in copy:
                        out.write(block)
    finally:
        raw.close()


def _settle(engine: Engine) -> None:
    """Start a timed phase from the same server state: no autovacuum worker busy on this database (up to
    a minute), and a fresh checkpoint, so that neither phase pays for the other's dirty pages."""
    deadline = time.monotonic() + 60
    with engine.connect() as conn:
        while (
            time.monotonic() < deadline
            and conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
                    "AND datname = current_database()"
                )
            ).scalar_one()
        ):
            time.sleep(0.5)
        conn.execute(text("CHECKPOINT"))


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as fh:
        return next(csv.reader(fh))


def _without_header(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.readline()
        while block := fh.read(1 << 20):
            yield block


def _raw_copy(engine: Engine, folder: Path, attempt: int, *, export: bool = False) -> tuple[int, float]:
    """Time a COPY of the exported rows into new bare tables (no key, index or constraint).

    ``export``: the files are a CSV export (a header row naming the columns), else headerless files of
    the canonical columns.
    """
    with engine.begin() as conn:
        for table in ("accounts", "opportunities"):
            conn.execute(text(f"CREATE TABLE bare_{table}_{attempt} (LIKE {table} INCLUDING DEFAULTS)"))
    _settle(engine)
    started = time.perf_counter()
    with engine.begin() as conn:
        for table in ("accounts", "opportunities"):
            path = folder / f"{table}.csv"
            if export:
                copy_csv(conn, f"bare_{table}_{attempt}", _csv_header(path), _without_header(path))
            else:
                copy_csv(
                    conn, f"bare_{table}_{attempt}", CANONICAL_COLUMNS[CrmObject(table)], _file_chunks(path)
                )
    seconds = time.perf_counter() - started
    with engine.connect() as conn:
        copied = int(
            conn.execute(
                text(
                    f"SELECT (SELECT count(*) FROM bare_accounts_{attempt}) "  # noqa: S608 - fixed names
                    f"+ (SELECT count(*) FROM bare_opportunities_{attempt})"
                )
            ).scalar_one()
        )
    return copied, seconds


def _median_raw(engine: Engine, folder: Path, *, export: bool, label: str) -> float:
    """The raw COPY rate of ``folder``'s accounts and opportunities: the median of ``RAW_COPIES``."""
    raw = [_raw_copy(engine, folder, attempt, export=export) for attempt in range(RAW_COPIES)]
    for copied, seconds in raw:
        print(f"{label:<34} {seconds:8.2f} s  {copied / seconds:>10,.0f} rows/s")
    copied, raw_seconds = sorted(raw, key=lambda r: r[1])[RAW_COPIES // 2]
    raw_rate = copied / raw_seconds
    print(f"raw COPY, the median of {RAW_COPIES}: {raw_seconds:.2f} s = {raw_rate:,.0f} rows/s")
    return raw_rate


def _fresh_database(server: URL) -> tuple[str, Engine]:
    name = f"territory_bench_{secrets.token_hex(4)}"
    engine = make_engine(ensure_database(server, name))
    migrate.upgrade(engine)
    return name, engine


def _drop_database(server: URL, name: str) -> None:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _salesforce_path(
    engine: Engine,
    parent: Pipe,
    source: tuple[str, str, str],
    counts: dict[str, int],
    tmp: Path,
    *,
    bulk_load: bool,
) -> None:
    """The Salesforce phases: full sync, two incremental ones, the raw COPY of the synced rows."""
    rows = sum(counts.values())
    _settle(engine)
    full = run_sync(engine, _connector(*source), full=True, now=_now(), bulk_load=bulk_load)
    _report("full sync", full, rows)

    accounts, opps = counts["accounts"] // 100, counts["opportunities"] // 100
    for label, shares in (
        ("incremental 1%", {"Account": accounts, "Opportunity": opps}),
        ("incremental", {"Account": 500, "Opportunity": 1500}),
    ):
        parent.send(("change", shares))
        changed = parent.recv()
        incremental = run_sync(engine, _connector(*source), now=_now())
        _report(f"{label}: {changed:,} changed", incremental, incremental.total("rows_read"))

    _export(engine, tmp)
    raw_rate = _median_raw(engine, tmp, export=False, label="raw COPY into bare tables")
    synced = {o.object: o for o in full.objects}
    db_seconds = synced["accounts"].db_seconds + synced["opportunities"].db_seconds
    db_rows = synced["accounts"].rows_read + synced["opportunities"].rows_read
    db_rate = db_rows / db_seconds
    print(
        f"database phase of the full sync (accounts + opportunities): {db_seconds:.2f} s = "
        f"{db_rate:,.0f} rows/s; / raw COPY rate: {db_rate / raw_rate:.2f}"
    )


def _csv_path(server: URL, folder: Path, counts: dict[str, int], *, bulk_load: bool) -> None:
    """The CSV phases: a full import of the export into a fresh database, the raw COPY of its files."""
    name, engine = _fresh_database(server)
    try:
        _settle(engine)
        started = time.perf_counter()
        connector = CsvConnector(folder)  # as `territory sync` does: opening checks every file's text
        full = run_sync(engine, connector, full=True, now=_now(), bulk_load=bulk_load)
        seconds = time.perf_counter() - started
        _report("CSV full import", full, sum(counts.values()))
        raw_rate = _median_raw(engine, folder, export=True, label="raw COPY of the CSV files")
        rows = counts["accounts"] + counts["opportunities"]
        rate = rows / seconds
        print(
            f"CSV full import end to end (the export opened, then synced), accounts + opportunities: "
            f"{rows:,} rows / {seconds:.2f} s = {rate:,.0f} rows/s; / raw COPY rate of the files: "
            f"{rate / raw_rate:.2f}"
        )
        # The same export again, incremental: nothing changed, but the snapshot sweep reads every id.
        _settle(engine)
        started = time.perf_counter()
        again = run_sync(engine, CsvConnector(folder), now=_now(), bulk_load=bulk_load)
        _report("CSV re-import of the unchanged export (incremental, with the delete sweep)", again,
                sum(counts.values()))  # fmt: skip
        print(f"CSV re-import end to end: {time.perf_counter() - started:.2f} s")
    finally:
        engine.dispose()
        _drop_database(server, name)


def main() -> None:
    """Run the phases once and print their figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=LOCAL)
    parser.add_argument(
        "--no-bulk-load", action="store_true", help="batch by batch even into empty tables (to compare)"
    )
    parser.add_argument("--no-salesforce", action="store_true", help="only the CSV path")
    parser.add_argument("--no-csv", action="store_true", help="only the Salesforce path")
    args = parser.parse_args()

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    server = normalize_url(args.database_url)
    name, engine = _fresh_database(server)
    ctx = mp.get_context("spawn")
    parent, child_end = ctx.Pipe()
    with tempfile.TemporaryDirectory(prefix="territory-bench-") as tmp:
        csv_dir = None if args.no_csv else str(Path(tmp) / "export")
        child = ctx.Process(
            target=_serve, args=(child_end, args.accounts, args.reps, args.seed, tmp, csv_dir), daemon=True
        )
        try:
            started = time.perf_counter()
            child.start()
            sf_url, ca_path, token, counts = parent.recv()
            print("source: sandbox Salesforce in a child process, through simple-salesforce")
            print(f"generated and serving {counts} in {time.perf_counter() - started:.1f} s")
            if not args.no_salesforce:
                _salesforce_path(
                    engine,
                    parent,
                    (sf_url, ca_path, token),
                    counts,
                    Path(tmp),
                    bulk_load=not args.no_bulk_load,
                )
            if csv_dir is not None:
                print("source: the same org as a CSV export")
                _csv_path(server, Path(csv_dir), counts, bulk_load=not args.no_bulk_load)
        finally:
            if child.is_alive():
                parent.send(("stop",))
                child.join(timeout=10)
                if child.is_alive():
                    child.kill()
                    child.join()
            engine.dispose()
            _drop_database(server, name)
    print(f"peak RSS of the sync process: {peak_rss_mib():,.0f} MiB")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
