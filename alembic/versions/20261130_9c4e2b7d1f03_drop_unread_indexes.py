"""drop the two indexes no query reads: opportunities (close_date), assignment_history (owner_id)

The monitor sums opportunities per territory with one scan whose filter (open, or closed inside the
window) a close_date index cannot serve, and nothing else looks opportunities up by close date. The
territories query reads past tenures through the as-of index (a hashed subplan), never by owner, and
owners are never deleted (an owner who leaves is made inactive), so the foreign key needs no index
either. Both only cost every write and a share of the index rebuilds of a first load.

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
    op.drop_index("ix_assignment_history_owner_id", table_name="assignment_history")


def downgrade() -> None:
    op.create_index("ix_assignment_history_owner_id", "assignment_history", ["owner_id"])
    op.create_index("ix_opportunities_close_date", "opportunities", ["close_date"])
