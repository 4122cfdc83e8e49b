"""A local fake of the HubSpot CRM v3 API, seeded from a generated org.

Faithful enough that the real ``hubspot-api-client`` cannot tell it from the service: owners, companies
and deals (list with ``after`` paging and ``archived``, search with filters, one sort and the 10,000-result
cap, batch read, batch update with 207 multi-status), deal-to-company associations (v4 batch read),
bearer-token auth, the rate-limit headers and the 429 body. Records live in numpy columns and are rendered
to JSON per page, so 200,000 companies and 600,000 deals cost little memory. Faults are injected by flags
(:class:`HubSpotFaults`); tests reach the data through :attr:`SandboxServer.state`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
import pandas as pd

from connectors.sandbox.generator import Org
from connectors.sandbox.http import Request, Response, SandboxHttpServer

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
# A property column: the values of the given rows as the API renders them (strings or None).
Column = Callable[[IntArray], list[str | None]]

SEARCH_CAP: Final = 10_000
SEARCH_MAX_LIMIT: Final = 200
LIST_MAX_LIMIT: Final = 100
BATCH_MAX_INPUTS: Final = 100
ASSOCIATION_BATCH_MAX_INPUTS: Final = 1_000
DAILY_LIMIT: Final = 500_000
INTERVAL_MAX: Final = 190

OWNER_ID_BASE: Final = 70_000_000
USER_ID_BASE: Final = 9_000_000
COMPANY_ID_BASE: Final = 20_000_000_000
DEAL_ID_BASE: Final = 30_000_000_000

# HubSpot's default sales pipeline: internal stage ids for the generator's stage names.
DEAL_STAGES: Final[Mapping[str, str]] = {
    "Prospecting": "appointmentscheduled",
    "Qualification": "qualifiedtobuy",
    "Needs Analysis": "presentationscheduled",
    "Proposal": "decisionmakerboughtin",
    "Negotiation": "contractsent",
    "Closed Won": "closedwon",
    "Closed Lost": "closedlost",
}
# Association type ids of deal -> company: the primary label and the unlabelled default.
DEAL_TO_COMPANY_PRIMARY: Final = 5
DEAL_TO_COMPANY: Final = 341

# Properties whose values are timestamps: filters compare them as epoch milliseconds.
_DATETIME_PROPERTIES: Final = frozenset({"createdate", "hs_lastmodifieddate", "closedate"})
# What a search or list returns when the request names no properties.
_DEFAULT_PROPERTIES: Final[Mapping[str, tuple[str, ...]]] = {
    "companies": ("name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"),
    "deals": ("dealname", "amount", "dealstage", "pipeline", "closedate", "createdate",
              "hs_lastmodifieddate", "hs_object_id"),
}  # fmt: skip
_ALWAYS_PROPERTIES: Final = ("createdate", "hs_lastmodifieddate", "hs_object_id")
_OBJECT_TYPE_NAMES: Final = {"companies": "COMPANY", "deals": "DEAL"}


@dataclass(frozen=True)
class HubSpotFaults:
    """Faults to inject, as shares of requests (0..1) drawn from a seeded RNG so runs repeat.

    ``modify_during_paging`` / ``delete_during_paging`` records of the paged type are modified (their
    ``hs_lastmodifieddate`` moves to now) or archived after each search or list page is served.
    """

    rate_limit_share: float = 0.0
    retry_after_seconds: float = 1.0
    server_error_share: float = 0.0
    server_error_statuses: tuple[int, ...] = (500, 502, 503)
    slow_share: float = 0.0
    slow_seconds: float = 0.0
    modify_during_paging: int = 0
    delete_during_paging: int = 0
    daily_limit: int = DAILY_LIMIT  # requests a day; past it every request gets the DAILY 429
    seed: int = 0


def _iso_ms(ms: int) -> str:
    """Epoch milliseconds as HubSpot writes timestamps: ``2024-12-16T17:39:47.123Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _number(value: float) -> str | None:
    """A number property as HubSpot renders it (no trailing ``.0``); None when blank."""
    if math.isnan(value):
        return None
    return str(int(value)) if value.is_integer() else repr(float(value))


def _iso_many(ms: IntArray) -> list[str]:
    """Many epoch-millisecond values as HubSpot timestamps, vectorised."""
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms")
    return [t + "Z" for t in text.tolist()]


def _text_column(values: npt.NDArray[np.object_]) -> Column:
    return lambda rows: [None if v is None else str(v) for v in values[rows].tolist()]


def _number_column(values: npt.NDArray[np.float64]) -> Column:
    return lambda rows: [_number(v) for v in values[rows].tolist()]


def _bool_column(values: npt.NDArray[np.bool_]) -> Column:
    return lambda rows: ["true" if v else "false" for v in values[rows].tolist()]


def _time_column(values: IntArray) -> Column:
    return lambda rows: list(_iso_many(values[rows]))


def _epoch_ms(values: pd.Series) -> IntArray:
    """A datetime column (naive means UTC) as int64 epoch milliseconds."""
    stamps = pd.to_datetime(values, utc=True)
    return np.asarray(stamps.astype("datetime64[ms, UTC]").astype("int64"), dtype=np.int64)


def _parse_ms(value: str) -> float:
    """A filter value for a timestamp property: epoch ms or an ISO 8601 date/time."""
    try:
        return float(value)
    except ValueError:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp() * 1000


class ApiError(Exception):
    """An error response of the fake API: status, HubSpot's error body and extra headers."""

    def __init__(
        self, status: int, message: str, category: str, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        }
        self.headers = dict(headers or {})


def _validation(message: str) -> ApiError:
    return ApiError(400, message, "VALIDATION_ERROR")


class ObjectTable:
    """One object type (companies or deals) as columns; ids are ``base + row``.

    Properties come from typed columns rendered on read; writes go to a per-row overlay, so a test or the
    batch update can change any record without copying the columns.
    """

    def __init__(
        self,
        kind: str,
        base: int,
        columns: Mapping[str, Column],
        created_ms: IntArray,
        modified_ms: IntArray,
    ) -> None:
        self.kind = kind
        self.base = base
        self._columns = dict(columns)
        self.created_ms = created_ms
        self.modified_ms = modified_ms.copy()
        self.archived_ms = np.zeros(len(modified_ms), dtype=np.int64)  # 0 while live
        self.archived_any = False
        self.overlay: dict[int, dict[str, str | None]] = {}
        self._order: IntArray | None = None
        self._sorted_ms: IntArray | None = None

    def __len__(self) -> int:
        return len(self.modified_ms)

    def row(self, object_id: str | int) -> int | None:
        """The row of an id, or None when the id is not one of this table's."""
        try:
            row = int(object_id) - self.base
        except (TypeError, ValueError):
            return None
        return row if 0 <= row < len(self) else None

    def live(self, row: int) -> bool:
        return bool(self.archived_ms[row] == 0)

    def prop(self, row: int, name: str) -> str | None:
        """The value of property ``name`` of ``row`` as the API returns it (strings or null)."""
        over = self.overlay.get(row)
        if over is not None and name in over:
            return over[name]
        return self.values(np.array([row], dtype=np.int64), name)[0]

    def values(self, rows: IntArray, name: str) -> list[str | None]:
        """Property ``name`` of many rows (the overlay not applied)."""
        if name == "hs_object_id":
            return [str(v) for v in (rows + self.base).tolist()]
        if name == "hs_lastmodifieddate":
            return list(_iso_many(self.modified_ms[rows]))
        if name == "createdate":
            return list(_iso_many(self.created_ms[rows]))
        column = self._columns.get(name)
        return column(rows) if column is not None else [None] * len(rows)

    def has_property(self, name: str) -> bool:
        return name in self._columns or name in _ALWAYS_PROPERTIES

    def render(self, row: int, properties: Sequence[str]) -> dict[str, Any]:
        """The SimplePublicObject of ``row`` with ``properties`` (plus the ones HubSpot always adds)."""
        return self.render_many(np.array([row], dtype=np.int64), properties)[0]

    def render_many(self, rows: IntArray, properties: Sequence[str]) -> list[dict[str, Any]]:
        """The SimplePublicObjects of ``rows``, built a column at a time (a page costs milliseconds)."""
        rows = np.asarray(rows, dtype=np.int64)
        names = list(dict.fromkeys([*properties, *_ALWAYS_PROPERTIES]))
        columns = [self.values(rows, name) for name in names]
        created = _iso_many(self.created_ms[rows])
        updated = _iso_many(self.modified_ms[rows])
        archived_ms = self.archived_ms[rows].tolist()
        out: list[dict[str, Any]] = []
        for i, row in enumerate(rows.tolist()):
            props = {name: column[i] for name, column in zip(names, columns, strict=True)}
            over = self.overlay.get(row)
            if over is not None:
                props.update({k: v for k, v in over.items() if k in props})
            obj: dict[str, Any] = {
                "id": str(self.base + row),
                "properties": props,
                "createdAt": created[i],
                "updatedAt": updated[i],
                "archived": archived_ms[i] != 0,
            }
            if archived_ms[i]:
                obj["archivedAt"] = _iso_ms(archived_ms[i])
            out.append(obj)
        return out

    def write(self, row: int, values: Mapping[str, str | None], at_ms: int) -> None:
        """Set properties of ``row`` and move its last-modified time to ``at_ms``."""
        self.overlay.setdefault(row, {}).update(values)
        self.modified_ms[row] = at_ms
        self._order = None

    def touch(self, rows: IntArray, at_ms: int) -> None:
        """Move the last-modified time of ``rows`` to ``at_ms`` (one vectorised write)."""
        self.modified_ms[rows] = at_ms
        self._order = None

    def archive(self, row: int, at_ms: int) -> None:
        self.archived_ms[row] = at_ms
        self.archived_any = True

    def by_modified(self) -> tuple[IntArray, IntArray]:
        """Rows ordered by (hs_lastmodifieddate, id) and their sorted timestamps, rebuilt after writes."""
        if self._order is None or self._sorted_ms is None:
            self._order = np.argsort(self.modified_ms, kind="stable").astype(np.int64)
            self._sorted_ms = self.modified_ms[self._order]
        return self._order, self._sorted_ms


@dataclass
class Owner:
    """One HubSpot owner (a user); ``archived`` owners are listed only with ``archived=true``."""

    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    team: str
    team_id: str
    created_ms: int
    updated_ms: int
    archived: bool = False

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "type": "PERSON",
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": self.user_id,
            "userIdIncludingInactive": self.user_id,
            "createdAt": _iso_ms(self.created_ms),
            "updatedAt": _iso_ms(self.updated_ms),
            "archived": self.archived,
            "teams": [{"id": self.team_id, "name": self.team, "primary": True}],
        }


class SandboxState:
    """The in-memory CRM: owners, companies, deals and deal -> company associations.

    Every method takes the state lock, so tests may change records while the server pages through them.
    """

    def __init__(self, org: Org, now_ms: int) -> None:
        self.lock = threading.RLock()
        self.owners: list[Owner] = []
        owner_ids: dict[str, str] = {}
        teams: dict[str, str] = {}
        for i, rec in enumerate(org.owners.itertuples(index=False)):
            first, _, last = str(rec.name).partition(" ")
            hs_id = str(OWNER_ID_BASE + i + 1)
            owner_ids[str(rec.id)] = hs_id
            team_id = teams.setdefault(str(rec.team), str(100 + len(teams)))
            self.owners.append(
                Owner(hs_id, str(rec.email), first, last, USER_ID_BASE + i + 1, str(rec.team), team_id,
                      now_ms - 400 * 86_400_000, now_ms - 30 * 86_400_000, archived=not bool(rec.active))
            )  # fmt: skip
        self.companies = self._companies(org.accounts, owner_ids)
        company_rows = pd.Index(org.accounts["id"]).get_indexer(org.opportunities["account_id"])
        self.deal_company: IntArray = np.where(company_rows >= 0, COMPANY_ID_BASE + company_rows, -1).astype(
            np.int64
        )
        self.deals = self._deals(org.opportunities, owner_ids)
        self.requests = 0
        self.api_writes: Counter[tuple[str, str]] = Counter()  # (kind, id) -> API updates, for exactly-once

    @staticmethod
    def _owner_column(values: pd.Series, owner_ids: Mapping[str, str]) -> Column:
        return _text_column(np.array([owner_ids.get(str(v)) for v in values], dtype=object))

    @classmethod
    def _companies(cls, accounts: pd.DataFrame, owner_ids: Mapping[str, str]) -> ObjectTable:
        name = accounts["name"].to_numpy(dtype=object)
        industry = accounts["industry"].to_numpy(dtype=object)
        tier = accounts["tier"].to_numpy(dtype=object)
        arr = accounts["arr"].to_numpy(dtype=np.float64)
        potential = accounts["potential"].to_numpy(dtype=np.float64)
        lat = accounts["lat"].to_numpy(dtype=np.float64)
        lon = accounts["lon"].to_numpy(dtype=np.float64)
        protected = accounts["protected"].to_numpy(dtype=bool)
        modified = _epoch_ms(accounts["modified_at"])
        columns: dict[str, Column] = {
            "name": _text_column(name),
            "domain": lambda rows: [
                f"{str(n).split(' ')[0].lower()}-{r}.example.com"
                for n, r in zip(name[rows], rows, strict=True)
            ],
            "hubspot_owner_id": cls._owner_column(accounts["owner_id"], owner_ids),
            "industry": _text_column(industry),
            "annualrevenue": _number_column(arr),
            "territory_tier": _text_column(tier),
            "territory_potential": _number_column(potential),
            "territory_lat": _number_column(lat),
            "territory_lon": _number_column(lon),
            "territory_protected": _bool_column(protected),
        }
        created = modified - 400 * 86_400_000
        return ObjectTable("companies", COMPANY_ID_BASE, columns, created, modified)

    @classmethod
    def _deals(cls, opps: pd.DataFrame, owner_ids: Mapping[str, str]) -> ObjectTable:
        name = opps["name"].to_numpy(dtype=object)
        stage = np.array([DEAL_STAGES.get(str(s), str(s)) for s in opps["stage"]], dtype=object)
        amount = opps["amount"].to_numpy(dtype=np.float64)
        probability = opps["probability"].to_numpy(dtype=np.float64)
        close_ms = _epoch_ms(opps["close_date"])
        is_closed = opps["is_closed"].to_numpy(dtype=bool)
        is_won = opps["is_won"].to_numpy(dtype=bool)
        modified = _epoch_ms(opps["modified_at"])
        columns: dict[str, Column] = {
            "dealname": _text_column(name),
            "pipeline": lambda rows: ["default"] * len(rows),
            "dealstage": _text_column(stage),
            "amount": _number_column(amount),
            "hs_deal_stage_probability": _number_column(probability),
            "closedate": _time_column(close_ms),
            "hs_is_closed": _bool_column(is_closed),
            "hs_is_closed_won": _bool_column(is_won),
            "hubspot_owner_id": cls._owner_column(opps["owner_id"], owner_ids),
        }
        created = np.minimum(modified, close_ms) - 30 * 86_400_000
        return ObjectTable("deals", DEAL_ID_BASE, columns, created, modified)

    def table(self, kind: str) -> ObjectTable:
        if kind == "companies":
            return self.companies
        if kind == "deals":
            return self.deals
        raise KeyError(kind)

    # The helpers below are what tests use to change the CRM while a sync runs.

    def modify(
        self, kind: str, object_id: str, values: Mapping[str, str | None], at_ms: int | None = None
    ) -> None:
        """Change properties of one record as a user would; its hs_lastmodifieddate moves to now."""
        with self.lock:
            table = self.table(kind)
            row = table.row(object_id)
            if row is None:
                raise KeyError(object_id)
            table.write(row, values, at_ms if at_ms is not None else _now_ms())

    def touch(self, kind: str, object_ids: Sequence[str] | IntArray, at_ms: int) -> None:
        """Give many records the same hs_lastmodifieddate (e.g. a bulk import) in one step."""
        with self.lock:
            table = self.table(kind)
            rows = np.asarray(object_ids, dtype=np.int64) - table.base
            table.touch(rows, at_ms)

    def delete(self, kind: str, object_id: str, at_ms: int | None = None) -> None:
        """Archive one record, as deleting it in HubSpot does."""
        with self.lock:
            table = self.table(kind)
            row = table.row(object_id)
            if row is None:
                raise KeyError(object_id)
            table.archive(row, at_ms if at_ms is not None else _now_ms())

    def archive_owner(self, owner_id: str, at_ms: int | None = None) -> None:
        """Deactivate an owner: it leaves the default listing and shows with ``archived=true``."""
        with self.lock:
            for owner in self.owners:
                if owner.id == owner_id:
                    owner.archived = True
                    owner.updated_ms = at_ms if at_ms is not None else _now_ms()
                    return
            raise KeyError(owner_id)

    def dissociate(self, deal_id: str) -> None:
        """Remove a deal's company association."""
        with self.lock:
            row = self.deals.row(deal_id)
            if row is None:
                raise KeyError(deal_id)
            self.deal_company[row] = -1

    def company_ids(self) -> list[str]:
        """Ids of the live companies, ascending."""
        with self.lock:
            return [str(COMPANY_ID_BASE + r) for r in np.flatnonzero(self.companies.archived_ms == 0)]

    def deal_ids(self) -> list[str]:
        """Ids of the live deals, ascending."""
        with self.lock:
            return [str(DEAL_ID_BASE + r) for r in np.flatnonzero(self.deals.archived_ms == 0)]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------------------------- search


@dataclass(frozen=True)
class _Filter:
    prop: str
    operator: str
    value: str | None
    high: str | None
    values: tuple[str, ...]


def _parse_filters(body: Mapping[str, Any]) -> list[list[_Filter]]:
    """The request's filter groups, validated as HubSpot does (5 groups, 6 filters each, 18 in all)."""
    groups_in = body.get("filterGroups") or []
    if not isinstance(groups_in, list) or len(groups_in) > 5:
        raise _validation("filterGroups: at most 5 filter groups are allowed")
    groups: list[list[_Filter]] = []
    for group in groups_in:
        filters_in = group.get("filters") or [] if isinstance(group, Mapping) else None
        if not isinstance(filters_in, list) or len(filters_in) > 6:
            raise _validation("filterGroups: at most 6 filters per group are allowed")
        filters = []
        for f in filters_in:
            op = str(f.get("operator", "EQ"))
            if "propertyName" not in f:
                raise _validation("filter is missing propertyName")
            value = f.get("value")
            high = f.get("highValue")
            filters.append(
                _Filter(
                    str(f["propertyName"]),
                    op,
                    None if value is None else str(value),
                    None if high is None else str(high),
                    tuple(str(v) for v in f.get("values") or ()),
                )
            )
        groups.append(filters)
    if sum(len(g) for g in groups) > 18:
        raise _validation("at most 18 filters are allowed in a search")
    return groups


def _compare(prop: str, left: str, right: str) -> int:
    """-1/0/1 comparing two property values: timestamps and numbers numerically, else as text."""
    try:
        if prop in _DATETIME_PROPERTIES:
            a, b = _parse_ms(left), _parse_ms(right)
        else:
            a, b = float(left), float(right)
    except ValueError:
        a2, b2 = left.lower(), right.lower()
        return (a2 > b2) - (a2 < b2)
    return (a > b) - (a < b)


def _matches(table: ObjectTable, row: int, f: _Filter) -> bool:
    value = table.prop(row, f.prop)
    op = f.operator
    if op == "HAS_PROPERTY":
        return value not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return value in (None, "")
    if value is None:
        return op in ("NEQ", "NOT_IN")
    if op == "IN":
        return any(_compare(f.prop, value, v) == 0 for v in f.values)
    if op == "NOT_IN":
        return all(_compare(f.prop, value, v) != 0 for v in f.values)
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = (f.value or "").strip("*").lower()
        found = token in value.lower()
        return found if op == "CONTAINS_TOKEN" else not found
    if f.value is None:
        raise _validation(f"filter on {f.prop} with {op} needs a value")
    cmp = _compare(f.prop, value, f.value)
    if op == "BETWEEN":
        return cmp >= 0 and f.high is not None and _compare(f.prop, value, f.high) <= 0
    outcome = {
        "EQ": cmp == 0,
        "NEQ": cmp != 0,
        "LT": cmp < 0,
        "LTE": cmp <= 0,
        "GT": cmp > 0,
        "GTE": cmp >= 0,
    }
    if op not in outcome:
        raise _validation(f"unknown filter operator {op}")
    return outcome[op]


def _modified_range(sorted_ms: IntArray, filters: Sequence[_Filter]) -> tuple[int, int, list[_Filter]]:
    """Positions [lo, hi) of ``sorted_ms`` that the hs_lastmodifieddate filters allow, and the rest."""
    lo, hi = 0, len(sorted_ms)
    rest: list[_Filter] = []
    for f in filters:
        if f.prop != "hs_lastmodifieddate" or f.value is None:
            rest.append(f)
            continue
        value = _parse_ms(f.value)
        if f.operator in ("GT", "GTE", "EQ", "BETWEEN"):
            start = np.searchsorted(sorted_ms, value, side="right" if f.operator == "GT" else "left")
            lo = max(lo, int(start))
        if f.operator in ("LT", "LTE", "EQ", "BETWEEN"):
            top = _parse_ms(f.high) if f.operator == "BETWEEN" and f.high is not None else value
            end = np.searchsorted(sorted_ms, top, side="left" if f.operator == "LT" else "right")
            hi = min(hi, int(end))
        if f.operator not in ("GT", "GTE", "EQ", "BETWEEN", "LT", "LTE"):
            rest.append(f)
    return lo, max(lo, hi), rest


def _parse_sort(body: Mapping[str, Any]) -> tuple[str, bool]:
    """The (property, ascending) the search orders by: HubSpot applies one sort rule."""
    sorts = body.get("sorts") or []
    if not sorts:
        return "hs_object_id", True
    first = sorts[0]
    if isinstance(first, str):
        return (first[1:], False) if first.startswith("-") else (first, True)
    if isinstance(first, Mapping) and "propertyName" in first:
        return str(first["propertyName"]), str(first.get("direction", "ASCENDING")).upper() != "DESCENDING"
    raise _validation("sorts: each sort needs a propertyName")


def search(state: SandboxState, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """POST /crm/v3/objects/{kind}/search: filter, sort, page by offset, refuse past 10,000."""
    limit = int(body.get("limit") or 10)
    if not 1 <= limit <= SEARCH_MAX_LIMIT:
        raise _validation(f"limit must be between 1 and {SEARCH_MAX_LIMIT}, got {limit}")
    try:
        offset = int(body.get("after") or 0)
    except ValueError:
        raise _validation(f"after must be a number, got {body.get('after')!r}") from None
    if offset >= SEARCH_CAP:
        raise _validation(
            f"Search results are limited to {SEARCH_CAP} records; page {offset} is past the limit. "
            "Narrow the search with filters."
        )
    groups = _parse_filters(body)
    sort_prop, ascending = _parse_sort(body)
    properties = list(body.get("properties") or _DEFAULT_PROPERTIES[kind])
    with state.lock:
        table = state.table(kind)
        order, sorted_ms = table.by_modified()
        # Fast path: one group, ordered by hs_lastmodifieddate ascending, range from the sorted index.
        if len(groups) <= 1 and sort_prop == "hs_lastmodifieddate" and ascending:
            lo, hi, rest = _modified_range(sorted_ms, groups[0] if groups else [])
            window = order[lo:hi]
            if table.archived_any:
                window = window[table.archived_ms[window] == 0]
            rows: IntArray = _filter_rows(table, window, rest)
        else:
            rows = _search_slow(table, order, sorted_ms, groups, sort_prop, ascending)
        total = len(rows)
        page = rows[offset : min(offset + limit, SEARCH_CAP)]
        results = table.render_many(page, properties)
    out: dict[str, Any] = {"total": total, "results": results}
    if offset + len(page) < total:
        out["paging"] = {"next": {"after": str(offset + len(page))}}
    return out


_VECTOR_OPS: Final[Mapping[str, Callable[[IntArray, float], npt.NDArray[np.bool_]]]] = {
    "EQ": lambda a, v: a == v,
    "NEQ": lambda a, v: a != v,
    "GT": lambda a, v: a > v,
    "GTE": lambda a, v: a >= v,
    "LT": lambda a, v: a < v,
    "LTE": lambda a, v: a <= v,
}


def _filter_rows(table: ObjectTable, rows: IntArray, filters: Sequence[_Filter]) -> IntArray:
    """The ``rows`` that pass every filter: id and timestamp comparisons vectorised, the rest per row."""
    for f in filters:
        compare = _VECTOR_OPS.get(f.operator)
        if f.prop in ("hs_object_id", "hs_lastmodifieddate") and compare is not None and f.value is not None:
            try:
                value = float(f.value) if f.prop == "hs_object_id" else _parse_ms(f.value)
            except ValueError:
                raise _validation(f"{f.prop}: {f.value!r} is not a valid value") from None
            values = rows + table.base if f.prop == "hs_object_id" else table.modified_ms[rows]
            rows = rows[compare(values, value)]
        else:
            rows = np.array([r for r in rows.tolist() if _matches(table, r, f)], dtype=np.int64)
    return rows


def _search_slow(
    table: ObjectTable,
    order: IntArray,
    sorted_ms: IntArray,
    groups: Sequence[Sequence[_Filter]],
    sort_prop: str,
    ascending: bool,
) -> IntArray:
    """Any filter groups (OR of ANDs) and any one sort: materialise the matches, then sort them."""
    matched: list[IntArray] = []
    for group in groups or [[]]:
        lo, hi, rest = _modified_range(sorted_ms, group)
        window = order[lo:hi]
        matched.append(_filter_rows(table, window[table.archived_ms[window] == 0], rest))
    unique = np.unique(np.concatenate(matched)) if matched else np.zeros(0, dtype=np.int64)
    if sort_prop == "hs_object_id":
        return unique if ascending else unique[::-1].copy()
    rows = unique.tolist()
    if sort_prop == "hs_lastmodifieddate":
        rows.sort(key=lambda r: (int(table.modified_ms[r]), r), reverse=not ascending)
    else:

        def key(row: int) -> tuple[int, float | str]:
            value = table.prop(row, sort_prop)
            if value is None:
                return (1, "")
            try:
                return (0, _parse_ms(value) if sort_prop in _DATETIME_PROPERTIES else float(value))
            except ValueError:
                return (0, value.lower())

        present = [r for r in rows if table.prop(r, sort_prop) is not None]
        absent = [r for r in rows if table.prop(r, sort_prop) is None]
        present.sort(key=key, reverse=not ascending)
        rows = present + absent
    return np.asarray(rows, dtype=np.int64)


# ------------------------------------------------------------------------------------ other endpoints


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() == "true"


def _list_param(query: Mapping[str, list[str]], name: str) -> list[str]:
    """A list query parameter given repeated (``a=1&a=2``) or comma-separated (``a=1,2``)."""
    return [part for value in query.get(name, []) for part in value.split(",") if part]


def list_objects(state: SandboxState, kind: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
    """GET /crm/v3/objects/{kind}: ascending ids, ``after`` = the next id, live or archived records."""
    limit = int(query.get("limit", ["10"])[-1])
    if not 1 <= limit <= LIST_MAX_LIMIT:
        raise _validation(f"limit must be between 1 and {LIST_MAX_LIMIT}, got {limit}")
    after = query.get("after", [""])[-1]
    archived = _flag(query, "archived")
    properties = _list_param(query, "properties") or list(_DEFAULT_PROPERTIES[kind])
    associations = _list_param(query, "associations")
    with state.lock:
        table = state.table(kind)
        start = 0
        if after:
            try:
                start = max(0, int(after) - table.base)
            except ValueError:
                raise _validation(f"after must be a paging cursor, got {after!r}") from None
        mask = table.archived_ms[start:] != 0 if archived else table.archived_ms[start:] == 0
        hits = np.flatnonzero(mask)[: limit + 1] + start
        page, more = hits[:limit], len(hits) > limit
        results = table.render_many(page, properties)
        if kind == "deals" and "companies" in associations:
            for obj, company in zip(results, state.deal_company[page].tolist(), strict=True):
                if company >= 0:
                    obj["associations"] = {
                        "companies": {"results": [{"id": str(company), "type": "deal_to_company"}]}
                    }
    out: dict[str, Any] = {"results": results}
    if more:
        nxt = str(table.base + int(hits[limit]))
        out["paging"] = {"next": {"after": nxt, "link": f"?after={nxt}"}}
    return out


def list_owners(state: SandboxState, query: Mapping[str, list[str]]) -> dict[str, Any]:
    """GET /crm/v3/owners/: active owners, or deactivated ones with ``archived=true``."""
    limit = int(query.get("limit", ["100"])[-1])
    if not 1 <= limit <= 500:
        raise _validation(f"limit must be between 1 and 500, got {limit}")
    after = int(query.get("after", ["0"])[-1] or 0)
    archived = _flag(query, "archived")
    email = query.get("email", [""])[-1]
    with state.lock:
        owners = [o for o in state.owners if o.archived == archived and (not email or o.email == email)]
        page = owners[after : after + limit]
        results = [o.render() for o in page]
    out: dict[str, Any] = {"results": results}
    if after + limit < len(owners):
        out["paging"] = {"next": {"after": str(after + limit)}}
    return out


def _inputs(body: Mapping[str, Any], most: int) -> list[Mapping[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise _validation("inputs: a list is required")
    if len(inputs) > most:
        raise _validation(f"inputs: at most {most} inputs are allowed, got {len(inputs)}")
    return inputs


def _batch_response(
    results: list[Any], errors: list[dict[str, Any]], started: str
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": _iso_ms(_now_ms()),
    }
    if errors:
        body["numErrors"] = sum(len(e["context"].get("ids", [])) or 1 for e in errors)
        body["errors"] = errors
        return 207, body
    return 200, body


def _error_item(category: str, message: str, ids: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": {"ids": list(ids)},
        "links": {},
        "errors": [],
        **extra,
    }


def batch_read(
    state: SandboxState, kind: str, body: Mapping[str, Any], archived: bool
) -> tuple[int, dict[str, Any]]:
    """POST /crm/v3/objects/{kind}/batch/read: found records, and a 207 naming the ids not found."""
    started = _iso_ms(_now_ms())
    inputs = _inputs(body, BATCH_MAX_INPUTS)
    properties = list(body.get("properties") or _DEFAULT_PROPERTIES[kind])
    results, missing = [], []
    with state.lock:
        table = state.table(kind)
        for item in inputs:
            object_id = str(item.get("id", ""))
            row = table.row(object_id)
            if row is None or table.live(row) == archived:
                missing.append(object_id)
            else:
                results.append(table.render(row, properties))
    errors = []
    if missing:
        errors.append(
            _error_item(
                "OBJECT_NOT_FOUND",
                f"Could not get some {_OBJECT_TYPE_NAMES[kind]} objects, they may be deleted or not exist. "
                "Check that ids are valid.",
                missing,
            )
        )
    return _batch_response(results, errors, started)


def batch_update(state: SandboxState, kind: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /crm/v3/objects/{kind}/batch/update: write what can be written, 207 with per-record errors."""
    started = _iso_ms(_now_ms())
    inputs = _inputs(body, BATCH_MAX_INPUTS)
    results: list[dict[str, Any]] = []
    missing: list[str] = []
    invalid: dict[str, list[str]] = {}
    with state.lock:
        table = state.table(kind)
        owner_ids = {o.id for o in state.owners if not o.archived}
        now = _now_ms()
        for item in inputs:
            object_id = str(item.get("id", ""))
            values = item.get("properties") or {}
            row = table.row(object_id)
            if row is None or not table.live(row):
                missing.append(object_id)
                continue
            bad = [
                name
                for name, value in values.items()
                if not table.has_property(name)
                or (name == "hubspot_owner_id" and value not in (None, "") and str(value) not in owner_ids)
            ]
            if bad:
                for name in bad:
                    invalid.setdefault(name, []).append(object_id)
                continue
            table.write(row, {k: None if v is None else str(v) for k, v in values.items()}, now)
            state.api_writes[(kind, object_id)] += 1
            results.append(table.render(row, list(values)))
    errors = []
    if missing:
        errors.append(
            _error_item(
                "OBJECT_NOT_FOUND", f"No {_OBJECT_TYPE_NAMES[kind]} objects with these ids exist.", missing
            )
        )
    for name, ids in invalid.items():
        errors.append(
            _error_item(
                "VALIDATION_ERROR",
                f'Property values were not valid: {{"isValid":false,"message":"{name} was not a valid value",'
                f'"name":"{name}"}}',
                ids,
                subCategory="INVALID_PROPERTY_VALUE",
            )
        )
    return _batch_response(results, errors, started)


def association_batch_read(state: SandboxState, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /crm/v4/associations/deals/companies/batch/read: each deal's companies (primary label)."""
    started = _iso_ms(_now_ms())
    inputs = _inputs(body, ASSOCIATION_BATCH_MAX_INPUTS)
    results, without = [], []
    with state.lock:
        for item in inputs:
            deal_id = str(item.get("id", ""))
            row = state.deals.row(deal_id)
            company = int(state.deal_company[row]) if row is not None and state.deals.live(row) else -1
            if company < 0:
                without.append(deal_id)
                continue
            results.append(
                {
                    "from": {"id": deal_id},
                    "to": [
                        {
                            "toObjectId": company,
                            "associationTypes": [
                                {
                                    "category": "HUBSPOT_DEFINED",
                                    "typeId": DEAL_TO_COMPANY_PRIMARY,
                                    "label": "Primary",
                                },
                                {"category": "HUBSPOT_DEFINED", "typeId": DEAL_TO_COMPANY, "label": None},
                            ],
                        }
                    ],
                }
            )
    errors = []
    if without:
        errors.append(
            _error_item("OBJECT_NOT_FOUND", "No company is associated with these deals.", without,
                        subCategory="crm.associations.NO_ASSOCIATIONS_FOUND")
        )  # fmt: skip
    return _batch_response(results, errors, started)


# ------------------------------------------------------------------------------------------ the server


@dataclass
class _Counters:
    """Requests served per (method, path pattern) and faults injected; tests read them."""

    requests: dict[str, int] = field(default_factory=dict)
    faults: dict[int, int] = field(default_factory=dict)
    # The latest requests answered: (time.monotonic() when answered, "METHOD /path", status).
    answered: deque[tuple[float, str, int]] = field(default_factory=lambda: deque(maxlen=10_000))


class SandboxServer:
    """A running fake HubSpot: ``url`` for the client's host, ``access_token``, ``state``, ``stop()``."""

    def __init__(
        self, state: SandboxState, host: str, port: int, faults: HubSpotFaults, access_token: str
    ) -> None:
        self.state = state
        self.faults = faults
        self.access_token = access_token
        self.counters = _Counters()
        self._rng = random.Random(faults.seed)  # noqa: S311 (fault injection, not security)
        self._rng_lock = threading.Lock()
        self._http = SandboxHttpServer(self.respond, name="hubspot-sandbox", host=host, port=port)
        self.url = self._http.url
        self._http.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._http.stop()

    def respond(self, request: Request) -> Response:
        """The HTTP app: one request dispatched, its answer as HubSpot's JSON with the rate-limit headers."""
        try:
            status, body, headers = self.dispatch(
                request.method, request.target, request.headers.get("Authorization"), request.body
            )
        except ApiError as exc:
            status, body, headers = exc.status, exc.body, exc.headers
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a malformed request body
            err = _validation(f"Invalid input: {type(exc).__name__}: {exc}")
            status, body, headers = err.status, err.body, err.headers
        route = f"{request.method} {request.path.rstrip('/')}"
        self.counters.answered.append((time.monotonic(), route, status))
        payload = json.dumps(body, separators=(",", ":")).encode()
        out = {"Content-Type": "application/json;charset=utf-8", **self.rate_limit_headers(), **headers}
        return Response(status, payload, out)

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rate_limit_headers(self) -> dict[str, str]:
        used = self.state.requests
        daily = self.faults.daily_limit
        return {
            "X-HubSpot-RateLimit-Daily": str(daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, daily - used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(INTERVAL_MAX),
            "X-HubSpot-RateLimit-Remaining": str(INTERVAL_MAX - 1 - used % INTERVAL_MAX),
            "X-HubSpot-RateLimit-Secondly": "19",
            "X-HubSpot-RateLimit-Secondly-Remaining": str(18 - used % 19),
        }

    def _draw(self) -> tuple[float, float, float, int]:
        with self._rng_lock:
            r = self._rng
            return r.random(), r.random(), r.random(), r.randrange(1 << 16)

    def _count(self, key: str) -> None:
        with self.state.lock:
            self.state.requests += 1
            self.counters.requests[key] = self.counters.requests.get(key, 0) + 1

    def _fault(self, status: int) -> None:
        with self.state.lock:
            self.counters.faults[status] = self.counters.faults.get(status, 0) + 1

    def dispatch(
        self, method: str, target: str, authorization: str | None, raw: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """Authenticate, inject faults, route; returns (status, JSON body, extra headers)."""
        url = urlsplit(target)
        path = url.path.rstrip("/")
        query = parse_qs(url.query, keep_blank_values=True)
        self._count(f"{method} {path}")
        if authorization != f"Bearer {self.access_token}":
            raise ApiError(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
                "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION",
            )
        f = self.faults
        if self.state.requests > f.daily_limit:
            self._fault(429)
            raise ApiError(
                429,
                "You have reached your daily limit.",
                "RATE_LIMITS",
                errorType="RATE_LIMIT",
                policyName="DAILY",
                groupName=f"publicapi:private-app:{self.access_token[-6:]}",
            )
        slow, limited, failed, pick = self._draw()
        if f.slow_share and slow < f.slow_share:
            time.sleep(f.slow_seconds)
        if f.rate_limit_share and limited < f.rate_limit_share:
            self._fault(429)
            raise ApiError(
                429,
                "You have reached your secondly limit.",
                "RATE_LIMITS",
                headers={"Retry-After": f"{f.retry_after_seconds:g}"},
                errorType="RATE_LIMIT",
                policyName="SECONDLY",
                groupName=f"publicapi:private-app:{self.access_token[-6:]}",
            )
        if f.server_error_share and failed < f.server_error_share:
            status = f.server_error_statuses[pick % len(f.server_error_statuses)]
            self._fault(status)
            raise ApiError(status, "internal error", "INTERNAL_ERROR")
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise _validation("Invalid input JSON on line 1") from None
        status, out = self._route(method, path, query, body)
        return status, out, {}

    def _route(self, method: str, path: str, query: Mapping[str, list[str]], body: Any) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        state = self.state
        if parts[:3] == ["crm", "v3", "owners"] and method == "GET" and len(parts) == 3:
            return 200, list_owners(state, query)
        if parts[:3] == ["crm", "v3", "objects"] and len(parts) >= 4 and parts[3] in ("companies", "deals"):
            kind = parts[3]
            rest = parts[4:]
            if method == "GET" and not rest:
                out = list_objects(state, kind, query)
                self._mutate_after_page(kind)
                return 200, out
            if method == "POST" and rest == ["search"]:
                out = search(state, kind, body)
                self._mutate_after_page(kind)
                return 200, out
            if method == "POST" and rest == ["batch", "read"]:
                return batch_read(state, kind, body, _flag(query, "archived"))
            if method == "POST" and rest == ["batch", "update"]:
                return batch_update(state, kind, body)
        if parts == ["crm", "v4", "associations", "deals", "companies", "batch", "read"] and method == "POST":
            return association_batch_read(state, body)
        raise ApiError(404, f"No route for {method} {path}", "OBJECT_NOT_FOUND")

    def _mutate_after_page(self, kind: str) -> None:
        """The ``*_during_paging`` faults: change or delete random live records of ``kind``."""
        f = self.faults
        if not (f.modify_during_paging or f.delete_during_paging):
            return
        with self.state.lock:
            table = self.state.table(kind)
            live = np.flatnonzero(table.archived_ms == 0)
            with self._rng_lock:
                chosen = [int(live[self._rng.randrange(len(live))]) for _ in range(f.modify_during_paging)]
                doomed = [int(live[self._rng.randrange(len(live))]) for _ in range(f.delete_during_paging)]
            now = _now_ms()
            name_prop = "name" if kind == "companies" else "dealname"
            for row in chosen:
                table.write(row, {name_prop: f"{table.prop(row, name_prop)} (edited)"}, now)
            for row in doomed:
                table.archive(row, now)
            self.counters.faults[-1] = self.counters.faults.get(-1, 0) + len(chosen) + len(doomed)


def start_hubspot_sandbox(
    org: Org,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: HubSpotFaults | None = None,
    access_token: str | None = None,
    now: datetime | None = None,
) -> SandboxServer:
    """Serve ``org`` as HubSpot on ``host:port`` (0 picks a free port) in a background thread.

    ``now`` dates the owners' records (the current time when omitted); record timestamps come from the org.
    """
    now_ms = int(now.timestamp() * 1000) if now is not None else _now_ms()
    state = SandboxState(org, now_ms)
    token = access_token or "pat-na1-" + secrets.token_hex(16)
    server = SandboxServer(state, host, port, faults or HubSpotFaults(), token)
    log.info("hubspot sandbox serving", extra={"url": server.url, "companies": len(state.companies)})
    return server
