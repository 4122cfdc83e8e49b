"""Which connector a source name means, built from the settings (CRM client libraries load lazily)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

from connectors.base import Connector
from connectors.csv_files import CsvConnector
from connectors.errors import ConnectorConfigError

if TYPE_CHECKING:  # connectors do not import the service layer at run time
    from service.settings import Settings

SOURCES: Final = ("salesforce", "hubspot", "csv")
_CLASSES: Final = {
    "salesforce": ("connectors.salesforce", "SalesforceConnector"),
    "hubspot": ("connectors.hubspot", "HubSpotConnector"),
}


def build_connector(source: str, settings: Settings, path: Path | None = None) -> Connector:
    """The connector for ``source`` configured by ``settings`` (``path``: the CSV export's folder)."""
    if source == "csv":
        if path is None:
            raise ConnectorConfigError("the csv source needs --path, the folder holding the export")
        return CsvConnector(path, chunk_rows=settings.sync.batch_size)
    if source not in _CLASSES:
        raise ConnectorConfigError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    module_name, class_name = _CLASSES[source]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConnectorConfigError(f"the {source} connector is not available in this build") from None
        raise
    factory = getattr(getattr(module, class_name, None), "from_settings", None)
    if factory is None:
        raise ConnectorConfigError(f"the {source} connector is not available in this build")
    connector: Connector = factory(settings)
    return connector
