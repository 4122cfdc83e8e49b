"""``territory config``: inspect the settings the daemon would run with."""

from __future__ import annotations

import typer

from service.cli import render
from service.cli.options import FormatOption, OutputFormat, emit_json, settings_of

config_app = typer.Typer(help="Inspect the settings the daemon would run with.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Print the effective settings (file, environment and defaults merged; secrets masked)."""
    values = settings_of(ctx).model_dump(mode="json")
    if output is OutputFormat.json:
        emit_json(values)
        return
    render.print_settings(values)
