"""The one settings model: defaults, then a YAML file, then ``TERRITORY_*`` environment variables.

Secrets (``SecretStr`` fields) are read only from the environment; a config file that holds one is
refused. Every problem is reported as a :class:`ConfigError` whose one-line message names the file or
the environment variable, the key, and what is wrong.
"""

from __future__ import annotations

import contextvars
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from service.errors import ConfigError

ENV_PREFIX = "TERRITORY_"
ENV_NESTED = "__"
CONFIG_ENV = "TERRITORY_CONFIG"


class Section(BaseModel):
    """A nested settings section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(Section):
    """Connection pool of the daemon's database (the URL itself is the secret ``database_url``)."""

    pool_size: int = Field(5, ge=1, le=100, description="connections kept open per process")


class LoggingSettings(Section):
    """How the daemon logs: JSON lines for machines, text for a terminal."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class DemoSettings(Section):
    """The generated org that ``territory demo`` loads on the embedded default."""

    accounts: int = Field(5000, ge=1, le=10_000_000)
    reps: int = Field(40, ge=1, le=100_000)
    seed: int = Field(7, ge=0)


_config_file: contextvars.ContextVar[tuple[Path, dict[str, Any]] | None] = contextvars.ContextVar(
    "territory_config_file", default=None
)


class Settings(BaseSettings):
    """Everything the daemon can be told; build it with :func:`load_settings`, once, in ``main()``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED,
        extra="forbid",
        validate_default=True,
    )

    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL; unset means the embedded PostgreSQL in data_dir"
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("territory-monitor")),
        description="where the embedded PostgreSQL and generated files live",
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments win over the environment, which wins over the config file."""
        loaded = _config_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if loaded is not None:
            sources.append(_YamlSource(settings_cls, loaded[1]))
        return tuple(sources)


class _YamlSource(PydanticBaseSettingsSource):
    """The parsed config file as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _is_secret(annotation: Any) -> bool:
    """Whether a field's annotation is ``SecretStr`` or ``SecretStr | None``."""
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return SecretStr in typing.get_args(annotation)
    return False


def _secret_keys(data: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of ``data`` that are secret fields of ``model``."""
    found: list[str] = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        if _is_secret(field.annotation):
            found.append(prefix + key)
        elif (
            isinstance(field.annotation, type)
            and issubclass(field.annotation, BaseModel)
            and isinstance(value, Mapping)
        ):
            found += _secret_keys(value, field.annotation, f"{prefix}{key}.")
    return found


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, refusing secrets and anything but a mapping."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(data).__name__}")
    secrets = _secret_keys(data, Settings)
    if secrets:
        env = ENV_PREFIX + secrets[0].upper().replace(".", ENV_NESTED)
        raise ConfigError(
            f"{path}: {secrets[0]}: secrets are read only from the environment; remove it and set {env}"
        )
    return data


def _in_mapping(data: Mapping[str, Any], loc: tuple[str | int, ...]) -> bool:
    """Whether the dotted location ``loc`` was given in ``data``."""
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _describe(error: Mapping[str, Any], path: Path | None, data: Mapping[str, Any]) -> str:
    """One line for one validation error: where it came from, the key, what is wrong."""
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    if path is not None and _in_mapping(data, loc):
        origin = str(path)
    else:
        origin = "environment " + ENV_PREFIX + ENV_NESTED.join(str(p).upper() for p in loc)
    if error["type"] == "extra_forbidden":
        return f"{origin}: {key}: unknown key"
    given = error.get("input")
    shown = "" if isinstance(given, Mapping) else f" (got {given!r})"
    return f"{origin}: {key}: {error['msg']}{shown}"


def load_settings(config_path: Path | None = None) -> Settings:
    """Build the settings from ``config_path`` (or ``$TERRITORY_CONFIG``) and the environment."""
    if config_path is None and os.environ.get(CONFIG_ENV):
        config_path = Path(os.environ[CONFIG_ENV])
    data = read_config_file(config_path) if config_path is not None else {}
    token = _config_file.set((config_path, data) if config_path is not None else None)
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigError(_describe(first, config_path, data) + suffix) from None
    finally:
        _config_file.reset(token)
