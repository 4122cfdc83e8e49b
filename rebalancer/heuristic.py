"""A fast first proposal: orphans placed, greedy transfers, two-move look-ahead (swaps and chains), clean-up.

It works on the same candidate arcs and hard constraints as the solver and gives it a warm start; it
never replaces the solver's answer or bound. A single-move greedy gets stuck where one move over-shoots
a band and two moves (a swap, or a chain through a third territory) fix it, hence the look-ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from rebalancer.model import Instance, violation_of
from rebalancer.problem import BoolArray, FloatArray, IntArray

_EPS: Final = 1e-9
_LOOKAHEAD_FIRST: Final = 40  # first moves tried per stuck territory in the two-move look-ahead
_LOOKAHEAD_TERRITORIES: Final = 6


@dataclass
class State:
    """The books during the search: values per (target, territory), workload, moves made."""

    values: FloatArray
    work: FloatArray
    chosen: IntArray  # arc chosen per candidate account, -1: stays
    out_count: IntArray
    in_count: IntArray
    total: int


@dataclass(frozen=True)
class Limits:
    """The move caps of the scenario (None: no cap)."""

    per_territory: int | None
    total: int | None


class Heuristic:
    """The search over one instance; ``run`` returns the chosen arc per candidate account."""

    def __init__(self, inst: Instance, limits: Limits) -> None:
        self.inst = inst
        self.limits = limits
        n_t = len(inst.terr)
        self.state = State(
            values=inst.base.copy(),
            work=inst.base_work.copy(),
            chosen=np.full(len(inst.acc), -1, dtype=np.int64),
            out_count=np.zeros(n_t, dtype=np.int64),
            in_count=np.zeros(n_t, dtype=np.int64),
            total=0,
        )
        self.arc_from = inst.src[inst.arc_acc]
        self.cap = inst.base_work + inst.room  # -inf where the territory receives nothing

    def violation(self, columns: IntArray | None = None) -> float:
        """Total distance outside over the instance's territories (or the given ones)."""
        inst, v = self.inst, self.state.values
        cols = slice(None) if columns is None else columns
        return float(violation_of(v[:, cols], inst.lo[:, cols], inst.hi[:, cols], inst.scale[:, cols]).sum())

    def _side(self, terr: IntArray, change: FloatArray) -> tuple[FloatArray, BoolArray]:
        """Violation change of territories ``terr`` by ``change`` (targets x arcs), and hard feasibility."""
        inst, v = self.inst, self.state.values[:, terr]
        lo, hi, sc = inst.lo[:, terr], inst.hi[:, terr], inst.scale[:, terr]
        new = violation_of(v + change, lo, hi, sc)
        ok = np.all(new <= inst.hard_max[:, terr] + 1e-9, axis=0)
        return new.sum(axis=0) - violation_of(v, lo, hi, sc).sum(axis=0), ok

    def delta(self, arcs: IntArray) -> FloatArray:
        """Change of the total violation if each arc were applied now; inf where not allowed."""
        inst, st = self.inst, self.state
        a, t, f = inst.arc_acc[arcs], inst.arc_to[arcs], self.arc_from[arcs]
        c = inst.contrib[:, a]
        d, ok = self._side(t, c)
        has_f = f >= 0
        ff = np.maximum(f, 0)
        df, okf = self._side(ff, -c)
        d = d + np.where(has_f, df, 0.0)
        ok &= okf | ~has_f
        ok &= st.chosen[a] < 0
        ok &= st.work[t] + inst.work[a] <= self.cap[t] + 1e-9
        discretionary = ~inst.orphan[a]
        cap_t = self.limits.per_territory
        if cap_t is not None:
            ok &= ~discretionary | ((st.out_count[ff] < cap_t) & (st.in_count[t] < cap_t))
        if self.limits.total is not None and st.total >= self.limits.total:
            ok &= ~discretionary
        return np.where(ok, d, np.inf)

    def apply(self, arc: int, sign: int = 1) -> None:
        """Make (sign 1) or undo (sign -1) the move of ``arc``."""
        inst, st = self.inst, self.state
        a, t, f = int(inst.arc_acc[arc]), int(inst.arc_to[arc]), int(self.arc_from[arc])
        st.values[:, t] += sign * inst.contrib[:, a]
        st.work[t] += sign * inst.work[a]
        if f >= 0:
            st.values[:, f] -= sign * inst.contrib[:, a]
            st.work[f] -= sign * inst.work[a]
        st.chosen[a] = arc if sign > 0 else -1
        if not inst.orphan[a]:
            st.in_count[t] += sign
            if f >= 0:
                st.out_count[f] += sign
            st.total += sign

    def place_orphans(self) -> bool:
        """Every orphan to its best allowed receiver, heaviest first; False when one has none."""
        inst = self.inst
        orphans = np.flatnonzero(inst.orphan)
        by_acc = np.argsort(inst.arc_acc, kind="stable")
        starts = np.searchsorted(inst.arc_acc[by_acc], np.arange(len(inst.acc) + 1))
        for a in orphans[np.argsort(-inst.work[orphans], kind="stable")].tolist():
            arcs = by_acc[starts[a] : starts[a + 1]]
            if len(arcs) == 0:
                return False
            d = self.delta(arcs) + 1e-6 * inst.arc_secondary[arcs]
            best = int(np.argmin(d))
            if not np.isfinite(d[best]):
                return False
            self.apply(int(arcs[best]))
        return True

    def greedy(self) -> None:
        """Best violation reduction per unit of move cost, until no single move reduces it.

        Each round makes the best move of as many territory pairs as it can at once: moves that share
        no territory and no account do not change each other's effect, so a batch equals making them
        one by one, in far fewer rounds on a large org.
        """
        inst = self.inst
        arcs = np.flatnonzero(~inst.orphan[inst.arc_acc])
        if len(arcs) == 0:
            return
        cost = np.maximum(inst.cost[inst.arc_acc[arcs]], 1e-9)
        d = self.delta(arcs)
        touching = _Touching(self.arc_from[arcs], inst.arc_to[arcs], len(inst.terr))
        while True:
            score = np.where(d < -_EPS, d / cost, np.inf) + 1e-9 * inst.arc_secondary[arcs]
            picked = self._batch(arcs, score)
            if not picked:
                return
            for j in picked:
                self.apply(int(arcs[j]))
            if self.limits.total is not None and self.state.total >= self.limits.total:
                d = self.delta(arcs)
                continue
            touched = {
                int(x) for j in picked for x in (self.arc_from[arcs[j]], inst.arc_to[arcs[j]]) if x >= 0
            }
            redo = touching.of(sorted(touched))
            moved = np.flatnonzero(np.isin(inst.arc_acc[arcs], inst.arc_acc[arcs[picked]]))
            redo = np.union1d(redo, moved)
            d[redo] = self.delta(arcs[redo])

    def _batch(self, arcs: IntArray, score: FloatArray) -> list[int]:
        """Positions of the best improving moves that share no territory and no account."""
        inst = self.inst
        k = min(len(score), 4 * len(inst.terr) + 1)
        top = np.argpartition(score, k - 1)[:k] if k < len(score) else np.arange(len(score))
        top = top[np.argsort(score[top], kind="stable")]
        top = top[np.isfinite(score[top])]
        room = None if self.limits.total is None else self.limits.total - self.state.total
        used_t: set[int] = set()
        used_a: set[int] = set()
        picked: list[int] = []
        for j in top.tolist():
            f, t, a = int(self.arc_from[arcs[j]]), int(inst.arc_to[arcs[j]]), int(inst.arc_acc[arcs[j]])
            if f in used_t or t in used_t or a in used_a:
                continue
            picked.append(j)
            used_t.update((f, t))
            used_a.add(a)
            if room is not None and len(picked) >= room:
                break
        return picked

    def lookahead(self) -> bool:
        """One improving pair of moves around the worst territories (a swap or a chain); True if made."""
        inst = self.inst
        per = violation_of(self.state.values, inst.lo, inst.hi, inst.scale).sum(axis=0)
        discretionary = np.flatnonzero(~inst.orphan[inst.arc_acc])
        for t in np.argsort(-per, kind="stable")[:_LOOKAHEAD_TERRITORIES].tolist():
            if per[t] <= _EPS:
                return False
            near = discretionary[(self.arc_from[discretionary] == t) | (inst.arc_to[discretionary] == t)]
            d1 = self.delta(near)
            firsts = near[np.argsort(d1, kind="stable")[:_LOOKAHEAD_FIRST]]
            for first in firsts[np.isfinite(self.delta(firsts))].tolist():
                if self._pair(first, discretionary):
                    return True
        return False

    def _pair(self, first: int, arcs: IntArray) -> bool:
        """Make ``first`` and the best second move if together they reduce the violation."""
        inst = self.inst
        cols = np.array([x for x in (int(self.arc_from[first]), int(inst.arc_to[first])) if x >= 0])
        before = self.violation(cols)
        self.apply(first)
        second_pool = arcs[np.isin(self.arc_from[arcs], cols) | np.isin(inst.arc_to[arcs], cols)]
        d2 = self.delta(second_pool)
        j = int(np.argmin(d2)) if len(d2) else -1
        gain = before - self.violation(cols)
        if j >= 0 and np.isfinite(d2[j]) and gain - d2[j] > _EPS:
            self.apply(int(second_pool[j]))
            return True
        self.apply(first, -1)
        return False

    def clean_up(self) -> None:
        """Undo every discretionary move whose undoing does not increase the violation."""
        inst = self.inst
        changed = True
        while changed:
            changed = False
            moved = np.flatnonzero((self.state.chosen >= 0) & ~inst.orphan)
            for a in moved[np.argsort(-inst.cost[moved], kind="stable")].tolist():
                arc = int(self.state.chosen[a])
                cols = np.array([x for x in (int(self.arc_from[arc]), int(inst.arc_to[arc])) if x >= 0])
                before = self.violation(cols)
                self.apply(arc, -1)
                f = int(self.arc_from[arc])
                over = f >= 0 and self.state.work[f] > self.cap[f] + 1e-9
                hard = np.any(self._hard_excess(cols))
                if self.violation(cols) > before + 1e-12 or over or hard:
                    self.apply(arc)
                else:
                    changed = True

    def _hard_excess(self, cols: IntArray) -> BoolArray:
        inst, v = self.inst, self.state.values[:, cols]
        viol = violation_of(v, inst.lo[:, cols], inst.hi[:, cols], inst.scale[:, cols])
        return np.asarray(viol > inst.hard_max[:, cols] + 1e-9)

    def run(self, rounds: int = 50) -> IntArray | None:
        """The chosen arc per candidate account, or None when an orphan cannot be placed."""
        if not self.place_orphans():
            return None
        self.greedy()
        for _ in range(rounds):
            if self.violation() <= _EPS or not self.lookahead():
                break
            self.greedy()
        self.clean_up()
        return self.state.chosen.copy()


class _Touching:
    """Arcs (positions) whose donor or receiver is a given territory."""

    def __init__(self, arc_from: IntArray, arc_to: IntArray, n: int) -> None:
        self.by = [np.zeros(0, dtype=np.int64)] * n
        index = np.arange(len(arc_from), dtype=np.int64)
        for column in (arc_from, arc_to):
            ok = column >= 0
            order = np.argsort(column[ok], kind="stable")
            sorted_t = column[ok][order]
            cuts = np.searchsorted(sorted_t, np.arange(n + 1))
            idx = index[ok][order]
            for t in range(n):
                if cuts[t + 1] > cuts[t]:
                    self.by[t] = np.union1d(self.by[t], idx[cuts[t] : cuts[t + 1]])

    def of(self, territories: list[int]) -> IntArray:
        parts = [self.by[t] for t in territories]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def heuristic(inst: Instance, limits: Limits, rounds: int = 50) -> IntArray | None:
    """The heuristic's chosen arc per candidate account (-1: stays), or None if orphans cannot be placed.

    ``rounds`` bounds the two-move look-ahead (0: greedy and clean-up only, for the curve's points).
    """
    return Heuristic(inst, limits).run(rounds)
