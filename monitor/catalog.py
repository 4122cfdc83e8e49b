"""The metric catalogue: one record per territory metric, the single place its facts are declared.

Every reader takes its facts from here: the computation's column list (``monitor.metrics``), the
settings' check of a rule's metric, the collector's Prometheus series, the report's and the CLI's
formatting, the health JSON's integer counts, and the rebalancer's choice of what account moves can
balance. Adding a metric is one record here plus its formula in ``monitor.metrics.territory_metrics``
(and its row in docs/metrics.md). This module imports nothing heavy, so settings can load it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["count", "money", "ratio", "distance"]
"""What a metric's number is, which decides how people read it: a number of things (accounts,
touches), an amount in the CRM's currency, a share (1.0 is 100%), or kilometres."""


class Divisor(enum.StrEnum):
    """The owner's figure a per-account sum is divided by, for metrics that are such a quotient."""

    capacity = "capacity"
    quota = "quota"


@dataclass(frozen=True)
class Metric:
    """One territory metric.

    ``additive``: the territory's value is a sum over its accounts (optionally over ``divisor``), so
    moving an account moves its share from one territory to the other and the org total stays; these
    are the metrics account moves can balance. ``summand`` names the per-account quantity summed (the
    metric itself unless it is a quotient). ``prometheus`` and ``scale`` are the exposed series: its
    name and the factor from the stored unit to the series' base unit (km -> metres).
    """

    name: str
    kind: Kind
    unit: str
    help: str
    prometheus: str
    additive: bool = False
    summand: str | None = None
    divisor: Divisor | None = None
    scale: float = 1.0
    integral: bool = False  # whole numbers by definition (counts of accounts): JSON integers


CATALOG: Final = (
    Metric(
        "accounts",
        "count",
        "accounts",
        "Non-deleted accounts in the territory.",
        "territory_accounts",
        additive=True,
        integral=True,
    ),
    Metric(
        "strategic_accounts",
        "count",
        "accounts",
        "Accounts of tier strategic.",
        "territory_strategic_accounts",
        additive=True,
        integral=True,
    ),
    Metric(
        "arr",
        "money",
        "currency",
        "Sum of the accounts' ARR, in the CRM's currency.",
        "territory_arr",
        additive=True,
    ),
    Metric(
        "potential",
        "money",
        "currency",
        "Sum of the accounts' potential, in the CRM's currency.",
        "territory_potential",
        additive=True,
    ),
    Metric(
        "open_pipeline",
        "money",
        "currency",
        "Amount of open opportunities, in the CRM's currency.",
        "territory_open_pipeline",
        additive=True,
    ),
    Metric(
        "weighted_pipeline",
        "money",
        "currency",
        "Amount times probability of open opportunities, in the CRM's currency.",
        "territory_weighted_pipeline",
        additive=True,
    ),
    Metric(
        "won_12m",
        "money",
        "currency",
        "Amount won in the 365 days up to the snapshot date.",
        "territory_won_12m",
        additive=True,
    ),
    Metric(
        "win_rate_12m",
        "ratio",
        "ratio",
        "Won over closed opportunities in 365 days.",
        "territory_win_rate_12m_ratio",
    ),
    Metric(
        "quota_attainment",
        "ratio",
        "ratio",
        "Amount won in 365 days over quota.",
        "territory_quota_attainment_ratio",
        additive=True,
        summand="won_12m",
        divisor=Divisor.quota,
    ),
    Metric(
        "workload",
        "count",
        "touches a quarter",
        "Expected customer touches a quarter.",
        "territory_workload_touches",
        additive=True,
    ),
    Metric(
        "utilization",
        "ratio",
        "ratio",
        "Workload over the rep's capacity.",
        "territory_utilization_ratio",
        additive=True,
        summand="workload",
        divisor=Divisor.capacity,
    ),
    Metric(
        "travel_km",
        "distance",
        "km",
        "Mean great-circle distance from the rep's home to the accounts.",
        "territory_travel_distance_meters",
        scale=1000.0,
    ),
    Metric(
        "top_account_share",
        "ratio",
        "ratio",
        "Largest account's share of ARR.",
        "territory_top_account_share_ratio",
    ),
)
BY_NAME: Final = {m.name: m for m in CATALOG}
METRICS: Final = tuple(m.name for m in CATALOG)
"""Columns of ``monitor.metrics.territory_metrics`` and the values of ``metric_snapshots.metric``."""
ADDITIVE: Final = tuple(m.name for m in CATALOG if m.additive)
"""The metrics an account move shifts between two territories (see ``Metric.additive``)."""
RATIOS: Final = frozenset(m.name for m in CATALOG if m.kind == "ratio")


def summand(metric: str) -> str:
    """The per-account quantity whose sum (over the divisor, if any) the additive metric is."""
    record = BY_NAME[metric]
    if not record.additive:
        raise ValueError(f"{metric} is not a per-account sum")
    return record.summand or record.name
