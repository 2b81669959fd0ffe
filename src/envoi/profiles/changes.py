"""One users item read into a `ProfileChange`: identifiers normalised, fields coerced.

Reading needs the project's declared fields and category ids but does no I/O itself,
so a bulk request is checked item by item before anything is written. A bad item
raises `ItemError`, which a bulk answer carries in that item's place and a single
upsert turns into a 422 or a 409.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from envoi.core.errors import Invalid
from envoi.core.fieldtypes import FieldTypeError, FieldValue, coerce, iso_utc, parse_datetime
from envoi.core.identity import IDENTIFIERS, Identity
from envoi.profiles.schemas import UserIn
from envoi.profiles.services import identity_from

Loc = tuple[str | int, ...]

LAST_UPDATED = "update_profile_last_updated_at"
_LANGUAGE = re.compile(r"^[A-Za-z]{2}$")


class ItemError(Exception):
    """Why one item was not applied, in FastAPI's error-entry shape."""

    def __init__(self, type_: str, loc: Loc, msg: str, identity: Identity | None = None) -> None:
        super().__init__(msg)
        self.type, self.loc, self.msg = type_, loc, msg
        # The item's identifiers once normalised, for the answer's echo.
        self.identity = identity

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "loc": list(self.loc), "msg": self.msg}


@dataclass
class ProfileChange:
    """What one item asks of one profile, already checked and coerced."""

    loc: Loc  # where the item sits in the request: ("body",) or ("body", 7)
    identity: Identity
    fields: dict[str, FieldValue | None]  # declared fields only; None clears one
    language: str | None = None
    sets_language: bool = False
    subscriptions: dict[int, bool] | None = None
    updated_at: datetime | None = None
    updated_at_in_fields: bool = False  # where to echo it: where the client put it

    def answer(self) -> dict[str, Any]:
        """The seed's echo: given identifiers, then the stored declared fields given."""
        body: dict[str, Any] = {**self.identity.as_dict(), "fields": dict(self.fields)}
        if self.updated_at is not None:
            stamp = iso_utc(self.updated_at)
            target = body["fields"] if self.updated_at_in_fields else body
            target[LAST_UPDATED] = stamp
        if self.sets_language:
            body["language"] = self.language
        if self.subscriptions is not None:
            body["subscriptions"] = {str(k): v for k, v in self.subscriptions.items()}
        return body


def validate_item(raw: object, loc: Loc) -> UserIn:
    """A bulk item through the same schema as a single upsert; the first problem wins."""
    try:
        return UserIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ItemError(first["type"], (*loc, *first["loc"]), first["msg"]) from None


def given_identifiers(raw: object) -> dict[str, Any]:
    """The identifier keys an item gave, as given: the echo of an item that failed."""
    if not isinstance(raw, dict):
        return {}
    return {name: raw[name] for name in IDENTIFIERS if raw.get(name) is not None}


def read_change(
    item: UserIn, loc: Loc, declared: dict[str, str], categories: set[int]
) -> ProfileChange:
    identity = _identity(item, loc)
    try:
        return _read_values(item, loc, identity, declared, categories)
    except ItemError as exc:
        exc.identity = identity
        raise


def _read_values(
    item: UserIn, loc: Loc, identity: Identity, declared: dict[str, str], categories: set[int]
) -> ProfileChange:
    given_fields = dict(item.fields or {})
    stamp_text = item.update_profile_last_updated_at
    in_fields = stamp_text is None and given_fields.get(LAST_UPDATED) is not None
    if in_fields:
        stamp_text = given_fields[LAST_UPDATED]
    given_fields.pop(LAST_UPDATED, None)
    change = ProfileChange(
        loc=loc,
        identity=identity,
        fields=_coerce_fields(given_fields, declared, loc),
        updated_at=_timestamp(
            stamp_text, (*loc, *(("fields",) if in_fields else ()), LAST_UPDATED)
        ),
        updated_at_in_fields=in_fields,
        subscriptions=_subscriptions(item.subscriptions, categories, loc),
    )
    if "language" in item.model_fields_set:
        change.sets_language = True
        change.language = _language(item.language, loc)
    return change


def _identity(item: UserIn, loc: Loc) -> Identity:
    try:
        return identity_from({name: getattr(item, name) for name in IDENTIFIERS}, loc)
    except Invalid as exc:
        raise ItemError("value_error", tuple(exc.loc), exc.message) from None


def _coerce_fields(
    given: dict[str, Any], declared: dict[str, str], loc: Loc
) -> dict[str, FieldValue | None]:
    # Undeclared keys are ignored silently, as seed 002 says.
    coerced: dict[str, FieldValue | None] = {}
    for name, value in given.items():
        if name not in declared:
            continue
        try:
            coerced[name] = coerce(declared[name], value)
        except FieldTypeError as exc:
            raise ItemError(
                "value_error", (*loc, "fields", name), f"{name} ({declared[name]}): {exc}"
            ) from None
    return coerced


def _timestamp(value: object, loc: Loc) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except FieldTypeError as exc:
        raise ItemError("value_error", loc, str(exc)) from None


def _language(value: str | None, loc: Loc) -> str | None:
    if value is None:
        return None  # null clears the language
    if not _LANGUAGE.match(value.strip()):
        raise ItemError(
            "value_error", (*loc, "language"), f"language must be a 2-letter code, got {value!r}"
        )
    return value.strip().lower()


def _subscriptions(
    given: dict[int, bool] | None, categories: set[int], loc: Loc
) -> dict[int, bool] | None:
    if given is None:
        return None
    for category_id in given:
        if category_id not in categories:
            raise ItemError(
                "value_error",
                (*loc, "subscriptions", str(category_id)),
                f"category {category_id} not found",
            )
    return dict(given)


def errors_to_answer(raw: object, error: ItemError) -> dict[str, Any]:
    """A failed item's answer: the identifiers it gave (normalised when they could be)
    and why it was not applied."""
    ids = error.identity.as_dict() if error.identity is not None else given_identifiers(raw)
    return {**ids, "error": error.as_dict()}


def category_ids_of(items: Sequence[UserIn]) -> set[int]:
    """Every category id the items name, to check them with one query."""
    return {cid for item in items for cid in item.subscriptions or {}}
