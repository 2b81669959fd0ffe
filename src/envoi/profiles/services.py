"""Rules for profiles: identification, declared fields, upserts, subscriptions, erasure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from envoi.core.errors import Conflict, Invalid, NotFound
from envoi.core.fieldtypes import iso_utc
from envoi.core.identity import IDENTIFIERS, Identity, IdentityError, normalize
from envoi.profiles.models import Profile, Subscription


def identity_from(values: Mapping[str, object], loc: Sequence[str | int]) -> Identity:
    """The identifiers present in `values`, normalised; Invalid at `loc` + the offending key."""
    found: dict[str, str] = {}
    for name in IDENTIFIERS:
        value = values.get(name)
        if value is None or value == "":
            continue
        try:
            found[name] = normalize(name, value)
        except IdentityError as exc:
            raise Invalid(str(exc), (*loc, name)) from None
    if not found:
        raise Invalid("one of uid, email, phone or wp_token is required", loc)
    return Identity(**found)


def find_profiles(session: Session, project_id: int, identity: Identity) -> list[Profile]:
    """Every profile named by any identifier of `identity` (more than one is a conflict)."""
    clauses = [getattr(Profile, name) == value for name, value in identity.items()]
    query = select(Profile).where(Profile.project_id == project_id, or_(*clauses))
    return list(session.scalars(query.order_by(Profile.id)))


def find_profile(session: Session, project_id: int, identity: Identity) -> Profile | None:
    """The one profile `identity` names, or None; Conflict if it names two different ones."""
    found = find_profiles(session, project_id, identity)
    if len(found) > 1:
        names = ", ".join(f"{n}={v}" for n, v in identity.items())
        raise Conflict(f"{names} name different profiles ({', '.join(str(p.id) for p in found)})")
    return found[0] if found else None


def get_or_create_profile(session: Session, project_id: int, identity: Identity) -> Profile:
    """The profile `identity` names, created with those identifiers when there is none."""
    profile = find_profile(session, project_id, identity)
    if profile is None:
        profile = Profile(project_id=project_id, fields={}, **identity.as_dict())
        session.add(profile)
        session.flush()
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
