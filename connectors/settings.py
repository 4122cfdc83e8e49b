"""What every connector's settings section shares: strict keys, blank secrets unset, its variable names.

Each CRM declares its own section next to its code (``connectors/salesforce/settings.py``,
``connectors/hubspot/settings.py``); the service composes them into its one settings model under the
key the section names (:attr:`Section.key`). The environment variable of a setting is derived here
from the model, so a message telling the operator which variable to set cannot drift from the name
the settings loader reads.
"""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationInfo, field_validator

ENV_PREFIX: Final = "TERRITORY_"
ENV_NESTED: Final = "__"


def env_name(*keys: str) -> str:
    """The environment variable of the dotted setting ``keys`` (``salesforce``, ``password``)."""
    return ENV_PREFIX + ENV_NESTED.join(key.upper() for key in keys)


def is_secret(annotation: Any) -> bool:
    """Whether a field's annotation is ``SecretStr`` or ``SecretStr | None``."""
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return SecretStr in typing.get_args(annotation)
    return False


def blank_is_unset(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """An empty or whitespace-only secret counts as unset: it must never act as a key."""
    field = model.model_fields.get(info.field_name or "")
    if field is not None and is_secret(field.annotation):
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and not raw.strip():
            return None
    return value


class Section(BaseModel):
    """A nested settings section: unknown keys are errors, not silently ignored.

    A top-level section sets :attr:`key`, the name it has in the composed settings, so that
    :meth:`env` can name the environment variable of any of its fields.
    """

    model_config = ConfigDict(extra="forbid")

    key: ClassVar[str | None] = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_secret(cls, value: Any, info: ValidationInfo) -> Any:
        return blank_is_unset(cls, value, info)

    @classmethod
    def env(cls, field: str) -> str:
        """The environment variable that sets ``field`` of this section (a secret's only source)."""
        if cls.key is None:
            raise TypeError(f"{cls.__name__} is not a top-level settings section")
        if field not in cls.model_fields:
            raise KeyError(f"{cls.__name__} has no setting {field!r}")
        return env_name(cls.key, field)

    @classmethod
    def setting(cls, field: str) -> str:
        """The dotted key of ``field`` as the config file and error messages spell it."""
        if cls.key is None:
            raise TypeError(f"{cls.__name__} is not a top-level settings section")
        if field not in cls.model_fields:
            raise KeyError(f"{cls.__name__} has no setting {field!r}")
        return f"{cls.key}.{field}"
