"""The suite refuses any database that it did not create; the store's engine and sessions work."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from store.db import make_engine, session_factory
from store.errors import UnsafeDatabaseError
from store.models import Account, Owner
from tests.pg import assert_created_by_run

pytestmark = pytest.mark.integration


def test_guard_accepts_this_runs_database(engine: Engine, run_id: str) -> None:
    assert_created_by_run(engine, run_id)  # raises if the marker is missing


def test_guard_refuses_the_servers_own_database(pg_server: URL, run_id: str) -> None:
    other = make_engine(pg_server)
    try:
        with pytest.raises(UnsafeDatabaseError, match="did not create it"):
            assert_created_by_run(other, run_id)
    finally:
        other.dispose()


def test_guard_refuses_another_runs_database(engine: Engine) -> None:
    with pytest.raises(UnsafeDatabaseError, match="did not create it"):
        assert_created_by_run(engine, "some-other-run")


def test_sessions_read_and_write_the_models(db: Engine) -> None:
    """The session factory the ORM side uses: a model written in one session is read in another."""
    sessions = session_factory(db)
    with sessions.begin() as session:
        session.add(Owner(id="005X", name="Ada Rep", capacity=160))
        session.flush()  # the models declare no relationship(), so parents are flushed explicitly
        session.add(Account(id="001X", name="Acme", owner_id="005X", tier="growth", arr=Decimal("12.50")))
    with sessions() as session:
        account = session.get(Account, "001X")
        assert account is not None
        assert (account.owner_id, account.tier, account.arr, account.deleted) == (
            "005X",
            "growth",
            Decimal("12.50"),
            False,
        )
