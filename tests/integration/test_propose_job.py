"""The daemon's proposal jobs on real PostgreSQL: fired drift triggers a proposal, posted to the fake Slack.

The jobs are called as the scheduler calls them, with a job context whose ``trigger`` is recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from connectors.sandbox import slack as fake_slack
from connectors.sandbox.generator import DEFAULT_NOW, generate_org
from connectors.sandbox.seed import load_org
from service.jobs import expiry_job, propose_job, snapshot_job
from service.scheduler import JobContext
from service.settings import Settings
from store import proposals as props

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _context(job: str, triggered: list[str], now: dt.datetime = NOW) -> JobContext:
    def trigger(name: str, delay: float) -> bool:
        triggered.append(name)
        return True

    return JobContext(job, 1, "test", now, threading.Event(), trigger)


def test_fired_drift_proposes_once_and_posts_the_proposal_to_slack(db: Engine) -> None:
    load_org(db, generate_org(accounts=500, reps=8, seed=3, now=DEFAULT_NOW))
    with fake_slack.serve() as (slack, url):
        settings = Settings.model_validate(
            {
                "rebalancer": {"time_limit_seconds": 10},
                "slack": {"channel": "C0APPROVAL", "api_url": url, "bot_token": SecretStr(slack.token)},
            }
        )
        triggered: list[str] = []
        snapshot = snapshot_job(db, settings, _context("health_snapshot", triggered), kind="event")
        assert triggered == ["propose"], snapshot  # the generated org drifts: rules fire
        first = propose_job(db, settings, _context("propose", []))
        assert first["stored"] is True
        posted = slack.calls_of("chat.postMessage")
        assert len(posted) == 1
        assert posted[0].args["channel"] == "C0APPROVAL"
        assert "optimality gap n/a" not in json.dumps(posted[0].args)  # the solver's proven gap is shown
        assert "optimality gap" in json.dumps(posted[0].args)
        again = propose_job(db, settings, _context("propose", []))  # the same data: the same proposal
        assert (again["proposal_id"], again["stored"]) == (first["proposal_id"], False)
        assert len(slack.calls_of("chat.postMessage")) == 1
        with db.connect() as conn:
            stored = props.get_proposal(conn, int(first["proposal_id"]))
        assert stored.slack_channel == "C0APPROVAL"
        assert stored.expires_at == NOW + dt.timedelta(days=settings.slack.expiry_days)

        later = NOW + dt.timedelta(days=settings.slack.expiry_days, minutes=1)
        assert expiry_job(db, settings, _context("proposal_expiry", [], later)) == {
            "expired": [first["proposal_id"]]
        }
        assert slack.calls_of("chat.update"), "the message now says it expired"
