"""The trigger queue: one row per firing of an event-driven automated campaign.

A row is written in the transaction of the write that fired it (an API event, a
profile upsert), so an acknowledged event has its firings stored; the scheduler
turns each due row into one spool row later (`automation.workers`). The row's state
change and the spool row commit together: a firing is mailed at most once, and the
unique (campaign, event) pair keeps one API event from firing a campaign twice.

state: `pending` (waits for `due_at`, or for its paused campaign to resume),
`spooled` (`send_id` is its spool row, which may itself be blocked or quarantined by
the sending policy), or `skipped` with `reason` (the condition did not match, the
campaign was archived or finished, the person has no address ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, UTCDateTime, project_fk

# 64-bit on PostgreSQL: a queue of every firing grows like the spool.
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


class TriggerState:
    """`CampaignTrigger.state`."""

    PENDING: Final = "pending"
    SPOOLED: Final = "spooled"
    SKIPPED: Final = "skipped"


class CampaignTrigger(Base):
    __tablename__ = "campaign_triggers"
    __table_args__ = (
        UniqueConstraint("campaign_id", "event_id"),
        # The scheduler's scan: due pending rows, oldest first.
        Index("ix_campaign_triggers_due", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(_BIG_ID, primary_key=True, autoincrement=True)
    project_id: Mapped[project_fk]
    campaign_id: Mapped[int] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    # The API event that fired it (None: a profile change); an erased person's events
    # and profile go, and their pending firings with them.
    event_id: Mapped[int | None] = mapped_column(ForeignKey("api_events.id", ondelete="CASCADE"))
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    # What the template sees as `event`: the API event's payload, or for a profile
    # change {"field": ..., "old": ..., "new": ...}.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), default=TriggerState.PENDING)
    reason: Mapped[str | None] = mapped_column(String(64))
    send_id: Mapped[int | None] = mapped_column(_BIG_ID)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
