"""Owner changes written to HubSpot by read-compare-write, reported per record.

HubSpot has no conditional update, so each batch first reads the companies' current owner and writes
only those still owned by the expected owner; the others are conflicts, never overwritten. A company
that already has the new owner counts as written (a retried write-back after a crash repeats nothing).
The window between the read and the write is one request long; HubSpot offers nothing narrower.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.base import OwnerChange, WriteOutcome, WriteResult
from connectors.errors import FatalError, RetriableError
from connectors.hubspot.client import HubSpotClient

log = logging.getLogger(__name__)


def _error_detail(error: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "status": error.get("status"),
        "category": error.get("category"),
        "sub_category": error.get("subCategory"),
        "message": error.get("message"),
    }


def apply_owner_changes(
    client: HubSpotClient,
    changes: Sequence[OwnerChange],
    *,
    owner_property: str = "hubspot_owner_id",
    batch_size: int = 100,
) -> list[WriteResult]:
    """Apply ``changes`` in batches (read, compare, write); one result per change, in input order."""
    results: dict[int, WriteResult] = {}
    seen: dict[str, int] = {}
    pending: list[tuple[int, OwnerChange]] = []
    for position, change in enumerate(changes):
        if change.account_id in seen:
            results[position] = WriteResult(
                change.account_id,
                WriteOutcome.failed,
                {
                    "error": "another change of the same account is in this call",
                    "first": seen[change.account_id],
                },
            )
            continue
        seen[change.account_id] = position
        pending.append((position, change))
    for start in range(0, len(pending), batch_size):
        chunk = pending[start : start + batch_size]
        try:
            results.update(_apply_chunk(client, chunk, owner_property))
        except (RetriableError, FatalError) as exc:
            log.warning(
                "hubspot owner write-back batch failed", extra={"accounts": len(chunk), "error": str(exc)}
            )
            retriable = isinstance(exc, RetriableError)
            for position, change in chunk:
                detail = {"error": str(exc), "retriable": retriable}
                results[position] = WriteResult(change.account_id, WriteOutcome.failed, detail)
    return [results[i] for i in range(len(changes))]


def _apply_chunk(
    client: HubSpotClient, chunk: Sequence[tuple[int, OwnerChange]], owner_property: str
) -> dict[int, WriteResult]:
    """Read the chunk's current owners, write the unchanged ones, classify every change."""
    out: dict[int, WriteResult] = {}
    read = client.call_json(
        "read company owners",
        client.companies_batch.read,
        {"inputs": [{"id": c.account_id} for _, c in chunk], "properties": [owner_property]},
        archived=False,
    )
    current: dict[str, str | None] = {
        str(obj["id"]): (obj.get("properties") or {}).get(owner_property) for obj in read.get("results") or []
    }
    read_errors = {
        str(i): _error_detail(err)
        for err in read.get("errors") or []
        for i in (err.get("context") or {}).get("ids", [])
    }
    to_write: list[tuple[int, OwnerChange]] = []
    for position, change in chunk:
        if change.account_id not in current:
            detail = read_errors.get(change.account_id, {"message": "HubSpot did not return the company"})
            out[position] = WriteResult(change.account_id, WriteOutcome.failed, {"read": detail})
            continue
        found = current[change.account_id] or ""
        if found == change.to_owner_id:
            out[position] = WriteResult(
                change.account_id, WriteOutcome.written, {owner_property: found, "already": True}
            )
        elif found == change.expected_owner_id:
            to_write.append((position, change))
        else:
            out[position] = WriteResult(
                change.account_id,
                WriteOutcome.conflict,
                {"expected_owner_id": change.expected_owner_id, "found_owner_id": found or None},
            )
    if not to_write:
        return out
    answer = client.call_json(
        "update company owners",
        client.companies_batch.update,
        {
            "inputs": [
                {"id": c.account_id, "properties": {owner_property: c.to_owner_id}} for _, c in to_write
            ]
        },
    )
    written = {str(obj["id"]): obj for obj in answer.get("results") or []}
    errors = {
        str(i): _error_detail(err)
        for err in answer.get("errors") or []
        for i in (err.get("context") or {}).get("ids", [])
    }
    for position, change in to_write:
        obj = written.get(change.account_id)
        if obj is not None:
            props = obj.get("properties") or {}
            detail = {owner_property: props.get(owner_property), "updated_at": obj.get("updatedAt")}
            out[position] = WriteResult(change.account_id, WriteOutcome.written, detail)
        else:
            detail = errors.get(change.account_id, {"message": "HubSpot did not report this company"})
            out[position] = WriteResult(change.account_id, WriteOutcome.failed, detail)
    log.info(
        "hubspot owner write-back batch",
        extra={"written": len(written), "failed": len(to_write) - len(written), "read": len(chunk)},
    )
    return out
