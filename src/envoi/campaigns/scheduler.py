"""The scheduler: planned campaigns start on time, automated campaigns run on their crontab.

One `Scheduler` runs in `envoi serve` and in each `envoi worker --scheduler`; a lease
row (`scheduler_leases`) keeps exactly one of them active. Every tick (1 s) the
active one:

1. takes or renews the lease: taken only once expired, renewed every third of its
   time; an instance that cannot renew stops working at once, before its next step;
2. starts planned campaigns whose time came (`spool.building.promote_planned`; the
   delivery workers then build their spools, `send_during_hours` spread included);
3. for each running automated campaign with a crontab, claims the run that is due
   and spools it, a batch per transaction, then finishes campaigns past `run_to`;
   before that, spools the due firings of event-driven ones (`automation.workers`).

Which run is due: `core.schedules.Schedule` (UTC crontab times within run_from and
run_to, after the campaign started and after its latest occurrence row; only the
latest missed time runs after an outage, never a burst).

A/B tests. Before the lease is looked at, every instance that holds the event store
decides the A/B tests whose main time came (`campaigns.abtests`: exactly once by the
campaign's row lock and phase, not by the lease).

Exactly once. A run is claimed by inserting its `campaign_occurrences` row (unique
per campaign and time) in the transaction that holds the campaign's row lock,
confirms the lease, regenerates the source segment and snapshots the audience, and
resets the campaign's spool cursor. Its spool is then built from that snapshot a
batch per transaction, each with the cursor, as a started campaign's is; a crash
resumes at the cursor, on whichever instance is active next. A restarted scheduler,
or two that both believe they are active, find the row and do not run the time again.

Who a run reaches. Its source's current audience, minus the recipients an earlier
run of the campaign mailed (a spool row neither blocked nor quarantined); with
`config.resend` true, everyone again (`spool.building.occurrence_verdicts`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from envoi.automation.workers import fire_due
from envoi.campaigns.abtests import ABDecider, EventSource
from envoi.campaigns.audience import build_audience
from envoi.campaigns.leases import Lease
from envoi.campaigns.models import Campaign, CampaignOccurrence, OccurrenceStatus
from envoi.campaigns.spec import PostType
from envoi.config import Settings
from envoi.core.campaign_states import Action, State
from envoi.core.errors import EnvoiError
from envoi.core.schedules import Schedule
from envoi.db.base import as_utc, utcnow
from envoi.db.session import make_engine, make_sessionmaker, transaction
from envoi.spool.building import Occurrence, advance, build_batch, promote_planned
from envoi.spool.models import PENDING_STATES, SpoolEntry

log = logging.getLogger("envoi.scheduler")

LEASE_NAME = "scheduler"
BUILD_BATCH = 1000
STOP_TIMEOUT_SECONDS = 30.0
MAX_ERROR_LENGTH = 2000

Clock = Callable[[], datetime]


def new_owner() -> str:
    """This scheduler's name on the lease and its runs: host, process, random suffix."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class SchedulerMetrics:
    """Prometheus metrics of one scheduler (a registry of its own, like the workers')."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.occurrences = Counter(
            "envoi_scheduler_occurrences_total",
            "Automated campaign runs this scheduler claimed, by outcome: spooled, or "
            "failed (the source could not be read).",
            ["outcome"],
            registry=self.registry,
        )
        self.started = Counter(
            "envoi_scheduler_campaigns_started_total",
            "Planned campaigns this scheduler started when their time came.",
            registry=self.registry,
        )
        self.finished = Counter(
            "envoi_scheduler_campaigns_finished_total",
            "Automated campaigns this scheduler finished after their run_to.",
            registry=self.registry,
        )
        self.lease_held = Gauge(
            "envoi_scheduler_lease_held",
            "1 while this scheduler holds the lease (is the active one), else 0.",
            registry=self.registry,
        )


@dataclass(frozen=True)
class _Automated:
    campaign_id: int
    schedule: Schedule
    building: bool  # a claimed run's spool is still being built


# --- the scheduler ---------------------------------------------------------------------


class Scheduler:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        clock: Clock = utcnow,
        tick_seconds: float = 1.0,
        lease_seconds: float = 30.0,
        owner: str | None = None,
        lease_name: str = LEASE_NAME,
        build_batch: int = BUILD_BATCH,
        on_work: Callable[[], None] | None = None,
        events: EventSource | None = None,
    ) -> None:
        """`clock` is the time schedules and the lease see (tests freeze it); `on_work`
        is called after a run was spooled or a campaign started (wakes the in-process
        delivery worker); `events` gives this process's event store, which A/B tests
        are decided from (`campaigns.abtests`; None: this scheduler decides none)."""
        self.owner = owner or new_owner()
        self.metrics = SchedulerMetrics()
        self._sessions = sessions
        self._clock = clock
        self._tick_seconds = tick_seconds
        self.lease = Lease(
            sessions,
            name=lease_name,
            owner=self.owner,
            seconds=lease_seconds,
            clock=clock,
            on_change=lambda held: self.metrics.lease_held.set(1 if held else 0),
        )
        self._batch = build_batch
        self._on_work = on_work
        self.ab_tests = ABDecider(
            sessions, events=events, clock=clock, owner=self.owner, on_decided=self._notify
        )
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: sessionmaker[Session], **options: Any
    ) -> Scheduler:
        return cls(
            sessions,
            tick_seconds=settings.scheduler_tick_seconds,
            lease_seconds=settings.scheduler_lease_seconds,
            build_batch=settings.worker_build_batch,
            **options,
        )

    # -- the thread -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="envoi-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the step in hand, end the thread, and give the lease up so that
        another instance takes over at once rather than when it expires."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
            self._thread = None
        try:
            self.lease.release()
        except Exception:
            log.exception("scheduler lease release failed", extra={"owner": self.owner})

    def wake(self) -> None:
        self._wakeup.set()

    def _run(self) -> None:
        log.info("scheduler started", extra={"owner": self.owner})
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                # A database restart must not end the thread: log, wait, try again.
                log.exception("scheduler tick failed", extra={"owner": self.owner})
            self._wakeup.wait(self._tick_seconds)
            self._wakeup.clear()
        log.info("scheduler stopped", extra={"owner": self.owner})

    # -- one tick -----------------------------------------------------------------------

    def tick(self) -> bool:
        """One pass; False when another instance holds the lease (nothing was done but
        A/B decisions, which need the event store this process may hold, not the lease)."""
        self.ab_tests.decide_due()
        if not self.lease.held():
            return False
        self._start_planned()
        self._fire_triggers()
        for automated in self._automated():
            if self._stopping.is_set() or not self.lease.held():
                break
            self._run_automated(automated)
        return True

    def _fire_triggers(self) -> None:
        """Event-driven automated campaigns: due firings become spool rows (automation)."""
        fired = fire_due(
            self._sessions,
            self._clock(),
            batch=self._batch,
            keep_going=lambda: not self._stopping.is_set() and self.lease.held(),
        )
        if fired.spooled or fired.skipped:
            log.info("triggers fired", extra={"spooled": fired.spooled, "skipped": fired.skipped})
        if fired.spooled:
            self._notify()

    def _start_planned(self) -> None:
        with transaction(self._sessions) as session:
            started = promote_planned(session, self._clock())
        if started:
            self.metrics.started.inc(len(started))
            log.info("planned campaigns started", extra={"campaign_ids": started})
            self._notify()

    def _automated(self) -> list[_Automated]:
        """The running automated campaigns with a crontab, with their schedules."""
        last = (
            select(func.max(CampaignOccurrence.occurrence_at))
            .where(CampaignOccurrence.campaign_id == Campaign.id)
            .scalar_subquery()
        )
        building = exists().where(
            CampaignOccurrence.campaign_id == Campaign.id,
            CampaignOccurrence.status == OccurrenceStatus.SPOOLING,
        )
        query = (
            select(
                Campaign.id,
                Campaign.crontab,
                Campaign.started_at,
                Campaign.run_from,
                Campaign.run_to,
                last,
                building,
            )
            .where(
                Campaign.post_type == PostType.AUTOMATED,
                Campaign.state == State.RUNNING.value,
                Campaign.crontab.is_not(None),
            )
            .order_by(Campaign.priority.desc(), Campaign.id)
        )
        with self._sessions() as session:
            rows = session.execute(query).all()
        return [
            _Automated(
                row[0], Schedule(str(row[1]), row[2], row[3], row[4], _aware(row[5])), row[6]
            )
            for row in rows
        ]

    def _run_automated(self, automated: _Automated) -> None:
        now = self._clock()
        if automated.building:
            self._build(automated.campaign_id)
        elif automated.schedule.due(now) is not None:
            if self._claim(automated.campaign_id):
                self._build(automated.campaign_id)
        elif automated.schedule.over(now):
            self._finish(automated.campaign_id)

    # -- a run: claim, then spool ---------------------------------------------------------

    def _claim(self, campaign_id: int) -> bool:
        """Claim the campaign's due run and snapshot its audience; True if claimed."""
        now = self._clock()
        try:
            with transaction(self._sessions) as session:
                claimed = self._claim_in(session, campaign_id, now)
        except IntegrityError:
            # Another scheduler claimed this time in between: it is running it.
            log.info("occurrence already claimed", extra={"campaign_id": campaign_id})
            return False
        except EnvoiError as exc:  # the source cannot be read (a broken segment)
            self._record_failure(campaign_id, now, exc.message)
            return False
        if claimed is None:
            return False
        occurrence_at, audience = claimed
        log.info(
            "automated campaign run claimed",
            extra={
                "campaign_id": campaign_id,
                "occurrence_at": occurrence_at.isoformat(),
                "audience": audience,
                "owner": self.owner,
            },
        )
        return True

    def _claim_in(
        self, session: Session, campaign_id: int, now: datetime
    ) -> tuple[datetime, int] | None:
        campaign = _locked_running(session, campaign_id)
        if campaign is None or not self.lease.take(session, now):
            return None
        schedule = _schedule(session, campaign)
        due = schedule.due(now) if schedule is not None else None
        if due is None or _building(session, campaign_id):
            return None  # claimed meanwhile by another instance, or paused
        after = session.scalar(
            select(func.max(SpoolEntry.id)).where(SpoolEntry.campaign_id == campaign_id)
        )
        session.add(
            CampaignOccurrence(
                campaign_id=campaign_id,
                occurrence_at=due,
                status=OccurrenceStatus.SPOOLING,
                after_send_id=after or 0,
                owner=self.owner,
                claimed_at=now,
            )
        )
        session.flush()  # the unique (campaign, time) is checked here, before any work
        summary = build_audience(session, campaign, now)  # regenerates the segment first
        campaign.audience_summary = summary | {
            "occurrence_at": due.isoformat(),
            "already_received": 0,
        }
        campaign.spool_cursor = None
        campaign.spool_built_at = None
        return due, int(summary["accepted"])

    def _record_failure(self, campaign_id: int, now: datetime, message: str) -> None:
        """A run whose source cannot be read is recorded as failed, not retried."""
        with transaction(self._sessions) as session:
            campaign = _locked_running(session, campaign_id)
            if campaign is None or not self.lease.take(session, now):
                return
            schedule = _schedule(session, campaign)
            due = schedule.due(now) if schedule is not None else None
            if due is None:
                return
            session.add(
                CampaignOccurrence(
                    campaign_id=campaign_id,
                    occurrence_at=due,
                    status=OccurrenceStatus.FAILED,
                    owner=self.owner,
                    claimed_at=now,
                    error=message[:MAX_ERROR_LENGTH],
                )
            )
        self.metrics.occurrences.labels("failed").inc()
        log.warning(
            "automated campaign run failed",
            extra={"campaign_id": campaign_id, "occurrence_at": due.isoformat(), "error": message},
        )

    def _build(self, campaign_id: int) -> None:
        """Spool the claimed run a batch per transaction, while this instance is active."""
        while not self._stopping.is_set() and self.lease.held():
            with transaction(self._sessions) as session:
                done = self._build_step(session, campaign_id, self._clock())
            if done is None:
                return  # paused, archived or built by another instance meanwhile
            self._notify()  # rows to send: no need to wait for the workers' poll
            if done:
                return

    def _build_step(self, session: Session, campaign_id: int, now: datetime) -> bool | None:
        campaign = _locked_running(session, campaign_id)
        if campaign is None:
            return None
        occurrence = session.scalars(
            select(CampaignOccurrence)
            .where(
                CampaignOccurrence.campaign_id == campaign_id,
                CampaignOccurrence.status == OccurrenceStatus.SPOOLING,
            )
            .order_by(CampaignOccurrence.occurrence_at.desc())
            .limit(1)
        ).first()
        if occurrence is None:
            return None
        resend = bool((campaign.config or {}).get("resend"))
        run = Occurrence(occurrence.after_send_id, resend)
        if not build_batch(session, campaign, now, self._batch, run):
            return False
        occurrence.status = OccurrenceStatus.SPOOLED
        occurrence.spooled_at = now
        occurrence.summary = dict(campaign.audience_summary or {})
        self.metrics.occurrences.labels("spooled").inc()
        log.info(
            "automated campaign run spooled",
            extra={
                "campaign_id": campaign_id,
                "occurrence_at": occurrence.occurrence_at.isoformat(),
                "audience": occurrence.summary.get("accepted"),
                "already_received": occurrence.summary.get("already_received"),
                "owner": self.owner,
            },
        )
        return True

    def _finish(self, campaign_id: int) -> None:
        """An automated campaign past its run_to, its last run sent, is finished."""
        now = self._clock()
        with transaction(self._sessions) as session:
            campaign = _locked_running(session, campaign_id)
            schedule = _schedule(session, campaign) if campaign is not None else None
            if campaign is None or schedule is None or not schedule.over(now):
                return
            pending = exists().where(
                SpoolEntry.campaign_id == campaign_id, SpoolEntry.state.in_(PENDING_STATES)
            )
            if session.scalar(select(pending)):
                return  # retries of its last run are still due
            campaign.state = advance(campaign, Action.FINISH).value
            campaign.active = False
        self.metrics.finished.inc()
        log.info("automated campaign finished", extra={"campaign_id": campaign_id})

    def _notify(self) -> None:
        if self._on_work is not None:
            self._on_work()


def _locked_running(session: Session, campaign_id: int) -> Campaign | None:
    """The automated campaign, row-locked, if it is still running."""
    campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
    if campaign is None or campaign.state != State.RUNNING.value:
        return None
    if campaign.post_type != PostType.AUTOMATED or campaign.crontab is None:
        return None
    return campaign


def _schedule(session: Session, campaign: Campaign) -> Schedule | None:
    if campaign.crontab is None:
        return None
    last = session.scalar(
        select(func.max(CampaignOccurrence.occurrence_at)).where(
            CampaignOccurrence.campaign_id == campaign.id
        )
    )
    return Schedule(
        campaign.crontab, campaign.started_at, campaign.run_from, campaign.run_to, _aware(last)
    )


def _building(session: Session, campaign_id: int) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(
                    CampaignOccurrence.campaign_id == campaign_id,
                    CampaignOccurrence.status == OccurrenceStatus.SPOOLING,
                )
            )
        )
    )


def _aware(value: datetime | None) -> datetime | None:
    """An aggregate's datetime (None when there is no row)."""
    return None if value is None else as_utc(value)


@contextmanager
def background_scheduler(settings: Settings) -> Iterator[Scheduler]:
    """A scheduler on its own thread and engine for as long as the block runs
    (`envoi worker --scheduler`); the database must be migrated."""
    engine = make_engine(settings.database_url)
    scheduler = Scheduler.from_settings(settings, make_sessionmaker(engine))
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.stop()
        engine.dispose()
