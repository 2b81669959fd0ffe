"""The tables of single sends: the rows the sends API made for itself, and idempotency keys.

`send_registry` names, per project, the hidden rows that carry single sends through
the campaign pipeline (`sends.streams`): a stream campaign per post type and tag set
(`stream:P:...`, `stream:T:<campaign>`), the category of inline content (`category`),
an email per distinct inline content or test copy (`content:<sha256>`). Its primary
key makes a concurrent first use create one row, not two.

`send_idempotency` remembers each `idempotency_key` a project sent with: the hash of
the request it came with, the send it made and the answer given, so a retried request
gets that answer again instead of a second message.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, created_at

REGISTRY_KEY_MAX = 700  # `stream:P:oc:` + up to 10 tags of 64 characters, comma-separated
IDEMPOTENCY_KEY_MAX = 200


class SendRegistry(Base):
    __tablename__ = "send_registry"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(REGISTRY_KEY_MAX), primary_key=True)
    # The id of the row the key names: a campaign, a category or an email.
    row_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[created_at]


class IdempotencyKey(Base):
    __tablename__ = "send_idempotency"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_MAX), primary_key=True)
    # SHA-256 of the request's canonical JSON, without the key itself.
    request_hash: Mapped[str] = mapped_column(String(64))
    send_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    # The answer the first request got, given again to every retry.
    answer: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[created_at]
