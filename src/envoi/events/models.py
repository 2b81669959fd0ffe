"""API events (seed 002 `POST /events`): named facts about a profile, for segments, automation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, created_at, intpk, project_fk


class ApiEvent(Base):
    __tablename__ = "api_events"
    __table_args__ = (
        Index("ix_api_events_lookup", "project_id", "name", "profile_id", "created_at"),
    )

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[created_at]
