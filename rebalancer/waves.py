"""Split the moves into waves: after every wave no territory is further outside any target than before
it, and no receiver is over capacity. Where the asked number of waves cannot keep that, fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from rebalancer.model import Compiled, violation_of
from rebalancer.problem import FloatArray, IntArray

DEFAULT_WAVES: Final = 3
WAVE_DAYS: Final = 30
_EPS: Final = 1e-9


@dataclass(frozen=True)
class WavePlan:
    """The wave (1-based) of each move, how many waves there are, and why fewer than asked if so."""

    wave: IntArray
    count: int
    note: str


class _Books:
    """Values and workload per territory as moves are applied."""

    def __init__(self, c: Compiled, owner: IntArray) -> None:
        self.c = c
        keep = owner >= 0
        self.values = np.array(
            [
                np.bincount(owner[keep], weights=t.contribution[keep], minlength=c.n_territories)
                for t in c.targets
            ]
        ).reshape(len(c.targets), c.n_territories)
        self.work = np.bincount(owner[keep], weights=c.workload[keep], minlength=c.n_territories).astype(
            float
        )
        self.lo, self.hi, self.scale = c.lo, c.hi, c.scale

    def move(self, account: int, src: int, dst: int, sign: int = 1) -> None:
        col = np.array([t.contribution[account] for t in self.c.targets])
        if len(col):
            self.values[:, dst] += sign * col
            if src >= 0:
                self.values[:, src] -= sign * col
        self.work[dst] += sign * self.c.workload[account]
        if src >= 0:
            self.work[src] -= sign * self.c.workload[account]

    def viol(self, cols: IntArray) -> FloatArray:
        v = self.values[:, cols]
        return violation_of(v, self.lo[:, cols], self.hi[:, cols], self.scale[:, cols])

    def over_capacity(self, t: int) -> bool:
        cap = self.c.capacity[t]
        return bool(np.isfinite(cap) and self.work[t] > cap * (1 + 1e-12) + _EPS)


def _ok(books: _Books, start: FloatArray, cols: IntArray, receivers: set[int]) -> bool:
    if np.any(books.viol(cols) > start[:, cols] + _EPS):
        return False
    return not any(books.over_capacity(t) for t in receivers)


def plan_waves(
    c: Compiled, owner: IntArray, moves: list[tuple[int, int, int]], waves: int = DEFAULT_WAVES
) -> WavePlan:
    """``moves`` are (account, from territory or -1, to territory) from the assignment ``owner``."""
    if not moves:
        return WavePlan(np.zeros(0, dtype=np.int64), 0, "")
    asked = max(1, waves)
    for n in range(min(asked, len(moves)), 0, -1):
        wave = _try(c, owner, moves, n)
        if wave is not None:
            note = "" if n == asked else _why(n, asked, len(moves))
            return WavePlan(wave, n, note)
    note = "even in one wave some territory ends further outside a band than it started"
    return WavePlan(np.ones(len(moves), dtype=np.int64), 1, note)


def _why(n: int, asked: int, count: int) -> str:
    if count < asked:
        return f"{count} moves make at most {count} waves"
    return (
        f"{asked} waves could not keep every territory from going further outside a band or a receiver "
        f"from going over capacity between waves; {n} can"
    )


def _try(c: Compiled, owner: IntArray, moves: list[tuple[int, int, int]], n: int) -> IntArray | None:
    books = _Books(c, owner)
    wave = np.zeros(len(moves), dtype=np.int64)
    order = sorted(range(len(moves)), key=lambda i: (moves[i][1] >= 0, i))  # orphans first
    remaining = list(order)
    for w in range(1, n + 1):
        start = books.viol(np.arange(c.n_territories))
        if w == n:
            taken = remaining
            for i in taken:
                books.move(*moves[i])
            cols = np.unique([x for i in taken for x in moves[i][1:] if x >= 0])
            if not _ok(books, start, cols.astype(np.int64), {moves[i][2] for i in taken}):
                return None
        else:
            taken = _fill(books, start, moves, remaining, math.ceil(len(remaining) / (n - w + 1)))
            if not taken:
                return None
        wave[taken] = w
        done = set(taken)
        remaining = [i for i in remaining if i not in done]
    return wave


def _fill(
    books: _Books, start: FloatArray, moves: list[tuple[int, int, int]], pool: list[int], size: int
) -> list[int]:
    """Moves from ``pool`` that keep the wave's property, up to ``size`` of them, in order."""
    taken: list[int] = []
    receivers: set[int] = set()
    for i in pool:
        account, src, dst = moves[i]
        books.move(account, src, dst)
        cols = np.array([x for x in (src, dst) if x >= 0], dtype=np.int64)
        if _ok(books, start, cols, {dst}):  # only the receiver's workload went up
            taken.append(i)
            receivers.add(dst)
            if len(taken) >= size:
                break
        else:
            books.move(account, src, dst, -1)
    return taken
