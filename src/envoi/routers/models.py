"""Routers (sending routes), the rules that pick one per message, and captured mail.

A router belongs to one project, or to every project when `project_id` is NULL (a
shared route the operator defines with `envoi router add --shared`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, UTCDateTime, created_at, intpk, updated_at


class Router(Base):
    __tablename__ = "routers"

    id: Mapped[intpk]
    # NULL: a shared router every project may use.
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # smtp, mx, capture
    # Kind-specific settings (host, port, tls, username, password, limits ...), checked
    # by `routers.schemas` on write.
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The project's fallback when no rule matches (at most one per project).
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class RoutingRule(Base):
    """Send a message through `router_id` when every condition that is set matches.

    Rules are tried by ascending `position`; the first match wins; no match means the
    project's default router, then the operator's (`ENVOI_DEFAULT_ROUTER`).
    """

    __tablename__ = "routing_rules"

    id: Mapped[intpk]
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer, default=0)
    campaign_id: Mapped[int | None] = mapped_column(Integer)
    message_type: Mapped[str | None] = mapped_column(String(1))
    domain: Mapped[str | None] = mapped_column(String(255))
    provider: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[created_at]


class CapturedMessage(Base):
    """A message a `capture` router kept instead of sending: the bytes as they would leave."""

    __tablename__ = "captured_messages"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    router_id: Mapped[int | None] = mapped_column(Integer)
    post: Mapped[str | None] = mapped_column(String(32))  # S_12, or None outside campaigns
    spool_id: Mapped[int | None] = mapped_column(BigInteger)
    mail_from: Mapped[str] = mapped_column(String(400))
    recipient: Mapped[str] = mapped_column(String(320))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    raw: Mapped[bytes] = mapped_column(LargeBinary)
