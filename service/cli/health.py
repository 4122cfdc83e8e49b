"""``territory health`` and ``territory report``: every territory measured, and the HTML report."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from service.cli import render
from service.cli.options import FormatOption, OutputFormat, as_of_day, emit_json, settings_of
from service.runtime import open_database

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from service.settings import Settings


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
    from monitor.jobs import compute_health, take_snapshot
    from store import migrate as migrations
    from store.errors import DatabaseError

    settings = settings_of(ctx)
    day = as_of_day(as_of) or dt.datetime.now(dt.UTC).date()
    if backfill_months is not None and not save:
        raise typer.BadParameter("--backfill writes snapshots; it cannot be combined with --no-save")
    with open_database(settings) as engine:
        if not migrations.is_at_head(engine):
            raise DatabaseError("the database is not migrated to the latest schema; run `territory migrate`")
        if backfill_months is not None:
            _backfill(engine, settings, backfill_months, day, output)
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
        emit_json(report.as_json())
        return
    render.print_health(Console(), report, snapshot_id, events)


def _backfill(engine: Engine, settings: Settings, months: int, day: dt.date, output: OutputFormat) -> None:
    """``--backfill N``: a snapshot as of the first of each of the past ``months`` months, then a list."""
    from monitor.jobs import backfill

    results = backfill(engine, settings.metrics, settings.rules, months=months, today=day)
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
        emit_json({"backfill": written})
        return
    render.print_backfill(written)


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
    proposal: Annotated[
        int | None,
        typer.Option("--proposal", help="the report of this stored proposal instead", show_default=False),
    ] = None,
) -> None:
    """Write the health report (or a proposal's): one self-contained HTML file.

    Health: scorecard, bands, trend, drift, map. ``--proposal ID``: the accounts and the moves on a
    map, every affected territory before and after, the trade-off curve, the scenarios, the move list.
    """
    from monitor.report import render_report
    from monitor.report_data import load_report

    settings = settings_of(ctx)
    if proposal is not None:
        _proposal_report(settings, proposal, out)
        return
    day = as_of_day(as_of)
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


def _proposal_report(settings: Any, proposal_id: int, out: Path) -> None:
    from rebalancer.edge import report_page
    from rebalancer.report import render_proposal
    from store.proposals import ProposalError

    with open_database(settings) as engine, engine.connect() as conn:
        try:
            page = report_page(conn, proposal_id, now=dt.datetime.now(dt.UTC))
        except ProposalError as exc:  # an unknown id
            typer.echo(f"territory: {exc}", err=True)
            raise typer.Exit(2) from None
    out.write_text(render_proposal(page), encoding="utf-8")
    typer.echo(f"wrote {out}: proposal {proposal_id}, {len(page.proposal['moves'])} moves")
