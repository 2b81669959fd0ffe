"""Tracking rules on the OLTP store: the sends hits belong to, the events they become,
and the writes some hits cause (unsubscribe, forward to a friend).

A send is a spool row (its id is in every token). Its events carry the dimensions of
every message event (`spool.building.Dimensions`) plus the router, and then what
the hit adds (`tracking.enrichment`, the link, the goal ...).

`unsubscribe` is also the inbound listener's entry point for mail to the `mailto:`
address of `List-Unsubscribe`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.categories.models import Category
from envoi.core.campaign_states import State
from envoi.delivery.render import Recipient, RenderError
from envoi.emails.models import Email
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Profile, Subscription
from envoi.profiles.services import is_subscribed
from envoi.quarantine import services as quarantine
from envoi.spool.building import Dimensions
from envoi.spool.bulk import OUTBOX, SPOOL, bulk_insert, execute, id_in, ids_parameter
from envoi.spool.bulk import result_converter as converter
from envoi.spool.checks import QUARANTINED, QUEUED, Candidate, Policy, check_batch
from envoi.spool.models import SpoolEntry
from envoi.tracking.enrichment import NO_VISITOR
from envoi.tracking.messages import Messages

MAX_FORWARDS = 5  # forwards to friends one send may make
# Quarantine reasons that already keep marketing mail from an address: unsubscribing
# it again changes nothing (and must not weaken a complaint or an erasure).
_UNSUBSCRIBED_ALREADY = frozenset({"unsubscribed", "spam", "gdpr"})


@dataclass(frozen=True, slots=True)
class Send:
    """A spool row as the tracking events need it."""

    id: int
    project_id: int
    campaign_id: int | None
    email_id: int
    profile_id: int | None
    recipient: str | None
    domain: str | None
    router: str | None
    language: str | None
    state: str
    updated_at: datetime | None
    dimensions: Dimensions
    # A single send's tracking switches (`sends`): a hit on what was not tracked is
    # answered (the pixel, the redirect) but not recorded (seed 004).
    track_opens: bool = True
    track_clicks: bool = True

    def data(self) -> dict[str, Any]:
        """The dimensions every event of this send carries (a new dict)."""
        data = self.dimensions.data(self.email_id, self.domain, self.language, self.id)
        data["router"] = self.router
        return data

    def event(self, kind: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
        """An outbox row (`spool.bulk.bulk_insert`'s shape)."""
        return {
            "project_id": self.project_id,
            "kind": kind,
            "occurred_at": at,
            "campaign_id": self.campaign_id,
            "email_id": self.email_id,
            "profile_id": self.profile_id,
            "recipient": self.recipient,
            "data": data,
        }

    def seconds_after_delivery(self, at: datetime) -> float | None:
        """How long after its delivery `at` is; None when the send is not delivered
        (its `updated_at` is the delivery time once it is: nothing updates it since)."""
        if self.state != "delivered" or self.updated_at is None:
            return None
        return max(0.0, (at - self.updated_at).total_seconds())


_NO_CAMPAIGN = Dimensions.of(None)
_SEND_COLUMNS = (
    "id, project_id, campaign_id, email_id, profile_id, recipient, domain, router, language, "
    "state, updated_at, track_opens, track_clicks"
)
_SQL: dict[str, str] = {}


def _send_sql(dialect: Dialect) -> str:
    """One statement for a batch of sends, with their campaigns' dimensions (SQL text:
    the recorder runs it for every batch, see `spool.bulk`)."""
    sql = _SQL.get(dialect.name)
    if sql is None:
        columns = ", ".join(f"s.{name.strip()}" for name in _SEND_COLUMNS.split(","))
        sql = _SQL[dialect.name] = (
            f"SELECT {columns}, c.post_type, c.message_type, c.tags "  # noqa: S608
            f"FROM {SpoolEntry.__tablename__} s "
            f"LEFT JOIN {Campaign.__tablename__} c ON c.id = s.campaign_id "
            f"WHERE {id_in(dialect, 's.id')}"
        )
    return sql


class SendLoader:
    """Sends by id, one statement a batch; each campaign's `Dimensions` made once (and
    again when its type or tags change)."""

    def __init__(self) -> None:
        self._dimensions: dict[tuple[Any, ...], Dimensions] = {}

    def load(self, session: Session, ids: list[int]) -> dict[int, Send]:
        if not ids:
            return {}
        dialect = session.get_bind().dialect
        updated_at = converter(dialect, SPOOL, "updated_at")
        sends = {}
        parameters = {"ids": ids_parameter(dialect, ids)}
        for row in execute(session, _send_sql(dialect), parameters):
            (send_id, project_id, campaign_id, email_id, profile_id, recipient, domain) = row[:7]
            router, language, state, updated, opens, clicks = row[7:13]
            post_type, message_type, tags = row[13:]
            sends[send_id] = Send(
                send_id,
                project_id,
                campaign_id,
                email_id,
                profile_id,
                recipient,
                domain,
                router,
                language,
                state,
                updated_at(updated),
                self._of(campaign_id, post_type, message_type, tags),
                bool(opens),  # SQLite's 0 / 1
                bool(clicks),
            )
        return sends

    def _of(
        self, campaign_id: int | None, post_type: str | None, message_type: str | None, tags: Any
    ) -> Dimensions:
        if campaign_id is None or post_type is None or message_type is None:
            return _NO_CAMPAIGN  # outside campaigns, or the campaign is gone
        key = (campaign_id, post_type, message_type, tags)
        dimensions = self._dimensions.get(key)
        if dimensions is None:
            if len(self._dimensions) > 10_000:
                self._dimensions.clear()
            dimensions = Dimensions.named(campaign_id, post_type, message_type, tags)
            self._dimensions[key] = dimensions
        return dimensions


def load_send(session: Session, send_id: int) -> Send | None:
    return SendLoader().load(session, [send_id]).get(send_id)


# -- unsubscribe --------------------------------------------------------------------------


def unsubscribe(session: Session, send_id: int, method: str, now: datetime) -> bool:
    """Unsubscribe the recipient of send `send_id` (see `unsubscribe_send`); whether an
    `unsubscribe` event was recorded: False when the send is gone or its recipient was
    unsubscribed already. The inbound listener calls this for mail to the `mailto:`
    address of `List-Unsubscribe` (method "mailto")."""
    send = load_send(session, send_id)
    if send is None:
        return False
    return unsubscribe_send(session, send, method, now, NO_VISITOR)


def unsubscribe_send(
    session: Session, send: Send, method: str, now: datetime, visitor: dict[str, Any]
) -> bool:
    """Unsubscribe the send's recipient from its email's category: the profile's
    subscription becomes `subscribed=False`; a send without profile puts its address
    in quarantine as `unsubscribed`. Writes the `unsubscribe` event (with `method` and
    the `visitor` fields) only when that changed something; whether it did."""
    category_id = session.scalar(select(Email.category_id).where(Email.id == send.email_id))
    if send.profile_id is not None and category_id is not None:
        changed = unsubscribe_profile(session, send.profile_id, category_id, now)
    else:
        changed = _quarantine_unsubscribed(session, send, method, now)
    if changed:
        data = send.data() | visitor | {"machine": None, "method": method}
        bulk_insert(session, OUTBOX, [send.event("unsubscribe", now, data)])
    return changed


def unsubscribe_profile(session: Session, profile_id: int, category_id: int, now: datetime) -> bool:
    """Record `subscribed=False`; whether the profile was subscribed until now. One
    atomic statement (an upsert whose update applies only to a subscribed row), so two
    unsubscribes at once record one event."""
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Subscription).values(
        profile_id=profile_id, category_id=category_id, subscribed=False, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["profile_id", "category_id"],
        set_={"subscribed": False, "updated_at": now},
        where=Subscription.subscribed.is_(True),
    )
    return session.scalar(statement.returning(Subscription.profile_id)) is not None


def _quarantine_unsubscribed(session: Session, send: Send, method: str, now: datetime) -> bool:
    address = send.recipient
    if not address:
        return False
    found = quarantine.quarantined(session, send.project_id, [address], now)
    if found.get(address) in _UNSUBSCRIBED_ALREADY:
        return False
    note = f"unsubscribed ({method}) from send {send.id}"
    quarantine.add(session, send.project_id, address, "unsubscribed", note=note, now=now)
    return True


@dataclass(frozen=True)
class UnsubscribeState:
    """What the unsubscribe page says: the category's title (in the send's language
    when the category has it) and whether the recipient is unsubscribed already."""

    category: str | None
    unsubscribed: bool


def unsubscribe_state(session: Session, send: Send, now: datetime) -> UnsubscribeState:
    row = session.execute(
        select(Category.id, Category.title, Category.translations)
        .join(Email, Email.category_id == Category.id)
        .where(Email.id == send.email_id)
    ).first()
    if row is None:
        return UnsubscribeState(None, unsubscribed=False)
    translations = row.translations or {}
    title = translations.get(f"title_{send.language}") if send.language else None
    if send.profile_id is not None:
        unsubscribed = not is_subscribed(session, send.profile_id, row.id)
    else:
        found = quarantine.quarantined(session, send.project_id, [send.recipient or ""], now)
        unsubscribed = found.get(send.recipient or "") in _UNSUBSCRIBED_ALREADY
    return UnsubscribeState(title or row.title, unsubscribed)


# -- forward to a friend ------------------------------------------------------------------


class Forwarded(enum.Enum):
    SENT = "sent"  # a spool row for the friend, and a `forward` event
    SKIPPED = "skipped"  # the friend's address is quarantined: nothing (answered as SENT)
    INVALID = "invalid"  # no valid address
    LIMITED = "limited"  # the send was forwarded MAX_FORWARDS times already


def forwards_of(session: Session, send: Send) -> int:
    """How many times the send was forwarded: its `forward` events. The query walks
    `ix_outbox_profile_kind` (profile, kind, campaign), so it reads only the campaign's
    forward events (those of its recipients without profile, or of this profile)."""
    query = select(OutboxEvent.data).where(
        OutboxEvent.kind == "forward",
        OutboxEvent.project_id == send.project_id,
        OutboxEvent.recipient == send.recipient,
    )
    query = query.where(
        OutboxEvent.profile_id.is_(None)
        if send.profile_id is None
        else OutboxEvent.profile_id == send.profile_id,
        OutboxEvent.campaign_id.is_(None)
        if send.campaign_id is None
        else OutboxEvent.campaign_id == send.campaign_id,
    )
    return sum(1 for data in session.scalars(query) if (data or {}).get("send_id") == send.id)


def forward(
    session: Session,
    send: Send,
    friend: str,
    *,
    name: str | None,
    now: datetime,
    visitor: dict[str, Any],
) -> Forwarded:
    """Send the message of `send` to `friend`: a new spool row (same project, campaign,
    email, language and parameters, no profile, queued now) with its `queued` event,
    and the `forward` event of `send` (the friend's domain, never the address).
    The friend's address goes through the spool's own checks (syntax, GDPR erasure,
    quarantine: `spool.checks`), as a recipient of the campaign would."""
    if forwards_of(session, send) >= MAX_FORWARDS:
        return Forwarded.LIMITED
    original = session.execute(
        select(SpoolEntry.params, SpoolEntry.priority, Email.category_id)
        .join(Email, Email.id == SpoolEntry.email_id)
        .where(SpoolEntry.id == send.id)
    ).first()
    if original is None:
        return Forwarded.INVALID  # the email is gone: nothing to send
    candidate = Candidate(friend, None, original.category_id, urgent=False)
    policy = Policy(check_sent_quarantine=False)
    [verdict] = check_batch(session, send.project_id, [candidate], policy, now)
    if verdict.state == QUARANTINED:
        return Forwarded.SKIPPED
    if verdict.state != QUEUED or verdict.address is None:
        return Forwarded.INVALID
    params = dict(original.params or {})
    if name:
        params["friend_name"] = name
    [friend_id] = bulk_insert(
        session,
        SPOOL,
        [
            {
                "project_id": send.project_id,
                "campaign_id": send.campaign_id,
                "email_id": send.email_id,
                "profile_id": None,
                "recipient": verdict.address,
                "domain": verdict.domain,
                "params": params,
                "priority": original.priority,
                "state": "queued",
                "reason": None,
                "not_before": now,
                "attempts": 0,
                "first_attempt_at": None,
                "lease_owner": None,
                "lease_until": None,
                "uncertain": False,
                "router": None,
                "language": send.language,
                "smtp_code": None,
                "smtp_status": None,
                "smtp_text": None,
                "updated_at": now,
            }
        ],
        return_ids=True,
    )
    queued = send.dimensions.data(send.email_id, verdict.domain, send.language, friend_id)
    queued["forwarded_from"] = send.id
    forwarded = send.data() | visitor | {"machine": None, "friend_domain": verdict.domain}
    friend_event = send.event("queued", now, queued) | {
        "profile_id": None,
        "recipient": verdict.address,
    }
    bulk_insert(session, OUTBOX, [friend_event, send.event("forward", now, forwarded)])
    _reopen(session, send.campaign_id)
    return Forwarded.SENT


def _reopen(session: Session, campaign_id: int | None) -> None:
    """A finished campaign runs again until the friend's copy is sent: workers claim
    the rows of running campaigns only (`spool.leasing`), and `finish_campaigns`
    finishes it again once no row is pending. A paused or stopped campaign keeps its
    state: the copy waits for it, as its other recipients do."""
    if campaign_id is None:
        return
    session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.state == State.FINISHED.value)
        .values(state=State.RUNNING.value)
    )


# -- web view -----------------------------------------------------------------------------


def web_view(session: Session, send: Send, messages: Messages) -> str | None:
    """The send's message as its recipient got it (their profile and the row's
    parameters), as HTML; None when it cannot be shown any more (the email is gone,
    or its template fails on this data now)."""
    compiled = messages.get(session, send.project_id, send.email_id, send.language)
    if compiled is None:
        return None
    params = session.scalar(select(SpoolEntry.params).where(SpoolEntry.id == send.id)) or {}
    profile: dict[str, Any] = {}
    if send.profile_id is not None:
        row = session.execute(
            select(
                Profile.uid, Profile.email, Profile.phone, Profile.language, Profile.fields
            ).where(Profile.id == send.profile_id)
        ).first()
        if row is not None:
            # What the delivery worker gives the templates (`delivery.preparing`).
            profile = {
                **(row.fields or {}),
                "uid": row.uid,
                "email": row.email,
                "phone": row.phone,
                "language": row.language,
            }
    try:
        return compiled.web_view(Recipient(send.id, send.recipient or "", profile, params))
    except RenderError:
        return None
