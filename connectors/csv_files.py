"""The CSV connector: a CRM export (docs/csv-format.md) read in bounded chunks.

An export is a full snapshot, so the engine learns deletes from it (ids no longer listed) and seeds the
assignment history from ``assignments.csv``; incremental reads still only hand over the rows modified
since the watermark, which keeps a re-import of a large, mostly unchanged export cheap.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from connectors.base import Batch, CrmObject, Cursor, OwnerChange, WriteOutcome, WriteResult
from connectors.errors import ConnectorConfigError
from connectors.records import INVALID_ROW, FrameRecords, as_arrow, parse_timestamps, strip_text

log = logging.getLogger(__name__)

# The required header of each file (extra columns are ignored); owners.csv may add modified_at.
FILES: Final[dict[str, tuple[str, ...]]] = {
    "owners.csv": (
        "id", "name", "email", "region", "team", "capacity", "home_lat", "home_lon", "quota", "active",
    ),
    "accounts.csv": (
        "id", "name", "owner_id", "tier", "industry", "arr", "potential", "lat", "lon", "protected",
        "modified_at",
    ),
    "opportunities.csv": (
        "id", "account_id", "owner_id", "name", "stage", "amount", "probability", "close_date",
        "is_closed", "is_won", "modified_at",
    ),
    "assignments.csv": ("account_id", "owner_id", "start_date", "end_date"),
}  # fmt: skip
FILE_OF: Final = {obj: f"{obj.value}.csv" for obj in CrmObject}
DEFAULT_CHUNK_ROWS: Final = 5000
ENCODING: Final = "utf-8-sig"  # UTF-8; a byte-order mark (spreadsheet exports) is tolerated
_BLOCK_BYTES: Final = 1 << 22  # what Arrow's reader parses at a time
_TEXT: Final = pd.StringDtype("pyarrow", na_value=np.nan)
# The chunks of a file that is taken whole in one statement (the snapshot's ids, the assignments): no
# batch of its own, so larger chunks only save the per-chunk work.
_WHOLE_CHUNK_ROWS: Final = 100_000


def _frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of text as a frame of Arrow-backed text columns (no Python string per cell)."""
    frame: pd.DataFrame = table.to_pandas(types_mapper=lambda t: _TEXT if pa.types.is_string(t) else None)
    return frame


def _with_invalid(
    block: pa.RecordBatch, invalid: Sequence[tuple[str, str]], columns: Sequence[str]
) -> pa.RecordBatch:
    """``block`` with the ``INVALID_ROW`` column, and after its rows one row of blanks per invalid row
    (reason and text in ``INVALID_ROW``). The fields of a row whose count is wrong cannot be told apart,
    so none is stored; its first field is kept as its id where the header starts with ``id``, so that a
    delete pass never takes its id for absent."""
    marks = pa.nulls(block.num_rows, pa.string())
    if not invalid:
        return pa.RecordBatch.from_arrays([*block.columns, marks], names=[*columns, INVALID_ROW])
    extra: dict[str, list[str]] = {c: [""] * len(invalid) for c in columns}
    if columns and columns[0] == "id":
        extra["id"] = [next(csv.reader([text]), [""])[0].strip() for _, text in invalid]
    arrays = [pa.concat_arrays([block.column(c), pa.array(extra[c], pa.string())]) for c in columns]
    reasons = pa.array([f"{why}: {text}" for why, text in invalid], pa.string())
    return pa.RecordBatch.from_arrays(
        [*arrays, pa.concat_arrays([marks, reasons])], names=[*columns, INVALID_ROW]
    )


def _check_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8 throughout, naming the line, before any of it is read: a stray
    byte found while parsing would fail the object half way (and Arrow cannot hand over the text of a
    row that is both malformed and not UTF-8). An ASCII block between whole characters is UTF-8 as it
    stands (the usual export: no decoding); lines are counted only to name the one that fails."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK_BYTES):
            if not (block.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    line = _lines_before(path, offset) + block.count(b"\n", 0, exc.start)
                    raise ConnectorConfigError(
                        f"{path.name}: not UTF-8 text (line {line}: {exc.reason})"
                    ) from None
            offset += len(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            line = _lines_before(path, offset)
            raise ConnectorConfigError(f"{path.name}: not UTF-8 text (line {line}: {exc.reason})") from None


def _lines_before(path: Path, offset: int) -> int:
    """The number of the line that byte ``offset`` of the file is on (from 1)."""
    lines = 1
    with path.open("rb") as fh:
        while offset > 0 and (block := fh.read(min(_BLOCK_BYTES, offset))):
            lines += block.count(b"\n")
            offset -= len(block)
    return lines


class CsvConnector:
    """A folder holding owners.csv, accounts.csv, opportunities.csv and (optionally) assignments.csv."""

    source = "csv"

    def __init__(self, folder: Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if not folder.is_dir():
            raise ConnectorConfigError(f"CSV folder {folder} does not exist or is not a folder")
        for obj in CrmObject:
            if not (folder / FILE_OF[obj]).is_file():
                raise ConnectorConfigError(f"CSV folder {folder}: {FILE_OF[obj]} is missing")
        if chunk_rows < 1:
            raise ConnectorConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.folder = folder
        self.chunk_rows = chunk_rows
        for name, required in FILES.items():
            if (folder / name).is_file():
                self._header(folder / name, required)
                _check_utf8(folder / name)

    # --- reading -------------------------------------------------------------------------------------

    def _header(self, path: Path, required: Sequence[str]) -> list[str]:
        """The file's header, checked for every required column."""
        with path.open("rb") as fh:
            first_bytes = fh.readline()
        try:
            first = first_bytes.decode(ENCODING)
        except UnicodeDecodeError as exc:
            raise ConnectorConfigError(
                f"{path.name}: not UTF-8 text (byte {exc.start} of the header)"
            ) from None
        if not first.strip():
            raise ConnectorConfigError(f"{path.name}: empty file, expected a header row")
        header = [c.strip() for c in next(csv.reader([first]))]
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:  # which of the two holds the value is anyone's guess: refuse rather than pick one
            raise ConnectorConfigError(f"{path.name}: header names column {twice[0]!r} twice")
        missing = [c for c in required if c not in header]
        if missing:
            raise ConnectorConfigError(
                f"{path.name}: header lacks column {missing[0]!r} (required: {', '.join(required)})"
            )
        return header

    def _chunks(
        self, name: str, usecols: Sequence[str] | None = None, chunk_rows: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """The file's rows as all-text frames of at most ``chunk_rows`` rows (by default the connector's
        batch size; blank cells are ""), read
        by Arrow's CSV reader; the columns are Arrow-backed text. A row with fewer or more fields than
        the header comes as a row of blanks with its reason in ``INVALID_ROW`` (and its text)."""
        path = self.folder / name
        size = chunk_rows or self.chunk_rows
        header = self._header(path, FILES[name])
        invalid: list[tuple[str, str]] = []

        def on_invalid(row: Any) -> str:
            invalid.append(
                (f"row has {row.actual_columns} fields, the header {row.expected_columns}", row.text)
            )
            return "skip"

        try:
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string()),
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                    include_columns=list(usecols) if usecols is not None else None,
                ),
            )
            columns = reader.schema.names
            pending: list[pa.RecordBatch] = []
            rows = 0
            for raw in reader:
                block = _with_invalid(raw, invalid, columns)
                invalid.clear()
                pending.append(block)
                rows += block.num_rows
                while rows >= size:
                    table = pa.Table.from_batches(pending)
                    yield _frame(table.slice(0, size))
                    rest = table.slice(size)
                    pending, rows = rest.to_batches(), rest.num_rows
            if invalid:  # the handler runs as a block is parsed: a last one may follow the last block
                empty = pa.RecordBatch.from_arrays(
                    [pa.array([], pa.string()) for _ in columns], names=columns
                )
                pending.append(_with_invalid(empty, invalid, columns))
                rows += len(invalid)
            if rows:
                yield _frame(pa.Table.from_batches(pending))
        except pa.ArrowInvalid as exc:
            message = str(exc)
            if "UTF8" in message or "UTF-8" in message:
                raise ConnectorConfigError(f"{name}: not UTF-8 text ({message})") from None
            raise ConnectorConfigError(f"{name}: not valid CSV: {message}") from None

    def read(
        self, obj: CrmObject, since: Cursor | None, *, full: bool = False, batch_rows: int | None = None
    ) -> Iterator[Batch]:
        """Rows of ``obj`` modified at or after ``since`` (all when ``full``), then the file's high mark.

        Rows without a parseable ``modified_at`` are always handed over (the engine quarantines the bad
        ones). The file is not sorted, so only the last (empty) batch carries the cursor: a crash half
        way through leaves the watermark where it was and the next run reads the file again.
        """
        name = FILE_OF[obj]
        high: Cursor | None = None
        for chunk in self._chunks(name, chunk_rows=batch_rows):
            keep = chunk
            if "modified_at" in chunk.columns:
                stamps = parse_timestamps(as_arrow(chunk["modified_at"]))  # UTC, NaT where unparseable
                present = ~np.isnat(stamps)
                if present.any():  # the chunk's largest (modified_at, id): the file's, however chunked
                    newest = stamps[present].max()
                    last_id = max(str(i) for i in chunk["id"][present & (stamps == newest)])
                    candidate = Cursor(newest.item().replace(tzinfo=dt.UTC), last_id)
                    high = candidate if high is None or candidate > high else high
                if since is not None and not full:
                    start = np.datetime64(since.modified_at.astimezone(dt.UTC).replace(tzinfo=None), "us")
                    keep = chunk[np.isnat(stamps) | (stamps >= start)]
            if len(keep):
                records = FrameRecords(keep)
                yield Batch(records=records, raw=records)
        yield Batch(records=(), raw=(), cursor=high)

    def snapshot_ids(self, obj: CrmObject) -> Iterator[Sequence[str]]:
        """Every non-empty id in ``obj``'s file: whatever a stored row's id is not among was deleted."""
        for chunk in self._chunks(FILE_OF[obj], usecols=["id"], chunk_rows=_WHOLE_CHUNK_ROWS):
            ids = strip_text(chunk["id"])
            yield ids[ids != ""].tolist()

    def history(self) -> Iterator[pd.DataFrame]:
        """assignments.csv in chunks (nothing when the export has none)."""
        name = "assignments.csv"
        if not (self.folder / name).is_file():
            return
        for chunk in self._chunks(name, chunk_rows=_WHOLE_CHUNK_ROWS):
            yield chunk[list(FILES[name])].apply(strip_text)

    def history_version(self) -> str | None:
        """A digest of assignments.csv (None when the export has none): the same digest, the same rows."""
        path = self.folder / "assignments.csv"
        if not path.is_file():
            return None
        digest = hashlib.blake2b(digest_size=16)
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]:
        """A CSV export cannot be written to: every change fails, saying so."""
        detail = {"error": "a CSV export is read-only; apply the change in the CRM itself"}
        return [WriteResult(c.account_id, WriteOutcome.failed, detail) for c in changes]
