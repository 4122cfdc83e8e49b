"""``territory serve``: the HTTP app (uvicorn) and the leader-elected scheduler in one process.

SIGTERM (or Ctrl+C) stops taking new work at once (/readyz answers 503, no job starts), lets uvicorn
finish the requests in flight, gives the running job the rest of the grace period to finish (a sync
hands back at its next batch boundary), releases the leader lock and exits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from connectors.base import CrmObject
from service.app import create_app
from service.http_limits import protocol
from service.runtime import open_database
from service.scheduler import (
    JobContext,
    Scheduler,
    claim_sync_requests,
    crontab,
    interval_minutes,
    monthly_key,
)
from service.settings import Settings
from store import migrate

log = logging.getLogger(__name__)

HTTP_DRAIN_SECONDS = 5.0  # at most this much of the grace period goes to requests in flight
SWITCH_INTERVAL_SECONDS = 0.001  # Python's default is 0.005


class SyncFailedError(RuntimeError):
    """A scheduled sync ended failed or stopped (the job run records it as failed)."""


def holder_id() -> str:
    """This replica's name in ``job_runs``: the host (the pod's name in Kubernetes) and the pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- the jobs: plain functions of their dependencies --------------------------------------------------


def sync_job(
    engine: Engine, settings: Settings, ctx: JobContext, objects: Sequence[CrmObject] = tuple(CrmObject)
) -> dict[str, Any]:
    """Incremental sync of ``objects`` from the configured source; a change triggers a snapshot."""
    from connectors.registry import build_connector
    from connectors.roster import load_roster
    from connectors.sync import run_sync

    source = settings.scheduler.sync_source
    if source is None:
        raise SyncFailedError("scheduler.sync_source is not set")
    connector = build_connector(source, settings, settings.scheduler.sync_path)
    roster = load_roster(settings.sync.roster) if settings.sync.roster is not None else None

    def progress(obj: CrmObject, rows: int) -> None:
        ctx.check_stop()  # shutdown: hand back at a batch boundary; the next run resumes from there

    summary = run_sync(
        engine,
        connector,
        objects=objects,
        progress=progress,
        now=ctx.now,
        lookback=dt.timedelta(seconds=settings.sync.lookback_seconds),
        roster=roster,
        delete_guard=settings.sync.delete_guard(),
    )
    details = summary.as_dict()
    changed = summary.total("rows_upserted") + summary.total("rows_deleted")
    details["changed"] = changed
    sync_ids = [o.run_id for o in summary.objects]
    log.info(
        "sync job done",
        extra={"job": ctx.job, "job_run_id": ctx.run_id, "sync_run_ids": sync_ids, "changed": changed},
    )
    if changed:
        details["snapshot_triggered"] = ctx.trigger(
            "health_snapshot", settings.scheduler.snapshot_debounce_seconds
        )
    if summary.status != "succeeded":
        raise SyncFailedError(summary.one_line())
    return details


def webhook_sync_job(engine: Engine, settings: Settings, ctx: JobContext) -> dict[str, Any]:
    """One incremental sync for every sync request the webhooks queued since the last drain."""
    with claim_sync_requests(engine, ctx.holder) as claimed:
        if not claimed.ids:
            return {"requests": 0}
        objects = [o for o in CrmObject if o.value in claimed.objects]
        extra = {"job": ctx.job, "job_run_id": ctx.run_id, "requests": len(claimed.ids)}
        log.info("draining webhook sync requests", extra={**extra, "objects": [o.value for o in objects]})
        details = sync_job(engine, settings, ctx, objects)  # raises: the requests stay queued
        return {"requests": len(claimed.ids), **details}


def snapshot_job(engine: Engine, settings: Settings, ctx: JobContext, *, kind: str) -> dict[str, Any]:
    """A health snapshot: ``monthly`` as of the 1st of the month, ``event`` as of today."""
    from monitor.jobs import take_snapshot

    today = ctx.now.date()
    as_of = today.replace(day=1) if kind == "monthly" else today
    result = take_snapshot(engine, settings.metrics, settings.rules, as_of=as_of, kind=kind)
    log.info(
        "snapshot taken",
        extra={"job": ctx.job, "job_run_id": ctx.run_id, "snapshot_id": result.snapshot_id},
    )
    return {"snapshot_id": result.snapshot_id, "as_of": as_of.isoformat(), "kind": kind}


def register_jobs(scheduler: Scheduler, settings: Settings, engine: Engine) -> dict[str, float]:
    """Every job of the daemon, one call each; returns the interval of each periodic job (seconds)."""
    s = settings.scheduler
    syncs = s.sync_source is not None and s.sync_enabled
    p = functools.partial
    every = interval_minutes
    sched = scheduler.register
    sched("sync", p(sync_job, engine, settings), every(s.sync_interval_minutes), enabled=syncs, serial="sync")
    sched(
        "webhook_sync",
        p(webhook_sync_job, engine, settings),
        every(s.webhook_poll_seconds / 60),
        enabled=syncs,
        has_work=p(_pending, engine),
        serial="sync",
    )
    sched("health_snapshot", p(snapshot_job, engine, settings, kind="event"), None)
    sched(
        "monthly_snapshot",
        p(snapshot_job, engine, settings, kind="monthly"),
        crontab(s.monthly_snapshot_cron),
        enabled=s.monthly_snapshot_enabled,
        run_key=monthly_key,
    )
    intervals = {"monthly_snapshot": 31 * 86400.0}
    if syncs:
        intervals["sync"] = s.sync_interval_minutes * 60
    return intervals


def _pending(engine: Engine) -> bool:
    from service.scheduler import pending_sync_requests

    return pending_sync_requests(engine) > 0


# --- the process ---------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn with our signal handling: the first signal also stops the scheduler taking work."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_signal = on_signal
        self.signalled_at: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install handlers for SIGTERM and SIGINT; unlike uvicorn's, do not re-raise them at exit."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        wanted = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._signalled) for sig in wanted}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _signalled(self, sig: int, frame: FrameType | None) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
            log.info("shutdown requested", extra={"signal": signal.Signals(sig).name})
            self._on_signal()
        self.handle_exit(sig, frame)


class _AtHead:
    """Whether the database is migrated to head; once it is, it stays so for this process."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._ok = False

    def __call__(self) -> bool:
        if not self._ok:
            try:
                self._ok = migrate.is_at_head(self._engine)
            except Exception:
                log.warning("checking the schema failed", exc_info=True)
                return False
            if not self._ok:
                log.warning("the database is not migrated to head: no jobs run until `territory migrate`")
        return self._ok


def _register_collector(
    registry: CollectorRegistry, engine: Engine, settings: Settings, intervals: Mapping[str, float]
) -> None:
    from monitor.collector import register

    register(
        registry,
        engine,
        max_territories=settings.metrics.max_territories,
        rules=settings.rules.drift_rules(),
        job_intervals=intervals,
    )


def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; the embedded default is migrated here, a real database by the Job."""
    holder = holder_id()
    grace = settings.scheduler.shutdown_grace_seconds
    quiet = max(logging.WARNING, logging.getLogger().level)
    for chatty in ("apscheduler", "alembic.runtime.migration"):  # a line per tick, per readiness probe
        logging.getLogger(chatty).setLevel(quiet)
    # A job thread crunching a sync or a snapshot holds the GIL for up to this long at a time; a
    # shorter slice keeps the event loop's answers to webhooks and probes prompt meanwhile.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    with open_database(settings) as engine:
        if settings.database_url is None:
            migrate.upgrade(engine)  # the embedded PostgreSQL is this process's own
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        registry = CollectorRegistry()
        scheduler = Scheduler(
            engine, settings.scheduler, holder=holder, registry=registry, can_lead=_AtHead(engine)
        )
        intervals = register_jobs(scheduler, settings, engine)
        _register_collector(registry, engine, settings, intervals)
        app = create_app(settings, engine, scheduler=scheduler, registry=registry)
        config = uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            lifespan="on",
            log_config=None,
            access_log=False,
            http=protocol(settings.server.header_timeout_seconds),
            timeout_graceful_shutdown=max(1, int(min(HTTP_DRAIN_SECONDS, grace / 3))),
        )
        server = _Server(config, scheduler.begin_shutdown)
        scheduler.start()
        log.info(
            "serving",
            extra={"holder": holder, "host": settings.server.host, "port": settings.server.port},
        )
        try:
            server.run()
        finally:
            began = server.signalled_at or time.monotonic()
            left = max(0.0, grace - (time.monotonic() - began) - 1.0)
            clean = scheduler.shutdown(timeout=left)
        if not clean:
            # A job thread is still inside its work: its transaction dies with the process, so exit
            # now rather than wait for it (the pool's threads would be joined at interpreter exit).
            log.warning("exiting with a job handed back", extra={"holder": holder})
            logging.shutdown()
            sys.stderr.flush()
            os._exit(0)
    log.info("stopped", extra={"holder": holder})
