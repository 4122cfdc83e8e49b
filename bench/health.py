"""Benchmark: every territory-health metric and the drift, loading from Postgres included.

Target (issue 4): 1,000,000 accounts, 3,000,000 opportunities, 2,000 territories in under 5 s and
1.5 GB peak memory on a 2-core machine. The org is generated and loaded with COPY once into its own
database (reused while size and seed match); the timed runs happen in a fresh child process, so that
its peak RSS counts only the measurement, not the generator.

    .venv/bin/python -m bench.health [--accounts N] [--reps N] [--seed N] [--runs N]

The server is $TERRITORY_BENCH_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres; the
benchmark's database on it is named ``territory_bench_health``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from bench.rss import peak_rss_mib
from store.db import make_engine, normalize_url

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "territory_bench_health"
NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
AS_OF = NOW.date()


def server_url() -> URL:
    """The server the benchmark runs on."""
    return normalize_url(os.environ.get("TERRITORY_BENCH_DATABASE_URL", DEFAULT_SERVER))


def bench_url() -> URL:
    """The benchmark's own database on that server."""
    return server_url().set(database=DATABASE)


def marker(accounts: int, reps: int, seed: int) -> str:
    """What the loaded org is, stored as the database's comment."""
    return f"territory-bench-health accounts={accounts} reps={reps} seed={seed}"


def loaded_marker() -> str | None:
    """The comment of the benchmark database, or None when it does not exist."""
    admin = create_engine(server_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            row = conn.execute(
                text("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = :n"),
                {"n": DATABASE},
            ).first()
    finally:
        admin.dispose()
    return None if row is None else str(row[0])


def load(accounts: int, reps: int, seed: int) -> None:
    """(Re)create the benchmark database and load a generated org into it with COPY."""
    from connectors.sandbox.generator import generate_org
    from connectors.sandbox.seed import load_org
    from store import migrate

    admin = create_engine(server_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    finally:
        admin.dispose()
    engine = make_engine(bench_url())
    try:
        migrate.upgrade(engine)
        started = time.perf_counter()
        org = generate_org(accounts=accounts, reps=reps, seed=seed, now=NOW)
        print(f"generated the org in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        for table, rows in load_org(engine, org).items():
            print(f"  {table}: {rows:,} rows", flush=True)
        del org
        print(f"loaded with COPY in {time.perf_counter() - started:.1f} s", flush=True)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            conn.execute(text(f"COMMENT ON DATABASE \"{DATABASE}\" IS '{marker(accounts, reps, seed)}'"))
    finally:
        engine.dispose()


def upgrade_schema() -> None:
    """Apply migrations newer than the loaded org (indexes the queries rely on), keeping its rows."""
    from store import migrate

    engine = make_engine(bench_url())
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def measure(engine: Engine, runs: int) -> list[dict[str, float]]:
    """Time load + metrics + balance + drift ``runs`` times; one dict of seconds per run."""
    from monitor.balance import balance
    from monitor.catalog import METRICS
    from monitor.drift import DEFAULT_RULES, apply_hysteresis, evaluate, outside_band
    from monitor.frames import load_inputs
    from monitor.metrics import DEFAULT_TOUCHES, territory_metrics

    results = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with engine.connect() as conn:
            inputs = load_inputs(conn, AS_OF)
            conn.rollback()
        t1 = time.perf_counter()
        territories = territory_metrics(inputs.owners, inputs.accounts, DEFAULT_TOUCHES, sums=inputs.sums)
        t2 = time.perf_counter()
        raw = evaluate(territories, DEFAULT_RULES)
        stats = balance(territories, METRICS, outside_band(raw))
        breaches = apply_hysteresis(raw, AS_OF, [], DEFAULT_RULES)
        t3 = time.perf_counter()
        results.append(
            {
                "load": t1 - t0,
                "metrics": t2 - t1,
                "drift": t3 - t2,
                "total": t3 - t0,
                "accounts": float(len(inputs.accounts)),
                "territories": float(len(territories)),
                "breaches": float(len(breaches)),
                "balance_rows": float(len(stats)),
            }
        )
        del inputs, territories, raw, stats, breaches
    return results


def child(runs: int) -> None:
    """The measuring process: prints one JSON line with every run and its own peak RSS."""
    engine = make_engine(bench_url())
    try:
        with engine.connect() as conn:
            counts = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM opportunities),"
                    " (SELECT count(*) FROM owners WHERE active), (SELECT count(*) FROM assignment_history)"
                )
            ).one()
            # A yardstick of the machine's state: a plain scan of the opportunities, no parallel workers.
            conn.execute(text("SET max_parallel_workers_per_gather = 0"))
            started = time.perf_counter()
            conn.execute(text("SELECT count(*) FROM opportunities")).scalar_one()
            baseline = time.perf_counter() - started
            conn.rollback()
        runs_out = measure(engine, runs)
    finally:
        engine.dispose()
    report = {"counts": list(counts), "baseline": baseline, "runs": runs_out, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(report))


def main() -> None:
    """Load the org if needed, then measure in a child process and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.runs)
        return
    if loaded_marker() != marker(args.accounts, args.reps, args.seed):
        print(f"loading {args.accounts:,} accounts and {args.reps:,} reps (seed {args.seed}) ...", flush=True)
        load(args.accounts, args.reps, args.seed)
    else:
        print("reusing the loaded org", flush=True)
        upgrade_schema()
    out = subprocess.run(
        [sys.executable, "-m", "bench.health", "--child", "--runs", str(args.runs)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    accounts, opportunities, active, history = report["counts"]
    print(
        f"org: {accounts:,} accounts, {opportunities:,} opportunities, {active:,} active owners,"
        f" {history:,} ownership rows; as of {AS_OF}"
    )
    for i, run in enumerate(report["runs"], start=1):
        print(
            f"run {i}: total {run['total']:.2f} s (load {run['load']:.2f} s, metrics {run['metrics']:.2f} s,"
            f" balance+drift {run['drift']:.3f} s); {int(run['territories']):,} territories,"
            f" {int(run['breaches']):,} breaches"
        )
    totals = [r["total"] for r in report["runs"]]
    print(f"median {statistics.median(totals):.2f} s over {len(totals)} runs; min {min(totals):.2f} s")
    print(f"peak RSS of the measuring process: {report['peak_rss_mib']:.0f} MiB")
    print(
        f"yardstick: a plain count of the opportunities took {report['baseline']:.2f} s"
        f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
