"""opportunities: drop the index on close_date, which no query reads

The monitor sums opportunities per territory with one scan whose filter (open, or closed inside the
window) a close_date index cannot serve, and nothing else looks opportunities up by close date. The
index only cost every write, and a third of the index rebuilds of a first load.

Revision ID: 9c4e2b7d1f03
Revises: 3a8d5f1c6e27
Create Date: 2026-11-30 11:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "9c4e2b7d1f03"
down_revision: str | None = "3a8d5f1c6e27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_opportunities_close_date", table_name="opportunities")


def downgrade() -> None:
    op.create_index("ix_opportunities_close_date", "opportunities", ["close_date"])
