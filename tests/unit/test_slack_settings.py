"""The ``slack`` settings section: environment forms, secrets, and which Slack surface they give."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from approval import slack as slack_approval
from service.errors import ConfigError
from service.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("TERRITORY_"):
            monkeypatch.delenv(key)


def _surface(monkeypatch: pytest.MonkeyPatch, **env: str) -> object:
    for key, value in env.items():
        monkeypatch.setenv(f"TERRITORY_SLACK__{key.upper()}", value)
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connected
    return slack_approval.surface(load_settings().slack, engine, clock=lambda: dt.datetime.now(dt.UTC))


def test_defaults_are_no_slack() -> None:
    slack = load_settings().slack
    assert (slack.channel, slack.approvers, slack.approver_groups, slack.expiry_days) == (None, [], [], 14)
    assert (slack.bot_token, slack.signing_secret, slack.app_token) == (None, None, None)


def test_lists_and_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_SLACK__APPROVERS", '["U1", "U2"]')
    monkeypatch.setenv("TERRITORY_SLACK__APPROVER_GROUPS", '["S1"]')
    monkeypatch.setenv("TERRITORY_SLACK__BOT_TOKEN", "xoxb-1")
    slack = load_settings().slack
    assert (slack.approvers, slack.approver_groups) == (["U1", "U2"], ["S1"])
    assert slack.bot_token is not None
    assert slack.bot_token.get_secret_value() == "xoxb-1"
    config = slack_approval.SlackConfig.from_section(slack)
    assert (config.approvers, config.bot_token, config.base_url) == (
        ("U1", "U2"),
        "xoxb-1",
        "https://slack.com/api/",
    )


def test_a_token_in_the_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "territory.yaml"
    path.write_text("slack:\n  bot_token: xoxb-1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="TERRITORY_SLACK__BOT_TOKEN"):
        load_settings(path)


def test_expiry_days_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_SLACK__EXPIRY_DAYS", "0")
    with pytest.raises(ConfigError, match="TERRITORY_SLACK__EXPIRY_DAYS"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "configured"),
    [
        ({}, False),
        ({"signing_secret": "s"}, False),  # no bot token: nothing can be answered
        ({"bot_token": "xoxb-1"}, False),  # no way in: neither HTTP nor Socket Mode
        ({"bot_token": "xoxb-1", "signing_secret": " "}, False),  # a blank secret is unset
        ({"bot_token": "xoxb-1", "signing_secret": "s"}, True),
        ({"bot_token": "xoxb-1", "app_token": "xapp-1"}, True),
    ],
)
def test_which_surface(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], configured: bool) -> None:
    surface = _surface(monkeypatch, **env)
    assert isinstance(surface, slack_approval.SlackApproval) is configured
    assert isinstance(surface, slack_approval.NotConfigured) is not configured
    surface.close()  # type: ignore[attr-defined]


def test_a_client_only_with_a_bot_token(monkeypatch: pytest.MonkeyPatch) -> None:
    assert slack_approval.client_for(load_settings().slack) is None
    monkeypatch.setenv("TERRITORY_SLACK__BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("TERRITORY_SLACK__API_URL", "http://127.0.0.1:9/api/")
    client = slack_approval.client_for(load_settings().slack)
    assert client is not None
    assert (client.token, client.base_url) == ("xoxb-1", "http://127.0.0.1:9/api/")
