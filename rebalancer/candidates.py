"""The reduced candidate set of one group of regions: who may donate, who may receive, which arcs.

Breaching territories and their nearest neighbours (by home) are *involved*; each involved territory
offers its movable accounts nearest to its neighbours first, and each such account gets arcs to its
nearest receivers among them. Small orgs (up to ``NEIGHBOURS + 1`` territories a group and
``ACCOUNTS_PER_TERRITORY`` accounts a book) keep every movable account and every arc, so the solver's
answer is the exact optimum of the whole problem there; beyond that it is optimal over this set.
"""

from __future__ import annotations

import numpy as np

from monitor.metrics import haversine_km
from rebalancer.model import (
    ACCOUNTS_PER_TERRITORY,
    FREE,
    NEIGHBOURS,
    RECEIVERS_PER_ACCOUNT,
    Compiled,
    Instance,
    breaching,
    receivers,
)
from rebalancer.problem import BoolArray, FloatArray, IntArray, Secondary

_FAR_KM = 1.0e5
BREACHING_OFFER = 4  # a breaching territory offers this many times more accounts than a neighbour


def _home_km(c: Compiled, a: IntArray, b: IntArray) -> FloatArray:
    km = haversine_km(
        c.home_lat[a][:, None], c.home_lon[a][:, None], c.home_lat[b][None, :], c.home_lon[b][None, :]
    )
    return np.where(np.isfinite(km), km, _FAR_KM)


def _account_km(c: Compiled, accounts: IntArray, territories: IntArray) -> FloatArray:
    acc = c.problem.accounts
    km = haversine_km(
        acc.lat[accounts][:, None],
        acc.lon[accounts][:, None],
        c.home_lat[territories][None, :],
        c.home_lon[territories][None, :],
    )
    return np.where(np.isfinite(km), km, _FAR_KM)


def allowed_regions(c: Compiled) -> BoolArray:
    """(regions, regions): may an account of region i go to a rep of region j."""
    n = len(c.region_names)
    ok = np.eye(n, dtype=bool)
    code = {name: i for i, name in enumerate(c.region_names)}
    for a, b in c.scenario.neighbours:
        ok[code[a], code[b]] = ok[code[b], code[a]] = True
    return ok


def _neighbours(
    c: Compiled, involved: IntArray, recv: BoolArray, allowed: BoolArray, k: int
) -> list[IntArray]:
    """For each involved territory, its ``k`` nearest receivers among the involved (allowed regions)."""
    km = _home_km(c, involved, involved)
    ok = allowed[c.region[involved]][:, c.region[involved]] & recv[involved][None, :]
    np.fill_diagonal(ok, False)
    km = np.where(ok, km, np.inf)
    order = np.argsort(km, axis=1, kind="stable")[:, :k]
    return [involved[row[np.isfinite(km[i, row])]] for i, row in enumerate(order)]


def _involved(c: Compiled, group: IntArray, allowed: BoolArray, orphans: IntArray, k: int) -> IntArray:
    """Breaching territories of the group, their ``k`` nearest territories, and the orphans' receivers."""
    br = group[breaching(c)[group]]
    chosen = set(br.tolist())
    if len(br):
        km = _home_km(c, br, group)
        km = np.where(allowed[c.region[br]][:, c.region[group]], km, np.inf)
        for row in np.argsort(km, axis=1, kind="stable")[:, : k + 1]:
            chosen.update(group[row].tolist())
    recv = group[receivers(c)[group]]
    if len(orphans) and len(recv):
        km = _orphan_km(c, orphans, recv, allowed)
        for row in np.argsort(km, axis=1, kind="stable")[:, :RECEIVERS_PER_ACCOUNT]:
            chosen.update(recv[row].tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def _orphan_km(c: Compiled, orphans: IntArray, recv: IntArray, allowed: BoolArray) -> FloatArray:
    km = _account_km(c, orphans, recv)
    region = c.account_region[orphans]
    ok = np.where(region[:, None] >= 0, allowed[np.maximum(region, 0)][:, c.region[recv]], True)
    return np.where(ok, km, np.inf)


class _Movable:
    """The movable accounts of each territory, found once (an org has up to millions of accounts)."""

    def __init__(self, c: Compiled) -> None:
        free = np.flatnonzero((c.lock == FREE) & (c.owner >= 0))
        owner = c.owner[free]
        order = np.argsort(owner, kind="stable")
        self.accounts = free[order]
        self.cuts = np.searchsorted(owner[order], np.arange(c.n_territories + 1))

    def of(self, t: int) -> IntArray:
        return self.accounts[self.cuts[t] : self.cuts[t + 1]]


def _offer(c: Compiled, t: int, mine: IntArray, others: IntArray, per_territory: int) -> IntArray:
    """Movable accounts ``mine`` of territory ``t``, those nearest to its neighbours (vs home) first."""
    if len(mine) <= per_territory or len(others) == 0:
        return mine
    home = _account_km(c, mine, np.array([t]))[:, 0]
    near = _account_km(c, mine, others).min(axis=1)
    return mine[np.argsort(near - home, kind="stable")[:per_territory]]


def candidate_instance(
    c: Compiled,
    group: IntArray,
    *,
    neighbours: int = NEIGHBOURS,
    per_territory: int = ACCOUNTS_PER_TERRITORY,
    per_account: int = RECEIVERS_PER_ACCOUNT,
) -> Instance | None:
    """The candidate moves among the territories ``group`` (global indexes), or None: nothing to do."""
    allowed = allowed_regions(c)
    group_regions = np.unique(c.region[group])
    # An orphan of an unknown owner may go anywhere; the group of the first territory takes it.
    unknown = (c.account_region < 0) & bool(np.any(group == 0))
    orphan_mask = (c.owner < 0) & (np.isin(c.account_region, group_regions) | unknown)
    orphans = np.flatnonzero(orphan_mask)
    involved = _involved(c, group, allowed, orphans, neighbours)
    if len(involved) == 0:
        return None
    recv = receivers(c)
    near = _neighbours(c, involved, recv, allowed, neighbours)
    brs = set(np.flatnonzero(breaching(c)).tolist())
    extra: dict[int, set[int]] = {int(t): set() for t in involved}
    for t, ns in zip(involved.tolist(), near, strict=True):
        if t in brs and recv[t]:
            for v in ns.tolist():
                extra[v].add(t)  # a breaching receiver is reachable from each of its neighbours
    accounts: list[IntArray] = [orphans]
    arcs_from: list[IntArray] = []
    arcs_to: list[IntArray] = []
    recv_inv = involved[recv[involved]]
    movable = _Movable(c)
    if len(orphans) and len(recv_inv):
        km = _orphan_km(c, orphans, recv_inv, allowed)
        order = np.argsort(km, axis=1, kind="stable")[:, :per_account]
        rows = np.repeat(orphans, order.shape[1])
        keep = np.isfinite(np.take_along_axis(km, order, axis=1)).ravel()
        arcs_from.append(rows[keep])
        arcs_to.append(recv_inv[order].ravel()[keep])
    for t, ns in zip(involved.tolist(), near, strict=True):
        targets = np.array(sorted(set(ns.tolist()) | extra[t]), dtype=np.int64)
        offer = _offer(c, t, movable.of(t), targets, per_territory * (BREACHING_OFFER if t in brs else 1))
        if len(offer) == 0 or len(targets) == 0:
            continue
        accounts.append(offer)
        km = _account_km(c, offer, targets)
        order = np.argsort(km, axis=1, kind="stable")[:, :per_account]
        forced = np.isin(targets, np.array(sorted(extra[t] & brs), dtype=np.int64))
        picked = np.zeros(km.shape, dtype=bool)
        np.put_along_axis(picked, order, True, axis=1)
        picked |= forced[None, :]
        r, col = np.nonzero(picked)
        arcs_from.append(offer[r])
        arcs_to.append(targets[col])
    return _instance(
        c,
        involved,
        np.concatenate(accounts),
        np.concatenate(arcs_from or [np.zeros(0, np.int64)]),
        np.concatenate(arcs_to or [np.zeros(0, np.int64)]),
    )


def _secondary(c: Compiled, acc: IntArray, to: IntArray, km: FloatArray) -> FloatArray:
    """Third-goal cost per arc (global account, global receiver), in comparable units."""
    aim = c.scenario.secondary
    problem = c.problem
    if aim is Secondary.travel:
        return np.where(np.isfinite(km), km, 1000.0) / 1000.0
    if aim is Secondary.industry_fit:
        ind = problem.accounts.industry
        keys = np.array(
            [f"{o}|{i}" for o, i in zip(c.owner.tolist(), ind.tolist(), strict=True)], dtype=object
        )
        uniq, counts = np.unique(keys, return_counts=True)
        lookup = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
        held = np.array(
            [lookup.get(f"{t}|{ind[a]}", 0) for a, t in zip(acc.tolist(), to.tolist(), strict=True)]
        )
        return 1.0 / (1.0 + held)
    if aim is Secondary.strategic_spread:
        strategic = problem.accounts.tier == "strategic"
        per = np.bincount(c.owner[c.owner >= 0], weights=strategic[c.owner >= 0], minlength=c.n_territories)
        return np.where(strategic[acc], per[to] / max(float(per.mean()), 1.0), 0.0)
    return np.zeros(len(acc))


def _instance(c: Compiled, terr: IntArray, acc: IntArray, arc_a: IntArray, arc_t: IntArray) -> Instance:
    """Local index arrays for the accounts ``acc`` and arcs (global account, global territory)."""
    acc = np.unique(acc)
    local_t = np.full(c.n_territories, -1, dtype=np.int64)
    local_t[terr] = np.arange(len(terr))
    local_a = {int(a): i for i, a in enumerate(acc.tolist())}
    keep = arc_t != c.owner[arc_a]
    arc_a, arc_t = arc_a[keep], arc_t[keep]
    pair = np.unique(np.stack([arc_a, arc_t]), axis=1) if len(arc_a) else np.zeros((2, 0), np.int64)
    arc_a, arc_t = pair[0], pair[1]
    problem = c.problem
    km = haversine_km(
        problem.accounts.lat[arc_a], problem.accounts.lon[arc_a], c.home_lat[arc_t], c.home_lon[arc_t]
    )
    src = np.where(c.owner[acc] >= 0, local_t[np.maximum(c.owner[acc], 0)], -1)
    base_work = c.base_workload[terr]
    room = np.where(receivers(c)[terr], c.capacity[terr] - base_work, -np.inf)
    # No territory ends further outside any target than it started (tier ranges, bands and limits):
    # that is what makes the waves possible, and no rep's book is pushed out of its band.
    viol = c.violation(c.base)[:, terr] if c.targets else np.zeros((0, len(terr)))
    orphan = c.owner[acc] < 0
    contrib = np.array([t.contribution[acc] for t in c.targets]).reshape(len(c.targets), len(acc))
    return Instance(
        compiled=c,
        terr=terr,
        acc=acc,
        src=src.astype(np.int64),
        arc_acc=np.array([local_a[int(a)] for a in arc_a.tolist()], dtype=np.int64),
        arc_to=local_t[arc_t].astype(np.int64),
        arc_km=km,
        arc_secondary=_secondary(c, arc_a, arc_t, km),
        contrib=contrib,
        base=c.base[:, terr],
        lo=c.lo[:, terr],
        hi=c.hi[:, terr],
        scale=c.scale[:, terr],
        hard_max=viol,
        work=c.workload[acc],
        base_work=base_work,
        room=room,
        cost=np.where(orphan, 0.0, c.weight[acc]),
        orphan=orphan,
    )


def split(inst: Instance) -> list[Instance]:
    """The instance cut into its independent parts: territories linked by no arc share no constraint
    (the bands are fixed numbers), so each part is solved alone and the parts in parallel."""
    n_t = len(inst.terr)
    parent = np.arange(n_t)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    src = inst.src[inst.arc_acc]
    first_to = np.full(len(inst.acc), -1, dtype=np.int64)
    for a, f, t in zip(inst.arc_acc.tolist(), src.tolist(), inst.arc_to.tolist(), strict=True):
        other = f if f >= 0 else int(first_to[a])
        if first_to[a] < 0:
            first_to[a] = t
        if other >= 0:
            parent[find(other)] = find(t)
    roots = np.array([find(i) for i in range(n_t)])
    has_arc = np.zeros(n_t, dtype=bool)
    has_arc[inst.arc_to] = True
    has_arc[src[src >= 0]] = True
    parts = [np.flatnonzero((roots == r) & has_arc) for r in np.unique(roots[has_arc])]
    if len(parts) <= 1:
        return [inst]
    return [_part(inst, p) for p in parts]


def _part(inst: Instance, terr: IntArray) -> Instance:
    """The sub-instance on local territories ``terr`` and the arcs among them."""
    local = np.full(len(inst.terr), -1, dtype=np.int64)
    local[terr] = np.arange(len(terr))
    keep_arc = local[inst.arc_to] >= 0
    accounts = np.unique(inst.arc_acc[keep_arc])
    acc_local = np.full(len(inst.acc), -1, dtype=np.int64)
    acc_local[accounts] = np.arange(len(accounts))
    src = inst.src[accounts]
    return Instance(
        compiled=inst.compiled,
        terr=inst.terr[terr],
        acc=inst.acc[accounts],
        src=np.where(src >= 0, local[np.maximum(src, 0)], -1),
        arc_acc=acc_local[inst.arc_acc[keep_arc]],
        arc_to=local[inst.arc_to[keep_arc]],
        arc_km=inst.arc_km[keep_arc],
        arc_secondary=inst.arc_secondary[keep_arc],
        contrib=inst.contrib[:, accounts],
        base=inst.base[:, terr],
        lo=inst.lo[:, terr],
        hi=inst.hi[:, terr],
        scale=inst.scale[:, terr],
        hard_max=inst.hard_max[:, terr],
        work=inst.work[accounts],
        base_work=inst.base_work[terr],
        room=inst.room[terr],
        cost=inst.cost[accounts],
        orphan=inst.orphan[accounts],
    )
