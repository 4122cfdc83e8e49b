"""Which connector a source name means, built from the settings (CRM client libraries load lazily)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Final, Protocol

from connectors.base import Connector
from connectors.csv_files import CsvConnector
from connectors.errors import ConnectorConfigError
from connectors.hubspot.settings import HubSpotSettings
from connectors.salesforce.settings import SalesforceSettings

SOURCES: Final = ("salesforce", "hubspot", "csv")
_CLASSES: Final = {
    "salesforce": ("connectors.salesforce.connector", "SalesforceConnector"),
    "hubspot": ("connectors.hubspot.connector", "HubSpotConnector"),
}


class SyncConfig(Protocol):
    """What the registry reads of the sync engine's settings."""

    @property
    def batch_size(self) -> int: ...


class SourceSettings(Protocol):
    """The sections of the service's settings the connectors are built from."""

    @property
    def salesforce(self) -> SalesforceSettings: ...

    @property
    def hubspot(self) -> HubSpotSettings: ...

    @property
    def sync(self) -> SyncConfig: ...


def _connector_class(source: str) -> Any:
    """The connector class of ``source``, imported now (its client library with it)."""
    module_name, class_name = _CLASSES[source]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConnectorConfigError(f"the {source} connector is not available in this build") from None
        raise
    cls = getattr(module, class_name, None)
    if getattr(cls, "from_settings", None) is None:
        raise ConnectorConfigError(f"the {source} connector is not available in this build")
    return cls


def build_connector(source: str, settings: SourceSettings, path: Path | None = None) -> Connector:
    """The connector for ``source`` configured by ``settings`` (``path``: the CSV export's folder)."""
    if source == "csv":
        if path is None:
            raise ConnectorConfigError("the csv source needs --path, the folder holding the export")
        return CsvConnector(path, chunk_rows=settings.sync.batch_size)
    if source not in _CLASSES:
        raise ConnectorConfigError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    cls = _connector_class(source)
    connector: Connector
    if source == "hubspot":
        connector = cls.from_settings(settings.hubspot, batch_rows=settings.sync.batch_size)
    else:
        connector = cls.from_settings(settings.salesforce)
    return connector
