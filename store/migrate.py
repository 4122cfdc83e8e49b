"""Run the Alembic migrations of ``alembic/`` from code, on a given engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from store.errors import DatabaseError

SCRIPT_LOCATION = Path(__file__).resolve().parent.parent / "alembic"


def alembic_config(engine: Engine) -> Config:
    """An Alembic config whose ``env.py`` runs on a connection of ``engine``, not on a URL of its own."""
    if not (SCRIPT_LOCATION / "env.py").is_file():
        raise DatabaseError(f"the migrations are missing: no env.py in {SCRIPT_LOCATION}")
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["engine"] = engine
    return cfg


# pg_advisory_lock key of the migrations: the bytes of "territory-migrate" folded to a signed bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"territory-migrate"[:8], "big", signed=True)


@contextlib.contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the migrations' advisory lock: a second ``territory migrate`` waits for the first, then
    finds the database at head, instead of racing it to create the same tables."""
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()  # a session-level lock: it outlives this transaction, not the connection
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database of ``engine`` up to ``revision``, one migrating process at a time.

    Returns the revision the database was at when this process got the lock.
    """
    with migration_lock(engine):
        before = current(engine)
        command.upgrade(alembic_config(engine), revision)
    return before


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database of ``engine`` down to ``revision`` (``base`` drops everything)."""
    with migration_lock(engine):
        command.downgrade(alembic_config(engine), revision)


def heads(engine: Engine) -> tuple[str, ...]:
    """The head revisions of the migration scripts."""
    return tuple(ScriptDirectory.from_config(alembic_config(engine)).get_heads())


def current(engine: Engine) -> str | None:
    """The revision the database of ``engine`` is at, or None before the first migration."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    """Whether the database is migrated to the single head (what readiness and the jobs require)."""
    return (current(engine),) == heads(engine)
