"""From a problem and a scenario to index arrays: targets, locks, candidates and arcs.

``compile_problem`` turns the records into arrays over the active territories; ``candidate_instance``
reduces one group of regions to the accounts and receivers that can matter (docs/rebalancer.md,
"Candidate set"). Everything downstream (heuristic, solver, waves) works on an :class:`Instance`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from rebalancer.problem import (
    ADDITIVE_METRICS,
    UTILIZATION,
    BoolArray,
    FloatArray,
    IntArray,
    MoveWeight,
    Problem,
    Scenario,
    full_months,
)

# Why an account may not move (``Compiled.lock``).
FREE: Final = 0
PROTECTED: Final = 1
TENURE: Final = 2
UNDATED: Final = 3
DEAL: Final = 4
LOCK_NAMES: Final = ("free", "protected", "tenure-locked", "undated tenure", "deal-locked")

NEIGHBOURS: Final = 8  # territories next to a breaching one that join the candidate set
ACCOUNTS_PER_TERRITORY: Final = 80  # movable accounts per involved territory, border accounts first
RECEIVERS_PER_ACCOUNT: Final = 6  # nearest receivers per candidate account


@dataclass(frozen=True, eq=False)
class Target:
    """One balance target per territory: ``lo <= value <= hi``, distance outside measured in ``scale``."""

    name: str  # "band:potential", "limit:utilization", "tier:strategic"
    kind: str  # band | limit | tier
    metric: str
    contribution: FloatArray  # per account
    lo: FloatArray  # per territory (-inf: no lower end)
    hi: FloatArray  # per territory (inf: no upper end)
    scale: FloatArray  # per territory, > 0
    hard: bool  # tier ranges: no territory may end further outside than it started
    tolerance: float = 0.0  # bands: the tolerance; limits: the maximum


@dataclass(frozen=True, eq=False)
class Compiled:
    """The whole org as arrays: territories are the active ones, in the problem's order."""

    problem: Problem
    scenario: Scenario
    territory: IntArray  # index into problem.territories of each active territory
    region: IntArray  # region code per territory
    region_names: tuple[str, ...]
    group: IntArray  # connected group of regions (neighbours) per region code
    owner: IntArray  # territory of each account, -1: orphan
    account_region: IntArray  # region code of the account's (last) owner, -1: unknown
    lock: IntArray  # per account, FREE or why it stays
    weight: FloatArray  # cost of moving each account (second goal)
    targets: tuple[Target, ...]
    base: FloatArray  # (targets, territories): values before any move
    workload: FloatArray  # touches per account
    capacity: FloatArray  # per territory, NaN: unknown
    base_workload: FloatArray  # per territory
    home_lat: FloatArray
    home_lon: FloatArray

    @property
    def n_territories(self) -> int:
        return len(self.territory)

    def violation(self, values: FloatArray) -> FloatArray:
        """Per (target, territory) the relative distance outside, for values of shape like ``base``."""
        return violation_of(values, self.lo, self.hi, self.scale)

    @functools.cached_property
    def lo(self) -> FloatArray:
        return np.array([t.lo for t in self.targets]).reshape(len(self.targets), -1)

    @functools.cached_property
    def hi(self) -> FloatArray:
        return np.array([t.hi for t in self.targets]).reshape(len(self.targets), -1)

    @functools.cached_property
    def scale(self) -> FloatArray:
        return np.array([t.scale for t in self.targets]).reshape(len(self.targets), -1)


def violation_of(values: FloatArray, lo: FloatArray, hi: FloatArray, scale: FloatArray) -> FloatArray:
    """``(max(0, lo - v) + max(0, v - hi)) / scale`` elementwise, with a hair of float tolerance."""
    below = np.maximum(lo - values, 0.0)
    above = np.maximum(values - hi, 0.0)
    out = (below + above) / scale
    return np.where(out > 1e-9, out, 0.0)


def _contribution(problem: Problem, metric: str) -> FloatArray:
    acc = problem.accounts
    key = ADDITIVE_METRICS["workload" if metric == UTILIZATION else metric]
    if metric == "accounts":
        return np.ones(len(acc))
    if metric == "strategic_accounts":
        return np.asarray(acc.tier == "strategic", dtype=np.float64)
    return np.asarray(np.nan_to_num(acc.contributions[key], nan=0.0), dtype=np.float64)


def _sums(owner: IntArray, values: FloatArray, n: int) -> FloatArray:
    keep = owner >= 0
    return np.bincount(owner[keep], weights=values[keep], minlength=n).astype(np.float64)


def _targets(problem: Problem, scenario: Scenario, owner: IntArray, capacity: FloatArray) -> list[Target]:
    n = len(capacity)
    out: list[Target] = []
    inf = np.full(n, np.inf)
    for band in scenario.bands:
        c = _contribution(problem, band.metric)
        # Every proposal assigns the orphans, so the mean after the moves counts every account.
        mean = float(c.sum()) / n if n else 0.0
        if mean <= 0:
            continue  # a band around 0 is not defined (the monitor's rule never fires either)
        lo, hi = np.full(n, mean * (1 - band.tolerance)), np.full(n, mean * (1 + band.tolerance))
        scale = np.full(n, mean)
        out.append(
            Target(f"band:{band.metric}", "band", band.metric, c, lo, hi, scale, False, band.tolerance)
        )
    for limit in scenario.limits:
        c = _contribution(problem, limit.metric)
        if limit.metric == UTILIZATION:
            cap = np.where(np.isfinite(capacity) & (capacity > 0), capacity, np.nan)
            hi = np.where(np.isfinite(cap), limit.maximum * cap, np.inf)
            scale = np.where(np.isfinite(cap), np.maximum(limit.maximum * cap, 1e-9), 1.0)
        else:
            hi = np.full(n, limit.maximum)
            scale = np.full(n, max(abs(limit.maximum), 1e-9))
        name = f"limit:{limit.metric}"
        out.append(Target(name, "limit", limit.metric, c, -inf, hi, scale, False, limit.maximum))
    for tr in scenario.tier_ranges:
        c = (problem.accounts.tier == tr.tier).astype(np.float64)
        hi = inf if tr.maximum is None else np.full(n, float(tr.maximum))
        lo = np.full(n, float(tr.minimum))
        scale = np.full(n, float(max(tr.minimum, 1)))
        out.append(Target(f"tier:{tr.tier}", "tier", f"{tr.tier}_accounts", c, lo, hi, scale, True))
    return out


def _locks(problem: Problem, scenario: Scenario, orphan: BoolArray) -> IntArray:
    acc = problem.accounts
    lock = np.full(len(acc), FREE, dtype=np.int64)
    if scenario.tenure_lock_months > 0:
        months = full_months(acc.tenure_start, problem.as_of)
        lock[months >= scenario.tenure_lock_months] = TENURE
        lock[np.isnat(acc.tenure_start)] = UNDATED
    lock[np.nan_to_num(acc.max_open_probability, nan=0.0) >= scenario.deal_lock_probability] = DEAL
    lock[acc.protected] = PROTECTED
    lock[orphan] = FREE  # an orphan's owner is gone: it must move, under the receivers' constraints
    return lock


def _weights(problem: Problem, scenario: Scenario, lock: IntArray) -> FloatArray:
    acc = problem.accounts
    n = len(acc)
    if scenario.move_weight is MoveWeight.arr:
        arr = np.nan_to_num(acc.contributions["arr"], nan=0.0)
        free = lock == FREE
        mean = float(arr[free].mean()) if free.any() else 0.0
        return 1.0 + (arr / mean if mean > 0 else np.zeros(n))
    if scenario.move_weight is MoveWeight.tenure:
        months = full_months(acc.tenure_start, problem.as_of)
        return 1.0 + np.maximum(months, 0) / 12.0
    return np.ones(n)


def _region_groups(names: tuple[str, ...], pairs: tuple[tuple[str, str], ...]) -> IntArray:
    """Connected components of the neighbour relation (regions not named stand alone)."""
    parent = list(range(len(names)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    code = {n: i for i, n in enumerate(names)}
    for a, b in pairs:
        if a in code and b in code:
            parent[find(code[a])] = find(code[b])
    return np.array([find(i) for i in range(len(names))], dtype=np.int64)


def compile_problem(problem: Problem, scenario: Scenario) -> Compiled:
    """Index arrays of ``problem`` under ``scenario``; the means are over its active territories."""
    terr = problem.territories
    active = np.array([i for i, t in enumerate(terr) if t.active], dtype=np.int64)
    names = tuple(sorted({t.region for t in terr} | {r for p in scenario.neighbours for r in p}))
    region_code = {n: i for i, n in enumerate(names)}
    all_ids = pd.Index([t.owner_id for t in terr])
    owner_ids = pd.Index(problem.accounts.owner_ids)
    which = np.asarray(all_ids.get_indexer(owner_ids), dtype=np.int64)  # -1: no such owner
    position = np.full(len(terr) + 1, -1, dtype=np.int64)
    position[active] = np.arange(len(active))
    owner = position[which]  # which = -1 reads the last slot, -1
    regions = np.array([region_code[t.region] for t in terr] + [-1], dtype=np.int64)
    account_region = regions[which]
    capacity = np.array([np.nan if terr[i].capacity is None else terr[i].capacity for i in active], float)
    targets = _targets(problem, scenario, owner, capacity)
    n = len(active)
    base = np.array([_sums(owner, t.contribution, n) for t in targets]).reshape(len(targets), n)
    lock = _locks(problem, scenario, owner < 0)
    workload = _contribution(problem, "workload")

    def coord(values: list[float | None]) -> FloatArray:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    return Compiled(
        problem=problem,
        scenario=scenario,
        territory=active,
        region=np.array([region_code[terr[i].region] for i in active], dtype=np.int64),
        region_names=names,
        group=_region_groups(names, scenario.neighbours),
        owner=owner,
        account_region=account_region,
        lock=lock,
        weight=_weights(problem, scenario, lock),
        targets=tuple(targets),
        base=base,
        workload=workload,
        capacity=capacity,
        base_workload=_sums(owner, workload, n),
        home_lat=coord([terr[i].home_lat for i in active]),
        home_lon=coord([terr[i].home_lon for i in active]),
    )


@dataclass(frozen=True, eq=False)
class Instance:
    """One group of regions reduced to its candidate moves; local territory indexes 0..len(terr)-1."""

    compiled: Compiled
    terr: IntArray  # global territory index of each local territory
    acc: IntArray  # global account index of each candidate account
    src: IntArray  # local territory of each candidate account, -1: orphan
    arc_acc: IntArray  # local account of each arc
    arc_to: IntArray  # local receiving territory of each arc
    arc_km: FloatArray  # receiver's home to the account (NaN: unknown)
    arc_secondary: FloatArray  # third-goal cost of each arc
    contrib: FloatArray  # (targets, candidate accounts)
    base: FloatArray  # (targets, local territories)
    lo: FloatArray
    hi: FloatArray
    scale: FloatArray
    hard_max: FloatArray  # (targets, local territories): largest violation allowed (inf: soft)
    work: FloatArray  # touches per candidate account
    base_work: FloatArray  # per local territory
    room: FloatArray  # capacity - base workload per local territory (-inf: receives nothing)
    cost: FloatArray  # per candidate account: move weight, 0 for orphans
    orphan: BoolArray


def breaching(c: Compiled) -> BoolArray:
    """Territories outside a band or limit, or outside a tier range."""
    if not c.targets:
        return np.zeros(c.n_territories, dtype=bool)
    return np.asarray(c.violation(c.base).sum(axis=0) > 0)


def receivers(c: Compiled) -> BoolArray:
    """Territories that may receive: a known capacity and utilization at most 1.0 before any move."""
    cap = c.capacity
    return np.isfinite(cap) & (cap > 0) & (c.base_workload <= cap * (1 + 1e-12))
