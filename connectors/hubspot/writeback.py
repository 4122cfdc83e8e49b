"""Owner changes written to HubSpot by read-compare-write-read, reported per record.

HubSpot has no conditional update, so each batch first reads the records' current owner and writes
only those still owned by the expected owner; the others are conflicts, never overwritten. A record
that already has the new owner counts as written (a retried write-back after a crash repeats nothing).
After the update the batch is read back: a record whose owner is no longer the one just written was
changed by someone else at the same moment, and is reported as a conflict (left as they set it).

The remaining race: a change made between the read and the update (one request apart) is overwritten
and the read-back cannot tell it from ours; HubSpot offers nothing narrower. Companies and deals (an
account's open opportunities follow it) are written the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

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


KINDS: Final = ("companies", "deals")


def apply_owner_changes(
    client: HubSpotClient,
    changes: Sequence[OwnerChange],
    *,
    owner_property: str = "hubspot_owner_id",
    batch_size: int = 100,
    kind: str = "companies",
) -> list[WriteResult]:
    """Apply ``changes`` in batches (read, compare, write, read back); one result per change, in order."""
    if kind not in KINDS:
        raise ValueError(f"owner changes are written to {', '.join(KINDS)}, not {kind}")
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
            results.update(_apply_chunk(client, chunk, owner_property, kind))
        except (RetriableError, FatalError) as exc:
            log.warning(
                "hubspot owner write-back batch failed", extra={"accounts": len(chunk), "error": str(exc)}
            )
            retriable = isinstance(exc, RetriableError)
            for position, change in chunk:
                detail = {"error": str(exc), "retriable": retriable}
                results[position] = WriteResult(change.account_id, WriteOutcome.failed, detail)
    return [results[i] for i in range(len(changes))]


def _read_owners(
    client: HubSpotClient, ids: Sequence[str], owner_property: str, kind: str
) -> tuple[dict[str, str | None], dict[str, dict[str, Any]]]:
    """The records' current owners by id, and the read's per-record errors."""
    batch = client.deals_batch if kind == "deals" else client.companies_batch
    read = client.call_json(
        f"read {kind} owners",
        batch.read,
        {"inputs": [{"id": i} for i in ids], "properties": [owner_property]},
        archived=False,
    )
    current: dict[str, str | None] = {
        str(obj["id"]): (obj.get("properties") or {}).get(owner_property) for obj in read.get("results") or []
    }
    errors = {
        str(i): _error_detail(err)
        for err in read.get("errors") or []
        for i in (err.get("context") or {}).get("ids", [])
    }
    return current, errors


def _apply_chunk(
    client: HubSpotClient, chunk: Sequence[tuple[int, OwnerChange]], owner_property: str, kind: str
) -> dict[int, WriteResult]:
    """Read the chunk's current owners, write the unchanged ones, read them back, classify every change."""
    out: dict[int, WriteResult] = {}
    current, read_errors = _read_owners(client, [c.account_id for _, c in chunk], owner_property, kind)
    to_write: list[tuple[int, OwnerChange]] = []
    for position, change in chunk:
        if change.account_id not in current:
            detail = read_errors.get(
                change.account_id, {"message": f"HubSpot did not return the {kind} record"}
            )
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
        f"update {kind} owners",
        client.deals_batch.update if kind == "deals" else client.companies_batch.update,
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
            detail = errors.get(change.account_id, {"message": f"HubSpot did not report this {kind} record"})
            out[position] = WriteResult(change.account_id, WriteOutcome.failed, detail)
    _read_back(client, [(p, c) for p, c in to_write if out[p].outcome is WriteOutcome.written], out,
               owner_property, kind)  # fmt: skip
    log.info(
        "hubspot owner write-back batch",
        extra={
            "kind": kind,
            "written": len(written),
            "failed": len(to_write) - len(written),
            "read": len(chunk),
        },
    )
    return out


def _read_back(
    client: HubSpotClient,
    written: Sequence[tuple[int, OwnerChange]],
    out: dict[int, WriteResult],
    owner_property: str,
    kind: str,
) -> None:
    """Re-read what was just written; an owner other than ours was set by someone else meanwhile."""
    if not written:
        return
    again, _ = _read_owners(client, [c.account_id for _, c in written], owner_property, kind)
    for position, change in written:
        found = again.get(change.account_id)
        if change.account_id in again and (found or "") != change.to_owner_id:
            detail = {"expected_owner_id": change.to_owner_id, "found_owner_id": found or None,
                      "raced": True, "written": dict(out[position].detail)}  # fmt: skip
            out[position] = WriteResult(change.account_id, WriteOutcome.conflict, detail)
