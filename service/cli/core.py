"""The root of ``territory``: the app and its callback, the entry point, and the daemon's own commands.

The root callback builds the settings once for whichever command runs; :func:`main` turns our errors
into one line and an exit status. ``migrate``, ``demo`` and ``serve`` are the commands that run the
daemon itself; every other group lives in its own module of this package.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import psycopg
import typer
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from service.cli import render
from service.cli.options import FormatOption, OutputFormat, emit_json, settings_of
from service.errors import ConfigError
from service.logs import configure_logging
from service.runtime import open_database
from service.settings import Settings, load_settings
from store.errors import StoreError, database_reason

if TYPE_CHECKING:  # the commands import what they run; `territory --help` stays fast
    from connectors.sandbox.salesforce import SandboxServer
    from rebalancer.progress import Progress as SolveProgress

app = typer.Typer(
    name="territory",
    help="Keeps sales territories fair: CRM sync, territory health, drift, rebalancing and write-back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


def migrate(
    ctx: typer.Context,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Migrate the database to the latest schema (what the Kubernetes migration Job runs)."""
    from store import migrate as migrations

    with open_database(settings_of(ctx)) as engine:
        before = migrations.upgrade(engine, revision)
        after = migrations.current(engine)
    typer.echo(f"database at revision {after} (was {before or 'empty'})")


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
    approve_as: Annotated[
        str | None,
        typer.Option("--approve-as", help="approve the proposal as NAME (scripted runs; else it asks)"),
    ] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """The loop on the embedded default: sandbox CRM, sync, health, a proposal, approval, write-back.

    A generated org is served by the sandbox Salesforce; the real connector syncs it into the embedded
    PostgreSQL; every territory is measured; the rebalancer proposes; once approved (--approve-as, the
    prompt at a terminal, or `territory proposals approve` from another shell while the daemon runs)
    the moves are written back to the sandbox, re-synced and measured again; then `territory serve`
    runs against the same sandbox (/metrics, /healthz, the scheduler) until Ctrl-C.
    """
    settings = settings_of(ctx)
    accounts = accounts or settings.demo.accounts
    reps = reps or settings.demo.reps
    seed = settings.demo.seed if seed is None else seed
    console = Console(stderr=True)
    if settings.database_url is not None:
        console.print("demo runs on the embedded PostgreSQL; TERRITORY_DATABASE_URL is left untouched")
    started = time.perf_counter()
    sandbox = _demo_sandbox(console, settings, accounts=accounts, reps=reps, seed=seed)
    try:
        _run_demo(
            console, settings, sandbox, started=started, serve=serve, output=output, approve_as=approve_as
        )
    finally:
        sandbox.stop()


def _demo_sandbox(
    console: Console, settings: Settings, *, accounts: int, reps: int, seed: int
) -> SandboxServer:
    """Generate the demo's org and serve it from the sandbox Salesforce."""
    from connectors.sandbox.generator import DEFAULT_NOW, generate_org
    from connectors.sandbox.salesforce import start_salesforce_sandbox

    with console.status(
        f"generating an org of {accounts:,} accounts and {reps:,} reps (seed {seed})"
    ) as status:
        org = generate_org(accounts=accounts, reps=reps, seed=seed, now=DEFAULT_NOW)
        status.update("starting the sandbox Salesforce")
        return start_salesforce_sandbox(org, cert_dir=settings.data_dir / "sandbox-tls")


def _run_demo(
    console: Console,
    settings: Settings,
    sandbox: SandboxServer,
    *,
    started: float,
    serve: bool,
    output: OutputFormat,
    approve_as: str | None,
) -> None:
    """Sync the sandbox, measure, propose, print; approve and write back; then (``serve``) the daemon."""
    from service.demo import apply_demo, run_demo, sandbox_settings
    from service.serve import serve as run_serve

    demo_settings = sandbox_settings(settings, sandbox.url, sandbox.access_token, sandbox.ca_path)
    r = settings.rebalancer
    solver = render.SolverStatus(r.scenario, r.time_limit_seconds)
    with console.status("starting the embedded PostgreSQL") as status:

        def solving(progress: SolveProgress) -> None:  # the proposal's live line replaces the status
            solver(progress)
            status.update(solver)

        result = run_demo(demo_settings, now=dt.datetime.now(dt.UTC), status=status.update, observer=solving)
    table = output is OutputFormat.table
    if table:
        render.print_demo(result, settings.data_dir, sandbox.url, time.perf_counter() - started)
    if result.sync.status != "succeeded":
        if not table:
            emit_json({"data_dir": str(settings.data_dir), **result.as_dict(), "applied": None})
        raise typer.Exit(1)
    proposal_id = result.proposal["proposal_id"]
    approver = approve_as or (_ask(proposal_id) if table and proposal_id is not None else None)
    applied = None
    if approver and proposal_id is not None:
        with console.status("approving") as status:
            applied = apply_demo(demo_settings, proposal_id, approver=approver, now=dt.datetime.now(dt.UTC),
                                 status=status.update)  # fmt: skip
        if table:
            render.print_applied(result, applied)
    elif table and proposal_id is not None:
        console.print(
            f"proposal {proposal_id} waits for a decision: `territory proposals approve {proposal_id} "
            "--as NAME` from another shell; the daemon below writes it back to the sandbox"
        )
    if not table:
        emit_json(
            {"data_dir": str(settings.data_dir), "seconds": round(time.perf_counter() - started, 3),
             **result.as_dict(), "applied": applied.as_dict() if applied is not None else None}
        )  # fmt: skip
    if serve:
        where = f"http://{settings.server.host}:{settings.server.port}"
        console.print(
            f"serving {where}/metrics, /healthz and /readyz; the scheduler syncs the sandbox every "
            f"{settings.scheduler.sync_interval_minutes:g} minutes. Ctrl-C stops."
        )
        run_serve(demo_settings)


def _ask(proposal_id: int) -> str | None:
    """At a terminal, who approves the demo's proposal (Enter: nobody now); elsewhere nobody."""
    if not sys.stdin.isatty():
        return None
    answer: str = typer.prompt(
        f"Approve proposal {proposal_id}? Your name to approve (or `territory proposals approve "
        f"{proposal_id} --as NAME` from another shell), Enter to leave it",
        default="",
        show_default=False,
    )
    return answer.strip() or None


def serve(ctx: typer.Context) -> None:
    """Run the daemon: HTTP (webhooks, /metrics, /healthz, /readyz) and the leader-elected scheduler."""
    from service.serve import serve as run_serve

    run_serve(settings_of(ctx))


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
        typer.echo(f"territory: database error: {database_reason(exc)}", err=True)
        sys.exit(1)
    except OSError as exc:  # an output path that is missing, a directory, read-only, or a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(f"territory: {where}{exc.strerror or exc}", err=True)
        usage = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
        sys.exit(2 if isinstance(exc, usage) else 1)
