"""Migrations: one head, up-down-up with rows present, and models that agree with the migrations."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL

from store import migrate
from store.db import make_engine
from store.models import Base

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_engine(fresh_database: Callable[[], URL]) -> Engine:
    """An engine on a new database with no schema at all."""
    return make_engine(fresh_database())


def _seed_rows(engine: Engine) -> None:
    """A row in every table reached by a foreign key chain, as a real org would have."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO owners (id, name, capacity) VALUES ('005A', 'Ada Rep', 160), ('005B', 'Bo Rep', 170)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO accounts (id, name, owner_id, tier, arr) VALUES ('001A', 'Acme', '005A', 'growth', 1000.50)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO opportunities (id, account_id, owner_id, amount, probability, is_closed, is_won)"
                " VALUES ('006A', '001A', '005A', 500, 0.25, false, false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO assignment_history (account_id, owner_id, start_date, source) VALUES ('001A', '005A', '2024-01-01', 'import')"
            )
        )
        pid = conn.execute(
            text("INSERT INTO proposals (scenario, idempotency_key) VALUES ('default', 'k1') RETURNING id")
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO proposal_moves (proposal_id, account_id, from_owner_id, to_owner_id, expected_owner_id, rationale)"
                " VALUES (:p, '001A', '005A', '005B', '005A', 'balances potential')"
            ),
            {"p": pid},
        )
        sid = conn.execute(
            text("INSERT INTO snapshots (as_of, kind) VALUES ('2026-11-01', 'monthly') RETURNING id")
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO metric_snapshots (snapshot_id, owner_id, metric, value) VALUES (:s, '005A', 'arr', 1000.5)"
            ),
            {"s": sid},
        )


def test_there_is_exactly_one_head(engine: Engine) -> None:
    assert len(migrate.heads(engine)) == 1


def test_upgrade_downgrade_upgrade_with_rows(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    assert migrate.is_at_head(empty_engine)
    _seed_rows(empty_engine)

    migrate.downgrade(empty_engine, "base")
    assert migrate.current(empty_engine) is None
    assert set(inspect(empty_engine).get_table_names()) == {"alembic_version"}

    migrate.upgrade(empty_engine)
    assert migrate.is_at_head(empty_engine)
    _seed_rows(empty_engine)  # the schema is whole again: every insert of the seed succeeds
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM proposal_moves")).scalar_one() == 1


def test_stored_rows_get_the_source_that_alone_stored_them(empty_engine: Engine) -> None:
    """Migration 6c1f4e8a2b07's backfill: a table's rows are the one source whose runs stored rows of
    it; a run that stored none does not count, and where two sources stored rows nobody can tell."""
    migrate.upgrade(empty_engine, "8d2f6a1b3c94")
    _seed_rows(empty_engine)
    runs = [
        ("csv", "owners", 2),
        ("hubspot", "owners", 0),  # a failed first try of HubSpot: stored nothing
        ("csv", "accounts", 1),
        ("csv", "opportunities", 1),
        ("salesforce", "opportunities", 1),
    ]
    with empty_engine.begin() as conn:
        for source, obj, upserted in runs:
            conn.execute(
                text("INSERT INTO sync_runs (source, object, rows_upserted) VALUES (:s, :o, :u)"),
                {"s": source, "o": obj, "u": upserted},
            )
    migrate.upgrade(empty_engine)
    stored = (
        "SELECT 'owners', source FROM owners UNION ALL SELECT 'accounts', source FROM accounts "
        "UNION ALL SELECT 'opportunities', source FROM opportunities"
    )
    with empty_engine.connect() as conn:
        backfilled = conn.execute(text(f"{stored} ORDER BY 1, 2")).all()
    assert backfilled == [("accounts", "csv"), ("opportunities", None), ("owners", "csv"), ("owners", "csv")]


def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_collations_agree(engine: Engine) -> None:
    """Autogenerate does not compare collations: every column's must match the model's, and every CRM id
    column (a referencing one too) is under "C" so that its joins can use the indexes."""
    with engine.connect() as conn:
        stored = {
            (t, c): n
            for t, c, n in conn.execute(
                text(
                    "SELECT table_name, column_name, collation_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type = 'text'"
                )
            ).all()
        }
    modelled = {
        (table.name, column.name): getattr(column.type, "collation", None)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if (table.name, column.name) in stored
    }
    assert modelled == {key: stored[key] for key in modelled}
    assert stored[("opportunities", "account_id")] == "C"
    assert stored[("proposal_moves", "to_owner_id")] == "C"
    assert stored[("accounts", "name")] is None


def test_constraint_names_follow_the_convention(engine: Engine) -> None:
    inspector = inspect(engine)
    fks = inspector.get_foreign_keys("proposal_moves")
    assert {fk["name"] for fk in fks} == {
        "fk_proposal_moves_proposal_id_proposals",
        "fk_proposal_moves_account_id_accounts",
        "fk_proposal_moves_from_owner_id_owners",
    }  # the receiver may be a rep a what-if added: no key (migration 8d2f6a1b3c94)
    assert inspector.get_pk_constraint("accounts")["name"] == "pk_accounts"
