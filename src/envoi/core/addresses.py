"""Sender addresses as users write them: `news@example.com` or `News <news@example.com>`.

The address part is checked by email-validator (syntax only, no DNS); the display
name is free text on one line, so `Магазин <shop@example.ru>` is accepted although
RFC 5322 wants it encoded: encoding headers is the renderer's job, not the user's.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

_NAMED = re.compile(r"^(?P<name>[^<>]*?)\s*<(?P<address>[^<>]*)>$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AddressError(ValueError):
    """Why a sender address was refused, in words a user can act on."""


def check_sender(value: str) -> str:
    """Return `value` trimmed when it is one valid sender address; raise AddressError if not."""
    text = value.strip()
    if not text:
        raise AddressError("the address is empty")
    if _CONTROL.search(text):
        raise AddressError("the address must be one line without control characters")
    match = _NAMED.match(text)
    address = match["address"].strip() if match else text
    if not match and ("<" in text or ">" in text):
        raise AddressError("write a display name as 'Name <address@example.com>'")
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from None
    return text
