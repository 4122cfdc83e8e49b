"""The test PostgreSQL: which server, fresh databases on it, and the guard against any other database."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.engine import URL

from store.db import embedded_postgres, normalize_url
from store.errors import UnsafeDatabaseError

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
MARKER_PREFIX = "territory-test-run:"
NAME_PREFIX = "territory_test_"


def local_server_answers(url: str = LOCAL_SERVER) -> bool:
    """Whether a PostgreSQL accepts connections at ``url`` within two seconds."""
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def server_for_tests(scratch: Path) -> Iterator[URL]:
    """The server the suite runs on: $TERRITORY_TEST_DATABASE_URL, else 127.0.0.1:5432, else embedded.

    In CI (CI=true) the embedded fallback is refused: a missing server there is a failure to report.
    """
    configured = os.environ.get("TERRITORY_TEST_DATABASE_URL")
    if configured:
        yield normalize_url(configured)
    elif local_server_answers():
        yield normalize_url(LOCAL_SERVER)
    elif os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(
            "CI=true but no PostgreSQL answers at 127.0.0.1:5432 and TERRITORY_TEST_DATABASE_URL is unset"
        )
    else:
        with embedded_postgres(scratch) as url:
            yield url


def _admin(server: URL) -> Engine:
    return create_engine(server, isolation_level="AUTOCOMMIT")


def create_test_database(server: URL, run_id: str) -> URL:
    """Create a database that only this run uses, marked with the run's id; returns its URL."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{NAME_PREFIX}{worker}_{secrets.token_hex(4)}"
    engine = _admin(server)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            conn.execute(text(f"COMMENT ON DATABASE \"{name}\" IS '{MARKER_PREFIX}{run_id}'"))
    finally:
        engine.dispose()
    return server.set(database=name)


def drop_test_database(server: URL, url: URL) -> None:
    """Drop a database this run created (refusing any other)."""
    name = url.database
    assert name is not None
    assert name.startswith(NAME_PREFIX)
    engine = _admin(server)
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def assert_created_by_run(engine: Engine, run_id: str) -> None:
    """Refuse to go on unless ``engine``'s database carries this run's marker."""
    with engine.connect() as conn:
        name, comment = conn.execute(
            text(
                "SELECT current_database(), shobj_description(d.oid, 'pg_database') "
                "FROM pg_database d WHERE d.datname = current_database()"
            )
        ).one()
    if comment != MARKER_PREFIX + run_id:
        raise UnsafeDatabaseError(
            f"refusing to run tests against database {name!r}: this test run did not create it"
        )


def url_text(url: URL) -> str:
    """``url`` as a string with its password, for subprocesses' environment."""
    return make_url(url).render_as_string(hide_password=False)
