"""Alembic environment: runs on the engine handed over by ``store.migrate``, or on the settings' URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from store.db import make_engine
from store.models import Base


def _engine() -> Engine:
    """The engine ``territory migrate`` passed in; for the bare ``alembic`` CLI, the configured URL."""
    given = context.config.attributes.get("engine")
    if given is not None:
        return given  # type: ignore[no-any-return]
    from service.settings import load_settings

    url = load_settings().database_url
    if url is None:
        raise SystemExit("set TERRITORY_DATABASE_URL to run alembic directly, or use 'territory migrate'")
    return make_engine(url.get_secret_value())


def run_migrations() -> None:
    """Run the migrations online, one transaction per migration, comparing column types too."""
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations()
