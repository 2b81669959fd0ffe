"""GDPR erasure: a profile is deleted and its identifiers are kept only as hashes.

`erase_profile` deletes the profile (the database cascades its subscriptions, API
events and segment memberships), strips it from the event outbox, and stores one
`Erasure` row per identifier it had, so delivery can refuse to mail it again
(`is_erased`). A later explicit users upsert naming an erased identifier means the
customer registered the person again: it lifts that erasure (`lift_erasures`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from envoi.core.identity import IDENTIFIERS, Identity, erasure_hash
from envoi.outbox.models import OutboxEvent
from envoi.profiles.batching import chunks
from envoi.profiles.models import Erasure, Profile


def identifiers_of(profile: Profile) -> list[tuple[str, str]]:
    return [(name, v) for name in IDENTIFIERS if (v := getattr(profile, name)) is not None]


def erase_profile(session: Session, project_id: int, profile: Profile) -> None:
    pairs = identifiers_of(profile)
    _forget_in_outbox(session, project_id, profile.id, pairs)
    hashes = {erasure_hash(name, value) for name, value in pairs}
    known = set(
        session.scalars(
            select(Erasure.identifier_hash).where(
                Erasure.project_id == project_id, Erasure.identifier_hash.in_(hashes)
            )
        )
    )
    session.add_all(
        Erasure(project_id=project_id, identifier_hash=h) for h in sorted(hashes - known)
    )
    session.delete(profile)
    session.flush()


def _forget_in_outbox(
    session: Session, project_id: int, profile_id: int, pairs: Sequence[tuple[str, str]]
) -> None:
    # Facts stay countable for statistics, but nothing in them names the person:
    # rows linked to the profile, and rows whose recipient is one of its identifiers
    # (bare, or as an `Identity.key` such as `email:ann@example.com`).
    names = [value for _, value in pairs] + [f"{name}:{value}" for name, value in pairs]
    statement = (
        update(OutboxEvent)
        .where(
            OutboxEvent.project_id == project_id,
            or_(OutboxEvent.profile_id == profile_id, OutboxEvent.recipient.in_(names)),
        )
        .values(profile_id=None, recipient=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(statement)


def lift_erasures(session: Session, project_id: int, identities: Iterable[Identity]) -> None:
    """Forget the erasure of every identifier the identities carry (see module doc)."""
    in_project = Erasure.project_id == project_id
    if session.scalar(select(Erasure.id).where(in_project).limit(1)) is None:
        return  # the common case: a project that never erased anyone
    hashes = {erasure_hash(name, value) for i in identities for name, value in i.items()}
    for chunk in chunks(sorted(hashes)):
        session.execute(
            delete(Erasure)
            .where(in_project, Erasure.identifier_hash.in_(chunk))
            .execution_options(synchronize_session=False)
        )


def is_erased(session: Session, project_id: int, name: str, value: str) -> bool:
    """Whether `name=value` (normalised) was erased and not registered again since."""
    query = select(Erasure.id).where(
        Erasure.project_id == project_id, Erasure.identifier_hash == erasure_hash(name, value)
    )
    return session.scalar(query.limit(1)) is not None
