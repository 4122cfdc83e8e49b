"""``territory apply``: write the due moves of approved proposals to the CRM now, then re-sync.

The daemon does the same by itself (the ``writeback`` job); this is for a scripted run, a run without
the daemon, or an operator who does not want to wait for the next poll. Both claim the same outbox
jobs, so running it beside the daemon writes nothing twice.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Annotated, Any

import typer

from service.cli import render
from service.cli.options import FormatOption, OutputFormat, emit_json, settings_of
from service.errors import ConfigError
from service.runtime import open_database


def apply(
    ctx: typer.Context,
    proposal_id: Annotated[
        int | None, typer.Option("--proposal", help="only this proposal's due moves", show_default=False)
    ] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Write the due moves of approved proposals to the CRM (docs/approval.md), then sync the changes.

    Exit status: 0 done (conflicts are reported, not errors), 1 a transient CRM error left moves
    pending (they are retried later), 2 no CRM configured (scheduler.sync_source).
    """
    from connectors.base import CrmObject
    from connectors.errors import ConnectorConfigError
    from service.jobs import WritebackUnconfiguredError, crm_of, sync_once, write_back

    settings = settings_of(ctx)
    try:
        crm = crm_of(settings)
    except (WritebackUnconfiguredError, ConnectorConfigError) as exc:
        raise ConfigError(str(exc)) from None
    now = dt.datetime.now(dt.UTC)
    worker = f"cli:{socket.gethostname()}:{os.getpid()}"
    with open_database(settings) as engine:
        reports = write_back(engine, settings, crm, now=now, worker=worker, proposal_id=proposal_id)
        written = sum(r.written for r in reports)
        resync = None
        if written:  # the CRM now says something the database does not: read it back
            objects = (CrmObject.accounts, CrmObject.opportunities)
            resync = sync_once(engine, settings, crm, now=dt.datetime.now(dt.UTC), objects=objects)
    result: dict[str, Any] = {
        "proposals": [r.as_json() for r in reports],
        "written": written,
        "sync": resync.as_dict() if resync is not None else None,
    }
    if output is OutputFormat.json:
        emit_json(result)
    else:
        render.print_apply(result, resync.one_line() if resync is not None else None)
    if any(r.errors for r in reports):
        raise typer.Exit(1)
