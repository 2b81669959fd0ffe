"""Due firings become spool rows: the scheduler's step for event-driven campaigns.

`fire_due` runs in the active scheduler's tick (`campaigns.scheduler`), a batch of due
`pending` rows per transaction, oldest first (`FOR UPDATE ... SKIP LOCKED` on
PostgreSQL, so two schedulers that both believe they are active take different rows;
SQLite runs writers one after the other). For each row of a running campaign:

1. the payload condition (`automation.payloads`), then the profile condition (the
   segment language, compiled by `segments.compiler`, over the profile as it is now:
   after a delay, "has not bought yet" reads the current profile);
2. the sending-policy checks of a campaign's recipient (`spool.checks`: no address,
   syntax, GDPR erasure, quarantine, category subscription, sent quarantine per the
   campaign's config);
3. one spool row (queued, blocked or quarantined) with its outbox event, whose params
   are the payload's keys and `event`, the payload whole (`{{ event.order_id }}`).

The queue row's new state (`spooled` with its `send_id`, or `skipped` with a reason)
commits with the spool row: a firing is spooled exactly once, across ticks, restarts
and schedulers. A paused campaign's rows are left pending; those of an archived or
finished campaign are skipped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from envoi.automation.models import CampaignTrigger, TriggerState
from envoi.automation.payloads import matches, parse_payload_condition
from envoi.automation.triggers import Trigger
from envoi.campaigns.models import Campaign
from envoi.campaigns.spec import PostType
from envoi.core.campaign_states import State
from envoi.core.conditions import parse_condition
from envoi.core.errors import Invalid
from envoi.db.session import transaction
from envoi.emails.models import Email
from envoi.profiles.fields import declared_types
from envoi.profiles.models import Profile
from envoi.segments.compiler import compile_condition
from envoi.spool.building import Dimensions, spool_event, spool_row
from envoi.spool.bulk import OUTBOX, SPOOL, bulk_insert
from envoi.spool.checks import Candidate, Policy, check_batch

log = logging.getLogger("envoi.automation")

BATCH = 1000
# Why a firing was not spooled (`CampaignTrigger.reason`).
PAYLOAD_CONDITION = "payload_condition"
CONDITION = "condition"
CONDITION_INVALID = "condition_invalid"  # a field it names was deleted since
CAMPAIGN_ENDED = "campaign_ended"  # archived or finished before the row was due
_ENDED = (State.ARCHIVED.value, State.FINISHED.value)


@dataclass(frozen=True)
class Fired:
    """What one pass did: rows spooled and rows skipped."""

    spooled: int = 0
    skipped: int = 0

    def __add__(self, other: Fired) -> Fired:
        return Fired(self.spooled + other.spooled, self.skipped + other.skipped)


def fire_due(
    sessions: sessionmaker[Session],
    now: datetime,
    *,
    batch: int = BATCH,
    keep_going: Callable[[], bool] = lambda: True,
) -> Fired:
    """Spool every firing due at `now`, a batch per transaction, while `keep_going()`.

    An idle tick costs one short transaction: the ended campaigns' rows are skipped in
    the first batch's."""
    total = Fired()
    first = True
    while keep_going():
        with transaction(sessions) as session:
            if first:
                total += Fired(skipped=skip_ended(session, now))
                first = False
            taken, fired = fire_batch(session, now, batch)
        total += fired
        if taken < batch:
            break
    return total


def skip_ended(session: Session, now: datetime) -> int:
    """Pending rows of archived or finished campaigns will never be sent: skipped."""
    ended = select(Campaign.id).where(Campaign.state.in_(_ENDED))
    result = session.execute(
        update(CampaignTrigger)
        .where(
            CampaignTrigger.state == TriggerState.PENDING,
            CampaignTrigger.campaign_id.in_(ended),
        )
        .values(state=TriggerState.SKIPPED, reason=CAMPAIGN_ENDED, processed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def fire_batch(session: Session, now: datetime, batch: int) -> tuple[int, Fired]:
    """Up to `batch` due rows of running campaigns; (rows taken, what became of them)."""
    query = (
        select(CampaignTrigger)
        .join(Campaign, Campaign.id == CampaignTrigger.campaign_id)
        .where(
            CampaignTrigger.state == TriggerState.PENDING,
            CampaignTrigger.due_at <= now,
            Campaign.state == State.RUNNING.value,
            Campaign.post_type == PostType.AUTOMATED,
        )
        .order_by(CampaignTrigger.due_at, CampaignTrigger.id)
        .limit(batch)
        .with_for_update(skip_locked=True, of=CampaignTrigger)
    )
    rows = list(session.scalars(query))
    by_campaign: dict[int, list[CampaignTrigger]] = defaultdict(list)
    for row in rows:
        by_campaign[row.campaign_id].append(row)
    fired = Fired()
    for campaign_id, campaign_rows in by_campaign.items():
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None  # noqa: S101 - joined above, and the row is ours
        fired += _fire(session, campaign, campaign_rows, now)
    session.flush()
    return len(rows), fired


def _fire(
    session: Session, campaign: Campaign, rows: Sequence[CampaignTrigger], now: datetime
) -> Fired:
    trigger = Trigger.of(campaign.trigger or {})
    try:
        kept = _matching(session, campaign, trigger, rows, now)
    except Invalid as exc:
        log.warning(
            "trigger condition no longer valid",
            extra={"campaign_id": campaign.id, "error": exc.message},
        )
        _skip(rows, CONDITION_INVALID, now)
        return Fired(skipped=len(rows))
    skipped = len(rows) - len(kept)
    if kept:
        _spool(session, campaign, kept, now)
    return Fired(spooled=len(kept), skipped=skipped)


def _matching(
    session: Session,
    campaign: Campaign,
    trigger: Trigger,
    rows: Sequence[CampaignTrigger],
    now: datetime,
) -> list[CampaignTrigger]:
    """The rows whose payload and profile match the trigger's conditions; the rest are
    marked skipped. Invalid when a condition names a field deleted since."""
    kept = list(rows)
    if trigger.payload_condition is not None:
        node = parse_payload_condition(trigger.payload_condition, ("trigger", "payload_condition"))
        failed = [row for row in kept if not matches(node, row.payload or {})]
        _skip(failed, PAYLOAD_CONDITION, now)
        kept = [row for row in kept if matches(node, row.payload or {})]
    if trigger.condition is not None and kept:
        declared = declared_types(session, campaign.project_id)
        profile_node = parse_condition(trigger.condition, declared, ("trigger", "condition"))
        dialect = session.get_bind().dialect.name
        expression = compile_condition(
            profile_node, project_id=campaign.project_id, dialect=dialect, now=now
        )
        ids = sorted({row.profile_id for row in kept})
        passing = set(
            session.scalars(
                select(Profile.id).where(
                    Profile.project_id == campaign.project_id, Profile.id.in_(ids), expression
                )
            )
        )
        _skip([row for row in kept if row.profile_id not in passing], CONDITION, now)
        kept = [row for row in kept if row.profile_id in passing]
    return kept


def _skip(rows: Sequence[CampaignTrigger], reason: str, now: datetime) -> None:
    for row in rows:
        row.state = TriggerState.SKIPPED
        row.reason = reason
        row.processed_at = now


def _spool(
    session: Session, campaign: Campaign, rows: Sequence[CampaignTrigger], now: datetime
) -> None:
    """One spool row per firing, checked as a campaign's recipient, with its event."""
    email = session.get(Email, campaign.message_id)
    assert email is not None  # noqa: S101 - a foreign key
    ids = sorted({row.profile_id for row in rows})
    profiles = {
        p.id: p
        for p in session.execute(
            select(Profile.id, Profile.email, Profile.uid, Profile.language).where(
                Profile.id.in_(ids)
            )
        )
    }
    candidates = []
    for row in rows:
        profile = profiles.get(row.profile_id)
        address = profile.email if profile is not None else None
        identifiers = tuple(
            (name, value)
            for name, value in (("email", address), ("uid", profile.uid if profile else None))
            if value
        )
        candidates.append(
            Candidate(address, row.profile_id, email.category_id, email.is_urgent, identifiers)
        )
    policy = Policy.from_config(campaign.config or {})
    verdicts = check_batch(session, campaign.project_id, candidates, policy, now)
    spool_rows = [
        spool_row(
            campaign,
            email_id=email.id,
            profile_id=row.profile_id,
            params=template_params(row.payload or {}),
            candidate=candidate,
            verdict=verdict,
            language=_language(profiles.get(row.profile_id)),
            not_before=max(now, verdict.not_before) if verdict.not_before else now,
            now=now,
        )
        for row, candidate, verdict in zip(rows, candidates, verdicts, strict=True)
    ]
    send_ids = bulk_insert(session, SPOOL, spool_rows, return_ids=True)
    dimensions = Dimensions.of(campaign)
    events = [
        spool_event(dimensions, row=entry, send_id=send_id, verdict=verdict, now=now)
        for entry, send_id, verdict in zip(spool_rows, send_ids, verdicts, strict=True)
    ]
    bulk_insert(session, OUTBOX, events)
    for row, send_id in zip(rows, send_ids, strict=True):
        row.state = TriggerState.SPOOLED
        row.send_id = send_id
        row.processed_at = now


def template_params(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload's keys as top-level template variables, and the payload as `event`."""
    return {**payload, "event": dict(payload)}


def _language(profile: Any | None) -> str | None:
    return profile.language if profile is not None else None
