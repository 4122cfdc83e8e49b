"""Slack click benchmark: signed Approve clicks from concurrent clients against the real HTTP app.

Usage: python -m bench.slack [--clicks 1000] [--clients 50] [--per-proposal 50] [--database-url URL]

A fresh database gets ``clicks / per-proposal`` proposals, each posted to the fake Slack Web API. The
app (``service.app.create_app`` under uvicorn, in a child process with the fake Slack) takes
``--clicks`` signed ``block_actions`` Approve clicks from ``--clients`` concurrent HTTP clients on
loopback (the fake Slack in a third
process); the clicks of one proposal arrive together, so each proposal sees up to ``--clients`` racing
approvals. Prints the acknowledgement latency (p50, p99, max), the time until every decision and every
"already decided" ephemeral was made, and checks exactly one decision per proposal. Exits 1 when the
p99 is 300 ms or more, or a proposal was decided other than once. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import secrets
import socket
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from slack_sdk import WebClient
from sqlalchemy import create_engine, text

from approval import blocks as bk
from approval import notify
from connectors.sandbox.slack import FakeSlack, serve
from connectors.sandbox.slack_socket import block_actions, form_body, signed_headers
from service.app import create_app
from service.settings import Settings
from store import migrate
from store import proposals as props
from store.db import ensure_database, make_engine, normalize_url

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
CHANNEL = "C0BENCH"
APPROVERS = [f"U0APPR{i}" for i in range(5)]
P99_TARGET_MS = 300.0


class _Scheduler:
    stopping = False
    is_leader = True

    def heartbeat_age(self) -> float:
        return 0.0


def _seed(url: str, proposals: int) -> list[int]:
    engine = make_engine(url)
    now = dt.datetime.now(dt.UTC)
    ids = []
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO owners (id, name, capacity) VALUES ('005A','Ada',1),('005B','Bo',1)")
            )
            for p in range(proposals):
                accounts = [f"001P{p:04d}{m}" for m in range(3)]
                conn.execute(
                    text("INSERT INTO accounts (id, name, owner_id) VALUES (:id, :id, '005A')"),
                    [{"id": a} for a in accounts],
                )
                pid, _ = props.create_proposal(
                    conn,
                    scenario="bench",
                    fingerprint=f"bench-{p}",
                    now=now,
                    expires_at=now + dt.timedelta(days=14),
                    moves=[props.NewMove(a, "005A", "005B", "005A", "bench") for a in accounts],
                )
                ids.append(pid)
    finally:
        engine.dispose()
    return ids


COUNTED = ("chat.postEphemeral", "chat.update", "users.info", "usergroups.users.list")


def _slack(pipe: Pipe) -> None:
    """A child: the fake Slack Web API (Slack is another machine, not the app's CPU); counts on request."""
    users = {u: {"id": u, "name": u.lower(), "real_name": f"Approver {u[-1]}"} for u in APPROVERS}
    with serve(FakeSlack(users=users, channels={CHANNEL})) as (state, base_url):
        pipe.send({"base_url": base_url, "token": state.token})
        while True:
            message = pipe.recv()
            pipe.send({"cpu": time.process_time(), **{m: len(state.calls_of(m)) for m in COUNTED}})
            if message == "stop":
                return


def _serve(url: str, secret: str, slack: dict[str, str], pipe: Pipe) -> None:
    """A child: the proposals posted to Slack, then the app under uvicorn until told to stop."""
    engine = make_engine(url)
    client = WebClient(token=slack["token"], base_url=slack["base_url"], timeout=10)
    with engine.connect() as conn:
        ids = [p.id for p in props.list_proposals(conn, state="proposed")]
    posted = {pid: notify.post_proposal(engine, client, channel=CHANNEL, proposal_id=pid) for pid in ids}
    settings = Settings.model_validate(
        {
            "slack": {
                "channel": CHANNEL,
                "approvers": APPROVERS,
                "bot_token": slack["token"],
                "signing_secret": secret,
                "api_url": slack["base_url"],
            }
        }
    )
    app = create_app(settings, engine, scheduler=_Scheduler(), registry=CollectorRegistry())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, backlog=1024))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    pipe.send({"port": sock.getsockname()[1], "ts": posted})
    pipe.recv()
    server.should_exit = True
    thread.join(timeout=30)
    engine.dispose()
    pipe.send({"cpu": time.process_time()})


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One keep-alive HTTP/1.1 POST (a minimal client, so the load generator costs little CPU)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /slack/actions HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
        + body
    )
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)


async def _load(port: int, secret: str, clicks: list[tuple[int, str, str]], clients: int) -> list[float]:
    queue: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue()
    for click in clicks:
        queue.put_nowait(click)
    latencies: list[float] = []
    failures: list[str] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                pid, user, ts = queue.get_nowait()
                payload = block_actions(bk.ACTION_APPROVE, str(pid), user=user, channel=CHANNEL, ts=ts)
                body = form_body(payload)
                headers = signed_headers(secret, body, timestamp=int(time.time()))
                start = time.perf_counter()
                status, text = await _post(reader, writer, body, headers)
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    failures.append(f"{status} {text[:80]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    if failures:
        raise SystemExit(f"{len(failures)} clicks were refused, e.g. {failures[0]}")
    return latencies


def _decisions(url: str) -> dict[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT p.id, count(a.id) FROM proposals p LEFT JOIN audit_log a "
                    "ON a.proposal_id = p.id AND a.action = 'approved' GROUP BY p.id"
                )
            ).all()
    finally:
        engine.dispose()
    return {int(pid): int(n) for pid, n in rows}


def _receive(pipe: Pipe, who: str, timeout: float = 120) -> Any:
    """The next message from a child, or exit when it says nothing in ``timeout`` (it died)."""
    if not pipe.poll(timeout):
        raise SystemExit(f"{who} did not answer within {timeout:.0f} s")
    return pipe.recv()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    """Run the clicks and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clicks", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-proposal", type=int, default=50)
    parser.add_argument("--database-url", default=LOCAL)
    args = parser.parse_args()
    server_url = normalize_url(args.database_url)
    db_name = f"territory_bench_{secrets.token_hex(4)}"
    url = ensure_database(server_url, db_name).render_as_string(hide_password=False)
    secret = secrets.token_hex(16)
    children: list[Any] = []
    try:
        ids = _seed(url, max(1, args.clicks // args.per_proposal))
        spawn = mp.get_context("spawn")
        slack_end, slack_child_end = spawn.Pipe()
        slack_child = spawn.Process(target=_slack, args=(slack_child_end,), daemon=True)
        slack_child.start()
        children.append(slack_child)
        slack = _receive(slack_end, "the fake Slack")
        here, there = spawn.Pipe()
        child = spawn.Process(target=_serve, args=(url, secret, slack, there), daemon=True)
        child.start()
        children.append(child)
        ready = _receive(here, "the app")
        clicks = [
            (pid, APPROVERS[n % len(APPROVERS)], ready["ts"][pid])
            for pid in ids
            for n in range(args.per_proposal)
        ][: args.clicks]
        started = time.perf_counter()
        latencies = asyncio.run(_load(ready["port"], secret, clicks, args.clients))
        acked = time.perf_counter() - started
        expected_told = len(clicks) - len(ids)
        counts: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            slack_end.send("counts")
            counts = slack_end.recv()
            if counts["chat.postEphemeral"] >= expected_told and counts["chat.update"] >= len(ids):
                break
            time.sleep(0.05)
        drained = time.perf_counter() - started
        here.send("stop")
        app_cpu = _receive(here, "the app")["cpu"]
        slack_end.send("stop")
        counts = slack_end.recv()
        decided = _decisions(url)
        once = sum(1 for pid in ids if decided.get(pid) == 1)
        p50, p99 = _pct(latencies, 0.50), _pct(latencies, 0.99)
        print(f"clicks: {len(latencies)} from {args.clients} clients on {len(ids)} proposals")
        print(
            f"ack latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies) * 1000:.1f} ms, "
            f"mean {statistics.fmean(latencies) * 1000:.1f} ms"
        )
        print(f"acknowledged in {acked:.2f} s ({len(latencies) / acked:.0f} clicks/s)")
        print(
            f"all decided and answered in {drained:.2f} s: proposals decided exactly once {once}/{len(ids)}, "
            f"chat.update {counts['chat.update']}, 'already decided' ephemerals "
            f"{counts['chat.postEphemeral']}/{expected_told}, users.info {counts['users.info']}"
        )
        ok = p99 < P99_TARGET_MS and once == len(ids) and counts["chat.postEphemeral"] == expected_told
        print(
            f"CPU seconds: app {app_cpu:.1f}, clients {time.process_time():.1f}, "
            f"fake Slack {counts['cpu']:.1f} (2 cores, shared; load average {os.getloadavg()[0]:.1f})"
        )
        print("PASS" if ok else "FAIL")
        if not ok:
            sys.exit(1)
    finally:
        for process in children:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
