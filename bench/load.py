"""Webhook load on a real ``territory serve``: signed HubSpot deliveries, forged and stale ones, scrapes.

    python -m bench.load [--deliveries 1000] [--clients 50] [--server-url postgresql://...]

Starts ``territory serve`` on a new database of the given PostgreSQL server (default the local one at
127.0.0.1:5432; the database is dropped at the end) with a small CSV org as its CRM, then sends the
deliveries from concurrent clients on loopback while /metrics is scraped every second. It checks:
every delivery answered in under 1 s, p99 under 300 ms, every valid one queued and drained into a
sync (none lost), every forged or stale one refused with 401, no scrape error. Prints the figures;
exits 1 when a target is missed. Bounded: it stops by itself (--timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from service.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3
from store.db import normalize_url

SECRET = "bench-client-secret"  # noqa: S105 - the daemon under test is given this one
TERRITORY = str(Path(sys.executable).with_name("territory"))


@dataclass
class Figures:
    """What the load produced."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    slowest: float = 0.0
    scrapes: int = 0
    scrape_errors: int = 0

    def count(self, kind: str, status: int) -> None:
        by_status = self.statuses.setdefault(kind, {})
        by_status[status] = by_status.get(status, 0) + 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body_of(n: int) -> bytes:
    """One delivery: a batch of two events (a company and a deal changed), unique per delivery."""
    now_ms = int(time.time() * 1000)
    events = [
        {"eventId": n * 2, "subscriptionType": "company.propertyChange", "objectId": n, "occurredAt": now_ms},
        {
            "eventId": n * 2 + 1,
            "subscriptionType": "deal.propertyChange",
            "objectId": n,
            "occurredAt": now_ms,
        },
    ]
    return json.dumps(events).encode()


def headers_for(body: bytes, url: str, kind: str) -> dict[str, str]:
    stamp = dt.datetime.now(dt.UTC)
    secret = SECRET
    if kind == "stale":
        stamp -= dt.timedelta(minutes=6)
    elif kind == "forged":
        secret = "not-the-secret"  # noqa: S105 - a forger's guess
    ms = int(stamp.timestamp() * 1000)
    return {
        SIGNATURE_HEADER: sign_v3(secret, "POST", url, body, ms),
        TIMESTAMP_HEADER: str(ms),
        "Content-Type": "application/json",
    }


async def _post(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
) -> int:
    """One HTTP/1.1 POST on a kept-alive connection; the status code."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def client(base: str, work: asyncio.Queue[tuple[int, str]], figures: Figures) -> None:
    """A client on its own kept-alive connection (a bare HTTP/1.1 writer: the load, not the client, is
    what is measured; a general HTTP client costs more CPU per request than the server does)."""
    host = base.removeprefix("http://")
    address, port = host.split(":")
    url = base + "/webhooks/hubspot"
    reader, writer = await asyncio.open_connection(address, int(port))
    try:
        while True:
            try:
                n, kind = work.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = body_of(n)
            started = time.perf_counter()
            try:
                status = await asyncio.wait_for(
                    _post(reader, writer, host, "/webhooks/hubspot", body, headers_for(body, url, kind)), 10
                )
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, TimeoutError):
                status = 0
                writer.close()
                reader, writer = await asyncio.open_connection(address, int(port))
            seconds = time.perf_counter() - started
            figures.latencies.append(seconds)
            figures.slowest = max(figures.slowest, seconds)
            figures.count(kind, status)
    finally:
        writer.close()


async def scraper(http: httpx.AsyncClient, url: str, stop: asyncio.Event, figures: Figures) -> None:
    while not stop.is_set():
        try:
            response = await http.get(url)
            ok = response.status_code == 200 and "territory_webhook_deliveries_total" in response.text
        except httpx.HTTPError:
            ok = False
        figures.scrapes += 1
        figures.scrape_errors += 0 if ok else 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


async def load(base: str, deliveries: int, bad: int, clients: int) -> Figures:
    figures = Figures()
    work: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    kinds = ["valid"] * deliveries + ["forged"] * (bad // 2) + ["stale"] * (bad - bad // 2)
    for n, kind in enumerate(kinds):
        work.put_nowait((n, kind))
    async with httpx.AsyncClient(timeout=10) as http:
        stop = asyncio.Event()
        scraping = asyncio.create_task(scraper(http, base + "/metrics", stop, figures))
        await asyncio.gather(*(client(base, work, figures) for _ in range(clients)))
        await asyncio.sleep(1.0)  # one more scrape after the load
        stop.set()
        await scraping
    return figures


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000, help="valid signed deliveries")
    parser.add_argument("--bad", type=int, default=100, help="forged plus stale deliveries (half each)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--server-url",
        default=os.environ.get("TERRITORY_BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--timeout", type=float, default=180, help="give up after this many seconds")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout

    server = normalize_url(args.server_url)
    name = f"territory_bench_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database: URL = server.set(database=name)
    scratch = tempfile.TemporaryDirectory(prefix="territory-bench-")
    daemon: subprocess.Popen[bytes] | None = None
    try:
        folder = Path(scratch.name) / "csv"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
        subprocess.run(
            [TERRITORY, "sandbox", "export", "--out", str(folder), "--accounts", "200", "--reps", "8"],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        url_text = database.render_as_string(hide_password=False)
        with_db = env | {"TERRITORY_DATABASE_URL": url_text}
        subprocess.run([TERRITORY, "migrate"], env=with_db, check=True, capture_output=True, timeout=120)
        port = free_port()
        daemon_env = env | {
            "TERRITORY_DATABASE_URL": url_text,
            "TERRITORY_DATA_DIR": str(Path(scratch.name) / "data"),
            "TERRITORY_SERVER__PORT": str(port),
            "TERRITORY_LOGGING__LEVEL": "WARNING",
            "TERRITORY_WEBHOOKS__HUBSPOT_CLIENT_SECRET": SECRET,
            "TERRITORY_SCHEDULER__SYNC_SOURCE": "csv",
            "TERRITORY_SCHEDULER__SYNC_PATH": str(folder),
            "TERRITORY_SCHEDULER__SYNC_INTERVAL_MINUTES": "600",
            "TERRITORY_SCHEDULER__WEBHOOK_POLL_SECONDS": "1",
            "TERRITORY_SCHEDULER__MONTHLY_SNAPSHOT_ENABLED": "false",
            "TERRITORY_SCHEDULER__HEARTBEAT_SECONDS": "1",
        }
        log = (Path(scratch.name) / "serve.log").open("wb")
        daemon = subprocess.Popen([TERRITORY, "serve"], env=daemon_env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if daemon.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write("territory serve did not become ready\n")
                return 1
            time.sleep(0.2)

        started = time.perf_counter()
        figures = asyncio.run(load(base, args.deliveries, args.bad, args.clients))
        seconds = time.perf_counter() - started

        engine = create_engine(normalize_url(database))
        queued = done = 0
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                queued, done = conn.execute(
                    text("SELECT count(*), count(done_at) FROM outbox WHERE kind = 'sync_request'")
                ).one()
            if queued == done and queued >= args.deliveries:
                break
            time.sleep(0.5)
        with engine.connect() as conn:
            syncs, requests = conn.execute(
                text(
                    "SELECT count(*), coalesce(sum((details->>'requests')::int), 0) FROM job_runs "
                    "WHERE job = 'webhook_sync' AND status = 'succeeded'"
                )
            ).one()
        engine.dispose()
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        scratch.cleanup()

    lat = sorted(figures.latencies)
    p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
    ok = figures.statuses.get("valid", {}).get(200, 0)
    refused = sum(figures.statuses.get(k, {}).get(401, 0) for k in ("forged", "stale"))
    checks = {
        "every delivery answered in under 1 s": figures.slowest < 1.0,
        "p99 under 300 ms": p99 < 0.300,
        "every valid delivery accepted (200)": ok == args.deliveries,
        "every forged or stale delivery refused (401)": refused == args.bad,
        "none lost: every valid delivery queued and drained": queued == done == args.deliveries,
        "each drained into a sync (counted in job_runs)": requests == args.deliveries,
        "/metrics scraped without an error": figures.scrapes > 0 and figures.scrape_errors == 0,
    }
    total = len(lat)
    print(f"deliveries: {args.deliveries} valid + {args.bad} forged/stale, {args.clients} clients, loopback")
    print(f"sent {total} in {seconds:.2f} s ({total / seconds:.0f}/s)")
    print(f"latency: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {figures.slowest * 1000:.1f} ms")
    print(f"answers: {json.dumps(figures.statuses, sort_keys=True)}")
    print(f"sync requests: {queued} queued, {done} drained by {syncs} syncs ({requests} requests counted)")
    print(f"/metrics: {figures.scrapes} scrapes, {figures.scrape_errors} errors")
    for label, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {label}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
