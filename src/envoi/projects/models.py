"""A project is a tenant: every other row belongs to exactly one project."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, created_at, intpk


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200))
    login: Mapped[str] = mapped_column(String(100), unique=True)
    # argon2 hash of the Basic-auth secret; the secret itself is never stored.
    secret_hash: Mapped[str] = mapped_column(String(200))
    # SHA-256 of the high-entropy tokens of the compatible surfaces (looked up by value).
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # CIDR strings; an empty list allows every client address.
    allowed_ips: Mapped[list[str]] = mapped_column(default=list, type_=JSONType)
    # Domain of the VERP return path (`bounces+TOKEN@`) and the mailto unsubscribe;
    # NULL: the operator's ENVOI_BOUNCE_DOMAIN.
    bounce_domain: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[created_at]

    def __repr__(self) -> str:
        return f"<Project {self.id} {self.login!r}>"
