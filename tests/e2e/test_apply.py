"""``territory apply`` as an operator runs it, against the sandbox Salesforce through the real client.

The write-back is killed with SIGKILL while it writes; a second ``territory apply`` finishes the
proposal, and the sandbox's count of API writes per record shows every move written exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from connectors.sandbox.salesforce import SalesforceFaults, SandboxServer, start_salesforce_sandbox
from store import proposals as props
from store.db import make_engine
from tests.helpers.processes import TERRITORY, run, wait_for
from tests.pg import url_text

pytestmark = pytest.mark.e2e

MOVES = 120


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    org = generate_org(accounts=600, reps=8, seed=31, now=DEFAULT_NOW)
    server = start_salesforce_sandbox(org, faults=SalesforceFaults(retry_after=0.01), cert_dir=tmp_path)
    yield server
    server.stop()


@pytest.fixture
def setup(
    sandbox: SandboxServer, fresh_database: Callable[[], URL]
) -> Iterator[tuple[dict[str, str], Engine]]:
    """A database synced from the sandbox, and the environment that points territory at both."""
    url = fresh_database()
    env = {
        "TERRITORY_DATABASE_URL": url_text(url),
        "TERRITORY_SALESFORCE__AUTH": "access_token",
        "TERRITORY_SALESFORCE__INSTANCE_URL": sandbox.url,
        "TERRITORY_SALESFORCE__ACCESS_TOKEN": sandbox.access_token,
        "TERRITORY_SALESFORCE__CA_BUNDLE": str(sandbox.ca_path),
        "TERRITORY_SCHEDULER__SYNC_SOURCE": "salesforce",
        "TERRITORY_WRITEBACK__CHUNK_SIZE": "10",
    }
    for args in (["migrate"], ["sync", "--source", "salesforce"]):
        result = run(*args, env=env)
        assert result.returncode == 0, result.stderr
    engine = make_engine(url)
    yield env, engine
    engine.dispose()


def _approved_proposal(engine: Engine, env: dict[str, str]) -> list[props.NewMove]:
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM owners WHERE active ORDER BY id")).scalars().all()
        rows = conn.execute(
            text("SELECT id, owner_id FROM accounts WHERE owner_id = ANY(:a) ORDER BY id LIMIT :n"),
            {"a": list(active), "n": MOVES},
        ).all()
    moves = [
        props.NewMove(a, o, next(x for x in active if x != o), o, "e2e move", effective_date=None)
        for a, o in rows
    ]
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        proposal_id, _ = props.create_proposal(
            conn, scenario="revenue", fingerprint="e2e", moves=moves, now=now,
            expires_at=now + dt.timedelta(days=14),
        )  # fmt: skip
    approved = run("proposals", "approve", str(proposal_id), "--as", "Sam", "--format", "json", env=env)
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["state"] == "approved"
    return moves


def test_apply_killed_mid_write_then_rerun_writes_every_move_once(
    setup: tuple[dict[str, str], Engine], sandbox: SandboxServer
) -> None:
    env, engine = setup
    moves = _approved_proposal(engine, env)
    sandbox.faults.delay_seconds = 0.05  # each CRM call takes a while: the kill lands mid-apply
    base = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    proc = subprocess.Popen(
        [TERRITORY, "apply"], env=base | env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: sum(sandbox.state.api_writes.values()) >= 15, 60, "the first writes")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    written_before = sum(sandbox.state.api_writes[("Account", m.account_id)] for m in moves)
    assert 0 < written_before < MOVES  # killed with some moves written and some not
    sandbox.faults.delay_seconds = 0.0

    result = run("apply", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)["proposals"]
    assert report["state"] == "applied"
    assert json.loads(result.stdout)["sync"]["status"] == "succeeded"  # re-synced after writing
    for move in moves:
        assert sandbox.state.api_writes[("Account", move.account_id)] == 1, move.account_id
        assert sandbox.state.record("Account", move.account_id)["OwnerId"] == move.to_owner_id  # type: ignore[index]
    with engine.connect() as conn:
        owners = dict(conn.execute(text("SELECT id, owner_id FROM accounts")).all())
    assert all(owners[m.account_id] == m.to_owner_id for m in moves)  # the re-sync brought them home

    again = run("apply", env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing due" in again.stdout


def test_apply_without_a_crm_is_a_configuration_error(fresh_database: Callable[[], URL]) -> None:
    env = {"TERRITORY_DATABASE_URL": url_text(fresh_database())}
    assert run("migrate", env=env).returncode == 0
    result = run("apply", env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [
        "territory: config error: scheduler.sync_source is not set: there is no CRM to write approved moves to"
    ]
