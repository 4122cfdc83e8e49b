"""The leader lock and the scheduler's bookkeeping on the real PostgreSQL: one leader, run keys, queues."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_ADDED, EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobEvent
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from service.leader import LeaderLock, lock_key
from service.scheduler import (
    HandedBack,
    JobContext,
    Scheduler,
    crontab,
    interval_minutes,
    latest_slot,
    monthly_key,
)
from service.settings import SchedulerSettings
from store.outbox import claim_sync_requests, pending_sync_requests, queue_sync_request
from tests.helpers.processes import wait_for

pytestmark = pytest.mark.integration

KEY = lock_key("territory-monitor:test-leader")


@pytest.fixture
def locks(db: Engine) -> Iterator[Callable[[str], LeaderLock]]:
    made: list[LeaderLock] = []

    def make(holder: str) -> LeaderLock:
        lock = LeaderLock(db, key=KEY, holder=holder)
        made.append(lock)
        return lock

    yield make
    for lock in made:
        lock.close()


def test_only_one_replica_holds_the_lock(locks: Callable[[str], LeaderLock]) -> None:
    a, b = locks("a"), locks("b")
    assert a.try_acquire()
    assert a.try_acquire()  # holding it already
    assert not b.try_acquire()
    assert a.check()
    a.release()
    assert not a.held
    assert b.try_acquire()
    assert not a.try_acquire()


def test_a_dead_holder_connection_frees_the_lock(db: Engine, locks: Callable[[str], LeaderLock]) -> None:
    a, b = locks("a"), locks("b")
    assert a.try_acquire()
    with db.connect() as conn:  # what PostgreSQL does when the holder's process or node dies
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        ).all()
    assert killed == [(True,)]
    wait_for(b.try_acquire, 5, "the lock to be free")
    assert b.held
    assert not a.check()  # the old holder notices and steps down
    assert not a.held


def test_latest_slot_and_month_keys() -> None:
    monthly = crontab("0 2 1 * *")
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    assert latest_slot(monthly, now, dt.timedelta(days=31)) == dt.datetime(2026, 11, 1, 2, tzinfo=dt.UTC)
    assert latest_slot(monthly, now, dt.timedelta(days=20)) is None
    assert latest_slot(monthly, dt.datetime(2026, 11, 1, 2, 0, 5, tzinfo=dt.UTC), dt.timedelta(hours=1)) == (
        dt.datetime(2026, 11, 1, 2, tzinfo=dt.UTC)
    )
    assert monthly_key(dt.datetime(2026, 12, 31, 23, tzinfo=dt.UTC)) == "2026-12"


class Recorder:
    """A job that records who ran it, optionally slowly and cooperatively."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.calls: list[str] = []
        self.seconds = seconds
        self.lock = threading.Lock()

    def __call__(self, ctx: JobContext) -> Mapping[str, Any]:
        with self.lock:
            self.calls.append(ctx.holder)
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            ctx.check_stop()
            time.sleep(0.02)
        return {"holder": ctx.holder}


def make_scheduler(db: Engine, holder: str, **overrides: Any) -> Scheduler:
    settings = SchedulerSettings(heartbeat_seconds=0.2, misfire_grace_seconds=31 * 86400, **overrides)
    return Scheduler(
        db, settings, holder=holder, registry=CollectorRegistry(), lock=LeaderLock(db, key=KEY, holder=holder)
    )


def job_rows(db: Engine, job: str) -> list[Any]:
    with db.connect() as conn:
        return conn.execute(
            text("SELECT holder, status, run_key, error FROM job_runs WHERE job = :j ORDER BY id"), {"j": job}
        ).all()


def test_two_schedulers_one_runs_and_a_month_runs_once(db: Engine) -> None:
    ticks, monthly = Recorder(), Recorder()
    schedulers = [make_scheduler(db, "r1"), make_scheduler(db, "r2")]
    for s in schedulers:
        s.register("tick", ticks, interval_minutes(0.3 / 60))
        s.register("monthly", monthly, crontab("0 2 1 * *"), run_key=monthly_key)  # missed: caught up once
        s.register("off", ticks, interval_minutes(0.1 / 60), enabled=False)
        s.start()
    try:
        wait_for(lambda: len(job_rows(db, "tick")) >= 4)
        leaders = [s for s in schedulers if s.is_leader]
        assert len(leaders) == 1
        assert set(ticks.calls) == {leaders[0].holder}
        assert [s.heartbeat_age() < 2 for s in schedulers] == [True, True]
        wait_for(lambda: [r.status for r in job_rows(db, "monthly")] == ["succeeded"])
        # The leader steps down; the other replica takes over and does not run the month again.
        first = leaders[0]
        assert first.shutdown(timeout=2)
        other = next(s for s in schedulers if s is not first)
        wait_for(lambda: other.is_leader)
        count = len(job_rows(db, "tick"))
        wait_for(lambda: len(job_rows(db, "tick")) >= count + 2)
        assert {r.holder for r in job_rows(db, "tick")} == {"r1", "r2"}
        months = job_rows(db, "monthly")
        assert len(months) == 1
        assert months[0].run_key == latest_slot(
            crontab("0 2 1 * *"), dt.datetime.now(dt.UTC), dt.timedelta(days=31)
        ).strftime("%Y-%m")  # type: ignore[union-attr]
        assert monthly.calls == [first.holder]
        assert job_rows(db, "off") == []
    finally:
        for s in schedulers:
            s.shutdown(timeout=2)


def test_shutdown_hands_back_a_running_job_and_the_next_leader_resumes(db: Engine) -> None:
    slow = Recorder(seconds=30)
    first = make_scheduler(db, "r1")
    first.register("slow", slow, interval_minutes(60))
    first.start()
    wait_for(lambda: first.running() == ["slow"])
    started = time.monotonic()
    assert first.shutdown(timeout=3)  # the job sees `stopping` and hands back at its next check
    assert time.monotonic() - started < 3
    assert [(r.status, r.error) for r in job_rows(db, "slow")] == [
        ("interrupted", "slow handed back at shutdown")
    ]
    quick = Recorder()
    second = make_scheduler(db, "r2")
    second.register("slow", quick, interval_minutes(60))
    second.start()
    try:
        # The interrupted run does not count as done: the new leader runs it now, not an hour later.
        wait_for(lambda: [r.status for r in job_rows(db, "slow")] == ["interrupted", "succeeded"])
    finally:
        second.shutdown(timeout=2)


class _ApsRuns:
    """The APScheduler runs of one job: scheduled, and finished (executed or raised)."""

    def __init__(self, scheduler: Scheduler, job: str) -> None:
        self._aps = scheduler._aps
        self._job = job
        self._guard = threading.Lock()
        self.added: list[str] = []
        self.finished: list[str] = []
        self._aps.add_listener(self._on_event, EVENT_JOB_ADDED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def _on_event(self, event: JobEvent) -> None:
        job = self._aps.get_job(event.job_id) if event.code == EVENT_JOB_ADDED else None
        with self._guard:
            if job is not None and self._job in job.args:
                self.added.append(event.job_id)
            elif event.code != EVENT_JOB_ADDED and event.job_id in self.added:
                self.finished.append(event.job_id)

    def settled(self) -> bool:
        """Each scheduled run of the job has finished and none is waiting."""
        with self._guard:
            done = sorted(self.added) == sorted(self.finished)
        pending = [j for j in self._aps.get_jobs() if self._job in j.args]
        return done and not pending


def test_a_failing_job_is_recorded_and_a_triggered_run_coalesces(db: Engine) -> None:
    def boom(ctx: JobContext) -> None:
        raise RuntimeError("the CRM said no")

    calls = Recorder(seconds=0.3)
    s = make_scheduler(db, "r1")
    s.register("boom", boom, interval_minutes(60))
    s.register("snapshot", calls, None)
    snapshot_runs = _ApsRuns(s, "snapshot")
    assert not s.trigger("snapshot", 0)  # not the leader yet: nothing scheduled
    s.start()
    try:
        wait_for(lambda: s.is_leader)
        assert s.trigger("snapshot", 0.5)
        assert s.trigger("snapshot", 0.5)  # absorbed by the pending one
        wait_for(lambda: [r.status for r in job_rows(db, "snapshot")] == ["succeeded"])
        wait_for(snapshot_runs.settled)  # every run the triggers scheduled has run, none is pending
        assert len(calls.calls) == 1
        assert [r.status for r in job_rows(db, "snapshot")] == ["succeeded"]
        wait_for(lambda: [r.status for r in job_rows(db, "boom")] == ["failed"])
        assert job_rows(db, "boom")[0].error == "RuntimeError: the CRM said no"
        with pytest.raises(KeyError):
            s.trigger("nope")
    finally:
        s.shutdown(timeout=2)


def test_sync_requests_are_deduplicated_claimed_once_and_put_back_on_failure(db: Engine) -> None:
    assert queue_sync_request(db, ["accounts"], "k1", {"events": 1})
    assert not queue_sync_request(db, ["accounts"], "k1", {"events": 1})  # a retried delivery
    assert queue_sync_request(db, ["opportunities", "accounts"], "k2", {"events": 2})
    assert pending_sync_requests(db) == 2
    with claim_sync_requests(db, "r1") as claimed:
        assert len(claimed.ids) == 2
        assert claimed.objects == {"accounts", "opportunities"}
        with claim_sync_requests(db, "r2") as concurrent:  # locked rows are skipped, not claimed twice
            assert concurrent.ids == ()
    assert pending_sync_requests(db) == 0
    assert queue_sync_request(db, ["accounts"], "k3", {})

    def fail_while_claimed() -> None:
        with claim_sync_requests(db, "r1") as claimed:
            assert len(claimed.ids) == 1
            raise HandedBack("stop")

    with pytest.raises(HandedBack):
        fail_while_claimed()
    with db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT done_at, attempts, last_error, available_at > now() AS later FROM outbox WHERE idempotency_key = 'k3'"
            )
        ).one()
    assert row.done_at is None
    assert row.attempts == 1
    assert row.last_error == "HandedBack: stop"
    assert row.later  # retried after a delay, not in a tight loop
    assert pending_sync_requests(db) == 0
