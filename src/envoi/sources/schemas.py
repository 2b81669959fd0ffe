"""Request and response bodies of `/api/v1/sources` (API sources, source_type "A")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from envoi.core.errors import Invalid
from envoi.core.identity import IDENTIFIERS, Identity, IdentityError, normalize
from envoi.sources.services import Recipient
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
    """One recipient: at least one identifier, and its template parameters.

    Identifiers are typed as in `/users` (`UserIn`): a string, or an integer for uid
    and phone, never a boolean; each is normalised by `envoi.core.identity.normalize`.
    """

    uid: StrictStr | StrictInt | None = None
    email: StrictStr | None = None
    phone: StrictStr | StrictInt | None = None
    wp_token: StrictStr | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator(*IDENTIFIERS, mode="before")
    @classmethod
    def _normalised(cls, value: Any, info: ValidationInfo) -> Any:
        name = str(info.field_name)
        if value is None or value == "":
            return None
        numeric = name in ("uid", "phone")
        if (
            isinstance(value, bool)
            or not isinstance(value, str | int)
            or (isinstance(value, int) and not numeric)
        ):
            kind = "a string or an integer" if numeric else "a string"
            raise PydanticCustomError("identifier_type", f"{name} must be {kind}")
        try:
            return normalize(name, value)
        except IdentityError as exc:
            raise PydanticCustomError("identifier_invalid", str(exc)) from None

    def identity(self) -> Identity:
        """The identifiers given; IdentityError if there is none."""
        values = {name: getattr(self, name) for name in IDENTIFIERS}
        if not any(values.values()):
            raise IdentityError("one of uid, email, phone or wp_token is required")
        return Identity(**{name: str(v) for name, v in values.items() if v is not None})


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


def parse_recipients(items: list[Any]) -> tuple[list[Recipient], list[ItemError]]:
    """Validate each item on its own, as a bulk API does: good ones pass, bad ones are listed."""
    accepted: list[Recipient] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            recipient = RecipientIn.model_validate(item)
            identity = recipient.identity()
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            errors.append(ItemError(index=index, loc=[index, *first["loc"]], msg=first["msg"]))
            continue
        except IdentityError as exc:
            errors.append(ItemError(index=index, loc=[index], msg=str(exc)))
            continue
        accepted.append(Recipient(index, identity, recipient.params))
    return accepted, errors


def parse_identities(items: list[Any]) -> list[Identity]:
    """Identifiers naming recipients to remove; the first bad one refuses the whole request."""
    identities = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "params" in item:
            raise Invalid("expected an object of uid, email, phone or wp_token", ("body", index))
        try:
            identities.append(RecipientIn.model_validate(item).identity())
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise Invalid(first["msg"], ("body", index, *first["loc"])) from None
        except IdentityError as exc:
            raise Invalid(str(exc), ("body", index)) from None
    return identities
