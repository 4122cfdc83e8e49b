"""Each connector declares its own settings section; the service composes them; nothing below imports it."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.hubspot.settings import HubSpotSettings
from connectors.salesforce.auth import AuthMethod, Credentials
from connectors.salesforce.mapping import DEFAULT_FIELDS, build_mappings
from connectors.salesforce.settings import SalesforceFields, SalesforceSettings
from connectors.settings import Section, env_name
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("section", [SalesforceSettings, HubSpotSettings])
def test_the_service_composes_each_connector_section_under_its_key(section: type[Section]) -> None:
    assert section.key is not None
    assert Settings.model_fields[section.key].annotation is section


def test_environment_names_come_from_the_model() -> None:
    assert SalesforceSettings.env("password") == "TERRITORY_SALESFORCE__PASSWORD"
    assert HubSpotSettings.env("access_token") == "TERRITORY_HUBSPOT__ACCESS_TOKEN"
    assert env_name("database", "pool_size") == "TERRITORY_DATABASE__POOL_SIZE"
    with pytest.raises(KeyError, match="no setting 'passwd'"):
        SalesforceSettings.env("passwd")


def test_the_settings_loader_reads_the_names_the_connectors_print(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import load_settings

    monkeypatch.setenv(SalesforceSettings.env("security_token"), "tok-123")
    monkeypatch.setenv(HubSpotSettings.env("access_token"), "pat-456")
    settings = load_settings()
    assert settings.salesforce.security_token is not None
    assert settings.salesforce.security_token.get_secret_value() == "tok-123"
    assert settings.hubspot.access_token is not None
    assert settings.hubspot.access_token.get_secret_value() == "pat-456"


@pytest.mark.parametrize(
    ("method", "missing"),
    [
        (AuthMethod.access_token, "salesforce.instance_url"),
        (AuthMethod.password, "salesforce.username"),
        (AuthMethod.jwt, "salesforce.username"),
    ],
)
def test_missing_credentials_name_the_key(method: AuthMethod, missing: str) -> None:
    with pytest.raises(Exception, match=f"{method.value}: {missing} is not set"):
        Credentials(method=method).check()


def test_a_missing_secret_names_its_environment_variable() -> None:
    with pytest.raises(Exception, match="TERRITORY_SALESFORCE__PASSWORD is not set"):
        Credentials(method=AuthMethod.password, username="api@example.com").check()


def test_salesforce_field_defaults_are_the_settings_models() -> None:
    declared = SalesforceFields().model_dump()
    assert {obj.value: dict(fields) for obj, fields in DEFAULT_FIELDS.items()} == declared
    assert build_mappings(declared) == build_mappings()


# The import direction (no lower layer imports the service) is tests/unit/test_layers.py's.
