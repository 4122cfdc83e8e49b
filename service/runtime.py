"""Opening the database the settings point at: the configured URL, or the embedded PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from service.errors import ConfigError
from service.settings import Settings
from store.db import EMBEDDED_MISSING, embedded_available, embedded_postgres, ensure_database, make_engine

EMBEDDED_DATABASE = "territory"


def _engine(url: str | URL, settings: Settings) -> Engine:
    """An engine on ``url`` with the pool and timeouts of the ``database`` section."""
    db = settings.database
    return make_engine(
        url,
        pool_size=db.pool_size,
        connect_timeout=db.connect_timeout_seconds,
        statement_timeout=db.statement_timeout_seconds,
    )


@contextlib.contextmanager
def open_embedded(settings: Settings, database: str = EMBEDDED_DATABASE) -> Iterator[Engine]:
    """An engine on ``database`` of the embedded PostgreSQL in ``settings.data_dir``."""
    if not embedded_available():  # an image without the `embedded` extra and no TERRITORY_DATABASE_URL
        raise ConfigError(EMBEDDED_MISSING)
    with embedded_postgres(settings.data_dir) as admin_url:
        engine = _engine(ensure_database(admin_url, database), settings)
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
    engine = _engine(settings.database_url.get_secret_value(), settings)
    try:
        yield engine
    finally:
        engine.dispose()
