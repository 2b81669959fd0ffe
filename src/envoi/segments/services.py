"""Rules for segments: definitions checked at write time, members materialised by generate().

Status: "new" (no members for the current definition) -> "pending" (generation asked)
-> "running" (a generator claimed it) -> "ready" | "failed". Changing what decides
membership (condition or segment_limit) drops the members and goes back to "new", so
members, member_count and generated_at always describe the current definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from sqlalchemy import delete, func, insert, literal, select
from sqlalchemy.orm import Session

from envoi.campaigns.spec import SourceType
from envoi.campaigns.usage import campaign_using
from envoi.categories.models import Category
from envoi.core.conditions import Node, Subscribed, parse_condition, walk
from envoi.core.errors import Conflict, Invalid
from envoi.db.base import utcnow
from envoi.db.lookup import get_owned
from envoi.profiles.fields import declared_types
from envoi.profiles.models import Profile
from envoi.segments.compiler import compile_condition
from envoi.segments.models import Segment, SegmentMember


@dataclass(frozen=True)
class Definition:
    """What a client writes: PUT gives all of it, PATCH some of it."""

    name: str
    tags: str | None
    condition: dict[str, Any]
    segment_limit: int | None


def list_segments(session: Session, project_id: int) -> list[Segment]:
    query = select(Segment).where(Segment.project_id == project_id).order_by(Segment.id)
    return list(session.scalars(query))


def get_segment(session: Session, project_id: int, segment_id: int) -> Segment:
    return get_owned(session, Segment, project_id, segment_id, "segment")


def create_segment(session: Session, project_id: int, definition: Definition) -> Segment:
    check_condition(session, project_id, definition.condition)
    segment = Segment(project_id=project_id, status="new", **asdict(definition))
    session.add(segment)
    session.flush()
    return segment


def rewrite_segment(
    session: Session, project_id: int, segment_id: int, definition: Definition
) -> Segment:
    segment = get_segment(session, project_id, segment_id)
    check_condition(session, project_id, definition.condition)
    if (definition.condition, definition.segment_limit) != (
        segment.condition,
        segment.segment_limit,
    ):
        _forget_members(session, segment)
    for key, value in asdict(definition).items():
        setattr(segment, key, value)
    session.flush()
    return segment


def edit_segment(
    session: Session, project_id: int, segment_id: int, changes: Mapping[str, Any]
) -> Segment:
    """Apply the keys present in `changes` (a PATCH body), keep the others."""
    segment = get_segment(session, project_id, segment_id)
    current = Definition(segment.name, segment.tags, segment.condition, segment.segment_limit)
    return rewrite_segment(session, project_id, segment_id, replace(current, **changes))


def delete_segment(session: Session, project_id: int, segment_id: int) -> None:
    """Delete a segment and its members, unless a campaign still reads it: one that is
    neither finished nor archived (the rule API sources follow too, `campaign_using`)."""
    segment = get_segment(session, project_id, segment_id)
    used_by = campaign_using(session, project_id, SourceType.SEGMENT, segment_id)
    if used_by is not None:
        raise Conflict(f"segment {segment_id} is the source of campaign {used_by.post}")
    session.delete(segment)  # members go with it (ON DELETE CASCADE)


def request_generation(session: Session, project_id: int, segment_id: int) -> Segment:
    """Queue the segment for the generator; the caller commits, then wakes it."""
    segment = get_segment(session, project_id, segment_id)
    segment.status = "pending"
    segment.error = None
    session.flush()
    return segment


def list_members(
    session: Session, project_id: int, segment_id: int, *, limit: int, after: int | None
) -> list[Profile]:
    """Up to `limit` member profiles with an id above `after`, lowest id first."""
    segment = get_segment(session, project_id, segment_id)
    if segment.generated_at is None:
        raise Conflict("the segment has no members yet: generate it first")
    query = (
        select(Profile)
        .join(SegmentMember, SegmentMember.profile_id == Profile.id)
        .where(SegmentMember.segment_id == segment_id, Profile.project_id == project_id)
        .order_by(Profile.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Profile.id > after)
    return list(session.scalars(query))


def check_condition(session: Session, project_id: int, raw: object) -> Node:
    """Parse `raw` against the project's declared fields and its categories."""
    node = parse_condition(raw, declared_types(session, project_id))
    category_ids = {n.category_id: n.path for n in walk(node) if isinstance(n, Subscribed)}
    if category_ids:
        known = set(
            session.scalars(
                select(Category.id).where(
                    Category.project_id == project_id, Category.id.in_(category_ids)
                )
            )
        )
        # An unknown category would silently match everyone (no opt-out rows).
        for category_id, path in category_ids.items():
            if category_id not in known:
                loc = ("body", "condition", *path, "subscribed")
                raise Invalid(f"category {category_id} not found", loc)
    return node


def generate(session: Session, segment: Segment) -> int:
    """Replace the segment's members with the matching profiles (lowest ids first, at most
    segment_limit) and mark it ready; returns the member count. The caller commits.

    Raises Invalid when the stored condition no longer holds (a field was deleted ...)."""
    # Lock the row first: two generations of one segment then run one after the other
    # instead of both deleting and inserting the same members.
    session.flush()
    session.refresh(segment, with_for_update=True)
    node = check_condition(session, segment.project_id, segment.condition)
    condition = compile_condition(
        node,
        project_id=segment.project_id,
        dialect=session.get_bind().dialect.name,
        now=utcnow(),
    )
    session.execute(delete(SegmentMember).where(SegmentMember.segment_id == segment.id))
    matching = (
        select(literal(segment.id), Profile.id)
        .where(Profile.project_id == segment.project_id, condition)
        .order_by(Profile.id)
    )
    if segment.segment_limit is not None:
        matching = matching.limit(segment.segment_limit)
    # One INSERT ... SELECT: the profiles never travel through Python.
    session.execute(insert(SegmentMember).from_select(["segment_id", "profile_id"], matching))
    count = session.scalar(
        select(func.count())
        .select_from(SegmentMember)
        .where(SegmentMember.segment_id == segment.id)
    )
    segment.status = "ready"
    segment.member_count = count or 0
    segment.generated_at = utcnow()
    segment.error = None
    session.flush()
    return segment.member_count


def _forget_members(session: Session, segment: Segment) -> None:
    session.execute(delete(SegmentMember).where(SegmentMember.segment_id == segment.id))
    segment.status = "new"
    segment.member_count = None
    segment.generated_at = None
    segment.error = None
