"""The scheduler of ``territory serve``: a job registry, leader-only runs recorded in ``job_runs``, events.

Every replica runs an APScheduler ``BackgroundScheduler`` with one control job (the heartbeat that
/healthz reads, and the leader lock: try it, or check it is still held). Only while this replica holds
the lock are the registered jobs scheduled; on election each job's next run is computed from
``job_runs`` (an interval job runs when its interval since the last run has passed, a keyed job
whose slot passed within the misfire grace and has no successful run catches up once), so a restart or
a leader change neither skips nor doubles a run. A run with a ``run_key`` (a month) is claimed by a
compare-and-set insert on the unique ``(job, run_key)``: it happens once across replicas and restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy import Connection, Engine, text

from service.leader import LeaderLock
from service.settings import SchedulerSettings

__all__ = [
    "HandedBack",
    "JobContext",
    "JobSpec",
    "Scheduler",
    "crontab",
    "interval_minutes",
    "latest_slot",
    "monthly_key",
]

log = logging.getLogger(__name__)

CONTROL_JOB: Final = "_control"


class HandedBack(Exception):
    """Raised by a job that stopped at a safe point because the process is shutting down."""


@dataclass(frozen=True)
class JobContext:
    """What a running job gets: its run's id, the time, and ways to cooperate with the scheduler."""

    job: str
    run_id: int
    holder: str
    now: dt.datetime
    stopping: threading.Event
    trigger: Callable[[str, float], bool]

    def check_stop(self) -> None:
        """Raise :class:`HandedBack` when shutdown began (call it between units of work)."""
        if self.stopping.is_set():
            raise HandedBack(f"{self.job} handed back at shutdown")


JobFunc = Callable[[JobContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class JobSpec:
    """A registered job: ``trigger`` None means it runs only when an event triggers it."""

    name: str
    func: JobFunc
    trigger: BaseTrigger | None
    enabled: bool = True
    run_key: Callable[[dt.datetime], str] | None = None
    has_work: Callable[[], bool] | None = None  # cheap check first: no work, no job_runs row
    serial: str | None = None  # jobs sharing this name never run at the same time (default: the name)


def monthly_key(now: dt.datetime) -> str:
    """The run key of a job that runs once a month: the month it runs in (UTC)."""
    return now.astimezone(dt.UTC).strftime("%Y-%m")


def interval_minutes(minutes: float) -> IntervalTrigger:
    """An interval trigger in UTC."""
    return IntervalTrigger(seconds=minutes * 60, timezone=dt.UTC)


def crontab(line: str) -> CronTrigger:
    """A crontab line in UTC as a trigger."""
    return CronTrigger.from_crontab(line, timezone=dt.UTC)


def latest_slot(trigger: BaseTrigger, now: dt.datetime, window: dt.timedelta) -> dt.datetime | None:
    """The last time ``trigger`` fired (or should have) at or before ``now``, looking back ``window``."""
    slot: dt.datetime | None = None
    fire: dt.datetime | None = trigger.get_next_fire_time(None, now - window)
    while fire is not None and fire <= now:
        slot = fire
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(microseconds=1))
    return slot


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class _Metrics:
    """This replica's scheduler state (job runs are exported from ``job_runs`` by the monitor)."""

    leader: Gauge
    heartbeat: Gauge

    @classmethod
    def on(cls, registry: CollectorRegistry) -> _Metrics:
        return cls(
            leader=Gauge(
                "territory_scheduler_leader",
                "1 while this replica holds the scheduler lock",
                registry=registry,
            ),
            heartbeat=Gauge(
                "territory_scheduler_heartbeat_timestamp_seconds",
                "Unix time of the scheduler's last heartbeat",
                registry=registry,
            ),
        )


@dataclass
class _Running:
    run_id: int
    job: str
    started: float = field(default_factory=time.monotonic)


class Scheduler:
    """Registered jobs, run by whichever replica holds the leader lock; start and stop are explicit."""

    def __init__(
        self,
        engine: Engine,
        settings: SchedulerSettings,
        *,
        holder: str,
        registry: CollectorRegistry,
        can_lead: Callable[[], bool] = lambda: True,
        clock: Callable[[], dt.datetime] = _utcnow,
        lock: LeaderLock | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.holder = holder
        self.lock = lock or LeaderLock(engine, holder=holder)
        self._can_lead = can_lead
        self._clock = clock
        self._specs: dict[str, JobSpec] = {}
        self._serial: dict[str, threading.Lock] = {}
        self._running: dict[int, _Running] = {}
        self._running_guard = threading.Lock()
        self._control_guard = threading.Lock()
        self._stopping = threading.Event()
        self._closed = False
        self._beat = -math.inf
        self._grace = dt.timedelta(seconds=settings.misfire_grace_seconds)
        self._metrics = _Metrics.on(registry)
        self._aps = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max_workers=4),
                "control": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={
                "coalesce": True,  # runs missed while down collapse into one
                "max_instances": 1,
                "misfire_grace_time": settings.misfire_grace_seconds,
            },
            timezone=dt.UTC,
        )

    # --- the registry ---------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        func: JobFunc,
        trigger: BaseTrigger | None,
        *,
        enabled: bool = True,
        run_key: Callable[[dt.datetime], str] | None = None,
        has_work: Callable[[], bool] | None = None,
        serial: str | None = None,
    ) -> None:
        """Add a job (one call per job); disabled jobs are listed but never scheduled."""
        if name in self._specs or name == CONTROL_JOB:
            raise ValueError(f"job {name!r} is registered twice")
        self._specs[name] = JobSpec(name, func, trigger, enabled, run_key, has_work, serial)
        self._serial.setdefault(serial or name, threading.Lock())

    @property
    def jobs(self) -> Mapping[str, JobSpec]:
        """The registered jobs by name."""
        return dict(self._specs)

    # --- state the HTTP app reads ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this replica holds the leader lock."""
        return self.lock.held

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun (no new work is taken)."""
        return self._stopping.is_set()

    def heartbeat_age(self) -> float:
        """Seconds since the control job last ran (infinite before the first beat)."""
        return time.monotonic() - self._beat

    def running(self) -> list[str]:
        """Names of the jobs running now."""
        with self._running_guard:
            return [r.job for r in self._running.values()]

    # --- start, events, stop --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the control loop; jobs are scheduled once this replica is elected."""
        self._aps.add_job(
            self._control,
            IntervalTrigger(seconds=self.settings.heartbeat_seconds, timezone=dt.UTC),
            id=CONTROL_JOB,
            executor="control",
            next_run_time=self._clock(),
            misfire_grace_time=None,
        )
        self._aps.start()
        log.info("scheduler started", extra={"holder": self.holder, "jobs": sorted(self._specs)})

    def trigger(self, name: str, delay_seconds: float = 0.0) -> bool:
        """Run ``name`` once after ``delay_seconds``; a pending triggered run absorbs this one.

        Only the leader runs jobs: elsewhere this returns False (callers with durable work queue it).
        """
        spec = self._specs.get(name)
        if spec is None:
            raise KeyError(f"no job named {name!r}")
        if not spec.enabled or not self.lock.held or self.stopping:
            return False
        event_id = f"{name}:event"
        if self._aps.get_job(event_id) is not None:
            return True
        self._aps.add_job(
            self._run,
            "date",
            run_date=self._clock() + dt.timedelta(seconds=delay_seconds),
            args=[name],
            id=event_id,
            misfire_grace_time=None,
        )
        log.info("job triggered", extra={"job": name, "delay_seconds": delay_seconds})
        return True

    def begin_shutdown(self) -> None:
        """Stop taking new work: nothing new starts; running jobs see ``stopping`` set."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._aps.running:
            self._aps.pause()
        log.info("scheduler stopping", extra={"holder": self.holder, "running": self.running()})

    def shutdown(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for running jobs, hand back the rest, release the lock.

        Returns True when nothing was left running. A job still running is marked ``interrupted`` in
        ``job_runs``; its open transaction dies with the process, so the next run resumes cleanly.
        """
        self.begin_shutdown()
        if self._closed:
            return True
        self._closed = True
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._running_guard:
            left = list(self._running.values())
        for run in left:
            self._finish(
                run.run_id, "interrupted", error="handed back: the process stopped before it finished"
            )
            log.warning("job handed back at shutdown", extra={"job": run.job, "job_run_id": run.run_id})
        if self._aps.running:
            self._aps.shutdown(wait=False)
        self.lock.close()
        self._metrics.leader.set(0)
        log.info("scheduler stopped", extra={"holder": self.holder, "handed_back": len(left)})
        return not left

    # --- the control loop -----------------------------------------------------------------------------

    def _control(self) -> None:
        """Heartbeat, then keep or try the leader lock and (un)schedule the jobs accordingly."""
        with self._control_guard:
            self._beat = time.monotonic()
            self._metrics.heartbeat.set(time.time())
            if self.stopping:
                return
            if self.lock.held:
                if not self.lock.check():
                    self._unschedule()
                    self._metrics.leader.set(0)
                return
            if not self.settings.enabled or not self._can_lead():
                return
            if self.lock.try_acquire():
                self._metrics.leader.set(1)
                try:
                    self._on_elected()
                except Exception:
                    log.exception("scheduling the jobs failed; giving the lock back")
                    self._unschedule()
                    self.lock.release()
                    self._metrics.leader.set(0)

    def _on_elected(self) -> None:
        """Close the previous leader's unfinished runs, then schedule every enabled job."""
        now = self._clock()
        with self.engine.begin() as conn:
            stale = conn.execute(
                text(
                    "UPDATE job_runs SET status = 'interrupted', finished_at = now(), "
                    "error = coalesce(error, 'its replica lost the leader lock before it finished') "
                    "WHERE status = 'running' AND holder <> :h RETURNING id"
                ),
                {"h": self.holder},
            ).all()
            plans = [(spec, self._first_run(conn, spec, now)) for spec in self._scheduled_specs()]
        for spec, first in plans:
            self._aps.add_job(
                self._run,
                spec.trigger,
                args=[spec.name],
                id=spec.name,
                name=spec.name,
                next_run_time=first,
                replace_existing=True,
            )
        log.info(
            "elected: jobs scheduled",
            extra={
                "holder": self.holder,
                "interrupted_runs": [r.id for r in stale],
                "next_runs": {s.name: t.isoformat() for s, t in plans},
            },
        )

    def _scheduled_specs(self) -> Iterator[JobSpec]:
        return (s for s in self._specs.values() if s.enabled and s.trigger is not None)

    def _first_run(self, conn: Connection, spec: JobSpec, now: dt.datetime) -> dt.datetime:
        """When a job runs first after an election: catch up what a restart missed, never twice."""
        trigger = spec.trigger
        if trigger is None:
            raise ValueError(f"job {spec.name!r} has no schedule")
        if isinstance(trigger, IntervalTrigger):
            last = conn.execute(
                text("SELECT max(started_at) FROM job_runs WHERE job = :j AND status = 'succeeded'"),
                {"j": spec.name},
            ).scalar()
            return now if last is None else max(now, last + trigger.interval)
        slot = latest_slot(trigger, now, self._grace)
        if slot is not None and spec.run_key is not None:
            done = conn.execute(
                text("SELECT 1 FROM job_runs WHERE job = :j AND run_key = :k AND status = 'succeeded'"),
                {"j": spec.name, "k": spec.run_key(slot)},
            ).first()
            if done is None:
                return now
        following: dt.datetime | None = trigger.get_next_fire_time(None, now)
        return following or now + dt.timedelta(days=3650)

    def _unschedule(self) -> None:
        for job in self._aps.get_jobs():
            if job.id != CONTROL_JOB:
                job.remove()
        log.warning("jobs unscheduled: no longer the leader", extra={"holder": self.holder})

    # --- one run --------------------------------------------------------------------------------------

    def _run(self, name: str) -> None:
        """Run a job once if this replica still leads, recording it in ``job_runs``."""
        spec = self._specs[name]
        if self.stopping or not self.lock.held:
            return
        with self._serial[spec.serial or name]:  # e.g. a triggered run waits for the scheduled one
            if self.stopping or not self.lock.check():
                return
            if spec.has_work is not None and not spec.has_work():
                return
            now = self._clock()
            run_id = self._claim(spec, now)
            if run_id is None:
                log.info("job skipped: this run already happened", extra={"job": name})
                return
            with self._running_guard:
                self._running[run_id] = _Running(run_id, name)
            extra = {"job": name, "job_run_id": run_id, "holder": self.holder}
            log.info("job started", extra=extra)
            started = time.perf_counter()
            ctx = JobContext(name, run_id, self.holder, now, self._stopping, self.trigger)
            error: str | None = None
            details: Mapping[str, Any] | None = None
            try:
                details = spec.func(ctx)
            except HandedBack as exc:
                status, error = "interrupted", str(exc)
            except Exception as exc:
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                log.exception("job failed", extra=extra)
            else:
                status = "succeeded"
            finally:
                with self._running_guard:
                    self._running.pop(run_id, None)
            seconds = round(time.perf_counter() - started, 3)
            self._finish(run_id, status, error=error, details=details)
            log.info("job finished", extra={**extra, "status": status, "seconds": seconds})

    def _slot(self, spec: JobSpec, now: dt.datetime) -> dt.datetime:
        """The scheduled time a run stands for: the trigger's last slot (a late run keeps its slot)."""
        if spec.trigger is None:
            return now
        return latest_slot(spec.trigger, now, self._grace) or now

    def _claim(self, spec: JobSpec, now: dt.datetime) -> int | None:
        """Insert the run's row; a keyed run that already succeeded or is running is not claimed."""
        with self.engine.begin() as conn:
            if spec.run_key is None:
                return int(
                    conn.execute(
                        text("INSERT INTO job_runs (job, holder) VALUES (:j, :h) RETURNING id"),
                        {"j": spec.name, "h": self.holder},
                    ).scalar_one()
                )
            claimed = conn.execute(
                text(
                    "INSERT INTO job_runs (job, run_key, holder) VALUES (:j, :k, :h) "
                    "ON CONFLICT (job, run_key) WHERE run_key IS NOT NULL DO UPDATE SET "
                    "holder = EXCLUDED.holder, status = 'running', started_at = now(), "
                    "finished_at = NULL, error = NULL, details = NULL "
                    "WHERE job_runs.status IN ('failed', 'interrupted') RETURNING id"
                ),
                {"j": spec.name, "k": spec.run_key(self._slot(spec, now)), "h": self.holder},
            ).scalar()
            return None if claimed is None else int(claimed)

    def _finish(
        self, run_id: int, status: str, *, error: str | None = None, details: Mapping[str, Any] | None = None
    ) -> bool:
        """Record how a run ended, once: only a row still ``running`` is updated."""
        try:
            with self.engine.begin() as conn:
                done = conn.execute(
                    text(
                        "UPDATE job_runs SET status = :s, finished_at = now(), error = :e, "
                        "details = CAST(:d AS jsonb) WHERE id = :id AND status = 'running' RETURNING id"
                    ),
                    {
                        "s": status,
                        "e": error,
                        "d": None if details is None else json.dumps(dict(details), default=str),
                        "id": run_id,
                    },
                ).first()
        except Exception:
            log.exception("recording a job's end failed", extra={"job_run_id": run_id})
            return False
        return done is not None
