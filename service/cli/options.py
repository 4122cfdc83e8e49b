"""What every command group shares: the output format, the settings of the run, ``--as-of`` and JSON."""

from __future__ import annotations

import datetime as dt
import enum
import json
import sys
from typing import Annotated, Any

import typer

from service.settings import Settings


class OutputFormat(enum.StrEnum):
    """How a command prints its result."""

    table = "table"
    json = "json"


FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table for people, json for scripts")]


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root callback built (a command group's context reaches them through the root)."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):  # only if a command is invoked without the root callback
        raise TypeError("the settings were not built")
    return settings


def as_of_day(as_of: dt.datetime | None) -> dt.date | None:
    """The ``--as-of`` day, refused (one line, exit 2) when it lies after today (UTC)."""
    if as_of is None:
        return None
    today = dt.datetime.now(dt.UTC).date()
    if as_of.date() > today:
        typer.echo(f"territory: --as-of {as_of.date()} is in the future (today is {today}, UTC)", err=True)
        raise typer.Exit(2)
    return as_of.date()


def emit_json(value: Any) -> None:
    """A command's result for scripts: indented JSON on stdout, dates and the like as strings."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
