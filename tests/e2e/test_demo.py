"""``territory demo``: the loop on the embedded default, through the real Salesforce client, then serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.processes import TERRITORY, free_port, run

pytestmark = pytest.mark.e2e


def test_demo_syncs_measures_and_starts_afresh_each_run(tmp_path: Path) -> None:
    env = {"TERRITORY_DATA_DIR": str(tmp_path / "data")}
    first = run(
        "demo", "--no-serve", "--accounts", "800", "--reps", "12", "--approve-as", "Sam", "--format", "json",
        env=env, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    loaded = json.loads(first.stdout)
    assert loaded["sync"]["source"] == "salesforce"
    assert loaded["sync"]["status"] == "succeeded"
    read = {o["object"]: o for o in loaded["sync"]["objects"]}
    assert read["accounts"]["rows_upserted"] == 800
    assert read["owners"]["rows_upserted"] == 12
    org = loaded["org"]
    assert org["accounts"] == 800
    assert org["owners"] == 12
    assert org["opportunities"] == read["opportunities"]["rows_upserted"] > 800
    assert sum(r["accounts"] for r in org["regions"]) == 800
    health = loaded["health"]
    assert health["snapshot_id"] == 1
    assert len(health["territories"]) == org["active_owners"]
    assert sum(t["accounts"] for t in health["territories"]) == 800
    assert {b["rule"] for b in health["breaches"]} <= {
        "potential_band", "arr_band", "accounts_band", "utilization_max", "quota_outperformer",
    }  # fmt: skip
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").is_file()
    # The proposal, approved as Sam, written back to the sandbox through the real client, re-synced.
    proposal = loaded["proposal"]
    assert proposal["proposal_id"] == 1
    assert proposal["moves"], "the generated org drifts: the demo has moves to propose"
    applied = loaded["applied"]
    assert applied["decision"]["decided_by"] == "Sam"
    [written] = applied["writeback"]
    assert written["state"] == "applied"
    assert written["written"] == len(proposal["moves"])
    assert applied["resync"]["status"] == "succeeded"
    after = applied["health_after"]
    # A later snapshot; not necessarily id 2: the embedded server restarted in between, and a
    # PostgreSQL sequence may skip up to 32 values across a restart it had to recover from.
    assert after["snapshot_id"] > health["snapshot_id"]
    assert sum(t["accounts"] for t in after["territories"]) == 800

    # A smaller org in the same data folder: the demo's database starts empty, nothing is left over.
    again = run(
        "demo", "--no-serve", "--accounts", "300", "--reps", "6", "--format", "json", env=env, timeout=300
    )
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["org"]["accounts"] == 300
    assert second["org"]["owners"] == 6
    assert second["health"]["snapshot_id"] == 1


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback http only)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def test_demo_goes_on_serving_metrics_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")} | {
        "TERRITORY_DATA_DIR": str(tmp_path / "data"),
        "TERRITORY_SERVER__PORT": str(port),
        "TERRITORY_SCHEDULER__SHUTDOWN_GRACE_SECONDS": "10",
    }
    demo = subprocess.Popen(
        [TERRITORY, "demo", "--accounts", "300", "--reps", "6"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        body = ""
        while time.monotonic() < deadline and demo.poll() is None:
            status, body = _get(f"http://127.0.0.1:{port}/metrics")
            if status == 200 and "\nterritory_accounts{" in body:
                break
            time.sleep(0.5)
        assert demo.poll() is None, demo.communicate()[1][-2000:]
        assert "territory_collector_up 1.0" in body
        per_territory = [line for line in body.splitlines() if line.startswith("territory_accounts{")]
        assert 1 <= len(per_territory) <= 6  # one series per active territory
        assert sum(float(line.rsplit(" ", 1)[1]) for line in per_territory) == 300
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        demo.send_signal(signal.SIGTERM)
        out, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0, err[-2000:]
    assert "Drift:" in out or "no territory is outside a band" in out
