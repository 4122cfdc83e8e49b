"""The rebalancer's entry point: a problem and a scenario in, a :class:`Proposal` out.

Groups of regions (a region and the regions configured as its neighbours) are independent problems
and are solved in parallel threads (HiGHS releases the GIL while it solves). A total move cap
(``max_moves``) couples them, so with one the org is solved as one instance.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from rebalancer import explain
from rebalancer.candidates import candidate_instance, split
from rebalancer.heuristic import Limits
from rebalancer.highs import StageResult, instance_violation
from rebalancer.model import FREE, LOCK_NAMES, Compiled, Instance, compile_problem
from rebalancer.problem import FloatArray, IntArray, Problem, Scenario, Secondary
from rebalancer.progress import Observer, Part, Tracker
from rebalancer.solve import (
    CurvePoint,
    InstanceSolution,
    curve,
    improve_moves,
    instance_base,
    solve_instance,
)
from rebalancer.waves import DEFAULT_WAVES, plan_waves

DEFAULT_TIME_LIMIT: Final = 60.0
CURVE_POINTS: Final = 16  # at most this many k on the trade-off curve (all of them when the fix is small)
PART_POINTS: Final = 10  # k solved per independent part (all of them when its fix is small)
DENSE_CURVE_MOVES: Final = 100  # up to this many moves in all, every k of every part is solved


@dataclass(frozen=True)
class Move:
    """One account to another owner; an orphan's ``from_owner_id`` is its inactive (or removed) owner."""

    account_id: str
    account_name: str
    from_owner_id: str
    to_owner_id: str
    orphan: bool
    wave: int = 1
    rationale: str = ""


@dataclass(frozen=True)
class SolverReport:
    """How close to optimal: ``bound`` is the proven lower bound on the (weighted) moves."""

    name: str
    status: str  # optimal | time_limit | infeasible | ...
    seconds: float
    bound: float
    optimality_gap: float
    violation_bound: float  # proven lower bound on the band violation (the first goal)


@dataclass(frozen=True)
class Objective:
    moves: int  # discretionary moves (orphans counted apart)
    disruption: float  # the weighted moves the second goal minimises
    band_violation: float  # after the moves, summed over territories and targets


@dataclass(frozen=True)
class Risk:
    kind: str  # tenure | open_pipeline | recent_win | strategic
    account_id: str
    detail: str
    amount: float = 0.0


@dataclass(frozen=True)
class TerritoryChange:
    owner_id: str
    name: str
    before: dict[str, float]
    after: dict[str, float]


@dataclass(frozen=True)
class HeuristicReport:
    moves: int
    band_violation: float
    seconds: float


@dataclass(frozen=True)
class Proposal:
    """What ``territory propose`` prints and stores (docs/rebalancer.md, "Result")."""

    scenario: str
    status: str  # ok | partial | infeasible
    moves: tuple[Move, ...]
    orphans: int
    objective: Objective
    solver: SolverReport
    band_violation_before: float
    heuristic: HeuristicReport
    territories: tuple[TerritoryChange, ...] = ()
    tradeoff: tuple[CurvePoint, ...] = ()
    blocked: tuple[str, ...] = ()
    risks: tuple[Risk, ...] = ()
    waves: int = 1
    waves_note: str = ""
    hypothetical: bool = False
    locked: dict[str, int] = field(default_factory=dict)  # accounts that stay, by reason (undated counted)
    assignment: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)


@dataclass(frozen=True)
class Solved:
    """The org-level assignment after the solve, before rationale and waves."""

    compiled: Compiled
    owner_after: IntArray  # territory per account after the moves (-1: an orphan left unplaced)
    heuristic_owner: IntArray | None
    solutions: tuple[tuple[Instance, InstanceSolution], ...]
    seconds: float
    heuristic_seconds: float
    tracker: Tracker | None = field(default=None, repr=False)  # the live progress, when watched


class _Budget:
    """Time for each instance as it starts: its share (by size) of what is left for the instances not
    started yet, times the workers, so the groups queued behind others still get their part."""

    def __init__(self, deadline: float, sizes: list[int], workers: int) -> None:
        self.deadline = deadline
        self.sizes = sizes
        self.waiting = sum(sizes)
        self.workers = workers
        self.lock = threading.Lock()

    def take(self, k: int) -> float:
        with self.lock:
            left = max(self.deadline - time.perf_counter(), 0.0)
            share = min(1.0, self.workers * self.sizes[k] / max(self.waiting, 1))
            self.waiting -= self.sizes[k]
            return left * share


def _groups(c: Compiled) -> list[IntArray]:
    if c.scenario.max_moves is not None:
        return [np.arange(c.n_territories)]
    groups = c.group[c.region]
    return [np.flatnonzero(groups == g) for g in np.unique(groups)]


def _apply(owner: IntArray, inst: Instance, chosen: IntArray) -> None:
    moved = np.flatnonzero(chosen >= 0)
    owner[inst.acc[moved]] = inst.terr[inst.arc_to[chosen[moved]]]


def solve(
    problem: Problem,
    scenario: Scenario,
    time_limit: float = DEFAULT_TIME_LIMIT,
    workers: int = 2,
    observer: Observer | None = None,
) -> Solved:
    """The optimal assignment over the candidate sets, group by group in parallel; ``observer`` sees
    the best solution known, the proven bound and the time left while it runs."""
    started = time.perf_counter()
    c = compile_problem(problem, scenario)
    limits = Limits(scenario.max_moves_per_territory, scenario.max_moves)
    whole = [i for g in _groups(c) if (i := candidate_instance(c, g)) is not None]
    instances = whole if scenario.max_moves is not None else [p for i in whole for p in split(i)]
    instances.sort(key=lambda i: -len(i.arc_acc))
    budget = _Budget(started + time_limit, [len(i.arc_acc) + 1 for i in instances], max(1, workers))
    tracker = None
    if observer is not None:
        bases = [instance_base(i) for i in instances]
        outside = total_violation(c, c.owner) - sum(bases)
        tracker = Tracker(observer, started + time_limit, bases, outside)

    def part(k: int) -> Part | None:
        return tracker.part(k) if tracker is not None else None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(
            pool.map(
                lambda k: solve_instance(instances[k], limits, budget.take(k), part(k)),
                range(len(instances)),
            )
        )
        results = _second_chance(pool, instances, results, limits, started + time_limit, workers, part=part)
    owner = c.owner.copy()
    h_owner: IntArray | None = c.owner.copy()
    for inst, sol in zip(instances, results, strict=True):
        if sol.chosen is not None:
            _apply(owner, inst, sol.chosen)
        if sol.heuristic_chosen is not None and h_owner is not None:
            _apply(h_owner, inst, sol.heuristic_chosen)
        else:
            h_owner = None
    seconds = time.perf_counter() - started
    h_seconds = sum(s.heuristic_seconds for s in results)
    solutions = tuple(zip(instances, results, strict=True))
    return Solved(c, owner, h_owner, solutions, seconds, h_seconds, tracker)


def _second_chance(
    pool: ThreadPoolExecutor,
    instances: list[Instance],
    results: list[InstanceSolution],
    limits: Limits,
    deadline: float,
    workers: int,
    *,
    part: Callable[[int], Part | None],
) -> list[InstanceSolution]:
    """The time left after every part had its turn goes to the parts stopped by the time limit."""
    retry = [k for k, r in enumerate(results) if r.moves.status == "time_limit" and r.chosen is not None]
    retry = [k for k in retry if instances[k].compiled.scenario.secondary is Secondary.none]
    if not retry or deadline - time.perf_counter() < 1.0:
        return results
    budget = _Budget(deadline, [len(instances[k].arc_acc) + 1 for k in retry], max(1, workers))
    better = list(
        pool.map(
            lambda i: improve_moves(
                instances[retry[i]], limits, results[retry[i]], budget.take(i), part(retry[i])
            ),
            range(len(retry)),
        )
    )
    out = list(results)
    for k, sol in zip(retry, better, strict=True):
        out[k] = sol
    return out


def values_of(c: Compiled, owner: IntArray) -> FloatArray:
    """(targets, territories) values under an assignment."""
    keep = owner >= 0
    return np.array(
        [np.bincount(owner[keep], weights=t.contribution[keep], minlength=c.n_territories) for t in c.targets]
    ).reshape(len(c.targets), c.n_territories)


def total_violation(c: Compiled, owner: IntArray) -> float:
    return float(c.violation(values_of(c, owner)).sum()) if c.targets else 0.0


def solver_report(solved: Solved) -> SolverReport:
    """The stages of every group added up: moves and bound, violation bound, worst status."""
    stages = [s for _, s in solved.solutions]
    moves = [s.moves for s in stages]
    objective = sum(m.objective for m in moves if math.isfinite(m.objective))
    bound = sum(m.bound for m in moves if math.isfinite(m.bound))
    base_violation = total_violation(solved.compiled, solved.compiled.owner)
    inside = sum(instance_base(i) for i, _ in solved.solutions)
    v_bound = (
        base_violation - inside + sum(s.violation.bound for s in stages if math.isfinite(s.violation.bound))
    )
    statuses = {m.status for m in moves} | {s.violation.status for s in stages}
    status = "optimal" if statuses <= {"optimal"} else sorted(statuses - {"optimal"})[0]
    gap = StageResult(status, objective, bound, 0.0).gap
    return SolverReport("highs", status, solved.seconds, bound, gap, max(v_bound, 0.0))


def curve_ks(full_fix: int, points: int = CURVE_POINTS) -> list[int]:
    """k = 0..full_fix, or a coarse grid of ``points`` values including both ends."""
    if full_fix + 1 <= points:
        return list(range(full_fix + 1))
    grid = np.unique(np.round(np.linspace(0, full_fix, points)).astype(int))
    return [int(k) for k in grid]


def tradeoff(
    problem: Problem, scenario: Scenario, full_fix: int, time_limit: float = DEFAULT_TIME_LIMIT
) -> tuple[CurvePoint, ...]:
    """The smallest violation with at most k moves for k on ``curve_ks(full_fix)``, each with its bound.

    With a total move cap the org is one instance (the cap is shared); otherwise see ``part_curves``.
    """
    if scenario.max_moves is None:
        started = time.perf_counter()
        solved = solve(problem, scenario, time_limit / 3)
        return part_curves(solved, full_fix, time_limit - (time.perf_counter() - started))
    c = compile_problem(problem, scenario)
    inst = candidate_instance(c, np.arange(c.n_territories))
    ks = curve_ks(full_fix)
    if inst is None:
        return tuple(CurvePoint(k, 0.0, 0.0, "optimal") for k in ks)
    outside = total_violation(c, c.owner) - instance_base(inst)
    limits = Limits(scenario.max_moves_per_territory, scenario.max_moves)
    points = curve(inst, limits, ks, time_limit)
    return tuple(
        CurvePoint(p.max_moves, p.band_violation + outside, p.bound + outside, p.status) for p in points
    )


def part_curves(solved: Solved, full_fix: int, time_limit: float) -> tuple[CurvePoint, ...]:
    """The org's curve from each independent part's own curve, combined exactly.

    Part p's curve is solved for k = 0 .. m_p - 1 (m_p: its moves in the proposal; from m_p on it is the
    proposal's own value and bound), on a grid of ``PART_POINTS`` when the proposal has more than
    ``DENSE_CURVE_MOVES`` moves.
    The org's smallest violation with at most K moves is the min-plus
    combination of the parts' curves (a budget split over the parts), and so is its bound.
    """
    c = solved.compiled
    started = time.perf_counter()
    limits = Limits(c.scenario.max_moves_per_territory, None)
    values, bounds, statuses = np.zeros(1), np.zeros(1), {"optimal"}
    total = sum(int(((s.chosen >= 0) & ~i.orphan).sum()) for i, s in solved.solutions if s.chosen is not None)
    dense = total <= DENSE_CURVE_MOVES
    for done, (inst, sol) in enumerate(solved.solutions):
        if solved.tracker is not None:
            solved.tracker.curve(done, len(solved.solutions), started + time_limit)
        if sol.chosen is None:
            continue
        m = int(((sol.chosen >= 0) & ~inst.orphan).sum())
        left = time_limit - (time.perf_counter() - started)
        share = left * m / max(total, 1)
        total -= m
        grid = list(range(m)) if dense else curve_ks(m - 1, PART_POINTS)
        points = curve(inst, limits, grid, share) if m else []
        final = instance_violation(inst, sol.chosen)
        v, b = _fill_grid(m, points, final, min(max(sol.violation.bound, 0.0), final))
        statuses |= {p.status for p in points}
        values, bounds = _min_plus(values, np.array(v)), _min_plus(bounds, np.array(b))
    outside = total_violation(c, c.owner) - sum(instance_base(i) for i, _ in solved.solutions)
    status = "optimal" if statuses <= {"optimal"} else "time_limit"
    out = []
    for k in curve_ks(full_fix):
        j = min(k, len(values) - 1)
        value, bound = max(float(values[j]) + outside, 0.0), max(float(bounds[j]) + outside, 0.0)
        out.append(CurvePoint(k, value, min(bound, value), status))
    return tuple(out)


def _fill_grid(
    m: int, points: list[CurvePoint], final: float, final_bound: float
) -> tuple[FloatArray, FloatArray]:
    """A part's curve at every k = 0..m from its points on a grid: between two grid points the value
    is the lower point's (its solution is feasible with more moves) and the bound the upper one's
    (the violation never goes up with k)."""
    ks = [p.max_moves for p in points] + [m]
    vals = [p.band_violation for p in points] + [final]
    bnds = [p.bound for p in points] + [final_bound]
    v, b = np.empty(m + 1), np.empty(m + 1)
    for k in range(m + 1):
        lower = max(i for i, g in enumerate(ks) if g <= k)
        upper = min(i for i, g in enumerate(ks) if g >= k)
        v[k], b[k] = vals[lower], bnds[upper]
    return np.minimum.accumulate(v), b


def _min_plus(a: FloatArray, b: FloatArray) -> FloatArray:
    """``out[k] = min over i + j <= k of a[i] + b[j]`` for curves that never go up."""
    out = np.full(len(a) + len(b) - 1, np.inf)
    for j, value in enumerate(b.tolist()):
        out[j : j + len(a)] = np.minimum(out[j : j + len(a)], a + value)
    return np.minimum.accumulate(out)


def _moves_of(c: Compiled, before: IntArray, after: IntArray) -> list[tuple[int, int, int]]:
    changed = np.flatnonzero(after != before)
    return [(int(a), int(before[a]), int(after[a])) for a in changed.tolist() if after[a] >= 0]


def _status(c: Compiled, solved: Solved, before: float, after: float) -> str:
    if np.any(solved.owner_after < 0):
        return "infeasible"
    if after <= 1e-9:
        return "ok"
    return "partial" if after < before - 1e-9 else "infeasible"


def _territory_changes(
    c: Compiled, moves: list[tuple[int, int, int]], vb: FloatArray, va: FloatArray
) -> tuple[TerritoryChange, ...]:
    touched = sorted({x for m in moves for x in m[1:] if x >= 0})
    out = []
    for t in touched:
        terr = c.problem.territories[int(c.territory[t])]
        names = [target.name for target in c.targets]
        before = {n: float(vb[q, t]) for q, n in enumerate(names)}
        after = {n: float(va[q, t]) for q, n in enumerate(names)}
        out.append(TerritoryChange(terr.owner_id, terr.name, before, after))
    return tuple(out)


def _risks(c: Compiled, moved: IntArray) -> tuple[Risk, ...]:
    ids = c.problem.accounts.ids
    return tuple(
        Risk(kind, str(ids[a]), detail, amount) for kind, a, detail, amount in explain.risks(c, moved)
    )


def _heuristic_report(solved: Solved) -> HeuristicReport:
    c = solved.compiled
    if solved.heuristic_owner is None:
        return HeuristicReport(-1, float("inf"), solved.heuristic_seconds)
    moved = (solved.heuristic_owner != c.owner) & (c.owner >= 0)
    count = int(moved.sum())
    return HeuristicReport(count, total_violation(c, solved.heuristic_owner), solved.heuristic_seconds)


def propose(
    problem: Problem,
    scenario: Scenario,
    *,
    time_limit: float = DEFAULT_TIME_LIMIT,
    waves: int = DEFAULT_WAVES,
    with_curve: bool = True,
    workers: int = 2,
    observer: Observer | None = None,
) -> Proposal:
    """The proposal of ``scenario`` on ``problem``: moves with rationale and waves, the solver's report;
    ``observer`` sees the solve's progress (rebalancer/progress.py), then the curve's."""
    solved = solve(problem, scenario, time_limit, workers, observer)
    c = solved.compiled
    owner, after_owner = c.owner, solved.owner_after
    v_before, v_after = total_violation(c, owner), total_violation(c, after_owner)
    moves = _moves_of(c, owner, after_owner)
    plan = plan_waves(c, owner, moves, waves)
    vb, va = values_of(c, owner), values_of(c, after_owner)
    acc, terr = problem.accounts, problem.territories
    work = (explain.workloads(c, owner), explain.workloads(c, after_owner))
    out: list[Move] = []
    for i, (a, src, dst) in enumerate(moves):
        from_id = str(acc.owner_ids[a]) if src < 0 else terr[int(c.territory[src])].owner_id
        text = explain.rationale(c, a, (src, dst), (vb, va), work)
        out.append(
            Move(
                str(acc.ids[a]),
                str(acc.names[a]),
                from_id,
                terr[int(c.territory[dst])].owner_id,
                src < 0,
                int(plan.wave[i]),
                text,
            )
        )
    discretionary = [m for m in moves if m[1] >= 0]
    disruption = float(sum(c.weight[m[0]] for m in discretionary))
    report = solver_report(solved)
    points: tuple[CurvePoint, ...] = ()
    if with_curve and discretionary and scenario.max_moves is None:
        points = part_curves(solved, len(discretionary), time_limit)
    elif with_curve and discretionary:
        points = tradeoff(problem, scenario, len(discretionary), time_limit)
    return Proposal(
        scenario=scenario.name,
        status=_status(c, solved, v_before, v_after),
        moves=tuple(out),
        orphans=len(moves) - len(discretionary),
        objective=Objective(len(discretionary), disruption, v_after),
        solver=report,
        band_violation_before=v_before,
        heuristic=_heuristic_report(solved),
        territories=_territory_changes(c, moves, vb, va),
        tradeoff=points,
        blocked=tuple(explain.blocked(c, after_owner, va)),
        risks=_risks(c, np.array([m[0] for m in discretionary], dtype=np.int64)),
        waves=plan.count,
        waves_note=plan.note,
        hypothetical=any(t.hypothetical and t.active for t in terr),
        locked={name: int((c.lock == i).sum()) for i, name in enumerate(LOCK_NAMES) if i != FREE},
        assignment=after_owner,
    )
