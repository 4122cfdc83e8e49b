"""promtool on what we ship: the collector's exposition passes its lint, the alert rules their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine

from monitor.collector import register
from tests.helpers.processes import require_tool
from tests.helpers.seeding import JOB_INTERVALS, NOW, seed

pytestmark = pytest.mark.e2e

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yaml"


def promtool(
    *args: str, data: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [require_tool("promtool"), *args], input=data, capture_output=True, cwd=cwd, check=False, timeout=60
    )


def test_collector_exposition_passes_promtool_check_metrics(db: Engine) -> None:
    seed(db, NOW)
    registry = CollectorRegistry()
    register(registry, db, job_intervals=JOB_INTERVALS)
    exposition = generate_latest(registry)
    # every kind of family is there, so the lint sees all of them
    for name in (
        b"territory_potential{",
        b"territory_balance_gini{",
        b"territory_band_upper{",
        b"territory_drift_event_first_seen_timestamp_seconds{",
        b"territory_sync_rows_read_total{",
        b"territory_job_last_success_timestamp_seconds{",
        b"territory_proposals{",
        b"territory_writeback_moves{",
    ):
        assert name in exposition
    result = promtool("check", "metrics", data=exposition)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert result.stdout.strip() == b""


def test_promtool_check_metrics_is_not_a_rubber_stamp() -> None:
    bad = b"# HELP territory_things_total a gauge named like a counter\n# TYPE territory_things_total gauge\nterritory_things_total 1\n"
    result = promtool("check", "metrics", data=bad)
    assert result.returncode != 0
    assert b"non-counter metrics should not have" in result.stdout + result.stderr


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b"4 rules found" in result.stdout


def test_rules_unit_tests_pass() -> None:
    result = promtool("test", "rules", "rules_test.yaml", cwd=RULES.parent)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, output
    assert "SUCCESS" in output
