"""Request and response bodies of `/api/v1/segments` (seed 002 "segments")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from envoi.web.schemas import StrictModel

Name = Annotated[str, Field(min_length=1, max_length=500)]
Tags = Annotated[str | None, Field(max_length=1000)]
# Strict: "5" and true are not limits. Bounded by the column (32-bit INTEGER).
Limit = Annotated[StrictInt | None, Field(ge=1, le=2**31 - 1)]
# The seed's four, and "new": never generated for the current definition (no members).
Status = Literal["new", "pending", "running", "ready", "failed"]


class SegmentIn(StrictModel):
    """A whole segment (POST, PUT); the condition is checked by the services."""

    name: Name
    tags: Tags = None
    condition: dict[str, Any]
    segment_limit: Limit = None


class SegmentPatch(StrictModel):
    """Some keys of a segment (PATCH); an absent key keeps its value, null clears
    tags or segment_limit."""

    name: Name | None = None
    tags: Tags = None
    condition: dict[str, Any] | None = None
    segment_limit: Limit = None

    @field_validator("name", "condition")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Only runs for keys the client sent: `"name": null` is an error, no key is not.
        if value is None:
            raise ValueError("may not be null")
        return value


class SegmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    name: str
    tags: str | None
    condition: dict[str, Any]
    segment_limit: int | None
    status: Status
    member_count: int | None
    generated_at: datetime | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    profile_id: int = Field(validation_alias="id")
    uid: str | None
    email: str | None
    phone: str | None
    wp_token: str | None


class MembersPage(BaseModel):
    """`next_after` is the `after` of the next page, null on the last one."""

    items: list[MemberOut]
    next_after: int | None
