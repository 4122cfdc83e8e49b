"""Owner changes written to Salesforce only where the account still has the owner the plan expected.

``If-Unmodified-Since`` alone is not enough: set to the planning time it would still overwrite an owner
change made between the sync the plan was computed from and the planning, and it would refuse moves
whose account merely had another field edited. So each change is read, compared, then written:
the current ``OwnerId`` is read in one query; a different owner is a conflict (never overwritten);
the PATCH carries ``If-Unmodified-Since`` set to the ``LastModifiedDate`` just read (rounded up to the
second, as HTTP dates are), so a change between the read and the write answers 412 and is a conflict
too. An account that already has the new owner is reported written, which makes a re-run after a
crash idempotent. PATCHes go 25 at a time through ``composite``. Accounts and opportunities are
written the same way (``sobject``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

from connectors.base import OwnerChange, WriteOutcome, WriteResult
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.mapping import parse_datetime

log = logging.getLogger(__name__)

_READ_CHUNK = 200  # ids per SOQL IN list, well under the query length limit
_WRITE_CHUNK = 25  # subrequests per composite request


def http_date_ceil(moment: dt.datetime) -> str:
    """``moment`` as an HTTP date, rounded up to the whole second."""
    moment = moment.astimezone(dt.UTC)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + dt.timedelta(seconds=1)
    return email.utils.format_datetime(moment, usegmt=True)


def _read_owners(client: SalesforceClient, ids: Sequence[str], sobject: str) -> dict[str, Mapping[str, Any]]:
    """Current OwnerId and LastModifiedDate of live records, by id."""
    found: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(ids), _READ_CHUNK):
        chunk = ids[start : start + _READ_CHUNK]
        quoted = ", ".join("'" + i.replace("\\", "\\\\").replace("'", "\\'") + "'" for i in chunk)
        soql = f"SELECT Id, OwnerId, LastModifiedDate FROM {sobject} WHERE Id IN ({quoted})"  # noqa: S608
        for page in client.query_pages(soql, include_deleted=False):
            for record in page.get("records") or []:
                found[str(record["Id"])] = record
    return found


SOBJECTS: Final = ("Account", "Opportunity")


def apply_owner_changes(
    client: SalesforceClient, changes: Sequence[OwnerChange], sobject: str = "Account"
) -> list[WriteResult]:
    """Write each change whose record still has its expected owner; one result per change, in order."""
    if sobject not in SOBJECTS:
        raise ValueError(f"owner changes are written to {', '.join(SOBJECTS)}, not {sobject}")
    results: dict[int, WriteResult] = {}
    current = _read_owners(client, list(dict.fromkeys(c.account_id for c in changes)), sobject)
    to_write: list[tuple[int, OwnerChange, str]] = []
    for n, change in enumerate(changes):
        record = current.get(change.account_id)
        if record is None:
            results[n] = WriteResult(
                change.account_id, WriteOutcome.failed, {"error": f"{sobject} not found or deleted"}
            )
            continue
        owner = record.get("OwnerId")
        if owner == change.to_owner_id:
            results[n] = WriteResult(
                change.account_id, WriteOutcome.written, {"already": True, "owner_id": owner}
            )
        elif owner != change.expected_owner_id:
            results[n] = WriteResult(
                change.account_id,
                WriteOutcome.conflict,
                {"current_owner_id": owner, "expected_owner_id": change.expected_owner_id},
            )
        else:
            modified = parse_datetime(record.get("LastModifiedDate")) or change.planned_at
            to_write.append((n, change, http_date_ceil(modified)))
    base = client.base_path()
    precondition_failed: list[int] = []
    for start in range(0, len(to_write), _WRITE_CHUNK):
        chunk = to_write[start : start + _WRITE_CHUNK]
        subrequests = [
            {
                "method": "PATCH",
                "url": f"{base}/sobjects/{sobject}/{change.account_id}",
                "referenceId": f"move{n}",
                "body": {"OwnerId": change.to_owner_id},
                "httpHeaders": {"If-Unmodified-Since": since},
            }
            for n, change, since in chunk
        ]
        answers = client.composite(subrequests)
        for (n, change, since), answer in zip(chunk, answers, strict=True):
            status = int(answer.get("httpStatusCode", 0))
            detail = {"status": status, "body": answer.get("body"), "if_unmodified_since": since}
            if 200 <= status < 300:
                results[n] = WriteResult(change.account_id, WriteOutcome.written, detail)
            elif status == 412:
                precondition_failed.append(n)
                results[n] = WriteResult(change.account_id, WriteOutcome.conflict, detail)
            else:
                results[n] = WriteResult(change.account_id, WriteOutcome.failed, detail)
    if precondition_failed:
        # A retried composite whose first try was applied answers 412 for our own write: look again.
        again = _read_owners(client, [changes[n].account_id for n in precondition_failed], sobject)
        for n in precondition_failed:
            change = changes[n]
            if (again.get(change.account_id) or {}).get("OwnerId") == change.to_owner_id:
                results[n] = WriteResult(change.account_id, WriteOutcome.written, {"already": True})
    for n in sorted(results):
        log.debug(
            "salesforce owner change",
            extra={
                "sobject": sobject,
                "record_id": results[n].account_id,
                "outcome": results[n].outcome.value,
            },
        )
    return [results[n] for n in range(len(changes))]
