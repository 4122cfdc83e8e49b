"""The rebalancer's edge: a problem read from the store, a proposal written to it, and its JSON.

The pure code (``rebalancer.propose``) never sees a connection. This module reads what it needs as of
a date (owners, live accounts, opportunities, the assignment history) in one transaction, turns it into
a :class:`Problem` with ``rebalancer.frames`` (the monitor's own per-account values), and stores a
proposal once per input fingerprint: the same scenario on the same data gives the same proposal back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

from monitor.metrics import haversine_km
from rebalancer.frames import problem_of
from rebalancer.problem import Problem, Scenario
from rebalancer.progress import Observer
from rebalancer.propose import DEFAULT_TIME_LIMIT, Proposal, propose
from rebalancer.report import Place, ProposalPage
from rebalancer.scenarios import add_rep, remove_rep
from rebalancer.waves import DEFAULT_WAVES, WAVE_DAYS
from store import proposals as props

_OWNERS = text(
    "SELECT id, name, coalesce(region, '') AS region, coalesce(team, '') AS team,"
    " capacity::float8 AS capacity, home_lat, home_lon, active FROM owners ORDER BY id"
)
_ACCOUNTS = text(
    "SELECT id, coalesce(name, id) AS name, owner_id, coalesce(tier, '') AS tier,"
    " coalesce(industry, '') AS industry, arr::float8 AS arr, potential::float8 AS potential, lat, lon,"
    " protected FROM accounts WHERE NOT deleted AND owner_id IS NOT NULL ORDER BY id"
)
_OPPORTUNITIES = text(
    "SELECT account_id, amount::float8 AS amount, probability::float8 AS probability, close_date,"
    " is_closed, is_won FROM opportunities WHERE NOT deleted"
)
_HISTORY = text("SELECT account_id, owner_id, start_date, end_date FROM assignment_history")


@dataclass(frozen=True)
class Loaded:
    """The problem as of a date, with what made it: its data fingerprint and the overridden accounts."""

    problem: Problem
    fingerprint: str
    overridden: int


def load_problem(
    conn: Connection, as_of: dt.date, touches: Mapping[str, float], *, now: dt.datetime
) -> Loaded:
    """The problem as of ``as_of`` from the store; accounts under an active override stay where they are.

    An override (an approver left the move out, or rejected the proposal) holds for its cooldown unless
    the account's owner, potential, ARR or tier changed since (docs/approval.md): such an account is
    treated as protected in this problem, and counted.
    """
    owners, accounts, opportunities, history = (
        pd.read_sql(q, conn) for q in (_OWNERS, _ACCOUNTS, _OPPORTUNITIES, _HISTORY)
    )
    problem = problem_of(owners, accounts, opportunities, history, as_of, touches)
    held = {o.account_id for o in props.active_overrides(conn, now=now) if not o.data_changed}
    mask = np.isin(problem.accounts.ids, sorted(held)) if held else np.zeros(len(problem.accounts), bool)
    if mask.any():
        held_table = dataclasses.replace(problem.accounts, protected=problem.accounts.protected | mask)
        problem = dataclasses.replace(problem, accounts=held_table)
    return Loaded(problem, data_fingerprint(problem), int(mask.sum()))


def data_fingerprint(problem: Problem) -> str:
    """A digest of everything the solve reads, so a change to any of it makes a new proposal."""
    digest = hashlib.sha256(problem.as_of.isoformat().encode())
    for t in problem.territories:
        digest.update(repr(dataclasses.astuple(t)).encode())
    acc = problem.accounts
    for column in (acc.ids, acc.owner_ids, acc.tier, acc.industry):
        digest.update("\x1f".join(map(str, column)).encode())
    for name in sorted(acc.contributions):
        digest.update(name.encode() + np.ascontiguousarray(acc.contributions[name]).tobytes())
    for array in (acc.lat, acc.lon, acc.max_open_probability, acc.protected, acc.tenure_start, acc.last_won):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def input_fingerprint(scenario: Scenario, params: Mapping[str, Any], data: str) -> str:
    """The proposal's idempotency key: the scenario, the run's parameters and the data digest."""
    scenario_text = json.dumps(dataclasses.asdict(scenario), sort_keys=True, default=str)
    params_text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(f"{scenario_text}\n{params_text}\n{data}".encode()).hexdigest()


def effective_date(as_of: dt.date, wave: int) -> dt.date:
    """The day wave ``wave`` is written: the proposal's date, then every ``WAVE_DAYS`` days."""
    return as_of + dt.timedelta(days=WAVE_DAYS * (wave - 1))


def comparison(problem: Problem, proposal: Proposal) -> dict[str, float]:
    """What ``--scenario all`` sets side by side beyond moves and violation: the costs of the moves.

    ``travel_change_km``: the summed change of the great-circle distance from each moved account to
    its owner's home (monitor.metrics.haversine_km; moves without both locations count 0);
    ``pipeline_changing_hands``: the open pipeline of the moved accounts; ``relationships_disrupted``:
    moved accounts with at least a full month with their owner (the risks' ``tenure``).
    """
    nan = float("nan")
    homes = {t.owner_id: (t.home_lat or nan, t.home_lon or nan) for t in problem.territories}
    row = {str(a): i for i, a in enumerate(problem.accounts.ids)}
    moved = np.array([row[m.account_id] for m in proposal.moves], dtype=np.int64)
    old = np.array([homes.get(m.from_owner_id, (nan, nan)) for m in proposal.moves], dtype=float).reshape(
        -1, 2
    )
    new = np.array([homes.get(m.to_owner_id, (nan, nan)) for m in proposal.moves], dtype=float).reshape(-1, 2)
    lat, lon = problem.accounts.lat[moved], problem.accounts.lon[moved]
    delta = haversine_km(lat, lon, new[:, 0], new[:, 1]) - haversine_km(lat, lon, old[:, 0], old[:, 1])
    change = float(np.nansum(delta))
    return {
        "travel_change_km": round(change, 1),
        "pipeline_changing_hands": float(sum(r.amount for r in proposal.risks if r.kind == "open_pipeline")),
        "relationships_disrupted": float(sum(1 for r in proposal.risks if r.kind == "tenure")),
    }


def as_json(proposal: Proposal, proposal_id: int | None, as_of: dt.date) -> dict[str, Any]:
    """The ``territory propose --format json`` document (docs/rebalancer.md)."""
    solver = proposal.solver
    return {
        "proposal_id": proposal_id,
        "scenario": proposal.scenario,
        "status": proposal.status,
        "hypothetical": proposal.hypothetical,
        "moves": [
            {**dataclasses.asdict(m), "effective_date": effective_date(as_of, m.wave).isoformat()}
            for m in proposal.moves
        ],
        "objective": dataclasses.asdict(proposal.objective),
        "solver": {
            "name": solver.name,
            "status": solver.status,
            "seconds": round(solver.seconds, 3),
            "bound": solver.bound,
            "optimality_gap": solver.optimality_gap,
            "violation_bound": solver.violation_bound,
        },
        "heuristic": dataclasses.asdict(proposal.heuristic),
        "before": {"band_violation": proposal.band_violation_before},
        "after": {"band_violation": proposal.objective.band_violation},
        "territories": [dataclasses.asdict(t) for t in proposal.territories],
        "tradeoff": [dataclasses.asdict(p) for p in proposal.tradeoff],
        "waves": {"count": proposal.waves, "days_apart": WAVE_DAYS, "note": proposal.waves_note},
        "blocked": list(proposal.blocked),
        "risks": [dataclasses.asdict(r) for r in proposal.risks],
        "locked": dict(proposal.locked),
    }


def store_proposal(
    conn: Connection,
    proposal: Proposal,
    *,
    fingerprint: str,
    params: dict[str, Any],
    as_of: dt.date,
    now: dt.datetime,
    expires_in: dt.timedelta,
    document: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """Store a proposal with moves once per ``fingerprint``; ``(id, created)``.

    Each move keeps the owner the CRM must still show when it is written (its current owner now). A
    proposal with no move is not stored (there is nothing to decide); the caller reports it.
    """
    document = document or as_json(proposal, None, as_of)
    moves = [
        props.NewMove(
            account_id=m.account_id,
            from_owner_id=m.from_owner_id,
            to_owner_id=m.to_owner_id,
            expected_owner_id=m.from_owner_id,
            rationale=m.rationale,
            wave=m.wave,
            effective_date=effective_date(as_of, m.wave),
            orphan=m.orphan,
        )
        for m in proposal.moves
    ]
    return props.create_proposal(
        conn,
        scenario=proposal.scenario,
        fingerprint=fingerprint,
        moves=moves,
        now=now,
        expires_at=now + expires_in,
        params={**params, "as_of": as_of.isoformat(), "hypothetical": proposal.hypothetical},
        solver_report={**document["solver"], "status_of_proposal": proposal.status},
        before_metrics={"band_violation": proposal.band_violation_before},
        after_metrics={
            "band_violation": proposal.objective.band_violation,
            "territories": document["territories"],
        },
        tradeoff=document["tradeoff"],
        waves=[
            {"wave": w, "date": effective_date(as_of, w).isoformat()} for w in range(1, proposal.waves + 1)
        ],
    )


def supersede_older(conn: Connection, scenario: str, keep: int, *, now: dt.datetime) -> list[int]:
    """Undecided proposals of ``scenario`` other than ``keep`` become ``superseded``; their ids."""
    superseded = []
    for summary in props.list_proposals(conn, state="proposed"):
        if summary.scenario == scenario and summary.id != keep:
            try:
                props.transition(
                    conn, summary.id, to="superseded", expected=("proposed",), actor="rebalancer", now=now,
                    detail={"by_proposal": keep},
                )  # fmt: skip
            except props.WrongStateError:  # decided meanwhile: the decision stands
                continue
            superseded.append(summary.id)
    return superseded


@dataclass(frozen=True)
class AddedRep:
    """``--add-rep NAME:REGION:CAPACITY[:LAT,LON]``."""

    name: str
    region: str
    capacity: float
    location: tuple[float, float] | None = None


@dataclass(frozen=True)
class WhatIfs:
    """Reps added or removed before the solve; a proposal with an added rep cannot be approved."""

    add: tuple[AddedRep, ...] = ()
    remove: tuple[str, ...] = ()

    def apply(self, problem: Problem) -> Problem:
        for owner_id in self.remove:
            problem = remove_rep(problem, owner_id)
        for rep in self.add:
            problem = add_rep(problem, rep.name, rep.region, rep.capacity, rep.location)
        return problem


def propose_from_store(
    engine: Engine,
    scenario: Scenario,
    *,
    touches: Mapping[str, float],
    as_of: dt.date,
    now: dt.datetime,
    expires_in: dt.timedelta,
    what_ifs: WhatIfs = WhatIfs(),
    waves: int = DEFAULT_WAVES,
    time_limit: float = DEFAULT_TIME_LIMIT,
    store: bool = True,
    with_curve: bool = True,
    observer: Observer | None = None,
) -> dict[str, Any]:
    """Load, solve, and (unless ``store`` is false) store once: the ``propose --format json`` document.

    A new proposal supersedes the undecided older ones of its scenario (their data or parameters
    differed, or the fingerprint would have matched); asking again on the same data returns the same id.
    """
    with engine.connect() as conn:
        loaded = load_problem(conn, as_of, touches, now=now)
    problem = what_ifs.apply(loaded.problem)
    proposal = propose(
        problem, scenario, time_limit=time_limit, waves=waves, with_curve=with_curve, observer=observer
    )
    params = {"waves": waves, "time_limit": time_limit, "what_ifs": dataclasses.asdict(what_ifs),
              "overridden": loaded.overridden, "scenario": dataclasses.asdict(scenario)}  # fmt: skip
    document = as_json(proposal, None, as_of)
    created, superseded = False, []
    if store and proposal.moves:
        fingerprint = input_fingerprint(scenario, params, loaded.fingerprint)
        with engine.begin() as conn:
            document["proposal_id"], created = store_proposal(
                conn, proposal, fingerprint=fingerprint, params=params, as_of=as_of, now=now,
                expires_in=expires_in, document=document,
            )  # fmt: skip
            if created:
                superseded = supersede_older(conn, scenario.name, document["proposal_id"], now=now)
    if loaded.overridden:
        document["blocked"].append(
            f"{loaded.overridden} accounts stay where they are: an approver refused their move, and the "
            "override holds for its cooldown unless the account's data changes"
        )
    document |= {"stored": created, "superseded": superseded, "overridden": loaded.overridden,
                 "comparison": comparison(problem, proposal)}  # fmt: skip
    return document


_LOCATED = text(
    "SELECT id, lat, lon, owner_id FROM accounts WHERE NOT deleted AND lat IS NOT NULL AND lon IS NOT NULL "
    "AND owner_id IS NOT NULL ORDER BY id"
)
_OWNER_PLACES = text("SELECT id, name, home_lat, home_lon FROM owners ORDER BY id")
MAP_POINTS = 5000  # at most this many accounts on the map (every moved one among them)


def report_page(conn: Connection, proposal_id: int, *, now: dt.datetime) -> ProposalPage:
    """What ``territory report --proposal ID`` draws, read from the store in one transaction."""
    detail = props.show_proposal(conn, proposal_id)
    moves = {m.account_id: m for m in detail.move_rows}
    document = detail.as_json() | {
        "solver": detail.solver_report or {},
        "tradeoff": detail.tradeoff or [],
        "territories": (detail.after_metrics or {}).get("territories", []),
        "violation_before": (detail.before_metrics or {}).get("band_violation"),
        "violation_after": (detail.after_metrics or {}).get("band_violation"),
    }
    places = []
    for account_id, lat, lon, owner in conn.execute(_LOCATED):
        move = moves.get(account_id)
        places.append(Place(account_id, float(lat), float(lon), move.to_owner_id if move else str(owner)))
    if len(places) > MAP_POINTS:
        moved = [p for p in places if p.key in moves]
        rest = [p for p in places if p.key not in moves]
        places = moved + rest[:: max(1, len(rest) // max(1, MAP_POINTS - len(moved)))]
    names: dict[str, str] = {}
    homes: dict[str, tuple[float, float]] = {}
    for owner_id, name, lat, lon in conn.execute(_OWNER_PLACES):
        names[str(owner_id)] = str(name)
        if lat is not None and lon is not None:
            homes[str(owner_id)] = (float(lat), float(lon))
    return ProposalPage(document, places, homes, names, _latest_per_scenario(conn), now)


def _latest_per_scenario(conn: Connection) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for summary in props.list_proposals(conn):  # newest first
        if summary.scenario in latest:
            continue
        detail = props.show_proposal(conn, summary.id)
        latest[summary.scenario] = {
            "id": summary.id, "scenario": summary.scenario, "state": summary.state, "moves": summary.moves,
            "violation_before": (detail.before_metrics or {}).get("band_violation"),
            "violation_after": (detail.after_metrics or {}).get("band_violation"),
            "gap": (detail.solver_report or {}).get("optimality_gap"),
        }  # fmt: skip
    return sorted(latest.values(), key=lambda s: str(s["scenario"]))
