"""Single sends: one message to one recipient now (post type P), a campaign's test (T).

`send` checks the request whole, then writes in the caller's transaction: the spool
row of the message in its stream (`sends.streams`), its `queued` (or `blocked` /
`quarantined`) outbox event with the stream's dimensions, and the idempotency key
with the answer. The delivery worker sends it after the commit, like a campaign's
row: nothing is sent from the request. A recipient is an address (`email`, with its
profile when the project has one by that address) or a profile (`uid`, mailed at its
address); the message is an email of the project (`message_id`) or inline content
(`sends.contents`). The sending-policy checks are the spool's (`spool.checks`), for
a transactional email (inline content is one) the hard ones only.

`send_tests` mails a campaign's email to a few addresses (a transactional copy, see
`sends.contents`), in the campaign's T stream, with the chosen profile's data as the
template's. The rows name no profile (an unsubscribe from a test must not touch the
profile whose data it showed) but a parameter does (`streams.CHOSEN_PROFILE`): the
worker reads the profile as it sends, no copy of its data is kept.

`read_send`: a send's row and its events: those projected into the event store
(by `send_id`), and those of the outbox the projector has not moved yet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from envoi.campaigns.models import Campaign
from envoi.campaigns.services import get_campaign
from envoi.core.errors import Invalid, NotFound
from envoi.core.identity import IdentityError, normalize_email
from envoi.db.base import as_utc
from envoi.db.lookup import get_owned
from envoi.emails.models import Email
from envoi.eventstore.interfaces import EventStore
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Profile
from envoi.profiles.services import find_profile, get_profile, identity_from
from envoi.sends import contents, streams
from envoi.sends.models import IdempotencyKey
from envoi.sends.streams import Tracking
from envoi.spool.building import Dimensions
from envoi.spool.checks import QUEUED, Candidate, Policy, check_batch
from envoi.spool.models import SpoolEntry

# Dimensions a send's event shows besides its kind and time: the event store's columns
# of the same names, or the outbox event's data keys.
EVENT_DETAILS = (
    "router",
    "smtp_code",
    "smtp_status",
    "reason",
    "bounce_class",
    "link",
    "url",
    "machine",
    "client",
    "device",
    "country_code",
)
# The single sends' own policy: no sent quarantine (a receipt is due now).
POLICY = Policy(check_sent_quarantine=False)


@dataclass(frozen=True)
class SendSpec:
    """A checked `POST /api/v1/send` body, as plain values."""

    email: str | None = None
    uid: str | None = None
    message_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    from_address: str | None = None
    subject: str | None = None
    text_html: str | None = None
    text_plain: str | None = None
    category: int | None = None
    tags: tuple[str, ...] = ()
    tracking: Tracking = streams.ALWAYS
    idempotency_key: str | None = None

    def digest(self) -> str:
        """SHA-256 of what the request asks, without its key: a retry has the same."""
        document = {
            "email": self.email,
            "uid": self.uid,
            "message_id": self.message_id,
            "params": self.params,
            "from_address": self.from_address,
            "subject": self.subject,
            "text_html": self.text_html,
            "text_plain": self.text_plain,
            "category": self.category,
            "tags": list(self.tags),
            "track_opens": self.tracking.opens,
            "track_clicks": self.tracking.clicks,
        }
        text = json.dumps(document, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def inline(self) -> bool:
        return any(
            value is not None
            for value in (self.from_address, self.subject, self.text_html, self.text_plain)
        )


@dataclass(frozen=True)
class CampaignTestSpec:
    """A checked `POST /api/v1/campaigns/{id}/test` body."""

    emails: tuple[str, ...]
    profile: int | dict[str, object] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    message_id: int | None = None


@dataclass(frozen=True)
class Sent:
    answer: dict[str, Any]
    created: bool  # False: a retry of a request with the same idempotency key


@dataclass(frozen=True)
class _Recipient:
    address: str
    profile: Profile | None


# -- POST /api/v1/send ----------------------------------------------------------------------


def send(
    session: Session, project_id: int, spec: SendSpec, *, public_url: str, now: datetime
) -> Sent:
    """Queue one message (see the module's docstring); the answer, or the first
    answer again for a retry of a request with the same `idempotency_key`. Invalid
    (422) when the key came with another request."""
    _check_shape(spec)
    if spec.idempotency_key is not None:
        remembered = _remembered(session, project_id, spec.idempotency_key, spec.digest())
        if remembered is not None:
            return Sent(remembered, created=False)
    recipient = _recipient(session, project_id, spec)
    email = _email(session, project_id, spec, public_url)
    stream = streams.send_stream(session, project_id, email.id, spec.tags, spec.tracking, now=now)
    profile = recipient.profile
    row = _spool(
        session,
        stream,
        email,
        recipient.address,
        profile_id=profile.id if profile is not None else None,
        identifiers=(("uid", profile.uid),) if profile is not None and profile.uid else (),
        params=dict(spec.params),
        language=profile.language if profile is not None else None,
        tracking=spec.tracking,
        now=now,
    )
    answer = send_answer(row, stream)
    if spec.idempotency_key is not None:
        _remember(session, project_id, spec.idempotency_key, row.id, answer)
    return Sent(answer, created=True)


def _check_shape(spec: SendSpec) -> None:
    """The rules between fields: a recipient, and one kind of content."""
    if spec.email is None and spec.uid is None:
        raise Invalid("email or uid is required", loc=("body", "email"))
    if spec.message_id is not None and spec.inline:
        raise Invalid(
            "give message_id or inline content (from_address, subject, text_html, "
            "text_plain), not both",
            loc=("body", "message_id"),
        )
    if spec.message_id is None and not spec.inline:
        raise Invalid(
            "message_id or inline content (from_address and text_html or text_plain) is required",
            loc=("body", "message_id"),
        )
    if spec.inline:
        if not spec.from_address:
            raise Invalid("from_address is required with inline content", ("body", "from_address"))
        if spec.text_html is None and spec.text_plain is None:
            raise Invalid("text_html or text_plain is required", loc=("body", "text_html"))
    elif spec.category is not None:
        raise Invalid("category goes with inline content only", loc=("body", "category"))


def _recipient(session: Session, project_id: int, spec: SendSpec) -> _Recipient:
    """The address to mail and its profile: `uid`'s (404 when the project has none),
    else the profile with the address `email`, if any."""
    address = _address(spec.email, ("body", "email")) if spec.email is not None else None
    if spec.uid is not None:
        identity = identity_from({"uid": spec.uid}, ("body",))
        named = get_profile(session, project_id, identity)
        if address is None:
            if not named.email:
                raise Invalid(f"user uid={spec.uid} has no email address", ("body", "uid"))
            address = named.email
        return _Recipient(address, named)
    if address is None:  # `_check_shape` saw to it
        raise Invalid("email or uid is required", loc=("body", "email"))
    profile = find_profile(session, project_id, identity_from({"email": address}, ("body",)))
    return _Recipient(address, profile)


def _address(value: str, loc: tuple[str | int, ...]) -> str:
    try:
        return normalize_email(value)
    except IdentityError as exc:
        raise Invalid(str(exc), loc=loc) from None


def _email(session: Session, project_id: int, spec: SendSpec, public_url: str) -> Email:
    if spec.message_id is not None:
        try:
            return get_owned(session, Email, project_id, spec.message_id, "email")
        except NotFound as exc:
            raise Invalid(exc.message, loc=("body", "message_id")) from None
    inline = contents.InlineContent(
        from_address=spec.from_address or "",
        subject=spec.subject,
        text_html=spec.text_html,
        text_plain=spec.text_plain,
        category_id=spec.category,
    )
    return contents.inline_email(session, project_id, inline, public_url=public_url)


def _remembered(session: Session, project_id: int, key: str, digest: str) -> dict[str, Any] | None:
    """The answer given to the first request with `key`, or None for a new key (now
    claimed by this transaction: a concurrent request with the same key waits for it,
    on PostgreSQL, then gets its answer)."""
    for _ in range(2):
        found = session.get(IdempotencyKey, (project_id, key))
        if found is None:
            try:
                with session.begin_nested():
                    claim = IdempotencyKey(
                        project_id=project_id, key=key, request_hash=digest, send_id=0, answer={}
                    )
                    session.add(claim)
                    session.flush()
            except IntegrityError:
                continue  # the same key, committed meanwhile: its answer
            return None
        if found.request_hash != digest:
            raise Invalid(
                "idempotency_key was used with another request: a retry must repeat the "
                "request exactly, a new request needs a new key",
                loc=("body", "idempotency_key"),
            )
        return dict(found.answer)
    raise Invalid("idempotency_key is in use by a concurrent request", ("body", "idempotency_key"))


def _remember(
    session: Session, project_id: int, key: str, send_id: int, answer: dict[str, Any]
) -> None:
    claim = session.get(IdempotencyKey, (project_id, key))
    if claim is None:  # claimed by `_remembered`, in this transaction
        raise RuntimeError(f"idempotency key {key!r} is not claimed")
    claim.send_id = send_id
    claim.answer = answer
    session.flush()


# -- POST /api/v1/campaigns/{id}/test -------------------------------------------------------


def send_tests(
    session: Session,
    project_id: int,
    post_type: str,
    campaign_id: int,
    spec: CampaignTestSpec,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Queue the campaign's email (or the A/B variant `message_id`) to each address."""
    campaign = get_campaign(session, project_id, post_type, campaign_id)
    variants = [campaign.message_id, *campaign.ab_message_ids]
    email_id = spec.message_id or campaign.message_id
    if email_id not in variants:
        raise Invalid(
            f"email {email_id} is not one of the campaign's variants {variants}",
            loc=("body", "message_id"),
        )
    addresses = list(
        dict.fromkeys(
            _address(raw, ("body", "emails", index)) for index, raw in enumerate(spec.emails)
        )
    )
    shown = _chosen(session, project_id, spec.profile)
    params = spec.params | {streams.CHOSEN_PROFILE: shown.id if shown is not None else None}
    original = get_owned(
        session, Email, project_id, email_id, "email", options=(selectinload(Email.contents),)
    )
    copy = contents.copy_for_tests(session, original)
    stream = streams.tests_stream(session, project_id, campaign.id, copy.id, now=now)
    language = shown.language if shown is not None else None
    rows = [
        _spool(
            session,
            stream,
            copy,
            address,
            profile_id=None,
            identifiers=(),
            params=params,
            language=language,
            tracking=streams.ALWAYS,
            now=now,
        )
        for address in addresses
    ]
    return {"campaign_id": campaign.id, "sends": [send_answer(row, stream) for row in rows]}


def _chosen(
    session: Session, project_id: int, chosen: int | dict[str, object] | None
) -> Profile | None:
    """The profile whose data the test shows: by id (422 if the project has none such)
    or by an identifier (404)."""
    if chosen is None:
        return None
    if isinstance(chosen, int):
        try:
            return get_owned(session, Profile, project_id, chosen, "user")
        except NotFound as exc:
            raise Invalid(exc.message, loc=("body", "profile")) from None
    return get_profile(session, project_id, identity_from(chosen, ("body", "profile")))


# -- the spool row ---------------------------------------------------------------------------


def _spool(
    session: Session,
    stream: Campaign,
    email: Email,
    address: str,
    *,
    profile_id: int | None,
    identifiers: Sequence[tuple[str, str]],
    params: dict[str, Any],
    language: str | None,
    tracking: Tracking,
    now: datetime,
) -> SpoolEntry:
    """The message's spool row in its stream, checked as the spool checks a campaign's
    recipient, with its outbox event; the stream reopened when it is queued."""
    candidate = Candidate(
        address,
        profile_id,
        email.category_id,
        urgent=email.is_urgent,
        identifiers=(("email", address), *identifiers),
    )
    [verdict] = check_batch(session, stream.project_id, [candidate], POLICY, now)
    row = SpoolEntry(
        project_id=stream.project_id,
        campaign_id=stream.id,
        email_id=email.id,
        profile_id=profile_id,
        recipient=verdict.address or address,
        domain=verdict.domain or address.rpartition("@")[2],
        params=params,
        priority=stream.priority,
        state=verdict.state,
        reason=verdict.reason,
        not_before=verdict.not_before or now,
        attempts=0,
        uncertain=False,
        language=language,
        updated_at=now,
        track_opens=tracking.opens,
        track_clicks=tracking.clicks,
    )
    session.add(row)
    session.flush()
    dimensions = Dimensions.named(stream.id, stream.post_type, stream.message_type, stream.tags)
    data = dimensions.data(email.id, row.domain, language, row.id)
    if verdict.reason is not None:
        data["reason"] = verdict.reason
    session.add(
        OutboxEvent(
            project_id=row.project_id,
            kind=verdict.state,  # queued, blocked or quarantined
            occurred_at=now,
            campaign_id=stream.id,
            email_id=email.id,
            profile_id=profile_id,
            recipient=row.recipient,
            data=data,
        )
    )
    if verdict.state == QUEUED:
        streams.reopen(session, stream.id)
    session.flush()
    return row


def send_answer(row: SpoolEntry, campaign: Campaign | None) -> dict[str, Any]:
    """What the API says of a send (a single send's, or any spool row's)."""
    tags = Dimensions.of(campaign).tags
    return {
        "id": row.id,
        "state": row.state,
        "reason": row.reason,
        "email": row.recipient,
        "post": campaign.post if campaign is not None else None,
        "post_type": campaign.post_type if campaign is not None else None,
        "message_id": row.email_id,
        "profile_id": row.profile_id,
        "tags": list(tags),
        "track_opens": row.track_opens,
        "track_clicks": row.track_clicks,
    }


# -- GET /api/v1/send/{id} -------------------------------------------------------------------


def read_send(
    session: Session, project_id: int, send_id: int, store: EventStore | None
) -> dict[str, Any]:
    """The send (any spool row of the project) with its events; `events` None when the
    event store is unavailable."""
    row = session.get(SpoolEntry, send_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"send {send_id} not found")
    campaign = session.get(Campaign, row.campaign_id) if row.campaign_id is not None else None
    view = send_answer(row, campaign)
    view |= {
        "attempts": row.attempts,
        "smtp_code": row.smtp_code,
        "smtp_status": row.smtp_status,
        "smtp_text": row.smtp_text,
        "updated_at": row.updated_at,
        "events": None if store is None else _events(session, store, row),
    }
    return view


def _events(session: Session, store: EventStore, row: SpoolEntry) -> list[dict[str, Any]]:
    """The send's events, oldest first: the store's, then the outbox rows after the
    store's cursor (read first, so that nothing falls between the two reads)."""
    cursor = store.cursor()
    columns = ", ".join(("id", "kind", "occurred_at", *EVENT_DETAILS))
    names, found = store.query(
        f"SELECT {columns} FROM events WHERE project_id = ? AND send_id = ?",  # noqa: S608
        (row.project_id, row.id),
    )
    events: dict[int, dict[str, Any]] = {}
    for values in found:
        event = dict(zip(names, values, strict=True))
        events[event["id"]] = _event(event["id"], event["kind"], event["occurred_at"], event)
    recent = select(OutboxEvent).where(
        OutboxEvent.id > cursor,
        OutboxEvent.project_id == row.project_id,
        OutboxEvent.campaign_id.is_(None)
        if row.campaign_id is None
        else OutboxEvent.campaign_id == row.campaign_id,
    )
    for outbox in session.scalars(recent):
        data = outbox.data or {}
        if data.get("send_id") == row.id and outbox.id not in events:
            events[outbox.id] = _event(outbox.id, outbox.kind, outbox.occurred_at, data)
    return sorted(events.values(), key=lambda e: (_naive(e["occurred_at"]), e["id"]))


def _event(event_id: int, kind: str, at: datetime, details: dict[str, Any]) -> dict[str, Any]:
    data = {name: details[name] for name in EVENT_DETAILS if details.get(name) is not None}
    return {"id": event_id, "kind": kind, "occurred_at": as_utc(at), "data": data}


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None)
