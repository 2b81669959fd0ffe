"""Request and response bodies of `/api/v1/sources` (API sources, source_type "A")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from envoi.core.errors import Invalid
from envoi.core.identity import Identity, IdentityError
from envoi.web.schemas import StrictModel

MAX_ITEMS = 10_000


class SourceIn(StrictModel):
    name: str = Field(min_length=1, max_length=500)


class SourceOut(BaseModel):
    id: int
    project_id: int
    name: str
    recipients: int
    created_at: datetime
    updated_at: datetime


class RecipientIn(StrictModel):
    """One recipient: at least one identifier, and its template parameters."""

    uid: str | int | None = None
    email: str | None = None
    phone: str | int | None = None
    wp_token: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class RecipientOut(BaseModel):
    id: int
    recipient_key: str
    uid: str | None
    email: str | None
    phone: str | None
    wp_token: str | None
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ItemError(BaseModel):
    """Why item `index` of a bulk request was refused; `loc` as in FastAPI's 422s."""

    index: int
    loc: list[str | int]
    msg: str


class RecipientsAdded(BaseModel):
    created: int
    updated: int
    rejected: int
    errors: list[ItemError]


class RecipientsRemoved(BaseModel):
    removed: int


def parse_recipients(
    items: list[Any],
) -> tuple[list[tuple[Identity, dict[str, Any]]], list[ItemError]]:
    """Validate each item on its own, as a bulk API does: good ones pass, bad ones are listed."""
    accepted: list[tuple[Identity, dict[str, Any]]] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            recipient = RecipientIn.model_validate(item)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            errors.append(ItemError(index=index, loc=[index, *first["loc"]], msg=first["msg"]))
            continue
        try:
            identity = Identity.from_mapping(recipient.model_dump(exclude={"params"}))
        except IdentityError as exc:
            errors.append(ItemError(index=index, loc=[index], msg=str(exc)))
            continue
        accepted.append((identity, recipient.params))
    return accepted, errors


def parse_identities(items: list[Any]) -> list[Identity]:
    """Identifiers naming recipients to remove; the first bad one refuses the whole request."""
    identities = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "params" in item:
            raise Invalid("expected an object of uid, email, phone or wp_token", ("body", index))
        try:
            identities.append(Identity.from_mapping(RecipientIn.model_validate(item).model_dump()))
        except (ValidationError, IdentityError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise Invalid(msg, ("body", index)) from None
    return identities
