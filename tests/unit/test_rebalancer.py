"""The rebalancer against its definition: hard constraints, bands, brute-force optima, waves, what-ifs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.drift import Rule, RuleKind, evaluate
from rebalancer.model import compile_problem
from rebalancer.problem import Account, Band, Problem, Scenario, Territory, account_table
from rebalancer.propose import Proposal, propose, values_of
from rebalancer.scenarios import add_rep, override_bands, remove_rep
from rebalancer.waves import plan_waves
from tests.helpers.rebalancer import AS_OF, brute_force, hard_ok, problems, scenarios, values, workload

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _propose(problem: Problem, scenario: Scenario, curve: bool = False) -> Proposal:
    return propose(problem, scenario, time_limit=10.0, with_curve=curve, workers=1)


@FAST
@given(problems(max_accounts=16, territories=5), scenarios())
def test_no_proposal_breaks_a_hard_constraint(problem: Problem, scenario: Scenario) -> None:
    proposal = _propose(problem, scenario)
    c = compile_problem(problem, scenario)
    if proposal.status == "infeasible" and np.any(proposal.assignment < 0):
        assert brute_force(problem, scenario) is None or len(problem.accounts) > 12
        return
    assert hard_ok(c, proposal.assignment[None, :])[0]
    moved = proposal.assignment != c.owner
    assert proposal.objective.moves + proposal.orphans == int(moved.sum())
    assert proposal.orphans == int((c.owner < 0).sum())


@FAST
@given(problems(max_accounts=16, territories=5), scenarios())
def test_ok_means_every_territory_inside_every_band(problem: Problem, scenario: Scenario) -> None:
    proposal = _propose(problem, scenario)
    if proposal.status != "ok":
        return
    c = compile_problem(problem, scenario)
    after = values_of(c, proposal.assignment)
    frame = pd.DataFrame({t.metric: after[q] for q, t in enumerate(c.targets) if t.kind == "band"})
    rules = [
        Rule(f"{b.metric}_band", b.metric, RuleKind.band, b.tolerance)
        for b in scenario.bands
        if b.metric in frame
    ]
    assert evaluate(frame, rules).empty  # the monitor's own rule agrees
    work = workload(c, proposal.assignment)[0]
    cap = c.capacity
    assert np.all(~np.isfinite(cap) | (work <= cap + 1e-9))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_accounts=12, territories=4, max_free=6), scenarios())
def test_moves_and_curve_equal_the_brute_force_optimum(problem: Problem, scenario: Scenario) -> None:
    best = brute_force(problem, scenario)
    proposal = _propose(problem, scenario, curve=True)
    if best is None:
        assert proposal.status == "infeasible"
        return
    assert proposal.solver.status == "optimal"
    assert abs(proposal.objective.band_violation - best.violation) < 1e-6
    assert abs(proposal.objective.disruption - best.moves) < 1e-6
    assert proposal.solver.optimality_gap == 0.0
    for point in proposal.tradeoff:
        assert abs(point.band_violation - best.curve[min(point.max_moves, max(best.curve))]) < 1e-6
        assert point.bound <= point.band_violation + 1e-9


@FAST
@given(problems(max_accounts=16, territories=5), scenarios(), st.integers(1, 4))
def test_waves_never_push_a_territory_further_out(problem: Problem, scenario: Scenario, n: int) -> None:
    proposal = _propose(problem, scenario)
    c = compile_problem(problem, scenario)
    after = proposal.assignment
    moves = [
        (int(a), int(c.owner[a]), int(after[a])) for a in np.flatnonzero(after != c.owner) if after[a] >= 0
    ]
    plan = plan_waves(c, c.owner, moves, n)
    assert plan.count <= n
    assert all(1 <= w <= plan.count for w in plan.wave)
    owner = c.owner.copy()
    received: set[int] = set()
    for w in range(1, plan.count + 1):
        start = c.violation(values(c, owner)[0])
        for (a, _, dst), wave in zip(moves, plan.wave, strict=True):
            if wave == w:
                owner[a] = dst
                received.add(dst)
        assert np.all(c.violation(values(c, owner)[0]) <= start + 1e-9)
        work = workload(c, owner)[0]
        assert all(work[t] <= c.capacity[t] + 1e-9 for t in received)
    if moves and plan.count < n:
        assert plan.note


def test_orphans_of_a_removed_rep_are_always_assigned() -> None:
    problem = _org()
    removed = remove_rep(problem, "r0")
    scenario = Scenario("t", (Band("potential", 0.5),))
    proposal = _propose(removed, scenario)
    c = compile_problem(removed, scenario)
    orphans = np.flatnonzero(c.owner < 0)
    assert len(orphans) == 3
    assert np.all(proposal.assignment[orphans] >= 0)
    assert proposal.orphans == 3
    assert {m.from_owner_id for m in proposal.moves if m.orphan} == {"r0"}


def test_what_ifs_change_the_bands_as_defined() -> None:
    problem = _org()
    scenario = Scenario("t", (Band("potential", 0.1),))
    total = 300.0
    base = compile_problem(problem, scenario).targets[0]
    assert np.allclose(base.lo, total / 3 * 0.9)
    assert np.allclose(base.hi, total / 3 * 1.1)
    added = compile_problem(add_rep(problem, "New", "A", 40.0), scenario)
    assert added.n_territories == 4
    assert np.allclose(added.targets[0].hi, total / 4 * 1.1)
    removed = compile_problem(remove_rep(problem, "r1"), scenario)
    assert np.allclose(removed.targets[0].lo, total / 2 * 0.9)
    loose = override_bands(scenario, {"potential": 0.5, "accounts": 0.3})
    assert [(b.metric, b.tolerance) for b in loose.bands] == [("potential", 0.5), ("accounts", 0.3)]
    assert loose.limits == ()


def test_an_added_rep_is_filled_and_makes_the_proposal_hypothetical() -> None:
    problem = add_rep(_org(), "New", "A", 40.0, (40.5, -73.5))
    proposal = _propose(problem, Scenario("t", (Band("potential", 0.35),)))
    assert proposal.hypothetical
    assert any(m.to_owner_id == "whatif:New" for m in proposal.moves)
    assert all(m.rationale for m in proposal.moves)


def _org() -> Problem:
    reps = tuple(Territory(f"r{i}", f"Rep {i}", "A", 40.0, 40.5, -73.5 + i * 0.1) for i in range(3))
    accounts = [
        Account(
            f"a{j}",
            f"Account {j}",
            f"r{j % 3}",
            {"potential": 100.0 / 3, "workload": 2.0},
            lat=40.5,
            lon=-73.5,
            tenure_start=AS_OF,
        )
        for j in range(9)
    ]
    return Problem(AS_OF, reps, account_table(accounts))
