"""What a CRM must offer the sync engine and the write-back: a Protocol, plain data in and out.

Every connector maps its CRM's fields onto the canonical columns below (by configuration), hands the
engine batches of records in ascending cursor order, and applies owner changes only where the CRM's
current owner is still the one the change was planned against.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class CrmObject(enum.StrEnum):
    """The objects every connector syncs, in the order the engine syncs them (parents first)."""

    owners = "owners"
    accounts = "accounts"
    opportunities = "opportunities"


# The canonical columns of each object, as the store names them. A record may omit any but ``id``;
# the engine validates and converts values (strings from CSV, JSON numbers from APIs) per column.
CANONICAL_COLUMNS: Mapping[CrmObject, tuple[str, ...]] = {
    CrmObject.owners: (
        "id", "name", "email", "region", "team", "capacity", "home_lat", "home_lon", "quota", "active",
        "modified_at",
    ),
    CrmObject.accounts: (
        "id", "name", "owner_id", "tier", "industry", "arr", "potential", "lat", "lon", "protected",
        "modified_at",
    ),
    CrmObject.opportunities: (
        "id", "account_id", "owner_id", "name", "stage", "amount", "probability", "close_date",
        "is_closed", "is_won", "modified_at",
    ),
}  # fmt: skip


@dataclass(frozen=True, order=True)
class Cursor:
    """A compound watermark: the last (modified_at, id) that was saved with its rows.

    Reads restart at ``modified_at - lookback`` (a closed start); rows read twice are de-duplicated on
    the primary key, so a record modified in the same instant as the watermark is never lost.
    """

    modified_at: dt.datetime
    last_id: str = ""

    def to_json(self) -> dict[str, str]:
        """The form stored in ``sync_state.watermark``."""
        return {"modified_at": self.modified_at.isoformat(), "last_id": self.last_id}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Cursor | None:
        """The cursor saved by :meth:`to_json`, or None when nothing was saved yet."""
        if not value:
            return None
        return cls(dt.datetime.fromisoformat(value["modified_at"]), str(value.get("last_id", "")))


@dataclass(frozen=True)
class Batch:
    """Records of one object in ascending cursor order, and the ids the CRM reports deleted.

    ``records`` use the canonical column names; ``raw`` holds the CRM's own record for each (same
    order), kept for the quarantine of a record that fails validation. ``cursor`` is the high-water
    mark once this batch is saved; None leaves the saved watermark as it is.
    """

    records: Sequence[Mapping[str, Any]]
    raw: Sequence[Mapping[str, Any]]
    deleted_ids: Sequence[str] = ()
    cursor: Cursor | None = None


@dataclass(frozen=True)
class OwnerChange:
    """Move ``account_id`` from ``expected_owner_id`` (what the CRM must still say) to ``to_owner_id``.

    Written to opportunities (an account's open opportunities follow it), ``account_id`` holds the
    opportunity's id: the record whose owner changes.
    """

    account_id: str
    expected_owner_id: str
    to_owner_id: str
    planned_at: dt.datetime


class WriteOutcome(enum.StrEnum):
    """What happened to one owner change in the CRM."""

    written = "written"
    conflict = "conflict"  # the CRM's owner changed since the change was planned: not overwritten
    failed = "failed"


@dataclass(frozen=True)
class WriteResult:
    """The CRM's answer to one owner change, kept verbatim for the audit trail."""

    account_id: str
    outcome: WriteOutcome
    detail: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Connector(Protocol):
    """A CRM as the sync engine and the write-back see it."""

    source: str

    def read(
        self, obj: CrmObject, since: Cursor | None, *, full: bool = False, batch_rows: int | None = None
    ) -> Iterator[Batch]:
        """Batches of what changed since ``since`` (everything when ``full`` or ``since`` is None).

        ``batch_rows`` is the records a batch may hold as the engine would have them (None: the
        connector's own size). A file's reader honours it; an API connector keeps its own, what it
        reads between two stores (a quota stop or an error loses a batch at most).
        """
        ...

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]:
        """Write owner changes of accounts (or opportunities) whose record still has the expected owner.

        One result per change, in order; a record that already has its target owner is ``written``
        (``detail["already"]``), so a re-run after a crash writes nothing twice.
        """
        ...
