"""What the inbound listener has applied: one row per (send, received message).

A row does two jobs. Its unique (send_id, message_key) makes applying a report
idempotent: an SMTP client that lost our 250 sends the same message again, and the
second copy finds the row and writes nothing. Its (project, recipient, received_at)
index counts an address's recent soft bounces (`inbound.services.soft_bounces`)
without scanning the outbox, which has no index on the recipient.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, UTCDateTime


class ReceivedReport(Base):
    __tablename__ = "inbound_reports"
    __table_args__ = (
        UniqueConstraint("send_id", "message_key"),
        Index("ix_inbound_reports_address", "project_id", "recipient", "received_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    # No index of its own: `ix_inbound_reports_address` starts with it.
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    # The spool row (send) the report was applied to. Not a foreign key: the count of
    # an address's soft bounces must outlive a pruned spool.
    send_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    # SHA-256 (hex) of the received message's Message-ID, or of its bytes when it has
    # none (`inbound.services.message_key`).
    message_key: Mapped[str] = mapped_column(String(64))
    # bounce, delayed, complaint, unsubscribe
    kind: Mapped[str] = mapped_column(String(16))
    # The send's recipient (the address envoi mails, whatever the report calls it).
    recipient: Mapped[str | None] = mapped_column(String(320))
    # core.bounces' fine-grained reason of a bounce or delay; None otherwise.
    reason: Mapped[str | None] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
