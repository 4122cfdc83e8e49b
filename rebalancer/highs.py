"""The exact model of one instance as a HiGHS MIP, built from arrays, solved in lexicographic stages.

Columns: one binary per candidate arc (account -> receiver), then for every (target, territory) row the
distances below and above, ``s_lo, s_hi >= 0`` (bounded by the starting distance on hard tier rows).
Rows: each account moves at most once (an orphan exactly once); each target of each territory
``lo <= value + s_lo - s_hi <= hi`` divided by its scale, so ``sum(s)`` is the band violation;
capacity of every receiver; the per-territory and total move caps; and two rows that fix the earlier
stages' optimum in the later ones. HiGHS' gap tolerances are 0, so "optimal" means a gap of 0.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

import highspy
import numpy as np

from rebalancer.heuristic import Limits
from rebalancer.model import Instance, violation_of
from rebalancer.problem import FloatArray, IntArray
from rebalancer.progress import Watch

SEED: Final = 0
_INF: Final = highspy.kHighsInf


_BANNER_LOCK = threading.Lock()


def _quiet_highs() -> highspy.Highs:
    """A HiGHS instance whose construction banner goes to stderr, not stdout.

    HiGHS prints "Running HiGHS ..." from C++ when an instance is made, before any option can turn
    logging off; on stdout it would corrupt ``--format json``. File descriptor 1 points at stderr for
    that moment, under a lock so parallel solves never restore each other's redirect.
    """
    with _BANNER_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
            return highspy.Highs()  # type: ignore[no-untyped-call]
        finally:
            os.dup2(saved, 1)
            os.close(saved)


@dataclass(frozen=True)
class StageResult:
    """What one solve reports: the status, the incumbent's objective, the proven bound."""

    status: str
    objective: float
    bound: float
    seconds: float

    @property
    def gap(self) -> float:
        """HiGHS' relative gap ``|objective - bound| / |objective|`` (0 when both are 0)."""
        if abs(self.objective - self.bound) <= 1e-9:
            return 0.0
        return abs(self.objective - self.bound) / max(abs(self.objective), 1e-9)


@dataclass(frozen=True)
class Triplets:
    """A sparse matrix in coordinates."""

    row: IntArray
    col: IntArray
    val: FloatArray


class Model:
    """One instance as a HiGHS model, with the stage rows at the end."""

    def __init__(self, inst: Instance, limits: Limits) -> None:
        self.inst = inst
        self.n_arc = len(inst.arc_acc)
        k, n_t = inst.base.shape
        self.n_rows_target = k * n_t
        self.s_lo = self.n_arc + np.arange(k * n_t)
        self.s_hi = self.n_arc + k * n_t + np.arange(k * n_t)
        self.n_col = self.n_arc + 2 * k * n_t
        self.h = _quiet_highs()
        self._options()
        self._columns()
        self._rows(limits)

    def _options(self) -> None:
        for name, value in (
            ("output_flag", False),
            ("mip_rel_gap", 0.0),
            ("mip_abs_gap", 0.0),
            ("random_seed", SEED),
            ("threads", 1),
        ):
            self.h.setOptionValue(name, value)

    def _columns(self) -> None:
        inst = self.inst
        hard = inst.hard_max.ravel()
        finite_lo = np.isfinite(inst.lo).ravel()
        finite_hi = np.isfinite(inst.hi).ravel()
        upper = np.concatenate(
            [np.ones(self.n_arc), np.where(finite_lo, hard, 0.0), np.where(finite_hi, hard, 0.0)]
        )
        upper = np.where(np.isfinite(upper), upper, _INF)
        empty = np.zeros(0, dtype=np.int32)
        self.h.addCols(
            self.n_col, np.zeros(self.n_col), np.zeros(self.n_col), upper, 0, empty, empty, np.zeros(0)
        )
        if self.n_arc:
            idx = np.arange(self.n_arc, dtype=np.int32)
            self.h.changeColsIntegrality(self.n_arc, idx, np.ones(self.n_arc, dtype=np.uint8))

    def _rows(self, limits: Limits) -> None:
        inst = self.inst
        parts: list[Triplets] = []
        lower: list[FloatArray] = []
        upper: list[FloatArray] = []
        offset = 0
        for build in (self._account_rows, self._target_rows, self._capacity_rows):
            trip, lo, hi = build()
            parts.append(Triplets(trip.row + offset, trip.col, trip.val))
            lower.append(lo)
            upper.append(hi)
            offset += len(lo)
        trip, lo, hi = self._cap_rows(limits)
        parts.append(Triplets(trip.row + offset, trip.col, trip.val))
        lower.append(lo)
        upper.append(hi)
        offset += len(lo)
        self.row_total, self.row_violation, self.row_moves = offset, offset + 1, offset + 2
        disc = np.flatnonzero(~inst.orphan[inst.arc_acc])
        s_all = np.concatenate([self.s_lo, self.s_hi])
        parts.append(Triplets(np.full(len(disc), offset), disc, np.ones(len(disc))))
        parts.append(Triplets(np.full(len(s_all), offset + 1), s_all, np.ones(len(s_all))))
        parts.append(Triplets(np.full(len(disc), offset + 2), disc, inst.cost[inst.arc_acc[disc]]))
        total = _INF if limits.total is None else float(limits.total)
        lower.append(np.full(3, -_INF))
        upper.append(np.array([total, _INF, _INF]))
        self._add(parts, np.concatenate(lower), np.concatenate(upper))

    def _add(self, parts: list[Triplets], lower: FloatArray, upper: FloatArray) -> None:
        row = np.concatenate([p.row for p in parts]).astype(np.int64)
        col = np.concatenate([p.col for p in parts]).astype(np.int32)
        val = np.concatenate([p.val for p in parts]).astype(np.float64)
        keep = val != 0
        row, col, val = row[keep], col[keep], val[keep]
        order = np.lexsort((col, row))
        n_row = len(lower)
        starts = np.searchsorted(row[order], np.arange(n_row)).astype(np.int32)
        lower = np.where(np.isfinite(lower), lower, -_INF)
        upper = np.where(np.isfinite(upper), upper, _INF)
        self.h.addRows(n_row, lower, upper, len(val), starts, col[order], val[order])

    def _account_rows(self) -> tuple[Triplets, FloatArray, FloatArray]:
        inst = self.inst
        n = len(inst.acc)
        arcs = np.arange(self.n_arc)
        lower = np.where(inst.orphan, 1.0, 0.0)
        return Triplets(inst.arc_acc, arcs, np.ones(self.n_arc)), lower, np.ones(n)

    def _target_rows(self) -> tuple[Triplets, FloatArray, FloatArray]:
        inst = self.inst
        k, n_t = inst.base.shape
        arcs = np.arange(self.n_arc)
        a, t = inst.arc_acc, inst.arc_to
        f = inst.src[a]
        rows, cols, vals = [], [], []
        for q in range(k):
            rows.append(q * n_t + t)
            cols.append(arcs)
            vals.append(inst.contrib[q, a] / inst.scale[q, t])
            has = f >= 0
            rows.append(q * n_t + f[has])
            cols.append(arcs[has])
            vals.append(-inst.contrib[q, a[has]] / inst.scale[q, f[has]])
        idx = np.arange(k * n_t)
        rows += [idx, idx]
        cols += [self.s_lo, self.s_hi]
        vals += [np.ones(k * n_t), -np.ones(k * n_t)]
        lo = ((inst.lo - inst.base) / inst.scale).ravel()
        hi = ((inst.hi - inst.base) / inst.scale).ravel()
        trip = Triplets(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals))
        return trip, lo, hi

    def _capacity_rows(self) -> tuple[Triplets, FloatArray, FloatArray]:
        inst = self.inst
        n_t = len(inst.terr)
        cap = np.where(np.isfinite(inst.room), inst.base_work + inst.room, np.nan)
        norm = np.where(np.isfinite(cap) & (cap > 0), cap, 1.0)
        a, t = inst.arc_acc, inst.arc_to
        f = inst.src[a]
        arcs = np.arange(self.n_arc)
        has = f >= 0
        row = np.concatenate([t, f[has]])
        col = np.concatenate([arcs, arcs[has]])
        val = np.concatenate([inst.work[a] / norm[t], -inst.work[a[has]] / norm[f[has]]])
        upper = np.where(np.isfinite(inst.room), inst.room / norm, _INF)
        active = np.isfinite(inst.room)[row]
        return Triplets(row[active], col[active], val[active]), np.full(n_t, -_INF), upper

    def _cap_rows(self, limits: Limits) -> tuple[Triplets, FloatArray, FloatArray]:
        inst = self.inst
        n_t = len(inst.terr)
        if limits.per_territory is None:
            return Triplets(*(np.zeros(0, np.int64),) * 2, np.zeros(0)), np.zeros(0), np.zeros(0)
        disc = np.flatnonzero(~inst.orphan[inst.arc_acc])
        f = inst.src[inst.arc_acc[disc]]
        row = np.concatenate([f, n_t + inst.arc_to[disc]])
        col = np.concatenate([disc, disc])
        cap = float(limits.per_territory)
        return Triplets(row, col, np.ones(len(row))), np.full(2 * n_t, -_INF), np.full(2 * n_t, cap)

    def solution_of(self, chosen: IntArray) -> FloatArray:
        """The full column vector (arcs and distances) of a choice of arcs per candidate account."""
        inst = self.inst
        x = np.zeros(self.n_arc)
        x[chosen[chosen >= 0]] = 1.0
        values = inst.base.copy()
        sel = np.flatnonzero(x > 0.5)
        a, t, f = inst.arc_acc[sel], inst.arc_to[sel], inst.src[inst.arc_acc[sel]]
        for q in range(values.shape[0]):
            np.add.at(values[q], t, inst.contrib[q, a])
            np.add.at(values[q], f[f >= 0], -inst.contrib[q, a[f >= 0]])
        below = np.maximum(inst.lo - values, 0.0) / inst.scale
        above = np.maximum(values - inst.hi, 0.0) / inst.scale
        return np.concatenate([x, below.ravel(), above.ravel()])

    def chosen_of(self, columns: FloatArray) -> IntArray:
        """The arc chosen per candidate account (-1: stays) in a column vector."""
        chosen = np.full(len(self.inst.acc), -1, dtype=np.int64)
        picked = np.flatnonzero(columns[: self.n_arc] > 0.5)
        chosen[self.inst.arc_acc[picked]] = picked
        return chosen

    def stage(
        self, cost: FloatArray, time_limit: float, warm: IntArray | None, watch: Watch | None = None
    ) -> tuple[StageResult, IntArray | None]:
        """Minimise ``cost`` over the columns within ``time_limit`` seconds, warm-started from ``warm``;
        ``watch`` sees the incumbent and the bound as HiGHS proves them (rebalancer/progress.py).

        HiGHS 1.16 can hand back the warm-start vector with the objective of another solution after a
        presolved re-solve; a solution whose cost is not the reported objective is re-solved cold.
        """
        started = time.perf_counter()
        outcome = self._watched(cost, time_limit, warm, watch)
        if warm is not None and outcome[3] is not None and not self._consistent(cost, outcome[1]):
            outcome = self._watched(cost, time_limit - (time.perf_counter() - started), None, watch)
        status, objective, bound, found = outcome
        seconds = time.perf_counter() - started
        return StageResult(status, objective, min(bound, objective), seconds), found

    def _consistent(self, cost: FloatArray, objective: float) -> bool:
        columns = np.asarray(self.h.getSolution().col_value, dtype=np.float64)
        return abs(float(cost @ columns) - objective) <= 1e-6 * (1.0 + abs(objective))

    def _watched(
        self, cost: FloatArray, time_limit: float, warm: IntArray | None, watch: Watch | None
    ) -> tuple[str, float, float, IntArray | None]:
        """``_run`` with HiGHS' MIP callbacks feeding ``watch``: an improving solution hands over its
        columns, the periodic interrupt check only the bounds (the callbacks never interrupt)."""
        if watch is None:
            return self._run(cost, time_limit, warm)

        def improving(event: Any) -> None:
            out = event.data_out
            watch(out.mip_primal_bound, out.mip_dual_bound, np.asarray(out.mip_solution))

        def interrupt(event: Any) -> None:
            watch(event.data_out.mip_primal_bound, event.data_out.mip_dual_bound, None)

        self.h.cbMipImprovingSolution.subscribe(improving)
        self.h.cbMipInterrupt.subscribe(interrupt)
        try:
            return self._run(cost, time_limit, warm)
        finally:
            self.h.cbMipImprovingSolution.unsubscribe(improving)
            self.h.cbMipInterrupt.unsubscribe(interrupt)

    def _run(
        self, cost: FloatArray, time_limit: float, warm: IntArray | None
    ) -> tuple[str, float, float, IntArray | None]:
        h = self.h
        h.clearSolver()
        h.changeColsCost(self.n_col, np.arange(self.n_col, dtype=np.int32), cost)
        h.setOptionValue("time_limit", max(float(time_limit), 0.05))
        if warm is not None:
            h.setSolution(self.n_col, np.arange(self.n_col, dtype=np.int32), self.solution_of(warm))
        h.run()
        status = _status(h)
        info: Any = h.getInfo()
        if int(info.primal_solution_status) < 2:
            return status, float("inf"), float(info.mip_dual_bound), None
        columns = np.asarray(h.getSolution().col_value, dtype=np.float64)
        objective = float(info.objective_function_value)
        bound = float(info.mip_dual_bound) if status != "optimal" else objective
        return status, objective, bound, self.chosen_of(columns)

    def fix(self, row: int, upper: float) -> None:
        self.h.changeRowBounds(row, -_INF, upper)


def _status(h: highspy.Highs) -> str:
    status = h.getModelStatus()
    names = {
        highspy.HighsModelStatus.kOptimal: "optimal",
        highspy.HighsModelStatus.kTimeLimit: "time_limit",
        highspy.HighsModelStatus.kInfeasible: "infeasible",
        highspy.HighsModelStatus.kInterrupt: "interrupted",
    }
    return names.get(status, h.modelStatusToString(status).lower().replace(" ", "_"))


def instance_violation(inst: Instance, chosen: IntArray) -> float:
    """Total distance outside over the instance's territories after the chosen arcs."""
    values = inst.base.copy()
    for a in np.flatnonzero(chosen >= 0).tolist():
        arc = int(chosen[a])
        values[:, inst.arc_to[arc]] += inst.contrib[:, a]
        if inst.src[a] >= 0:
            values[:, inst.src[a]] -= inst.contrib[:, a]
    return float(violation_of(values, inst.lo, inst.hi, inst.scale).sum())
