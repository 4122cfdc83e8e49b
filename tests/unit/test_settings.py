"""Settings: defaults, file, environment, and one clear line for every kind of bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from service.errors import ConfigError
from service.settings import Settings, _is_secret, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "territory.example.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TERRITORY_* variable of the developer's leaks into these tests."""
    import os

    for key in list(os.environ):
        if key.startswith("TERRITORY_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "territory.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> field info of every leaf setting."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= leaves(ann, f"{prefix}{name}.")
        else:
            out[prefix + name] = field
    return out


def flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= flatten(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.demo.accounts == 5000
    assert settings.logging.format == "json"


def test_file_values_are_used(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "demo:\n  accounts: 1200\nlogging:\n  level: DEBUG\n"))
    assert settings.demo.accounts == 1200
    assert settings.logging.level == "DEBUG"
    assert settings.demo.reps == 40


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_DEMO__ACCOUNTS", "77")
    settings = load_settings(write(tmp_path, "demo:\n  accounts: 1200\n  reps: 9\n"))
    assert settings.demo.accounts == 77
    assert settings.demo.reps == 9


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_CONFIG", str(write(tmp_path, "demo:\n  seed: 99\n")))
    assert load_settings().demo.seed == 99


def test_database_url_is_a_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_DATABASE_URL", "postgresql://u:hunter2@db/x")
    settings = load_settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgresql://u:hunter2@db/x"
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "demo:\n  accounts: -5\n",
            "territory.yaml: demo.accounts: Input should be greater than or equal to 1 (got -5)",
        ),
        ("demo:\n  reps: many\n", "territory.yaml: demo.reps: Input should be a valid integer"),
        ("demo:\n  acounts: 5\n", "territory.yaml: demo.acounts: unknown key"),
        ("colour: blue\n", "territory.yaml: colour: unknown key"),
        (
            "logging:\n  level: LOUD\n",
            "territory.yaml: logging.level: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
        ),
        (
            "database_url: postgresql://x\n",
            "territory.yaml: database_url: secrets are read only from the environment",
        ),
        ("demo: [\n", "territory.yaml: line 2, column 1: not valid YAML"),
        ("- just\n- a list\n", "territory.yaml: the top level must be a mapping of keys, not list"),
        ("demo: 5\n", "territory.yaml: demo: Input should be a valid dictionary"),
    ],
)
def test_bad_file_names_file_and_key(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, body))
    message = str(info.value)
    assert "\n" not in message
    assert expected in message
    assert str(tmp_path) in message


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_DATABASE__POOL_SIZE", "0")
    with pytest.raises(
        ConfigError, match=r"environment TERRITORY_DATABASE__POOL_SIZE: database.pool_size: .*greater"
    ):
        load_settings()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_several_problems_are_counted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(and 2 more problems\)$"):
        load_settings(write(tmp_path, "demo:\n  accounts: 0\n  reps: 0\n  seed: -1\n"))


def test_example_documents_every_key_with_its_default() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    fields = leaves(Settings)
    secrets = {k for k, f in fields.items() if _is_secret(f.annotation)}
    platform_dependent = {"data_dir"}
    assert flatten(data) == set(fields) - secrets - platform_dependent
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in secrets | platform_dependent:
        assert "TERRITORY_" + key.upper().replace(".", "__") in text
    assert load_settings(EXAMPLE).model_dump() == load_settings().model_dump()


def _secret_variables(model: type[BaseModel], prefix: str = "TERRITORY_") -> list[str]:
    """The environment variable of every secret field of ``model``, nested sections included."""
    found: list[str] = []
    for name, field in model.model_fields.items():
        if _is_secret(field.annotation):
            found.append(prefix + name.upper())
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += _secret_variables(field.annotation, f"{prefix}{name.upper()}__")
    return found


SECRET_VARIABLES = _secret_variables(Settings)


def test_every_secret_is_covered() -> None:
    assert {"TERRITORY_DATABASE_URL", "TERRITORY_WEBHOOKS__HUBSPOT_CLIENT_SECRET"} <= set(SECRET_VARIABLES)


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_a_blank_secret_is_unset(variable: str, blank: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, blank)
    settings = load_settings()
    node: object = settings
    for part in variable.removeprefix("TERRITORY_").lower().split("__"):
        node = getattr(node, part)
    assert node is None


def test_a_secret_with_content_is_kept_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRITORY_WEBHOOKS__HUBSPOT_CLIENT_SECRET", " s3cret ")
    secret = load_settings().webhooks.hubspot_client_secret
    assert secret is not None
    assert secret.get_secret_value() == " s3cret "


def test_a_configured_scenario_is_proposed_with_like_a_built_in_one(tmp_path: Path) -> None:
    body = (
        "rebalancer:\n  scenario: enterprise\n  scenarios:\n    - name: enterprise\n"
        "      bands: {potential: 0.08}\n      tier_ranges: {strategic: '2:8'}\n      move_weight: tenure\n"
    )
    settings = load_settings(write(tmp_path, body))
    scenario = settings.rebalancer.all_scenarios(settings.rules.drift_rules())["enterprise"]
    assert [(b.metric, b.tolerance) for b in scenario.bands] == [("potential", 0.08)]
    assert [(t.tier, t.minimum, t.maximum) for t in scenario.tier_ranges] == [("strategic", 2, 8)]
    assert scenario.move_weight == "tenure"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("rebalancer:\n  scenario: fairness\n", "rebalancer: Value error, scenario: 'fairness' is neither"),
        (
            "rebalancer:\n  scenarios:\n    - name: x\n      bands: {win_rate_12m: 0.1}\n",
            "rebalancer.scenarios.0: Value error, scenario x: metric 'win_rate_12m' cannot be rebalanced",
        ),
        (
            "rebalancer:\n  scenarios:\n    - name: x\n      tier_ranges: {strategic: two}\n",
            "rebalancer.scenarios.0: Value error, tier_ranges.strategic: expected MIN:MAX",
        ),
        ("rebalancer:\n  scenarios:\n    - name: revenue\n", "revenue is a built-in scenario's name"),
        ("rebalancer:\n  scenarios:\n    - name: x\n      colour: blue\n", "rebalancer.scenarios.0.colour"),
    ],
)
def test_a_bad_scenario_names_the_key(tmp_path: Path, body: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, body))
    assert "\n" not in str(info.value)
    assert expected in str(info.value)
