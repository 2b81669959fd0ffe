"""Rules for API sources: recipient lists scoped to a project.

A recipient is known by each of its identifiers, like a profile: within a source, one
uid, email, phone or wp_token names at most one recipient (a unique constraint per
identifier). Adding a recipient updates the one that any of its identifiers names,
so a person added with uid and email and sent again with the email alone is still
one recipient, mailed once; an item whose identifiers name two different recipients
is refused as a conflict. Removing by any identifier removes the recipient having it.

Writers of one source take its row lock first (PostgreSQL; SQLite's BEGIN IMMEDIATE
already serialises writers), so concurrent requests see each other's recipients
instead of racing on the unique constraints.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from envoi.campaigns.spec import SourceType
from envoi.campaigns.usage import campaign_using
from envoi.core.errors import Conflict
from envoi.core.identity import IDENTIFIERS, Identity
from envoi.db.base import utcnow
from envoi.db.lookup import get_owned
from envoi.profiles.batching import chunks, custom_plans
from envoi.sources.models import Source, SourceRecipient


@dataclass(frozen=True)
class Recipient:
    """A valid item of a bulk request, with its index for the errors found later."""

    index: int
    identity: Identity
    params: dict[str, Any]


def list_sources(session: Session, project_id: int) -> list[Source]:
    query = select(Source).where(Source.project_id == project_id).order_by(Source.id)
    return list(session.scalars(query))


def get_source(session: Session, project_id: int, source_id: int, *, lock: bool = False) -> Source:
    return get_owned(session, Source, project_id, source_id, "API source", lock=lock)


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
    """Refused while a campaign that is neither finished nor archived reads from it."""
    source = get_source(session, project_id, source_id, lock=True)
    user = campaign_using(session, project_id, SourceType.API, source_id)
    if user is not None:
        raise Conflict(f"API source {source_id} is used by campaign {user.post} ({user.state})")
    # Recipients go with it (ON DELETE CASCADE).
    session.delete(source)
    session.flush()


@dataclass(eq=False)
class _Entry:
    """A recipient as this request leaves it: stored already (`id`) or new."""

    id: int | None
    identifiers: dict[str, str]
    # The identifiers as stored before this request (empty for a new recipient).
    stored: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    touched: bool = False


@dataclass(frozen=True)
class Upserted:
    created: int
    updated: int
    # (index of the item, why it was refused): identifiers naming different recipients.
    conflicts: list[tuple[int, str]]


def upsert_recipients(
    session: Session, project_id: int, source_id: int, recipients: list[Recipient]
) -> Upserted:
    """Add each recipient, or update the one its identifiers name.

    An update sets the identifiers given (the others stay) and replaces the params.
    Items are applied in order, so of two items naming one recipient the last one's
    params win, and it is counted once.
    """
    source = get_source(session, project_id, source_id, lock=True)
    custom_plans(session)
    stored = _stored_entries(session, source_id, [r.identity for r in recipients])
    by_identifier = {item: entry for entry in stored for item in entry.identifiers.items()}
    new: list[_Entry] = []
    conflicts: list[tuple[int, str]] = []
    for recipient in recipients:
        named = list(
            dict.fromkeys(
                by_identifier[item] for item in recipient.identity.items() if item in by_identifier
            )
        )
        if len(named) > 1:
            conflicts.append((recipient.index, _conflict(recipient.identity, named)))
            continue
        if named:
            entry = named[0]
        else:
            entry = _Entry(None, {})
            new.append(entry)
        for name, value in recipient.identity.items():
            previous = entry.identifiers.get(name)
            if previous is not None and previous != value:
                del by_identifier[(name, previous)]
            entry.identifiers[name] = value
            by_identifier[(name, value)] = entry
        entry.params = recipient.params
        entry.touched = True
    updated = [entry for entry in stored if entry.touched]
    now = utcnow()
    _write_updates(session, updated, now)
    if new:
        session.execute(
            insert(SourceRecipient),
            [_columns(e, now) | {"source_id": source_id, "created_at": now} for e in new],
        )
    if updated or new:
        source.updated_at = now
    session.flush()
    return Upserted(created=len(new), updated=len(updated), conflicts=conflicts)


def _conflict(identity: Identity, named: list[_Entry]) -> str:
    given = " and ".join(f"{name} {value}" for name, value in identity.items())
    ids = sorted(entry.id for entry in named if entry.id is not None)
    known = f" ({', '.join(map(str, ids))})" if ids else ""
    return f"{given} name different recipients of this source{known}"


def _stored_entries(session: Session, source_id: int, identities: list[Identity]) -> list[_Entry]:
    """The stored recipients any of these identities names, by each identifier's index."""
    found: dict[int, _Entry] = {}
    columns = [getattr(SourceRecipient, name) for name in IDENTIFIERS]
    for name, values in _values_by_name(identities).items():
        for chunk in chunks(sorted(values)):
            rows = session.execute(
                select(SourceRecipient.id, *columns).where(
                    SourceRecipient.source_id == source_id,
                    getattr(SourceRecipient, name).in_(chunk),
                )
            )
            for row in rows:
                if row.id not in found:
                    identifiers = {n: v for n in IDENTIFIERS if (v := getattr(row, n)) is not None}
                    found[row.id] = _Entry(row.id, identifiers, stored=dict(identifiers))
    return list(found.values())


def _values_by_name(identities: Iterable[Identity]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = defaultdict(set)
    for identity in identities:
        for name, value in identity.items():
            wanted[name].add(value)
    return wanted


def _columns(entry: _Entry, now: datetime) -> dict[str, Any]:
    identifiers = {name: entry.identifiers.get(name) for name in IDENTIFIERS}
    return identifiers | {"params": entry.params, "updated_at": now}


def _write_updates(session: Session, updated: list[_Entry], now: datetime) -> None:
    """Rows whose identifiers change give them up first, so an identifier that moves
    from one recipient to another never exists twice, whatever the row order."""
    moving = [entry for entry in updated if entry.identifiers != entry.stored]
    if moving:
        cleared = dict.fromkeys(IDENTIFIERS)
        session.execute(update(SourceRecipient), [{"id": e.id} | cleared for e in moving])
    if updated:
        session.execute(
            update(SourceRecipient),
            [{"id": e.id} | _columns(e, now) for e in updated],
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
    """Remove every recipient that has any identifier of these identities; return how many."""
    source = get_source(session, project_id, source_id, lock=True)
    custom_plans(session)
    removed = 0
    for name, values in _values_by_name(identities).items():
        for chunk in chunks(sorted(values)):
            result = session.execute(
                delete(SourceRecipient)
                .where(
                    SourceRecipient.source_id == source_id,
                    getattr(SourceRecipient, name).in_(chunk),
                )
                .execution_options(synchronize_session=False)
            )
            removed += int(getattr(result, "rowcount", 0) or 0)
    if removed:
        source.updated_at = utcnow()
    session.flush()
    return removed
