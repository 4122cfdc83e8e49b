"""The suite refuses any database that it did not create."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from store.db import make_engine
from store.errors import UnsafeDatabaseError
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
