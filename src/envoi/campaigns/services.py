"""Rules for campaigns: references scoped to the project, the life cycle, the stored files.

Every check runs before anything is written, and the handler commits only after the
service returned, so a refused request leaves no row behind.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from envoi.automation.services import check_automated
from envoi.automation.triggers import Trigger
from envoi.campaigns.abtests import draw_sample
from envoi.campaigns.audience import build_audience
from envoi.campaigns.files import delete_file, store_file, stored_files
from envoi.campaigns.models import (
    AudienceMember,
    Campaign,
    CampaignOccurrence,
    OccurrenceStatus,
)
from envoi.campaigns.spec import (
    KEEP,
    CampaignSpec,
    FileChange,
    FileKind,
    PostType,
    SourceType,
    UploadedFile,
)
from envoi.core.campaign_states import Action, State, TransitionError, check_rewritable, next_state
from envoi.core.csvsource import CsvSourceError, inspect
from envoi.core.errors import Conflict, Invalid, NotFound
from envoi.db.base import utcnow
from envoi.db.lookup import get_owned
from envoi.emails.models import Email
from envoi.segments.models import Segment
from envoi.sources.models import Source

_NOUNS = {
    PostType.REGULAR: "campaign",
    PostType.AB: "A/B campaign",
    PostType.AUTOMATED: "automated campaign",
}
_FIELDS = {FileKind.SOURCE: "source_uploaded_csv", FileKind.ADDITIONAL: "additional_source_file"}


def list_campaigns(session: Session, project_id: int, post_type: str) -> list[Campaign]:
    query = select(Campaign).where(
        Campaign.project_id == project_id, Campaign.post_type == post_type
    )
    return list(session.scalars(query.order_by(Campaign.id)))


def get_campaign(
    session: Session, project_id: int, post_type: str, campaign_id: int, *, lock: bool = False
) -> Campaign:
    """A campaign of this project and this type: another type's id is a 404 too.

    `lock` takes the row lock first, so two concurrent starts (or a start and a
    rewrite) run one after the other and the second sees the first's state."""
    noun = _NOUNS[post_type]
    campaign = get_owned(session, Campaign, project_id, campaign_id, noun, lock=lock)
    if campaign.post_type != post_type:
        raise NotFound(f"{noun} {campaign_id} not found")
    return campaign


def audience_counts(session: Session, campaign_ids: list[int]) -> dict[int, int]:
    if not campaign_ids:
        return {}
    query = (
        select(AudienceMember.campaign_id, func.count())
        .where(AudienceMember.campaign_id.in_(campaign_ids))
        .group_by(AudienceMember.campaign_id)
    )
    return dict(session.execute(query).all())


def create_campaign(
    session: Session, project_id: int, spec: CampaignSpec, now: datetime | None = None
) -> Campaign:
    _check_spec(session, project_id, spec, stored=set())
    campaign = Campaign(
        project_id=project_id,
        post_type=spec.post_type,
        state=State.DRAFT.value,
        spooler_token=secrets.token_urlsafe(24),
    )
    session.add(campaign)
    return _save(session, campaign, spec, now)


def rewrite_campaign(
    session: Session,
    project_id: int,
    campaign_id: int,
    spec: CampaignSpec,
    now: datetime | None = None,
) -> Campaign:
    """PUT: every field is replaced; a file the request does not mention is kept."""
    campaign = get_campaign(session, project_id, spec.post_type, campaign_id, lock=True)
    try:
        check_rewritable(campaign.post, State(campaign.state))
    except TransitionError as exc:
        raise Conflict(str(exc)) from None
    stored = {kind for (_, kind) in stored_files(session, [campaign.id])}
    _check_spec(session, project_id, spec, stored=stored)
    return _save(session, campaign, spec, now)


def _save(
    session: Session, campaign: Campaign, spec: CampaignSpec, now: datetime | None
) -> Campaign:
    """Write a checked spec onto `campaign`, store its files, and start it if asked."""
    _assign(campaign, spec)
    session.flush()  # a new campaign needs its id before its files
    _store_files(session, campaign.id, spec)
    if spec.start_immediately:
        _start(session, campaign, now or utcnow())
    session.flush()
    return campaign


def act(
    session: Session,
    project_id: int,
    post_type: str,
    campaign_id: int,
    *,
    action: Action,
    now: datetime | None = None,
) -> Campaign:
    """start, pause, resume or archive; a move the state table forbids is a 409."""
    campaign = get_campaign(session, project_id, post_type, campaign_id, lock=True)
    now = now or utcnow()
    if action is Action.START:
        _start(session, campaign, now)
    else:
        _enter(campaign, _target(campaign, action, now))
    if action is Action.RESUME and campaign.post_type == PostType.AUTOMATED:
        _mark_resumed(session, campaign, now)
    session.flush()
    return campaign


def _mark_resumed(session: Session, campaign: Campaign, now: datetime) -> None:
    """The crontab's times that fell while the campaign was paused are not made up:
    the scheduler runs only times after the latest occurrence row, this mark included
    (`campaigns.scheduler`)."""
    session.add(
        CampaignOccurrence(
            campaign_id=campaign.id,
            occurrence_at=now,
            status=OccurrenceStatus.RESUMED,
            claimed_at=now,
            after_send_id=0,
        )
    )


def _target(campaign: Campaign, action: Action, now: datetime) -> State:
    """The state `action` leads to now, or a 409 saying why it is not allowed."""
    starts_at = _starts_at(campaign)
    try:
        return next_state(
            campaign.post,
            State(campaign.state),
            action,
            automated=campaign.post_type == PostType.AUTOMATED,
            start_ahead=starts_at is not None and starts_at > now,
        )
    except TransitionError as exc:
        raise Conflict(str(exc)) from None


def _enter(campaign: Campaign, target: State) -> None:
    campaign.state = target.value
    if campaign.post_type == PostType.AUTOMATED:
        # `active` is the seed's word for an automated campaign that is running.
        campaign.active = target is State.RUNNING


def _start(session: Session, campaign: Campaign, now: datetime) -> None:
    target = _target(campaign, Action.START, now)
    _check_startable(campaign)
    _enter(campaign, target)
    if campaign.trigger is not None:
        campaign.started_at = now
        return  # no audience: each firing mails the profile it names (automation)
    summary = build_audience(session, campaign, now)
    campaign.started_at = now
    if summary["accepted"] == 0 and campaign.post_type != PostType.AUTOMATED:
        # Nothing to send: the campaign is done at once and keeps its build summary
        # (the rejected lines) for the client to read. An automated campaign stays
        # active: its next run reads its source again.
        campaign.state = State.FINISHED.value
    elif campaign.post_type == PostType.AB:
        draw_sample(session, campaign)  # the test's recipients, drawn once (abtests)


def _check_startable(campaign: Campaign) -> None:
    """What `start` needs beyond the state table: an A/B test needs two variants.

    A draft may have one (the seed's A/B fields name only `message_id`), so it is
    checked here rather than at create or rewrite."""
    if campaign.post_type != PostType.AB:
        return
    if not set(campaign.ab_message_ids) - {campaign.message_id}:
        raise Conflict(
            f"A/B campaign {campaign.post} has one variant (email {campaign.message_id}) "
            "and cannot start: name at least one other email in ab_message_ids "
            "(PUT the draft), then start it"
        )


def _starts_at(campaign: Campaign) -> datetime | None:
    """When sending begins: an A/B campaign begins with its test."""
    if campaign.post_type == PostType.AB:
        return campaign.test_planned_at or campaign.planned_at
    if campaign.post_type == PostType.REGULAR:
        return campaign.planned_at
    return None


def _assign(campaign: Campaign, spec: CampaignSpec) -> None:
    campaign.message_type = spec.message_type
    campaign.message_id = spec.message_id
    campaign.ab_message_ids = list(spec.ab_message_ids)
    campaign.source_type = spec.source_type
    campaign.source_id = spec.source_id
    campaign.config = dict(spec.config)
    campaign.tags = spec.tags
    campaign.priority = spec.priority
    campaign.planned_at = spec.planned_at
    campaign.send_during_hours = spec.send_during_hours
    campaign.start_immediately = spec.start_immediately
    campaign.ab_percent = spec.ab_percent
    campaign.win_parameter = spec.win_parameter
    campaign.test_planned_at = spec.test_planned_at
    campaign.main_planned_at = spec.main_planned_at
    campaign.crontab = spec.crontab
    campaign.run_from = spec.run_from
    campaign.run_to = spec.run_to
    campaign.trigger = spec.trigger
    campaign.trigger_on = Trigger.of(spec.trigger).key if spec.trigger else None
    campaign.active = False


def _store_files(session: Session, campaign_id: int, spec: CampaignSpec) -> None:
    changes: dict[str, FileChange] = {
        FileKind.SOURCE: spec.source_file if spec.source_type == SourceType.UPLOADED else None,
        FileKind.ADDITIONAL: spec.additional_file,
    }
    for kind, change in changes.items():
        if isinstance(change, UploadedFile):
            store_file(session, campaign_id, kind, change)
        elif change is not KEEP:
            delete_file(session, campaign_id, kind)


# --- validation ---------------------------------------------------------------------------


def _check_spec(session: Session, project_id: int, spec: CampaignSpec, stored: set[str]) -> None:
    _check_email(session, project_id, spec.message_id, ("body", "message_id"))
    if spec.post_type == PostType.AB:
        _check_variants(session, project_id, spec)
    triggered = spec.post_type == PostType.AUTOMATED and check_automated(session, project_id, spec)
    if not triggered:
        _check_source(session, project_id, spec, stored)
    for kind, change in (
        (FileKind.SOURCE, spec.source_file),
        (FileKind.ADDITIONAL, spec.additional_file),
    ):
        if isinstance(change, UploadedFile):
            _check_csv(change, _FIELDS[kind])
    _check_times(spec)


def _check_email(
    session: Session, project_id: int, email_id: int, loc: tuple[str | int, ...]
) -> None:
    owner = session.scalar(select(Email.project_id).where(Email.id == email_id))
    if owner != project_id:
        raise Invalid(f"email {email_id} not found", loc)


def _check_variants(session: Session, project_id: int, spec: CampaignSpec) -> None:
    seen = {spec.message_id}
    for index, email_id in enumerate(spec.ab_message_ids):
        loc = ("body", "ab_message_ids", index)
        if email_id in seen:
            raise Invalid(f"email {email_id} is already a variant of this test", loc)
        seen.add(email_id)
        _check_email(session, project_id, email_id, loc)


def _check_source(session: Session, project_id: int, spec: CampaignSpec, stored: set[str]) -> None:
    if spec.source_type == SourceType.UPLOADED:
        if spec.source_id is not None:
            raise Invalid(
                "source_id is not allowed with source_type U: the list is source_uploaded_csv",
                ("body", "source_id"),
            )
        has_file = isinstance(spec.source_file, UploadedFile) or (
            spec.source_file is KEEP and FileKind.SOURCE in stored
        )
        if not has_file:
            raise Invalid(
                "source_uploaded_csv is required with source_type U",
                ("body", "source_uploaded_csv"),
            )
        return
    if isinstance(spec.source_file, UploadedFile):
        raise Invalid(
            f"source_uploaded_csv is only for source_type U, not {spec.source_type}",
            ("body", "source_uploaded_csv"),
        )
    if spec.source_id is None:
        raise Invalid(
            f"source_id is required with source_type {spec.source_type}", ("body", "source_id")
        )
    model: type[Segment] | type[Source] = (
        Segment if spec.source_type == SourceType.SEGMENT else Source
    )
    owner = session.scalar(select(model.project_id).where(model.id == spec.source_id))
    if owner != project_id:
        noun = "segment" if model is Segment else "API source"
        raise Invalid(f"{noun} {spec.source_id} not found", ("body", "source_id"))


def _check_csv(upload: UploadedFile, field: str) -> None:
    try:
        upload.stream.seek(0)
        inspect(upload.stream)
    except CsvSourceError as exc:
        raise Invalid(f"{field} {exc}", ("body", field)) from None


def _check_times(spec: CampaignSpec) -> None:
    test_start = spec.test_planned_at or spec.planned_at
    if spec.main_planned_at and test_start and spec.main_planned_at <= test_start:
        raise Invalid(
            "main_planned_at must come after the test starts (test_planned_at or planned_at)",
            ("body", "main_planned_at"),
        )
    if spec.run_from and spec.run_to and spec.run_to <= spec.run_from:
        raise Invalid("run_to must come after run_from", ("body", "run_to"))


def campaign_view(session: Session, campaigns: list[Campaign]) -> list[dict[str, Any]]:
    """The extra facts a response shows beside the row: audience size and stored files."""
    ids = [c.id for c in campaigns]
    counts = audience_counts(session, ids)
    files = stored_files(session, ids)
    return [
        {
            "audience": {"count": counts.get(c.id, 0), "last_build": c.audience_summary},
            "files": {field: files.get((c.id, kind)) for kind, field in _FIELDS.items()},
        }
        for c in campaigns
    ]
