"""Shared helpers of the rebalancer tests: small random problems, a brute force, a hard-constraint check."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from rebalancer.candidates import allowed_regions
from rebalancer.model import FREE, Compiled, compile_problem
from rebalancer.problem import Account, Band, Limit, Problem, Scenario, Territory, TierRange, account_table

AS_OF = dt.date(2026, 11, 1)
TIERS = ("strategic", "growth", "core")
TOUCHES = {"strategic": 12.0, "growth": 6.0, "core": 2.0}


@st.composite
def problems(draw: st.DrawFn, max_accounts: int = 12, territories: int = 4, max_free: int = 7) -> Problem:
    """A random org: ``territories`` reps in one or two regions, up to ``max_accounts`` accounts."""
    n_t = territories
    two_regions = draw(st.booleans())
    reps = []
    for i in range(n_t):
        region = "B" if two_regions and i >= n_t // 2 else "A"
        capacity = draw(st.sampled_from([None, 20.0, 30.0, 40.0, 60.0])) if i else 60.0
        reps.append(
            Territory(
                owner_id=f"r{i}",
                name=f"Rep {i}",
                region=region,
                capacity=capacity,
                home_lat=draw(st.floats(40.0, 41.0)),
                home_lon=draw(st.floats(-74.0, -73.0)),
                active=draw(st.booleans()) if i == n_t - 1 and n_t > 2 else True,
            )
        )
    n = draw(st.integers(1, max_accounts))
    accounts = []
    free = 0
    for j in range(n):
        owner = draw(st.integers(0, n_t - 1))
        locked = free >= max_free or draw(st.integers(0, 3)) == 0
        free += 0 if locked else 1
        how = draw(st.sampled_from(["protected", "tenure", "undated", "deal"])) if locked else "free"
        tier = draw(st.sampled_from(TIERS))
        months_ago = 12 if how == "tenure" else draw(st.integers(0, 5))
        start = None if how == "undated" else AS_OF - dt.timedelta(days=30 * months_ago + 1)
        accounts.append(
            Account(
                id=f"a{j}",
                name=f"Account {j}",
                owner_id=f"r{owner}",
                contributions={
                    "potential": float(draw(st.integers(0, 100))),
                    "arr": float(draw(st.integers(0, 50))),
                    "workload": TOUCHES[tier],
                },
                tier=tier,
                lat=draw(st.floats(40.0, 41.0)),
                lon=draw(st.floats(-74.0, -73.0)),
                tenure_start=start,
                max_open_probability=0.7 if how == "deal" else 0.2,
                protected=how == "protected",
            )
        )
    return Problem(as_of=AS_OF, territories=tuple(reps), accounts=account_table(accounts))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    bands = [Band("potential", draw(st.sampled_from([0.1, 0.2, 0.3])))]
    if draw(st.booleans()):
        bands.append(Band("accounts", draw(st.sampled_from([0.25, 0.5]))))
    tiers = (TierRange("growth", 0, draw(st.integers(1, 4))),) if draw(st.booleans()) else ()
    return Scenario(
        name="test",
        bands=tuple(bands),
        limits=(Limit("utilization", 1.0),),
        tier_ranges=tiers,
        max_moves_per_territory=draw(st.sampled_from([None, 1, 2])),
        max_moves=draw(st.sampled_from([None, None, 2])),
        neighbours=(("A", "B"),) if draw(st.booleans()) else (),
        tenure_lock_months=draw(st.sampled_from([0, 6])),
    )


def values(c: Compiled, owner: np.ndarray) -> np.ndarray:
    """(targets, territories) under an assignment (rows of ``owner`` for many at once: (n, targets, t))."""
    owner = np.atleast_2d(owner)
    out = np.zeros((owner.shape[0], len(c.targets), c.n_territories))
    for q, target in enumerate(c.targets):
        for a in range(owner.shape[1]):
            ok = owner[:, a] >= 0
            out[np.flatnonzero(ok), q, owner[ok, a]] += target.contribution[a]
    return out


def workload(c: Compiled, owner: np.ndarray) -> np.ndarray:
    owner = np.atleast_2d(owner)
    out = np.zeros((owner.shape[0], c.n_territories))
    for a in range(owner.shape[1]):
        ok = owner[:, a] >= 0
        out[np.flatnonzero(ok), owner[ok, a]] += c.workload[a]
    return out


def hard_ok(c: Compiled, owner: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Per assignment (rows of ``owner``): does it keep every hard constraint of docs/rebalancer.md."""
    owner = np.atleast_2d(owner)
    base = c.owner
    moved = owner != base[None, :]
    ok = ~np.any(moved & (c.lock != FREE)[None, :], axis=1)  # locked accounts stay
    ok &= np.all(owner >= 0, axis=1)  # orphans are placed
    allowed = allowed_regions(c)
    src_region = c.account_region
    dst_region = c.region[np.maximum(owner, 0)]
    region_ok = np.where(
        src_region[None, :] >= 0, allowed[np.maximum(src_region, 0)[None, :], dst_region], True
    )
    ok &= ~np.any(moved & ~region_ok, axis=1)
    work = workload(c, owner)
    before_work = workload(c, base[None, :])[0]
    cap = c.capacity
    received = np.zeros_like(work, dtype=bool)
    for a in range(owner.shape[1]):
        received[np.flatnonzero(moved[:, a]), owner[moved[:, a], a]] = True
    can = np.isfinite(cap) & (cap > 0) & (before_work <= cap)
    ok &= ~np.any(received & ~can[None, :], axis=1)
    ok &= ~np.any(received & (work > np.nan_to_num(cap, nan=0.0)[None, :] * (1 + tol) + tol), axis=1)
    disc = moved & (base >= 0)[None, :]
    per = c.scenario.max_moves_per_territory
    if per is not None:
        for t in range(c.n_territories):
            ok &= (disc & (base == t)[None, :]).sum(axis=1) <= per
            ok &= (disc & (owner == t)).sum(axis=1) <= per
    if c.scenario.max_moves is not None:
        ok &= disc.sum(axis=1) <= c.scenario.max_moves
    viol = c.violation(values(c, owner))
    start = c.violation(values(c, base[None, :]))
    ok &= np.all(viol <= start + tol, axis=(1, 2))
    return np.asarray(ok)


@dataclass(frozen=True)
class Optimum:
    violation: float
    moves: float  # weighted moves at that violation
    curve: dict[int, float]  # smallest violation with at most k discretionary moves


def brute_force(problem: Problem, scenario: Scenario) -> Optimum | None:
    """Every assignment of the movable accounts; None when no assignment keeps the hard constraints."""
    c = compile_problem(problem, scenario)
    n = len(problem.accounts)
    options = []
    for a in range(n):
        if c.owner[a] >= 0 and c.lock[a] != FREE:
            options.append([int(c.owner[a])])
        elif c.owner[a] >= 0:
            options.append([int(c.owner[a]), *[t for t in range(c.n_territories) if t != c.owner[a]]])
        else:
            options.append(list(range(c.n_territories)))
    combos = np.array(list(itertools.product(*options)), dtype=np.int64).reshape(-1, n)
    ok = hard_ok(c, combos)
    if not ok.any():
        return None
    combos = combos[ok]
    viol = c.violation(values(c, combos)).sum(axis=(1, 2))
    disc = (combos != c.owner[None, :]) & (c.owner >= 0)[None, :]
    moves = (disc * c.weight[None, :]).sum(axis=1)
    best = float(viol.min())
    at_best = viol <= best + 1e-7
    count = disc.sum(axis=1)
    curve = {k: float(viol[count <= k].min()) for k in range(int(count.max()) + 1) if (count <= k).any()}
    return Optimum(best, float(moves[at_best].min()), curve)
