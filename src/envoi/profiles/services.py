"""Rules for profiles: identification, declared fields, upserts, subscriptions, erasure."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from envoi.core.errors import Conflict
from envoi.core.identity import Identity
from envoi.profiles.models import Profile


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
