"""Request and response bodies of `/api/v1/events` (seed 002)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from envoi.web.schemas import StrictModel


class EventIn(StrictModel):
    """A named fact about a profile; `payload` names the profile by uid, email, phone or
    wp_token. The seed types `payload` as a string: a string holding a JSON object is
    accepted too, and echoed as given."""

    name: str = Field(min_length=1, max_length=200, examples=["login_user"])
    payload: dict[str, Any] | str = Field(examples=[{"email": "test@mail.ru"}])


class EventEcho(BaseModel):
    """Exactly what was posted, as in the seed."""

    name: str
    payload: dict[str, Any] | str


class EventOut(BaseModel):
    """A stored event, as `GET /api/v1/events` lists them."""

    id: int
    profile_id: int
    name: str
    payload: dict[str, Any]
    created_at: str
