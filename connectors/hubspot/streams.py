"""What changed in HubSpot since a cursor: owners, companies, deals (with their company), and deletes.

Companies and deals are read by search on ``hs_lastmodifieddate`` ascending, re-anchored on every page
(keyset paging): each request asks for records modified at or after the last timestamp of the previous
page, whose trailing records at that timestamp are held back and come again at the head of the next
page. Offsets therefore never grow, so the search's 10,000-result cap is never reached, and a record
modified mid-run moves past the anchor instead of shifting a page and being skipped. A full page that
shares one timestamp is swept by ``hs_object_id`` (keyset again), then the search goes on after it:
every record is read exactly once. Deletes come from the archived listing.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from connectors.base import Batch, Cursor
from connectors.hubspot.client import HubSpotClient
from connectors.hubspot.mapping import (
    MODIFIED_PROPERTY,
    OBJECT_ID_PROPERTY,
    PropertyMap,
    map_company,
    map_deal,
    map_owner,
    parse_timestamp,
    primary_company,
    requested_properties,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_ASCENDING = [{"propertyName": MODIFIED_PROPERTY, "direction": "ASCENDING"}]
_BY_ID = [{"propertyName": OBJECT_ID_PROPERTY, "direction": "ASCENDING"}]


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _modified_ms(obj: Mapping[str, Any]) -> int:
    """A search result's hs_lastmodifieddate in epoch ms (-1 when missing: sorts first, never anchors)."""
    moment = parse_timestamp((obj.get("properties") or {}).get(MODIFIED_PROPERTY))
    return _ms(moment) if moment is not None else -1


def _has_more(page: Mapping[str, Any]) -> bool:
    return bool((page.get("paging") or {}).get("next"))


class ObjectStream:
    """Reads one object type (companies or deals) through the search and the archived listing."""

    def __init__(
        self,
        client: HubSpotClient,
        kind: str,
        mapping: PropertyMap,
        *,
        page_size: int,
        list_page_size: int,
        batch_rows: int = 5000,
    ) -> None:
        self.client = client
        self.kind = kind
        self.mapping = mapping
        self.page_size = page_size
        self.list_page_size = list_page_size
        self.batch_rows = batch_rows
        self.properties = requested_properties(mapping)
        self.requests = 0
        if kind == "companies":
            self._search_api, self._basic_api = client.companies_search, client.companies_basic
        elif kind == "deals":
            self._search_api, self._basic_api = client.deals_search, client.deals_basic
        else:
            raise ValueError(f"unknown HubSpot object type {kind!r}")

    # -- search ----------------------------------------------------------------------------------

    def _search(self, filters: list[dict[str, str]], sorts: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "sorts": sorts,
            "properties": self.properties,
            "limit": self.page_size,
        }
        self.requests += 1
        self.client.pace_search()
        return self.client.call_json(f"search {self.kind}", self._search_api.do_search, body)

    def changed_pages(self, since_ms: int | None) -> Iterator[list[dict[str, Any]]]:
        """Pages of records modified at or after ``since_ms`` (all when None), ascending, each once."""
        anchor, operator = since_ms, "GTE"
        while True:
            filters = [] if anchor is None else [_filter(MODIFIED_PROPERTY, operator, anchor)]
            page = self._search(filters, _ASCENDING)
            results: list[dict[str, Any]] = page.get("results") or []
            if not _has_more(page):
                if results:
                    yield results
                return
            last = _modified_ms(results[-1])
            head = [r for r in results if _modified_ms(r) < last]
            if head:
                yield head
                anchor, operator = last, "GTE"
            else:
                log.info(
                    "hubspot: a full page shares one hs_lastmodifieddate; sweeping it by id",
                    extra={"object": self.kind, "modified_ms": last},
                )
                yield from self._sweep(last)
                anchor, operator = last, "GT"

    def _sweep(self, at_ms: int) -> Iterator[list[dict[str, Any]]]:
        """Every record modified exactly at ``at_ms``, by ascending hs_object_id, re-anchored per page."""
        after_id: str | None = None
        while True:
            filters = [_filter(MODIFIED_PROPERTY, "EQ", at_ms)]
            if after_id is not None:
                filters.append(_filter(OBJECT_ID_PROPERTY, "GT", after_id))
            page = self._search(filters, _BY_ID)
            results: list[dict[str, Any]] = page.get("results") or []
            if results:
                yield results
                after_id = str(results[-1]["id"])
            if not results or not _has_more(page):
                return

    # -- deletes ---------------------------------------------------------------------------------

    def deleted_pages(self, since: dt.datetime | None) -> Iterator[list[str]]:
        """Ids of archived records (archived at or after ``since`` when given), a page at a time."""
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.list_page_size, "archived": True}
            kwargs["properties"] = [OBJECT_ID_PROPERTY]
            if after is not None:
                kwargs["after"] = after
            self.requests += 1
            page = self.client.call_json(f"list archived {self.kind}", self._basic_api.get_page, **kwargs)
            ids = []
            for obj in page.get("results") or []:
                archived_at = parse_timestamp(obj.get("archivedAt"))
                if since is None or archived_at is None or archived_at >= since:
                    ids.append(str(obj["id"]))
            if ids:
                yield ids
            nxt = (page.get("paging") or {}).get("next") or {}
            after = nxt.get("after")
            if not after:
                return

    # -- batches ---------------------------------------------------------------------------------

    def batches(self, since: Cursor | None) -> Iterator[Batch]:
        """Changed records as canonical batches of about ``batch_rows`` with their cursor, then the deletes.

        Pages are gathered into batches because the engine stores each batch in one transaction: a few
        thousand rows a transaction instead of one page's 200.
        """
        since_at = since.modified_at if since is not None else None
        records: list[dict[str, Any]] = []
        raw: list[dict[str, Any]] = []
        for page in self.changed_pages(_ms(since_at) if since_at is not None else None):
            records += self._map(page)
            raw += page
            if len(records) >= self.batch_rows:
                yield _batch(records, raw)
                records, raw = [], []
        if records:
            yield _batch(records, raw)
        for ids in self.deleted_pages(since_at):
            yield Batch(records=(), raw=(), deleted_ids=ids)

    def _map(self, page: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self.kind == "companies":
            return [map_company(obj, self.mapping) for obj in page]
        companies = self._companies_of([str(obj["id"]) for obj in page])
        return [map_deal(obj, self.mapping, companies.get(str(obj["id"]))) for obj in page]

    def _companies_of(self, deal_ids: Sequence[str]) -> dict[str, str]:
        """Deal id -> its (primary) company id, by the v4 associations batch read; absent when none."""
        if not deal_ids:
            return {}
        self.requests += 1
        body = {"inputs": [{"id": i} for i in deal_ids]}
        answer = self.client.call_json(
            "read deal associations", self.client.associations.get_page, "deals", "companies", body
        )
        found: dict[str, str] = {}
        for item in answer.get("results") or []:
            company = primary_company(item.get("to"))
            deal = (item.get("from") or {}).get("id")
            if company is not None and deal is not None:
                found[str(deal)] = company
        return found


def prefetched(source: Iterator[T], depth: int) -> Iterator[T]:
    """The items of ``source``, produced in a worker thread up to ``depth`` items ahead.

    The next batch's requests then overlap the caller's storing of the current one. An error in the
    worker is raised here; when the caller stops early the worker stops at its next item.
    """
    if depth <= 0:
        yield from source
        return
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(message, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def work() -> None:
        try:
            for item in source:
                if not put(("item", item)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))

    worker = threading.Thread(target=work, name="hubspot-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()


def _batch(records: list[dict[str, Any]], raw: list[dict[str, Any]]) -> Batch:
    """A batch whose cursor is its last record's (hs_lastmodifieddate, id): records come ascending."""
    last = raw[-1]
    moment = parse_timestamp((last.get("properties") or {}).get(MODIFIED_PROPERTY))
    cursor = Cursor(moment, str(last["id"])) if moment is not None else None
    return Batch(records=records, raw=raw, cursor=cursor)


def _filter(prop: str, operator: str, value: int | str) -> dict[str, str]:
    return {"propertyName": prop, "operator": operator, "value": str(value)}


def owner_batches(client: HubSpotClient, since: Cursor | None, page_size: int = 100) -> Iterator[Batch]:
    """All owners, active and archived (as inactive), updated at or after ``since``, as one batch.

    The owners API has no filter or order by date, so the list is read whole (owners are few) and the
    cursor is the newest ``updatedAt`` seen.
    """
    raw: list[dict[str, Any]] = []
    for archived in (False, True):
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size, "archived": archived}
            if after is not None:
                kwargs["after"] = after
            page = client.call_json("list owners", client.owners.get_page, **kwargs)
            raw.extend(page.get("results") or [])
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
    if since is not None:
        raw = [
            o for o in raw if (parse_timestamp(o.get("updatedAt")) or since.modified_at) >= since.modified_at
        ]
    if not raw:
        return
    stamps = [(parse_timestamp(o.get("updatedAt")), str(o.get("id"))) for o in raw]
    newest = max(((t, i) for t, i in stamps if t is not None), default=None)
    cursor = Cursor(newest[0], newest[1]) if newest is not None else None
    yield Batch(records=[map_owner(o) for o in raw], raw=raw, cursor=cursor)
