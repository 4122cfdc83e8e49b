"""Drift rules: which territories are outside their band, and hysteresis over consecutive snapshots.

Pure: per-territory frames in, breach frames out. A rule compares one metric of each territory with the
org mean of that metric (``band``, ``above_mean``) or with a fixed maximum (``max``). With
``consecutive = N`` a breach fires only when the territory was in breach in N consecutive snapshots,
so a territory hovering at the edge does not flap. Definitions: docs/metrics.md.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

BREACH_COLUMNS: Final = ("owner_id", "rule", "metric", "value", "mean", "deviation")


class RuleKind(enum.StrEnum):
    """How a rule's threshold is read."""

    band = "band"  # |value / mean - 1| > threshold
    max = "max"  # value > threshold
    above_mean = "above_mean"  # value / mean - 1 >= threshold


@dataclass(frozen=True)
class Rule:
    """One drift rule: ``metric`` of a territory against ``threshold`` read as ``kind``."""

    name: str
    metric: str
    kind: RuleKind
    threshold: float
    consecutive: int = 1

    def __post_init__(self) -> None:
        if self.consecutive < 1:
            raise ValueError(f"rule {self.name}: consecutive must be >= 1, got {self.consecutive}")
        if self.threshold < 0 and self.kind is not RuleKind.max:
            raise ValueError(f"rule {self.name}: threshold must be >= 0, got {self.threshold}")


DEFAULT_RULES: Final = (
    Rule("potential_band", "potential", RuleKind.band, 0.15),
    Rule("arr_band", "arr", RuleKind.band, 0.20),
    Rule("accounts_band", "accounts", RuleKind.band, 0.25),
    Rule("utilization_max", "utilization", RuleKind.max, 1.0),
    Rule("quota_outperformer", "quota_attainment", RuleKind.above_mean, 0.30),
)

# A relative comparison a hair inside the threshold must not breach because of float rounding.
_EPS: Final = 1e-12


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "owner_id": pd.Series(dtype=object),
            "rule": pd.Series(dtype=object),
            "metric": pd.Series(dtype=object),
            "value": pd.Series(dtype=np.float64),
            "mean": pd.Series(dtype=np.float64),
            "deviation": pd.Series(dtype=np.float64),
        }
    )


def evaluate(territories: pd.DataFrame, rules: Iterable[Rule]) -> pd.DataFrame:
    """Every (territory, rule) in breach in this snapshot: ``BREACH_COLUMNS``, one row each.

    ``mean`` is the org mean of the rule's metric over territories with a value; ``deviation`` is
    ``value / mean - 1`` (NaN when the mean is zero or missing). A territory whose value is missing
    never breaches; a band or above-mean rule on a metric whose mean is not positive never fires.
    """
    parts = []
    for rule in rules:
        if rule.metric not in territories.columns:
            raise KeyError(f"rule {rule.name}: unknown metric {rule.metric!r}")
        values = territories[rule.metric].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(values)
        mean = float(values[finite].mean()) if finite.any() else float("nan")
        deviation = values / mean - 1.0 if np.isfinite(mean) and mean > 0 else np.full(len(values), np.nan)
        if rule.kind is RuleKind.max:
            hit = finite & (values > rule.threshold + _EPS * max(1.0, abs(rule.threshold)))
        elif rule.kind is RuleKind.band:
            hit = finite & np.isfinite(deviation) & (np.abs(deviation) > rule.threshold + _EPS)
        else:
            hit = finite & np.isfinite(deviation) & (deviation >= rule.threshold - _EPS)
        if not hit.any():
            continue
        parts.append(
            pd.DataFrame(
                {
                    "owner_id": territories.index.to_numpy()[hit].astype(object),
                    "rule": rule.name,
                    "metric": rule.metric,
                    "value": values[hit],
                    "mean": mean,
                    "deviation": deviation[hit],
                }
            )
        )
    if not parts:
        return _empty()
    return pd.concat(parts, ignore_index=True)


def outside_band(breaches: pd.DataFrame) -> dict[str, int]:
    """Per metric, how many distinct territories breach at least one rule on it."""
    if breaches.empty:
        return {}
    counts = breaches.drop_duplicates(["metric", "owner_id"]).groupby("metric").size()
    return {str(k): int(v) for k, v in counts.items()}


def apply_hysteresis(
    current: pd.DataFrame,
    as_of: dt.date,
    previous: Sequence[tuple[dt.date, pd.DataFrame]],
    rules: Iterable[Rule],
    open_events: Iterable[tuple[str, str]] = (),
) -> pd.DataFrame:
    """The breaches of ``current`` with ``streak``, ``first_seen`` and ``fired`` columns added.

    ``previous`` holds the breach frames of the snapshots before this one, newest first. ``streak`` is
    the number of consecutive snapshots, this one included, in which the territory breached the rule;
    ``first_seen`` is the as-of date of the first of them. A breach fires when its streak reaches the
    rule's ``consecutive``, or when an event for it is already open (it persists, it does not re-arm).
    """
    needed = {rule.name: rule.consecutive for rule in rules}
    out = current.copy()
    streak = np.ones(len(out), dtype=np.int64)
    first_seen = np.full(len(out), as_of, dtype=object)
    alive = np.ones(len(out), dtype=bool)
    keys = list(zip(out["owner_id"], out["rule"], strict=True))
    for date, frame in previous:
        seen = set(zip(frame["owner_id"], frame["rule"], strict=True))
        hit = np.array([k in seen for k in keys], dtype=bool) if keys else np.zeros(0, dtype=bool)
        alive &= hit
        if not alive.any():
            break
        streak += alive
        first_seen[alive] = date
    open_keys = set(open_events)
    persists = np.array([k in open_keys for k in keys], dtype=bool) if keys else np.zeros(0, dtype=bool)
    required = out["rule"].map(needed).fillna(1).to_numpy(dtype=np.int64)
    out["streak"] = streak
    out["first_seen"] = first_seen
    out["fired"] = (streak >= required) | persists
    return out


def lookback(rules: Iterable[Rule]) -> int:
    """How many earlier snapshots hysteresis needs to look at."""
    return max((rule.consecutive for rule in rules), default=1) - 1


def rules_by_metric(rules: Iterable[Rule]) -> Mapping[str, list[Rule]]:
    """The rules grouped by the metric they watch."""
    grouped: dict[str, list[Rule]] = {}
    for rule in rules:
        grouped.setdefault(rule.metric, []).append(rule)
    return grouped
