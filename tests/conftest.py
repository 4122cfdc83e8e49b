"""Fixtures every test layer shares: a fresh PostgreSQL database per run (and per xdist worker)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from store import migrate
from store.db import make_engine, truncate_all
from tests.pg import assert_created_by_run, create_test_database, drop_test_database, server_for_tests


@pytest.fixture(scope="session")
def run_id() -> str:
    """Identifies this test run; its databases carry it as a marker."""
    return uuid.uuid4().hex


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """The PostgreSQL server of this run (see tests/pg.py for how it is chosen)."""
    with server_for_tests(tmp_path_factory.mktemp("embedded-pg")) as url:
        yield url


@pytest.fixture(scope="session")
def fresh_database(pg_server: URL, run_id: str) -> Iterator[Callable[[], URL]]:
    """A factory of new empty databases marked as this run's, all dropped when the run ends."""
    created: list[URL] = []

    def make() -> URL:
        url = create_test_database(pg_server, run_id)
        created.append(url)
        return url

    yield make
    for url in created:
        drop_test_database(pg_server, url)


@pytest.fixture(scope="session")
def database_url(fresh_database: Callable[[], URL]) -> URL:
    """The URL of this run's migrated database."""
    return fresh_database()


@pytest.fixture(scope="session")
def engine(database_url: URL, run_id: str) -> Iterator[Engine]:
    """An engine on this run's database, migrated to head, after the guard has checked the marker."""
    eng = make_engine(database_url)
    assert_created_by_run(eng, run_id)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    """The migrated database, emptied after the test so that every test starts from no rows."""
    yield engine
    with engine.begin() as conn:
        truncate_all(conn)
