"""assignment history: an index on coalesce(end_date, start_date) for ownership as of a date

Every tenure that can decide an account's owner at D (an ended tenure covering D, or a current
tenure that began after D) has coalesce(end_date, start_date) > D, so for a recent D the as-of query
reads a handful of index entries instead of the whole history.

Revision ID: 7f3e0c2b8a51
Revises: 5c1d2a7e9b40
Create Date: 2026-11-23 16:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7f3e0c2b8a51"
down_revision: str | None = "5c1d2a7e9b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_assignment_history_as_of",
        "assignment_history",
        [sa.text("coalesce(end_date, start_date)")],
    )


def downgrade() -> None:
    op.drop_index("ix_assignment_history_as_of", table_name="assignment_history")
