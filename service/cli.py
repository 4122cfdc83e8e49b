"""The ``territory`` command line: one entry point, settings built once, errors as one clear line."""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from service.errors import ConfigError
from service.logs import configure_logging
from service.runtime import open_database, open_embedded
from service.settings import Settings, load_settings
from store.errors import StoreError

log = logging.getLogger(__name__)

# The generator's clock: a fixed instant, so that the same seed gives the same bytes on any day.
SANDBOX_NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

app = typer.Typer(
    name="territory",
    help="Keeps sales territories fair: CRM sync, territory health, drift, rebalancing and write-back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(
    help="The sandbox CRM: generated orgs for the demo, the tests and the benchmarks.", no_args_is_help=True
)
config_app = typer.Typer(help="Inspect the settings the daemon would run with.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(config_app, name="config")


class OutputFormat(enum.StrEnum):
    """How a command prints its result."""

    table = "table"
    json = "json"


FormatOption = Annotated[OutputFormat, typer.Option("--format", help="table for people, json for scripts")]


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    if not isinstance(settings, Settings):  # only if a command is invoked without the root callback
        raise TypeError("the settings were not built")
    return settings


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="YAML config file (default: $TERRITORY_CONFIG)", show_default=False
        ),
    ] = None,
) -> None:
    """Build the settings once and set up logging for whichever command runs."""
    settings = load_settings(config)
    configure_logging(settings.logging.level, settings.logging.format)
    ctx.obj = settings


@app.command()
def migrate(
    ctx: typer.Context,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Migrate the database to the latest schema (what the Kubernetes migration Job runs)."""
    from store import migrate as migrations

    with open_database(_settings(ctx)) as engine:
        before = migrations.current(engine)
        migrations.upgrade(engine, revision)
        after = migrations.current(engine)
    typer.echo(f"database at revision {after} (was {before or 'empty'})")


@app.command()
def demo(
    ctx: typer.Context,
    accounts: Annotated[
        int | None, typer.Option(min=1, help="accounts to generate [config: demo.accounts]")
    ] = None,
    reps: Annotated[int | None, typer.Option(min=1, help="reps to generate [config: demo.reps]")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="generator seed [config: demo.seed]")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Run the loop on the embedded default: embedded PostgreSQL, migrate, load a generated org."""
    from connectors.sandbox.generator import generate_org
    from connectors.sandbox.seed import load_org
    from store import migrate as migrations
    from store.summary import org_summary

    settings = _settings(ctx)
    accounts = accounts or settings.demo.accounts
    reps = reps or settings.demo.reps
    seed = settings.demo.seed if seed is None else seed
    console = Console(stderr=True)
    if settings.database_url is not None:
        console.print("demo runs on the embedded PostgreSQL; TERRITORY_DATABASE_URL is left untouched")
    started = time.perf_counter()
    with console.status("starting the embedded PostgreSQL") as status, open_embedded(settings) as engine:
        status.update("migrating")
        migrations.upgrade(engine)
        status.update(f"generating an org of {accounts:,} accounts and {reps:,} reps (seed {seed})")
        org = generate_org(accounts=accounts, reps=reps, seed=seed, now=SANDBOX_NOW)
        status.update("loading it into PostgreSQL")
        load_org(engine, org)
        with engine.connect() as conn:
            summary = org_summary(conn)
    seconds = time.perf_counter() - started
    log.info("demo loaded the org", extra={"accounts": summary.accounts, "seconds": round(seconds, 3)})
    if output is OutputFormat.json:
        _emit_json({"data_dir": str(settings.data_dir), "seconds": round(seconds, 3), **summary.as_dict()})
        return
    out = Console()
    out.print(f"[bold]Loaded a generated org[/bold] into the embedded PostgreSQL in {settings.data_dir}")
    totals = Table("what", "count", title="The org", title_justify="left")
    for label, value in (
        ("owners (active)", f"{summary.owners:,} ({summary.active_owners:,})"),
        ("accounts (strategic)", f"{summary.accounts:,} ({summary.strategic_accounts:,})"),
        ("ARR", f"{summary.arr:,.0f}"),
        ("potential", f"{summary.potential:,.0f}"),
        (
            "opportunities (open, won)",
            f"{summary.opportunities:,} ({summary.open_opportunities:,}, {summary.won_opportunities:,})",
        ),
        ("ownership history rows", f"{summary.assignments:,}"),
    ):
        totals.add_row(label, value)
    out.print(totals)
    regions = Table("region", "reps", "accounts", "ARR", title="By region", title_justify="left")
    for r in summary.regions:
        regions.add_row(r.region, f"{r.reps:,}", f"{r.accounts:,}", f"{r.arr:,.0f}")
    out.print(regions)
    out.print(f"done in {seconds:.1f} s")


@sandbox_app.command("export")
def sandbox_export(
    out: Annotated[Path, typer.Option(help="folder to write owners.csv, accounts.csv, ... into")],
    accounts: Annotated[int, typer.Option(min=0, help="accounts to generate")] = 5000,
    reps: Annotated[int, typer.Option(min=1, help="reps (territories) to generate")] = 40,
    seed: Annotated[int, typer.Option(min=0, help="same seed, same bytes")] = 7,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Write a realistic generated org as CSV files in the import format (docs/csv-format.md)."""
    from connectors.sandbox.generator import generate_org, write_csv

    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status(f"generating {accounts:,} accounts and {reps:,} reps"):
        org = generate_org(accounts=accounts, reps=reps, seed=seed, now=SANDBOX_NOW)
    with console.status(f"writing CSV files to {out}"):
        rows = write_csv(org, out)
    seconds = time.perf_counter() - started
    if output is OutputFormat.json:
        _emit_json({"out": str(out), "files": rows, "seconds": round(seconds, 3)})
        return
    for name, count in rows.items():
        typer.echo(f"{out / name}: {count:,} rows")
    typer.echo(f"done in {seconds:.1f} s")


@config_app.command("show")
def config_show(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Print the effective settings (file, environment and defaults merged; secrets masked)."""
    values = _settings(ctx).model_dump(mode="json")
    if output is OutputFormat.json:
        _emit_json(values)
        return
    table = Table("key", "value")

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                table.add_row(prefix + key, "" if value is None else str(value))

    walk(values, "")
    Console().print(table)


def main() -> None:
    """Console-script entry point: run the app, turning our errors into one line and an exit status."""
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"territory: config error: {exc}", err=True)
        sys.exit(2)
    except StoreError as exc:
        typer.echo(f"territory: database error: {exc}", err=True)
        sys.exit(1)
