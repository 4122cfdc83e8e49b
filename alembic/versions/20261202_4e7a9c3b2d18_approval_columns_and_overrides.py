"""approval: proposal inputs/report/waves, move waves, audit links, overrides; cancelled and superseded states

The state machine needs ``superseded`` and ``cancelled`` proposals and ``cancelled`` moves; a move
carries its wave and effective date; an audit row links its proposal and move; an override remembers
a refused move with its reason until a cooldown ends or the account's data changes.

Revision ID: 4e7a9c3b2d18
Revises: 9c4e2b7d1f03
Create Date: 2026-12-02 21:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "4e7a9c3b2d18"
down_revision: str | None = "9c4e2b7d1f03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATES = "'proposed', 'approved', 'rejected', 'expired', 'applying', 'applied', 'partially_applied', 'failed', 'reverted'"
NEW_STATES = OLD_STATES + ", 'superseded', 'cancelled'"
OLD_MOVE_STATES = "'pending', 'written', 'conflict', 'failed', 'skipped'"
NEW_MOVE_STATES = OLD_MOVE_STATES + ", 'cancelled'"


def _checks(states: str, move_states: str) -> None:
    op.drop_constraint(op.f("ck_proposals_state_known"), "proposals", type_="check")
    op.create_check_constraint("state_known", "proposals", f"state IN ({states})")
    op.drop_constraint(op.f("ck_proposal_moves_writeback_state_known"), "proposal_moves", type_="check")
    op.create_check_constraint(
        "writeback_state_known", "proposal_moves", f"writeback_state IN ({move_states})"
    )


def upgrade() -> None:
    jsonb = postgresql.JSONB(astext_type=sa.Text())
    op.add_column("proposals", sa.Column("params", jsonb, comment="the solver's inputs and parameters"))
    op.add_column("proposals", sa.Column("solver_report", jsonb))
    op.add_column("proposals", sa.Column("tradeoff", jsonb))
    op.add_column("proposals", sa.Column("waves", jsonb))
    op.add_column(
        "proposal_moves", sa.Column("wave", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.add_column("proposal_moves", sa.Column("effective_date", sa.Date()))
    op.add_column(
        "proposal_moves", sa.Column("orphan", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.add_column("audit_log", sa.Column("proposal_id", sa.BigInteger()))
    op.add_column("audit_log", sa.Column("move_id", sa.BigInteger()))
    op.create_foreign_key(
        op.f("fk_audit_log_proposal_id_proposals"),
        "audit_log",
        "proposals",
        ["proposal_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_foreign_key(
        op.f("fk_audit_log_move_id_proposal_moves"),
        "audit_log",
        "proposal_moves",
        ["move_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index("ix_audit_log_proposal_id", "audit_log", ["proposal_id"])
    _checks(NEW_STATES, NEW_MOVE_STATES)
    op.create_table(
        "overrides",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Text(collation="C"), nullable=False),
        sa.Column("from_owner_id", sa.Text(collation="C"), nullable=False),
        sa.Column("to_owner_id", sa.Text(collation="C"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "data_fingerprint",
            sa.Text(),
            comment="owner, potential, ARR and tier when refused; a change lifts the override",
        ),
        sa.Column("proposal_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_overrides_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["proposals.id"],
            name=op.f("fk_overrides_proposal_id_proposals"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_overrides")),
    )
    op.create_index("ix_overrides_account_id_until", "overrides", ["account_id", "until"])


def downgrade() -> None:
    op.drop_table("overrides")
    op.execute("UPDATE proposals SET state = 'failed' WHERE state IN ('superseded', 'cancelled')")
    op.execute("UPDATE proposal_moves SET writeback_state = 'skipped' WHERE writeback_state = 'cancelled'")
    _checks(OLD_STATES, OLD_MOVE_STATES)
    op.drop_index("ix_audit_log_proposal_id", table_name="audit_log")
    op.drop_constraint(op.f("fk_audit_log_move_id_proposal_moves"), "audit_log", type_="foreignkey")
    op.drop_constraint(op.f("fk_audit_log_proposal_id_proposals"), "audit_log", type_="foreignkey")
    op.drop_column("audit_log", "move_id")
    op.drop_column("audit_log", "proposal_id")
    op.drop_column("proposal_moves", "orphan")
    op.drop_column("proposal_moves", "effective_date")
    op.drop_column("proposal_moves", "wave")
    op.drop_column("proposals", "waves")
    op.drop_column("proposals", "tradeoff")
    op.drop_column("proposals", "solver_report")
    op.drop_column("proposals", "params")
