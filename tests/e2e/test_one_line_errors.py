"""No traceback reaches a user: each bad input ends in one line and the documented exit status
(2 for configuration and usage, 1 for an operational failure)."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import URL

from store import migrate
from store.db import make_engine
from store.models import Owner, Snapshot
from tests.helpers.processes import run
from tests.pg import url_text

pytestmark = pytest.mark.e2e


def _one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def reported_database(fresh_database: Callable[[], URL]) -> str:
    """A migrated database holding one snapshot, so that `territory report` gets as far as writing."""
    url = fresh_database()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(insert(Owner), [{"id": "o1", "name": "Ada", "active": True, "capacity": 100}])
            conn.execute(
                insert(Snapshot),
                {
                    "as_of": dt.date(2026, 11, 1),
                    "kind": "monthly",
                    "taken_at": dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                },
            )
    finally:
        engine.dispose()
    return url_text(url)


def test_a_config_file_that_is_not_utf8_names_the_line_and_column(tmp_path: Path) -> None:
    config = tmp_path / "territory.yaml"
    config.write_bytes(b"demo:\n  seed: \xff\xfe\n")
    line = _one_line(run("--config", str(config), "config", "show"), 2)
    assert line == f"territory: config error: {config}: line 2, column 9: not UTF-8 (byte 0xff)"


def test_an_environment_variable_of_no_section_is_refused() -> None:
    line = _one_line(run("config", "show", env={"TERRITORY_SALESFORSE__USERNAME": "x"}), 2)
    assert (
        line == "territory: config error: environment TERRITORY_SALESFORSE__USERNAME: salesforse: unknown key"
    )


def test_a_ca_bundle_that_does_not_exist_is_refused_when_settings_load(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    line = _one_line(run("config", "show", env={"TERRITORY_SALESFORCE__CA_BUNDLE": str(missing)}), 2)
    assert line.startswith("territory: config error: environment TERRITORY_SALESFORCE__CA_BUNDLE:")
    assert f"no CA file at {missing}" in line


def test_a_database_that_is_not_migrated_says_to_migrate(
    fresh_database: Callable[[], URL], tmp_path: Path
) -> None:
    env = {"TERRITORY_DATABASE_URL": url_text(fresh_database())}
    line = _one_line(run("report", "--out", str(tmp_path / "r.html"), env=env), 1)
    assert line.startswith("territory: database error: the database is not migrated (")
    assert line.endswith("run `territory migrate`")


def test_an_export_into_a_path_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.write_text("not a folder\n")
    result = run("sandbox", "export", "--accounts", "10", "--reps", "2", "--out", str(target))
    assert _one_line(result, 2) == f"territory: {target}: File exists"
    assert target.read_text() == "not a folder\n"


@pytest.mark.parametrize(
    ("out", "status", "message"),
    [
        ("missing/report.html", 2, "No such file or directory"),
        (".", 2, "Is a directory"),
        ("/dev/full", 1, "No space left on device"),
    ],
)
def test_a_report_that_cannot_be_written_is_one_line(
    reported_database: str, tmp_path: Path, out: str, status: int, message: str
) -> None:
    target = out if out.startswith("/") else str(tmp_path / out)
    line = _one_line(
        run("report", "--out", target, env={"TERRITORY_DATABASE_URL": reported_database}), status
    )
    assert line.startswith("territory: ")
    assert line.endswith(message)


def test_a_cut_export_is_refused_by_the_cli_and_allowed_on_request(
    fresh_database: Callable[[], URL], tmp_path: Path
) -> None:
    url = fresh_database()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    env = {"TERRITORY_DATABASE_URL": url_text(url)}
    folder = tmp_path / "export"
    exported = run("sandbox", "export", "--accounts", "200", "--reps", "4", "--out", str(folder))
    assert exported.returncode == 0, exported.stderr
    first = run("sync", "--source", "csv", "--path", str(folder), env=env)
    assert first.returncode == 0, first.stderr
    accounts = folder / "accounts.csv"
    header, kept, *_ = accounts.read_text(encoding="utf-8").splitlines()
    accounts.write_text(f"{header}\n{kept}\n", encoding="utf-8")  # cut to its header and one row
    refused = run("sync", "--source", "csv", "--path", str(folder), env=env)
    assert refused.returncode == 4, refused.stderr
    assert refused.stdout.strip().startswith("csv sync refused:")
    assert "refused to delete 199 of 200 live accounts" in refused.stdout
    allowed = run("sync", "--source", "csv", "--path", str(folder), "--allow-mass-delete", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert "199 deleted" in allowed.stdout


def test_an_export_is_not_written_over_another_unless_forced(tmp_path: Path) -> None:
    args = ["sandbox", "export", "--accounts", "10", "--reps", "2", "--out", str(tmp_path)]
    assert run(*args).returncode == 0
    before = (tmp_path / "accounts.csv").read_bytes()
    refused = run(*args, "--seed", "8")
    line = _one_line(refused, 2)
    assert line == f"territory: {tmp_path} already holds an export (accounts.csv); add --force to replace it"
    assert (tmp_path / "accounts.csv").read_bytes() == before
    forced = run(*args, "--seed", "8", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "accounts.csv").read_bytes() != before


def test_a_header_naming_a_column_twice_is_a_configuration_error(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    assert run("sandbox", "export", "--accounts", "10", "--reps", "2", "--out", str(folder)).returncode == 0
    accounts = folder / "accounts.csv"
    header, *rest = accounts.read_text(encoding="utf-8").splitlines()
    accounts.write_text("\n".join([header + ",name", *(r + ",x" for r in rest)]) + "\n", encoding="utf-8")
    env = {"TERRITORY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    line = _one_line(run("sync", "--source", "csv", "--path", str(folder), env=env), 2)
    assert line == "territory: config error: accounts.csv: header names column 'name' twice"
