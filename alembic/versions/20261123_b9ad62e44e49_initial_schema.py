"""initial schema

Revision ID: b9ad62e44e49
Revises:
Create Date: 2026-11-23 14:53:11.565504
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "b9ad62e44e49"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("entity_type", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(
        op.f("ix_audit_log_entity_type_entity_id"), "audit_log", ["entity_type", "entity_id"], unique=False
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column(
            "available_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_outbox_idempotency_key")),
    )
    op.create_index(
        op.f("ix_outbox_available_at"),
        "outbox",
        ["available_at"],
        unique=False,
        postgresql_where=sa.text("done_at IS NULL"),
    )
    op.create_table(
        "owners",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("team", sa.Text(), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=True, comment="touches per quarter"),
        sa.Column("home_lat", sa.Double(), nullable=True),
        sa.Column("home_lon", sa.Double(), nullable=True),
        sa.Column("quota", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("capacity IS NULL OR capacity > 0", name=op.f("ck_owners_capacity_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owners")),
    )
    op.create_table(
        "proposals",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("state", sa.Text(), server_default=sa.text("'proposed'"), nullable=False),
        sa.Column("scenario", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("before_metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after_metrics", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("reverts_proposal_id", sa.BigInteger(), nullable=True),
        sa.Column("slack_channel", sa.Text(), nullable=True),
        sa.Column("slack_ts", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('proposed', 'approved', 'rejected', 'expired', 'applying', 'applied', 'partially_applied', 'failed', 'reverted')",
            name=op.f("ck_proposals_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["reverts_proposal_id"], ["proposals.id"], name=op.f("fk_proposals_reverts_proposal_id_proposals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proposals")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_proposals_idempotency_key")),
    )
    op.create_index(op.f("ix_proposals_state"), "proposals", ["state"], unique=False)
    op.create_table(
        "snapshots",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('monthly', 'on_demand', 'event', 'backfill')", name=op.f("ck_snapshots_kind_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index(op.f("ix_snapshots_as_of"), "snapshots", ["as_of"], unique=False)
    op.create_table(
        "sync_state",
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("object", sa.Text(), nullable=False),
        sa.Column("watermark", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("source", "object", name=op.f("pk_sync_state")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=True),
        sa.Column("tier", sa.Text(), server_default=sa.text("'core'"), nullable=False),
        sa.Column("industry", sa.Text(), nullable=True),
        sa.Column("arr", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("potential", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("lat", sa.Double(), nullable=True),
        sa.Column("lon", sa.Double(), nullable=True),
        sa.Column("protected", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("tier IN ('strategic', 'growth', 'core')", name=op.f("ck_accounts_tier_known")),
        sa.CheckConstraint("arr IS NULL OR arr >= 0", name=op.f("ck_accounts_arr_non_negative")),
        sa.CheckConstraint("lat IS NULL OR lat BETWEEN -90 AND 90", name=op.f("ck_accounts_lat_range")),
        sa.CheckConstraint("lon IS NULL OR lon BETWEEN -180 AND 180", name=op.f("ck_accounts_lon_range")),
        sa.CheckConstraint(
            "potential IS NULL OR potential >= 0", name=op.f("ck_accounts_potential_non_negative")
        ),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name=op.f("fk_accounts_owner_id_owners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_index(
        op.f("ix_accounts_owner_id"),
        "accounts",
        ["owner_id"],
        unique=False,
        postgresql_where=sa.text("NOT deleted"),
    )
    op.create_table(
        "drift_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("mean", sa.Double(), nullable=True),
        sa.Column("deviation", sa.Double(), nullable=True),
        sa.Column("consecutive", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("first_seen", sa.Date(), nullable=False),
        sa.Column("last_seen", sa.Date(), nullable=False),
        sa.Column("resolved_at", sa.Date(), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name=op.f("fk_drift_events_owner_id_owners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_events")),
    )
    op.create_index(
        op.f("ix_drift_events_owner_id_rule"),
        "drift_events",
        ["owner_id", "rule"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_table(
        "metric_snapshots",
        sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_metric_snapshots_owner_id_owners")
        ),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_metric_snapshots_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "owner_id", "metric", name=op.f("pk_metric_snapshots")),
    )
    op.create_table(
        "assignment_history",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False, comment="what recorded it: import, sync, write-back"),
        sa.CheckConstraint(
            "end_date IS NULL OR end_date >= start_date", name=op.f("ck_assignment_history_dates_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_assignment_history_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["owners.id"], name=op.f("fk_assignment_history_owner_id_owners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment_history")),
    )
    op.create_index(
        op.f("ix_assignment_history_account_id"),
        "assignment_history",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("end_date IS NULL"),
    )
    op.create_index(op.f("ix_assignment_history_owner_id"), "assignment_history", ["owner_id"], unique=False)
    op.create_table(
        "opportunities",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("stage", sa.Text(), nullable=True),
        sa.Column("amount", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("probability", sa.Numeric(precision=5, scale=4), nullable=True),
        sa.Column("close_date", sa.Date(), nullable=True),
        sa.Column("is_closed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_won", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "amount IS NULL OR amount >= 0", name=op.f("ck_opportunities_amount_non_negative")
        ),
        sa.CheckConstraint("is_closed OR NOT is_won", name=op.f("ck_opportunities_won_is_closed")),
        sa.CheckConstraint(
            "probability IS NULL OR probability BETWEEN 0 AND 1",
            name=op.f("ck_opportunities_probability_range"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_opportunities_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name=op.f("fk_opportunities_owner_id_owners")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opportunities")),
    )
    op.create_index(op.f("ix_opportunities_account_id"), "opportunities", ["account_id"], unique=False)
    op.create_index(op.f("ix_opportunities_close_date"), "opportunities", ["close_date"], unique=False)
    op.create_table(
        "proposal_moves",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("proposal_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("from_owner_id", sa.Text(), nullable=False),
        sa.Column("to_owner_id", sa.Text(), nullable=False),
        sa.Column(
            "expected_owner_id",
            sa.Text(),
            nullable=False,
            comment="the CRM owner the move was planned against",
        ),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("writeback_state", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("crm_response", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "writeback_state IN ('pending', 'written', 'conflict', 'failed', 'skipped')",
            name=op.f("ck_proposal_moves_writeback_state_known"),
        ),
        sa.CheckConstraint("from_owner_id <> to_owner_id", name=op.f("ck_proposal_moves_moves_somewhere")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_proposal_moves_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["from_owner_id"], ["owners.id"], name=op.f("fk_proposal_moves_from_owner_id_owners")
        ),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["proposals.id"],
            name=op.f("fk_proposal_moves_proposal_id_proposals"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_owner_id"], ["owners.id"], name=op.f("fk_proposal_moves_to_owner_id_owners")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proposal_moves")),
    )
    op.create_index(
        op.f("ix_proposal_moves_proposal_id_account_id"),
        "proposal_moves",
        ["proposal_id", "account_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_proposal_moves_proposal_id_account_id"), table_name="proposal_moves")
    op.drop_table("proposal_moves")
    op.drop_index(op.f("ix_opportunities_close_date"), table_name="opportunities")
    op.drop_index(op.f("ix_opportunities_account_id"), table_name="opportunities")
    op.drop_table("opportunities")
    op.drop_index(op.f("ix_assignment_history_owner_id"), table_name="assignment_history")
    op.drop_index(
        op.f("ix_assignment_history_account_id"),
        table_name="assignment_history",
        postgresql_where=sa.text("end_date IS NULL"),
    )
    op.drop_table("assignment_history")
    op.drop_table("metric_snapshots")
    op.drop_index(
        op.f("ix_drift_events_owner_id_rule"),
        table_name="drift_events",
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.drop_table("drift_events")
    op.drop_index(
        op.f("ix_accounts_owner_id"), table_name="accounts", postgresql_where=sa.text("NOT deleted")
    )
    op.drop_table("accounts")
    op.drop_table("sync_state")
    op.drop_index(op.f("ix_snapshots_as_of"), table_name="snapshots")
    op.drop_table("snapshots")
    op.drop_index(op.f("ix_proposals_state"), table_name="proposals")
    op.drop_table("proposals")
    op.drop_table("owners")
    op.drop_index(
        op.f("ix_outbox_available_at"), table_name="outbox", postgresql_where=sa.text("done_at IS NULL")
    )
    op.drop_table("outbox")
    op.drop_index(op.f("ix_audit_log_entity_type_entity_id"), table_name="audit_log")
    op.drop_table("audit_log")
