"""The HubSpot connector: owners, companies and deals through hubspot-api-client, owner write-back.

``settings`` declares the ``hubspot`` settings section, ``connector`` the connector itself,
``client`` holds the API objects and the one mapping of vendor errors (with the retries), ``streams``
the incremental reads, ``mapping`` the configured property mapping, ``writeback`` the conflict-checked
owner changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.hubspot.connector import HubSpotConnector

__all__ = ["HubSpotConnector"]


def __getattr__(name: str) -> Any:
    """``HubSpotConnector`` on first use: its settings section imports without the client library."""
    if name == "HubSpotConnector":
        from connectors.hubspot.connector import HubSpotConnector

        return HubSpotConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
