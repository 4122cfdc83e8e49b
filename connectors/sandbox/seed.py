"""Load a generated org straight into the store (the demo's database), replacing what was there."""

from __future__ import annotations

from sqlalchemy import Engine, text

from connectors.sandbox.generator import Org
from store.bulk import copy_frame

# Children first, so TRUNCATE order and COPY order (parents first) are each other's reverse.
_TABLES = (
    "metric_snapshots",
    "snapshots",
    "drift_events",
    "assignment_history",
    "opportunities",
    "accounts",
    "owners",
)


def load_org(engine: Engine, org: Org) -> dict[str, int]:
    """Replace the org in the database with ``org`` in one transaction; returns rows per table."""
    assignments = org.assignments.assign(source="import")
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE " + ", ".join(_TABLES) + " RESTART IDENTITY CASCADE"))
        return {
            "owners": copy_frame(conn, "owners", org.owners),
            "accounts": copy_frame(conn, "accounts", org.accounts),
            "opportunities": copy_frame(conn, "opportunities", org.opportunities),
            "assignment_history": copy_frame(conn, "assignment_history", assignments),
        }
