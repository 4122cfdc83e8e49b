"""The Postgres schema: one typed SQLAlchemy model per table of DESIGN.md's outline.

Constraint names come from the MetaData's naming convention so that migrations can name them stably.
Money is ``numeric(18, 2)`` (exact sums), shares and probabilities ``numeric(5, 4)``; coordinates are
doubles. Times are ``timestamptz`` in UTC; calendar days (close dates, tenure bounds) are ``date``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TIERS = ("strategic", "growth", "core")
PROPOSAL_STATES = (
    "proposed",
    "approved",
    "rejected",
    "expired",
    "applying",
    "applied",
    "partially_applied",
    "failed",
    "reverted",
    "superseded",
    "cancelled",
)
MOVE_WRITEBACK_STATES = ("pending", "written", "conflict", "failed", "skipped", "cancelled")
SNAPSHOT_KINDS = ("monthly", "on_demand", "event", "backfill")
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted", "stopped")
SYNC_RUN_STATUSES = (*RUN_STATUSES, "refused")  # refused: a full export over the mass-delete guard

Money = Numeric(18, 2)
Share = Numeric(5, 4)
CrmId = Text(collation="C")
"""A CRM record id: opaque, compared byte by byte. The "C" collation makes the id indexes and the joins
on them memcmp-fast (a locale collation costs a strcoll per comparison and has no abbreviated keys);
foreign keys to these columns inherit it."""
Timestamp = DateTime(timezone=True)


def _in(column: str, values: tuple[str, ...]) -> str:
    """SQL for a CHECK that keeps ``column`` inside a fixed vocabulary."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


SOURCE_COMMENT = (
    "the sync source that last wrote the row (csv, salesforce, hubspot); null: stored before sources "
    "were kept, by more than one, or loaded directly"
)


class Owner(Base):
    """A CRM user who can own accounts; an active owner's book is a territory."""

    __tablename__ = "owners"
    __table_args__ = (CheckConstraint("capacity IS NULL OR capacity > 0", name="capacity_positive"),)

    id: Mapped[str] = mapped_column(CrmId, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str | None] = mapped_column(Text)
    team: Mapped[str | None] = mapped_column(Text)
    capacity: Mapped[int | None] = mapped_column(Integer, comment="touches per quarter")
    home_lat: Mapped[float | None] = mapped_column(Double)
    home_lon: Mapped[float | None] = mapped_column(Double)
    quota: Mapped[Decimal | None] = mapped_column(Money)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    modified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    synced_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    source: Mapped[str | None] = mapped_column(Text, comment=SOURCE_COMMENT)


class Account(Base):
    """A CRM account; ``owner_id`` names the territory it belongs to."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(_in("tier", TIERS), name="tier_known"),
        CheckConstraint("arr IS NULL OR arr >= 0", name="arr_non_negative"),
        CheckConstraint("potential IS NULL OR potential >= 0", name="potential_non_negative"),
        CheckConstraint("lat IS NULL OR lat BETWEEN -90 AND 90", name="lat_range"),
        CheckConstraint("lon IS NULL OR lon BETWEEN -180 AND 180", name="lon_range"),
        Index(None, "owner_id", postgresql_where=text("NOT deleted")),
    )

    id: Mapped[str] = mapped_column(CrmId, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("owners.id"))
    tier: Mapped[str] = mapped_column(Text, server_default=text("'core'"))
    industry: Mapped[str | None] = mapped_column(Text)
    arr: Mapped[Decimal | None] = mapped_column(Money)
    potential: Mapped[Decimal | None] = mapped_column(Money)
    lat: Mapped[float | None] = mapped_column(Double)
    lon: Mapped[float | None] = mapped_column(Double)
    protected: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    modified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    synced_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    source: Mapped[str | None] = mapped_column(Text, comment=SOURCE_COMMENT)


class Opportunity(Base):
    """A CRM opportunity; it counts toward the territory of its account's owner."""

    __tablename__ = "opportunities"
    __table_args__ = (
        CheckConstraint("amount IS NULL OR amount >= 0", name="amount_non_negative"),
        CheckConstraint("probability IS NULL OR probability BETWEEN 0 AND 1", name="probability_range"),
        CheckConstraint("is_closed OR NOT is_won", name="won_is_closed"),
        Index(None, "account_id"),
    )

    id: Mapped[str] = mapped_column(CrmId, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("owners.id"))
    name: Mapped[str | None] = mapped_column(Text)
    stage: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal | None] = mapped_column(Money)
    probability: Mapped[Decimal | None] = mapped_column(Share)
    close_date: Mapped[dt.date | None] = mapped_column(Date)
    is_closed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    is_won: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    modified_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    synced_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    source: Mapped[str | None] = mapped_column(Text, comment=SOURCE_COMMENT)


class Assignment(Base):
    """One owner's tenure of one account; ``end_date`` is null while it lasts."""

    __tablename__ = "assignment_history"
    __table_args__ = (
        CheckConstraint("end_date IS NULL OR end_date >= start_date", name="dates_ordered"),
        Index(None, "account_id", unique=True, postgresql_where=text("end_date IS NULL")),
        # Tenures that can decide the owner as of D all have coalesce(end_date, start_date) > D.
        Index("ix_assignment_history_as_of", func.coalesce(text("end_date"), text("start_date"))),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"))
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(Text, comment="what recorded it: import, sync, write-back")


class SyncState(Base):
    """The cursor of one object of one source, saved in the transaction of the rows it covers."""

    __tablename__ = "sync_state"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    object: Mapped[str] = mapped_column(Text, primary_key=True)
    watermark: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_status: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)


class Snapshot(Base):
    """One measurement of every territory as of a date; its values are ``metric_snapshots`` rows."""

    __tablename__ = "snapshots"
    __table_args__ = (
        CheckConstraint(_in("kind", SNAPSHOT_KINDS), name="kind_known"),
        Index(None, "as_of"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    as_of: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(Text)
    taken_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())


class MetricSnapshot(Base):
    """One metric's value for one territory in one snapshot (null where the metric is undefined)."""

    __tablename__ = "metric_snapshots"

    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"), primary_key=True)
    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[float | None] = mapped_column(Double)


class DriftEvent(Base):
    """A territory outside a rule's band; updated while it persists, closed when it ends."""

    __tablename__ = "drift_events"
    __table_args__ = (
        Index(None, "owner_id", "rule", unique=True, postgresql_where=text("resolved_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"))
    rule: Mapped[str] = mapped_column(Text)
    metric: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Double)
    mean: Mapped[float | None] = mapped_column(Double)
    deviation: Mapped[float | None] = mapped_column(Double)
    consecutive: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    first_seen: Mapped[dt.date] = mapped_column(Date)
    last_seen: Mapped[dt.date] = mapped_column(Date)
    resolved_at: Mapped[dt.date | None] = mapped_column(Date)


class Proposal(Base):
    """A set of account moves awaiting or past a decision; ``state`` moves by compare-and-set only."""

    __tablename__ = "proposals"
    __table_args__ = (
        CheckConstraint(_in("state", PROPOSAL_STATES), name="state_known"),
        Index(None, "state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(Text, server_default=text("'proposed'"))
    scenario: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    decided_by: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    reason: Mapped[str | None] = mapped_column(Text)
    before_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    reverts_proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id"))
    slack_channel: Mapped[str | None] = mapped_column(Text)
    slack_ts: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONB, comment="the solver's inputs and parameters")
    solver_report: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    tradeoff: Mapped[list[Any] | None] = mapped_column(JSONB)
    waves: Mapped[list[Any] | None] = mapped_column(JSONB)


class ProposalMove(Base):
    """One account move of a proposal, with its reason and its write-back outcome."""

    __tablename__ = "proposal_moves"
    __table_args__ = (
        CheckConstraint(_in("writeback_state", MOVE_WRITEBACK_STATES), name="writeback_state_known"),
        CheckConstraint("from_owner_id <> to_owner_id", name="moves_somewhere"),
        Index(None, "proposal_id", "account_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    proposal_id: Mapped[int] = mapped_column(ForeignKey("proposals.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    from_owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"))
    to_owner_id: Mapped[str] = mapped_column(
        CrmId, comment="an owner, or a rep a what-if added (then the proposal cannot be approved)"
    )
    expected_owner_id: Mapped[str] = mapped_column(
        CrmId, comment="the CRM owner the move was planned against"
    )
    rationale: Mapped[str] = mapped_column(Text)
    writeback_state: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    crm_response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    written_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    wave: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    effective_date: Mapped[dt.date | None] = mapped_column(Date)
    orphan: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class AuditLog(Base):
    """Who did what to which entity, append-only."""

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    entity_type: Mapped[str] = mapped_column(Text)
    entity_id: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    proposal_id: Mapped[int | None] = mapped_column(
        ForeignKey("proposals.id", ondelete="SET NULL"), index=True
    )
    move_id: Mapped[int | None] = mapped_column(ForeignKey("proposal_moves.id", ondelete="SET NULL"))


class Outbox(Base):
    """A side effect (a CRM write, a Slack message) recorded before it is done, claimed once."""

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "available_at", postgresql_where=text("done_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    available_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    claimed_by: Mapped[str | None] = mapped_column(Text)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    done_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)


class Quarantine(Base):
    """A CRM record that could not be stored, with the reason and the record as the CRM sent it."""

    __tablename__ = "quarantine"
    __table_args__ = (
        Index(
            None, "source", "object", "record_id", unique=True, postgresql_where=text("resolved_at IS NULL")
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    object: Mapped[str] = mapped_column(Text)
    record_id: Mapped[str | None] = mapped_column(CrmId, comment="null when the record had no id")
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))
    first_seen_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    resolved_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class SyncRun(Base):
    """One sync of one object of one source: what it read, stored, deleted and quarantined."""

    __tablename__ = "sync_runs"
    __table_args__ = (
        CheckConstraint(_in("status", SYNC_RUN_STATUSES), name="status_known"),
        Index(None, "source", "object", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    object: Mapped[str] = mapped_column(Text)
    full: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'running'"))
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    rows_read: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rows_upserted: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rows_deleted: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    rows_quarantined: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)


class JobRun(Base):
    """One run of a scheduled job; ``run_key`` makes a run that must happen once (a month) unique."""

    __tablename__ = "job_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status_known"),
        Index(None, "job", "run_key", unique=True, postgresql_where=text("run_key IS NOT NULL")),
        Index(None, "job", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(Text)
    run_key: Mapped[str | None] = mapped_column(Text)
    holder: Mapped[str] = mapped_column(Text, comment="the replica that ran it")
    status: Mapped[str] = mapped_column(Text, server_default=text("'running'"))
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, server_default=func.now())
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class BalanceSnapshot(Base):
    """One balance statistic (mean, cv, gini, ...) of one metric across territories in one snapshot."""

    __tablename__ = "balance_snapshots"

    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    stat: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[float | None] = mapped_column(Double, comment="null where the statistic is undefined")


class Override(Base):
    """A move an approver refused, not proposed again until ``until`` unless the account's data changed."""

    __tablename__ = "overrides"
    __table_args__ = (Index(None, "account_id", "until"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    from_owner_id: Mapped[str] = mapped_column(CrmId)
    to_owner_id: Mapped[str] = mapped_column(CrmId)
    reason: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[dt.datetime] = mapped_column(Timestamp)
    until: Mapped[dt.datetime] = mapped_column(Timestamp)
    data_fingerprint: Mapped[str | None] = mapped_column(
        Text, comment="owner, potential, ARR and tier when refused; a change lifts the override"
    )
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("proposals.id", ondelete="SET NULL"))
