"""``territory proposals``: list, show and decide stored proposals from the command line.

The same compare-and-set and audit log as the Slack buttons (store/proposals.py, through
approval/decisions.py); a decision that cannot be taken is one line and exit 2.
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Callable
from typing import Annotated, Any

import typer

from service.cli import render
from service.cli.options import FormatOption, OutputFormat, emit_json, settings_of
from service.runtime import open_database

proposals_app = typer.Typer(
    help="Stored rebalancing proposals: list, show, approve, reject, cancel, revert.", no_args_is_help=True
)

IdArgument = Annotated[int, typer.Argument(help="the proposal's id", show_default=False)]
ActorOption = Annotated[str | None, typer.Option("--as", help="who decides (default: your user name)")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="why (required to reject or to except moves)")
]


def _run(
    ctx: typer.Context, output: OutputFormat, action: Callable[[Any], Any], *, decides: bool = False
) -> None:
    """Open the database, run ``action`` on its engine, print the result; a refusal is exit 2.

    After a decision (``decides``) the proposal's Slack message, if it has one, shows it instead of
    its buttons, as after a click in Slack.
    """
    from approval.decisions import DecisionRefusedError

    settings = settings_of(ctx)
    with open_database(settings) as engine:
        try:
            result = action(engine)
        except DecisionRefusedError as exc:
            typer.echo(f"territory: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        if decides:
            _show_in_slack(engine, settings, int(result["id"]))
    if output is OutputFormat.json:
        emit_json(result)
    elif isinstance(result, list):
        render.print_proposals(result)
    else:
        render.print_proposal(result)


def _show_in_slack(engine: Any, settings: Any, proposal_id: int) -> None:
    from slack_sdk.errors import SlackApiError

    from approval.notify import show_decision
    from approval.slack import client_for

    client = client_for(settings.slack)
    if client is None:
        return
    try:
        show_decision(engine, client, proposal_id)
    except SlackApiError as exc:  # the decision stands; the message keeps its buttons until the next try
        typer.echo(
            f"territory: decided, but Slack refused the message update: {exc.response['error']}", err=True
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@proposals_app.command("list")
def list_command(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="only proposals in this state")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Every stored proposal, newest first."""
    from approval import decisions

    _run(ctx, output, lambda engine: decisions.list_proposals(engine, state=state))


@proposals_app.command("show")
def show_command(
    ctx: typer.Context, proposal_id: IdArgument, output: FormatOption = OutputFormat.table
) -> None:
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
    output: FormatOption = OutputFormat.table,
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
        decides=True,
    )


@proposals_app.command("reject")
def reject_command(
    ctx: typer.Context,
    proposal_id: IdArgument,
    reason: ReasonOption = None,
    actor: ActorOption = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Reject a proposal, saying why; its moves are not proposed again for the cooldown."""
    from approval import decisions

    _run(
        ctx,
        output,
        lambda engine: decisions.reject(
            engine, proposal_id, actor=actor or getpass.getuser(), now=_now(), reason=reason
        ),
        decides=True,
    )


@proposals_app.command("cancel")
def cancel_command(
    ctx: typer.Context,
    proposal_id: IdArgument,
    actor: ActorOption = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Stop the waves of an approved proposal that are not written yet."""
    from approval import decisions

    _run(
        ctx,
        output,
        lambda engine: decisions.cancel(engine, proposal_id, actor=actor or getpass.getuser(), now=_now()),
    )


@proposals_app.command("revert")
def revert_command(
    ctx: typer.Context,
    proposal_id: IdArgument,
    actor: ActorOption = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Propose moving the written accounts of an applied proposal back (approve it like any other)."""
    from approval import decisions

    expiry = dt.timedelta(days=settings_of(ctx).slack.expiry_days)
    _run(
        ctx,
        output,
        lambda engine: decisions.revert(
            engine, proposal_id, actor=actor or getpass.getuser(), now=_now(), expires_in=expiry
        ),
    )
