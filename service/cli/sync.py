"""``territory sync``: pull the CRM into PostgreSQL, with a progress line per object on a terminal."""

from __future__ import annotations

import datetime as dt
import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from service.cli import render
from service.cli.options import FormatOption, OutputFormat, emit_json, settings_of
from service.errors import ConfigError
from service.runtime import open_database

# `territory sync`'s exit status by the run's status (docs/sync.md); anything else not succeeded is 1.
SYNC_EXIT = {"succeeded": 0, "stopped": 3, "refused": 4}


class SyncSource(enum.StrEnum):
    """Where ``territory sync`` reads from."""

    salesforce = "salesforce"
    hubspot = "hubspot"
    csv = "csv"


def sync(
    ctx: typer.Context,
    source: Annotated[SyncSource, typer.Option("--source", help="the CRM to read from")],
    path: Annotated[
        Path | None, typer.Option(help="folder of the CSV export (--source csv)", show_default=False)
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="read everything, not only what changed")] = False,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="let a full export delete more than sync.max_delete_share of an object",
        ),
    ] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Pull owners, accounts and opportunities from the CRM into PostgreSQL (docs/sync.md).

    Exit status: 0 done, 1 failed (committed batches are kept; the next run resumes), 3 stopped
    before the CRM's API quota ran out (run again later).
    """
    from connectors.errors import ConnectorConfigError
    from connectors.registry import build_connector
    from connectors.sync import SyncBusyError
    from service.jobs import sync_once

    settings = settings_of(ctx)
    try:
        connector = build_connector(source.value, settings, path)
    except ConnectorConfigError as exc:
        raise ConfigError(str(exc)) from None
    bar, progress = render.sync_progress(Console(stderr=True))
    with open_database(settings) as engine, bar:
        try:
            summary = sync_once(
                engine, settings, connector, now=dt.datetime.now(dt.UTC), full=full,
                allow_mass_delete=allow_mass_delete, progress=progress,
            )  # fmt: skip
        except ConnectorConfigError as exc:
            raise ConfigError(str(exc)) from None
        except SyncBusyError as exc:
            typer.echo(f"territory: {exc}", err=True)
            raise typer.Exit(1) from None
    if output is OutputFormat.json:
        emit_json(summary.as_dict())
    else:
        typer.echo(summary.one_line())
    if summary.status != "succeeded":
        raise typer.Exit(SYNC_EXIT.get(summary.status, 1))
