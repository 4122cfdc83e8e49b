"""The HubSpot connector as the sync engine and the write-back see it, built from its settings section."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from connectors.base import Batch, CrmObject, Cursor, OwnerChange, WriteResult
from connectors.errors import ConnectorConfigError
from connectors.hubspot import writeback
from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.settings import HubSpotSettings
from connectors.hubspot.streams import ObjectStream, owner_batches, prefetched

__all__ = ["HubSpotConnector"]


class HubSpotConnector:
    """HubSpot as the sync engine and the write-back see it (:class:`connectors.base.Connector`)."""

    source = "hubspot"

    def __init__(
        self, client: HubSpotClient, settings: HubSpotSettings, *, batch_rows: int = 5000, prefetch: int = 1
    ) -> None:
        self.client = client
        self.settings = settings
        self.prefetch = prefetch  # batches read ahead in a worker thread while the engine stores one
        self.companies = ObjectStream(
            client,
            "companies",
            settings.companies.model_dump(),
            page_size=settings.search_page_size,
            list_page_size=settings.list_page_size,
            batch_rows=batch_rows,
        )
        self.deals = ObjectStream(
            client,
            "deals",
            settings.deals.model_dump(),
            page_size=settings.search_page_size,
            list_page_size=settings.list_page_size,
            batch_rows=batch_rows,
        )

    @classmethod
    def from_settings(cls, settings: HubSpotSettings, *, batch_rows: int = 5000) -> HubSpotConnector:
        """The connector of the ``hubspot`` section (ConnectorConfigError when the token is missing).

        Batches hold about ``batch_rows`` records, the rows the engine stores per transaction.
        """
        return cls(HubSpotClient(settings), settings, batch_rows=batch_rows)

    def read(
        self, obj: CrmObject, since: Cursor | None, *, full: bool = False, batch_rows: int | None = None
    ) -> Iterator[Batch]:
        """Batches of ``obj`` changed since ``since`` (everything when ``full``), then its deletes. A
        batch holds about the connector's ``batch_rows`` records, whatever the engine's ``batch_rows``:
        what was read before a quota stop or an error is stored, a batch at most lost."""
        start = None if full else since
        if obj is CrmObject.owners:
            return owner_batches(self.client, start)
        if obj is CrmObject.accounts:
            return prefetched(self.companies.batches(start), self.prefetch)
        if obj is CrmObject.opportunities:
            return prefetched(self.deals.batches(start), self.prefetch)
        raise ValueError(f"HubSpot has no {obj}")

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]:
        """Write owner changes whose company (or deal) still has the expected owner; one result each."""
        if obj is CrmObject.owners:
            raise ValueError("owners have no owner to change")
        deals = obj is CrmObject.opportunities
        owner_property = self.settings.deals.owner_id if deals else self.settings.companies.owner_id
        if owner_property is None:
            raise ConnectorConfigError("hubspot.deals.owner_id is null: deal owners cannot be written")
        return writeback.apply_owner_changes(
            self.client,
            changes,
            owner_property=owner_property,
            batch_size=self.settings.batch_size,
            kind="deals" if deals else "companies",
        )
