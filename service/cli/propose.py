"""``territory propose``: the fewest account moves that bring the territories back into band.

The options become a scenario and what-ifs (a bad value is one line naming it, exit 2); the work is
``rebalancer.edge.propose_from_store``. Without ``--dry-run`` the proposal is stored, once per input.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

import typer

from service.cli import render
from service.cli.options import FormatOption, OutputFormat, as_of_day, emit_json, settings_of
from service.runtime import open_database
from service.settings import Settings


def _refuse(message: str) -> typer.Exit:
    typer.echo(f"territory: {message}", err=True)
    return typer.Exit(2)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise _refuse(f"{option} {value!r}: expected NAME=VALUE")
        out[key.strip()] = rest.strip()
    return out


def _number(text: str, option: str, *, integer: bool = False) -> float:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise _refuse(f"{option}: {text!r} is not a {'whole ' if integer else ''}number") from None


def _added(values: list[str] | None) -> tuple[Any, ...]:
    from rebalancer.edge import AddedRep

    reps = []
    for value in values or []:
        parts = value.split(":")
        if len(parts) not in (3, 4) or not parts[0].strip() or not parts[1].strip():
            raise _refuse(f"--add-rep {value!r}: expected NAME:REGION:CAPACITY[:LAT,LON]")
        location = None
        if len(parts) == 4:
            lat, sep, lon = parts[3].partition(",")
            if not sep:
                raise _refuse(f"--add-rep {value!r}: the location is LAT,LON")
            location = (_number(lat, "--add-rep latitude"), _number(lon, "--add-rep longitude"))
        reps.append(
            AddedRep(parts[0].strip(), parts[1].strip(), _number(parts[2], "--add-rep capacity"), location)
        )
    return tuple(reps)


def scenarios_of(
    settings: Settings,
    name: str,
    *,
    bands: list[str] | None,
    tiers: list[str] | None,
    tenure_lock_months: int | None,
    deal_lock_probability: float | None,
    max_moves: int | None,
) -> list[Any]:
    """The scenarios the options ask for: a built-in one (or ``all``) adjusted by the options."""
    from rebalancer.problem import TierRange
    from rebalancer.scenarios import override_bands

    builtin = settings.rebalancer.all_scenarios(settings.rules.drift_rules())
    if name != "all" and name not in builtin:
        raise _refuse(f"--scenario {name!r}: expected all or one of {', '.join(builtin)}")
    chosen = list(builtin.values()) if name == "all" else [builtin[name]]
    tolerances = {m: _number(v, f"--band {m}") for m, v in _pairs(bands, "--band").items()}
    ranges = []
    for tier, span in _pairs(tiers, "--tier-range").items():
        low, sep, high = span.partition(":")
        if not sep:
            raise _refuse(f"--tier-range {tier}={span}: expected TIER=MIN:MAX (MAX may be empty)")
        ranges.append(
            TierRange(
                tier,
                int(_number(low, "--tier-range", integer=True)),
                int(_number(high, "--tier-range", integer=True)) if high else None,
            )
        )
    changes: dict[str, Any] = {}
    if tenure_lock_months is not None:
        changes["tenure_lock_months"] = tenure_lock_months
    if deal_lock_probability is not None:
        changes["deal_lock_probability"] = deal_lock_probability
    if max_moves is not None:
        changes["max_moves"] = max_moves
    if ranges:
        changes["tier_ranges"] = tuple(ranges)
    out = []
    for scenario in chosen:
        try:
            adjusted = override_bands(scenario, tolerances) if tolerances else scenario
            out.append(dataclasses.replace(adjusted, **changes))
        except ValueError as exc:
            raise _refuse(str(exc)) from None
    return out


def propose(
    ctx: typer.Context,
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario", help="revenue, strategic, growth, geography, one of rebalancer.scenarios, or all"
        ),
    ] = ("revenue"),
    band: Annotated[
        list[str] | None,
        typer.Option("--band", help="METRIC=TOL: replaces the scenario's bands (repeatable)"),
    ] = None,
    tenure_lock_months: Annotated[
        int | None, typer.Option("--tenure-lock-months", min=0, help="tenure lock in months (0: off)")
    ] = None,
    deal_lock_probability: Annotated[
        float | None,
        typer.Option("--deal-lock-probability", min=0.0, max=1.0, help="an open deal this likely locks"),
    ] = None,
    tier_range: Annotated[
        list[str] | None, typer.Option("--tier-range", help="TIER=MIN:MAX accounts a territory (repeatable)")
    ] = None,
    max_moves: Annotated[int | None, typer.Option("--max-moves", min=0, help="a point on the curve")] = None,
    add_rep: Annotated[
        list[str] | None, typer.Option("--add-rep", help="NAME:REGION:CAPACITY[:LAT,LON] (repeatable)")
    ] = None,
    remove_rep: Annotated[
        list[str] | None, typer.Option("--remove-rep", help="an owner id whose book is redistributed")
    ] = None,
    waves: Annotated[
        int | None,
        typer.Option("--waves", min=1, max=12, help="waves, 30 days apart [config: rebalancer.waves]"),
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option("--time-limit", min=1.0, help="solver seconds [config: rebalancer.time_limit_seconds]"),
    ] = None,
    as_of: Annotated[
        dt.datetime | None, typer.Option("--as-of", formats=["%Y-%m-%d"], help="default: today (UTC)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="solve and print; store nothing")] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Propose the fewest account moves that bring every territory back into band (docs/rebalancer.md)."""
    from rebalancer.edge import WhatIfs, propose_from_store

    settings = settings_of(ctx)
    waves = waves or settings.rebalancer.waves
    time_limit = time_limit or settings.rebalancer.time_limit_seconds
    chosen = scenarios_of(
        settings,
        scenario,
        bands=band,
        tiers=tier_range,
        tenure_lock_months=tenure_lock_months,
        deal_lock_probability=deal_lock_probability,
        max_moves=max_moves,
    )
    what_ifs = WhatIfs(add=_added(add_rep), remove=tuple(remove_rep or ()))
    now = dt.datetime.now(dt.UTC)
    day = as_of_day(as_of) or now.date()
    documents = []
    with open_database(settings) as engine:
        for sc in chosen:
            with render.solving(sc.name, time_limit, quiet=output is OutputFormat.json) as observer:
                try:
                    documents.append(
                        propose_from_store(
                            engine,
                            sc,
                            touches=settings.metrics.touches_per_tier(),
                            as_of=day,
                            now=now,
                            expires_in=dt.timedelta(days=settings.slack.expiry_days),
                            what_ifs=what_ifs,
                            waves=waves,
                            time_limit=time_limit,
                            store=not dry_run,
                            observer=observer,
                        )
                    )
                except ValueError as exc:  # a what-if naming an unknown rep, say
                    raise _refuse(str(exc)) from None
    if output is OutputFormat.json:
        emit_json(documents if scenario == "all" else documents[0])
    elif scenario == "all":
        render.print_scenarios(documents)
    else:
        render.print_rebalance(documents[0])
