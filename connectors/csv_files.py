"""The CSV connector: a CRM export (docs/csv-format.md) read in bounded chunks.

An export is a full snapshot, so the engine learns deletes from it (ids no longer listed) and seeds the
assignment history from ``assignments.csv``; incremental reads still only hand over the rows modified
since the watermark, which keeps a re-import of a large, mostly unchanged export cheap.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from connectors.base import Batch, CrmObject, Cursor, OwnerChange, WriteOutcome, WriteResult
from connectors.errors import ConnectorConfigError
from connectors.records import FrameRecords

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

    def _chunks(self, name: str, usecols: Sequence[str] | None = None) -> Iterator[pd.DataFrame]:
        """The file's rows as all-text frames of at most ``chunk_rows`` rows (blank cells are "")."""
        path = self.folder / name
        self._header(path, FILES[name])
        try:
            reader = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                encoding=ENCODING,
                chunksize=self.chunk_rows,
                usecols=list(usecols) if usecols is not None else None,
                skipinitialspace=False,
            )
            with reader:
                for chunk in reader:
                    chunk.columns = [str(c).strip() for c in chunk.columns]
                    yield chunk
        except UnicodeDecodeError as exc:
            raise ConnectorConfigError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except pd.errors.ParserError as exc:
            raise ConnectorConfigError(f"{name}: not valid CSV: {exc}") from None

    def read(self, obj: CrmObject, since: Cursor | None, *, full: bool = False) -> Iterator[Batch]:
        """Rows of ``obj`` modified at or after ``since`` (all when ``full``), then the file's high mark.

        Rows without a parseable ``modified_at`` are always handed over (the engine quarantines the bad
        ones). The file is not sorted, so only the last (empty) batch carries the cursor: a crash half
        way through leaves the watermark where it was and the next run reads the file again.
        """
        name = FILE_OF[obj]
        high: Cursor | None = None
        for chunk in self._chunks(name):
            keep = chunk
            if "modified_at" in chunk.columns:
                stamps = pd.to_datetime(chunk["modified_at"], utc=True, errors="coerce", format="ISO8601")
                present = np.flatnonzero(stamps.notna().to_numpy(dtype=bool))
                if len(present):
                    top = int(present[int(stamps.iloc[present].reset_index(drop=True).argmax())])
                    candidate = Cursor(stamps.iloc[top].to_pydatetime(), str(chunk["id"].iloc[top]))
                    high = candidate if high is None or candidate > high else high
                if since is not None and not full:
                    keep = chunk[stamps.isna() | (stamps >= pd.Timestamp(since.modified_at))]
            if len(keep):
                records = FrameRecords(keep)
                yield Batch(records=records, raw=records)
        yield Batch(records=(), raw=(), cursor=high)

    def snapshot_ids(self, obj: CrmObject) -> Iterator[Sequence[str]]:
        """Every non-empty id in ``obj``'s file: whatever a stored row's id is not among was deleted."""
        for chunk in self._chunks(FILE_OF[obj], usecols=["id"]):
            ids = chunk["id"].str.strip()
            yield ids[ids != ""].tolist()

    def history(self) -> Iterator[pd.DataFrame]:
        """assignments.csv in chunks (nothing when the export has none)."""
        name = "assignments.csv"
        if not (self.folder / name).is_file():
            return
        for chunk in self._chunks(name):
            yield chunk.apply(lambda col: col.str.strip())[list(FILES[name])]

    def apply_owner_changes(
        self, changes: Sequence[OwnerChange], obj: CrmObject = CrmObject.accounts
    ) -> list[WriteResult]:
        """A CSV export cannot be written to: every change fails, saying so."""
        detail = {"error": "a CSV export is read-only; apply the change in the CRM itself"}
        return [WriteResult(c.account_id, WriteOutcome.failed, detail) for c in changes]
