"""The ``territory`` command as a user runs it: help everywhere, bad config as one line and exit 2."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from store import migrate
from store.db import make_engine
from tests.helpers.processes import run
from tests.pg import url_text

pytestmark = pytest.mark.e2e

COMMANDS = [
    [],
    ["migrate"],
    ["demo"],
    ["sync"],
    ["health"],
    ["report"],
    ["serve"],
    ["sandbox"],
    ["sandbox", "export"],
    ["sandbox", "serve"],
    ["config"],
    ["config", "show"],
    ["proposals"],
    ["proposals", "list"],
    ["proposals", "show"],
    ["proposals", "approve"],
    ["proposals", "reject"],
    ["proposals", "cancel"],
    ["proposals", "revert"],
    ["apply"],
    ["propose"],
]


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for name in ("migrate", "demo", "sync", "health", "report", "serve", "sandbox", "config"):
        assert name in result.stdout
    # One row per command, in the order they were always listed (each group is registered in turn).
    rows = (re.match(r"│ ([a-z]+)  +\S", line) for line in result.stdout.splitlines())
    listed = [m.group(1) for m in rows if m is not None]
    assert listed == [
        "migrate", "demo", "health", "sync", "serve", "report", "propose", "apply", "sandbox", "config",
        "proposals",
    ]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "territory")
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: territory" in result.stdout


def test_bad_config_value_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "territory.yaml"
    config.write_text("demo:\n  reps: 0\n", encoding="utf-8")
    result = run("--config", str(config), "config", "show")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"territory: config error: {config}: demo.reps:")
    assert "Traceback" not in result.stderr


def test_bad_environment_value_exits_2(tmp_path: Path) -> None:
    result = run("config", "show", env={"TERRITORY_LOGGING__FORMAT": "xml"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "territory: config error: environment TERRITORY_LOGGING__FORMAT: logging.format: "
        "Input should be 'json' or 'text' (got 'xml')"
    ]


def test_config_show_json_masks_secrets() -> None:
    result = run(
        "config", "show", "--format", "json", env={"TERRITORY_DATABASE_URL": "postgresql://u:pw123@h/d"}
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["database_url"] == "**********"
    assert shown["demo"] == {"accounts": 5000, "reps": 40, "seed": 7}


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.csv"))}


def test_sandbox_export_same_seed_same_bytes(tmp_path: Path) -> None:
    args = ["sandbox", "export", "--accounts", "300", "--reps", "6", "--format", "json"]
    first = run(*args, "--seed", "3", "--out", str(tmp_path / "a"))
    second = run(*args, "--seed", "3", "--out", str(tmp_path / "b"))
    other = run(*args, "--seed", "4", "--out", str(tmp_path / "c"))
    assert first.returncode == second.returncode == other.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["files"]["accounts.csv"] == 300
    assert set(report["files"]) == {"owners.csv", "accounts.csv", "opportunities.csv", "assignments.csv"}
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["accounts.csv"] != _digest(tmp_path / "c")["accounts.csv"]


def test_migrate_brings_a_database_to_head_and_is_idempotent(fresh_database: Callable[[], URL]) -> None:
    url = fresh_database()
    env = {"TERRITORY_DATABASE_URL": url_text(url)}
    first = run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    engine = make_engine(url)
    try:
        head = migrate.heads(engine)[0]
        assert migrate.current(engine) == head
    finally:
        engine.dispose()
    assert first.stdout.strip() == f"database at revision {head} (was empty)"
    again = run("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"database at revision {head} (was {head})"


def test_unreachable_database_is_one_line_and_exit_1() -> None:
    result = run("migrate", env={"TERRITORY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("territory: database error:")


@pytest.mark.parametrize("command", [["health"], ["report", "--out", "report.html"]])
def test_a_future_as_of_is_refused_with_one_line(command: list[str], tmp_path: Path) -> None:
    result = run(
        *command, "--as-of", "2999-01-01", env={"TERRITORY_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("territory: --as-of 2999-01-01 is in the future (today is ")
    assert not (tmp_path / "report.html").exists()
