"""Building the spool from a started campaign, and starting planned campaigns.

`build_step` spools one batch of one running campaign's audience per call, read by
key after `Campaign.spool_cursor`, so a 1,000,000-member audience is never loaded
whole and a crash resumes at the cursor (a batch's rows, events and the cursor commit
together). Every member becomes exactly one row: `queued`, or `blocked` /
`quarantined` with its reason (`spool.checks`), or `blocked` as a `duplicate` when
an earlier member of the campaign has its address (`spool.duplicates`).
`audience_summary["spooled"]` counts the members spooled so far: it is each member's
index in the audience, which spreads `send_during_hours` evenly (`not_before = start
+ index / accepted * hours`). An A/B campaign is built in two phases
(`campaigns.abtests`): in `test` only the members drawn into the sample, each with its
variant's email; in `main`, once the winner is decided, the rest with the winner's
(each phase spreads over its own members). Automated campaigns are not spooled here:
their runs belong to the scheduler.

`Dimensions` is what every outbox event of a campaign's message says about it; the
events written when rows are recorded (`spool.recording`) use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, true
from sqlalchemy.orm import Session

from envoi.campaigns.models import AudienceMember, Campaign
from envoi.campaigns.spec import PostType
from envoi.core.abtests import Phase
from envoi.core.campaign_states import Action, State, next_state
from envoi.emails.models import Email
from envoi.profiles.batching import custom_plans
from envoi.profiles.models import Profile
from envoi.spool.bulk import OUTBOX, SPOOL, AnyRow, bulk_insert
from envoi.spool.checks import (
    BLOCKED,
    QUARANTINED,
    QUEUED,
    Candidate,
    Policy,
    Verdict,
    any_of,
    check_batch,
    probes,
)
from envoi.spool.duplicates import DUPLICATE, without_duplicates
from envoi.spool.models import SpoolEntry


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


@dataclass(frozen=True)
class Occurrence:
    """A run of an automated campaign being spooled (`campaigns.scheduler`).

    The campaign's spool rows above `after_send_id` are this run's; those at or below
    it, earlier runs'. A recipient an earlier run mailed (a row neither blocked nor
    quarantined: delivered, failed permanently, or still being sent) is skipped
    without a row, unless `resend`."""

    after_send_id: int
    resend: bool


def build_step(session: Session, now: datetime, batch: int = 1000) -> bool:
    """Spool the next `batch` audience members of one running campaign; True if it did
    work (False: no campaign is left to build)."""
    campaign = _campaign_to_build(session)
    if campaign is None:
        return False
    build_batch(session, campaign, now, batch)
    return True


def build_batch(
    session: Session,
    campaign: Campaign,
    now: datetime,
    batch: int,
    occurrence: Occurrence | None = None,
) -> bool:
    """Spool the next `batch` members of `campaign` (locked by the caller); True once
    its whole audience is spooled."""
    members = session.execute(
        select(
            AudienceMember.id,
            AudienceMember.profile_id,
            AudienceMember.email,
            AudienceMember.params,
            AudienceMember.recipient_key,
            AudienceMember.ab_variant,
        )
        .where(
            AudienceMember.campaign_id == campaign.id,
            AudienceMember.id > (campaign.spool_cursor or 0),
            *_phase_members(campaign),
        )
        .order_by(AudienceMember.id)
        .limit(batch)
    ).all()
    if members:
        _spool(session, campaign, members, now, occurrence)
        campaign.spool_cursor = members[-1].id
    done = len(members) < batch
    if done:
        campaign.spool_built_at = now
    session.flush()
    return done


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


def _spool(
    session: Session,
    campaign: Campaign,
    members: Sequence[AnyRow],
    now: datetime,
    occurrence: Occurrence | None = None,
) -> None:
    summary = dict(campaign.audience_summary or {})
    first_index = int(summary.get("spooled") or 0)
    variants = _variants(session, campaign)
    sampled = campaign.post_type == PostType.AB and campaign.ab_phase == Phase.TEST
    profiles = _profiles(session, campaign.project_id, members)
    candidates = []
    chosen = []
    for offset, member in enumerate(members):
        if sampled and member.ab_variant is not None and member.ab_variant < len(variants):
            variant = variants[member.ab_variant]  # drawn into the test (campaigns.abtests)
        else:
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
    if occurrence is None:
        verdicts = without_duplicates(session, campaign, verdicts)
        kept = [True] * len(verdicts)
    else:
        verdicts, kept = occurrence_verdicts(session, campaign, verdicts, occurrence)
        skipped = kept.count(False)
        summary["already_received"] = int(summary.get("already_received") or 0) + skipped
    start = _send_start(campaign, now)
    phase_first, phase_total = _phase_span(campaign, int(summary.get("accepted") or 0))
    spread = _spread(campaign, phase_total)
    rows = []
    spooled = []
    for offset, (member, candidate, verdict, variant, keep) in enumerate(
        zip(members, candidates, verdicts, chosen, kept, strict=True)
    ):
        if not keep:
            continue
        spooled.append((member, verdict))
        not_before = start + spread(first_index - phase_first + offset)
        if verdict.not_before is not None:
            not_before = max(not_before, verdict.not_before)
        profile = profiles.get(member.profile_id) if member.profile_id else None
        rows.append(
            spool_row(
                campaign,
                email_id=variant.email_id,
                profile_id=member.profile_id,
                params=dict(member.params or {}),
                candidate=candidate,
                verdict=verdict,
                language=profile.language if profile is not None else None,
                not_before=not_before,
                now=now,
            )
        )
    ids = bulk_insert(session, SPOOL, rows, return_ids=True)
    dimensions = Dimensions.of(campaign)
    events = [
        spool_event(
            dimensions, row=row, send_id=send_id, verdict=verdict, key=member.recipient_key, now=now
        )
        for row, send_id, (member, verdict) in zip(rows, ids, spooled, strict=True)
    ]
    bulk_insert(session, OUTBOX, events)
    summary["spooled"] = first_index + len(members)
    campaign.audience_summary = summary


def occurrence_verdicts(
    session: Session, campaign: Campaign, verdicts: list[Verdict], occurrence: Occurrence
) -> tuple[list[Verdict], list[bool]]:
    """A run's verdicts, and whether each member gets a row at all.

    A member an earlier run of the campaign mailed gets none (unless `resend`); one
    whose address this run already mails is a blocked `duplicate`, as in any campaign
    (`spool.duplicates`, which would count earlier runs' rows too)."""
    addresses = sorted({v.address for v in verdicts if v.address})
    mailed = _mailed_runs(session, campaign, addresses) if addresses else {}
    taken = {a for a, (_, last) in mailed.items() if last > occurrence.after_send_id}
    result: list[Verdict] = []
    kept: list[bool] = []
    for verdict in verdicts:
        address = verdict.address
        first = mailed[address][0] if address in mailed else None
        earlier = first is not None and first <= occurrence.after_send_id
        kept.append(not earlier or occurrence.resend)
        if kept[-1] and verdict.state == QUEUED and address in taken:
            result.append(Verdict(BLOCKED, DUPLICATE, address))
            continue
        if kept[-1] and verdict.state == QUEUED and address:
            taken.add(address)
        result.append(verdict)
    return result, kept


def _mailed_runs(
    session: Session, campaign: Campaign, addresses: list[str]
) -> dict[str, tuple[int, int]]:
    """address → (lowest, highest) id of the campaign's rows to it that were or will be
    mailed (neither blocked nor quarantined), on `ix_spool_recipient`; on PostgreSQL
    one probe per address, as `spool.duplicates` does and for the same reason."""
    entry = SpoolEntry
    mailed = (entry.campaign_id + 0 == campaign.id) & entry.state.not_in((BLOCKED, QUARANTINED))
    query: Select[str | None, int, int]
    if session.get_bind().dialect.name != "postgresql":
        query = (
            select(entry.recipient, func.min(entry.id), func.max(entry.id))
            .where(
                entry.project_id == campaign.project_id,
                any_of(session, entry.recipient, addresses),
                mailed,
            )
            .group_by(entry.recipient)
        )
    else:
        wanted = probes(campaign.project_id, addresses)
        hit = (
            select(func.min(entry.id).label("first"), func.max(entry.id).label("last"))
            .where(
                entry.project_id == wanted.c.project_id,
                entry.recipient == wanted.c.address,
                mailed,
            )
            .lateral("hit")
        )
        query = (
            select(wanted.c.address, hit.c.first, hit.c.last)
            .select_from(wanted)
            .join(hit, true())
            .where(hit.c.first.is_not(None))
        )
    return {address: (first, last) for address, first, last in session.execute(query) if address}


def _phase_members(campaign: Campaign) -> tuple[Any, ...]:
    """Which audience members this phase of an A/B campaign spools: the test's sample,
    then the rest (a campaign started before A/B phases existed: everyone)."""
    if campaign.post_type != PostType.AB or campaign.ab_phase is None:
        return ()
    if campaign.ab_phase == Phase.TEST:
        return (AudienceMember.ab_variant.is_not(None),)
    return (AudienceMember.ab_variant.is_(None),)


def _phase_span(campaign: Campaign, accepted: int) -> tuple[int, int]:
    """(members spooled before this phase, members this phase spools): what
    `send_during_hours` spreads over; the whole audience outside A/B phases."""
    if campaign.post_type != PostType.AB or campaign.ab_phase is None:
        return 0, accepted
    sample = sum(int(n) for n in (campaign.audience_summary or {}).get("ab_sample") or [])
    if campaign.ab_phase == Phase.TEST:
        return 0, sample
    return sample, max(accepted - sample, 0)


def _variants(session: Session, campaign: Campaign) -> list[_Variant]:
    wanted = [campaign.message_id]
    if campaign.post_type == PostType.AB and campaign.ab_phase == Phase.MAIN:
        wanted = [campaign.ab_winner or campaign.message_id]  # the rest get the winner
    elif campaign.post_type == PostType.AB:
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
    """When the campaign's first row is due: its start, or its planned start if later;
    an automated campaign's run is due when it is spooled."""
    if campaign.post_type == PostType.AUTOMATED:
        return now
    planned = campaign.planned_at
    if campaign.post_type == PostType.AB:
        planned = campaign.test_planned_at or campaign.planned_at
        if campaign.ab_phase == Phase.MAIN:
            planned = campaign.ab_decided_at or planned
    times = [t for t in (campaign.started_at, planned) if t is not None]
    return max(times) if times else now


def _spread(campaign: Campaign, total: int) -> Callable[[int], timedelta]:
    """index → delay from the start: `send_during_hours` shared evenly by the audience."""
    hours = campaign.send_during_hours or 0
    if hours <= 0 or total <= 1:
        return lambda _index: timedelta(0)
    window = timedelta(hours=hours)
    return lambda index: window * (min(index, total - 1) / total)


def spool_row(
    campaign: Campaign,
    *,
    email_id: int,
    profile_id: int | None,
    params: dict[str, Any],
    candidate: Candidate,
    verdict: Verdict,
    language: str | None,
    not_before: datetime,
    now: datetime,
) -> dict[str, Any]:
    """A campaign's spool row for one checked recipient (a member of its audience, or
    a trigger's firing: `automation.workers`)."""
    raw = (candidate.address or "").strip()
    recipient = verdict.address or (raw[:320] or None)
    domain = verdict.domain or (raw.rpartition("@")[2].lower()[:255] if "@" in raw else None)
    return {
        "project_id": campaign.project_id,
        "campaign_id": campaign.id,
        "email_id": email_id,
        "profile_id": profile_id,
        "recipient": recipient,
        "domain": domain or None,
        "params": params,
        "priority": campaign.priority,
        "state": verdict.state,
        "reason": verdict.reason,
        "not_before": not_before,
        "attempts": 0,
        "uncertain": False,
        "language": language,
        "updated_at": now,
    }


def spool_event(
    dimensions: Dimensions,
    *,
    row: dict[str, Any],
    send_id: int,
    verdict: Verdict,
    now: datetime,
    key: str | None = None,
) -> dict[str, Any]:
    """The row's outbox event; without an address it names the person by audience
    `key` (when there is one)."""
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
        "recipient": row["recipient"] or (key if key and len(key) <= 320 else None),
        "data": data,
    }
