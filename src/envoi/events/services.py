"""Rules for API events: each names a profile, which is created when it is unknown.

An event for an identifier nobody upserted yet creates the profile with just that
identifier (seed 002 does not say; a product usually reports an event before it
syncs the user, and refusing it would lose the fact). An event naming a GDPR-erased
identifier is refused with a Conflict and nothing is stored: it neither re-creates
the person nor lifts the erasure; only an explicit users upsert re-registers them.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from envoi.automation.enqueue import event_fired
from envoi.core.errors import Invalid
from envoi.core.identity import Identity
from envoi.events.models import ApiEvent
from envoi.profiles.services import get_or_create_profile, get_profile, identity_from

MAX_LIST = 1000


def payload_object(payload: dict[str, Any] | str) -> dict[str, Any]:
    """The payload as a JSON object; the seed's "string" form must hold one."""
    if isinstance(payload, dict):
        return payload
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise Invalid("payload must be a JSON object", ("body", "payload"))
    return parsed


def record_event(session: Session, project_id: int, name: str, payload: dict[str, Any]) -> ApiEvent:
    identity = identity_from(payload, ("body", "payload"))
    profile = get_or_create_profile(session, project_id, identity)
    event = ApiEvent(project_id=project_id, profile_id=profile.id, name=name, payload=payload)
    session.add(event)
    session.flush()
    event_fired(session, event)  # automated campaigns it triggers: queued, not sent
    return event


def list_events(
    session: Session, project_id: int, identity: Identity, name: str | None, limit: int
) -> list[ApiEvent]:
    """A profile's events, newest first; NotFound for a profile the project does not have."""
    profile = get_profile(session, project_id, identity)
    query = select(ApiEvent).where(
        ApiEvent.project_id == project_id, ApiEvent.profile_id == profile.id
    )
    if name is not None:
        query = query.where(ApiEvent.name == name)
    query = query.order_by(ApiEvent.created_at.desc(), ApiEvent.id.desc()).limit(limit)
    return list(session.scalars(query))
