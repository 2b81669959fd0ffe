"""GDPR erasure: a profile is deleted and its identifiers are kept only as hashes.

`erase_profile` deletes the profile (the database cascades its subscriptions, API
events and segment memberships), strips it from the event outbox, deletes the
campaign audience rows and API-source recipients that name the person, takes it out
of the spool (a pending row becomes `quarantined` with reason `gdpr`, every row loses
the address), and stores one `Erasure` row per identifier it had, so delivery can
refuse to mail it again (`is_erased`). In the same transaction it appends an
`erasure` outbox event (`eventstore.mapping.ERASURE_KIND`: the profile id, the
identifiers' hashes and the ids of the person's spool rows, never an identifier in
clear), which the projector hands to the event store: the person's events there lose
their recipient and profile too (`eventstore.duckdb`).
A later explicit users upsert naming an erased identifier means the customer
registered the person again: it lifts that erasure (`lift_erasures`). Nothing else
brings an erased person back: an event naming one is refused (`refuse_erased`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from envoi.campaigns.models import AudienceMember, Campaign
from envoi.core.errors import Conflict
from envoi.core.identity import IDENTIFIERS, Identity, erasure_hash
from envoi.eventstore.mapping import ERASURE_KIND
from envoi.outbox.models import OutboxEvent
from envoi.profiles.batching import chunks
from envoi.profiles.models import Erasure, Profile
from envoi.sources.models import Source, SourceRecipient
from envoi.spool.models import SpoolEntry


class Erased(Conflict):
    """An identifier of a GDPR-erased person, where only a users upsert may name one."""


def identifiers_of(profile: Profile) -> list[tuple[str, str]]:
    return [(name, v) for name in IDENTIFIERS if (v := getattr(profile, name)) is not None]


def erase_profile(session: Session, project_id: int, profile: Profile) -> None:
    pairs = identifiers_of(profile)
    hashes = {erasure_hash(name, value) for name, value in pairs}
    _forget_in_outbox(session, project_id, profile.id, pairs)
    _forget_in_audiences(session, project_id, profile.id, pairs)
    # Found before the spool forgets who they were sent to.
    send_ids = _sends_of(session, project_id, profile.id, pairs)
    _forget_in_spool(session, project_id, profile.id, pairs)
    _forget_in_sources(session, project_id, pairs)
    session.add(
        OutboxEvent(
            project_id=project_id,
            kind=ERASURE_KIND,
            occurred_at=datetime.now(UTC),
            profile_id=None,
            recipient=None,
            data={"profile_id": profile.id, "hashes": sorted(hashes), "send_ids": send_ids},
        )
    )
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


def _forget_in_audiences(
    session: Session, project_id: int, profile_id: int, pairs: Sequence[tuple[str, str]]
) -> None:
    # Audience rows of the project's campaigns linked to the profile, keyed by one of
    # its identifiers (`email:ann@example.com`), or carrying its address.
    keys = [f"{name}:{value}" for name, value in pairs]
    emails = [value for name, value in pairs if name == "email"]
    campaigns = select(Campaign.id).where(Campaign.project_id == project_id)
    statement = (
        delete(AudienceMember)
        .where(
            AudienceMember.campaign_id.in_(campaigns),
            or_(
                AudienceMember.profile_id == profile_id,
                AudienceMember.recipient_key.in_(keys),
                AudienceMember.email.in_(emails),
            ),
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(statement)


def _spool_rows_of(
    project_id: int, profile_id: int, pairs: Sequence[tuple[str, str]]
) -> ColumnElement[bool]:
    """The spool rows that were the person's: linked to the profile, or to its address."""
    emails = [value for name, value in pairs if name == "email"]
    return and_(
        SpoolEntry.project_id == project_id,
        or_(SpoolEntry.profile_id == profile_id, SpoolEntry.recipient.in_(emails)),
    )


def _sends_of(
    session: Session, project_id: int, profile_id: int, pairs: Sequence[tuple[str, str]]
) -> list[int]:
    """The ids of the person's spool rows: the `send_id` of their events."""
    query = select(SpoolEntry.id).where(_spool_rows_of(project_id, profile_id, pairs))
    return sorted(session.scalars(query))


def _forget_in_spool(
    session: Session, project_id: int, profile_id: int, pairs: Sequence[tuple[str, str]]
) -> None:
    # Rows not yet handed to SMTP are stopped (`leased` ones too: the worker's record
    # only touches rows still leased or sending by it); rows in flight or done keep
    # their state for statistics. None keeps the address or the parameters.
    theirs = _spool_rows_of(project_id, profile_id, pairs)
    session.execute(
        update(SpoolEntry)
        .where(theirs, SpoolEntry.state.in_(("queued", "leased", "deferred")))
        .values(state="quarantined", reason="gdpr", lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(SpoolEntry)
        .where(theirs)
        .values(recipient=None, profile_id=None, params={})
        .execution_options(synchronize_session=False)
    )


def _forget_in_sources(session: Session, project_id: int, pairs: Sequence[tuple[str, str]]) -> None:
    # Recipients of the project's API sources named by any identifier of the person.
    sources = select(Source.id).where(Source.project_id == project_id)
    statement = (
        delete(SourceRecipient)
        .where(
            SourceRecipient.source_id.in_(sources),
            or_(*(getattr(SourceRecipient, name) == value for name, value in pairs)),
        )
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


def refuse_erased(session: Session, project_id: int, identity: Identity) -> None:
    """Raise Erased (a 409) if an identifier of `identity` names an erased person."""
    hashes = {erasure_hash(name, value): (name, value) for name, value in identity.items()}
    query = select(Erasure.identifier_hash).where(
        Erasure.project_id == project_id, Erasure.identifier_hash.in_(sorted(hashes))
    )
    erased = session.scalar(query.limit(1))
    if erased is not None:
        name, value = hashes[erased]
        raise Erased(
            f"{name}={value} names a person erased at the project's request (GDPR);"
            " only a users upsert registers them again"
        )


def is_erased(session: Session, project_id: int, name: str, value: str) -> bool:
    """Whether `name=value` (normalised) was erased and not registered again since."""
    query = select(Erasure.id).where(
        Erasure.project_id == project_id, Erasure.identifier_hash == erasure_hash(name, value)
    )
    return session.scalar(query.limit(1)) is not None
