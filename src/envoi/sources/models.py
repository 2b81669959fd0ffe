"""API sources (source_type "A"): recipient lists the client fills through the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, created_at, intpk, project_fk, updated_at


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    name: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class SourceRecipient(Base):
    """A recipient named by a profile identifier, with per-recipient template parameters."""

    __tablename__ = "source_recipients"
    __table_args__ = (UniqueConstraint("source_id", "recipient_key"),)

    id: Mapped[intpk]
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    # "email:ann@example.com", "uid:42", "phone:+33123456789", "wp_token:...".
    recipient_key: Mapped[str] = mapped_column(String(600))
    # Every identifier the client gave, normalised ({"uid": "42", "email": "ann@..."}):
    # the key keeps only the first, and delivery needs the address even without a profile.
    identifiers: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
