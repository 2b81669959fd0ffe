"""The event outbox: every fact about a message, appended in the transaction that caused it.

The delivery, tracking and inbound paths write here; the projector copies rows into
the event store. Segments read it for "received / opened / clicked a campaign".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, UTCDateTime, project_fk


class OutboxEvent(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_profile_kind", "profile_id", "kind", "campaign_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    project_id: Mapped[project_fk]
    # queued, blocked, quarantined, sent, delivered, tempfail, permfail, open, click,
    # mirror, unsubscribe, complaint, forward, goal
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    email_id: Mapped[int | None] = mapped_column(Integer)
    profile_id: Mapped[int | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="SET NULL"), index=True
    )
    recipient: Mapped[str | None] = mapped_column(String(320))
    # Every other dimension of the fact (router, link, bounce class, user agent ...).
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
