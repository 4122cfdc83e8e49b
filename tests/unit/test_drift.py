"""Drift rules: each kind at and past its edge, missing values, outside-band counts, hysteresis."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor.catalog import METRICS
from monitor.drift import DEFAULT_RULES, Rule, RuleKind, apply_hysteresis, evaluate, lookback, outside_band
from service.errors import ConfigError
from service.settings import RuleSettings, load_settings

BAND = Rule("arr_band", "arr", RuleKind.band, 0.20)


def frame(**columns: list[float]) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=[f"o{i}" for i in range(n)])


def test_band_breaches_strictly_outside_the_fraction() -> None:
    # mean 100: 80 and 120 sit on the edge (inside), 79 and 121 outside
    got = evaluate(frame(arr=[80.0, 120.0, 79.0, 121.0, 100.0]), [BAND])
    assert sorted(got["owner_id"]) == ["o2", "o3"]
    row = got.set_index("owner_id").loc["o2"]
    assert row["value"] == 79.0
    assert row["mean"] == 100.0
    assert row["deviation"] == pytest.approx(-0.21)
    assert row["rule"] == "arr_band"
    assert row["metric"] == "arr"


def test_max_rule_compares_with_the_threshold_not_the_mean() -> None:
    rule = Rule("utilization_max", "utilization", RuleKind.max, 1.0)
    got = evaluate(frame(utilization=[1.0, 1.01, 3.0, np.nan]), [rule])
    assert list(got["owner_id"]) == ["o1", "o2"]
    assert got["mean"].iloc[0] == pytest.approx(5.01 / 3)


def test_outperformer_fires_at_thirty_percent_above_the_mean() -> None:
    rule = Rule("quota_outperformer", "quota_attainment", RuleKind.above_mean, 0.30)
    # mean of (0.5, 0.8, 1.3, 1.4) = 1.0: 1.3 is exactly 30% above (fires), 1.4 too; 0.5 is far below
    got = evaluate(frame(quota_attainment=[0.5, 0.8, 1.3, 1.4, np.nan]), [rule])
    assert sorted(got["owner_id"]) == ["o2", "o3"]


def test_missing_values_and_zero_means_never_breach() -> None:
    assert evaluate(frame(arr=[np.nan, np.nan]), [BAND]).empty
    assert evaluate(frame(arr=[0.0, 0.0, 0.0]), [BAND]).empty
    got = evaluate(frame(arr=[np.nan, 10.0, 30.0]), [BAND])  # mean over the two values: 20
    assert sorted(got["owner_id"]) == ["o1", "o2"]
    assert set(got["mean"]) == {20.0}


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        evaluate(frame(arr=[1.0]), [Rule("x", "nope", RuleKind.band, 0.1)])


def test_outside_band_counts_territories_per_metric() -> None:
    rules = [BAND, Rule("arr_max", "arr", RuleKind.max, 110.0), Rule("acc", "accounts", RuleKind.band, 0.1)]
    got = evaluate(frame(arr=[50.0, 100.0, 150.0], accounts=[10.0, 10.0, 10.0]), rules)
    # o0 and o2 breach the band, o2 also the maximum: two territories outside on arr
    assert len(got) == 3
    assert outside_band(got) == {"arr": 2}


def test_defaults_match_the_issue() -> None:
    by_name = {r.name: r for r in DEFAULT_RULES}
    assert by_name["potential_band"].threshold == 0.15
    assert by_name["arr_band"].threshold == 0.20
    assert by_name["accounts_band"].threshold == 0.25
    assert (by_name["utilization_max"].kind, by_name["utilization_max"].threshold) == (RuleKind.max, 1.0)
    assert by_name["quota_outperformer"].kind is RuleKind.above_mean
    assert all(r.consecutive == 1 for r in DEFAULT_RULES)


def test_settings_give_the_default_rules_and_extra_ones(tmp_path: Path) -> None:
    assert tuple(load_settings().rules.drift_rules()) == DEFAULT_RULES
    config = tmp_path / "t.yaml"
    config.write_text(
        "rules:\n  arr_band:\n    consecutive: 3\n    metric: arr\n    kind: band\n    threshold: 0.1\n"
        "  utilization_max:\n    enabled: false\n    metric: utilization\n    kind: max\n    threshold: 1\n"
        "  extra:\n    - {name: pipe, metric: open_pipeline, kind: band, threshold: 0.5, consecutive: 2}\n",
        encoding="utf-8",
    )
    rules = {r.name: r for r in load_settings(config).rules.drift_rules()}
    assert "utilization_max" not in rules
    assert rules["arr_band"] == Rule("arr_band", "arr", RuleKind.band, 0.1, 3)
    assert rules["pipe"] == Rule("pipe", "open_pipeline", RuleKind.band, 0.5, 2)


def test_a_rule_on_an_unknown_metric_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "territory.yaml"
    config.write_text("rules:\n  arr_band:\n    metric: revenue\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rules\.arr_band\.metric: Value error, unknown metric 'revenue'"):
        load_settings(config)
    assert all(RuleSettings(metric=m, kind="max", threshold=1).metric == m for m in METRICS)


def test_consecutive_must_be_positive() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        Rule("x", "arr", RuleKind.band, 0.1, consecutive=0)


# --- hysteresis ----------------------------------------------------------------------------------------

RULE3 = Rule("arr_band", "arr", RuleKind.band, 0.20, consecutive=3)
DAYS = [dt.date(2026, m, 1) for m in range(1, 7)]


def series_of_snapshots(values: list[list[float]]) -> list[pd.DataFrame]:
    """Breach frames of successive snapshots of the same territories."""
    return [evaluate(frame(arr=v), [RULE3]) for v in values]


def run(values: list[list[float]], open_events: tuple[tuple[str, str], ...] = ()) -> pd.DataFrame:
    """Hysteresis on the last snapshot of ``values``, with the ones before as history."""
    frames = series_of_snapshots(values)
    previous = list(zip(DAYS[: len(frames) - 1], frames[:-1], strict=True))[::-1]
    return apply_hysteresis(frames[-1], DAYS[len(frames) - 1], previous, [RULE3], open_events)


def test_breach_fires_only_after_n_consecutive_snapshots() -> None:
    inside, outside = [100.0, 100.0, 100.0], [150.0, 100.0, 100.0]  # o0 at 150: mean 116.7, +29%
    once = run([inside, inside, outside])
    assert once["streak"].tolist() == [1]
    assert not once["fired"].any()
    twice = run([inside, outside, outside])
    assert twice["streak"].tolist() == [2]
    assert not twice["fired"].any()
    thrice = run([outside, outside, outside])
    assert thrice["streak"].tolist() == [3]
    assert thrice["fired"].tolist() == [True]
    assert thrice["first_seen"].tolist() == [DAYS[0]]


def test_a_gap_restarts_the_count() -> None:
    inside, outside = [100.0, 100.0, 100.0], [150.0, 100.0, 100.0]
    got = run([outside, outside, inside, outside, outside])
    assert got["streak"].tolist() == [2]
    assert got["first_seen"].tolist() == [DAYS[3]]
    assert not got["fired"].any()


def test_an_open_event_keeps_firing_while_the_breach_persists() -> None:
    inside, outside = [100.0, 100.0, 100.0], [150.0, 100.0, 100.0]
    got = run([inside, outside], open_events=(("o0", "arr_band"),))
    assert got["fired"].tolist() == [True]


def test_consecutive_one_fires_at_once_and_needs_no_history() -> None:
    current = evaluate(frame(arr=[150.0, 100.0, 100.0]), [BAND])
    got = apply_hysteresis(current, DAYS[0], [], [BAND])
    assert got["fired"].tolist() == [True]
    assert lookback([BAND]) == 0
    assert lookback([BAND, RULE3]) == 2


def test_hysteresis_on_no_breaches_is_empty() -> None:
    current = evaluate(frame(arr=[100.0, 100.0]), [BAND])
    got = apply_hysteresis(current, DAYS[0], [], [BAND])
    assert got.empty
    assert {"streak", "first_seen", "fired"} <= set(got.columns)
