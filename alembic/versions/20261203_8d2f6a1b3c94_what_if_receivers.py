"""a move may go to a rep a what-if added (not in owners yet): no foreign key on the receiver

Revision ID: 8d2f6a1b3c94
Revises: 4b7e1d9a2c58
Create Date: 2026-12-03 07:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "8d2f6a1b3c94"
down_revision: str | None = "4b7e1d9a2c58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A what-if proposal (`propose --add-rep`) is stored and explained like any other; approving it is
    # refused by the store until its receivers are owners (store.proposals.approve checks them).
    op.drop_constraint(op.f("fk_proposal_moves_to_owner_id_owners"), "proposal_moves", type_="foreignkey")
    op.execute(
        "COMMENT ON COLUMN proposal_moves.to_owner_id IS "
        "'an owner, or a rep a what-if added (then the proposal cannot be approved)'"
    )


def downgrade() -> None:
    op.execute("COMMENT ON COLUMN proposal_moves.to_owner_id IS NULL")
    op.execute("DELETE FROM proposal_moves WHERE to_owner_id NOT IN (SELECT id FROM owners)")
    op.create_foreign_key(
        op.f("fk_proposal_moves_to_owner_id_owners"), "proposal_moves", "owners", ["to_owner_id"], ["id"]
    )
