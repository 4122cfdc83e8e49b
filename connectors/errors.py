"""Connector errors, grouped by what the caller does about them.

Each connector maps its vendor's exceptions onto these in one place at its edge; the sync engine
retries only :class:`RetriableError`, stops cleanly (watermark saved) on :class:`QuotaExhausted`, and
quarantines :class:`BadRecordError` records while the rest of the sync goes on.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every connector error."""


class ConnectorConfigError(ConnectorError):
    """Missing or wrong credentials, URLs or field mappings: fix the configuration, do not retry."""


class RetriableError(ConnectorError):
    """A transient failure (429, 5xx, timeout, dropped connection): retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthExpiredError(RetriableError):
    """The session expired (Salesforce INVALID_SESSION_ID): re-authenticate once, then retry."""


class QuotaExhausted(ConnectorError):
    """The CRM's API quota is (nearly) used up: stop cleanly with the watermark saved, resume later."""


class FatalError(ConnectorError):
    """A failure that retrying cannot fix (a 4xx other than 401/429, a protocol violation)."""


class BadRecordError(ConnectorError):
    """One record cannot be stored; it goes to the quarantine with this reason."""
