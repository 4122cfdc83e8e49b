"""sync runs may end refused: a full export that would delete more than the guard allows

Revision ID: 4b7e1d9a2c58
Revises: 4e7a9c3b2d18
Create Date: 2026-12-02 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "4b7e1d9a2c58"
down_revision: str | None = "4e7a9c3b2d18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("running", "succeeded", "failed", "interrupted", "stopped")
AFTER = (*BEFORE, "refused")


def _status_check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_sync_runs_status_known"), "sync_runs", type_="check")
    listed = ", ".join(f"'{s}'" for s in statuses)
    op.create_check_constraint(op.f("ck_sync_runs_status_known"), "sync_runs", f"status IN ({listed})")


def upgrade() -> None:
    _status_check(AFTER)


def downgrade() -> None:
    op.execute("UPDATE sync_runs SET status = 'failed' WHERE status = 'refused'")
    _status_check(BEFORE)
