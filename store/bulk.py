"""Bulk loading through COPY: the fast path for whole tables and sync batches."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Connection

COPY_CHUNK_ROWS = 100_000


def _driver(conn: Connection) -> Any:
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the connection is closed")
    return raw


def copy_csv(
    conn: Connection, table: str, columns: Sequence[str], chunks: Iterable[bytes], *, freeze: bool = False
) -> None:
    """COPY headerless CSV ``chunks`` (empty field = NULL) into ``columns`` of ``table``.

    ``freeze`` writes the rows frozen and their pages all-visible (PostgreSQL's ``COPY ... FREEZE``),
    which is allowed only into a table created or truncated in the current subtransaction.
    """
    cols = ", ".join(f'"{c}"' for c in columns)
    options = "FORMAT csv, FREEZE" if freeze else "FORMAT csv"
    with _driver(conn).cursor() as cur, cur.copy(f'COPY "{table}" ({cols}) FROM STDIN ({options})') as copy:
        for chunk in chunks:
            copy.write(chunk)


def frame_csv_chunks(frame: pd.DataFrame, chunk_rows: int = COPY_CHUNK_ROWS) -> Iterable[bytes]:
    """``frame`` as headerless CSV in chunks of ``chunk_rows`` rows, so memory stays bounded."""
    for start in range(0, len(frame), chunk_rows):
        buf = io.StringIO()
        frame.iloc[start : start + chunk_rows].to_csv(
            buf, header=False, index=False, date_format="%Y-%m-%dT%H:%M:%S%z"
        )
        yield buf.getvalue().encode()


def copy_frame(conn: Connection, table: str, frame: pd.DataFrame) -> int:
    """COPY every row of ``frame`` into the same-named columns of ``table``; returns the row count."""
    copy_csv(conn, table, list(frame.columns), frame_csv_chunks(frame))
    return len(frame)
