"""owners, accounts and opportunities keep the sync source that last wrote them

A delete pass (a full export's sweep, a CRM's deletions) only touches its own source's rows, so a CSV
sync and a HubSpot sync on one database never delete each other's records (docs/sync.md, "Deletes").

Revision ID: 6c1f4e8a2b07
Revises: 8d2f6a1b3c94
Create Date: 2026-12-03 11:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6c1f4e8a2b07"
down_revision: str | None = "8d2f6a1b3c94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("owners", "accounts", "opportunities")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table,
            sa.Column(
                "source",
                sa.Text(),
                nullable=True,
                comment="the sync source that last wrote the row (csv, salesforce, hubspot); null: stored "
                "before sources were kept, by more than one, or loaded directly",
            ),
        )
        # The rows already stored belong to the one source that ever stored rows of the table (a run
        # that upserted none, a failed first attempt of another CRM say, does not count: its counts
        # are committed with its batches). Where several did, nobody can tell which row came from
        # which, and the rows stay null until a source writes them again (a delete pass leaves a null
        # row alone; docs/sync.md says how a full sync of each source claims its rows).
        op.execute(
            f"UPDATE {table} SET source = one.source FROM ("  # noqa: S608 - the table names above
            f"SELECT min(source) AS source FROM sync_runs WHERE object = '{table}' "
            "AND rows_upserted > 0 HAVING count(DISTINCT source) = 1) one"
        )


def downgrade() -> None:
    for table in TABLES:
        op.drop_column(table, "source")
