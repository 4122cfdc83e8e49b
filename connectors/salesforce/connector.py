"""The Salesforce connector behind the ``connectors.base.Connector`` protocol, built from its settings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from connectors.base import Batch, CrmObject, Cursor, OwnerChange, WriteResult
from connectors.salesforce.auth import AuthMethod, Credentials
from connectors.salesforce.client import SalesforceClient, make_session
from connectors.salesforce.mapping import FieldMapping, build_mappings
from connectors.salesforce.settings import SalesforceSettings
from connectors.salesforce.streams import SalesforceStreams, StreamOptions
from connectors.salesforce.writeback import apply_owner_changes

__all__ = ["SalesforceConnector"]


class SalesforceConnector:
    """Reads User, Account and Opportunity and writes owner changes back, through simple-salesforce."""

    source = "salesforce"

    def __init__(
        self,
        client: SalesforceClient,
        mappings: Mapping[CrmObject, FieldMapping] | None = None,
        options: StreamOptions | None = None,
    ) -> None:
        self.client = client
        self.mappings = dict(mappings or build_mappings())
        self.streams = SalesforceStreams(client, self.mappings, options or StreamOptions())

    @classmethod
    def from_settings(cls, sf: SalesforceSettings) -> SalesforceConnector:
        """The connector the ``salesforce`` settings section describes (nothing is called yet)."""

        def secret(value: object) -> str | None:
            getter = getattr(value, "get_secret_value", None)
            return str(getter()) if getter is not None else None

        creds = Credentials(
            method=AuthMethod(sf.auth),
            login_url=sf.login_url,
            instance_url=sf.instance_url,
            access_token=secret(sf.access_token),
            username=sf.username,
            password=secret(sf.password),
            security_token=secret(sf.security_token),
            consumer_key=sf.consumer_key,
            private_key_path=Path(sf.private_key_path) if sf.private_key_path else None,
            api_version=sf.api_version,
        )
        creds.check()
        client = SalesforceClient(
            creds,
            session=make_session(str(sf.ca_bundle) if sf.ca_bundle else None, sf.timeout_seconds),
            quota_share=sf.quota_share,
            max_attempts=sf.max_attempts,
            max_wait_seconds=sf.max_wait_seconds,
        )
        mappings = build_mappings(sf.fields.model_dump(), probability_is_percent=sf.probability_is_percent)
        options = StreamOptions(
            lookback=dt.timedelta(seconds=sf.lookback_seconds),
            bulk_threshold_rows=sf.bulk_threshold_rows,
            page_size=sf.page_size,
            bulk_page_rows=sf.bulk_page_rows,
            bulk_poll_seconds=sf.bulk_poll_seconds,
        )
        return cls(client, mappings, options)

    def read(
        self, obj: CrmObject, since: Cursor | None, *, full: bool = False, batch_rows: int | None = None
    ) -> Iterator[Batch]:
        """Batches of ``obj`` changed since ``since``; see :mod:`connectors.salesforce.streams`. Their
        size is the API's pages' (``page_size``, ``bulk_page_rows``), whatever ``batch_rows`` says."""
        return self.streams.read(obj, since, full=full)

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]:
        """Owner changes of accounts or opportunities, conflict-checked; see :mod:`.writeback`."""
        if obj is CrmObject.owners:
            raise ValueError("owners have no owner to change")
        sobject = "Opportunity" if obj is CrmObject.opportunities else "Account"
        return apply_owner_changes(self.client, changes, sobject)
