"""Benchmark: the rebalancer on sandbox-shaped orgs with a given number of drifting territories.

Targets (issue 11): 5,000 accounts / 50 territories / 8 drifting proven optimal in under 10 s;
50,000 / 200 / 10% a proposal in under 30 s within 5% of the bound, its trade-off curve in under 60 s;
1,000,000 / 2,000 / 5% a proposal in under 120 s and 4 GB peak RSS, with its gap. Side by side: the
heuristic alone, and a from-scratch re-alignment (how many accounts it would move).

The accounts, reps, locations, tiers, values, pipeline and tenures are the sandbox generator's
(``generate_org``); the books are then re-drawn balanced (largest load first to the rep of the region
with the least, load = potential and ARR each over its mean, counts capped) with capacity at 80%
utilization, and ``drifting`` territories are
made to drift: pairs of neighbouring reps where 35% of one book went to the other recently (those
accounts' tenure starts 60 days before D, so they may move). The few territories the draft itself
leaves outside a band are fixed first by the rebalancer with every lock off, so the drifting ones are
exactly the drifted ones. The solve runs in a child process so that
its peak RSS counts the rebalancer only, not the generator.

    .venv/bin/python -m bench.rebalance [--sizes small,medium,large] [--seed N] [--time-limit S]
        [--compare] [--observer-overhead PAIRS]

``--observer-overhead PAIRS`` solves each org PAIRS more times, alternately without and with the
progress line of `territory propose` (rebalancer/progress.py behind the CLI's live status), and prints
both times, the reports the line received and the median ratio of the pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import heapq
import io
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from bench.rss import peak_rss_mib
from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from monitor.drift import DEFAULT_RULES
from monitor.metrics import haversine_km
from rebalancer.frames import problem_of
from rebalancer.highs import instance_violation
from rebalancer.model import Compiled, compile_problem
from rebalancer.problem import Problem, Scenario
from rebalancer.propose import propose, total_violation
from rebalancer.scenarios import bands_from_rules
from service.cli.render import solving  # imported before any timing, as the CLI has it imported

SIZES = {
    "small": (5_000, 50, 8),
    "medium": (50_000, 200, 20),
    "large": (1_000_000, 2_000, 100),
}
AS_OF = DEFAULT_NOW.date()
DRIFT_SHARE = 0.35


def default_scenario() -> Scenario:
    bands, limits = bands_from_rules(DEFAULT_RULES)
    return Scenario("default", bands, limits)


def _lpt(potential: np.ndarray, reps: np.ndarray, cap: int) -> np.ndarray:
    """Largest load first to the rep with the least load so far, at most ``cap`` accounts each."""
    heap = [(0.0, int(r)) for r in reps]
    heapq.heapify(heap)
    count = dict.fromkeys(reps.tolist(), 0)
    out = np.empty(len(potential), dtype=np.int64)
    for i in np.argsort(-potential, kind="stable").tolist():
        while True:
            total, r = heapq.heappop(heap)
            if count[r] < cap:
                break
        out[i] = r
        count[r] += 1
        heapq.heappush(heap, (total + float(potential[i]), r))
    return out


def balanced_books(problem: Problem) -> np.ndarray:
    """Owner index (into territories) per account: a balanced draft within each region."""
    terr = problem.territories
    index = {t.owner_id: i for i, t in enumerate(terr)}
    region = np.array([terr[index[o]].region for o in problem.accounts.owner_ids.tolist()], dtype=object)
    owner = np.empty(len(region), dtype=np.int64)
    potential = problem.accounts.contributions["potential"]
    arr = problem.accounts.contributions["arr"]
    load = potential / max(float(potential.mean()), 1e-9) + arr / max(float(arr.mean()), 1e-9)
    for name in sorted(set(region.tolist())):
        reps = np.array([i for i, t in enumerate(terr) if t.region == name and t.active], dtype=np.int64)
        mine = np.flatnonzero(region == name)
        cap = int(np.ceil(len(mine) / len(reps) * 1.1))
        owner[mine] = _lpt(load[mine], reps, cap)
    return owner


def polished_books(problem: Problem, owner: np.ndarray, time_limit: float) -> np.ndarray:
    """The draft with the territories it leaves outside a band fixed by the rebalancer, locks off."""
    ids = np.array([t.owner_id for t in problem.territories], dtype=object)
    draft = Problem(
        problem.as_of, problem.territories, dataclasses.replace(problem.accounts, owner_ids=ids[owner])
    )
    unlocked = dataclasses.replace(default_scenario(), tenure_lock_months=0, deal_lock_probability=1.01)
    proposal = propose(draft, unlocked, time_limit=time_limit, with_curve=False)
    active = np.array([i for i, t in enumerate(problem.territories) if t.active], dtype=np.int64)
    return active[proposal.assignment]


def _pairs(problem: Problem, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` disjoint pairs of neighbouring active reps of one region (over, under)."""
    terr = problem.territories
    free = [i for i, t in enumerate(terr) if t.active]
    rng.shuffle(free)
    used: set[int] = set()
    out: list[tuple[int, int]] = []
    lat = np.array([t.home_lat or 0.0 for t in terr])
    lon = np.array([t.home_lon or 0.0 for t in terr])
    for i in free:
        if len(out) >= count or i in used:
            continue
        peers = [j for j in free if j not in used and j != i and terr[j].region == terr[i].region]
        if not peers:
            continue
        km = haversine_km(np.full(len(peers), lat[i]), np.full(len(peers), lon[i]), lat[peers], lon[peers])
        j = peers[int(np.argmin(km))]
        used.update((i, j))
        out.append((i, j))
    return out


def drifting_org(accounts: int, reps: int, drifting: int, seed: int) -> Problem:
    """The benchmark org: the sandbox's accounts, balanced books, ``drifting`` territories drifted."""
    org = generate_org(accounts, reps, seed, DEFAULT_NOW)
    problem = problem_of(org.owners, org.accounts, org.opportunities, org.assignments, AS_OF)
    terr = problem.territories
    acc = problem.accounts
    draft = balanced_books(problem)
    base_touches = np.bincount(draft, weights=acc.contributions["workload"], minlength=len(terr))
    capacity = [float(max(round(base_touches[i] / 0.8), 1)) for i in range(len(terr))]
    territories = tuple(dataclasses.replace(t, capacity=capacity[i]) for i, t in enumerate(terr))
    problem = Problem(AS_OF, territories, acc)
    owner = polished_books(problem, draft, 60.0)
    rng = np.random.default_rng(seed)
    tenure = acc.tenure_start.copy()
    for over, under in _pairs(problem, drifting // 2, rng):
        book = np.flatnonzero((owner == under) & ~acc.protected)
        moved = rng.choice(book, size=int(len(book) * DRIFT_SHARE), replace=False)
        owner[moved] = over
        tenure[moved] = np.datetime64(AS_OF - dt.timedelta(days=60), "D")
    ids = np.array([t.owner_id for t in terr], dtype=object)
    table = dataclasses.replace(acc, owner_ids=ids[owner], tenure_start=tenure)
    return Problem(AS_OF, territories, table)


def _nearest(problem: Problem, c: Compiled, mine: np.ndarray, reps: np.ndarray, k: int) -> np.ndarray:
    """For each account of ``mine``, its ``k`` nearest reps of ``reps`` (nearest first), in chunks."""
    acc = problem.accounts
    k = min(k, len(reps))
    out = np.empty((len(mine), k), dtype=np.int64)
    for start in range(0, len(mine), 20_000):
        part = mine[start : start + 20_000]
        km = haversine_km(
            acc.lat[part][:, None],
            acc.lon[part][:, None],
            c.home_lat[reps][None, :],
            c.home_lon[reps][None, :],
        )
        km = np.nan_to_num(km, nan=1e9)
        near = (
            np.argpartition(km, k - 1, axis=1)[:, :k]
            if k < len(reps)
            else np.tile(np.arange(len(reps)), (len(part), 1))
        )
        order = np.argsort(np.take_along_axis(km, near, axis=1), axis=1)
        out[start : start + len(part)] = reps[np.take_along_axis(near, order, axis=1)]
    return out


def realignment_moves(problem: Problem, scenario: Scenario) -> int:
    """Accounts a from-scratch geographic re-alignment would move: each account, largest first, to the
    nearest of its 30 nearest reps (of its region) whose book is still under the mean potential and
    count, else to the region's lightest book."""
    c = compile_problem(problem, scenario)
    potential = problem.accounts.contributions["potential"]
    n_t = c.n_territories
    limit_p, limit_n = float(potential.sum()) / n_t, int(np.ceil(len(potential) / n_t))
    load, count = np.zeros(n_t), np.zeros(n_t, dtype=np.int64)
    moved = 0
    for region in np.unique(c.region).tolist():
        reps = np.flatnonzero(c.region == region)
        mine = np.flatnonzero(c.account_region == region)
        near = _nearest(problem, c, mine, reps, 30)
        for k in np.argsort(-potential[mine], kind="stable").tolist():
            a = int(mine[k])
            pick = next((int(r) for r in near[k] if load[r] < limit_p and count[r] < limit_n), -1)
            pick = pick if pick >= 0 else int(reps[np.argmin(load[reps])])
            load[pick] += potential[a]
            count[pick] += 1
            moved += int(pick != c.owner[a])
    return moved


def compare_solvers(problem: Problem, scenario: Scenario, time_limit: float) -> None:
    """HiGHS and CP-SAT on the same instances (the groups of regions), one after the other."""
    from bench.cpsat import CpsatModel
    from rebalancer.candidates import candidate_instance
    from rebalancer.heuristic import Limits
    from rebalancer.propose import _groups
    from rebalancer.solve import solve_instance

    c = compile_problem(problem, scenario)
    limits = Limits(scenario.max_moves_per_territory, scenario.max_moves)
    totals = {"highs": np.zeros(4), "cp-sat": np.zeros(4)}
    statuses: dict[str, set[str]] = {"highs": set(), "cp-sat": set()}
    for group in _groups(c):
        inst = candidate_instance(c, group)
        if inst is None:
            continue
        started = time.perf_counter()
        h = solve_instance(inst, limits, time_limit)
        seconds = time.perf_counter() - started
        violation = instance_violation(inst, h.chosen) if h.chosen is not None else float("inf")
        totals["highs"] += (h.moves.objective, h.moves.bound, violation, seconds)
        statuses["highs"].add(h.moves.status)
        r = CpsatModel(inst, limits).solve(time_limit)
        totals["cp-sat"] += (r.moves, r.bound, r.violation, r.seconds)
        statuses["cp-sat"].add(r.status.lower())
    for key, (moves, bound, violation, seconds) in totals.items():
        print(
            f"  {key:>6}: {moves:.0f} moves, bound {bound:.1f}, violation {violation:.3f}, "
            f"{seconds:.1f} s, status {'/'.join(sorted(statuses[key]))}"
        )


def child(path: str, time_limit: float, curve: bool, observe: bool) -> None:
    """The measuring process: solve the pickled problem and print one JSON line. With ``observe`` the
    solve is watched as `territory propose` watches it on a terminal: the CLI's status line, live on a
    forced terminal that writes to memory, fed by the HiGHS callbacks."""
    problem = pickle.loads(Path(path).read_bytes())  # noqa: S301 - the benchmark's own file
    scenario = default_scenario()
    started = time.perf_counter()
    with _watching(observe, time_limit) as observer:
        proposal = propose(problem, scenario, time_limit=time_limit, with_curve=False, observer=observer)
    seconds = time.perf_counter() - started
    report = {
        "seconds": seconds,
        "status": proposal.status,
        "moves": proposal.objective.moves,
        "orphans": proposal.orphans,
        "violation_before": proposal.band_violation_before,
        "violation_after": proposal.objective.band_violation,
        "solver": dataclasses.asdict(proposal.solver),
        "heuristic": dataclasses.asdict(proposal.heuristic),
        "waves": proposal.waves,
        "peak_rss_mib": peak_rss_mib(),
        "reports": observer.reports if observer is not None else 0,
    }
    if curve:
        from rebalancer.propose import tradeoff

        started = time.perf_counter()
        points = tradeoff(problem, scenario, proposal.objective.moves, 2 * time_limit)
        report["curve_seconds"] = time.perf_counter() - started
        report["curve"] = [dataclasses.asdict(p) for p in points]
    print(json.dumps(report))


class _Counting:
    """The CLI's status line as the observer, counting the reports it is handed."""

    def __init__(self, status: Any) -> None:
        self.status, self.reports = status, 0

    def __call__(self, progress: Any) -> None:
        self.reports += 1
        self.status(progress)


@contextlib.contextmanager
def _watching(observe: bool, time_limit: float) -> Iterator[_Counting | None]:
    if not observe:
        yield None
        return
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with solving("default", time_limit, quiet=False, console=console) as status:
        yield _Counting(status)


def _solve_child(problem_path: str, time_limit: float, *flags: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.rebalance",
            "--child",
            problem_path,
            "--time-limit",
            str(time_limit),
            *flags,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def observer_overhead(problem_path: str, time_limit: float, repeat: int) -> None:
    """The same solve without and with the progress line, alternately ``repeat`` times: the medians and
    the median of the pairs' ratios (each pair run back to back, so they share the machine's load)."""
    plain, watched, ratios = [], [], []
    for _ in range(repeat):
        a = _solve_child(problem_path, time_limit)
        b = _solve_child(problem_path, time_limit, "--observe")
        plain.append(a["seconds"])
        watched.append(b["seconds"])
        ratios.append(b["seconds"] / a["seconds"])
        print(
            f"  without the line: {a['moves']} moves, {a['solver']['status']}, {a['seconds']:.2f} s; "
            f"with it: {b['moves']} moves, {b['solver']['status']}, {b['seconds']:.2f} s, "
            f"{b['reports']} reports"
        )
    print(
        f"progress line overhead: median {statistics.median(plain):.2f} s without, "
        f"{statistics.median(watched):.2f} s with, median ratio {statistics.median(ratios):.3f} "
        f"over {repeat} pairs"
    )


def run_size(name: str, seed: int, time_limit: float, compare: bool, overhead: int) -> None:
    accounts, reps, drifting = SIZES[name]
    started = time.perf_counter()
    problem = drifting_org(accounts, reps, drifting, seed)
    scenario = default_scenario()
    c = compile_problem(problem, scenario)
    breaching = int((c.violation(c.base).sum(axis=0) > 0).sum())
    print(f"\n== {name}: {accounts:,} accounts, {reps:,} reps, {drifting} made to drift (seed {seed})")
    print(f"org built in {time.perf_counter() - started:.1f} s; {breaching} territories outside a band")
    print(f"band violation before: {total_violation(c, c.owner):.3f}")
    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        f.write(pickle.dumps(problem))
    report = _solve_child(f.name, time_limit, *(["--curve"] if name != "large" else []))
    _print(report)
    if overhead:
        observer_overhead(f.name, time_limit, overhead)
    Path(f.name).unlink()
    print(f"from-scratch re-alignment would move {realignment_moves(problem, scenario):,} accounts")
    if compare:
        print("solvers on the same instances (sequential; CP-SAT with 2 workers, HiGHS 1 thread):")
        compare_solvers(problem, scenario, time_limit)


def _print(r: dict[str, Any]) -> None:
    s, h = r["solver"], r["heuristic"]
    print(
        f"proposal: {r['status']}, {r['moves']} moves (+{r['orphans']} orphans) in {r['seconds']:.1f} s, "
        f"violation {r['violation_before']:.3f} -> {r['violation_after']:.3f}, waves {r['waves']}"
    )
    print(
        f"solver {s['name']}: {s['status']}, bound {s['bound']:.1f}, gap {s['optimality_gap']:.2%}, "
        f"violation bound {s['violation_bound']:.3f}"
    )
    print(f"heuristic alone: {h['moves']} moves, violation {h['band_violation']:.3f}, {h['seconds']:.2f} s")
    print(f"peak RSS of the solving process: {r['peak_rss_mib']:.0f} MiB")
    if "curve" in r:
        points = r["curve"]
        text = ", ".join(
            f"k={p['max_moves']}: {p['band_violation']:.3f} (>= {p['bound']:.3f})" for p in points
        )
        print(f"trade-off curve in {r['curve_seconds']:.1f} s: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="small,medium,large")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--child")
    parser.add_argument("--curve", action="store_true")
    parser.add_argument("--compare", action="store_true", help="also solve with CP-SAT (small, medium)")
    parser.add_argument(
        "--observer-overhead",
        type=int,
        default=0,
        metavar="PAIRS",
        help="also solve PAIRS times without and with the CLI's progress line, alternately",
    )
    parser.add_argument("--observe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.time_limit, args.curve, args.observe)
        return
    for name in args.sizes.split(","):
        run_size(name, args.seed, args.time_limit, args.compare and name != "large", args.observer_overhead)


if __name__ == "__main__":
    main()
