"""Quarantined addresses: who must not be mailed, why, and until when.

Entries come from bounces (`nonexistent`; `inactive` after repeated soft bounces of a
full or suspended mailbox), complaints (`spam`), unsubscribes, GDPR erasure, syntax
checks and people (`manual`, through the API). An address has at most one entry per
project; adding it again keeps the stronger reason (a complaint outranks a bounce, see
`STRENGTH`), and among equals the newer one, so an entry only ever hardens until it is
removed or expires.

That rule is written once, in SQL (`stronger_reason_update`): the SET clause of an
`INSERT ... ON CONFLICT (project_id, address) DO UPDATE`, which both back-ends run
atomically, so concurrent adds of one address never conflict. `upsert` uses it for
one address, the spool for a batch of bounces. `active` is the one definition of an
entry that still holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, null, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnClause

from envoi.core.errors import Invalid, NotFound
from envoi.core.identity import IdentityError, normalize_email
from envoi.db.base import utcnow
from envoi.profiles.batching import chunks
from envoi.quarantine.models import REASONS, QuarantineEntry

# Higher wins when an address is quarantined again for another reason. A legal erasure
# and a complaint are the strongest; a person's manual entry is the weakest claim.
# `inactive` (a mailbox full or suspended for days) is weaker than `nonexistent` (it
# may come back), stronger than a syntax verdict or a manual note.
STRENGTH = {
    "gdpr": 7,
    "spam": 6,
    "unsubscribed": 5,
    "nonexistent": 4,
    "inactive": 3,
    "invalid": 2,
    "manual": 1,
}
assert set(STRENGTH) == set(REASONS)  # noqa: S101 - the table must name every reason


def normalize_address(address: str, loc: tuple[str | int, ...] = ("body", "address")) -> str:
    """The address as entries store it (syntax checked, lower-cased); Invalid otherwise."""
    try:
        return normalize_email(address)
    except IdentityError as exc:
        raise Invalid(str(exc), loc) from None


def is_active(entry: QuarantineEntry, now: datetime) -> bool:
    return entry.expires_at is None or entry.expires_at > now


def active(now: datetime) -> ColumnElement[bool]:
    """SQL: the entry still holds at `now` (`is_active`)."""
    return or_(QuarantineEntry.expires_at.is_(None), QuarantineEntry.expires_at > now)


def _strength(reason: ColumnElement[Any] | ColumnClause[Any]) -> ColumnElement[int]:
    return case(STRENGTH, value=reason, else_=0)


def stronger_reason_update(excluded: Any, now: datetime) -> dict[str, ColumnElement[Any]]:
    """The SET clause, for `insert(QuarantineEntry).on_conflict_do_update(index_elements=
    ["project_id", "address"], set_=...)` on either back-end, that keeps the rule: the
    new row replaces the entry when the entry has expired or the new reason is as
    strong or stronger; otherwise the entry stays and only its expiry extends to the
    later one (None, never, being the latest). `excluded` is the statement's
    `.excluded`."""
    table = QuarantineEntry.__table__.c
    replaced = or_(table.expires_at <= now, _strength(excluded.reason) >= _strength(table.reason))
    never = or_(table.expires_at.is_(None), excluded.expires_at.is_(None))
    return {
        "reason": case((replaced, excluded.reason), else_=table.reason),
        "note": case((replaced, excluded.note), else_=table.note),
        "created_at": case((replaced, excluded.created_at), else_=table.created_at),
        "expires_at": case(
            (replaced, excluded.expires_at),
            (never, null()),
            (excluded.expires_at > table.expires_at, excluded.expires_at),
            else_=table.expires_at,
        ),
    }


def quarantined(
    session: Session, project_id: int, addresses: Iterable[str], now: datetime
) -> dict[str, str]:
    """address -> reason for the given (normalised) addresses under an unexpired entry.

    One query per batch of addresses (chunked only to respect bind-parameter limits).
    """
    found: dict[str, str] = {}
    for chunk in chunks(sorted(set(addresses))):
        query = select(QuarantineEntry.address, QuarantineEntry.reason).where(
            QuarantineEntry.project_id == project_id,
            QuarantineEntry.address.in_(chunk),
            active(now),
        )
        found.update((address, reason) for address, reason in session.execute(query))
    return found


def add(  # noqa: PLR0917 - the shared contract lets callers pass these in order
    session: Session,
    project_id: int,
    address: str,
    reason: str,
    note: str | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> QuarantineEntry:
    """Quarantine `address` (upsert keeping the stronger, then the newer, reason)."""
    entry, _ = upsert(
        session, project_id, address, reason, note=note, expires_at=expires_at, now=now
    )
    return entry


def upsert(
    session: Session,
    project_id: int,
    address: str,
    reason: str,
    *,
    note: str | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[QuarantineEntry, bool]:
    """`add`, also telling whether the entry is new.

    Two statements, each atomic: an insert that does nothing when the address has an
    entry (so a new one is told apart), then the upsert applying the rule.
    """
    if reason not in STRENGTH:
        raise Invalid(f"reason must be one of {', '.join(REASONS)}", ("body", "reason"))
    now = now or utcnow()
    row = {
        "project_id": project_id,
        "address": normalize_address(address),
        "reason": reason,
        "note": note,
        "created_at": now,
        "expires_at": None if expires_at is None else expires_at.astimezone(UTC),
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    keys = ["project_id", "address"]
    fresh = insert(QuarantineEntry).values(row).on_conflict_do_nothing(index_elements=keys)
    entry_id = session.scalar(fresh.returning(QuarantineEntry.id))
    created = entry_id is not None
    if not created:
        statement = insert(QuarantineEntry).values(row)
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_=stronger_reason_update(statement.excluded, now)
        )
        entry_id = session.scalar(statement.returning(QuarantineEntry.id))
    query = select(QuarantineEntry).where(QuarantineEntry.id == entry_id)
    entry = session.scalars(query.execution_options(populate_existing=True)).one()
    return entry, created


def list_entries(
    session: Session,
    project_id: int,
    *,
    limit: int,
    after: int = 0,
    reason: str | None = None,
    address: str | None = None,
) -> list[QuarantineEntry]:
    """A page in id order (oldest first); pass the last id received as `after`."""
    query = select(QuarantineEntry).where(
        QuarantineEntry.project_id == project_id, QuarantineEntry.id > after
    )
    if reason is not None:
        query = query.where(QuarantineEntry.reason == reason)
    if address is not None:
        normalized = normalize_address(address, ("query", "address"))
        query = query.where(QuarantineEntry.address == normalized)
    return list(session.scalars(query.order_by(QuarantineEntry.id).limit(limit)))


def remove(session: Session, project_id: int, address: str) -> None:
    """Lift the quarantine of `address`; NotFound if it has no entry (or is no address)."""
    try:
        normalized = normalize_address(address)
    except Invalid:
        raise NotFound(f"{address} is not quarantined") from None
    entry = session.scalar(
        select(QuarantineEntry).where(
            QuarantineEntry.project_id == project_id, QuarantineEntry.address == normalized
        )
    )
    if entry is None:
        raise NotFound(f"{address} is not quarantined")
    session.delete(entry)
    session.flush()
