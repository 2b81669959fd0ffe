"""`/api/v1/captured`: the mail a capture router kept instead of sending."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from envoi.routers import services
from envoi.routers.capture import subject_of
from envoi.routers.models import CapturedMessage
from envoi.web.deps import CurrentProject, Db

router = APIRouter(prefix="/captured", tags=["captured"])


def captured_out(message: CapturedMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "post": message.post,
        "spool_id": message.spool_id,
        "mail_from": message.mail_from,
        "recipient": message.recipient,
        "received_at": message.received_at,
        "subject": subject_of(message.raw),
        # JSON carries text: bytes that are not UTF-8 (8-bit legacy parts) show as U+FFFD.
        "raw": message.raw.decode("utf-8", "replace"),
    }


@router.get("")
def list_captured(
    project: CurrentProject,
    db: Db,
    *,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    post: Annotated[str | None, Query(max_length=32)] = None,
    recipient: Annotated[str | None, Query(max_length=320)] = None,
) -> list[dict[str, Any]]:
    """Newest first; pass the last `id` received as `after_id` for older ones."""
    messages = services.list_captured(
        db, project.id, limit=limit, after_id=after_id, post=post, recipient=recipient
    )
    return [captured_out(message) for message in messages]


@router.delete("")
def delete_captured(project: CurrentProject, db: Db) -> dict[str, int]:
    deleted = services.delete_captured(db, project.id)
    db.commit()
    return {"deleted": deleted}
