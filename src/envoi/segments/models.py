"""Segments: a condition over profiles, materialised into a member list on generation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, UTCDateTime, created_at, intpk, project_fk, updated_at


class Segment(Base):
    __tablename__ = "segments"

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    name: Mapped[str] = mapped_column(String(500))
    tags: Mapped[str | None] = mapped_column(String(1000))
    condition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    segment_limit: Mapped[int | None] = mapped_column(Integer)
    # new -> pending -> running -> ready | failed. "new" (not one of the seed's four) is
    # "never generated for the current definition": created, or condition/limit changed.
    status: Mapped[str] = mapped_column(String(16), default="new")
    member_count: Mapped[int | None] = mapped_column(Integer)
    generated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class SegmentMember(Base):
    __tablename__ = "segment_members"

    segment_id: Mapped[int] = mapped_column(
        ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True
    )
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
