"""The ``territory`` command line: one entry point, settings built once, errors as one clear line."""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import psycopg
import psycopg.errors
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from service.cli_proposals import proposals_app
from service.errors import ConfigError
from service.logs import configure_logging
from service.runtime import open_database
from service.settings import Settings, load_settings
from store.errors import StoreError

if TYPE_CHECKING:  # the commands import what they run; `territory --help` stays fast
    from monitor.jobs import Health
    from monitor.snapshots import EventChanges
    from service.demo import DemoResult

log = logging.getLogger(__name__)


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
app.add_typer(proposals_app, name="proposals")


# `territory sync`'s exit status by the run's status (docs/sync.md); anything else not succeeded is 1.
SYNC_EXIT = {"succeeded": 0, "stopped": 3, "refused": 4}


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


def _as_of_day(as_of: dt.datetime | None) -> dt.date | None:
    """The ``--as-of`` day, refused (one line, exit 2) when it lies after today (UTC)."""
    if as_of is None:
        return None
    today = dt.datetime.now(dt.UTC).date()
    if as_of.date() > today:
        typer.echo(f"territory: --as-of {as_of.date()} is in the future (today is {today}, UTC)", err=True)
        raise typer.Exit(2)
    return as_of.date()


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
        before = migrations.upgrade(engine, revision)
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
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="go on serving /metrics and the scheduler")
    ] = True,
    output: FormatOption = OutputFormat.table,
) -> None:
    """The loop on the embedded default: sandbox CRM, sync, health and drift, then the daemon.

    A generated org is served by the sandbox Salesforce; the real connector syncs it into the embedded
    PostgreSQL; every territory is measured; then `territory serve` runs against the same sandbox
    (/metrics, /healthz, the scheduler) until Ctrl-C.
    """
    from connectors.sandbox.generator import DEFAULT_NOW, generate_org
    from connectors.sandbox.salesforce import start_salesforce_sandbox
    from service.demo import run_demo, sandbox_settings
    from service.serve import serve as run_serve

    settings = _settings(ctx)
    accounts = accounts or settings.demo.accounts
    reps = reps or settings.demo.reps
    seed = settings.demo.seed if seed is None else seed
    console = Console(stderr=True)
    if settings.database_url is not None:
        console.print("demo runs on the embedded PostgreSQL; TERRITORY_DATABASE_URL is left untouched")
    started = time.perf_counter()
    with console.status(
        f"generating an org of {accounts:,} accounts and {reps:,} reps (seed {seed})"
    ) as status:
        org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
        status.update("starting the sandbox Salesforce")
        sandbox = start_salesforce_sandbox(org, cert_dir=settings.data_dir / "sandbox-tls")
    try:
        demo_settings = sandbox_settings(settings, sandbox.url, sandbox.access_token, sandbox.ca_path)
        with console.status("starting the embedded PostgreSQL") as status:
            result = run_demo(demo_settings, now=dt.datetime.now(dt.UTC), status=status.update)
        seconds = time.perf_counter() - started
        if output is OutputFormat.json:
            _emit_json({"data_dir": str(settings.data_dir), "seconds": round(seconds, 3), **result.as_dict()})
        else:
            _print_demo(result, settings, sandbox.url, seconds)
        if result.sync.status != "succeeded":
            raise typer.Exit(1)
        if serve:
            where = f"http://{settings.server.host}:{settings.server.port}"
            console.print(
                f"serving {where}/metrics, /healthz and /readyz; the scheduler syncs the sandbox every "
                f"{settings.scheduler.sync_interval_minutes:g} minutes. Ctrl-C stops."
            )
            run_serve(demo_settings)
    finally:
        sandbox.stop()


def _print_demo(result: DemoResult, settings: Settings, sandbox_url: str, seconds: float) -> None:
    """The demo's report on a terminal: the sync, the org it produced, and the territories' health."""
    summary = result.org
    out = Console()
    out.print(f"[bold]Sandbox Salesforce[/bold] at {sandbox_url}; embedded PostgreSQL in {settings.data_dir}")
    out.print(result.sync.one_line())
    totals = Table("what", "count", title="The org in PostgreSQL", title_justify="left")
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
    _print_drift(out, result.snapshot.health)
    out.print(
        f"saved snapshot {result.snapshot.snapshot_id}; every metric of every territory: "
        "`territory health`; the report: `territory report --out report.html`"
    )
    out.print(f"done in {seconds:.1f} s")


DRIFT_ROWS = 15


def _print_drift(out: Console, report: Health) -> None:
    """The balance of each metric and the territories furthest outside their rules' bands."""
    stats = Table("metric", "mean", "cv", "gini", "outside band", title="Balance", title_justify="left")
    for name, row in report.balance.iterrows():
        cv, gini = (f"{row[s]:.3f}" if row[s] == row[s] else "-" for s in ("cv", "gini"))
        stats.add_row(str(name), _health_cell(row["mean"], str(name)), cv, gini, f"{row['outside_band']:.0f}")
    out.print(stats)
    fired = report.fired
    if fired.empty:
        out.print("no territory is outside a band")
        return
    names = report.territories["owner_name"]
    worst = fired.assign(size=fired["deviation"].abs()).sort_values("size", ascending=False).head(DRIFT_ROWS)
    table = Table(
        "territory", "rule", "value", "org mean", "deviation",
        title=f"Drift: {len(fired):,} breaches in {fired['owner_id'].nunique():,} territories "
        f"(the {len(worst)} largest)",
        title_justify="left",
    )  # fmt: skip
    for r in worst.itertuples(index=False):
        metric = str(r.metric)
        table.add_row(
            str(names.get(r.owner_id, r.owner_id)),
            str(r.rule),
            _health_cell(r.value, metric),
            _health_cell(r.mean, metric),
            f"{r.deviation:+.0%}",
        )
    out.print(table)


@sandbox_app.command("export")
def sandbox_export(
    out: Annotated[Path, typer.Option(help="folder to write owners.csv, accounts.csv, ... into")],
    accounts: Annotated[int, typer.Option(min=0, help="accounts to generate")] = 5000,
    reps: Annotated[int, typer.Option(min=1, help="reps (territories) to generate")] = 40,
    seed: Annotated[int, typer.Option(min=0, help="same seed, same bytes")] = 7,
    force: Annotated[bool, typer.Option("--force", help="overwrite an export already in the folder")] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Write a realistic generated org as CSV files in the import format (docs/csv-format.md)."""
    from connectors.sandbox.generator import CSV_FILES, DEFAULT_NOW, generate_org, write_csv

    existing = sorted(name for name in CSV_FILES if (out / name).exists())
    if existing and not force:
        typer.echo(
            f"territory: {out} already holds an export ({existing[0]}); add --force to replace it", err=True
        )
        raise typer.Exit(2)

    console = Console(stderr=True)
    started = time.perf_counter()
    with console.status(f"generating {accounts:,} accounts and {reps:,} reps"):
        org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
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


def _health_cell(value: Any, metric: str) -> str:
    """A metric value for the health table: counts as integers, shares as %, money rounded."""
    if value is None or value != value:  # None or NaN
        return "-"
    if metric in ("win_rate_12m", "quota_attainment", "utilization", "top_account_share"):
        return f"{value:.0%}"
    if metric == "travel_km":
        return f"{value:,.0f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.4g}"


@app.command()
def health(
    ctx: typer.Context,
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="measure as of this day (default: today, UTC)",
            show_default=False,
        ),
    ] = None,
    output: FormatOption = OutputFormat.table,
    backfill_months: Annotated[
        int | None,
        typer.Option(
            "--backfill",
            min=1,
            max=600,
            help="recompute backfill snapshots as of the first of each of the past N months",
            show_default=False,
        ),
    ] = None,
    save: Annotated[
        bool, typer.Option("--save/--no-save", help="store an on-demand snapshot and update the drift events")
    ] = True,
) -> None:
    """Every territory's health metrics, their balance across territories, and the drift breaches."""
    from monitor.jobs import backfill, compute_health, take_snapshot
    from store import migrate as migrations
    from store.errors import DatabaseError

    settings = _settings(ctx)
    day = _as_of_day(as_of) or dt.datetime.now(dt.UTC).date()
    if backfill_months is not None and not save:
        raise typer.BadParameter("--backfill writes snapshots; it cannot be combined with --no-save")
    with open_database(settings) as engine:
        if not migrations.is_at_head(engine):
            raise DatabaseError("the database is not migrated to the latest schema; run `territory migrate`")
        if backfill_months is not None:
            results = backfill(engine, settings.metrics, settings.rules, months=backfill_months, today=day)
            written: list[dict[str, Any]] = [
                {
                    "as_of": r.health.as_of.isoformat(),
                    "snapshot_id": r.snapshot_id,
                    "territories": len(r.health.territories),
                    "breaches": len(r.health.fired),
                }
                for r in results
            ]
            if output is OutputFormat.json:
                _emit_json({"backfill": written})
                return
            table = Table("as of", "snapshot", "territories", "breaches", title="Backfill snapshots written")
            for w in written:
                table.add_row(w["as_of"], str(w["snapshot_id"]), f"{w['territories']:,}", str(w["breaches"]))
            Console().print(table)
            return
        if save:
            result = take_snapshot(engine, settings.metrics, settings.rules, as_of=day, kind="on_demand")
            report, snapshot_id, events = result.health, result.snapshot_id, result.events
        else:
            with engine.connect() as conn:
                report = compute_health(
                    conn, settings.metrics.touches_per_tier(), settings.rules.drift_rules(), day
                )
            snapshot_id, events = None, None
    if output is OutputFormat.json:
        _emit_json(report.as_json())
        return
    _print_health(Console(), report, snapshot_id, events)


def _print_health(out: Console, report: Health, snapshot_id: int | None, events: EventChanges | None) -> None:
    """The health table (breaches highlighted), the balance table and a closing line."""
    from monitor.catalog import METRICS
    from monitor.metrics import UNLOCATED

    day = report.as_of
    fired = {(str(r.owner_id), str(r.metric)) for r in report.fired.itertuples(index=False)}
    pending = {(str(r.owner_id), str(r.metric)) for r in report.breaches.itertuples(index=False)} - fired
    table = Table("owner", "name", *METRICS, title=f"Territory health as of {day}", title_justify="left")
    for owner_id, row in report.territories.iterrows():
        cells = []
        for metric in METRICS:
            cell = _health_cell(row[metric], metric)
            key = (str(owner_id), metric)
            style = "bold red" if key in fired else "yellow" if key in pending else ""
            cells.append(f"[{style}]{cell}[/{style}]" if style else cell)
        table.add_row(str(owner_id), str(row["owner_name"]), *cells)
    out.print(table)
    stats = Table(
        "metric", "mean", "cv", "gini", "min/max", "outside band", title="Balance", title_justify="left"
    )
    for name, row in report.balance.iterrows():
        stats.add_row(
            str(name),
            _health_cell(row["mean"], str(name)),
            *(f"{row[s]:.3f}" if row[s] == row[s] else "-" for s in ("cv", "gini", "min_max_ratio")),
            f"{row['outside_band']:.0f}",
        )
    out.print(stats)
    unlocated = int(report.territories[UNLOCATED].sum())
    out.print(
        f"{len(report.territories):,} territories, [bold red]{len(fired)} breaches[/bold red]"
        f" ({len(pending)} more outside a band, waiting for their rule's consecutive snapshots);"
        f" {report.unassigned:,} accounts in no territory; {unlocated:,} without a location (left out of"
        " travel_km)"
    )
    if snapshot_id is not None:
        changes = ""
        if events is not None:
            changes = f"; drift events: {events.opened} opened, {events.updated} updated"
            changes += f", {events.resolved} resolved"
        out.print(f"saved snapshot {snapshot_id}{changes}")


def _fault_settings(faults: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``name=value`` flags split into the Salesforce and the HubSpot sandbox's fault fields."""
    import dataclasses

    from connectors.sandbox.hubspot import HubSpotFaults
    from connectors.sandbox.salesforce import SalesforceFaults

    picked: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    kinds = (SalesforceFaults, HubSpotFaults)
    for flag in faults:
        name, sep, value = flag.partition("=")
        matched = False
        for chosen, kind in zip(picked, kinds, strict=True):
            default = {f.name: f for f in dataclasses.fields(kind)}.get(name.strip())
            if default is None or not sep:
                continue
            base = getattr(kind(), default.name)
            try:
                if isinstance(base, list | tuple):
                    parsed: Any = type(base)(int(v) for v in value.split(",") if v.strip())
                elif base is None or (isinstance(base, int) and not isinstance(base, bool)):
                    parsed = int(value)
                else:
                    parsed = type(base)(value)
            except ValueError:
                raise ConfigError(f"--fault {flag}: {value!r} is not a valid {name}") from None
            chosen[default.name] = parsed
            matched = True
        if not matched:
            known = sorted({f.name for kind in kinds for f in dataclasses.fields(kind)})
            raise ConfigError(f"--fault {flag}: expected NAME=VALUE with NAME one of {', '.join(known)}")
    return picked


@sandbox_app.command("serve")
def sandbox_serve(
    ctx: typer.Context,
    accounts: Annotated[int, typer.Option(min=0, help="accounts to generate")] = 5000,
    reps: Annotated[int, typer.Option(min=1, help="reps (territories) to generate")] = 40,
    seed: Annotated[int, typer.Option(min=0, help="same seed, same org")] = 7,
    salesforce_port: Annotated[int, typer.Option(help="HTTPS port of the Salesforce API (0: any free)")] = 0,
    hubspot_port: Annotated[int, typer.Option(help="HTTP port of the HubSpot API (0: any free)")] = 0,
    fault: Annotated[
        list[str] | None,
        typer.Option(help="inject a fault, NAME=VALUE, e.g. throttle_share=0.1 or rate_limit_share=0.1"),
    ] = None,
) -> None:
    """Serve a generated org as local Salesforce and HubSpot APIs until Ctrl-C or SIGTERM."""
    import shlex
    import signal
    import threading

    from connectors.sandbox.generator import DEFAULT_NOW, generate_org
    from connectors.sandbox.hubspot import HubSpotFaults, start_hubspot_sandbox
    from connectors.sandbox.salesforce import SalesforceFaults, start_salesforce_sandbox

    settings = _settings(ctx)
    sf_faults, hs_faults = _fault_settings(fault or [])
    org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
    cert_dir = settings.data_dir / "sandbox-tls"
    cert_dir.mkdir(parents=True, exist_ok=True)
    sf = start_salesforce_sandbox(
        org, port=salesforce_port, faults=SalesforceFaults(**sf_faults), cert_dir=cert_dir
    )
    try:
        hs = start_hubspot_sandbox(org, port=hubspot_port, faults=HubSpotFaults(**hs_faults))
    except BaseException:
        sf.stop()
        raise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(
        f"sandbox CRM: {accounts:,} accounts, {reps:,} reps (seed {seed})\n"
        f"Salesforce  {sf.url}  (CA: {sf.ca_path})\n"
        f"HubSpot     {hs.url}\n"
        "Point the connectors at them:\n"
        f"  export TERRITORY_SALESFORCE__AUTH=access_token TERRITORY_SALESFORCE__INSTANCE_URL={sf.url}\n"
        f"  export TERRITORY_SALESFORCE__ACCESS_TOKEN={shlex.quote(sf.access_token)}\n"
        f"  export TERRITORY_SALESFORCE__CA_BUNDLE={shlex.quote(str(sf.ca_path))}\n"
        f"  export TERRITORY_HUBSPOT__BASE_URL={hs.url} "
        f"TERRITORY_HUBSPOT__ACCESS_TOKEN={shlex.quote(hs.access_token)} "
        "TERRITORY_HUBSPOT__SEARCH_REQUESTS_PER_SECOND=0\n"
        "  territory sync --source salesforce   # or --source hubspot\n"
        "Ctrl-C stops the servers."
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        hs.stop()
        sf.stop()
    typer.echo("sandbox stopped")


class SyncSource(enum.StrEnum):
    """Where ``territory sync`` reads from."""

    salesforce = "salesforce"
    hubspot = "hubspot"
    csv = "csv"


@app.command()
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
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from connectors.errors import ConnectorConfigError
    from connectors.registry import build_connector
    from connectors.roster import load_roster
    from connectors.sync import SyncBusyError, run_sync

    settings = _settings(ctx)
    try:
        connector = build_connector(source.value, settings, path)
        roster = load_roster(settings.sync.roster) if settings.sync.roster is not None else None
    except ConnectorConfigError as exc:
        raise ConfigError(str(exc)) from None
    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} rows"))
    bar = Progress(*columns, TimeElapsedColumn(), console=console, disable=not console.is_terminal)
    tasks: dict[str, Any] = {}

    def progress(obj: Any, rows: int) -> None:
        if obj not in tasks:
            tasks[obj] = bar.add_task(str(obj), total=None)
        bar.update(tasks[obj], completed=rows)

    with open_database(settings) as engine, bar:
        try:
            summary = run_sync(
                engine,
                connector,
                full=full,
                progress=progress,
                now=dt.datetime.now(dt.UTC),
                lookback=dt.timedelta(seconds=settings.sync.lookback_seconds),
                roster=roster,
                delete_guard=settings.sync.delete_guard(allow_mass_delete),
            )
        except SyncBusyError as exc:
            typer.echo(f"territory: {exc}", err=True)
            raise typer.Exit(1) from None
    if output is OutputFormat.json:
        _emit_json(summary.as_dict())
    else:
        typer.echo(summary.one_line())
    if summary.status != "succeeded":
        raise typer.Exit(SYNC_EXIT.get(summary.status, 1))


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run the daemon: HTTP (webhooks, /metrics, /healthz, /readyz) and the leader-elected scheduler."""
    from service.serve import serve as run_serve

    run_serve(_settings(ctx))


@app.command()
def report(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="the HTML file to write")],
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(
            "--as-of",
            formats=["%Y-%m-%d"],
            help="report the latest snapshot on or before this day (default: the latest)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the health report: one self-contained HTML file (scorecard, bands, trend, drift, map)."""
    from monitor.report import render_report
    from monitor.report_data import load_report

    settings = _settings(ctx)
    day = _as_of_day(as_of)
    with open_database(settings) as engine, engine.connect() as conn:
        data = load_report(
            conn,
            as_of=day,
            rules=settings.rules.drift_rules(),
            generated_at=dt.datetime.now(dt.UTC),
        )
    if data is None:
        when = f" on or before {as_of.date()}" if as_of is not None else ""
        typer.echo(f"territory: no snapshot{when}; run `territory health` first", err=True)
        raise typer.Exit(1)
    out.write_text(render_report(data), encoding="utf-8")
    typer.echo(f"wrote {out}: {len(data.territories):,} territories, snapshot as of {data.as_of}")


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
    except (DBAPIError, psycopg.Error) as exc:  # the server went away, a statement timed out, no schema
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        reason = (str(cause).strip().splitlines() or ["no reason given"])[0]
        if isinstance(cause, psycopg.errors.UndefinedTable):
            reason = f"the database is not migrated ({reason}); run `territory migrate`"
        typer.echo(f"territory: database error: {reason}", err=True)
        sys.exit(1)
    except OSError as exc:  # an output path that is missing, a directory, read-only, or a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"territory: {where}{exc.strerror or exc}", err=True)
        usage = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
        sys.exit(2 if isinstance(exc, usage) else 1)
