"""The HTTP side of ``territory serve`` (Starlette): HubSpot webhooks, /metrics, /healthz, /readyz.

Built by :func:`create_app` from the settings, an engine, the scheduler and the metrics registry: no
module-level app. Blocking work (the database, the collectors) runs in Starlette's thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from approval import slack as slack_approval
from service import webhooks
from service.http_limits import BodyLimit
from service.settings import Settings, WebhookSettings
from store import migrate
from store.outbox import SyncRequest, queue_sync_requests

log = logging.getLogger(__name__)


class SchedulerView(Protocol):
    """What the endpoints need to know about the scheduler."""

    @property
    def stopping(self) -> bool: ...

    @property
    def is_leader(self) -> bool: ...

    def heartbeat_age(self) -> float: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RequestWriter:
    """Group commit of webhook sync requests: each delivery waits for the transaction holding it.

    Deliveries arriving while one batch is being written form the next batch, so a burst costs one
    transaction per batch instead of one per delivery, and a 200 still means the request is durable.
    """

    def __init__(self, engine: Engine, max_batch: int = 500) -> None:
        self._engine = engine
        self._max = max_batch
        self._queue: asyncio.Queue[tuple[SyncRequest, asyncio.Future[bool]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, request: SyncRequest) -> bool:
        """Queue ``request`` and wait until it is committed; True when it was new."""
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(self._queue))
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _run(self, queue: asyncio.Queue[tuple[SyncRequest, asyncio.Future[bool]]]) -> None:
        while True:
            batch = [await queue.get()]
            while len(batch) < self._max and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                new = await run_in_threadpool(queue_sync_requests, self._engine, [r for r, _ in batch])
            except Exception as exc:
                log.exception("writing webhook sync requests failed", extra={"requests": len(batch)})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for request, future in batch:
                if not future.done():
                    future.set_result(request.key in new)
                    new.discard(request.key)  # the same delivery twice in one batch: one is new

    async def close(self) -> None:
        """Stop the writer (waiting deliveries have had their answers)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class SharedRendering:
    """One rendering of the exposition at a time, reused for ``max_age`` seconds.

    However many scrapes arrive together, one thread renders and the rest wait for its result, so
    scrapes never fill the thread pool that /readyz needs, nor the database's connections.
    """

    def __init__(self, render: Callable[[], bytes], max_age: float) -> None:
        self._render = render
        self._max_age = max_age
        self._lock = asyncio.Lock()
        self._data = b""
        self._at = -math.inf

    async def get(self) -> bytes:
        """The latest rendering, rendering anew once it is older than ``max_age``."""
        async with self._lock:
            now = time.monotonic()
            if now - self._at >= self._max_age or self._max_age == 0:
                self._data = await run_in_threadpool(self._render)
                self._at = time.monotonic()
            return self._data


@dataclass(frozen=True)
class _HttpMetrics:
    """The app's own series on the registry /metrics exposes."""

    deliveries: Counter
    latency: Histogram

    @classmethod
    def on(cls, registry: CollectorRegistry) -> _HttpMetrics:
        return cls(
            deliveries=Counter(
                "territory_webhook_deliveries",
                "HubSpot webhook deliveries, by outcome",
                ["outcome"],
                registry=registry,
            ),
            latency=Histogram(
                "territory_http_request_duration_seconds",
                "Time to answer, by endpoint",
                ["endpoint"],
                registry=registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            ),
        )


class HubSpotWebhook:
    """``POST /webhooks/hubspot``: verify the v3 signature, parse the events, queue one sync request.

    A 200 means the request is committed (group commit through :class:`RequestWriter`); a retried
    delivery carries the same body, so its key makes it one request, not two.
    """

    def __init__(
        self,
        settings: WebhookSettings,
        writer: RequestWriter,
        metrics: _HttpMetrics,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._secret = settings.hubspot_client_secret
        self._public_url = settings.public_url
        self._writer = writer
        self._deliveries = metrics.deliveries
        self._latency = metrics.latency
        self._clock = clock

    async def handle(self, request: Request) -> Response:
        """The endpoint (a bound method, so Starlette passes it the request)."""
        with self._latency.labels("webhooks_hubspot").time():
            return await self._answer(request)

    async def _answer(self, request: Request) -> Response:
        secret = self._secret
        if secret is None:
            self._deliveries.labels("not_configured").inc()
            return JSONResponse({"error": "webhooks are not configured"}, status_code=503)
        body = await request.body()  # bounded by BodyLimit before it gets here
        verdict = webhooks.verify_v3(
            secret.get_secret_value(),
            method=request.method,
            uri=self._signed_uri(request),
            body=body,
            headers=request.headers,
            now=self._clock(),
        )
        if verdict is not webhooks.Verdict.valid:
            self._deliveries.labels(verdict.value).inc()
            log.warning("webhook refused", extra={"verdict": verdict.value})
            return JSONResponse({"error": "invalid signature", "reason": verdict.value}, status_code=401)
        try:
            batch = webhooks.parse_events(body)
        except webhooks.BadPayload as exc:
            self._deliveries.labels("bad_payload").inc()
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not batch.objects:
            self._deliveries.labels("ignored").inc()
            return JSONResponse({"queued": [], "ignored": batch.ignored})
        return await self._queue(body, batch)

    def _signed_uri(self, request: Request) -> str:
        """The URI HubSpot signed: the public URL (behind a proxy) with the request's query."""
        if not self._public_url:
            return str(request.url)
        query = request.url.query
        return self._public_url + (f"?{query}" if query else "")

    async def _queue(self, body: bytes, batch: webhooks.EventBatch) -> Response:
        key = "hubspot-webhook:" + hashlib.sha256(body).hexdigest()
        objects = sorted(o.value for o in batch.objects)
        payload = {"source": "hubspot", "events": len(batch.event_ids), "event_ids": batch.event_ids[:20]}
        try:
            new = await self._writer.submit(SyncRequest(key, tuple(objects), payload))
        except Exception:
            self._deliveries.labels("error").inc()
            log.exception("queueing a webhook's sync request failed")
            return JSONResponse({"error": "could not queue the sync; retry"}, status_code=503)
        self._deliveries.labels("queued" if new else "duplicate").inc()
        log.info("webhook queued a sync", extra={"objects": objects, "duplicate": not new})
        return JSONResponse({"queued": objects, "duplicate": not new, "ignored": batch.ignored})


class Probes:
    """``/healthz`` (the scheduler's heartbeat) and ``/readyz`` (the database, at head, not stopping)."""

    def __init__(self, engine: Engine, scheduler: SchedulerView, max_heartbeat_age: float) -> None:
        self._engine = engine
        self._scheduler = scheduler
        self._max_age = max_heartbeat_age
        self._heads = migrate.heads(engine)

    async def healthz(self, request: Request) -> Response:
        age = self._scheduler.heartbeat_age()
        body = {
            "heartbeat_age_seconds": round(age, 3) if age != float("inf") else None,
            "leader": self._scheduler.is_leader,
        }
        if age > self._max_age:
            return JSONResponse({"status": "stale heartbeat", **body}, status_code=503)
        return JSONResponse({"status": "ok", **body})

    async def readyz(self, request: Request) -> Response:
        if self._scheduler.stopping:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        ok, detail = await run_in_threadpool(self._database_state)
        return JSONResponse({"status": detail}, status_code=200 if ok else 503)

    def _database_state(self) -> tuple[bool, str]:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SET LOCAL statement_timeout = 2000"))
                conn.execute(text("SELECT 1")).scalar_one()
            current = migrate.current(self._engine)
        except Exception as exc:
            return False, f"database unreachable: {type(exc).__name__}"
        if (current,) != self._heads:
            heads = ",".join(self._heads)
            return False, f"migrations not at head (database at {current or 'empty'}, head {heads})"
        return True, "ok"


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    scheduler: SchedulerView,
    registry: CollectorRegistry,
    clock: Callable[[], dt.datetime] = _utcnow,
) -> Starlette:
    """The ASGI app; ``registry`` is what /metrics exposes (the webhook counters are added to it)."""
    writer = RequestWriter(engine)
    http_metrics = _HttpMetrics.on(registry)
    hubspot_webhook = HubSpotWebhook(settings.webhooks, writer, http_metrics, clock)
    probes = Probes(engine, scheduler, settings.scheduler.heartbeat_max_age_seconds)
    exposition = SharedRendering(lambda: generate_latest(registry), settings.server.metrics_cache_seconds)

    async def metrics(request: Request) -> Response:
        return Response(await exposition.get(), media_type=CONTENT_TYPE_LATEST)

    # Slack approvals (approval/slack.py): POST /slack/actions, and Socket Mode when an app token is set.
    slack = slack_approval.surface(settings.slack, engine, clock=clock)

    async def slack_actions(request: Request) -> Response:
        with http_metrics.latency.labels("slack_actions").time():
            return await slack.http_endpoint(request)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(slack.start_socket_mode)
        yield
        await writer.close()
        await run_in_threadpool(slack.close)

    limits = Middleware(
        BodyLimit,
        max_bytes=settings.server.max_body_bytes,
        body_timeout=settings.server.body_timeout_seconds,
    )
    return Starlette(
        lifespan=lifespan,
        middleware=[limits],
        routes=[
            Route("/webhooks/hubspot", hubspot_webhook.handle, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", probes.healthz, methods=["GET"]),
            Route("/readyz", probes.readyz, methods=["GET"]),
            Route("/slack/actions", slack_actions, methods=["POST"]),
        ],
    )
