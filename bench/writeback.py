"""Write-back benchmark: approved moves written to each sandbox CRM through the real clients.

Usage: python -m bench.writeback [--moves 1000] [--accounts 5000] [--database-url URL]

For each CRM (the sandbox Salesforce through simple-salesforce, the sandbox HubSpot through
hubspot-api-client): the org is synced into a fresh database, one proposal of ``--moves`` moves is
stored and approved, and the write-back worker writes it. Prints the seconds, moves per second, and the
CRM API calls per move as the sandbox counted them (a CRM's daily quota is shared with the customer's
other tools: reads and writes are batched, never one call a move), and checks that every move was
written exactly once. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine, text

from approval.writeback import run_due
from bench.databases import LOCAL, scratch_database
from connectors.base import Connector
from connectors.registry import build_connector
from connectors.sandbox.generator import DEFAULT_NOW, Org, generate_org
from connectors.sandbox.hubspot import start_hubspot_sandbox
from connectors.sandbox.salesforce import start_salesforce_sandbox
from connectors.sync import run_sync
from service.demo import sandbox_settings
from service.settings import Settings
from store import migrate
from store import proposals as props
from store.db import make_engine


def _writes(counted: Mapping[tuple[str, str], int], kind: str) -> tuple[int, int]:
    """(writes of records of ``kind``, writes of the others: the opportunities that followed)."""
    own = sum(n for (k, _), n in counted.items() if k == kind)
    return own, sum(counted.values()) - own


def _moves(engine: Engine, count: int) -> list[props.NewMove]:
    with engine.connect() as conn:
        active = conn.execute(text("SELECT id FROM owners WHERE active ORDER BY id")).scalars().all()
        rows = conn.execute(
            text("SELECT id, owner_id FROM accounts WHERE owner_id = ANY(:o) ORDER BY id LIMIT :n"),
            {"o": list(active), "n": count},
        ).all()
    if len(rows) < count:
        raise SystemExit(f"the org has only {len(rows)} movable accounts; use more --accounts")
    moves = []
    for n, (account, owner) in enumerate(rows):
        target = active[(active.index(owner) + 1 + n % (len(active) - 1)) % len(active)]
        moves.append(props.NewMove(account, owner, target, owner, "bench", effective_date=None))
    return moves


def _run(
    name: str,
    engine: Engine,
    crm: Connector,
    count: int,
    calls: Callable[[], int],
    writes: Callable[[], tuple[int, int]],
) -> None:
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE owners, accounts, opportunities, proposals CASCADE"))
    assert run_sync(engine, crm, now=now).status == "succeeded"  # noqa: S101
    moves = _moves(engine, count)
    with engine.begin() as conn:
        proposal_id, _ = props.create_proposal(
            conn, scenario="bench", fingerprint=secrets.token_hex(8), moves=moves, now=now,
            expires_at=now + dt.timedelta(days=14), solver_report={}, waves=[],
        )  # fmt: skip
        props.approve(conn, proposal_id, actor="bench", now=now)
    before, started = calls(), time.perf_counter()
    [report] = run_due(engine, crm, now=now, worker="bench")
    seconds = time.perf_counter() - started
    used = calls() - before
    print(
        f"{name:10} {report.written:6,} moves written ({report.state}) in {seconds:6.2f} s: "
        f"{report.written / seconds:8,.0f} moves/s, {used:4} CRM calls = {used / count:.3f} calls a move, "
        f"{writes()[0]:,} account writes and {writes()[1]:,} writes of the open deals that followed, "
        "as the sandbox counted them"
    )
    if writes()[0] != count or report.written != count:
        raise SystemExit(f"{name}: expected {count} account writes, the sandbox counted {writes()[0]}")


def main() -> None:
    """Write ``--moves`` moves to each sandbox CRM and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--moves", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--database-url", default=LOCAL)
    args = parser.parse_args()
    org: Org = generate_org(accounts=args.accounts, reps=args.reps, seed=3, now=DEFAULT_NOW)
    with scratch_database(args.database_url) as url:
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            _both(engine, org, args.moves)
        finally:
            engine.dispose()


def _both(engine: Engine, org: Org, moves: int) -> None:
    """Each sandbox CRM in turn, through its real client."""
    with tempfile.TemporaryDirectory(prefix="territory-bench-") as tmp:
        sf = start_salesforce_sandbox(org, cert_dir=Path(tmp))
        try:
            settings = sandbox_settings(Settings(), sf.url, sf.access_token, Path(sf.ca_path))
            _run("salesforce", engine, build_connector("salesforce", settings), moves,
                 lambda: sf.state.api_used, lambda: _writes(sf.state.api_writes, "Account"))  # fmt: skip
        finally:
            sf.stop()
    with start_hubspot_sandbox(org, now=DEFAULT_NOW) as hs:
        base = Settings()
        hubspot = base.hubspot.model_copy(
            update={
                "base_url": hs.url,
                "access_token": SecretStr(hs.access_token),
                "search_requests_per_second": 0,
            }
        )
        crm = build_connector("hubspot", base.model_copy(update={"hubspot": hubspot}))
        _run("hubspot", engine, crm, moves, lambda: hs.state.requests,
             lambda: _writes(hs.state.api_writes, "companies"))  # fmt: skip


if __name__ == "__main__":
    main()
