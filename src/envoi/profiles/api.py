"""`/api/v1/users` (single and bulk upsert, read, GDPR erasure) and `/api/v1/fields`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response, status
from fastapi.responses import JSONResponse

from envoi.profiles import erasure, fields, services, upsert
from envoi.profiles.deps import Named
from envoi.profiles.models import ProfileField
from envoi.profiles.schemas import FieldIn, FieldOut, UserAnswer, UserIn, UserOut
from envoi.web.deps import CurrentProject, Db

router = APIRouter(prefix="/users", tags=["users"])
fields_router = APIRouter(prefix="/fields", tags=["fields"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserAnswer)
def upsert_user(body: UserIn, project: CurrentProject, db: Db) -> dict[str, Any]:
    answer = upsert.upsert_user(db, project.id, body)
    db.commit()
    return answer


@router.post(
    "/bulk",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=list[UserAnswer],
    response_class=JSONResponse,
)
def upsert_users(
    # Items are checked one by one (`changes.validate_item`): one that is not even an
    # object is that item's error, not the request's.
    body: Annotated[list[Any], Body(max_length=upsert.MAX_BULK_ITEMS)],
    project: CurrentProject,
    db: Db,
) -> JSONResponse:
    answers = upsert.upsert_users(db, project.id, body)
    db.commit()
    # Answered directly: re-validating 10,000 echoes through the response model is waste.
    return JSONResponse(answers, status_code=status.HTTP_202_ACCEPTED)


@router.get("", response_model=UserOut)
def get_user(identity: Named, project: CurrentProject, db: Db) -> dict[str, Any]:
    profile = services.get_profile(db, project.id, identity)
    return services.profile_view(db, profile)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def erase_user(identity: Named, project: CurrentProject, db: Db) -> Response:
    """GDPR erasure: the profile is deleted and its identifiers are kept only as hashes."""
    profile = services.get_profile(db, project.id, identity)
    erasure.erase_profile(db, project.id, profile)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _field_out(field: ProfileField) -> dict[str, str]:
    return {"name": field.name, "type": field.type}


@fields_router.get("", response_model=list[FieldOut])
def list_fields(project: CurrentProject, db: Db) -> list[dict[str, str]]:
    return [_field_out(f) for f in fields.list_fields(db, project.id)]


@fields_router.post("", status_code=status.HTTP_201_CREATED, response_model=FieldOut)
def create_field(body: FieldIn, project: CurrentProject, db: Db) -> dict[str, str]:
    field = fields.create_field(db, project.id, body.name, body.type)
    db.commit()
    return _field_out(field)


@fields_router.get("/{name}", response_model=FieldOut)
def get_field(name: str, project: CurrentProject, db: Db) -> dict[str, str]:
    return _field_out(fields.get_field(db, project.id, name))


@fields_router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_field(name: str, project: CurrentProject, db: Db) -> Response:
    fields.delete_field(db, project.id, name)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
