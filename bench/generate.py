"""Benchmark of the sandbox org generator: generate and CSV-write times, rows/s and peak memory.

Run as ``python -m bench.generate --accounts 1000000 --reps 2000 --repeats 3``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.rss import peak_rss_mib
from connectors.sandbox.generator import DEFAULT_NOW, generate_org, write_csv


@dataclass(frozen=True)
class Run:
    """The figures of one generate-and-write run."""

    generate_s: float
    write_s: float
    generate_cpu_s: float
    write_cpu_s: float
    rows: int
    csv_bytes: int

    @property
    def total_s(self) -> float:
        """Generate plus write."""
        return self.generate_s + self.write_s


def run_once(accounts: int, reps: int, seed: int, out_dir: Path) -> Run:
    """Generate one org and write it as CSV into ``out_dir``, timing both halves."""
    started, started_cpu = time.perf_counter(), time.process_time()
    org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
    generated, generated_cpu = time.perf_counter(), time.process_time()
    written = write_csv(org, out_dir)
    finished, finished_cpu = time.perf_counter(), time.process_time()
    size = sum((out_dir / name).stat().st_size for name in written)
    return Run(
        generate_s=generated - started,
        write_s=finished - generated,
        generate_cpu_s=generated_cpu - started_cpu,
        write_cpu_s=finished_cpu - generated_cpu,
        rows=sum(written.values()),
        csv_bytes=size,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark ``--repeats`` times and print each run and the median."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the CSV files here (default: a temp dir)"
    )
    args = parser.parse_args(argv)

    print(f"sandbox generator: {args.accounts:,} accounts, {args.reps:,} reps, seed {args.seed}")
    print("times are wall clock; cpu = this process's CPU time (all threads), a check on a busy machine")
    runs: list[Run] = []
    for i in range(args.repeats):
        scratch = Path(tempfile.mkdtemp(prefix="bench-generate-")) if args.out is None else args.out
        try:
            run = run_once(args.accounts, args.reps, args.seed, scratch)
        finally:
            if args.out is None:
                shutil.rmtree(scratch, ignore_errors=True)
        runs.append(run)
        print(
            f"run {i + 1}: generate {run.generate_s:6.2f} s (cpu {run.generate_cpu_s:5.2f}) "
            f"{run.rows / run.generate_s:>9,.0f} rows/s | "
            f"write {run.write_s:6.2f} s (cpu {run.write_cpu_s:5.2f}) "
            f"{run.rows / run.write_s:>9,.0f} rows/s {run.csv_bytes / run.write_s / 1e6:4,.0f} MB/s | "
            f"total {run.total_s:6.2f} s | peak RSS {peak_rss_mib():,.0f} MiB | "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if i == 0:
            print(f"       rows {run.rows:,} in 4 files, {run.csv_bytes / 1e6:,.0f} MB of CSV", flush=True)
    if len(runs) > 1:
        print(
            f"median: generate {statistics.median(r.generate_s for r in runs):.2f} s  "
            f"write {statistics.median(r.write_s for r in runs):.2f} s  "
            f"total {statistics.median(r.total_s for r in runs):.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
