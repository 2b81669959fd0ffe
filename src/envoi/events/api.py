"""`/api/v1/events`: record an event about a profile, list a profile's events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from envoi.core.fieldtypes import iso_utc
from envoi.events import services
from envoi.events.models import ApiEvent
from envoi.events.schemas import EventEcho, EventIn, EventOut
from envoi.profiles.deps import Named
from envoi.web.deps import CurrentProject, Db

router = APIRouter(prefix="/events", tags=["events"])


def _out(event: ApiEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "profile_id": event.profile_id,
        "name": event.name,
        "payload": event.payload,
        "created_at": iso_utc(event.created_at),
    }


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EventEcho)
def record_event(body: EventIn, project: CurrentProject, db: Db) -> dict[str, Any]:
    payload = services.payload_object(body.payload)
    services.record_event(db, project.id, body.name, payload)
    db.commit()
    return {"name": body.name, "payload": body.payload}


@router.get("", response_model=list[EventOut])
def list_events(
    identity: Named,
    project: CurrentProject,
    db: Db,
    name: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=services.MAX_LIST)] = 100,
) -> list[dict[str, Any]]:
    events = services.list_events(db, project.id, identity, name, limit)
    return [_out(e) for e in events]
