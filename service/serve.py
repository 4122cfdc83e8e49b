"""``territory serve``: the HTTP app (uvicorn) and the leader-elected scheduler in one process.

SIGTERM (or Ctrl+C) stops taking new work at once (/readyz answers 503, no job starts), lets uvicorn
finish the requests in flight, gives the running job the rest of the grace period to finish (a sync
hands back at its next batch boundary), releases the leader lock and exits.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text

from service.app import create_app
from service.http_limits import protocol
from service.jobs import register_jobs
from service.runtime import open_database
from service.scheduler import Scheduler
from service.settings import Settings
from store import migrate

log = logging.getLogger(__name__)

HTTP_DRAIN_SECONDS = 5.0  # at most this much of the grace period goes to requests in flight
SWITCH_INTERVAL_SECONDS = 0.001  # Python's default is 0.005


def holder_id() -> str:
    """This replica's name in ``job_runs``: the host (the pod's name in Kubernetes) and the pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
        # Everything loaded so far (the modules of pandas, pyarrow, SQLAlchemy, Bolt, the app) lives as
        # long as the process: out of the collector's reach, a full collection no longer walks it and
        # pauses the event loop for tens of ms (bench/load.py: webhook p99 145-175 ms -> 62-79 ms).
        gc.freeze()
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
