"""``territory demo``: the daemon's loop on the embedded default, every part that exists, in one command.

A generated org is served by the sandbox Salesforce (HTTPS, local CA); the real Salesforce connector
syncs it into the embedded PostgreSQL; every territory is measured and its drift recorded; the
rebalancer proposes the fewest moves; once someone approves (``--approve-as``, the prompt, or
``territory proposals approve`` from another shell while the daemon runs) the moves are written back
to the sandbox through the real client, re-synced and measured again; then the daemon serves /metrics
and runs its scheduler against the same sandbox until Ctrl-C.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from connectors.sync import SyncSummary
from monitor.jobs import SnapshotResult
from rebalancer.progress import Observer
from service.jobs import propose_and_announce
from service.runtime import open_embedded
from service.settings import Settings
from store.summary import OrgSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    """What the demo synced, what the database then held, what the snapshot found, what it proposes."""

    sync: SyncSummary
    org: OrgSummary
    snapshot: SnapshotResult
    proposal: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``--format json``."""
        health = self.snapshot.health
        return {
            "sync": self.sync.as_dict(),
            "org": self.org.as_dict(),
            "health": {
                "snapshot_id": self.snapshot.snapshot_id,
                **health.as_json(),
            },
            "proposal": self.proposal,
        }


@dataclass(frozen=True)
class AppliedResult:
    """The approved proposal written back to the sandbox, the re-sync, and the balance after."""

    decision: dict[str, Any]
    writeback: list[dict[str, Any]]
    resync: SyncSummary | None
    after: SnapshotResult

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``--format json``."""
        return {
            "decision": self.decision,
            "writeback": self.writeback,
            "resync": self.resync.as_dict() if self.resync is not None else None,
            "health_after": {"snapshot_id": self.after.snapshot_id, **self.after.health.as_json()},
        }


def sandbox_settings(settings: Settings, instance_url: str, access_token: str, ca_path: Path) -> Settings:
    """``settings`` pointed at the sandbox Salesforce, on the embedded PostgreSQL, syncing from it."""
    salesforce = settings.salesforce.model_copy(
        update={
            "auth": "access_token",
            "instance_url": instance_url,
            "access_token": SecretStr(access_token),
            "ca_bundle": ca_path,
        }
    )
    scheduler = settings.scheduler.model_copy(update={"sync_source": "salesforce"})
    return settings.model_copy(
        update={"database_url": None, "salesforce": salesforce, "scheduler": scheduler}
    )


def run_demo(
    settings: Settings,
    *,
    now: dt.datetime,
    status: Callable[[str], None] = lambda _: None,
    observer: Observer | None = None,
) -> DemoResult:
    """Empty the demo database, sync the sandbox through the real client, measure and record drift.

    ``settings`` must already point at the running sandbox (:func:`sandbox_settings`).
    """
    from connectors.registry import build_connector
    from connectors.sync import run_sync
    from monitor.jobs import take_snapshot
    from store import migrate
    from store.db import truncate_all
    from store.summary import org_summary

    with open_embedded(settings) as engine:
        status("migrating")
        migrate.upgrade(engine)
        with engine.begin() as conn:
            truncate_all(conn)  # the demo's database is its own: each run starts from an empty org
        status("syncing the sandbox Salesforce through simple-salesforce")
        sync = run_sync(
            engine,
            build_connector("salesforce", settings, None),
            now=now,
            lookback=dt.timedelta(seconds=settings.sync.lookback_seconds),
        )
        status("measuring every territory")
        snapshot = take_snapshot(engine, settings.metrics, settings.rules, as_of=now.date(), kind="on_demand")
        with engine.connect() as conn:
            org = org_summary(conn)
        status(f"proposing the fewest moves ({settings.rebalancer.scenario} scenario, HiGHS)")
        proposal = propose_and_announce(engine, settings, now=now, observer=observer)
    log.info(
        "demo synced, measured and proposed",
        extra={"accounts": org.accounts, "snapshot_id": snapshot.snapshot_id, "sync_status": sync.status,
               "proposal_id": proposal["proposal_id"]},
    )  # fmt: skip
    return DemoResult(sync=sync, org=org, snapshot=snapshot, proposal=proposal)


def apply_demo(
    settings: Settings,
    proposal_id: int,
    *,
    approver: str,
    now: dt.datetime,
    status: Callable[[str], None] = lambda _: None,
) -> AppliedResult:
    """Approve the demo's proposal as ``approver``, write it to the sandbox, re-sync and measure again."""
    from approval import decisions
    from connectors.base import CrmObject
    from monitor.jobs import take_snapshot
    from service.jobs import crm_of, sync_once, write_back

    with open_embedded(settings) as engine:
        status(f"approving proposal {proposal_id} as {approver}")
        decision = decisions.approve(engine, proposal_id, actor=approver, now=now)
        status("writing the moves back to the sandbox Salesforce (conflict-checked, at most once)")
        crm = crm_of(settings)
        reports = write_back(engine, settings, crm, now=now, worker="demo", proposal_id=proposal_id)
        resync = None
        if any(r.written for r in reports):
            status("re-syncing what changed")
            resync = sync_once(
                engine, settings, crm, now=now, objects=(CrmObject.accounts, CrmObject.opportunities)
            )
        status("measuring again")
        after = take_snapshot(engine, settings.metrics, settings.rules, as_of=now.date(), kind="on_demand")
    return AppliedResult(decision, [r.as_json() for r in reports], resync, after)
