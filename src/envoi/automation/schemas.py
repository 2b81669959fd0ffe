"""The `trigger` object of an automated campaign's request (`/api/v1/automated-campaigns`).

Shape only here; the conditions are checked against the project's declared fields by
`automation.services.check_trigger`, which also refuses a trigger beside a crontab or
a source.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from envoi.automation.triggers import ON_CHANGE
from envoi.web.schemas import StrictModel

MAX_DELAY_MINUTES = 60 * 24 * 365  # a year


class TriggerIn(StrictModel):
    """Exactly one of `event` (an API event's name) or `field` (a declared profile field)."""

    event: str | None = Field(None, min_length=1, max_length=200, examples=["login_user"])
    field: str | None = Field(None, min_length=1, max_length=64, examples=["plan"])
    on: Literal["set", "change"] | None = Field(
        None, description="field triggers: `set` (had no value) or `change` (default)"
    )
    delay_minutes: int = Field(0, ge=0, le=MAX_DELAY_MINUTES)
    condition: dict[str, Any] | None = Field(
        None, description="a segment condition on the profile, checked when the mail is due"
    )
    payload_condition: dict[str, Any] | None = Field(
        None, description="a condition on the payload: {'payload': 'plan', 'op': 'eq', ...}"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> TriggerIn:
        if (self.event is None) == (self.field is None):
            raise ValueError("a trigger names exactly one of event (an API event) or field")
        if self.event is not None and self.on is not None:
            raise ValueError("on is for field triggers only")
        return self

    def stored(self) -> dict[str, Any]:
        """The normalised JSON kept on the campaign (and shown back)."""
        head: dict[str, Any] = (
            {"event": self.event}
            if self.event is not None
            else {"field": self.field, "on": self.on or ON_CHANGE}
        )
        return head | {
            "delay_minutes": self.delay_minutes,
            "condition": self.condition,
            "payload_condition": self.payload_condition,
        }
