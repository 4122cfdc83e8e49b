"""``territory proposals``: list, show and decide stored proposals from the command line.

The same compare-and-set and audit log as the Slack buttons (store/proposals.py, through
approval/decisions.py); a decision that cannot be taken is one line and exit 2.
"""

from __future__ import annotations

import datetime as dt
import enum
import getpass
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from service.runtime import open_database
from service.settings import Settings

proposals_app = typer.Typer(
    help="Stored rebalancing proposals: list, show, approve, reject, cancel.", no_args_is_help=True
)


class Format(enum.StrEnum):
    """How a proposals command prints its result."""

    table = "table"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", help="table for people, json for scripts")]
IdArgument = Annotated[int, typer.Argument(help="the proposal's id", show_default=False)]
ActorOption = Annotated[str | None, typer.Option("--as", help="who decides (default: your user name)")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="why (required to reject or to except moves)")
]


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise TypeError("the settings were not built")
    return settings


def _run(ctx: typer.Context, output: Format, action: Callable[[Any], Any]) -> None:
    """Open the database, run ``action`` on its engine, print the result; a refusal is exit 2."""
    from approval.decisions import DecisionRefusedError

    with open_database(_settings(ctx)) as engine:
        try:
            result = action(engine)
        except DecisionRefusedError as exc:
            typer.echo(f"territory: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
    if output is Format.json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    elif isinstance(result, list):
        _print_list(result)
    else:
        _print_one(result)


def _print_list(rows: list[dict[str, Any]]) -> None:
    table = Table("id", "scenario", "state", "moves", "created", "decided by", title="Proposals")
    for p in rows:
        table.add_row(
            str(p["id"]), p["scenario"], p["state"], str(p["moves"]), p["created_at"], p["decided_by"] or ""
        )
    Console().print(table)


def _print_one(p: dict[str, Any]) -> None:
    out = Console()
    decided = f", decided by {p['decided_by']} at {p['decided_at']}" if p["decided_by"] else ""
    out.print(f"Proposal {p['id']} ({p['scenario']}): {p['state']}{decided}")
    if p.get("reason"):
        out.print(f"Reason: {p['reason']}")
    table = Table("account", "from", "to", "wave", "effective", "write-back", "rationale")
    for m in p["moves"]:
        table.add_row(
            m["account_id"],
            m["from_owner_id"],
            m["to_owner_id"],
            str(m["wave"]),
            m["effective_date"] or "",
            m["writeback_state"],
            m["rationale"],
        )
    out.print(table)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@proposals_app.command("list")
def list_command(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="only proposals in this state")] = None,
    output: FormatOption = Format.table,
) -> None:
    """Every stored proposal, newest first."""
    from approval import decisions

    _run(ctx, output, lambda engine: decisions.list_proposals(engine, state=state))


@proposals_app.command("show")
def show_command(ctx: typer.Context, proposal_id: IdArgument, output: FormatOption = Format.table) -> None:
    """One proposal with its moves, their waves, write-back states and rationale."""
    from approval import decisions

    _run(ctx, output, lambda engine: decisions.show_proposal(engine, proposal_id))


@proposals_app.command("approve")
def approve_command(
    ctx: typer.Context,
    proposal_id: IdArgument,
    actor: ActorOption = None,
    except_accounts: Annotated[
        list[str] | None, typer.Option("--except", help="an account whose move is left out (repeatable)")
    ] = None,
    reason: ReasonOption = None,
    output: FormatOption = Format.table,
) -> None:
    """Approve a proposal, optionally without some moves (then --reason is required)."""
    from approval import decisions

    _run(
        ctx,
        output,
        lambda engine: decisions.approve(
            engine,
            proposal_id,
            actor=actor or getpass.getuser(),
            now=_now(),
            except_accounts=except_accounts or (),
            reason=reason,
        ),
    )


@proposals_app.command("reject")
def reject_command(
    ctx: typer.Context,
    proposal_id: IdArgument,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    output: FormatOption = Format.table,
) -> None:
    """Reject a proposal, saying why; its moves are not proposed again for the cooldown."""
    from approval import decisions

    _run(
        ctx,
        output,
        lambda engine: decisions.reject(
            engine, proposal_id, actor=actor or getpass.getuser(), now=_now(), reason=reason
        ),
    )


@proposals_app.command("cancel")
def cancel_command(
    ctx: typer.Context,
    proposal_id: IdArgument,
    actor: ActorOption = None,
    output: FormatOption = Format.table,
) -> None:
    """Stop the waves of an approved proposal that are not written yet."""
    from approval import decisions

    _run(
        ctx,
        output,
        lambda engine: decisions.cancel(engine, proposal_id, actor=actor or getpass.getuser(), now=_now()),
    )
