"""Request and response bodies of `/api/v1/users` and `/api/v1/fields` (seed 002)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from envoi.web.schemas import StrictModel

FieldTypeName = Literal["String", "Int", "Float", "Bool", "Date", "DateTime", "List of String"]
FIELD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class FieldIn(StrictModel):
    """A custom profile field, declared once per project before users carry it."""

    name: str = Field(pattern=FIELD_NAME_PATTERN, examples=["pole2"])
    type: FieldTypeName = Field(examples=["Int"])


class FieldOut(BaseModel):
    name: str
    type: FieldTypeName


class UserIn(StrictModel):
    """One profile to create or update: seed 002's hashmap.

    At least one identifier names the profile. `fields` carries the project's
    declared fields (undeclared keys are ignored); values are coerced to their type
    later, because the declarations live in the database, not in this schema.
    """

    # Strict: `true` is not an identifier (lax mode would read it as 1).
    uid: StrictStr | StrictInt | None = None
    email: StrictStr | None = None
    phone: StrictStr | StrictInt | None = None
    wp_token: StrictStr | None = None
    fields: dict[str, Any] | None = None
    language: str | None = None
    update_profile_last_updated_at: str | None = Field(
        default=None, description="ISO 8601; an update older than the stored one is refused"
    )
    subscriptions: dict[int, bool] | None = Field(
        default=None, description='{"<category id>": true|false}; no entry means subscribed'
    )


class UserAnswer(BaseModel):
    """The echo of one upserted item: its identifiers, its stored declared fields, ...

    ... and, in a bulk answer, `error` instead of `fields` when the item was not applied.
    """

    model_config = ConfigDict(extra="allow")


class UserOut(BaseModel):
    """A whole profile, as `GET /api/v1/users` answers it."""

    id: int
    project_id: int
    uid: str | None
    email: str | None
    phone: str | None
    wp_token: str | None
    language: str | None
    fields: dict[str, Any]
    subscriptions: dict[str, bool]
    update_profile_last_updated_at: str | None
    created_at: str
    updated_at: str
