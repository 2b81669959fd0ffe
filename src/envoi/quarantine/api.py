"""`/api/v1/quarantine`: addresses the project must not mail, and why."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from envoi.db.base import utcnow
from envoi.quarantine import services
from envoi.quarantine.models import QuarantineEntry
from envoi.quarantine.schemas import QuarantineIn, QuarantineOut, Reason
from envoi.web.deps import CurrentProject, Db

router = APIRouter(prefix="/quarantine", tags=["quarantine"])


def _out(entry: QuarantineEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "address": entry.address,
        "reason": entry.reason,
        "note": entry.note,
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
        "active": services.is_active(entry, utcnow()),
    }


@router.get("", response_model=list[QuarantineOut])
def list_entries(
    project: CurrentProject,
    db: Db,
    *,
    reason: Reason | None = None,
    address: Annotated[str | None, Query(max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> list[dict[str, Any]]:
    entries = services.list_entries(
        db, project.id, limit=limit, after=after, reason=reason, address=address
    )
    return [_out(entry) for entry in entries]


@router.post("", response_model=QuarantineOut, status_code=status.HTTP_201_CREATED)
def add_entry(
    body: QuarantineIn, project: CurrentProject, db: Db, response: Response
) -> dict[str, Any]:
    """201 with a new entry; 200 when the address already had one (updated or kept)."""
    entry, created = services.upsert(
        db, project.id, body.address, body.reason, note=body.note, expires_at=body.expires_at
    )
    db.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(entry)


@router.delete("/{address}", status_code=status.HTTP_204_NO_CONTENT)
def remove_entry(address: str, project: CurrentProject, db: Db) -> Response:
    services.remove(db, project.id, address)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
