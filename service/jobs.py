"""The daemon's scheduled jobs: plain functions of their dependencies, and their registration.

``register_jobs`` is the one list of what ``territory serve`` runs and when (from the scheduler
settings); the scheduler (service/scheduler.py) decides which replica runs them and records each run.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from connectors.base import CrmObject
from service.scheduler import (
    JobContext,
    Scheduler,
    crontab,
    interval_minutes,
    monthly_key,
)
from service.settings import Settings
from store.outbox import claim_sync_requests

if TYPE_CHECKING:
    from approval.writeback import ApplyReport
    from connectors.base import Connector
    from connectors.sync import SyncSummary
    from rebalancer.progress import Observer

log = logging.getLogger(__name__)


class SyncFailedError(RuntimeError):
    """A scheduled sync ended failed or stopped (the job run records it as failed)."""


class WritebackUnconfiguredError(RuntimeError):
    """Write-back was asked for but no CRM is configured to write to."""


def sync_once(
    engine: Engine,
    settings: Settings,
    connector: Connector,
    *,
    now: dt.datetime,
    objects: Sequence[CrmObject] = tuple(CrmObject),
    full: bool = False,
    allow_mass_delete: bool = False,
    progress: Callable[[CrmObject, int], None] | None = None,
) -> SyncSummary:
    """One sync of ``objects`` from ``connector`` with the settings' lookback, roster and delete guard.

    What ``territory sync``, the scheduled sync and ``territory apply``'s re-sync share.
    """
    from connectors.roster import load_roster
    from connectors.sync import run_sync

    roster = load_roster(settings.sync.roster) if settings.sync.roster is not None else None
    return run_sync(
        engine,
        connector,
        objects=objects,
        full=full,
        progress=progress,
        now=now,
        lookback=dt.timedelta(seconds=settings.sync.lookback_seconds),
        roster=roster,
        delete_guard=settings.sync.delete_guard(allow_mass_delete),
    )


def sync_job(
    engine: Engine, settings: Settings, ctx: JobContext, objects: Sequence[CrmObject] = tuple(CrmObject)
) -> dict[str, Any]:
    """Incremental sync of ``objects`` from the configured source; a change triggers a snapshot."""
    from connectors.registry import build_connector

    source = settings.scheduler.sync_source
    if source is None:
        raise SyncFailedError("scheduler.sync_source is not set")

    def progress(obj: CrmObject, rows: int) -> None:
        ctx.check_stop()  # shutdown: hand back at a batch boundary; the next run resumes from there

    connector = build_connector(source, settings, settings.scheduler.sync_path)
    summary = sync_once(engine, settings, connector, now=ctx.now, objects=objects, progress=progress)
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


def crm_of(settings: Settings) -> Connector:
    """The connector of ``scheduler.sync_source``: the CRM that is synced is the one written back to."""
    from connectors.registry import build_connector

    source = settings.scheduler.sync_source
    if source is None:
        raise WritebackUnconfiguredError(
            "scheduler.sync_source is not set: there is no CRM to write approved moves to"
        )
    return build_connector(source, settings, settings.scheduler.sync_path)


def write_back(
    engine: Engine,
    settings: Settings,
    crm: Connector,
    *,
    now: dt.datetime,
    worker: str,
    proposal_id: int | None = None,
) -> list[ApplyReport]:
    """The due write-back of approved proposals to ``crm``, as the ``writeback`` settings say."""
    from approval.writeback import run_due

    w = settings.writeback
    return run_due(
        engine,
        crm,
        now=now,
        worker=worker,
        proposal_id=proposal_id,
        chunk=w.chunk_size,
        max_attempts=w.max_attempts,
        opportunities_follow=w.opportunities == "follow",
    )


def writeback_job(engine: Engine, settings: Settings, ctx: JobContext) -> dict[str, Any]:
    """Write what is due; moves written trigger an incremental sync, which triggers a snapshot."""
    from approval.notify import post_writeback_result
    from approval.slack import client_for

    reports = write_back(engine, settings, crm_of(settings), now=ctx.now, worker=ctx.holder)
    written = sum(r.written for r in reports)
    client = client_for(settings.slack)
    for r in reports:
        if client is not None and (r.written or r.conflicts or r.failed):
            final = r.state if r.state in ("applied", "partially_applied", "failed") else None
            post_writeback_result(engine, client, r.proposal_id, wave=None, written=r.written,
                                  conflicts=r.conflicts, failed=r.failed, state=final)  # fmt: skip
    details: dict[str, Any] = {"proposals": [r.as_json() for r in reports], "written": written}
    log.info("write-back job done", extra={"job": ctx.job, "job_run_id": ctx.run_id, "written": written})
    if written:
        details["sync_triggered"] = ctx.trigger("sync", 0)
    return details


def snapshot_job(engine: Engine, settings: Settings, ctx: JobContext, *, kind: str) -> dict[str, Any]:
    """A health snapshot: ``monthly`` as of the 1st of the month, ``event`` as of today.

    Fired drift events trigger a proposal (``rebalancer.auto_propose``).
    """
    from monitor.jobs import take_snapshot

    today = ctx.now.date()
    as_of = today.replace(day=1) if kind == "monthly" else today
    result = take_snapshot(engine, settings.metrics, settings.rules, as_of=as_of, kind=kind)
    fired = len(result.health.fired)
    log.info(
        "snapshot taken",
        extra={"job": ctx.job, "job_run_id": ctx.run_id, "snapshot_id": result.snapshot_id, "fired": fired},
    )
    details: dict[str, Any] = {"snapshot_id": result.snapshot_id, "as_of": as_of.isoformat(), "kind": kind}
    if fired and settings.rebalancer.auto_propose:
        details["propose_triggered"] = ctx.trigger("propose", 0)
    return details


def propose_and_announce(
    engine: Engine, settings: Settings, *, now: dt.datetime, observer: Observer | None = None
) -> dict[str, Any]:
    """A proposal of the configured scenario, stored once and posted to Slack when Slack is set up;
    ``observer`` sees the solver's progress (rebalancer/progress.py)."""
    from approval.notify import post_proposal
    from approval.slack import client_for
    from rebalancer.edge import propose_from_store

    r = settings.rebalancer
    scenario = r.all_scenarios(settings.rules.drift_rules())[r.scenario]
    document = propose_from_store(
        engine,
        scenario,
        touches=settings.metrics.touches_per_tier(),
        as_of=now.date(),
        now=now,
        expires_in=dt.timedelta(days=settings.slack.expiry_days),
        waves=r.waves,
        time_limit=r.time_limit_seconds,
        observer=observer,
    )
    client = client_for(settings.slack)
    if document["stored"] and client is not None and settings.slack.channel:
        post_proposal(engine, client, channel=settings.slack.channel, proposal_id=document["proposal_id"])
    return document


def propose_job(engine: Engine, settings: Settings, ctx: JobContext) -> dict[str, Any]:
    """After fired drift: propose (the same data gives the same proposal back, so a repeat adds none)."""
    document = propose_and_announce(engine, settings, now=ctx.now)
    log.info(
        "proposal made",
        extra={"job": ctx.job, "job_run_id": ctx.run_id, "proposal_id": document["proposal_id"],
               "moves": len(document["moves"]), "stored": document["stored"]},
    )  # fmt: skip
    return {k: document[k] for k in ("proposal_id", "status", "stored", "superseded", "objective")}


def expiry_job(engine: Engine, settings: Settings, ctx: JobContext) -> dict[str, Any]:
    """Undecided proposals past their expiry become ``expired``; their Slack messages say so."""
    from approval.notify import expire_and_show
    from approval.slack import client_for

    expired = expire_and_show(engine, client_for(settings.slack), now=ctx.now)
    return {"expired": expired}


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
    sched(
        "writeback",
        p(writeback_job, engine, settings),
        every(settings.writeback.poll_seconds / 60),
        enabled=s.sync_source is not None and settings.writeback.enabled,
        has_work=p(_due_writeback, engine),
        serial="sync",
    )
    sched("health_snapshot", p(snapshot_job, engine, settings, kind="event"), None)
    sched("propose", p(propose_job, engine, settings), None, enabled=settings.rebalancer.auto_propose)
    sched("proposal_expiry", p(expiry_job, engine, settings), every(15))
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


def _due_writeback(engine: Engine) -> bool:
    from store.outbox import WRITEBACK, due_count

    with engine.connect() as conn:
        return due_count(conn, kind=WRITEBACK, now=dt.datetime.now(dt.UTC)) > 0


def _pending(engine: Engine) -> bool:
    from store.outbox import pending_sync_requests

    return pending_sync_requests(engine) > 0
