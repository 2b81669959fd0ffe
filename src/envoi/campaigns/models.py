"""Mailing campaigns (seed 002): one-time (S), A/B (B) and automated (A), and their audience."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, UTCDateTime, created_at, intpk, project_fk, updated_at

# Spool ids are 64-bit on PostgreSQL (`spool.models.SpoolEntry.id`).
_SEND_ID = BigInteger().with_variant(Integer(), "sqlite")


class Campaign(Base):
    __tablename__ = "campaigns"
    __table_args__ = (Index("ix_campaigns_trigger_on", "project_id", "trigger_on"),)

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    post_type: Mapped[str] = mapped_column(String(1))  # S, B or A: the `post` key is S_<id>
    message_type: Mapped[str] = mapped_column(String(1), default="L")
    message_id: Mapped[int] = mapped_column(ForeignKey("emails.id"), index=True)
    # A/B only: the other variants' email ids (variant A is message_id).
    ab_message_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    source_type: Mapped[str] = mapped_column(String(1))  # U uploaded, S segment, A API source
    source_id: Mapped[int | None] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[str | None] = mapped_column(String(1000))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    send_during_hours: Mapped[int | None] = mapped_column(Integer)
    start_immediately: Mapped[bool] = mapped_column(Boolean, default=False)
    ab_percent: Mapped[int | None] = mapped_column(Integer)
    win_parameter: Mapped[str | None] = mapped_column(String(1))
    test_planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    main_planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A/B test progress (`core.abtests`, `campaigns.abtests`): the phase (None before the
    # start, then test, then main), and once decided the winning email, when, and the
    # figures of every variant it was decided on (frozen).
    ab_phase: Mapped[str | None] = mapped_column(String(8))
    ab_winner: Mapped[int | None] = mapped_column(Integer)
    ab_decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ab_figures: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    crontab: Mapped[str | None] = mapped_column(String(200))
    run_from: Mapped[datetime | None] = mapped_column(UTCDateTime())
    run_to: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Event-driven automated campaigns (`automation`): the trigger as given, and what
    # the write paths look it up by, `event:<name>` or `field:<name>` (None: crontab).
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    trigger_on: Mapped[str | None] = mapped_column(String(300))
    # draft -> planned | running -> paused -> ... -> finished; archived is final.
    state: Mapped[str] = mapped_column(String(16), default="draft")
    spooler_token: Mapped[str] = mapped_column(String(64), unique=True)
    # What the last audience build found: counts and the rejected CSV lines.
    audience_summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Spool building (spool/services.py), done in batches by a worker after the start:
    # the last audience row spooled, and when the whole audience was.
    spool_cursor: Mapped[int | None] = mapped_column(Integer)
    spool_built_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    @property
    def post(self) -> str:
        return f"{self.post_type}_{self.id}"


class CampaignFile(Base):
    """An uploaded CSV: the address list (`source`) or the extra parameters (`additional`).

    Its bytes are in CampaignFileChunk rows, so a list of a million lines is written
    and read as a stream, one chunk at a time, never whole.
    """

    __tablename__ = "campaign_files"

    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    filename: Mapped[str | None] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[created_at]


class CampaignFileChunk(Base):
    """Bytes `seq * CHUNK_BYTES` onwards of a CampaignFile (`campaigns.files.CHUNK_BYTES`)."""

    __tablename__ = "campaign_file_chunks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["campaign_id", "kind"],
            ["campaign_files.campaign_id", "campaign_files.kind"],
            ondelete="CASCADE",
        ),
    )

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class AudienceMember(Base):
    """One recipient of a started campaign, de-duplicated, with its template parameters."""

    __tablename__ = "campaign_audience"
    __table_args__ = (UniqueConstraint("campaign_id", "recipient_key"),)

    id: Mapped[intpk]
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    recipient_key: Mapped[str] = mapped_column(String(600))
    profile_id: Mapped[int | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="SET NULL"), index=True
    )
    email: Mapped[str | None] = mapped_column(String(320))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The CSV line it came from (None for segment and API sources).
    line: Mapped[int | None] = mapped_column(Integer)
    # A/B campaigns: the variant (0 = message_id, then ab_message_ids) of a member drawn
    # into the test sample; None for the rest, who get the winner (`campaigns.abtests`).
    ab_variant: Mapped[int | None] = mapped_column(Integer)


class OccurrenceStatus:
    """`CampaignOccurrence.status`."""

    SPOOLING: Final = "spooling"
    SPOOLED: Final = "spooled"
    FAILED: Final = "failed"
    RESUMED: Final = "resumed"


class CampaignOccurrence(Base):
    """One run of an automated campaign's crontab, claimed by the scheduler.

    The unique (campaign, occurrence time) pair is what makes a run happen once: the
    scheduler inserts it in the transaction that snapshots the run's audience, so two
    schedulers, or one restarted, cannot both claim it (`campaigns.scheduler`).

    status: `spooling` (claimed, its spool being built in batches), `spooled`,
    `failed` (its source could not be read: `error` says why; never retried), or
    `resumed`, a mark left by the resume action: occurrences up to it fell while the
    campaign was paused and are not made up.
    """

    __tablename__ = "campaign_occurrences"
    __table_args__ = (UniqueConstraint("campaign_id", "occurrence_at"),)

    id: Mapped[intpk]
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    occurrence_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    # The campaign's highest spool id when the run was claimed: rows above it are this
    # run's, rows at or below it earlier runs' (who "already received" the campaign).
    after_send_id: Mapped[int] = mapped_column(_SEND_ID, default=0)
    owner: Mapped[str | None] = mapped_column(String(64))  # the scheduler that ran it
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    spooled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The run's audience build summary, with how many recipients it skipped.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(String(2000))


class SchedulerLease(Base):
    """Which scheduler instance is the active one: taken only once expired, renewed by
    its owner (`campaigns.scheduler`)."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
