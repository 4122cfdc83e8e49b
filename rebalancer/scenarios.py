"""The built-in scenarios and the what-ifs, as pure functions of plain values.

The default bands are the monitor's drift rules of kind ``band`` and its limits those of kind ``max``
(``monitor.drift.DEFAULT_RULES``), so "balanced" means here what it means on the health page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Final

import numpy as np

from monitor.drift import DEFAULT_RULES, Rule, RuleKind
from rebalancer.problem import (
    ADDITIVE_METRICS,
    UTILIZATION,
    AccountTable,
    Band,
    Limit,
    Problem,
    Scenario,
    Secondary,
    Territory,
    TierRange,
)


def bands_from_rules(rules: Iterable[Rule]) -> tuple[tuple[Band, ...], tuple[Limit, ...]]:
    """The bands (rules of kind ``band``) and limits (kind ``max``) that the rebalancer can act on."""
    bands: list[Band] = []
    limits: list[Limit] = []
    for rule in rules:
        known = rule.metric in ADDITIVE_METRICS or rule.metric == UTILIZATION
        if rule.kind is RuleKind.band and known and rule.metric != UTILIZATION:
            bands.append(Band(rule.metric, rule.threshold))
        elif rule.kind is RuleKind.max and known:
            limits.append(Limit(rule.metric, rule.threshold))
    return tuple(bands), tuple(limits)


def builtin_scenarios(rules: Iterable[Rule] = DEFAULT_RULES) -> dict[str, Scenario]:
    """``revenue``, ``strategic``, ``growth`` and ``geography`` (issue 11), the defaults from ``rules``."""
    bands, limits = bands_from_rules(rules)
    return {
        "revenue": Scenario("revenue", (Band("potential", 0.10), Band("arr", 0.10)), limits),
        "strategic": Scenario("strategic", bands, limits, tier_ranges=(TierRange("strategic", 2),)),
        "growth": Scenario(
            "growth",
            (Band("open_pipeline", 0.20), Band("weighted_pipeline", 0.20)),
            limits,
            secondary=Secondary.travel,
        ),
        "geography": Scenario("geography", bands, limits, secondary=Secondary.travel),
    }


SCENARIO_NAMES: Final = ("revenue", "strategic", "growth", "geography")


def override_bands(scenario: Scenario, tolerances: Mapping[str, float]) -> Scenario:
    """``--band METRIC=TOL``: these bands replace the scenario's bands and limits.

    Capacity stays a hard constraint on receivers (it is not a limit of the scenario).
    """
    bands = tuple(Band(metric, float(tol)) for metric, tol in tolerances.items())
    return dataclasses.replace(scenario, bands=bands, limits=())


def add_rep(
    problem: Problem,
    name: str,
    region: str,
    capacity: float,
    location: tuple[float, float] | None = None,
) -> Problem:
    """``--add-rep``: a hypothetical empty territory; the means, hence the bands, shift with it.

    Without a location the rep lives at the mean home of the region's active reps.
    """
    if capacity <= 0:
        raise ValueError(f"add-rep {name}: capacity must be > 0")
    if location is None:
        homes = [
            (t.home_lat, t.home_lon)
            for t in problem.territories
            if t.region == region and t.active and t.home_lat is not None and t.home_lon is not None
        ]
        if homes:
            location = (float(np.mean([h[0] for h in homes])), float(np.mean([h[1] for h in homes])))
    owner_id = f"whatif:{name}"
    if any(t.owner_id == owner_id for t in problem.territories):
        raise ValueError(f"add-rep {name}: added twice")
    rep = Territory(
        owner_id=owner_id,
        name=name,
        region=region,
        capacity=float(capacity),
        home_lat=None if location is None else location[0],
        home_lon=None if location is None else location[1],
        hypothetical=True,
    )
    return dataclasses.replace(problem, territories=(*problem.territories, rep))


def remove_rep(problem: Problem, owner_id: str) -> Problem:
    """``--remove-rep``: the rep is no territory any more and its accounts become orphans."""
    if not any(t.owner_id == owner_id for t in problem.territories):
        raise ValueError(f"remove-rep {owner_id}: no such territory")
    territories = tuple(
        dataclasses.replace(t, active=False) if t.owner_id == owner_id else t for t in problem.territories
    )
    return dataclasses.replace(problem, territories=territories)


def _unused(table: AccountTable) -> None:  # pragma: no cover - keeps the import for type readers
    del table
