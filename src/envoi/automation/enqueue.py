"""Firing triggers: queue rows written in the transaction of the write that fired them.

The write paths call in here: `events.services.record_event` (`event_fired`) and the
users upsert, single and bulk (`watch_fields`, then `FieldWatch.fire`). Each looks the
project's running triggered campaigns up in one indexed query (`Campaign.trigger_on`)
and inserts one `campaign_triggers` row per (campaign, firing); nothing is mailed
here, and nothing is cached across requests, so a campaign started or paused a
moment ago is seen by the next write. A paused campaign is not listening: what
happens while it is paused fires nothing (rows queued before the pause wait for the
resume). `run_from` / `run_to`, when set, bound when a firing counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from envoi.automation.models import CampaignTrigger, TriggerState
from envoi.automation.triggers import EVENT, FIELD, Trigger, trigger_key
from envoi.campaigns.models import Campaign
from envoi.campaigns.spec import PostType
from envoi.core.campaign_states import State
from envoi.db.base import utcnow

if TYPE_CHECKING:
    from envoi.events.models import ApiEvent
    from envoi.profiles.changes import ProfileChange
    from envoi.profiles.models import Profile


@dataclass(frozen=True)
class _Listening:
    campaign_id: int
    trigger: Trigger
    run_from: datetime | None
    run_to: datetime | None

    def open_at(self, now: datetime) -> bool:
        if self.run_from is not None and now < self.run_from:
            return False
        return self.run_to is None or now <= self.run_to


def _listening(
    session: Session, project_id: int, keys: Sequence[str] = (), prefix: str | None = None
) -> list[_Listening]:
    query = select(Campaign.id, Campaign.trigger, Campaign.run_from, Campaign.run_to).where(
        Campaign.project_id == project_id,
        Campaign.post_type == PostType.AUTOMATED,
        Campaign.state == State.RUNNING.value,
    )
    if prefix is not None:
        query = query.where(Campaign.trigger_on.startswith(prefix, autoescape=True))
    else:
        query = query.where(Campaign.trigger_on.in_(keys))
    return [
        _Listening(row.id, Trigger.of(row.trigger), row.run_from, row.run_to)
        for row in session.execute(query.order_by(Campaign.id))
        if row.trigger
    ]


def _row(
    project_id: int,
    listening: _Listening,
    profile_id: int,
    payload: dict[str, Any],
    *,
    now: datetime,
    event_id: int | None = None,
) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "campaign_id": listening.campaign_id,
        "event_id": event_id,
        "profile_id": profile_id,
        "payload": payload,
        "fired_at": now,
        "due_at": now + timedelta(minutes=listening.trigger.delay_minutes),
        "state": TriggerState.PENDING,
    }


def event_fired(session: Session, event: ApiEvent, now: datetime | None = None) -> int:
    """Queue the firings of a just-flushed API event; how many."""
    now = now or utcnow()
    rows = [
        _row(
            event.project_id,
            listening,
            event.profile_id,
            dict(event.payload),
            now=now,
            event_id=event.id,
        )
        for listening in _listening(session, event.project_id, [trigger_key(EVENT, event.name)])
        if listening.open_at(now)
    ]
    if rows:
        session.execute(insert(CampaignTrigger), rows)
    return len(rows)


@dataclass
class FieldWatch:
    """The field triggers of one project during one upsert, with the watched fields'
    values before the write (taken by `watch_fields`, before the profiles change)."""

    project_id: int
    listening: list[_Listening]
    before: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def fields(self) -> set[str]:
        return {listening.trigger.name for listening in self.listening}

    def fire(
        self,
        session: Session,
        updated: Iterable[tuple[Profile, ProfileChange]],
        created: Iterable[tuple[int, ProfileChange]],
        now: datetime | None = None,
    ) -> int:
        """Queue the firings of the written changes: `updated` profiles (already merged)
        and `created` ones (their new ids); how many."""
        if not self.listening:
            return 0
        now = now or utcnow()
        open_now = [listening for listening in self.listening if listening.open_at(now)]
        rows: list[dict[str, Any]] = []
        for profile, change in updated:
            old = self.before.get(profile.id, {})
            self._rows(
                rows,
                open_now,
                profile.id,
                change=change,
                old=old,
                new=profile.fields or {},
                now=now,
            )
        for profile_id, change in created:
            self._rows(
                rows, open_now, profile_id, change=change, old={}, new=change.fields, now=now
            )
        if rows:
            session.execute(insert(CampaignTrigger), rows)
        return len(rows)

    def _rows(
        self,
        rows: list[dict[str, Any]],
        open_now: list[_Listening],
        profile_id: int,
        *,
        change: ProfileChange,
        old: dict[str, Any],
        new: dict[str, Any],
        now: datetime,
    ) -> None:
        for listening in open_now:
            name = listening.trigger.name
            if name not in change.fields:  # only a field the write names can fire
                continue
            before, after = old.get(name), new.get(name)
            if listening.trigger.fires_on(before, after):
                payload = {"field": name, "old": before, "new": after}
                rows.append(_row(self.project_id, listening, profile_id, payload, now=now))


def watch_fields(session: Session, project_id: int, profiles: Iterable[Profile]) -> FieldWatch:
    """The project's running field triggers, and the watched fields of `profiles` as
    they are now; one query, and nothing more when no campaign watches a field."""
    watch = FieldWatch(project_id, _listening(session, project_id, prefix=f"{FIELD}:"))
    names = watch.fields
    if names:
        watch.before = {
            profile.id: {name: (profile.fields or {}).get(name) for name in names}
            for profile in profiles
        }
    return watch
