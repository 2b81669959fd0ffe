"""`/api/v1/sources`: API sources and their recipients."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from envoi.core.errors import Invalid
from envoi.core.identity import IDENTIFIERS, Identity
from envoi.sources import services
from envoi.sources.models import Source, SourceRecipient
from envoi.sources.schemas import (
    MAX_ITEMS,
    ItemError,
    RecipientOut,
    RecipientsAdded,
    RecipientsRemoved,
    SourceIn,
    SourceOut,
    parse_identities,
    parse_recipients,
)
from envoi.web.deps import CurrentProject, Db

router = APIRouter(prefix="/sources", tags=["sources"])

Items = Annotated[list[Any], Body(max_length=MAX_ITEMS)]


def _out(source: Source, count: int) -> dict[str, Any]:
    return {
        "id": source.id,
        "project_id": source.project_id,
        "name": source.name,
        "recipients": count,
        "created_at": source.created_at,
        "updated_at": source.updated_at,
    }


def _recipient_out(recipient: SourceRecipient) -> dict[str, Any]:
    return {
        "id": recipient.id,
        "recipient_key": recipient.recipient_key,
        **{name: getattr(recipient, name) for name in IDENTIFIERS},
        "params": recipient.params,
        "created_at": recipient.created_at,
        "updated_at": recipient.updated_at,
    }


@router.get("", response_model=list[SourceOut])
def list_sources(project: CurrentProject, db: Db) -> list[dict[str, Any]]:
    sources = services.list_sources(db, project.id)
    counts = services.recipient_counts(db, [s.id for s in sources])
    return [_out(s, counts.get(s.id, 0)) for s in sources]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SourceOut)
def create_source(body: SourceIn, project: CurrentProject, db: Db) -> dict[str, Any]:
    source = services.create_source(db, project.id, name=body.name)
    db.commit()
    return _out(source, 0)


@router.get("/{source_id}", response_model=SourceOut)
def get_source(source_id: int, project: CurrentProject, db: Db) -> dict[str, Any]:
    source = services.get_source(db, project.id, source_id)
    return _out(source, services.recipient_counts(db, [source.id]).get(source.id, 0))


@router.delete("/{source_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_source(source_id: int, project: CurrentProject, db: Db) -> Response:
    services.delete_source(db, project.id, source_id)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{source_id}/recipients", response_model=RecipientsAdded)
def add_recipients(source_id: int, items: Items, project: CurrentProject, db: Db) -> dict[str, Any]:
    """Upsert up to 10,000 recipients; each bad item is reported, the others are kept."""
    services.get_source(db, project.id, source_id)
    accepted, errors = parse_recipients(items)
    result = services.upsert_recipients(db, project.id, source_id, accepted)
    db.commit()
    errors += [ItemError(index=i, loc=[i], msg=msg) for i, msg in result.conflicts]
    errors.sort(key=lambda error: error.index)
    return {
        "created": result.created,
        "updated": result.updated,
        "rejected": len(errors),
        "errors": errors,
    }


@router.get("/{source_id}/recipients", response_model=list[RecipientOut])
def list_recipients(
    source_id: int,
    project: CurrentProject,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    page = services.list_recipients(db, project.id, source_id, limit=limit, after=after)
    return [_recipient_out(r) for r in page]


@router.delete("/{source_id}/recipients", response_model=RecipientsRemoved)
def remove_recipients(
    source_id: int,
    project: CurrentProject,
    db: Db,
    *,
    items: Annotated[list[Any] | None, Body(max_length=MAX_ITEMS)] = None,
    uid: Annotated[list[str] | None, Query()] = None,
    email: Annotated[list[str] | None, Query()] = None,
    phone: Annotated[list[str] | None, Query()] = None,
    wp_token: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    """Remove the recipients a JSON list of identifiers, or the query string, names."""
    services.get_source(db, project.id, source_id)
    queried = {"uid": uid, "email": email, "phone": phone, "wp_token": wp_token}
    from_query = [{name: v} for name, values in queried.items() for v in values or []]
    if not items and not from_query:
        raise Invalid(
            "name the recipients to remove: a JSON list of identifiers, or ?email=...",
            ("body",),
        )
    identities: list[Identity] = parse_identities([*(items or []), *from_query])
    removed = services.remove_recipients(db, project.id, source_id, identities)
    db.commit()
    return {"removed": removed}
