"""Rules for API sources: recipient lists scoped to a project, upserted by recipient key.

A recipient is named by its key, the first of its identifiers in the order uid,
email, phone, wp_token (`Identity.key`): sending the same key again replaces its
identifiers and parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.core.campaign_states import State
from envoi.core.errors import Conflict
from envoi.core.identity import Identity
from envoi.db.base import utcnow
from envoi.db.lookup import get_owned
from envoi.sources.models import Source, SourceRecipient

# Rows per statement: well under SQLite's bound-parameter limit with 6 columns a row.
CHUNK = 1000
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def list_sources(session: Session, project_id: int) -> list[Source]:
    query = select(Source).where(Source.project_id == project_id).order_by(Source.id)
    return list(session.scalars(query))


def get_source(session: Session, project_id: int, source_id: int) -> Source:
    return get_owned(session, Source, project_id, source_id, "API source")


def recipient_counts(session: Session, source_ids: list[int]) -> dict[int, int]:
    if not source_ids:
        return {}
    query = (
        select(SourceRecipient.source_id, func.count())
        .where(SourceRecipient.source_id.in_(source_ids))
        .group_by(SourceRecipient.source_id)
    )
    return dict(session.execute(query).all())


def create_source(session: Session, project_id: int, *, name: str) -> Source:
    source = Source(project_id=project_id, name=name)
    session.add(source)
    session.flush()
    return source


def delete_source(session: Session, project_id: int, source_id: int) -> None:
    """Refused while a campaign that is not archived reads from it."""
    source = get_source(session, project_id, source_id)
    user = session.scalar(
        select(Campaign)
        .where(
            Campaign.project_id == project_id,
            Campaign.source_type == "A",
            Campaign.source_id == source_id,
            Campaign.state != State.ARCHIVED.value,
        )
        .order_by(Campaign.id)
        .limit(1)
    )
    if user is not None:
        raise Conflict(f"API source {source_id} is used by campaign {user.post} ({user.state})")
    # Recipients go with it (ON DELETE CASCADE).
    session.delete(source)
    session.flush()


def upsert_recipients(
    session: Session,
    project_id: int,
    source_id: int,
    recipients: list[tuple[Identity, dict[str, Any]]],
) -> tuple[int, int]:
    """Insert or replace each recipient; return (created, updated).

    A key named twice in one request counts once, the last occurrence winning. The
    write itself is an ON CONFLICT upsert, so two clients adding the same recipient
    at once both succeed instead of one failing on the unique key.
    """
    source = get_source(session, project_id, source_id)
    latest = {identity.key: (identity, params) for identity, params in recipients}
    now = utcnow()
    created = updated = 0
    for chunk in _chunks(list(latest.items())):
        keys = [key for key, _ in chunk]
        known = set(
            session.scalars(
                select(SourceRecipient.recipient_key).where(
                    SourceRecipient.source_id == source_id,
                    SourceRecipient.recipient_key.in_(keys),
                )
            )
        )
        updated += len(known)
        created += len(keys) - len(known)
        rows = [
            {
                "source_id": source_id,
                "recipient_key": key,
                "identifiers": identity.as_dict(),
                "params": params,
                "created_at": now,
                "updated_at": now,
            }
            for key, (identity, params) in chunk
        ]
        _upsert(session, rows)
    source.updated_at = now
    session.flush()
    return created, updated


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    conflict = ["source_id", "recipient_key"]
    if session.get_bind().dialect.name == "postgresql":
        pg = pg_insert(SourceRecipient)
        session.execute(
            pg.on_conflict_do_update(
                index_elements=conflict,
                set_={
                    "identifiers": pg.excluded.identifiers,
                    "params": pg.excluded.params,
                    "updated_at": pg.excluded.updated_at,
                },
            ),
            rows,
        )
    else:
        lite = sqlite_insert(SourceRecipient)
        session.execute(
            lite.on_conflict_do_update(
                index_elements=conflict,
                set_={
                    "identifiers": lite.excluded.identifiers,
                    "params": lite.excluded.params,
                    "updated_at": lite.excluded.updated_at,
                },
            ),
            rows,
        )


def list_recipients(
    session: Session, project_id: int, source_id: int, *, limit: int, after: int
) -> list[SourceRecipient]:
    """A page in id order; pass the last id seen as `after` for the next one."""
    get_source(session, project_id, source_id)
    query = (
        select(SourceRecipient)
        .where(SourceRecipient.source_id == source_id, SourceRecipient.id > after)
        .order_by(SourceRecipient.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def remove_recipients(
    session: Session, project_id: int, source_id: int, identities: list[Identity]
) -> int:
    """Remove the recipients these identities name (by key); return how many were removed."""
    source = get_source(session, project_id, source_id)
    keys = sorted({identity.key for identity in identities})
    removed = 0
    for chunk in _chunks(keys):
        result = session.execute(
            delete(SourceRecipient).where(
                SourceRecipient.source_id == source_id, SourceRecipient.recipient_key.in_(chunk)
            )
        )
        removed += int(getattr(result, "rowcount", 0) or 0)
    if removed:
        source.updated_at = utcnow()
    session.flush()
    return removed
