"""API sources (source_type "A"): recipient lists the client fills through the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envoi.core.identity import IDENTIFIERS, Identity
from envoi.db.base import Base, JSONType, created_at, intpk, project_fk, updated_at


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    name: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class SourceRecipient(Base):
    """A recipient named by profile identifiers, with per-recipient template parameters.

    Like a profile, a recipient is known by each of its identifiers: within a source,
    one uid, email, phone or wp_token names at most one recipient, so whichever of
    them a client sends finds the same row, and nobody is in the list twice.
    """

    __tablename__ = "source_recipients"
    __table_args__ = (
        UniqueConstraint("source_id", "uid"),
        UniqueConstraint("source_id", "email"),
        UniqueConstraint("source_id", "phone"),
        UniqueConstraint("source_id", "wp_token"),
        # Keyset pages of one source (listing, audience builds) in id order.
        Index("ix_source_recipients_source_page", "source_id", "id"),
    )

    id: Mapped[intpk]
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    # Normalised like profiles' (envoi.core.identity); at least one is set.
    uid: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    wp_token: Mapped[str | None] = mapped_column(String(500))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    @property
    def identity(self) -> Identity:
        return Identity(**{name: getattr(self, name) for name in IDENTIFIERS})

    @property
    def recipient_key(self) -> str:
        """The first identifier, uid first (`Identity.key`): how an audience names it."""
        return self.identity.key
