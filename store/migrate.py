"""Run the Alembic migrations of ``alembic/`` from code, on a given engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

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


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database of ``engine`` up to ``revision``."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the database of ``engine`` down to ``revision`` (``base`` drops everything)."""
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
