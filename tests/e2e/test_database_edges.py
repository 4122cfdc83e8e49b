"""The database's edges as a user meets them: a hung server, a hung statement, two migrations at once."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from connectors.sandbox.generator import DEFAULT_NOW, generate_org, write_csv
from store import migrate
from store.db import make_engine
from tests.helpers.processes import TERRITORY, run, wait_for
from tests.pg import url_text

pytestmark = pytest.mark.e2e


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")} | extra


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP port that completes the handshake (the listen backlog) and then never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_a_server_that_never_answers_is_one_line_after_the_connect_timeout() -> None:
    with _silent_server() as port:
        began = time.monotonic()
        result = run(
            "migrate",
            env={
                "TERRITORY_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{port}/none",
                "TERRITORY_DATABASE__CONNECT_TIMEOUT_SECONDS": "1",
            },
            timeout=60,
        )
        took = time.monotonic() - began
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("territory: database error: cannot connect to")
    assert "timeout" in lines[0]
    assert took < 30  # the 1 s connect timeout, plus the interpreter's start; not libpq's forever


def test_the_statement_timeout_cancels_a_hung_statement(fresh_database: Callable[[], URL]) -> None:
    engine = make_engine(fresh_database(), statement_timeout=1)
    try:
        began = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"), engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(10)"))
        assert time.monotonic() - began < 5
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "1s"
    finally:
        engine.dispose()


def test_a_command_blocked_past_the_statement_timeout_is_one_line_and_exit_1(
    fresh_database: Callable[[], URL],
) -> None:
    url = fresh_database()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as blocker:
            blocker.execute(text("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE"))  # held until rollback
            result = run(
                "health",
                env={
                    "TERRITORY_DATABASE_URL": url_text(url),
                    "TERRITORY_DATABASE__STATEMENT_TIMEOUT_SECONDS": "1",
                },
                timeout=60,
            )
            blocker.rollback()
    finally:
        engine.dispose()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "territory: database error: canceling statement due to statement timeout"


def test_two_migrations_at_once_both_end_at_head(fresh_database: Callable[[], URL]) -> None:
    url = fresh_database()
    env = _env({"TERRITORY_DATABASE_URL": url_text(url)})
    procs = [
        subprocess.Popen(
            [TERRITORY, "migrate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]
    engine = make_engine(url)
    try:
        head = migrate.heads(engine)[0]
        assert migrate.current(engine) == head
    finally:
        engine.dispose()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outcomes]
    reports = sorted(out.strip() for out, _ in outcomes)
    # Whichever took the lock second waited, then found the database already at head.
    assert reports == sorted(
        [f"database at revision {head} (was empty)", f"database at revision {head} (was {head})"]
    )


def test_the_database_lost_mid_sync_is_a_failed_run_and_its_summary(
    fresh_database: Callable[[], URL], tmp_path: Path
) -> None:
    """The sync's connection is killed while the accounts' load waits on a lock held here (so the
    moment is certain): one summary line, exit 1, the run recorded failed, what committed before kept."""
    url = fresh_database()
    engine = make_engine(url)
    write_csv(generate_org(accounts=200, reps=6, seed=4, now=DEFAULT_NOW), tmp_path / "export")
    env = _env({"TERRITORY_DATABASE_URL": url_text(url)})
    waiting = text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND wait_event_type = 'Lock'"
    )
    try:
        migrate.upgrade(engine)
        with engine.connect() as blocker, engine.connect() as watcher:
            blocker.execute(text("LOCK TABLE opportunities IN ACCESS EXCLUSIVE MODE"))  # until rollback
            proc = subprocess.Popen(
                [TERRITORY, "sync", "--source", "csv", "--path", str(tmp_path / "export")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )  # fmt: skip

            def blocked() -> int | None:
                pid = watcher.execute(waiting).scalar()
                watcher.rollback()  # pg_stat_activity is read once per transaction
                return pid

            pid = wait_for(blocked, timeout=60)
            watcher.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            watcher.commit()
            blocker.rollback()
            out, err = proc.communicate(timeout=60)
        with engine.connect() as conn:
            runs = dict(conn.execute(text("SELECT object, status FROM sync_runs ORDER BY id")).all())
            owners = conn.execute(text("SELECT count(*) FROM owners")).scalar_one()
    finally:
        engine.dispose()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert out.strip().splitlines() == [out.strip()]  # the summary, on one line
    assert out.startswith("csv sync failed: ")
    assert out.rstrip().endswith(
        "(accounts: database error: terminating connection due to administrator command)"
    )
    assert runs == {"owners": "succeeded", "accounts": "failed"}  # the sync stops at the failed object
    assert owners == 6  # what committed before it stays
