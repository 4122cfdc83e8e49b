"""Words from numbers: a rationale per move, the risks of a proposal, what blocks a territory.

Pure: the compiled problem and the assignments before and after in, sentences out.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from monitor.metrics import haversine_km
from rebalancer.candidates import allowed_regions
from rebalancer.model import FREE, Compiled, Target, receivers, violation_of
from rebalancer.problem import FloatArray, IntArray, full_months

RECENT_WIN_DAYS: Final = 90


def money(value: float) -> str:
    """1,234,567 -> "1.2M"; 34,500 -> "34.5k"."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.1f}M"
    if size >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def _name(c: Compiled, t: int) -> str:
    return c.problem.territories[int(c.territory[t])].name


def _main_target(c: Compiled, before: FloatArray, cols: list[int]) -> int | None:
    """The target most outside at the given territories before the moves (bands first)."""
    if not c.targets:
        return None
    viol = violation_of(before[:, cols], c.lo[:, cols], c.hi[:, cols], c.scale[:, cols]).max(axis=1)
    if viol.max() <= 0:
        return 0
    return int(np.argmax(viol))


def _position(target: Target, value: float, t: int) -> str:
    if target.kind == "band":
        return f"{value / target.scale[t]:.2f}x the mean"
    if target.kind == "limit" and target.metric == "utilization":
        return f"utilization {value / (target.hi[t] / target.tolerance):.0%}"
    return f"{value:.0f} {target.metric.replace('_', ' ')}"


def _why_account(c: Compiled, a: int, months: int) -> str:
    acc = c.problem.accounts
    parts = [f"{acc.tier[a]}", f"potential {money(float(acc.contributions['potential'][a]))}"]
    prob = float(np.nan_to_num(acc.max_open_probability[a]))
    parts.append("no open deal" if prob <= 0 else f"open deals at most {prob:.0%}, below the deal lock")
    if months >= 0:
        parts.append(f"{months} months with the current owner")
    return ", ".join(parts)


def _why_receiver(c: Compiled, a: int, t: int, work_before: FloatArray, work_after: FloatArray) -> str:
    acc = c.problem.accounts
    km = haversine_km(acc.lat[a : a + 1], acc.lon[a : a + 1], c.home_lat[t : t + 1], c.home_lon[t : t + 1])
    where = f"{float(km[0]):.0f} km from home" if np.isfinite(km[0]) else "distance unknown"
    cap = c.capacity[t]
    if not np.isfinite(cap) or cap <= 0:
        return where
    return f"{where}, utilization {work_before[t] / cap:.0%} -> {work_after[t] / cap:.0%}"


def workloads(c: Compiled, owner: IntArray) -> FloatArray:
    """Touches per territory under an assignment."""
    keep = owner >= 0
    return np.bincount(owner[keep], weights=c.workload[keep], minlength=c.n_territories).astype(np.float64)


def rationale(
    c: Compiled,
    a: int,
    move: tuple[int, int],
    values: tuple[FloatArray, FloatArray],
    work: tuple[FloatArray, FloatArray],
) -> str:
    """One sentence for moving account ``a`` along ``move`` (from -1: an orphan), with the values per
    (target, territory) and the workload per territory before and after the proposal."""
    acc = c.problem.accounts
    months = int(full_months(acc.tenure_start[a : a + 1], c.problem.as_of)[0])
    src, dst = move
    before, after = values
    receiver = _why_receiver(c, a, dst, *work)
    cols = [x for x in (src, dst) if x >= 0]
    q = _main_target(c, before, cols)
    effect = ""
    if q is not None:
        target = c.targets[q]
        label = target.metric.replace("_", " ")
        ends = [
            f"{_name(c, t)} {_position(target, before[q, t], t)} -> {_position(target, after[q, t], t)}"
            for t in cols
        ]
        effect = f"; {label}: " + ", ".join(ends)
    if src < 0:
        who = f"{acc.names[a]} has no owner (its owner is inactive or removed)"
        return f"{who}; it goes to {_name(c, dst)} ({receiver}){effect}."
    why = _why_account(c, a, months)
    return f"{acc.names[a]} ({why}) goes from {_name(c, src)} to {_name(c, dst)} ({receiver}){effect}."


def risks(c: Compiled, moved: IntArray) -> list[tuple[str, int, str, float]]:
    """(kind, account, detail, amount) for each risk of moving the accounts ``moved``."""
    acc = c.problem.accounts
    months = full_months(acc.tenure_start[moved], c.problem.as_of)
    day = np.datetime64(c.problem.as_of, "D")
    out: list[tuple[str, int, str, float]] = []
    for i, a in enumerate(moved.tolist()):
        if months[i] >= 1:
            out.append(("tenure", a, f"{months[i]} months with the current owner", float(months[i])))
        pipe = float(acc.contributions["open_pipeline"][a])
        if pipe > 0:
            out.append(("open_pipeline", a, f"{money(pipe)} open pipeline changes hands", pipe))
        won = acc.last_won[a]
        if not np.isnat(won) and day - won <= np.timedelta64(RECENT_WIN_DAYS, "D") and won <= day:
            out.append(("recent_win", a, f"won {int((day - won).astype(int))} days ago", 0.0))
        if acc.tier[a] == "strategic":
            out.append(("strategic", a, "strategic account", 0.0))
    return out


def blocked(c: Compiled, owner_after: IntArray, after: FloatArray) -> list[str]:
    """For each territory left outside a target, what stands in the way, with numbers."""
    if not c.targets:
        return []
    viol = c.violation(after)
    recv = receivers(c)
    allowed = allowed_regions(c)
    out: list[str] = []
    for q, t in zip(*np.nonzero(viol > 0), strict=True):
        out.append(_blocked_one(c, int(q), int(t), owner_after, after, recv, allowed))
    return out


def _blocked_one(
    c: Compiled, q: int, t: int, owner: IntArray, after: FloatArray, recv: np.ndarray, allowed: np.ndarray
) -> str:
    target = c.targets[q]
    name, label = _name(c, t), target.metric.replace("_", " ")
    value = after[q, t]
    mine = owner == t
    locked = float(target.contribution[mine & (c.lock != FREE)].sum())
    region = c.region_names[int(c.region[t])]
    if value > target.hi[t]:
        share = locked / value if value > 0 else 0.0
        if locked > target.hi[t]:
            floor = _position(target, locked, t)
            locks = "is protected, tenure- or deal-locked"
            return f"{name}: {share:.0%} of its {label} {locks}, so it cannot go below {floor}"
        peers = np.flatnonzero(allowed[c.region[t]][c.region] & recv)
        if not len(peers[peers != t]):
            return f"{region}: no receiver with capacity left for {name}"
        where = _position(target, value, t)
        return (
            f"{name}: {label} at {where}; no allowed move brings it down without another territory going out"
        )
    if not recv[t]:
        where = _position(target, value, t)
        return f"{name}: over capacity or without a capacity, so it receives nothing and stays at {where}"
    room = c.capacity[t] - float(c.workload[mine].sum())
    where = _position(target, value, t)
    return f"{name}: {label} at {where}; {room:.0f} touches of room, no movable account of a neighbour fits"
