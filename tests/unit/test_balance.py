"""Balance statistics across territories: known values, missing values, zero means, invariants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.balance import STATS, balance, describe, gini


def test_gini_known_values() -> None:
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 1]) == pytest.approx(3 / 4)  # all in one of n: (n - 1) / n
    # mean absolute difference of (1, 2, 3, 4) over all ordered pairs is 1.25; mean 2.5 -> 1.25 / 5
    assert gini([4, 1, 3, 2]) == pytest.approx(0.25)
    assert gini([7]) == 0.0


def test_gini_undefined_cases_are_nan() -> None:
    assert math.isnan(gini([]))
    assert math.isnan(gini([0, 0]))  # zero mean
    assert math.isnan(gini([-1, 3]))  # negative values
    assert gini([np.nan, 1, 1]) == 0.0  # missing values are left out


def test_describe_known_values() -> None:
    got = describe([2.0, 4.0, 6.0, np.nan])
    assert got["mean"] == 4.0
    assert got["cv"] == pytest.approx(math.sqrt(8 / 3) / 4)  # population std over the mean
    assert got["gini"] == pytest.approx((2 + 4 + 2) * 2 / (2 * 9 * 4))
    assert got["min_max_ratio"] == pytest.approx(1 / 3)


def test_describe_all_zero_and_all_missing() -> None:
    zero = describe([0.0, 0.0, 0.0])
    assert zero["mean"] == 0.0
    assert math.isnan(zero["cv"])
    assert math.isnan(zero["gini"])
    assert math.isnan(zero["min_max_ratio"])
    empty = describe([np.nan, np.nan])
    assert all(math.isnan(v) for v in empty.values())


def test_balance_frame_has_every_stat_and_outside_band() -> None:
    territories = pd.DataFrame(
        {"arr": [100.0, 100.0, 400.0], "win_rate_12m": [0.5, np.nan, 0.25]}, index=["A", "B", "C"]
    )
    got = balance(territories, ["arr", "win_rate_12m"], {"arr": 2})
    assert list(got.columns) == list(STATS)
    assert list(got.index) == ["arr", "win_rate_12m"]
    assert got.loc["arr", "mean"] == 200.0
    assert got.loc["arr", "min_max_ratio"] == 0.25
    assert got.loc["arr", "outside_band"] == 2
    assert got.loc["win_rate_12m", "mean"] == 0.375  # over the two territories with a value
    assert got.loc["win_rate_12m", "outside_band"] == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 1e9), st.just(float("nan"))), min_size=1, max_size=40))
def test_gini_in_unit_interval_and_cv_non_negative(values: list[float]) -> None:
    got = describe(values)
    finite = [v for v in values if not math.isnan(v)]
    if finite and sum(finite) > 0:
        assert 0.0 <= got["gini"] < 1.0
        assert got["cv"] >= 0.0
        assert 0.0 <= got["min_max_ratio"] <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 1e6), min_size=2, max_size=30), st.floats(0.1, 100))
def test_stats_are_scale_free(values: list[float], factor: float) -> None:
    one, scaled = describe(values), describe([v * factor for v in values])
    for stat in ("cv", "gini", "min_max_ratio"):
        assert scaled[stat] == pytest.approx(one[stat], rel=1e-6, abs=1e-9)
