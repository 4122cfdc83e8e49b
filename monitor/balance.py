"""How evenly a metric is spread across territories: mean, cv, Gini, min/max ratio, outside band.

Pure: a per-territory frame in, one row per metric out. Every statistic ignores territories whose value
is missing (NaN) and is NaN itself when it is undefined (no values, or a zero mean); docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

STATS: Final = ("mean", "cv", "gini", "min_max_ratio", "outside_band")


def gini(values: npt.ArrayLike) -> float:
    """Gini coefficient of non-negative values: mean absolute difference over twice the mean.

    0 is perfect equality; with n values it is at most (n - 1) / n, so always below 1. NaN when there
    are no values, the mean is zero, or a value is negative (the coefficient is not meaningful then).
    """
    x = np.asarray(values, dtype=np.float64)
    x = np.sort(x[np.isfinite(x)])
    n = len(x)
    total = float(x.sum())
    if n == 0 or total <= 0 or x[0] < 0:
        return float("nan")
    rank = np.arange(1, n + 1, dtype=np.float64)
    g = float((2.0 * (rank * x).sum()) / (n * total) - (n + 1.0) / n)
    return min(max(g, 0.0), (n - 1.0) / n)  # clamp rounding noise into the exact range


def describe(values: npt.ArrayLike) -> dict[str, float]:
    """mean, cv, gini and min_max_ratio of one metric over the territories (NaN values left out)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    nan = float("nan")
    if len(x) == 0:
        return {"mean": nan, "cv": nan, "gini": nan, "min_max_ratio": nan}
    mean = float(x.mean())
    std = float(x.std())  # population standard deviation (ddof=0)
    low, high = float(x.min()), float(x.max())
    return {
        "mean": mean,
        "cv": std / abs(mean) if mean != 0 else nan,
        "gini": gini(x),
        "min_max_ratio": low / high if high > 0 and low >= 0 else nan,
    }


def balance(
    territories: pd.DataFrame, metrics: Sequence[str], outside_band: Mapping[str, int] | None = None
) -> pd.DataFrame:
    """The statistics ``STATS`` of each metric (rows, index ``metric``) over the territories.

    ``outside_band`` gives, per metric, how many territories breach a rule on it (see
    ``monitor.drift.outside_band``); a metric without a rule has 0.
    """
    counts = outside_band or {}
    rows = {}
    for metric in metrics:
        stats: dict[str, float] = describe(territories[metric].to_numpy(dtype=np.float64, na_value=np.nan))
        stats["outside_band"] = float(counts.get(metric, 0))
        rows[metric] = stats
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(STATS), dtype=np.float64)
    frame.index.name = "metric"
    return frame
