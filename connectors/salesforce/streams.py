"""Reading User, Account and Opportunity as batches in ascending (SystemModstamp, Id) order.

Incremental reads go through ``queryAll`` so deleted records (``IsDeleted``) arrive with the changes;
they restart at the saved cursor minus the lookback window (a closed start, the engine de-duplicates on
the id), or exactly after the compound cursor when there is no lookback. A full read of more rows than
``bulk_threshold_rows`` uses a Bulk API 2.0 query job instead of REST paging.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectors.base import Batch, CrmObject, Cursor
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.mapping import CURSOR_FIELD, FieldMapping

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOptions:
    """How the streams read: lookback, when to switch to Bulk API 2.0, page sizes."""

    lookback: dt.timedelta = dt.timedelta(minutes=5)
    bulk_threshold_rows: int = 50_000
    page_size: int = 2000
    bulk_page_rows: int = 50_000
    bulk_poll_seconds: float = 0.5


def soql_datetime(moment: dt.datetime) -> str:
    """A SOQL datetime literal (UTC, milliseconds)."""
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def incremental_soql(mapping: FieldMapping, since: Cursor | None, lookback: dt.timedelta) -> str:
    """The query of what changed since ``since``, ordered by the compound cursor."""
    select = f"SELECT {', '.join(mapping.select_fields())} FROM {mapping.sobject}"  # noqa: S608 - SOQL
    order = f" ORDER BY {CURSOR_FIELD} ASC, Id ASC"
    if since is None:
        return select + order
    if lookback <= dt.timedelta(0) and since.last_id:
        stamp = soql_datetime(since.modified_at)
        last_id = since.last_id.replace("\\", "\\\\").replace("'", "\\'")
        where = f" WHERE {CURSOR_FIELD} > {stamp} OR ({CURSOR_FIELD} = {stamp} AND Id > '{last_id}')"
    else:
        start = soql_datetime(since.modified_at - max(lookback, dt.timedelta(0)))
        where = f" WHERE {CURSOR_FIELD} >= {start}"
    return select + where + order


def _is_deleted(raw: Mapping[str, Any]) -> bool:
    value = raw.get("IsDeleted")
    return value is True or value == "true"


def make_batch(mapping: FieldMapping, raws: Sequence[Mapping[str, Any]], *, with_cursor: bool) -> Batch:
    """Split one page into live records (mapped) and deleted ids; the cursor is the page's last record."""
    records: list[dict[str, Any]] = []
    raw_out: list[Mapping[str, Any]] = []
    deleted: list[str] = []
    to_record = mapping.to_record
    for raw in raws:
        if _is_deleted(raw):
            if isinstance(raw.get("Id"), str):
                deleted.append(raw["Id"])
            continue
        if isinstance(raw, dict):
            raw.pop("attributes", None)  # the record's own URL: noise in the quarantine
        records.append(to_record(raw))
        raw_out.append(raw)
    cursor = None
    if with_cursor:
        for raw in reversed(raws):
            cursor = FieldMapping.cursor_of(raw)
            if cursor is not None:
                break
    return Batch(records=records, raw=raw_out, deleted_ids=deleted, cursor=cursor)


class SalesforceStreams:
    """The read side of the connector."""

    def __init__(
        self, client: SalesforceClient, mappings: Mapping[CrmObject, FieldMapping], options: StreamOptions
    ) -> None:
        self.client = client
        self.mappings = mappings
        self.options = options

    def read(self, obj: CrmObject, since: Cursor | None, *, full: bool = False) -> Iterator[Batch]:
        """Batches of ``obj`` changed since ``since`` (everything when ``full`` or no cursor yet)."""
        mapping = self.mappings[obj]
        self.client.forget_usage()
        if full or since is None:
            total = self.client.count(mapping.sobject, include_deleted=True)
            log.info("salesforce full read", extra={"object": mapping.sobject, "rows": total})
            if total > self.options.bulk_threshold_rows:
                yield from self._bulk(mapping)
                return
            since = None
        soql = incremental_soql(mapping, since, self.options.lookback)
        for page in self.client.query_pages(soql, include_deleted=True, page_size=self.options.page_size):
            yield make_batch(mapping, page.get("records") or [], with_cursor=True)

    def _bulk(self, mapping: FieldMapping) -> Iterator[Batch]:
        """A Bulk API 2.0 read; its pages are unordered, so only the last batch carries a cursor."""
        soql = f"SELECT {', '.join(mapping.select_fields())} FROM {mapping.sobject}"  # noqa: S608 - SOQL
        best: Cursor | None = None
        pending: list[dict[str, str]] | None = None
        pages = self.client.bulk_query_pages(
            mapping.sobject,
            soql,
            include_deleted=mapping.has_deletes,
            page_rows=self.options.bulk_page_rows,
            poll_seconds=self.options.bulk_poll_seconds,
        )
        for text in pages:
            reader = csv.reader(io.StringIO(text))
            header = next(reader, [])
            rows = [dict(zip(header, values, strict=False)) for values in reader]
            for row in rows:
                cursor = FieldMapping.cursor_of(row)
                if cursor is not None and (best is None or cursor > best):
                    best = cursor
            if pending is not None:
                yield make_batch(mapping, pending, with_cursor=False)
            pending = rows
        last = make_batch(mapping, pending or [], with_cursor=False)
        yield Batch(last.records, last.raw, last.deleted_ids, best)
