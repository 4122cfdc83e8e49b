"""HubSpot owners, companies and deals onto the canonical columns, by a configured property mapping.

Pure functions of plain values. Values stay HubSpot's strings where the engine can read them (numbers,
``true``/``false``, ISO timestamps); only what needs reshaping is converted here (the deal's close date
to a date, the owner's name). A value that cannot be converted is passed on as it came, so the engine
quarantines the record with a reason instead of this code raising on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

# Canonical column -> HubSpot property, as in the settings' hubspot.companies / hubspot.deals.
PropertyMap = Mapping[str, str | None]

MODIFIED_PROPERTY: Final = "hs_lastmodifieddate"
OBJECT_ID_PROPERTY: Final = "hs_object_id"


def requested_properties(mapping: PropertyMap) -> list[str]:
    """The properties to ask HubSpot for: every mapped one, plus the cursor's."""
    wanted = [p for p in mapping.values() if p]
    return list(dict.fromkeys([*wanted, MODIFIED_PROPERTY, OBJECT_ID_PROPERTY]))


def _text(value: Any) -> str | None:
    """A property value as text, blank as None (HubSpot returns unset properties as null or "")."""
    if isinstance(value, str):
        return value or None
    return None if value is None else str(value)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """A HubSpot timestamp (ISO 8601 with ``Z``, or epoch milliseconds) as an aware UTC datetime."""
    text = _text(value)
    if text is None:
        return None
    try:
        if text.isdigit():
            return dt.datetime.fromtimestamp(int(text) / 1000, tz=dt.UTC)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _date(value: Any) -> str | None:
    """A HubSpot date or datetime property as ``YYYY-MM-DD`` (UTC); the raw text when unreadable."""
    text = _text(value)
    if text is None:
        return None
    moment = parse_timestamp(text)
    if moment is not None:
        return moment.date().isoformat()
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        return text


def _mapped(properties: Mapping[str, Any], mapping: PropertyMap, skip: frozenset[str]) -> dict[str, Any]:
    return {
        column: _text(properties.get(prop)) if prop else None
        for column, prop in mapping.items()
        if column not in skip
    }


def map_company(obj: Mapping[str, Any], mapping: PropertyMap) -> dict[str, Any]:
    """A company (the API's SimplePublicObject JSON) as a canonical account record."""
    properties = obj.get("properties") or {}
    record = _mapped(properties, mapping, frozenset())
    record["id"] = _text(obj.get("id"))
    record["modified_at"] = _text(properties.get(MODIFIED_PROPERTY)) or _text(obj.get("updatedAt"))
    return record


def map_deal(obj: Mapping[str, Any], mapping: PropertyMap, company_id: str | None) -> dict[str, Any]:
    """A deal as a canonical opportunity record; ``company_id`` is its associated company (or None)."""
    properties = obj.get("properties") or {}
    record = _mapped(properties, mapping, frozenset({"close_date"}))
    close = mapping.get("close_date")
    record["close_date"] = _date(properties.get(close)) if close else None
    record["id"] = _text(obj.get("id"))
    record["account_id"] = _text(company_id)
    record["modified_at"] = _text(properties.get(MODIFIED_PROPERTY)) or _text(obj.get("updatedAt"))
    return record


def map_owner(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An owner (the owners API's PublicOwner JSON) as a canonical owner record.

    An archived owner (a deactivated user) is kept as inactive, since accounts may still name it.
    Region, capacity, quota and home location are not in HubSpot: the roster supplies them.
    """
    first, last = _text(owner.get("firstName")), _text(owner.get("lastName"))
    name = " ".join(p for p in (first, last) if p) or _text(owner.get("email"))
    teams = owner.get("teams") or []
    primary = next((t for t in teams if t.get("primary")), teams[0] if teams else None)
    return {
        "id": _text(owner.get("id")),
        "name": name,
        "email": _text(owner.get("email")),
        "team": _text(primary.get("name")) if primary else None,
        "active": "false" if owner.get("archived") else "true",
        "modified_at": _text(owner.get("updatedAt")),
    }


def primary_company(to: Any) -> str | None:
    """A deal's company from a v4 association result's ``to`` list: the primary, else the first."""
    if not isinstance(to, list) or not to:
        return None
    for item in to:
        types = item.get("associationTypes") or []
        if any(str(t.get("label") or "").lower() == "primary" for t in types):
            return _text(item.get("toObjectId"))
    return _text(to[0].get("toObjectId"))
