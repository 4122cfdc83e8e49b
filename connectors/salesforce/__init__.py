"""The Salesforce connector: simple-salesforce behind the ``connectors.base.Connector`` protocol.

Split by job: ``settings`` (the ``salesforce`` section), ``connector`` (the protocol's face),
``auth`` (sessions), ``client`` (errors, retries, re-auth, quota), ``mapping`` (fields),
``streams`` (incremental and bulk reads), ``writeback`` (conflict-checked owner changes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.salesforce.connector import SalesforceConnector

__all__ = ["SalesforceConnector"]


def __getattr__(name: str) -> Any:
    """``SalesforceConnector`` on first use: its settings section imports without the client library."""
    if name == "SalesforceConnector":
        from connectors.salesforce.connector import SalesforceConnector

        return SalesforceConnector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
