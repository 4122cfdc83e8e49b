"""Validation and conversion of canonical CRM records, a batch at a time, vectorised with pandas.

A batch goes in as the connector's records (strings from CSV, JSON values from APIs); out come the
clean rows as COPY-ready text (``None`` is NULL) and the rejected rows, each with one reason. The
checks mirror the store's NOT NULL and CHECK constraints so that a bad row is caught here, not by a
failed INSERT. The references (unknown owner, unknown account) are checked by
:func:`drop_unknown_references` against the ids the store holds, however those are looked up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, overload

import numpy as np
import pandas as pd

from connectors.base import CANONICAL_COLUMNS, CrmObject
from store.models import TIERS

MONEY_LIMIT: Final = 1e16  # numeric(18, 2) holds less than 10**16
INT_LIMIT: Final = 2**31

# Column kinds: id, required text, text, tier, money (>= 0, fits numeric(18, 2)), positive integer,
# latitude, longitude, share (0..1), boolean with its default, date, timestamp.
_KINDS: Final[Mapping[CrmObject, Mapping[str, str]]] = {
    CrmObject.owners: {
        "id": "id", "name": "required", "email": "text", "region": "text", "team": "text",
        "capacity": "positive_int", "home_lat": "lat", "home_lon": "lon", "quota": "money",
        "active": "bool_true", "modified_at": "timestamp",
    },
    CrmObject.accounts: {
        "id": "id", "name": "required", "owner_id": "text", "tier": "tier", "industry": "text",
        "arr": "money", "potential": "money", "lat": "lat", "lon": "lon", "protected": "bool_false",
        "modified_at": "timestamp",
    },
    CrmObject.opportunities: {
        "id": "id", "account_id": "required", "owner_id": "text", "name": "text", "stage": "text",
        "amount": "money", "probability": "share", "close_date": "date", "is_closed": "bool_false",
        "is_won": "bool_false", "modified_at": "timestamp",
    },
}  # fmt: skip

POSITION: Final = "_pos"  # the record's index in its batch, carried into staging to find its raw record


@dataclass(frozen=True)
class Checked:
    """One batch after validation.

    ``clean``: the canonical columns as text ready for COPY (``None`` = NULL) plus ``_pos``, one row
    per id (the newest copy when a batch holds an id twice). ``rejected``: ``_pos``, ``record_id``
    (None when missing) and ``reason``. ``duplicates``: older copies of an id dropped from the batch.
    """

    clean: pd.DataFrame
    rejected: pd.DataFrame
    duplicates: int


_strip = np.frompyfunc(str.strip, 1, 1)
_to_str = np.frompyfunc(str, 1, 1)
_lower_ufunc = np.frompyfunc(str.lower, 1, 1)


def _text(values: pd.Series) -> pd.Series:
    """Values as stripped strings; missing and blank are None (numpy ufuncs: a tenth of pandas' cost)."""
    arr = values.to_numpy(dtype=object, copy=True)
    present = ~pd.isna(arr)
    if present.any():
        chosen = arr[present]
        if not all(type(v) is str for v in chosen[:1]) or values.dtype == object:
            chosen = _to_str(chosen)
        arr[present] = _strip(chosen)
    arr[~present] = None
    arr[present & (arr == "")] = None
    return pd.Series(arr, index=values.index, dtype=object)


def _lower(text: pd.Series) -> pd.Series:
    """Lower-cased text (None stays None)."""
    arr = text.to_numpy(dtype=object, copy=True)
    present = arr != None  # noqa: E711 - elementwise on an object array
    if present.any():
        arr[present] = _lower_ufunc(arr[present])
    return pd.Series(arr, index=text.index, dtype=object)


def _blank(text: pd.Series) -> pd.Series:
    return text.isna()


def _as_object(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), None)


class FrameRecords(Sequence[Mapping[str, Any]]):
    """A DataFrame seen as a sequence of records, so that a frame-based connector (CSV) hands its chunk
    to the engine without a dict per row; the engine uses ``frame`` directly."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]:
        if isinstance(index, slice):
            return FrameRecords(self.frame.iloc[index])
        return {str(k): v for k, v in self.frame.iloc[index].items()}


def records_frame(obj: CrmObject, records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The canonical columns of ``records`` as a frame (absent keys are missing values)."""
    columns = list(CANONICAL_COLUMNS[obj])
    if isinstance(records, FrameRecords):
        frame = records.frame
        missing = {c: None for c in columns if c not in frame.columns}
        return (frame.assign(**missing) if missing else frame)[columns]
    if not records:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pd.DataFrame.from_records(list(records), columns=columns)


def check_records(
    obj: CrmObject,
    records: Sequence[Mapping[str, Any]] | pd.DataFrame,
    *,
    not_after: dt.datetime | None = None,
) -> Checked:
    """Validate and convert ``records`` of ``obj``; every record ends up clean, rejected or a duplicate.

    A timestamp later than ``not_after`` (the run's start plus the clock skew allowed) is rejected: a
    record stamped in the future would otherwise carry the cursor past every later change.
    """
    columns = CANONICAL_COLUMNS[obj]
    kinds = _KINDS[obj]
    raw = records if isinstance(records, pd.DataFrame) else records_frame(obj, records)
    for column in columns:
        if column not in raw.columns:
            raw = raw.assign(**{column: None})
    raw = raw.reset_index(drop=True)
    if raw.empty:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in (*columns, POSITION)})
        return Checked(empty, pd.DataFrame({POSITION: [], "record_id": [], "reason": []}), 0)
    n = len(raw)
    reason = pd.Series([None] * n, dtype=object)
    has_reason = np.zeros(n, dtype=bool)
    out: dict[str, pd.Series] = {}
    modified: pd.Series | None = None

    def fail(mask: pd.Series, why: str, values: pd.Series | None = None) -> None:
        hit = mask.to_numpy(dtype=bool) & ~has_reason
        if hit.any():
            has_reason[hit] = True
            reason[hit] = why if values is None else (why + ": " + values[hit].astype(str))

    for column in columns:
        kind = kinds[column]
        text = _text(raw[column])
        blank = _blank(text)
        if kind in ("id", "required", "text"):  # the other kinds fail to parse a NUL anyway
            present = text[~blank]
            if "\x00" in "".join(present):  # one C-speed scan; per value only when there is a NUL
                fail(
                    text.map(lambda v: v is not None and "\x00" in v).astype(bool),
                    f"{column} contains a NUL character",
                )
        if kind == "id":
            fail(blank, "missing id")
            out[column] = text
        elif kind == "required":
            fail(blank, f"missing {column}")
            out[column] = text
        elif kind == "text":
            out[column] = text
        elif kind == "tier":
            lowered = _lower(text)
            fail(~blank & ~lowered.isin(TIERS), "tier outside strategic|growth|core", text)
            out[column] = lowered.where(~blank, "core")
        elif kind in ("money", "positive_int", "lat", "lon", "share"):
            number = pd.to_numeric(text, errors="coerce").astype(float)
            finite = pd.Series(np.isfinite(number.to_numpy(dtype=float)), index=text.index)
            fail(~blank & ~finite, f"unparseable {column}", text)
            ok = ~blank & finite
            if kind == "money":
                fail(ok & (number < 0), f"negative {column}")
                fail(ok & (number.abs() >= MONEY_LIMIT), f"{column} too large")
                out[column] = text
            elif kind == "positive_int":
                whole = ok & (number % 1 == 0)
                fail(ok & ~whole, f"{column} is not a whole number")
                fail(whole & (number <= 0), f"{column} must be positive")
                fail(whole & (number >= INT_LIMIT), f"{column} too large")
                out[column] = _as_object(number.where(whole & (number > 0) & (number < INT_LIMIT)))
                out[column] = out[column].map(lambda v: None if v is None else str(int(v)))
            elif kind == "share":
                fail(ok & ((number < 0) | (number > 1)), f"{column} outside 0..1")
                out[column] = text
            else:
                limit = 90 if kind == "lat" else 180
                fail(ok & (number.abs() > limit), f"{column} outside -{limit}..{limit}")
                out[column] = text
        elif kind in ("bool_true", "bool_false"):
            lowered = _lower(text)
            fail(~blank & ~lowered.isin(("true", "false")), f"unparseable {column}", text)
            default = "true" if kind == "bool_true" else "false"
            out[column] = lowered.where(~blank, default)
        elif kind == "date":
            parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
            fail(~blank & parsed.isna(), f"unparseable {column}", text)
            strings = np.datetime_as_string(parsed.to_numpy(dtype="datetime64[D]"), unit="D")
            out[column] = pd.Series(strings, dtype=object).where(parsed.notna(), None)
        elif kind == "timestamp":
            parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
            fail(~blank & parsed.isna(), f"unparseable {column}", text)
            if not_after is not None:
                fail(
                    parsed > pd.Timestamp(not_after),
                    f"{column} in the future (after {not_after.isoformat()})",
                    text,
                )
            naive = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
            strings = np.char.add(np.datetime_as_string(naive, unit="us"), "+00")
            out[column] = pd.Series(strings, dtype=object).where(parsed.notna(), None)
            modified = parsed
        else:  # pragma: no cover - the table above names every kind
            raise AssertionError(kind)

    if obj is CrmObject.opportunities:
        fail((out["is_won"] == "true") & (out["is_closed"] == "false"), "is_won without is_closed")

    frame = pd.DataFrame(out)
    frame[POSITION] = np.arange(n)
    bad = has_reason
    rejected = pd.DataFrame(
        {POSITION: frame[POSITION][bad], "record_id": frame["id"][bad], "reason": reason[bad]}
    ).reset_index(drop=True)
    good = frame[~bad]
    # The newest copy of each id wins inside a batch (stable: later records win ties).
    if modified is not None:
        order = pd.Series(modified[~bad].to_numpy(), index=good.index)
        good = good.assign(_order=order).sort_values("_order", kind="stable", na_position="first")
        good = good.drop(columns="_order")
    deduped = good.drop_duplicates("id", keep="last").sort_values(POSITION)
    return Checked(deduped.reset_index(drop=True), rejected, len(good) - len(deduped))


KnownIds = Callable[[str, Sequence[str]], Collection[str]]
"""Given a table and ids, those of them the store holds (live or not): a look-up in the database, or
the ids a first load read into memory."""

Rejection = tuple[Any, str, int]
"""(record id, reason, position in the batch)."""


def drop_unknown_references(
    obj: CrmObject, clean: pd.DataFrame, known: KnownIds
) -> tuple[pd.DataFrame, list[Rejection]]:
    """``clean`` without the rows that name an owner (accounts, opportunities) or an account
    (opportunities) the store does not hold, and those rows as rejections in batch order. An owner is
    checked first: a row naming both an unknown owner and an unknown account is rejected for its owner.
    """
    if obj is CrmObject.owners or clean.empty:
        return clean, []
    rids, positions = clean["id"].to_numpy(dtype=object), clean[POSITION].to_numpy(dtype=np.int64)
    bad = np.zeros(len(clean), dtype=bool)
    rejected: list[Rejection] = []
    checks = [("owners", "owner_id", "owner")]
    if obj is CrmObject.opportunities:
        checks.append(("accounts", "account_id", "account"))
    for table, col, what in checks:
        values = clean[col].to_numpy(dtype=object)
        present = ~pd.isna(values) & ~bad
        wanted = pd.unique(values[present]).tolist()
        have = known(table, wanted) if wanted else ()
        unknown = present & ~pd.Series(values).isin(have).to_numpy(dtype=bool)
        rejected += [
            (rids[i], f"unknown {what}: {values[i]}", int(positions[i])) for i in np.flatnonzero(unknown)
        ]
        bad |= unknown
    rejected.sort(key=lambda r: r[2])
    return clean[~bad], rejected


def check_history(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Assignment rows (text columns ``account_id, owner_id, start_date, end_date``) checked: the rows
    as COPY-ready dates (``start_date``, ``end_date``; None = current) and each row's reason to be
    rejected, None for a good one. The references are the store's to check."""
    start = pd.to_datetime(frame["start_date"], format="%Y-%m-%d", errors="coerce")
    end_blank = frame["end_date"].isna() | (frame["end_date"].astype(str).str.strip() == "")
    end = pd.to_datetime(frame["end_date"].where(~end_blank), format="%Y-%m-%d", errors="coerce")
    reasons = pd.Series(None, index=frame.index, dtype=object)
    reasons[(frame["account_id"].fillna("") == "")] = "missing account_id"
    reasons[reasons.isna() & (frame["owner_id"].fillna("") == "")] = "missing owner_id"
    reasons[reasons.isna() & start.isna()] = "unparseable start_date"
    reasons[reasons.isna() & ~end_blank & end.isna()] = "unparseable end_date"
    reasons[reasons.isna() & end.notna() & (end < start)] = "end_date before start_date"
    dates = pd.DataFrame(
        {"start_date": start.dt.strftime("%Y-%m-%d"), "end_date": end.dt.strftime("%Y-%m-%d")},
        index=frame.index,
    )
    return dates, reasons
