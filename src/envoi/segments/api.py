"""`/api/v1/segments`: list, create, get, rewrite, edit, delete, generate, members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from envoi.db.lookup import DB_INT_MAX
from envoi.segments import services
from envoi.segments.models import Segment
from envoi.segments.schemas import MemberOut, MembersPage, SegmentIn, SegmentOut, SegmentPatch
from envoi.segments.workers import SegmentGenerator
from envoi.web.deps import CurrentProject, Db

router = APIRouter(prefix="/segments", tags=["segments"])


def _out(segment: Segment) -> SegmentOut:
    return SegmentOut.model_validate(segment)


def _definition(body: SegmentIn) -> services.Definition:
    return services.Definition(body.name, body.tags, body.condition, body.segment_limit)


@router.get("", response_model=list[SegmentOut])
def list_segments(project: CurrentProject, db: Db) -> list[SegmentOut]:
    return [_out(s) for s in services.list_segments(db, project.id)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SegmentOut)
def create_segment(body: SegmentIn, project: CurrentProject, db: Db) -> SegmentOut:
    segment = services.create_segment(db, project.id, _definition(body))
    db.commit()
    return _out(segment)


@router.get("/{segment_id}", response_model=SegmentOut)
def get_segment(segment_id: int, project: CurrentProject, db: Db) -> SegmentOut:
    return _out(services.get_segment(db, project.id, segment_id))


@router.put("/{segment_id}", response_model=SegmentOut)
def rewrite_segment(
    segment_id: int, body: SegmentIn, project: CurrentProject, db: Db
) -> SegmentOut:
    segment = services.rewrite_segment(db, project.id, segment_id, _definition(body))
    db.commit()
    return _out(segment)


@router.patch("/{segment_id}", response_model=SegmentOut)
def edit_segment(
    segment_id: int, body: SegmentPatch, project: CurrentProject, db: Db
) -> SegmentOut:
    changes = body.model_dump(exclude_unset=True)
    segment = services.edit_segment(db, project.id, segment_id, changes)
    db.commit()
    return _out(segment)


@router.delete("/{segment_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_segment(segment_id: int, project: CurrentProject, db: Db) -> Response:
    services.delete_segment(db, project.id, segment_id)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{segment_id}/generate", status_code=status.HTTP_202_ACCEPTED, response_model=SegmentOut
)
def generate_segment(
    segment_id: int, request: Request, project: CurrentProject, db: Db
) -> SegmentOut:
    segment = services.request_generation(db, project.id, segment_id)
    db.commit()
    # Only after the commit: the generator must find the segment pending.
    generator: SegmentGenerator = request.app.state.segment_generator
    generator.wake()
    return _out(segment)


@router.get("/{segment_id}/members", response_model=MembersPage)
def list_members(
    segment_id: int,
    project: CurrentProject,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    # An id cursor: beyond the INTEGER ids there is nothing, and PostgreSQL would refuse it.
    after: Annotated[int | None, Query(ge=0, le=DB_INT_MAX)] = None,
) -> MembersPage:
    # One row more than asked tells whether there is a next page.
    profiles = services.list_members(db, project.id, segment_id, limit=limit + 1, after=after)
    items = [MemberOut.model_validate(p) for p in profiles[:limit]]
    next_after = items[-1].profile_id if len(profiles) > limit else None
    return MembersPage(items=items, next_after=next_after)
