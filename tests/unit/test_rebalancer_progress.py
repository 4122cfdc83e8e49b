"""The solver's live progress: proven figures only, ending at what the proposal reports."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from rebalancer.frames import problem_of
from rebalancer.problem import Problem, Scenario
from rebalancer.progress import Progress
from rebalancer.propose import propose
from rebalancer.scenarios import builtin_scenarios, override_bands
from service.cli.render import solving
from tests.helpers.rebalancer import AS_OF


@pytest.fixture(scope="module")
def org() -> tuple[Problem, Scenario]:
    """The sandbox's org of 2,000 accounts: several regions (parts solved in parallel), some drifting;
    the revenue bands loosened to 30% so that it solves to a proven optimum in a few seconds."""
    generated = generate_org(2000, 16, 5, DEFAULT_NOW)
    problem = problem_of(
        generated.owners, generated.accounts, generated.opportunities, generated.assignments, AS_OF
    )
    revenue = builtin_scenarios()["revenue"]
    return problem, override_bands(revenue, {b.metric: 0.3 for b in revenue.bands})


def test_reports_are_proven_figures_that_end_at_the_proposal(org: tuple[Problem, Scenario]) -> None:
    problem, scenario = org
    seen: list[Progress] = []
    watched = propose(problem, scenario, time_limit=30.0, observer=seen.append)
    plain = propose(problem, scenario, time_limit=30.0, with_curve=False)
    assert watched.solver.optimality_gap == 0.0
    # Watching changes nothing of the answer.
    assert [(m.account_id, m.to_owner_id) for m in watched.moves] == [
        (m.account_id, m.to_owner_id) for m in plain.moves
    ]
    solve = [p for p in seen if p.phase == "solve"]
    assert len(solve) >= 2
    assert solve[0].parts > 1
    for p in solve:
        assert p.violation_bound <= p.violation + 1e-9
        assert p.moves_bound <= p.moves + 1e-9
        assert 0.0 <= p.seconds_left <= 30.0
    assert [p.done for p in solve] == sorted(p.done for p in solve)
    assert [p.seconds_left for p in solve] == sorted((p.seconds_left for p in solve), reverse=True)
    # A bound is never taken back: the violation's and the moves' only ever rise.
    assert [p.violation_bound for p in solve] == sorted(p.violation_bound for p in solve)
    last = solve[-1]
    assert last.done == last.parts
    assert last.violation == pytest.approx(watched.objective.band_violation, abs=1e-6)
    assert last.moves == pytest.approx(watched.objective.disruption, abs=1e-6)
    assert last.moves_bound == pytest.approx(watched.solver.bound, abs=1e-6)
    assert last.violation_bound == pytest.approx(watched.solver.violation_bound, abs=1e-6)
    curve = [p for p in seen if p.phase == "curve"]
    assert curve
    assert [p.done for p in curve] == list(range(len(curve)))


def test_the_status_line_shows_incumbent_bound_and_time_left(org: tuple[Problem, Scenario]) -> None:
    problem, scenario = org
    screen = io.StringIO()
    console = Console(file=screen, width=200, force_terminal=True, color_system=None)
    with solving(scenario.name, 30.0, quiet=False, console=console) as status:
        assert status is not None
        proposal = propose(problem, scenario, time_limit=30.0, observer=status, with_curve=False)
    shown = screen.getvalue()
    parts = status.seen[0].parts if status.seen else 0
    moves = f"{proposal.objective.disruption:.4g}"
    # The last line drawn is the finished solve: every part done, the moves equal to their bound.
    assert f"revenue · parts {parts}/{parts} · violation " in shown
    assert f"moves {moves} ≥ {moves} · " in shown
    assert re.search(r"· \d+ s left", shown)
    with solving(scenario.name, 30.0, quiet=True, console=console) as nothing:
        assert nothing is None  # --format json: no observer, so HiGHS runs with no callback
