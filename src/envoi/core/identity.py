"""How a profile is named: uid, email, phone or wp_token, normalised the same way everywhere."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

IDENTIFIERS: tuple[str, ...] = ("uid", "email", "phone", "wp_token")

# E.164 allows at most 15 digits; short codes and extensions need a little room below.
_PHONE_DIGITS = re.compile(r"^\+?[0-9]{5,18}$")
_PHONE_PUNCTUATION = re.compile(r"[\s().\-]")


class IdentityError(ValueError):
    """An identifier that cannot name a profile; `name` says which (None: none was given)."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def normalize_email(value: str) -> str:
    """Validate syntax (no DNS) and lower-case the address, as mailbox providers compare it."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise IdentityError(f"invalid email address {value!r}: {exc}") from None
    return checked.normalized.lower()


def normalize_phone(value: str) -> str:
    phone = _PHONE_PUNCTUATION.sub("", value.strip())
    if not _PHONE_DIGITS.match(phone):
        raise IdentityError(f"invalid phone number {value!r}")
    return phone


def normalize_token(value: str, name: str) -> str:
    token = value.strip()
    if not token:
        raise IdentityError(f"{name} must not be empty")
    if len(token) > (200 if name == "uid" else 500):
        raise IdentityError(f"{name} is too long")
    return token


def normalize(name: str, value: object) -> str:
    """Normalise one identifier; numbers are accepted for uid and phone."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise IdentityError(f"{name} must be a string")
    text = str(value)
    if name == "email":
        return normalize_email(text)
    if name == "phone":
        return normalize_phone(text)
    return normalize_token(text, name)


@dataclass(frozen=True)
class Identity:
    """The identifiers one request gives for one profile (at least one is set)."""

    uid: str | None = None
    email: str | None = None
    phone: str | None = None
    wp_token: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Identity:
        """Read and normalise the identifiers present in `data` (None and "" are absent).

        IdentityError if one is malformed (its `name` set) or if there is none.
        """
        values: dict[str, str] = {}
        for name in IDENTIFIERS:
            value = data.get(name)
            if value is None or value == "":
                continue
            try:
                values[name] = normalize(name, value)
            except IdentityError as exc:
                raise IdentityError(str(exc), name) from None
        if not values:
            raise IdentityError("one of uid, email, phone or wp_token is required")
        return cls(**values)

    def items(self) -> list[tuple[str, str]]:
        """The set identifiers in lookup order (uid first: it is the project's own key)."""
        return [(name, v) for name in IDENTIFIERS if (v := getattr(self, name)) is not None]

    @property
    def key(self) -> str:
        """A stable text key naming the recipient, e.g. `email:ann@example.com`."""
        name, value = self.items()[0]
        return f"{name}:{value}"

    def as_dict(self) -> dict[str, str]:
        return dict(self.items())


def erasure_hash(name: str, value: str) -> str:
    """What a GDPR erasure keeps of an identifier: enough to refuse it, not to read it."""
    return hashlib.sha256(f"{name}:{value}".encode()).hexdigest()
