"""The rebalancer's rules one by one on hand-built orgs: locks, capacity, regions, scenarios, words."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from monitor.drift import DEFAULT_RULES
from monitor.metrics import account_opportunities, territory_metrics
from rebalancer.frames import problem_of
from rebalancer.model import DEAL, FREE, PROTECTED, TENURE, UNDATED, compile_problem
from rebalancer.problem import (
    Account,
    Band,
    Limit,
    Problem,
    Scenario,
    Secondary,
    Territory,
    TierRange,
    account_table,
    full_months,
)
from rebalancer.propose import propose
from rebalancer.scenarios import bands_from_rules, builtin_scenarios

D = dt.date(2026, 11, 1)


def _days(*dates: str | None) -> np.ndarray:
    return np.array([np.datetime64("NaT") if d is None else np.datetime64(d, "D") for d in dates], "M8[D]")


def test_full_months_are_calendar_months() -> None:
    starts = _days("2026-01-31", "2026-01-31", "2026-01-15", "2026-01-15", None)
    assert full_months(starts[:1], dt.date(2026, 2, 28)).tolist() == [0]
    assert full_months(starts[1:2], dt.date(2026, 3, 1)).tolist() == [1]
    assert full_months(starts[2:3], dt.date(2026, 2, 15)).tolist() == [1]
    assert full_months(starts[3:4], dt.date(2026, 2, 14)).tolist() == [0]
    assert full_months(starts[4:], D).tolist() == [-1]


def _two_reps(accounts: list[Account], capacity_b: float = 100.0, region_b: str = "A") -> Problem:
    reps = (
        Territory("A", "Ann Lee", "A", 100.0, 40.0, -74.0),
        Territory("B", "Bo Khan", region_b, capacity_b, 40.1, -74.0),
    )
    return Problem(D, reps, account_table(accounts))


def _account(i: int, owner: str = "A", potential: float = 10.0, **kw: object) -> Account:
    fields: dict[str, object] = {"tenure_start": D - dt.timedelta(days=20), "lat": 40.0, "lon": -74.0}
    fields.update(kw)
    return Account(f"a{i}", f"Acme {i}", owner, {"potential": potential, "workload": 2.0}, **fields)  # type: ignore[arg-type]


def test_locks_follow_the_scenario() -> None:
    accounts = [
        _account(0, tenure_start=dt.date(2026, 5, 1)),  # exactly 6 calendar months: locked
        _account(1, tenure_start=dt.date(2026, 5, 2)),  # one day short: free
        _account(2, tenure_start=None),  # undated: locked while the lock is on
        _account(3, max_open_probability=0.5),  # at the deal lock: locked
        _account(4, max_open_probability=0.49),
        _account(5, protected=True),
    ]
    problem = _two_reps(accounts)
    c = compile_problem(problem, Scenario("t", (Band("potential", 0.1),)))
    assert c.lock.tolist() == [TENURE, FREE, UNDATED, DEAL, FREE, PROTECTED]
    proposal = propose(problem, Scenario("t", (Band("potential", 0.1),)), with_curve=False)
    assert proposal.locked == {"protected": 1, "tenure-locked": 1, "undated tenure": 1, "deal-locked": 1}
    off = compile_problem(problem, Scenario("t", (Band("potential", 0.1),), tenure_lock_months=0))
    assert off.lock.tolist() == [FREE, FREE, FREE, DEAL, FREE, PROTECTED]


def test_a_rep_over_capacity_receives_nothing_and_is_named_blocked() -> None:
    # B holds nothing but is "over capacity" (capacity 0 is no capacity): A cannot shed to it.
    accounts = [_account(i) for i in range(4)]
    proposal = propose(
        _two_reps(accounts, capacity_b=0.0), Scenario("t", (Band("potential", 0.2),)), with_curve=False
    )
    assert proposal.moves == ()
    assert proposal.status == "infeasible"
    assert any("Bo Khan" in b and "receives nothing" in b for b in proposal.blocked)
    fine = propose(_two_reps(accounts), Scenario("t", (Band("potential", 0.2),)), with_curve=False)
    assert fine.status == "ok"
    assert fine.objective.moves == 2
    assert fine.solver.optimality_gap == 0.0


def test_an_account_stays_in_its_region_unless_the_regions_are_neighbours() -> None:
    accounts = [_account(i) for i in range(4)]
    problem = _two_reps(accounts, region_b="B")
    alone = propose(problem, Scenario("t", (Band("potential", 0.2),)), with_curve=False)
    assert alone.moves == ()
    linked = propose(
        problem, Scenario("t", (Band("potential", 0.2),), neighbours=(("A", "B"),)), with_curve=False
    )
    assert linked.objective.moves == 2
    assert {m.to_owner_id for m in linked.moves} == {"B"}


def test_locked_books_are_explained_with_numbers() -> None:
    accounts = [_account(i, protected=i < 3) for i in range(4)] + [_account(9, owner="B")]
    proposal = propose(_two_reps(accounts), Scenario("t", (Band("potential", 0.1),)), with_curve=False)
    assert proposal.status == "partial"
    text = " ".join(proposal.blocked)
    assert "Ann Lee: 100% of its potential is protected" in text
    assert "cannot go below 1.20x the mean" in text  # 30 locked / mean 25
    move = proposal.moves[0]
    assert "Acme 3" in move.rationale
    assert "km from home" in move.rationale
    assert "utilization 2% -> 4%" in move.rationale


def test_builtin_scenarios_come_from_the_drift_rules() -> None:
    bands, limits = bands_from_rules(DEFAULT_RULES)
    assert [(b.metric, b.tolerance) for b in bands] == [("potential", 0.15), ("arr", 0.2), ("accounts", 0.25)]
    assert limits == (Limit("utilization", 1.0),)
    scenarios = builtin_scenarios()
    assert sorted(scenarios) == ["geography", "growth", "revenue", "strategic"]
    assert [(b.metric, b.tolerance) for b in scenarios["revenue"].bands] == [("potential", 0.1), ("arr", 0.1)]
    assert scenarios["strategic"].tier_ranges == (TierRange("strategic", 2),)
    assert scenarios["growth"].secondary is Secondary.travel
    assert scenarios["geography"].bands == bands


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": (Band("win_rate_12m", 0.1),)}, "win_rate_12m"),
        ({"bands": (Band("utilization", 0.1),)}, "utilization is a limit"),
        ({"bands": (Band("arr", -0.1),)}, "tolerance"),
        ({"bands": (), "tier_ranges": (TierRange("growth", 5, 2),)}, "tier range for growth"),
    ],
)
def test_a_bad_scenario_names_the_key(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Scenario("bad", **kwargs)  # type: ignore[arg-type]


def test_the_problem_sums_are_the_monitors_metrics() -> None:
    org = generate_org(600, 8, 3, DEFAULT_NOW)
    problem = problem_of(org.owners, org.accounts, org.opportunities, org.assignments, D)
    scenario = Scenario("t", (Band("potential", 0.1), Band("arr", 0.1), Band("open_pipeline", 0.1)))
    c = compile_problem(problem, scenario)
    owners = org.owners.set_index("id")
    active = owners[owners["active"]]
    per = account_opportunities(org.opportunities, D).reindex(org.accounts["id"]).fillna(0.0)
    frame = org.accounts.assign(**{col: per[col].to_numpy() for col in per.columns})
    metrics = territory_metrics(active, frame)
    for q, metric in enumerate(["potential", "arr", "open_pipeline"]):
        expected = metrics[metric].to_numpy()
        assert np.allclose(c.base[q], expected, rtol=1e-12), metric
    utilization = pd.Series(
        np.bincount(c.owner[c.owner >= 0], weights=c.workload[c.owner >= 0], minlength=c.n_territories)
        / c.capacity
    )
    assert np.allclose(utilization.to_numpy(), metrics["utilization"].to_numpy())


def test_the_secondary_aim_never_costs_a_move() -> None:
    reps = (
        Territory("A", "Ann Lee", "A", 100.0, 40.0, -74.0),
        Territory("B", "Bo Khan", "A", 100.0, 40.0, -74.1),  # next door
        Territory("C", "Cy Diaz", "A", 100.0, 42.0, -71.0),  # 300 km away
    )
    accounts = [_account(i) for i in range(3)] + [_account(8, owner="B"), _account(9, owner="C")]
    problem = Problem(D, reps, account_table(accounts))
    base = Scenario("t", (Band("potential", 0.5),))
    travel = Scenario("t", (Band("potential", 0.5),), secondary=Secondary.travel)
    plain, near = propose(problem, base, with_curve=False), propose(problem, travel, with_curve=False)
    assert plain.objective.moves == near.objective.moves == 1
    assert [m.to_owner_id for m in near.moves] == ["B"]
    assert "9 km from home" in near.moves[0].rationale  # 0.1 degree of longitude at 40N


def test_an_orphan_of_an_unknown_owner_is_placed_once() -> None:
    reps = (
        Territory("A", "Ann Lee", "East", 100.0, 40.0, -74.0),
        Territory("B", "Bo Khan", "West", 100.0, 34.0, -118.0),
    )
    accounts = [_account(0), _account(1, owner="B"), _account(2, owner="gone")]
    proposal = propose(
        Problem(D, reps, account_table(accounts)), Scenario("t", (Band("potential", 1.0),)), with_curve=False
    )
    assert proposal.orphans == 1
    assert [(m.account_id, m.from_owner_id, m.orphan) for m in proposal.moves] == [("a2", "gone", True)]
    assert proposal.assignment[2] in (0, 1)
