"""The metric catalogue's own facts: Prometheus naming rules, units and the additive claim's shape."""

from __future__ import annotations

import re

from monitor.catalog import ADDITIVE, BY_NAME, CATALOG, METRICS, RATIOS, summand

PROMETHEUS_NAME = re.compile(r"^territory_[a-z][a-z0-9_]*$")


def test_one_record_per_metric_and_one_series_per_record() -> None:
    assert len(set(METRICS)) == len(CATALOG)
    assert len({m.prometheus for m in CATALOG}) == len(CATALOG)
    assert all(BY_NAME[m.name] is m for m in CATALOG)


def test_series_names_follow_the_prometheus_naming_rules() -> None:
    for metric in CATALOG:
        assert PROMETHEUS_NAME.match(metric.prometheus), metric.name
        assert not metric.prometheus.endswith(("_total", "_count", "_sum", "_bucket")), metric.name
        if metric.kind == "ratio":
            assert metric.prometheus.endswith("_ratio"), metric.name
        if metric.kind == "distance":  # stored in km, exposed in the base unit
            assert metric.prometheus.endswith("_meters"), metric.name
            assert metric.scale == 1000.0, metric.name
        else:
            assert metric.scale == 1.0, metric.name


def test_quotients_name_a_per_account_sum_and_an_owner_divisor() -> None:
    for name in ADDITIVE:
        record = BY_NAME[name]
        assert (record.summand is None) == (record.divisor is None), name
        assert BY_NAME[summand(name)].additive, name
        assert BY_NAME[summand(name)].divisor is None, name
    assert {n for n in ADDITIVE if BY_NAME[n].divisor} == {"utilization", "quota_attainment"}
    assert "utilization" in RATIOS
    assert "arr" not in RATIOS
