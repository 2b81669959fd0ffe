"""`POST /api/v1/send` (one message now, post type P) and `GET /api/v1/send/{id}`.

The campaign test route (`POST /api/v1/campaigns/{id}/test`) is the campaigns
router's (`campaigns.api`), over `sends.services.send_tests`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status

from envoi.db.base import utcnow
from envoi.eventstore.interfaces import EventStore
from envoi.sends import services
from envoi.sends.schemas import SEND_ID_MAX, SendIn, SendOut, SendView
from envoi.web.deps import AppSettings, CurrentProject, Db

router = APIRouter(prefix="/send", tags=["send"])


@router.post("", response_model=SendOut, status_code=status.HTTP_201_CREATED)
def send(
    body: SendIn, project: CurrentProject, db: Db, settings: AppSettings, response: Response
) -> dict[str, Any]:
    """201 with the queued send; 200 with the first answer for a retry of a request
    with the same `idempotency_key` (nothing is sent twice)."""
    sent = services.send(
        db, project.id, body.to_spec(), public_url=settings.public_url, now=utcnow()
    )
    db.commit()
    if not sent.created:
        response.status_code = status.HTTP_200_OK
    return sent.answer


@router.get("/{send_id}", response_model=SendView)
def read_send(
    send_id: Annotated[int, Path(ge=1, le=SEND_ID_MAX)],
    project: CurrentProject,
    db: Db,
    request: Request,
) -> dict[str, Any]:
    """The send's state and its events (`events` null while statistics are off)."""
    store: EventStore | None = request.app.state.event_store
    return services.read_send(db, project.id, send_id, store)
