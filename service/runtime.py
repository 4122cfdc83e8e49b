"""Opening the database the settings point at: the configured URL, or the embedded PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine

from service.settings import Settings
from store.db import embedded_postgres, ensure_database, make_engine

EMBEDDED_DATABASE = "territory"


@contextlib.contextmanager
def open_embedded(settings: Settings, database: str = EMBEDDED_DATABASE) -> Iterator[Engine]:
    """An engine on ``database`` of the embedded PostgreSQL in ``settings.data_dir``."""
    with embedded_postgres(settings.data_dir) as admin_url:
        engine = make_engine(ensure_database(admin_url, database), pool_size=settings.database.pool_size)
        try:
            yield engine
        finally:
            engine.dispose()


@contextlib.contextmanager
def open_database(settings: Settings) -> Iterator[Engine]:
    """An engine on ``TERRITORY_DATABASE_URL``, or on the embedded PostgreSQL when it is unset."""
    if settings.database_url is None:
        with open_embedded(settings) as engine:
            yield engine
        return
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=settings.database.pool_size)
    try:
        yield engine
    finally:
        engine.dispose()
