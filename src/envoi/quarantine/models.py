"""Quarantined addresses: never mailed (marketing) while their entry lasts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, UTCDateTime, created_at, intpk, project_fk

# Why an address is quarantined. `gdpr` entries come from erasure (profiles/erasure.py
# keeps only hashes, so such an entry is listed by hash, see quarantine.services);
# `inactive` ones from repeated soft bounces of a full or suspended mailbox
# (inbound.services: ENVOI_SOFT_BOUNCE_LIMIT within ENVOI_SOFT_BOUNCE_DAYS).
REASONS = ("nonexistent", "spam", "unsubscribed", "gdpr", "invalid", "manual", "inactive")


class QuarantineEntry(Base):
    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("project_id", "address"),)

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    # Lower-cased address (`core.identity` normalisation).
    address: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(String(16))
    # Free text: what put it here (a send id and SMTP reply, an API call ...).
    note: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[created_at]
    # NULL: until removed.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
