"""Lexicographic solve of one instance (violation, then moves, then the secondary aim) and the curve.

The heuristic runs first and warm-starts every stage; when it already reaches a violation of 0 the
first stage is proven optimal without a solve (a distance outside a band is never negative).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import numpy as np

from rebalancer.heuristic import Limits, heuristic
from rebalancer.highs import Model, StageResult, instance_violation
from rebalancer.model import Instance
from rebalancer.problem import IntArray, Secondary
from rebalancer.progress import Part, unwatched

_TOL: Final = 1e-7
STAGE_SHARE: Final = (0.45, 0.85)  # of the time left: violation stage, then moves stage


@dataclass(frozen=True)
class InstanceSolution:
    """The chosen arc per candidate account and each stage's report."""

    chosen: IntArray | None  # None: no proposal respects the hard constraints (an orphan cannot go)
    violation: StageResult
    moves: StageResult
    secondary: StageResult | None
    heuristic_chosen: IntArray | None
    heuristic_seconds: float


def _moves(inst: Instance, chosen: IntArray) -> float:
    return float(inst.cost[chosen >= 0].sum())


def instance_base(inst: Instance) -> float:
    """The instance's violation before any move."""
    return instance_violation(inst, np.full(len(inst.acc), -1, dtype=np.int64))


def _costs(model: Model, what: str) -> np.ndarray:
    inst = model.inst
    cost = np.zeros(model.n_col)
    if what == "violation":
        cost[model.n_arc :] = 1.0
    elif what == "moves":
        cost[: model.n_arc] = np.where(inst.orphan[inst.arc_acc], 0.0, inst.cost[inst.arc_acc])
    else:
        cost[: model.n_arc] = inst.arc_secondary
    return cost


def solve_instance(
    inst: Instance, limits: Limits, time_limit: float, part: Part | None = None
) -> InstanceSolution:
    """Violation first, then (weighted) moves, then the secondary aim, each bounded by the time left;
    ``part`` hears of every solution and bound on the way (rebalancer/progress.py)."""
    part = part or unwatched()
    started = time.perf_counter()
    warm = heuristic(inst, limits)
    h_seconds = time.perf_counter() - started
    if warm is not None:
        part.solution(instance_violation(inst, warm), _moves(inst, warm))
    model = Model(inst, limits)
    moves_cost = _costs(model, "moves")
    left = time_limit - (time.perf_counter() - started)
    if warm is not None and instance_violation(inst, warm) <= 1e-9:
        first, chosen = StageResult("optimal", 0.0, 0.0, 0.0), warm
    else:
        watch = part.watch("violation", moves_cost)
        first, found = model.stage(_costs(model, "violation"), STAGE_SHARE[0] * left, warm, watch)
        if found is None:
            none = StageResult(first.status, float("inf"), first.bound, 0.0)
            part.finished(instance_base(inst), 0.0, 0.0)
            return InstanceSolution(None, first, none, None, warm, h_seconds)
        chosen = found
    v_star = max(first.objective, instance_violation(inst, chosen))
    part.solution(v_star, _moves(inst, chosen))
    part.proven("violation_bound", first.bound)
    model.fix(model.row_violation, v_star * (1 + _TOL) + _TOL)
    left = time_limit - (time.perf_counter() - started)
    watch = part.watch("moves", moves_cost)
    second, found = model.stage(moves_cost, STAGE_SHARE[1] * left, chosen, watch)
    chosen = found if found is not None else chosen
    second = _honest(second, _moves(inst, chosen))
    third = None
    if inst.compiled.scenario.secondary is not Secondary.none and second.objective > 0:
        model.fix(model.row_moves, second.objective + 1e-6)
        left = time_limit - (time.perf_counter() - started)
        third, found = model.stage(_costs(model, "secondary"), left, chosen)
        chosen = found if found is not None else chosen
    part.finished(v_star, second.objective, second.bound)
    return InstanceSolution(chosen, first, second, third, warm, h_seconds)


def improve_moves(
    inst: Instance, limits: Limits, sol: InstanceSolution, time_limit: float, part: Part | None = None
) -> InstanceSolution:
    """A second moves stage for a part stopped by the time limit, warm-started from its answer.

    Both runs' bounds are proven, so the better (larger) one is kept, and the better solution.
    """
    if sol.chosen is None:
        return sol
    part = part or unwatched()
    model = Model(inst, limits)
    v_star = max(sol.violation.objective, instance_violation(inst, sol.chosen))
    model.fix(model.row_violation, v_star * (1 + _TOL) + _TOL)
    cost = _costs(model, "moves")
    result, found = model.stage(cost, time_limit, sol.chosen, part.watch("moves", cost))
    chosen = sol.chosen
    if found is not None and _moves(inst, found) < _moves(inst, chosen) - 1e-9:
        chosen = found
    objective = _moves(inst, chosen)
    bound = max(sol.moves.bound, min(result.bound if np.isfinite(result.bound) else 0.0, objective))
    status = "optimal" if objective - bound < 1e-6 else result.status
    seconds = sol.moves.seconds + result.seconds
    part.solution(None, objective)
    part.proven("moves_bound", bound)
    moves = StageResult(status, objective, bound, seconds)
    return InstanceSolution(
        chosen, sol.violation, moves, sol.secondary, sol.heuristic_chosen, sol.heuristic_seconds
    )


def _honest(result: StageResult, objective: float) -> StageResult:
    """The stage report with the objective of the solution kept (solver noise rounded away)."""
    bound = min(result.bound if np.isfinite(result.bound) else 0.0, objective)
    bound = max(bound, 0.0)  # a (weighted) move count is never negative
    if objective - bound < 1e-6:
        bound = objective
    return StageResult(result.status, objective, bound, result.seconds)


@dataclass(frozen=True)
class CurvePoint:
    """The smallest violation found with at most ``max_moves`` discretionary moves, and its bound."""

    max_moves: int
    band_violation: float
    bound: float
    status: str


def curve(inst: Instance, limits: Limits, ks: list[int], time_limit: float) -> list[CurvePoint]:
    """The epsilon-constraint sweep: minimise the violation with the total moves capped at each k.

    k increases, so the previous point's solution is feasible for the next one and warm-starts it (or
    the greedy with that cap, whichever is better): the curve never goes up.
    """
    started = time.perf_counter()
    model = Model(inst, limits)
    cost = _costs(model, "violation")
    points: list[CurvePoint] = []
    previous: IntArray | None = None
    for i, k in enumerate(ks):
        cap = k if limits.total is None else min(k, limits.total)
        # The previous point's solution is feasible here too; so is the greedy with this cap.
        warm = _better(inst, heuristic(inst, Limits(limits.per_territory, cap), rounds=0), previous)
        if warm is not None and instance_violation(inst, warm) <= 1e-9:
            points.append(CurvePoint(k, 0.0, 0.0, "optimal"))
            previous = warm
            continue
        model.fix(model.row_total, float(cap))
        share = (time_limit - (time.perf_counter() - started)) / max(len(ks) - i, 1)
        result, found = model.stage(cost, share, warm)
        best = _better(inst, found, warm)
        value = instance_violation(inst, best) if best is not None else float("inf")
        bound = result.bound if np.isfinite(result.bound) else 0.0
        points.append(CurvePoint(k, value, min(max(bound, 0.0), value), result.status))
        previous = best
    return _tightened(points)


def _tightened(points: list[CurvePoint]) -> list[CurvePoint]:
    """Each bound raised to the bounds of larger k: the violation never goes up with k, so a bound
    proven for k + 1 holds for k too (a point stopped by the time limit early inherits it)."""
    out: list[CurvePoint] = []
    carry = 0.0
    for p in reversed(points):
        carry = max(carry, p.bound)
        bound = max(min(carry, p.band_violation), 0.0)
        out.append(CurvePoint(p.max_moves, max(p.band_violation, 0.0), bound, p.status))
    return out[::-1]


def _better(inst: Instance, a: IntArray | None, b: IntArray | None) -> IntArray | None:
    """The one of two solutions with the smaller violation (either may be None)."""
    if a is None or b is None:
        return a if b is None else b
    return a if instance_violation(inst, a) <= instance_violation(inst, b) else b
