"""Request and response bodies of `/api/v1/quarantine`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from envoi.web.schemas import StrictModel

Reason = Literal["nonexistent", "spam", "unsubscribed", "gdpr", "invalid", "manual", "inactive"]


class QuarantineIn(StrictModel):
    address: str = Field(min_length=1, max_length=320)
    reason: Reason
    note: str | None = Field(default=None, max_length=1000)
    # Until when the entry holds (ISO 8601 with a time zone); absent: until removed.
    expires_at: AwareDatetime | None = None


class QuarantineOut(BaseModel):
    id: int
    address: str
    reason: str
    note: str | None
    created_at: datetime
    expires_at: datetime | None
    active: bool
