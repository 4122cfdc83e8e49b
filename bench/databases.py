"""A database of a benchmark's own on the server it is given, dropped afterwards."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from store.db import ensure_database, normalize_url

LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The default server: the local PostgreSQL."""


@contextlib.contextmanager
def scratch_database(server: str = LOCAL) -> Iterator[URL]:
    """A fresh ``territory_bench_*`` database on ``server`` (a URL), dropped at the end, used or not."""
    server_url = normalize_url(server)
    name = f"territory_bench_{secrets.token_hex(4)}"
    url = ensure_database(server_url, name)
    try:
        yield url
    finally:
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
