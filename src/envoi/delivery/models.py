"""DKIM keys: one or more per project and sending domain."""

from __future__ import annotations

from sqlalchemy import Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, created_at, intpk, project_fk


class DkimKey(Base):
    __tablename__ = "dkim_keys"
    __table_args__ = (UniqueConstraint("project_id", "domain", "selector"),)

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    domain: Mapped[str] = mapped_column(String(255))
    selector: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(16))  # rsa-sha256 or ed25519-sha256
    # PKCS#8 PEM. Stored in the OLTP store like the other credentials of a project.
    private_key: Mapped[str] = mapped_column(Text)
    # The key that signs the domain's mail (the newest active one when several).
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[created_at]
