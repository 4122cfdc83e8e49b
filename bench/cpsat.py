"""The rebalancer's instance as an OR-Tools CP-SAT model, for the solver comparison in bench/rebalance.py.

Same variables, rows and lexicographic stages as ``rebalancer.highs`` (violation, then moves), with the
money scaled to integers: each target's unit is ``scale / RESOLUTION`` (a distance outside a band is
counted in 1/RESOLUTION of the mean), touches are integers already. Gap limits 0, a fixed seed, the
heuristic as a hint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ortools.sat.python import cp_model

from rebalancer.heuristic import Limits, heuristic
from rebalancer.highs import instance_violation
from rebalancer.model import Instance

RESOLUTION = 10_000


@dataclass(frozen=True)
class CpsatResult:
    status: str
    moves: float
    bound: float
    violation: float  # of the returned assignment, recomputed exactly
    seconds: float


class CpsatModel:
    """One instance in CP-SAT."""

    def __init__(self, inst: Instance, limits: Limits) -> None:
        self.inst = inst
        m = cp_model.CpModel()
        self.m = m
        n_arc = len(inst.arc_acc)
        self.x = [m.new_bool_var(f"x{j}") for j in range(n_arc)]
        by_acc: dict[int, list[int]] = {}
        for j, a in enumerate(inst.arc_acc.tolist()):
            by_acc.setdefault(a, []).append(j)
        for a, arcs in by_acc.items():
            total = sum(self.x[j] for j in arcs)
            m.add(total == 1) if inst.orphan[a] else m.add(total <= 1)
        self.slack = self._targets()
        self._capacity()
        disc = [j for j in range(n_arc) if not inst.orphan[inst.arc_acc[j]]]
        self.moves = sum(self.x[j] for j in disc)
        if limits.total is not None:
            m.add(self.moves <= limits.total)
        if limits.per_territory is not None:
            for t in range(len(inst.terr)):
                src = inst.src[inst.arc_acc]
                m.add(sum(self.x[j] for j in disc if src[j] == t) <= limits.per_territory)
                m.add(sum(self.x[j] for j in disc if inst.arc_to[j] == t) <= limits.per_territory)

    def _flows(self, weights: np.ndarray, t: int) -> cp_model.LinearExpr:
        inst = self.inst
        terms = []
        src = inst.src[inst.arc_acc]
        for j in np.flatnonzero((inst.arc_to == t) | (src == t)).tolist():
            w = int(weights[inst.arc_acc[j]])
            if w:
                terms.append((w if inst.arc_to[j] == t else -w) * self.x[j])
        return sum(terms)

    def _targets(self) -> list[cp_model.IntVar]:
        inst, m = self.inst, self.m
        slack: list[cp_model.IntVar] = []
        for q in range(inst.base.shape[0]):
            for t in range(len(inst.terr)):
                unit = inst.scale[q, t] / RESOLUTION
                c = np.round(inst.contrib[q] / unit)
                base = round(inst.base[q, t] / unit)
                hard = inst.hard_max[q, t] * RESOLUTION
                top = int(np.ceil(hard)) if np.isfinite(hard) else 10**9
                lo_s, hi_s = m.new_int_var(0, top, ""), m.new_int_var(0, top, "")
                value = base + self._flows(c, t) + lo_s - hi_s
                if np.isfinite(inst.lo[q, t]):
                    m.add(value >= int(np.floor(inst.lo[q, t] / unit)))
                if np.isfinite(inst.hi[q, t]):
                    m.add(value <= int(np.ceil(inst.hi[q, t] / unit)))
                slack += [lo_s, hi_s]
        return slack

    def _capacity(self) -> None:
        inst = self.inst
        for t in np.flatnonzero(np.isfinite(inst.room)).tolist():
            self.m.add(self._flows(np.round(inst.work), t) <= int(np.floor(inst.room[t] + 1e-9)))

    def solve(self, time_limit: float) -> CpsatResult:
        """Violation first, then moves, each with half of the time; the heuristic as a hint."""
        started = time.perf_counter()
        warm = heuristic(self.inst, Limits(None, None))
        if warm is not None:
            for j in range(len(self.x)):
                self.m.add_hint(self.x[j], int(warm[self.inst.arc_acc[j]] == j))
        solver = cp_model.CpSolver()
        p = solver.parameters
        p.num_workers, p.random_seed, p.relative_gap_limit, p.absolute_gap_limit = 2, 0, 0.0, 0.0
        p.max_time_in_seconds = time_limit / 2
        self.m.minimize(sum(self.slack))
        status = solver.solve(self.m)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return CpsatResult(solver.status_name(status), float("inf"), 0.0, float("inf"), 0.0)
        self.m.add(sum(self.slack) <= round(solver.objective_value))
        self.m.minimize(self.moves)
        p.max_time_in_seconds = max(time_limit - (time.perf_counter() - started), 0.1)
        status = solver.solve(self.m)
        chosen = np.full(len(self.inst.acc), -1, dtype=np.int64)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            for j, var in enumerate(self.x):
                if solver.value(var):
                    chosen[self.inst.arc_acc[j]] = j
        return CpsatResult(
            solver.status_name(status),
            float(solver.objective_value),
            float(solver.best_objective_bound),
            instance_violation(self.inst, chosen),
            time.perf_counter() - started,
        )
