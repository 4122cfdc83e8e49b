"""balance snapshots: each metric's balance statistics across territories per snapshot

Revision ID: 5c1d2a7e9b40
Revises: e536e411ecd9
Create Date: 2026-11-23 15:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1d2a7e9b40"
down_revision: str | None = "e536e411ecd9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "balance_snapshots",
        sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("stat", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True, comment="null where the statistic is undefined"),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_balance_snapshots_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "metric", "stat", name=op.f("pk_balance_snapshots")),
    )


def downgrade() -> None:
    op.drop_table("balance_snapshots")
