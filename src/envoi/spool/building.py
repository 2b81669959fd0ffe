"""Building the spool from a started campaign, and starting planned campaigns.

`build_step` spools one batch of one running campaign's audience per call, read by
key after `Campaign.spool_cursor`, so a 1,000,000-member audience is never loaded
whole and a crash resumes at the cursor (a batch's rows, events and the cursor commit
together). Every member becomes exactly one row: `queued`, or `blocked` /
`quarantined` with its reason (`spool.checks`), or `blocked` as a `duplicate` when
an earlier member of the campaign has its address (`spool.duplicates`).
`audience_summary["spooled"]` counts the members spooled so far: it is each member's
index in the audience, which spreads `send_during_hours` evenly (`not_before = start
+ index / accepted * hours`) and deals A/B variants round-robin (`[message_id] +
ab_message_ids`, by index; the scheduler issue refines this into test and main
phases). Automated campaigns are not spooled here: their runs belong to the scheduler.

`Dimensions` is what every outbox event of a campaign's message says about it; the
events written when rows are recorded (`spool.recording`) use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from envoi.campaigns.models import AudienceMember, Campaign
from envoi.campaigns.spec import PostType
from envoi.core.campaign_states import Action, State, next_state
from envoi.emails.models import Email
from envoi.profiles.batching import custom_plans
from envoi.profiles.models import Profile
from envoi.spool.bulk import OUTBOX, SPOOL, AnyRow, bulk_insert
from envoi.spool.checks import Candidate, Policy, Verdict, any_of, check_batch
from envoi.spool.duplicates import without_duplicates


def promote_planned(session: Session, now: datetime) -> list[int]:
    """Planned campaigns whose start time has come become running; their ids."""
    test_or_main = func.coalesce(Campaign.test_planned_at, Campaign.planned_at)
    query = (
        select(Campaign)
        .where(
            Campaign.state == State.PLANNED.value,
            or_(
                and_(Campaign.post_type == PostType.AB, test_or_main <= now),
                and_(Campaign.post_type != PostType.AB, Campaign.planned_at <= now),
                # Cannot be planned without a start time; never leave one stuck.
                and_(Campaign.planned_at.is_(None), Campaign.test_planned_at.is_(None)),
            ),
        )
        .order_by(Campaign.id)
        .with_for_update(skip_locked=True)
    )
    return advance_all(session, query, Action.DUE)


def advance_all(session: Session, query: Select[Campaign], action: Action) -> list[int]:
    """Apply `action` to every campaign `query` selects; their ids."""
    advanced = []
    for campaign in session.scalars(query):
        campaign.state = advance(campaign, action).value
        advanced.append(campaign.id)
    session.flush()
    return advanced


def advance(campaign: Campaign, action: Action) -> State:
    """The campaign's state after `action` (`core.campaign_states`, never started ahead)."""
    return next_state(
        campaign.post,
        State(campaign.state),
        action,
        automated=campaign.post_type == PostType.AUTOMATED,
        start_ahead=False,
    )


@dataclass(frozen=True)
class Dimensions:
    """What every outbox event of a campaign's message says about it (DESIGN.md)."""

    post: str | None
    post_type: str | None
    message_type: str
    tags: tuple[str, ...] = ()

    @classmethod
    def of(cls, campaign: Any | None) -> Dimensions:
        if campaign is None:  # a send outside campaigns (transactional API, later)
            return cls(None, None, "L")
        return cls.named(campaign.id, campaign.post_type, campaign.message_type, campaign.tags)

    @classmethod
    def named(
        cls, campaign_id: int, post_type: str, message_type: str, tags: str | None
    ) -> Dimensions:
        """A campaign's dimensions from its columns."""
        listed = tuple(t.strip() for t in (tags or "").split(",") if t.strip())
        return cls(f"{post_type}_{campaign_id}", post_type, message_type, listed)

    def data(
        self, email_id: int, domain: str | None, language: str | None, send_id: int
    ) -> dict[str, Any]:
        return {
            "post": self.post,
            "post_type": self.post_type,
            "message": f"{self.message_type}_{email_id}",
            "message_type": self.message_type,
            "domain": domain,
            "router": None,
            "tags": list(self.tags),
            "language": language,
            "send_id": send_id,
        }


@dataclass(frozen=True)
class _Variant:
    email_id: int
    category_id: int
    urgent: bool


def build_step(session: Session, now: datetime, batch: int = 1000) -> bool:
    """Spool the next `batch` audience members of one running campaign; True if it did
    work (False: no campaign is left to build)."""
    campaign = _campaign_to_build(session)
    if campaign is None:
        return False
    members = session.execute(
        select(
            AudienceMember.id,
            AudienceMember.profile_id,
            AudienceMember.email,
            AudienceMember.params,
            AudienceMember.recipient_key,
        )
        .where(
            AudienceMember.campaign_id == campaign.id,
            AudienceMember.id > (campaign.spool_cursor or 0),
        )
        .order_by(AudienceMember.id)
        .limit(batch)
    ).all()
    if members:
        _spool(session, campaign, members, now)
        campaign.spool_cursor = members[-1].id
    if len(members) < batch:
        campaign.spool_built_at = now
    session.flush()
    return True


def _campaign_to_build(session: Session) -> Campaign | None:
    # SKIP LOCKED: two workers building at once take different campaigns (PostgreSQL;
    # SQLite's BEGIN IMMEDIATE runs them one after the other anyway).
    query = (
        select(Campaign)
        .where(
            Campaign.state == State.RUNNING.value,
            Campaign.spool_built_at.is_(None),
            Campaign.post_type != PostType.AUTOMATED,
        )
        .order_by(Campaign.priority.desc(), Campaign.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return session.scalars(query).first()


def _spool(session: Session, campaign: Campaign, members: Sequence[AnyRow], now: datetime) -> None:
    summary = dict(campaign.audience_summary or {})
    first_index = int(summary.get("spooled") or 0)
    variants = _variants(session, campaign)
    profiles = _profiles(session, campaign.project_id, members)
    candidates = []
    chosen = []
    for offset, member in enumerate(members):
        variant = variants[(first_index + offset) % len(variants)]
        profile = profiles.get(member.profile_id) if member.profile_id else None
        address = member.email or (profile.email if profile is not None else None)
        candidates.append(
            Candidate(
                address,
                member.profile_id,
                variant.category_id,
                variant.urgent,
                identifiers=_key_pair(member.recipient_key),
            )
        )
        chosen.append(variant)
    # The batch queries look many values up in tables a build is filling: generic
    # plans made from stale statistics would scan them (`profiles.batching`).
    custom_plans(session)
    policy = Policy.from_config(campaign.config or {})
    verdicts = check_batch(session, campaign.project_id, candidates, policy, now)
    verdicts = without_duplicates(session, campaign, verdicts)
    start = _send_start(campaign, now)
    spread = _spread(campaign, int(summary.get("accepted") or 0))
    rows = []
    for offset, (member, candidate, verdict, variant) in enumerate(
        zip(members, candidates, verdicts, chosen, strict=True)
    ):
        not_before = start + spread(first_index + offset)
        if verdict.not_before is not None:
            not_before = max(not_before, verdict.not_before)
        profile = profiles.get(member.profile_id) if member.profile_id else None
        rows.append(
            _spool_row(
                campaign,
                member=member,
                candidate=candidate,
                verdict=verdict,
                variant=variant,
                profile=profile,
                not_before=not_before,
                now=now,
            )
        )
    ids = bulk_insert(session, SPOOL, rows, return_ids=True)
    dimensions = Dimensions.of(campaign)
    events = [
        _spool_event(
            dimensions, row=row, send_id=send_id, verdict=verdict, key=member.recipient_key, now=now
        )
        for row, send_id, verdict, member in zip(rows, ids, verdicts, members, strict=True)
    ]
    bulk_insert(session, OUTBOX, events)
    summary["spooled"] = first_index + len(members)
    campaign.audience_summary = summary


def _variants(session: Session, campaign: Campaign) -> list[_Variant]:
    wanted = [campaign.message_id]
    if campaign.post_type == PostType.AB:
        wanted += [i for i in campaign.ab_message_ids if i not in wanted]
    rows = session.execute(
        select(Email.id, Email.category_id, Email.is_urgent).where(
            Email.id.in_(wanted), Email.project_id == campaign.project_id
        )
    ).all()
    found = {row.id: _Variant(row.id, row.category_id, row.is_urgent) for row in rows}
    # message_id is a foreign key, so at least variant A is there.
    return [found[i] for i in dict.fromkeys(wanted) if i in found]


def _profiles(session: Session, project_id: int, members: Sequence[AnyRow]) -> dict[int, Any]:
    ids = sorted({m.profile_id for m in members if m.profile_id is not None})
    if not ids:
        return {}
    query = select(Profile.id, Profile.email, Profile.language).where(
        Profile.project_id == project_id, any_of(session, Profile.id, ids)
    )
    return {row.id: row for row in session.execute(query)}


def _key_pair(recipient_key: str) -> tuple[tuple[str, str], ...]:
    """`email:ann@example.com` → (("email", "ann@example.com"),)."""
    name, colon, value = recipient_key.partition(":")
    return ((name, value),) if colon else ()


def _send_start(campaign: Campaign, now: datetime) -> datetime:
    """When the campaign's first row is due: its start, or its planned start if later."""
    planned = campaign.planned_at
    if campaign.post_type == PostType.AB:
        planned = campaign.test_planned_at or campaign.planned_at
    times = [t for t in (campaign.started_at, planned) if t is not None]
    return max(times) if times else now


def _spread(campaign: Campaign, total: int) -> Callable[[int], timedelta]:
    """index → delay from the start: `send_during_hours` shared evenly by the audience."""
    hours = campaign.send_during_hours or 0
    if hours <= 0 or total <= 1:
        return lambda _index: timedelta(0)
    window = timedelta(hours=hours)
    return lambda index: window * (min(index, total - 1) / total)


def _spool_row(
    campaign: Campaign,
    *,
    member: AnyRow,
    candidate: Candidate,
    verdict: Verdict,
    variant: _Variant,
    profile: Any | None,
    not_before: datetime,
    now: datetime,
) -> dict[str, Any]:
    raw = (candidate.address or "").strip()
    recipient = verdict.address or (raw[:320] or None)
    domain = verdict.domain or (raw.rpartition("@")[2].lower()[:255] if "@" in raw else None)
    language = profile.language if profile is not None else None
    return {
        "project_id": campaign.project_id,
        "campaign_id": campaign.id,
        "email_id": variant.email_id,
        "profile_id": member.profile_id,
        "recipient": recipient,
        "domain": domain or None,
        "params": dict(member.params or {}),
        "priority": campaign.priority,
        "state": verdict.state,
        "reason": verdict.reason,
        "not_before": not_before,
        "attempts": 0,
        "uncertain": False,
        "language": language,
        "updated_at": now,
    }


def _spool_event(
    dimensions: Dimensions,
    *,
    row: dict[str, Any],
    send_id: int,
    verdict: Verdict,
    key: str,
    now: datetime,
) -> dict[str, Any]:
    """The row's event; without an address it names the person by audience key."""
    data = dimensions.data(row["email_id"], row["domain"], row["language"], send_id)
    if verdict.reason is not None:
        data["reason"] = verdict.reason
    if verdict.not_before is not None:
        data["delayed_by"] = "sent_quarantine"
    return {
        "project_id": row["project_id"],
        "kind": verdict.state,  # queued, blocked or quarantined
        "occurred_at": now,
        "campaign_id": row["campaign_id"],
        "email_id": row["email_id"],
        "profile_id": row["profile_id"],
        "recipient": row["recipient"] or (key if len(key) <= 320 else None),
        "data": data,
    }
