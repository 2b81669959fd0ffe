"""Rules for profiles: identification, declared fields, upserts, subscriptions, erasure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from envoi.core.errors import Conflict, Invalid, NotFound
from envoi.core.fieldtypes import iso_utc
from envoi.core.identity import Identity, IdentityError
from envoi.profiles.erasure import refuse_erased
from envoi.profiles.models import Profile, Subscription


def identity_from(values: Mapping[str, object], loc: Sequence[str | int]) -> Identity:
    """The identifiers present in `values`, normalised; Invalid at `loc` + the offending key."""
    try:
        return Identity.from_mapping(values)
    except IdentityError as exc:
        raise Invalid(str(exc), (*loc, exc.name) if exc.name else loc) from None


def find_profiles(
    session: Session, project_id: int, identity: Identity, *, lock: bool = False
) -> list[Profile]:
    """Every profile named by any identifier of `identity` (more than one is a conflict).

    `lock` takes a KEY SHARE row lock on PostgreSQL (nothing on SQLite, where a write
    transaction is already exclusive): until the caller's transaction ends, nobody
    deletes the profiles (an erasure, say), and upserts, which lock them FOR UPDATE,
    wait.
    """
    clauses = [getattr(Profile, name) == value for name, value in identity.items()]
    query = select(Profile).where(Profile.project_id == project_id, or_(*clauses))
    query = query.order_by(Profile.id)
    if lock:
        query = query.with_for_update(read=True, key_share=True)
    return list(session.scalars(query))


def find_profile(
    session: Session, project_id: int, identity: Identity, *, lock: bool = False
) -> Profile | None:
    """The one profile `identity` names, or None; Conflict if it names two different ones."""
    found = find_profiles(session, project_id, identity, lock=lock)
    if len(found) > 1:
        names = ", ".join(f"{n}={v}" for n, v in identity.items())
        raise Conflict(f"{names} name different profiles ({', '.join(str(p.id) for p in found)})")
    return found[0] if found else None


def get_or_create_profile(session: Session, project_id: int, identity: Identity) -> Profile:
    """The profile `identity` names, created with those identifiers when there is none.

    An implicit creation never brings back a GDPR-erased person: an erased identifier
    is a Conflict (`erasure.refuse_erased`), whether or not a profile is found.
    Safe against concurrent callers: the INSERT runs in a SAVEPOINT, and when another
    transaction created the profile first (a unique violation), that one is used.
    """
    profile = find_profile(session, project_id, identity, lock=True)
    # Checked after the locked read: an erasure of the profile found or being deleted
    # has either committed by now (and is seen) or waits for this transaction.
    refuse_erased(session, project_id, identity)
    if profile is not None:
        return profile
    try:
        with session.begin_nested():
            profile = Profile(project_id=project_id, fields={}, **identity.as_dict())
            session.add(profile)
            session.flush()
    except IntegrityError:
        # A concurrent request inserted one of these identifiers and has committed.
        profile = find_profile(session, project_id, identity, lock=True)
        if profile is None:
            raise Conflict("a concurrent request changed this profile; retry") from None
    return profile


def get_profile(session: Session, project_id: int, identity: Identity) -> Profile:
    """The profile `identity` names in the project; NotFound if none (another project's too)."""
    profile = find_profile(session, project_id, identity)
    if profile is None:
        names = ", ".join(f"{n}={v}" for n, v in identity.items())
        raise NotFound(f"user {names} not found")
    return profile


def subscriptions_of(session: Session, profile_id: int) -> dict[int, bool]:
    """The profile's explicit choices per category; a category absent here is subscribed."""
    query = select(Subscription.category_id, Subscription.subscribed).where(
        Subscription.profile_id == profile_id
    )
    return dict(session.execute(query).all())


def is_subscribed(session: Session, profile_id: int, category_id: int) -> bool:
    """Opt-out model: subscribed unless the profile said no to this category."""
    query = select(Subscription.subscribed).where(
        Subscription.profile_id == profile_id, Subscription.category_id == category_id
    )
    return session.scalar(query) is not False


def profile_view(session: Session, profile: Profile) -> dict[str, Any]:
    """A whole profile as `GET /api/v1/users` answers it."""
    return {
        "id": profile.id,
        "project_id": profile.project_id,
        "uid": profile.uid,
        "email": profile.email,
        "phone": profile.phone,
        "wp_token": profile.wp_token,
        "language": profile.language,
        "fields": dict(profile.fields or {}),
        "subscriptions": {str(k): v for k, v in subscriptions_of(session, profile.id).items()},
        "update_profile_last_updated_at": (
            iso_utc(profile.last_updated_at) if profile.last_updated_at else None
        ),
        "created_at": iso_utc(profile.created_at),
        "updated_at": iso_utc(profile.updated_at),
    }
