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
import pyarrow as pa
import pyarrow.compute as pc

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
INVALID_ROW: Final = "_invalid_row"
"""A column a connector may add: a record's reason to be quarantined before any check (a CSV row whose
field count is not the header's), null for the others."""


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


# The characters ``str.strip`` removes (those whose ``isspace()`` is true), so that Arrow's trim strips
# exactly what Python's would.
WHITESPACE: Final = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A plain decimal: Arrow's cast parses it as pandas' to_numeric would; anything else goes to pandas.
_PLAIN_NUMBER: Final = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_TEXT: Final = pd.StringDtype("pyarrow", na_value=np.nan)

_to_str = np.frompyfunc(str, 1, 1)


def as_arrow(values: pd.Series) -> pa.Array:
    """``values`` as an Arrow string array: zero-copy for Arrow-backed text (a CSV chunk), ``str`` of
    each present value otherwise (JSON values from an API); missing values are null."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        arr = pa.array(values.array)
        return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    obj = values.to_numpy(dtype=object, copy=True)
    present = ~pd.isna(obj)
    if present.any():
        obj[present] = _to_str(obj[present])
    obj[~present] = None
    return pa.array(obj, type=pa.string())


def strip_text(values: pd.Series) -> pd.Series:
    """Text stripped as ``str.strip`` strips it (missing stays missing), as Arrow-backed text."""
    return pd.Series(pc.utf8_trim(as_arrow(values), characters=WHITESPACE), index=values.index, dtype=_TEXT)


def _text(values: pd.Series) -> pa.Array:
    """Values as stripped strings; missing and blank are null."""
    trimmed = pc.utf8_trim(as_arrow(values), characters=WHITESPACE)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _mask(values: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(text: pa.Array) -> np.ndarray:
    """``text`` parsed as pandas' ``to_numeric(errors="coerce")`` does, NaN where it does not parse;
    plain decimals through Arrow's cast, the rest (rare: inf, odd spellings) through pandas. (Where Arrow
    reads a non-finite number pandas would not, the reason is the same: unparseable.)"""
    try:  # the usual case: every value is a plain number
        return np.asarray(pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    except pa.ArrowInvalid:
        pass
    plain = _mask(pc.match_substring_regex(text, _PLAIN_NUMBER))
    out = np.full(len(text), np.nan)
    if plain.any():
        out[plain] = pc.cast(text.filter(pa.array(plain)), pa.float64()).to_numpy(zero_copy_only=False)
    other = ~plain & _mask(pc.is_valid(text))
    if other.any():
        rest = pd.Series(text.filter(pa.array(other)).to_pylist(), dtype=object)
        out[other] = pd.to_numeric(rest, errors="coerce").astype(float).to_numpy()
    return out


def _lower_in(text: pa.Array, words: Sequence[str]) -> tuple[pa.Array, np.ndarray]:
    """The text lower-cased and whether it is one of the (ASCII) ``words``. ``str.lower`` yields one of
    them only from ASCII text, so ASCII lowering decides exactly as Python's would."""
    lowered = pc.ascii_lower(text)
    ascii_only = _mask(pc.string_is_ascii(text))
    return lowered, ascii_only & _mask(pc.is_in(lowered, value_set=pa.array(list(words))))


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
        invalid = [INVALID_ROW] if INVALID_ROW in frame.columns else []
        return (frame.assign(**missing) if missing else frame)[[*columns, *invalid]]
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
    record stamped in the future would otherwise carry the cursor past every later change. The checks
    run column by column on Arrow arrays (pyarrow.compute); the first failing rule is the reason.
    """
    columns = CANONICAL_COLUMNS[obj]
    raw = records if isinstance(records, pd.DataFrame) else records_frame(obj, records)
    for column in columns:
        if column not in raw.columns:
            raw = raw.assign(**{column: None})
    raw = raw.reset_index(drop=True)
    if raw.empty:
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in (*columns, POSITION)})
        return Checked(empty, pd.DataFrame({POSITION: [], "record_id": [], "reason": []}), 0)
    rules = _Rules(len(raw))
    if INVALID_ROW in raw.columns:
        reasons = as_arrow(raw[INVALID_ROW])
        rules.fail(_mask(pc.is_valid(reasons)), "", reasons)
    out = {column: rules.column(column, _KINDS[obj][column], raw[column], not_after) for column in columns}
    if obj is CrmObject.opportunities:
        won = _mask(pc.equal(out["is_won"], "true")) & _mask(pc.equal(out["is_closed"], "false"))
        rules.fail(won, "is_won without is_closed")
    return _split_checked(out, rules)


class _Rules:
    """The checks of one batch, column by column: each row keeps the first reason it fails."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reason = np.full(n, None, dtype=object)
        self.has_reason = np.zeros(n, dtype=bool)
        self.modified: pd.Series | None = None

    def fail(self, mask: np.ndarray, why: str, values: pa.Array | None = None) -> None:
        hit = mask & ~self.has_reason
        if hit.any():
            self.has_reason[hit] = True
            if values is None:
                self.reason[hit] = why
            else:
                shown = values.filter(pa.array(hit)).to_pylist()
                self.reason[hit] = [f"{why}: {v}" if why else str(v) for v in shown]

    def column(self, column: str, kind: str, values: pd.Series, not_after: dt.datetime | None) -> pa.Array:
        """One column checked and converted to its COPY text (null = NULL)."""
        text = _text(values)
        blank = ~_mask(pc.is_valid(text))
        if kind in ("id", "required", "text"):  # the other kinds fail to parse a NUL anyway
            data = text.buffers()[2]
            # One scan of the bytes (a slice's buffer may hold more: that only costs the exact check).
            if data is not None and not np.frombuffer(data, dtype=np.uint8).all():
                self.fail(_mask(pc.match_substring(text, "\x00")), f"{column} contains a NUL character")
        if kind in ("id", "required"):
            self.fail(blank, "missing id" if kind == "id" else f"missing {column}")
            return text
        if kind == "text":
            return text
        if kind == "tier":
            lowered, known = _lower_in(text, TIERS)
            self.fail(~blank & ~known, "tier outside strategic|growth|core", text)
            return pc.if_else(pa.array(blank), pa.scalar("core"), lowered)
        if kind in ("bool_true", "bool_false"):
            lowered, known = _lower_in(text, ("true", "false"))
            self.fail(~blank & ~known, f"unparseable {column}", text)
            default = "true" if kind == "bool_true" else "false"
            return pc.if_else(pa.array(blank), pa.scalar(default), lowered)
        if kind == "date":
            return self._date(column, text, blank)
        if kind == "timestamp":
            return self._timestamp(column, text, blank, not_after)
        return self._number(column, kind, text, blank)

    def _number(self, column: str, kind: str, text: pa.Array, blank: np.ndarray) -> pa.Array:
        number = _numbers(text)
        finite = np.isfinite(number)
        self.fail(~blank & ~finite, f"unparseable {column}", text)
        ok = ~blank & finite
        if kind == "money":
            self.fail(ok & (number < 0), f"negative {column}")
            self.fail(ok & (np.abs(number) >= MONEY_LIMIT), f"{column} too large")
        elif kind == "positive_int":
            whole = ok & (np.where(ok, number, 0) % 1 == 0)
            self.fail(ok & ~whole, f"{column} is not a whole number")
            self.fail(whole & (number <= 0), f"{column} must be positive")
            self.fail(whole & (number >= INT_LIMIT), f"{column} too large")
            good = whole & (number > 0) & (number < INT_LIMIT)
            ints = pa.array(np.where(good, number, 0).astype(np.int64), mask=~good)
            return pc.cast(ints, pa.string())
        elif kind == "share":
            self.fail(ok & ((number < 0) | (number > 1)), f"{column} outside 0..1")
        else:
            limit = 90 if kind == "lat" else 180
            self.fail(ok & (np.abs(number) > limit), f"{column} outside -{limit}..{limit}")
        return text

    def _date(self, column: str, text: pa.Array, blank: np.ndarray) -> pa.Array:
        parsed = parse_dates(text)
        self.fail(~blank & np.isnat(parsed), f"unparseable {column}", text)
        return pc.cast(
            pa.array(parsed.astype("datetime64[D]"), type=pa.date32(), from_pandas=True), pa.string()
        )

    def _timestamp(
        self, column: str, text: pa.Array, blank: np.ndarray, not_after: dt.datetime | None
    ) -> pa.Array:
        parsed = parse_timestamps(text)
        self.fail(~blank & np.isnat(parsed), f"unparseable {column}", text)
        if not_after is not None:
            limit = np.datetime64(not_after.astimezone(dt.UTC).replace(tzinfo=None), "us")
            self.fail(
                ~np.isnat(parsed) & (parsed > limit),
                f"{column} in the future (after {not_after.isoformat()})",
                text,
            )
        self.modified = pd.Series(parsed)
        stamps = pa.array(parsed, type=pa.timestamp("us"), from_pandas=True)
        # Arrow's cast writes "YYYY-MM-DD HH:MM:SS.ffffff" (far faster than its strftime).
        iso = pc.replace_substring(pc.cast(stamps, pa.string()), " ", "T", max_replacements=1)
        return pc.binary_join_element_wise(iso, "+00", "")


# Years pandas holds (nanoseconds: 1677..2262) and the shapes Arrow's cast parses as pandas would; any
# other text goes to pandas itself.
_PLAIN_DATE: Final = r"^(19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}$"
_PLAIN_STAMP: Final = (
    r"^(19|20|21)[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})$"
)


_FIRST: Final = np.datetime64("1900-01-01", "us")  # the years the plain shapes allow
_LAST: Final = np.datetime64("2200-01-01", "us")


def _parse(
    text: pa.Array, plain: str, arrow_type: pa.DataType, slow: Callable[[pd.Series], pd.Series]
) -> np.ndarray:
    """``text`` parsed to UTC ``datetime64[us]`` (NaT where it does not parse): the values of the
    ``plain`` shape by Arrow's cast, the rest by ``slow`` (pandas). Arrow reads no shape pandas does not,
    only years pandas cannot hold: a column Arrow reads whole, in pandas' years, needs nothing else."""
    try:
        whole = pc.cast(pc.cast(text, arrow_type), pa.timestamp("us")).to_numpy(zero_copy_only=False)
        present = ~np.isnat(whole)
        if not present.any() or (whole[present].min() >= _FIRST and whole[present].max() < _LAST):
            return np.asarray(whole, dtype="datetime64[us]")
    except pa.ArrowInvalid:
        pass
    out = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[us]")
    fast = _mask(pc.match_substring_regex(text, plain))
    rest = ~fast & _mask(pc.is_valid(text))
    if fast.any():
        try:
            cast = pc.cast(text.filter(pa.array(fast)), arrow_type)
            cast = pc.cast(cast, pa.timestamp("us"))  # UTC, naive
            out[fast] = cast.to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:  # one of them is no real date (a 13th month): pandas judges them all
            rest |= fast
    if rest.any():
        values = pd.Series(text.filter(pa.array(rest)).to_pylist(), dtype=object)
        out[rest] = slow(values).to_numpy(dtype="datetime64[us]")
    return out


def parse_timestamps(text: pa.Array) -> np.ndarray:
    """ISO 8601 timestamps (``pd.to_datetime(utc=True, format="ISO8601")``) as UTC ``datetime64[us]``."""

    def slow(values: pd.Series) -> pd.Series:
        parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        return parsed.dt.tz_convert(None)

    return _parse(text, _PLAIN_STAMP, pa.timestamp("us", tz="UTC"), slow)


def parse_dates(text: pa.Array) -> np.ndarray:
    """``YYYY-MM-DD`` dates (``pd.to_datetime(format="%Y-%m-%d")``) as ``datetime64[us]``."""
    return _parse(
        text, _PLAIN_DATE, pa.date32(), lambda v: pd.to_datetime(v, format="%Y-%m-%d", errors="coerce")
    )


def _split_checked(out: Mapping[str, pa.Array], rules: _Rules) -> Checked:
    """The clean rows (the newest copy of an id) and the rejected ones of a checked batch."""
    bad = rules.has_reason
    ids = out["id"]
    rejected = pd.DataFrame(
        {
            POSITION: np.flatnonzero(bad),
            "record_id": pd.Series(ids.filter(pa.array(bad)).to_pylist(), dtype=object),
            "reason": pd.Series(rules.reason[bad], dtype=object),
        }
    )
    table = pa.table({**out, POSITION: pa.array(np.arange(rules.n))}).filter(pa.array(~bad))
    good = table.to_pandas(types_mapper=lambda t: _TEXT if pa.types.is_string(t) else None)
    if pc.count_distinct(table["id"]).as_py() == len(good):
        return Checked(good, rejected, 0)
    # The newest copy of each id wins inside a batch (stable: later records win ties).
    if rules.modified is not None:
        order = pd.Series(rules.modified[~bad].to_numpy(dtype="datetime64[ns]"), index=good.index)
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
    bad = np.zeros(len(clean), dtype=bool)
    rejected: list[Rejection] = []
    checks = [("owners", "owner_id", "owner")]
    if obj is CrmObject.opportunities:
        checks.append(("accounts", "account_id", "account"))
    for table, col, what in checks:
        values = as_arrow(clean[col])
        present = _mask(pc.is_valid(values)) & ~bad
        wanted = pc.unique(values.filter(pa.array(present))).to_pylist()
        have = list(known(table, wanted)) if wanted else []
        unknown = present & ~_mask(pc.is_in(values, value_set=pa.array(have, pa.string())))
        for i in np.flatnonzero(unknown):
            rejected.append(
                (clean["id"].iloc[i], f"unknown {what}: {values[int(i)]}", int(clean[POSITION].iloc[i]))
            )
        bad |= unknown
    if not bad.any():
        return clean, []
    rejected.sort(key=lambda r: r[2])
    return clean[~bad], rejected


def check_history(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Assignment rows (text columns ``account_id, owner_id, start_date, end_date``) checked: the rows
    as COPY-ready dates (``start_date``, ``end_date``; missing = current) and each row's reason to be
    rejected, None for a good one. The references are the store's to check."""
    start = parse_dates(_text(frame["start_date"]))
    end_text = _text(frame["end_date"])
    end_blank = ~_mask(pc.is_valid(end_text))
    end = parse_dates(end_text)
    reasons = np.full(len(frame), None, dtype=object)

    def fail(mask: np.ndarray, why: str) -> None:
        reasons[mask & pd.isna(reasons)] = why

    fail(~_mask(pc.is_valid(_text(frame["account_id"]))), "missing account_id")
    fail(~_mask(pc.is_valid(_text(frame["owner_id"]))), "missing owner_id")
    fail(np.isnat(start), "unparseable start_date")
    fail(~end_blank & np.isnat(end), "unparseable end_date")
    fail(~np.isnat(end) & ~np.isnat(start) & (end < start), "end_date before start_date")
    dates = pd.DataFrame(
        {"start_date": _day_text(start, frame.index), "end_date": _day_text(end, frame.index)}
    )
    return dates, pd.Series(reasons, index=frame.index, dtype=object)


def _day_text(days: np.ndarray, index: pd.Index) -> pd.Series:
    """``datetime64`` days as ``YYYY-MM-DD`` text (NaT is missing)."""
    arrow = pa.array(days.astype("datetime64[D]"), type=pa.date32(), from_pandas=True)
    return pd.Series(pc.cast(arrow, pa.string()), index=index, dtype=_TEXT)
