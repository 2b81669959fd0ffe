"""Request dependencies of the routers that name a profile in the query string."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from envoi.core.identity import Identity
from envoi.profiles.services import identity_from

Identifier = Annotated[str | None, Query()]


def named_identity(
    uid: Identifier = None,
    email: Identifier = None,
    phone: Identifier = None,
    wp_token: Identifier = None,
) -> Identity:
    """The profile the query string names (`?email=...`); 422 at the offending parameter."""
    given = {"uid": uid, "email": email, "phone": phone, "wp_token": wp_token}
    return identity_from(given, ("query",))


Named = Annotated[Identity, Depends(named_identity)]
