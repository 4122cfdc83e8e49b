"""The solver's progress while it runs: the best solution known, its proven bound, the time left.

The parts of a solve (rebalancer/propose.py) report into one :class:`Tracker` from their threads. A
part starts at its band violation before any move and no moves; the heuristic's solution, then every
improving solution and bound HiGHS reports from its MIP callbacks, then each stage's result update it.
The figures summed over the parts are the quantities the finished proposal reports (the band
violation and the weighted moves of docs/rebalancer.md, "Goal"), never an estimate: a bound is only
ever a proven one, and it is 0 until a stage has proven more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from rebalancer.problem import FloatArray

EVERY: Final = 0.1  # seconds between two reports to the observer (a finished part always reports)


@dataclass(frozen=True)
class Progress:
    """One look at a running solve, org-wide."""

    phase: str  # "solve" (the lexicographic stages) or "curve" (the trade-off sweep)
    done: int  # parts finished in this phase
    parts: int
    violation: float  # band violation of the best solutions known
    violation_bound: float  # proven lower bound on the band violation
    moves: float  # (weighted) discretionary moves of the best solutions known
    moves_bound: float  # proven lower bound on them, once the moves stage has proven one
    seconds_left: float


Observer = Callable[[Progress], None]
# A HiGHS stage as it runs: (primal bound, dual bound, the columns of an improving solution or None).
Watch = Callable[[float, float, FloatArray | None], None]


class Tracker:
    """The parts' figures under one lock; the observer sees them at most every ``EVERY`` seconds."""

    def __init__(
        self, observer: Observer | None, deadline: float, bases: Sequence[float], outside: float
    ) -> None:
        self.observer = observer
        self.deadline = deadline
        self.outside = outside  # violation of the territories no part can change
        self.violation = np.asarray(bases, dtype=np.float64).copy()
        self.violation_bound = np.zeros(len(bases))
        self.moves = np.zeros(len(bases))
        self.moves_bound = np.zeros(len(bases))
        self.phase, self.done, self.curve_parts = "solve", 0, 0
        self._lock = threading.Lock()
        self._last = -np.inf

    def part(self, k: int) -> Part:
        return Part(self, k)

    def curve(self, done: int, parts: int, deadline: float) -> None:
        """The trade-off sweep has finished ``done`` of its ``parts``."""
        with self._lock:
            self.phase, self.done, self.deadline = "curve", done, deadline
            self.curve_parts = parts
            self._emit(force=True)

    def solution(self, k: int, violation: float | None, moves: float) -> None:
        """A solution of part ``k``: it replaces the known one when its violation is smaller, or equal
        with fewer moves (``violation`` None: a moves-stage solution, at the violation already fixed)."""
        with self._lock:
            if violation is None:
                self.moves[k] = min(float(self.moves[k]), moves)
            elif violation < self.violation[k] - 1e-9 or (
                violation <= self.violation[k] + 1e-9 and moves < self.moves[k]
            ):
                self.violation[k], self.moves[k] = violation, moves
            self._emit(force=False)

    def bound(self, k: int, name: str, value: float) -> None:
        """A proven bound of part ``k`` (``violation_bound`` or ``moves_bound``), only ever raised."""
        with self._lock:
            if np.isfinite(value):
                column: FloatArray = getattr(self, name)
                column[k] = max(float(column[k]), value)
            self._emit(force=False)

    def finished(self, k: int, violation: float, moves: float, moves_bound: float) -> None:
        """Part ``k``'s answer, which replaces whatever it reported while it ran."""
        with self._lock:
            self.violation[k], self.moves[k] = violation, moves
            self.moves_bound[k] = max(float(self.moves_bound[k]), moves_bound)
            self.done += 1
            self._emit(force=True)

    def _emit(self, *, force: bool) -> None:
        now = time.perf_counter()
        if self.observer is None or (not force and now - self._last < EVERY):
            return
        self._last = now
        parts = self.curve_parts if self.phase == "curve" else len(self.violation)
        self.observer(
            Progress(
                self.phase,
                self.done,
                parts,
                max(self.outside + float(self.violation.sum()), 0.0),  # rounding: never below 0
                max(self.outside + float(np.minimum(self.violation_bound, self.violation).sum()), 0.0),
                float(self.moves.sum()),
                float(np.minimum(self.moves_bound, self.moves).sum()),
                max(self.deadline - now, 0.0),
            )
        )


class Part:
    """What one part's solve reports: its solutions, each stage's live figures, its end."""

    def __init__(self, tracker: Tracker, k: int) -> None:
        self.tracker, self.k = tracker, k

    def solution(self, violation: float | None, moves: float) -> None:
        """A solution found outside HiGHS' callbacks (the heuristic's, a stage's result); ``violation``
        None: a moves-stage solution, at the violation already fixed."""
        self.tracker.solution(self.k, violation, moves)

    def proven(self, name: str, value: float) -> None:
        """A stage's proven bound: ``violation_bound`` or ``moves_bound``."""
        self.tracker.bound(self.k, name, value)

    def watch(self, stage: str, moves_cost: FloatArray) -> Watch | None:
        """The callback for HiGHS while ``stage`` ("violation" or "moves") runs, ``moves_cost`` giving
        a violation-stage solution's moves; None when nobody watches, so an unobserved solve
        subscribes to no callback at all."""
        if self.tracker.observer is None or stage not in ("violation", "moves"):
            return None
        tracker, k = self.tracker, self.k

        def seen(primal: float, dual: float, columns: FloatArray | None) -> None:
            if columns is not None and np.isfinite(primal):
                if stage == "violation":
                    tracker.solution(k, primal, float(moves_cost @ columns))
                else:
                    tracker.solution(k, None, primal)
            tracker.bound(k, f"{stage}_bound", dual)

        return seen

    def finished(self, violation: float, moves: float, moves_bound: float) -> None:
        """The part's answer: its violation and moves, and the moves' proven bound."""
        self.tracker.finished(self.k, violation, moves, moves_bound)


def unwatched() -> Part:
    """A part nobody watches: it keeps its figures and reports nothing."""
    return Tracker(None, 0.0, [0.0], 0.0).part(0)
