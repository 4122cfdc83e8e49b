"""``territory proposals`` as a user runs it: JSON shapes, one decision per proposal, one-line refusals."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import URL

from connectors.sandbox import slack as fake_slack
from store import migrate
from store import proposals as props
from store.db import make_engine
from store.models import Account, Owner
from tests.helpers.processes import run
from tests.pg import url_text

pytestmark = pytest.mark.e2e

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _territory(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(*args, env={"TERRITORY_DATABASE_URL": url})


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def stored(fresh_database: Callable[[], URL]) -> tuple[str, list[int]]:
    """A migrated database with two owners, three accounts and two proposals of two moves each."""
    url = fresh_database()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(Owner),
                [{"id": o, "name": o.upper(), "active": True, "capacity": 100} for o in ("o1", "o2")],
            )
            conn.execute(
                insert(Account), [{"id": f"a{i}", "name": f"A{i}", "owner_id": "o1"} for i in (1, 2, 3)]
            )
            ids = []
            for n, accounts in enumerate((("a1", "a2"), ("a3", "a2"))):
                moves = [
                    props.NewMove(a, "o1", "o2", "o1", f"{a}: o1 is 30% over the potential band", wave=k + 1)
                    for k, a in enumerate(accounts)
                ]
                pid, created = props.create_proposal(
                    conn,
                    scenario="revenue",
                    fingerprint=f"fp-{n}",
                    moves=moves,
                    now=NOW + dt.timedelta(minutes=n),
                )
                assert created
                ids.append(pid)
    finally:
        engine.dispose()
    return url_text(url), ids


def test_list_and_show_give_the_documented_json(stored: tuple[str, list[int]]) -> None:
    url, (first, second) = stored
    listed = _json(_territory(url, "proposals", "list", "--format", "json"))
    assert {p["id"] for p in listed} == {first, second}
    assert set(listed[0]) == {"id", "scenario", "state", "moves", "created_at", "decided_by", "decided_at"}
    assert {(p["state"], p["moves"], p["decided_by"]) for p in listed} == {("proposed", 2, None)}
    shown = _json(_territory(url, "proposals", "show", str(first), "--format", "json"))
    assert shown["reason"] is None
    assert [(m["account_id"], m["from_owner_id"], m["to_owner_id"], m["wave"]) for m in shown["moves"]] == [
        ("a1", "o1", "o2", 1),
        ("a2", "o1", "o2", 2),
    ]
    assert set(shown["moves"][0]) == {
        "account_id",
        "from_owner_id",
        "to_owner_id",
        "wave",
        "effective_date",
        "writeback_state",
        "rationale",
    }
    assert _json(_territory(url, "proposals", "list", "--state", "approved", "--format", "json")) == []


def test_approve_once_then_the_second_is_told_who_decided(stored: tuple[str, list[int]]) -> None:
    url, (first, _) = stored
    approved = _json(_territory(url, "proposals", "approve", str(first), "--as", "Dana", "--format", "json"))
    assert (approved["state"], approved["decided_by"]) == ("approved", "Dana")
    again = _refused(_territory(url, "proposals", "approve", str(first), "--as", "Eli"))
    assert "approved by Dana" in again
    shown = _json(_territory(url, "proposals", "show", str(first), "--format", "json"))
    assert shown["decided_by"] == "Dana"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            audit = conn.execute(
                text("SELECT actor, action FROM audit_log WHERE proposal_id = :p ORDER BY id"), {"p": first}
            ).all()
    finally:
        engine.dispose()
    assert [tuple(a) for a in audit][-1] == ("Dana", "approved")


def test_approve_without_a_move_needs_a_reason_and_remembers_it(stored: tuple[str, list[int]]) -> None:
    url, (_, second) = stored
    line = _refused(_territory(url, "proposals", "approve", str(second), "--except", "a2"))
    assert "reason" in line
    done = _json(
        _territory(
            url, "proposals", "approve", str(second), "--except", "a2", "--reason", "Dana keeps a2 until renewal",
            "--as", "Dana", "--format", "json",
        )
    )  # fmt: skip
    states = {m["account_id"]: m["writeback_state"] for m in done["moves"]}
    assert states == {"a3": "pending", "a2": "cancelled"}


def test_reject_needs_a_reason_and_unknown_ids_are_refused(stored: tuple[str, list[int]]) -> None:
    url, (first, _) = stored
    assert "reason" in _refused(_territory(url, "proposals", "reject", str(first)))
    rejected = _json(
        _territory(url, "proposals", "reject", str(first), "--reason", "bad timing", "--format", "json")
    )
    assert (rejected["state"], rejected["reason"]) == ("rejected", "bad timing")
    assert "999999" in _refused(_territory(url, "proposals", "show", "999999"))
    assert _refused(_territory(url, "proposals", "cancel", str(first))).startswith("territory: proposal")


def test_a_cli_decision_updates_the_proposals_slack_message(stored: tuple[str, list[int]]) -> None:
    url, ids = stored
    engine = make_engine(url)
    with engine.begin() as conn:
        props.set_slack_message(conn, ids[0], channel="C0APPROVAL", ts="1700000000.000001")
    engine.dispose()
    with fake_slack.serve() as (slack, api):
        env = {"TERRITORY_DATABASE_URL": url, "TERRITORY_SLACK__BOT_TOKEN": slack.token,
               "TERRITORY_SLACK__API_URL": api}  # fmt: skip
        result = run("proposals", "approve", str(ids[0]), "--as", "Sam", "--format", "json", env=env)
        assert result.returncode == 0, result.stderr
        [update] = slack.calls_of("chat.update")
    assert update.args["channel"] == "C0APPROVAL"
    assert update.args["ts"] == "1700000000.000001"
    assert "Sam" in json.dumps(update.args)
