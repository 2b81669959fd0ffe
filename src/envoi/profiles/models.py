"""Profiles (seed 002 "users"), their declared custom fields and category subscriptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, UTCDateTime, created_at, intpk, project_fk, updated_at


class ProfileField(Base):
    """A custom field declared in the project settings, with the type values are coerced to."""

    __tablename__ = "profile_fields"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    name: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[created_at]


class Profile(Base):
    """One person of a project, known by any of uid, email, phone and wp_token."""

    __tablename__ = "profiles"
    __table_args__ = (
        UniqueConstraint("project_id", "uid"),
        UniqueConstraint("project_id", "email"),
        UniqueConstraint("project_id", "phone"),
        UniqueConstraint("project_id", "wp_token"),
    )

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    uid: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    wp_token: Mapped[str | None] = mapped_column(String(500))
    language: Mapped[str | None] = mapped_column(String(8))
    # Declared custom fields only, coerced to their declared type (JSONB on PostgreSQL).
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The client's `update_profile_last_updated_at`: older updates are refused as stale.
    last_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class Subscription(Base):
    """Whether a profile receives a category's mail; no row means subscribed (opt-out model)."""

    __tablename__ = "subscriptions"

    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    category_id: Mapped[int] = mapped_column(
        ForeignKey("categories.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    subscribed: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[updated_at]


class Erasure(Base):
    """A GDPR-erased identifier, kept only as a SHA-256 so it is never mailed again."""

    __tablename__ = "erasures"
    __table_args__ = (Index("ix_erasures_project_hash", "project_id", "identifier_hash"),)

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    identifier_hash: Mapped[str] = mapped_column(String(64))
    erased_at: Mapped[created_at]
