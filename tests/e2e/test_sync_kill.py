"""SIGKILL `territory sync` at random points, run it again, and compare PostgreSQL with the CSV export.

Small batches make the sync long enough to be killed between (and inside) batch transactions. After
the re-run the store must equal the export: no duplicate, no lost row, no lost delete, one current
assignment per live account with its current owner.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL

from connectors.sandbox.generator import generate_org, write_csv
from store import migrate
from store.db import make_engine
from tests.helpers.processes import TERRITORY
from tests.helpers.records import NOW
from tests.pg import url_text

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("TERRITORY_TEST_KILL_SEED", "20261123"))
KILLS_PER_ROUND = int(os.environ.get("TERRITORY_TEST_KILLS", "1"))


def _env(url: URL) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    return base | {
        "TERRITORY_DATABASE_URL": url_text(url),
        "TERRITORY_SYNC__BATCH_SIZE": "10",
        "TERRITORY_LOGGING__LEVEL": "WARNING",
    }


def _sync(folder: Path, url: URL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [TERRITORY, "sync", "--source", "csv", "--path", str(folder), "--format", "json"],
        env=_env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _since(engine: Engine, aggregate: str, run_id: int) -> int:
    """``aggregate`` over the sync_runs rows after ``run_id``: the runs of the sync under test."""
    with engine.connect() as conn:
        sql = f"SELECT {aggregate} FROM sync_runs WHERE id > :n"  # noqa: S608 - the test's own SQL
        return int(conn.execute(text(sql), {"n": run_id}).scalar_one())


def _kill_mid_way(folder: Path, url: URL, rng: random.Random, runs_before: int) -> int:
    """Start a sync and SIGKILL it after its n-th commit (n random in 1..3); returns n.

    The kill point is counted in commits (batches, or whole objects on the empty-table bulk load),
    not in time, so it lands mid-sync however fast the machine is. A sync that outruns the kill (it
    exited, or the kill came after its last object had finished: no run of it is left running) is
    started again with a smaller n.
    """
    engine = create_engine(url)
    try:
        most = 3
        for _attempt in range(5):
            commits = rng.randint(1, most)
            most = max(1, commits - 1)  # if this one outruns the kill, aim earlier next time
            proc = _sync(folder, url)
            try:
                seen: set[int] = set()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and proc.poll() is None and len(seen) < commits:
                    done = _since(engine, "coalesce(sum(rows_read), 0)", runs_before)
                    if done:
                        seen.add(int(done))
                    time.sleep(0.002)
                proc.send_signal(signal.SIGKILL)
                if proc.wait(10) == -signal.SIGKILL and _since(
                    engine, "count(*) FILTER (WHERE status = 'running')", runs_before
                ):
                    return commits
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            with engine.connect() as conn:
                runs_before = int(conn.execute(text("SELECT max(id) FROM sync_runs")).scalar_one())
        raise AssertionError("five syncs in a row ended before they could be killed")
    finally:
        engine.dispose()


def _run_to_end(folder: Path, url: URL) -> None:
    proc = _sync(folder, url)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


def _assert_store_equals_export(url: URL, folder: Path) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:

            def frame(sql: str) -> pd.DataFrame:
                return pd.read_sql_query(text(sql), conn)

            owners = frame("SELECT id FROM owners WHERE active ORDER BY id")
            accounts = frame(
                "SELECT id, owner_id, tier, arr::float8 AS arr, modified_at FROM accounts WHERE NOT deleted ORDER BY id"
            )
            opps = frame(
                "SELECT id, account_id, amount::float8 AS amount, stage FROM opportunities WHERE NOT deleted ORDER BY id"
            )
            counts = frame(
                "SELECT (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM quarantine) AS quarantined, "
                "(SELECT count(*) FROM accounts a WHERE NOT a.deleted AND (SELECT count(*) FROM assignment_history h "
                " WHERE h.account_id = a.id AND h.end_date IS NULL AND h.owner_id = a.owner_id) <> 1) AS bad_history"
            )
    finally:
        engine.dispose()
    src_owners = pd.read_csv(folder / "owners.csv", dtype=str)
    src_accounts = pd.read_csv(folder / "accounts.csv", dtype=str).sort_values("id").reset_index(drop=True)
    src_opps = pd.read_csv(folder / "opportunities.csv", dtype=str).sort_values("id").reset_index(drop=True)
    active = src_owners[src_owners["active"] == "true"]["id"].sort_values().tolist()
    assert owners["id"].tolist() == active
    assert accounts["id"].tolist() == src_accounts["id"].tolist()  # no lost row, no lost delete
    assert accounts["owner_id"].tolist() == src_accounts["owner_id"].tolist()
    assert accounts["tier"].tolist() == src_accounts["tier"].tolist()
    assert np.allclose(accounts["arr"].fillna(-1), src_accounts["arr"].astype(float).fillna(-1))
    assert opps["id"].tolist() == src_opps["id"].tolist()
    assert opps["account_id"].tolist() == src_opps["account_id"].tolist()
    assert np.allclose(opps["amount"].fillna(-1), src_opps["amount"].astype(float).fillna(-1))
    assert counts.iloc[0]["quarantined"] == 0
    assert counts.iloc[0]["bad_history"] == 0


def _change_export(folder: Path, rng: np.random.Generator) -> None:
    """What a CRM does between two exports: owner changes, edits, deletes, all with newer timestamps."""
    accounts = pd.read_csv(folder / "accounts.csv", dtype=str, keep_default_na=False)
    opps = pd.read_csv(folder / "opportunities.csv", dtype=str, keep_default_na=False)
    owners = pd.read_csv(folder / "owners.csv", dtype=str, keep_default_na=False)
    later = "2026-11-02T09:30:00Z"
    moved = rng.choice(len(accounts), size=20, replace=False)
    accounts.loc[moved, "owner_id"] = rng.choice(owners["id"].to_numpy(), size=20)
    accounts.loc[moved, "modified_at"] = later
    edited = rng.choice(len(opps), size=60, replace=False)
    opps.loc[edited, "amount"] = "4242.00"
    opps.loc[edited, "modified_at"] = later
    gone_accounts = set(accounts.loc[rng.choice(len(accounts), size=15, replace=False), "id"])
    accounts = accounts[~accounts["id"].isin(gone_accounts)]
    opps = opps[~opps["account_id"].isin(gone_accounts)]
    opps = opps.drop(index=opps.index[rng.choice(len(opps), size=30, replace=False)])
    accounts.to_csv(folder / "accounts.csv", index=False)
    opps.to_csv(folder / "opportunities.csv", index=False)


def test_killed_syncs_leave_postgres_equal_to_the_export_after_a_rerun(
    tmp_path: Path, fresh_database: Callable[[], URL]
) -> None:
    url = fresh_database()
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    rng = random.Random(SEED)
    folder = tmp_path / "export"
    write_csv(generate_org(accounts=300, reps=8, seed=SEED % 1000, now=NOW), folder)
    runs = 0
    kill_points: list[int] = []
    for round_ in range(2):
        if round_ == 1:
            _change_export(folder, np.random.default_rng(SEED))
        for _ in range(KILLS_PER_ROUND):
            kill_points.append(_kill_mid_way(folder, url, rng, runs))
            engine = create_engine(url)
            with engine.connect() as conn:
                runs = int(conn.execute(text("SELECT count(*) FROM sync_runs")).scalar_one())
            engine.dispose()
        _run_to_end(folder, url)
        _assert_store_equals_export(url, folder)
        engine = create_engine(url)
        with engine.connect() as conn:
            runs = int(conn.execute(text("SELECT count(*) FROM sync_runs")).scalar_one())
            statuses = {r[0] for r in conn.execute(text("SELECT DISTINCT status FROM sync_runs"))}
        engine.dispose()
        assert statuses == {"succeeded", "interrupted"}, (SEED, kill_points)


def test_a_broken_export_is_one_config_error_line(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "owners.csv").write_text("id,name\n", encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    result = subprocess.run(
        [TERRITORY, "sync", "--source", "csv", "--path", str(folder)],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"territory: config error: CSV folder {folder}: accounts.csv is missing"
    ]
