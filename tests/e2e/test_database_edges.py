"""The database's edges as a user meets them: a hung server, a hung statement, two migrations at once."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from store import migrate
from store.db import make_engine
from tests.helpers.processes import TERRITORY, run
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
