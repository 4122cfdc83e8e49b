"""The HTTP app's edges under a real uvicorn: oversized, chunked, slow and abandoned bodies, slow
headers, blank secrets, and scrapes that must not starve the probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Engine

from service.app import create_app
from service.http_limits import protocol
from service.settings import Settings
from service.webhooks import BadPayload, json_depth, parse_events
from tests.helpers.processes import wait_for

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024


class _Scheduler:
    stopping = False
    is_leader = True

    def heartbeat_age(self) -> float:
        return 0.0


class _SlowCollector:
    """A collector that takes a while and counts how often it was asked."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self.calls += 1
        time.sleep(self.seconds)
        yield GaugeMetricFamily("territory_test_slow", "A slow series.", value=1.0)


@contextlib.contextmanager
def _serving(engine: Engine, registry: CollectorRegistry, **server: Any) -> Iterator[str]:
    settings = Settings.model_validate(
        {
            "server": {
                "max_body_bytes": LIMIT,
                "body_timeout_seconds": 0.5,
                "header_timeout_seconds": 0.5,
                **server,
            },
            "webhooks": {"hubspot_client_secret": "   "},
        }
    )
    app = create_app(settings, engine, scheduler=_Scheduler(), registry=registry)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, access_log=False, http=protocol(settings.server.header_timeout_seconds)
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, 10, "uvicorn to start", interval=0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def server(db: Engine) -> Iterator[str]:
    with _serving(db, CollectorRegistry()) as address:
        yield address


def _connect(address: str) -> socket.socket:
    host, port = address.split(":")
    conn = socket.create_connection((host, int(port)), timeout=5)
    return conn


def _response(conn: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            data += chunk
    return data


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: str) -> None:
    with _connect(server) as conn:
        conn.sendall(
            b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        reply = _response(conn)  # not one byte of the 50 MB was sent
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"body over 65536 bytes" in reply


def test_a_chunked_body_is_cut_off_at_the_limit(server: str) -> None:
    sent = 0
    with _connect(server) as conn:
        conn.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 8192
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(1000):  # 8 MB offered; the server stops reading past 64 KiB
                conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                conn.settimeout(0.0)
                try:
                    if conn.recv(1, socket.MSG_PEEK):
                        break
                except BlockingIOError:
                    pass
                finally:
                    conn.settimeout(5)
        reply = _response(conn)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert sent < 1000 * 8192  # answered before the client was done (socket buffers hold a few MB)


def test_a_bad_content_length_is_a_400(server: str) -> None:
    with _connect(server) as conn:
        conn.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        reply = _response(conn)
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_a_body_slower_than_the_timeout_gets_a_408(server: str) -> None:
    with _connect(server) as conn:
        conn.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        began = time.monotonic()
        reply = _response(conn)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - began < 4


def test_headers_slower_than_the_timeout_close_the_connection(server: str) -> None:
    with _connect(server) as conn:
        conn.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        began = time.monotonic()
        reply = _response(conn)
    assert reply == b""
    assert time.monotonic() - began < 4


def test_a_client_gone_mid_body_is_a_debug_line_not_an_error(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="service.http_limits")
    with _connect(server) as conn:
        conn.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
    wait_for(
        lambda: any("disconnected mid-body" in r.getMessage() for r in caplog.records),
        5,
        "the disconnect's debug line",
        interval=0.02,
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_blank_webhook_secret_is_not_configured(server: str) -> None:
    reply = httpx.post(f"http://{server}/webhooks/hubspot", content=b"[]", timeout=5)
    assert reply.status_code == 503
    assert reply.json() == {"error": "webhooks are not configured"}


def test_json_nested_too_deep_is_a_bad_payload() -> None:
    assert json_depth([{"a": [1]}]) == 3
    assert json_depth(7) == 0
    with pytest.raises(BadPayload, match="nested deeper than 16"):
        parse_events(b"[" * 17 + b"]" * 17)
    with pytest.raises(BadPayload, match="nested deeper than 16"):
        parse_events(b"[" * 100_000 + b"]" * 100_000)  # past the interpreter's recursion limit


def test_concurrent_scrapes_share_one_rendering_and_never_delay_the_probes(db: Engine) -> None:
    registry = CollectorRegistry()
    slow = _SlowCollector(0.3)
    registry.register(slow)  # type: ignore[arg-type]
    # Header and body timeouts of the production default: 200 connections on a loaded 2-core machine
    # may wait longer than this module's 0.5 s for the loop to read their first bytes.
    with _serving(
        db, registry, metrics_cache_seconds=2.0, header_timeout_seconds=10.0, body_timeout_seconds=10.0
    ) as address:

        async def scenario() -> tuple[list[int], float, float]:
            limits = httpx.Limits(max_connections=300)
            async with httpx.AsyncClient(base_url=f"http://{address}", limits=limits, timeout=30) as client:
                scrapes = [asyncio.create_task(client.get("/metrics")) for _ in range(200)]
                await asyncio.sleep(0.05)
                began = time.monotonic()
                ready = await client.get("/readyz")
                ready_took = time.monotonic() - began
                began = time.monotonic()
                healthy = await client.get("/healthz")
                health_took = time.monotonic() - began
                assert ready.status_code == 200, ready.text
                assert healthy.status_code == 200, healthy.text
                replies = await asyncio.gather(*scrapes)
                return [r.status_code for r in replies], ready_took, health_took

        statuses, ready_took, health_took = asyncio.run(scenario())
    assert set(statuses) == {200}
    assert slow.calls == 1  # 200 scrapes inside the cache's 2 s: one rendering
    assert ready_took < 1.0
    assert health_took < 1.0
