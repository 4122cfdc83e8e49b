"""The metric names, in a module of their own so that settings can check a rule's metric without pandas."""

from __future__ import annotations

from typing import Final

METRICS: Final = (
    "accounts",
    "strategic_accounts",
    "arr",
    "potential",
    "open_pipeline",
    "weighted_pipeline",
    "won_12m",
    "win_rate_12m",
    "quota_attainment",
    "workload",
    "utilization",
    "travel_km",
    "top_account_share",
)
"""Columns of ``monitor.metrics.territory_metrics`` and the values of ``metric_snapshots.metric``."""
