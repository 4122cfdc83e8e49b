"""Which Salesforce field feeds which canonical column, and the conversion of one record.

Values pass through as Salesforce sent them (the engine converts per column, ISO datetimes with
``+0000`` included) except two: empty Bulk CSV cells become None, and ``Probability``, a percent in
Salesforce, becomes a share of 1. The mapping is configuration (``salesforce.fields`` in the
settings): standard or custom fields, a column mapped to nothing is simply not read. Conversion
never raises: a value it cannot convert is passed on as it came, so the engine quarantines the
record with the reason instead of the sync dying.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from connectors.base import CANONICAL_COLUMNS, CrmObject, Cursor
from connectors.errors import ConnectorConfigError
from connectors.salesforce.settings import (
    SalesforceAccountFields,
    SalesforceOpportunityFields,
    SalesforceUserFields,
)

SOBJECTS: Final[Mapping[CrmObject, str]] = {
    CrmObject.owners: "User",
    CrmObject.accounts: "Account",
    CrmObject.opportunities: "Opportunity",
}

# The defaults (standard fields where Salesforce has one, custom ``__c`` ones where it has not) are
# the settings section's own, declared once in ``connectors.salesforce.settings``.
DEFAULT_FIELDS: Final[Mapping[CrmObject, Mapping[str, str | None]]] = {
    obj: {name: field.default for name, field in section.model_fields.items()}
    for obj, section in (
        (CrmObject.owners, SalesforceUserFields),
        (CrmObject.accounts, SalesforceAccountFields),
        (CrmObject.opportunities, SalesforceOpportunityFields),
    )
}

CURSOR_FIELD: Final = "SystemModstamp"
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


def parse_datetime(value: Any) -> dt.datetime | None:
    """A Salesforce datetime (``2026-08-19T02:18:04.000+0000`` or ``...Z``) as an aware datetime."""
    if not isinstance(value, str) or len(value) < 19:
        return None
    text = value.replace("Z", "+00:00")
    if len(text) >= 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class FieldMapping:
    """The mapping of one object: canonical column -> Salesforce field."""

    obj: CrmObject
    sobject: str
    columns: Mapping[str, str]
    probability_is_percent: bool = True

    @property
    def has_deletes(self) -> bool:
        """Users are deactivated, never deleted: the User object has no IsDeleted field."""
        return self.sobject != "User"

    def select_fields(self) -> tuple[str, ...]:
        """The fields every query of this object selects: the mapped ones and the cursor's."""
        wanted = ["Id", CURSOR_FIELD, *(["IsDeleted"] if self.has_deletes else []), *self.columns.values()]
        return tuple(dict.fromkeys(wanted))

    def to_record(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The canonical record of one Salesforce record (JSON from REST or strings from Bulk CSV)."""
        out = {column: raw.get(source) for column, source in self.columns.items()}
        if "" in out.values():
            out = {column: None if value == "" else value for column, value in out.items()}
        if "probability" in out:
            out["probability"] = self._probability(out["probability"])
        return out

    def _probability(self, value: Any) -> Any:
        if value is None or isinstance(value, bool) or not self.probability_is_percent:
            return value
        try:
            return float(value) / 100.0
        except (TypeError, ValueError):
            return value

    @staticmethod
    def cursor_of(raw: Mapping[str, Any]) -> Cursor | None:
        """The (SystemModstamp, Id) of a record, or None when either is missing or unreadable."""
        moment = parse_datetime(raw.get(CURSOR_FIELD))
        record_id = raw.get("Id")
        if moment is None or not isinstance(record_id, str):
            return None
        return Cursor(moment, record_id)


def build_mappings(
    overrides: Mapping[str, Mapping[str, str | None]] | None = None, *, probability_is_percent: bool = True
) -> dict[CrmObject, FieldMapping]:
    """The defaults with ``overrides`` (object -> column -> field, None to leave a column out) applied."""
    overrides = overrides or {}
    unknown = set(overrides) - {o.value for o in CrmObject}
    if unknown:
        raise ConnectorConfigError(f"salesforce.fields: unknown object {sorted(unknown)[0]!r}")
    result: dict[CrmObject, FieldMapping] = {}
    for obj in CrmObject:
        given = overrides.get(obj.value, {})
        bad = set(given) - set(CANONICAL_COLUMNS[obj])
        if bad:
            raise ConnectorConfigError(
                f"salesforce.fields.{obj.value}: unknown column {sorted(bad)[0]!r}; "
                f"columns are {', '.join(CANONICAL_COLUMNS[obj])}"
            )
        merged = {**DEFAULT_FIELDS[obj], **given}
        columns: dict[str, str] = {}
        for column, source in merged.items():
            if source is None:
                continue
            if not _FIELD_NAME.match(source):
                raise ConnectorConfigError(
                    f"salesforce.fields.{obj.value}.{column}: {source!r} is not a Salesforce field name"
                )
            columns[column] = source
        if "id" not in columns:
            raise ConnectorConfigError(f"salesforce.fields.{obj.value}.id: the id column must be mapped")
        result[obj] = FieldMapping(obj, SOBJECTS[obj], columns, probability_is_percent)
    return result
