"""Bulk loading through COPY: the fast path for whole tables and sync batches, the COPY text of a frame,
and the first load's stripping and rebuilding of keys and indexes."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Select, text

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


def copy_out(conn: Connection, query: Select[Any]) -> bytes:
    """The rows of ``query`` as headerless CSV, through ``COPY (query) TO STDOUT``. Its parameters are
    rendered inline (COPY takes none): only for queries of our own values, never of input text."""
    sql = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    out = bytearray()
    with _driver(conn).cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        for block in copy:
            out += block
    return bytes(out)


def temp_table_as(conn: Connection, name: str, query: Select[Any]) -> None:
    """``CREATE TEMP TABLE name ON COMMIT DROP AS query``. CREATE TABLE AS takes no bound parameters, so
    they are rendered inline, as :func:`copy_out` does: only for queries of our own values."""
    sql = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    conn.execute(text(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {sql}"))


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


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """Headerless CSV for COPY of a frame of text (missing = NULL, never an empty string) and integers,
    written by Arrow's CSV writer (quoted where needed)."""
    if frame.empty:
        return b""
    buf = io.BytesIO()
    table = pa.table({str(c): pa.array(frame[c].array, from_pandas=True) for c in frame.columns})
    pacsv.write_csv(table, buf, write_options=_NO_HEADER)
    return buf.getvalue()


_NO_HEADER: Final = pacsv.WriteOptions(include_header=False, quoting_style="needed")


# --- the first load: keys and indexes off while the rows go in, rebuilt once --------------------------


@dataclass
class Stripped:
    """What :func:`strip_keys` dropped and :func:`restore_keys` puts back, in the same transaction."""

    tables: list[str]
    primary_keys: list[tuple[str, str, str]] = field(default_factory=list)  # table, name, definition
    indexes: list[str] = field(default_factory=list)  # CREATE INDEX statements
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)  # table, name, definition


def strip_keys(conn: Connection, tables: Sequence[str]) -> Stripped:
    """Drop the indexes, primary keys and foreign keys (incoming and outgoing) of ``tables``, remembering
    how to recreate them. NOT NULL and CHECK constraints stay and judge every row; keys and unique
    indexes judge them all when they are rebuilt. The catalog is read as text: these are the
    server's own definitions, replayed as they are."""
    stripped = Stripped(list(tables))
    rels = {"t": list(tables)}
    in_tables = "IN (SELECT CAST(unnest(CAST(:t AS text[])) AS regclass))"

    def constraints(where: str) -> list[tuple[str, str, str]]:
        sql = (
            "SELECT conrelid::regclass::text, quote_ident(conname), pg_get_constraintdef(oid) "  # noqa: S608
            f"FROM pg_constraint WHERE {where} ORDER BY 1, 2"
        )
        return [(str(t), str(n), str(d)) for t, n, d in conn.execute(text(sql), rels).all()]

    stripped.foreign_keys = constraints(f"contype = 'f' AND (conrelid {in_tables} OR confrelid {in_tables})")
    stripped.primary_keys = constraints(f"contype = 'p' AND conrelid {in_tables}")
    indexes = conn.execute(
        text(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index i "  # noqa: S608
            "WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c "
            f"WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) AND indrelid {in_tables} "
            "ORDER BY 1"
        ),
        rels,
    ).all()
    stripped.indexes = [str(d) for _, d in indexes]
    for table, name, _ in [*stripped.foreign_keys, *stripped.primary_keys]:
        conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
    for name, _ in indexes:
        conn.execute(text(f"DROP INDEX {name}"))
    return stripped


def truncate(conn: Connection, tables: Sequence[str]) -> None:
    """TRUNCATE ``tables`` (empty already, under the strip's locks): it allows COPY FREEZE into them."""
    conn.execute(text(f"TRUNCATE {', '.join(tables)}"))


def restore_keys(conn: Connection, stripped: Stripped) -> None:
    """Recreate what :func:`strip_keys` dropped: primary keys, then indexes, then foreign keys (one
    validating join each). Statistics are autovacuum's: it analyses a table once a tenth of it has
    changed, as after any large write."""
    for table, name, definition in stripped.primary_keys:
        conn.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"))
    for ddl in stripped.indexes:
        conn.execute(text(ddl))
    for table, name, definition in stripped.foreign_keys:
        conn.execute(text(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"))
