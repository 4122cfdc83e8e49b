"""Load a generated org straight into the store, bypassing the CRM: fixtures for tests and benchmarks."""

from __future__ import annotations

from sqlalchemy import Engine

from connectors.sandbox.generator import Org
from store.bulk import copy_frame
from store.db import truncate_all


def load_org(engine: Engine, org: Org) -> dict[str, int]:
    """Empty the database and COPY ``org`` into it (tests and benchmarks); returns rows per table."""
    assignments = org.assignments.assign(source="import")
    with engine.begin() as conn:
        truncate_all(conn)
        return {
            "owners": copy_frame(conn, "owners", org.owners),
            "accounts": copy_frame(conn, "accounts", org.accounts),
            "opportunities": copy_frame(conn, "opportunities", org.opportunities),
            "assignment_history": copy_frame(conn, "assignment_history", assignments),
        }
