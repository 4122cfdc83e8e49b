"""``territory serve`` as real processes on one real database: one leader, takeover, SIGTERM, endpoints."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from service.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3
from store import migrate
from store.db import make_engine
from tests.helpers.processes import TERRITORY, free_port, run, wait_for
from tests.pg import url_text

pytestmark = pytest.mark.e2e

SECRET = "e2e-client-secret"
GRACE = 5.0


@dataclass
class Daemon:
    """One ``territory serve`` process and its port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def holder(self) -> str:
        return f"{socket.gethostname()}:{self.proc.pid}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url(path), timeout=5)

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.get("/healthz")
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(database: URL, **env: str) -> Daemon:
        port = free_port()
        log = tmp_path / f"serve-{len(started)}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
        settings = {
            "TERRITORY_DATABASE_URL": url_text(database),
            "TERRITORY_DATA_DIR": str(tmp_path / "data"),
            "TERRITORY_SERVER__PORT": str(port),
            "TERRITORY_SCHEDULER__HEARTBEAT_SECONDS": "0.5",
            "TERRITORY_SCHEDULER__HEARTBEAT_MAX_AGE_SECONDS": "10",
            "TERRITORY_SCHEDULER__SHUTDOWN_GRACE_SECONDS": str(GRACE),
            "TERRITORY_SCHEDULER__MISFIRE_GRACE_SECONDS": str(32 * 86400),  # the month's run catches up
            "TERRITORY_SCHEDULER__SNAPSHOT_DEBOUNCE_SECONDS": "1",
            "TERRITORY_SCHEDULER__WEBHOOK_POLL_SECONDS": "0.5",
            "TERRITORY_WEBHOOKS__HUBSPOT_CLIENT_SECRET": SECRET,
            **env,
        }
        with log.open("wb") as out:
            proc = subprocess.Popen([TERRITORY, "serve"], env=base | settings, stdout=out, stderr=out)
        daemon = Daemon(proc, port, log)
        started.append(daemon)
        wait_for(lambda: daemon.health() is not None or proc.poll() is not None, 60)
        assert proc.poll() is None, log.read_text()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def runs(engine: Engine, job: str) -> list[Any]:
    return rows(
        engine,
        "SELECT id, holder, status, run_key, started_at, finished_at, details FROM job_runs "
        "WHERE job = :j ORDER BY started_at",
        j=job,
    )


@pytest.fixture
def migrated(fresh_database: Callable[[], URL]) -> Iterator[tuple[URL, Engine]]:
    url = fresh_database()
    engine = make_engine(url)
    migrate.upgrade(engine)
    yield url, engine
    engine.dispose()


def export(folder: Path, accounts: int, reps: int) -> Path:
    result = run("sandbox", "export", "--out", str(folder), "--accounts", str(accounts), "--reps", str(reps))
    assert result.returncode == 0, result.stderr
    return folder


def signed(
    body: bytes, url: str, *, stamp: dt.datetime | None = None, secret: str = SECRET
) -> dict[str, str]:
    ms = int((stamp or dt.datetime.now(dt.UTC)).timestamp() * 1000)
    return {
        SIGNATURE_HEADER: sign_v3(secret, "POST", url, body, ms),
        TIMESTAMP_HEADER: str(ms),
        "Content-Type": "application/json",
    }


def test_two_replicas_one_leader_takeover_after_sigkill(
    migrated: tuple[URL, Engine], daemons: Callable[..., Daemon], tmp_path: Path
) -> None:
    url, engine = migrated
    folder = export(tmp_path / "csv", 300, 6)
    env = {
        "TERRITORY_SCHEDULER__SYNC_SOURCE": "csv",
        "TERRITORY_SCHEDULER__SYNC_PATH": str(folder),
        "TERRITORY_SCHEDULER__SYNC_INTERVAL_MINUTES": str(3 / 60),
    }
    a, b = daemons(url, **env), daemons(url, **env)
    wait_for(lambda: len([r for r in runs(engine, "sync") if r.status == "succeeded"]) >= 2, 60)
    leaders = [d for d in (a, b) if (d.health() or {}).get("leader")]
    assert len(leaders) == 1
    leader = leaders[0]
    follower = b if leader is a else a
    assert {r.holder for r in runs(engine, "sync")} == {leader.holder}
    assert rows(engine, "SELECT count(*) FROM accounts") == [(300,)]
    # The first sync changed rows: a debounced health snapshot followed; the missed month caught up once.
    wait_for(lambda: [r.status for r in runs(engine, "health_snapshot")][:1] == ["succeeded"], 30)
    wait_for(lambda: [r.status for r in runs(engine, "monthly_snapshot")] == ["succeeded"], 30)
    assert rows(engine, "SELECT count(*) FROM snapshots WHERE kind = 'monthly'") == [(1,)]

    # Endpoints on the follower: ready, alive, metrics; a webhook there is queued for the leader.
    assert follower.get("/readyz").status_code == 200
    metrics = follower.get("/metrics")
    assert metrics.status_code == 200
    assert "territory_scheduler_leader 0.0" in metrics.text
    assert "territory_scheduler_leader 1.0" in leader.get("/metrics").text
    hook = follower.url("/webhooks/hubspot")
    body = json.dumps([{"eventId": 7, "subscriptionType": "deal.propertyChange", "objectId": 1}]).encode()
    assert httpx.post(hook, content=body, headers=signed(body, hook), timeout=5).status_code == 200
    forged = httpx.post(hook, content=body, headers=signed(body, hook, secret="guess"), timeout=5)
    assert forged.status_code == 401
    stale_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
    stale = httpx.post(hook, content=body, headers=signed(body, hook, stamp=stale_at), timeout=5)
    assert stale.status_code == 401
    assert stale.json()["reason"] == "stale"
    wait_for(lambda: [r.status for r in runs(engine, "webhook_sync")] == ["succeeded"], 30)
    drained = runs(engine, "webhook_sync")[0]
    assert drained.holder == leader.holder
    assert drained.details["requests"] == 1
    assert [o["object"] for o in drained.details["objects"]] == ["opportunities"]

    # SIGKILL the leader: its session dies with it, the follower takes the lock and the jobs.
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(10)
    wait_for(lambda: (follower.health() or {}).get("leader"), 30)
    wait_for(
        lambda: any(r.holder == follower.holder and r.status == "succeeded" for r in runs(engine, "sync")), 30
    )

    syncs = runs(engine, "sync")
    assert {r.holder for r in syncs} == {leader.holder, follower.holder}
    assert all(r.status in ("succeeded", "interrupted") for r in syncs)
    for earlier, later in itertools.pairwise(syncs):  # no two runs of the job overlapped
        assert earlier.finished_at is not None
        assert later.started_at >= earlier.finished_at
    months = runs(engine, "monthly_snapshot")
    assert [(r.holder, r.status) for r in months] == [(leader.holder, "succeeded")]  # not run again
    assert rows(engine, "SELECT count(*) FROM snapshots WHERE kind = 'monthly'") == [(1,)]


def test_sigterm_during_a_sync_exits_within_grace_and_the_next_run_resumes(
    migrated: tuple[URL, Engine], daemons: Callable[..., Daemon], tmp_path: Path
) -> None:
    url, engine = migrated
    folder = export(tmp_path / "csv", 400, 8)
    env = {
        "TERRITORY_SCHEDULER__SYNC_SOURCE": "csv",
        "TERRITORY_SCHEDULER__SYNC_PATH": str(folder),
        "TERRITORY_SYNC__BATCH_SIZE": "40",  # many batch boundaries: many safe points to hand back at
        "TERRITORY_SCHEDULER__MONTHLY_SNAPSHOT_ENABLED": "false",
    }
    first = daemons(url, **env)
    wait_for(lambda: [r.status for r in runs(engine, "sync")] == ["running"], 30)
    wait_for(lambda: rows(engine, "SELECT count(*) FROM owners")[0][0] > 0, 30)  # inside the sync
    sent = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(GRACE + 5) == 0
    assert time.monotonic() - sent < GRACE
    log = first.log.read_text()
    assert '"message": "leader lock released"' in log
    interrupted = runs(engine, "sync")
    assert [r.status for r in interrupted] == ["interrupted"]
    # Handed back mid-way: some accounts or opportunities are not there yet (an object's first load
    # into an empty table is one transaction, so the stop may fall in accounts or in opportunities).
    opportunities = sum(1 for _ in (folder / "opportunities.csv").open(encoding="utf-8")) - 1
    stored = "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM opportunities)"
    assert rows(engine, stored)[0][0] < 400 + opportunities

    second = daemons(url, **env)
    wait_for(lambda: [r.status for r in runs(engine, "sync")] == ["interrupted", "succeeded"], 60)
    assert runs(engine, "sync")[1].holder == second.holder
    assert rows(engine, "SELECT count(*) FROM accounts") == [(400,)]
    assert rows(engine, "SELECT count(*) FROM opportunities") == [(opportunities,)]
    assert rows(engine, "SELECT count(*) FROM sync_runs WHERE status = 'running'") == [(0,)]


def test_readiness_fails_until_migrated_and_liveness_follows_the_heartbeat(
    fresh_database: Callable[[], URL], daemons: Callable[..., Daemon]
) -> None:
    url = fresh_database()
    daemon = daemons(url, TERRITORY_SCHEDULER__MONTHLY_SNAPSHOT_ENABLED="false")
    ready = daemon.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"].startswith("migrations not at head (database at empty")
    health = daemon.get("/healthz")
    assert health.status_code == 200
    assert health.json()["leader"] is False  # no jobs on a schema they were not written for
    assert daemon.get("/metrics").status_code == 200
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    wait_for(lambda: daemon.get("/readyz").status_code == 200, 10)
    wait_for(lambda: (daemon.health() or {}).get("leader"), 10)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(GRACE + 5) == 0
