"""Declared profile fields ("project settings" in seed 002): only these are ever stored.

A project declares a field with a name and one of `envoi.core.fieldtypes.FIELD_TYPES`;
users' values for it are coerced to that type on every write. Deleting a declaration
also removes its values from every profile, so a later field of the same name and
another type never meets values of the old type.
"""

from __future__ import annotations

from sqlalchemy import String, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from envoi.core.errors import Conflict, Invalid, NotFound
from envoi.core.fieldtypes import FIELD_TYPES
from envoi.core.identity import IDENTIFIERS
from envoi.profiles.models import Profile, ProfileField

# Keys that mean something else in a users item or a profile answer; a field of that
# name would be ambiguous (compared case-insensitively: `Email` is refused too).
SYSTEM_NAMES: frozenset[str] = frozenset(
    {
        *IDENTIFIERS,
        "id",
        "project_id",
        "language",
        "fields",
        "subscriptions",
        "update_profile_last_updated_at",
        "created_at",
        "updated_at",
        "error",
    }
)


def list_fields(session: Session, project_id: int) -> list[ProfileField]:
    query = select(ProfileField).where(ProfileField.project_id == project_id)
    return list(session.scalars(query.order_by(ProfileField.id)))


def declared_types(session: Session, project_id: int) -> dict[str, str]:
    """`{field name: type name}` of the project: what users' writes are coerced with."""
    query = select(ProfileField.name, ProfileField.type).where(
        ProfileField.project_id == project_id
    )
    return dict(session.execute(query).all())


def get_field(session: Session, project_id: int, name: str) -> ProfileField:
    query = select(ProfileField).where(
        ProfileField.project_id == project_id, ProfileField.name == name
    )
    field = session.scalar(query)
    if field is None:
        raise NotFound(f"field {name!r} not found")
    return field


def create_field(session: Session, project_id: int, name: str, type_: str) -> ProfileField:
    if name.lower() in SYSTEM_NAMES:
        raise Invalid(f"{name!r} is a system field name", ("body", "name"))
    if type_ not in FIELD_TYPES:
        raise Invalid(f"type must be one of {', '.join(FIELD_TYPES)}", ("body", "type"))
    field = ProfileField(project_id=project_id, name=name, type=type_)
    try:
        # The unique (project, name) decides, in a SAVEPOINT: no check-then-insert race
        # with a concurrent request declaring the same name.
        with session.begin_nested():
            session.add(field)
            session.flush()
    except IntegrityError:
        raise Conflict(f"field {name!r} is already declared") from None
    return field


def delete_field(session: Session, project_id: int, name: str) -> None:
    """Drop the declaration and strip its values from the project's profiles."""
    field = get_field(session, project_id, name)
    session.delete(field)
    _strip_values(session, project_id, name)
    session.flush()


def _strip_values(session: Session, project_id: int, name: str) -> None:
    # One UPDATE in the database's own JSON dialect rather than loading every profile.
    # `name` matches FIELD_NAME_PATTERN, so it is a safe JSON path member.
    in_project = Profile.project_id == project_id
    if session.get_bind().dialect.name == "postgresql":
        key = literal(name, String())  # text, or `jsonb - x` would read it as JSON
        statement = (
            update(Profile)
            .where(in_project, Profile.fields.op("?")(key))
            .values(fields=Profile.fields.op("-")(key))
        )
    else:
        path = f'$."{name}"'
        statement = (
            update(Profile)
            .where(in_project, func.json_type(Profile.fields, path).is_not(None))
            .values(fields=func.json_remove(Profile.fields, path))
        )
    session.execute(statement.execution_options(synchronize_session=False))
