"""A real Prometheus scrapes `territory serve`; every PromQL expression of the dashboard and rules returns data.

The database is seeded (tests/integration/test_collector.py ``seed``) so that every alert condition
holds; then it is dropped under the running daemon, and the database-down alert's expression must
return data too. Needs Debian's ``prometheus``: skipped with a reason outside CI, a failure in CI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import URL

from store import migrate
from store.db import make_engine
from tests.helpers.processes import TERRITORY, free_port, require_tool, wait_for
from tests.helpers.seeding import seed
from tests.pg import drop_test_database, url_text

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "territory.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
# Grafana's variables, as an "All" selection and a rate window that holds several 1 s scrapes.
SUBSTITUTIONS = {"$__rate_interval": "30s", "$__interval": "1s", "$__range": "1m", "$region": ".*"}


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (errors of a server still starting count as not yet)."""
    return wait_for(check, timeout, what, interval=0.2, tolerate=(OSError, ValueError))


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback http only
        body: bytes = response.read()
        return body


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in ``log``, terminated (then killed) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def territory_serve(database: URL, tmp_path: Path) -> Iterator[str]:
    """`territory serve` on a free loopback port with its scheduler off; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")} | {
        "TERRITORY_DATABASE_URL": url_text(database),
        "TERRITORY_DATA_DIR": str(tmp_path / "data"),
        "TERRITORY_SERVER__HOST": "127.0.0.1",
        "TERRITORY_SERVER__PORT": str(port),
        "TERRITORY_SCHEDULER__ENABLED": "false",
        "TERRITORY_LOGGING__LEVEL": "WARNING",
    }
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with process([TERRITORY, "serve"], env, log) as proc:

        def metrics_up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"territory serve exited: {log.read_text(errors='replace')[-3000:]}")
            return b"territory_collector_up 1.0" in http_get(f"{base}/metrics")

        wait_until(metrics_up, "territory serve's /metrics", timeout=60)
        yield base


@pytest.fixture
def seeded_database(fresh_database: Callable[[], URL], pg_server: URL) -> Iterator[URL]:
    """A database of its own (this test drops it under the daemon), migrated and seeded as of now."""
    url = fresh_database()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        seed(engine, dt.datetime.now(dt.UTC))
    finally:
        engine.dispose()
    yield url
    drop_test_database(pg_server, url)


class Prometheus:
    """A Prometheus of this test: its own config, data folder and loopback port."""

    def __init__(self, base: str) -> None:
        self.base = base

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        body = json.loads(http_get(f"{self.base}/api/v1/{path}?{query}"))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"value": result}]
        assert isinstance(result, list)
        return result


@contextlib.contextmanager
def prometheus(target: str, tmp_path: Path) -> Iterator[Prometheus]:
    binary = require_tool("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [{"job_name": "territory", "static_configs": [{"targets": [target]}]}],
            }
        ),
        encoding="utf-8",
    )
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with process(args, dict(os.environ), tmp_path / "prometheus.log"):
        prom = Prometheus(f"http://127.0.0.1:{port}")
        wait_until(lambda: http_get(f"{prom.base}/-/ready") is not None, "Prometheus to be ready")
        yield prom


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the dashboard, Grafana variables substituted."""
    found = []
    for panel in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in SUBSTITUTIONS.items():
                expr = expr.replace(variable, value)
            found.append((f"{panel['title']} [{target['refId']}]", expr))
    return found


def rule_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [
        (rule.get("alert") or rule["record"], rule["expr"]) for g in rules["groups"] for rule in g["rules"]
    ]


def test_dashboard_takes_its_datasource_from_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert "__inputs" not in dashboard
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        uids = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
        assert uids == {"${datasource}"}, panel["title"]


def test_dashboard_and_rules_return_data_from_a_real_prometheus(
    seeded_database: URL, pg_server: URL, tmp_path: Path
) -> None:
    dashboard = dashboard_expressions()
    rules = rule_expressions()
    assert len(dashboard) >= 20
    assert {name for name, _ in rules} >= {
        "TerritoryDriftPersistent",
        "TerritoryJobNotSucceeding",
        "TerritorySyncFailing",
        "TerritoryMetricsDatabaseDown",
    }
    with (
        territory_serve(seeded_database, tmp_path) as base,
        prometheus(base.removeprefix("http://"), tmp_path) as prom,
    ):
        # the daemon's whole exposition (every collector on its registry) passes promtool's lint
        lint = subprocess.run(
            [require_tool("promtool"), "check", "metrics"],
            input=http_get(f"{base}/metrics"),
            capture_output=True,
            check=False,
        )
        assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()
        # a few scrapes, so that increase() over the rate window has two samples
        wait_until(lambda: prom.query("count_over_time(territory_collector_up[30s]) >= 3"), "three scrapes")
        template = json.loads(DASHBOARD.read_text(encoding="utf-8"))["templating"]["list"]
        for variable in template:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
            assert match, variable["definition"]
            values = prom.api(f"label/{match[2]}/values", **{"match[]": match[1]})
            assert values, f"variable {variable['name']}: no values"
        empty = [(name, expr) for name, expr in dashboard if not prom.query(expr)]
        assert not empty, f"dashboard expressions without data: {empty}"
        down = "TerritoryMetricsDatabaseDown"
        empty = [(name, expr) for name, expr in rules if name != down and not prom.query(expr)]
        assert not empty, f"rule expressions without data: {empty}"
        # the rules loaded and evaluate without error; the alerts whose condition holds are pending
        groups = prom.api("rules")["groups"]
        health = {rule["name"]: rule["health"] for g in groups for rule in g["rules"]}
        assert set(health.values()) == {"ok"}, health
        alerts = wait_until(lambda: prom.api("alerts")["alerts"], "alerts")
        assert {a["labels"]["alertname"] for a in alerts} >= {
            "TerritoryDriftPersistent",
            "TerritoryJobNotSucceeding",
            "TerritorySyncFailing",
        }
        persistent = [a for a in alerts if a["labels"]["alertname"] == "TerritoryDriftPersistent"]
        assert [(a["labels"]["owner_id"], a["labels"]["rule"]) for a in persistent] == [
            ("o1", "potential_band")
        ]
        # the database goes away under the running daemon: it says so, and the down alert has data
        drop_test_database(pg_server, seeded_database)
        expr = dict(rules)[down]
        wait_until(lambda: prom.query(expr), "the database-down expression to return data")
        assert prom.query("territory_collector_up")[0]["value"][1] == "0"
