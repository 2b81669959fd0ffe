"""The scheduler: planned campaigns start on time, automated campaigns run on their crontab,
each time exactly once, across restarts and across schedulers sharing a database.

Campaigns, users and segments are made over HTTP, as a client does; schedulers run on a
`FrozenClock` the test moves (a tick is called directly, or threads tick on their own),
against this module's own database on SQLite and on PostgreSQL. What they did is read
back from the occurrence rows and the spool, and from the SMTP peer for a real delivery.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from envoi.campaigns import services
from envoi.campaigns.models import Campaign, CampaignOccurrence, SchedulerLease
from envoi.campaigns.scheduler import Scheduler
from envoi.core.campaign_states import Action
from envoi.db.session import transaction
from envoi.spool import services as spool
from envoi.spool.models import PENDING_STATES, SpoolEntry
from envoi.testing.server import ServerThread
from envoi.testing.smtppeer import SmtpPeer
from envoi.web.app import create_app
from tests.conftest import ApiProject, Backend, served_backend
from tests.delivery_support import (
    WORKER,
    create_email,
    create_smtp_router,
    csv_of,
    data_url,
    running_worker,
    wait_until,
)

EVERY_TEN = "*/10 * * * *"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database of this module's own, whose server runs no scheduler: each test runs
    its own, on its own clock."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"scheduler-{name}")
    with served_backend(name, var_dir, scheduler_in_process=False) as served:
        yield served


@pytest.fixture(autouse=True)
def quiet(backend: Backend) -> Iterator[None]:
    """Every campaign left running or planned is paused after each test: a later test's
    schedulers and workers see only their own."""
    yield
    with transaction(backend.sessions) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.state.in_(["running", "planned"]))
            .values(state="paused", active=False)
        )


class FrozenClock:
    """The time schedulers (and workers) see, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now


@pytest.fixture
def base_time() -> datetime:
    """The next round hour, where the tests' clocks begin: after the campaigns' real
    start (a run is never before its campaign started), and the first time of an hourly
    crontab after it."""
    return (datetime.now(UTC) + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


SchedulerFactory = Callable[..., Scheduler]


@pytest.fixture
def make_scheduler(backend: Backend) -> Iterator[SchedulerFactory]:
    """Schedulers on this test's own lease (so none left holding the lease by an earlier
    test is in the way); stopped at the end."""
    lease_name = f"test-{secrets.token_hex(4)}"
    made: list[Scheduler] = []

    def factory(clock: FrozenClock, **options: Any) -> Scheduler:
        scheduler = Scheduler(
            backend.sessions,
            clock=clock,
            tick_seconds=0.01,
            lease_name=options.pop("lease_name", lease_name),
            build_batch=options.pop("build_batch", 2),
            **options,
        )
        made.append(scheduler)
        return scheduler

    yield factory
    for scheduler in made:
        scheduler.stop()


# --- helpers: what a client does, what the database holds --------------------------------


def add_users(project: ApiProject, *emails: str) -> None:
    for address in emails:
        response = project.client.post("/users", json={"email": address})
        assert response.status_code == 201, response.text


def segment_of_everyone(project: ApiProject) -> int:
    body = {"name": "Everyone", "condition": {"field": "email", "op": "exists", "value": True}}
    response = project.client.post("/segments", json=body)
    assert response.status_code == 201, response.text
    segment_id: int = response.json()["id"]
    return segment_id


def automated(project: ApiProject, **fields: Any) -> dict[str, Any]:
    """An automated campaign of everyone with an email, started (`active: true`)."""
    body = {
        "message_type": "L",
        "message_id": create_email(project.client),
        "source_type": "S",
        "source_id": segment_of_everyone(project),
        "crontab": EVERY_TEN,
        "active": True,
        **fields,
    }
    response = project.client.post("/automated-campaigns", json=body)
    assert response.status_code == 201, response.text
    campaign: dict[str, Any] = response.json()
    return campaign


def read_campaign(project: ApiProject, campaign_id: int) -> dict[str, Any]:
    response = project.client.get(f"/automated-campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _json_lines(path: Path) -> list[str]:
    """The structured log lines of a process (a traceback's lines are not)."""
    return [line for line in path.read_text().splitlines() if line.startswith("{")]


def occurrences(backend: Backend, campaign_id: int) -> list[CampaignOccurrence]:
    with backend.sessions() as session:
        query = (
            select(CampaignOccurrence)
            .where(CampaignOccurrence.campaign_id == campaign_id)
            .order_by(CampaignOccurrence.occurrence_at)
        )
        return list(session.scalars(query))


def runs(backend: Backend, campaign_id: int) -> list[datetime]:
    """The times the campaign ran (its resume marks left out)."""
    return [o.occurrence_at for o in occurrences(backend, campaign_id) if o.status != "resumed"]


def spool_of(backend: Backend, campaign_id: int) -> list[SpoolEntry]:
    with backend.sessions() as session:
        query = (
            select(SpoolEntry).where(SpoolEntry.campaign_id == campaign_id).order_by(SpoolEntry.id)
        )
        return list(session.scalars(query))


def rows_by_run(backend: Backend, campaign_id: int) -> list[list[str]]:
    """Each run's spooled recipients, told apart by the runs' `after_send_id`."""
    ran = [o for o in occurrences(backend, campaign_id) if o.status == "spooled"]
    rows = spool_of(backend, campaign_id)
    bounds = [o.after_send_id for o in ran] + [max((r.id for r in rows), default=0)]
    return [
        sorted(r.recipient or "" for r in rows if low < r.id <= high)
        for low, high in itertools.pairwise(bounds)
    ]


def minutes(start: datetime, *offsets: int) -> list[datetime]:
    return [start + timedelta(minutes=m) for m in offsets]


def tick_through(scheduler: Scheduler, clock: FrozenClock, times: list[datetime]) -> None:
    for now in times:
        clock.set(now)
        assert scheduler.tick()


def sample(scheduler: Scheduler, name: str, **labels: str) -> float | None:
    return scheduler.metrics.registry.get_sample_value(name, labels)


# --- crontab runs ---------------------------------------------------------------------------


def test_cron_runs_exactly_the_expected_times(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    add_users(project, "ann@example.com", "bob@example.com")
    campaign = automated(project)
    assert (campaign["state"], campaign["active"]) == ("running", True)
    clock = FrozenClock(base_time)
    scheduler = make_scheduler(clock)

    # Every minute for 36 minutes: the crontab's times in that span run, each once.
    tick_through(scheduler, clock, minutes(base_time, *range(36)))
    assert runs(backend, campaign["id"]) == minutes(base_time, 0, 10, 20, 30)
    assert {o.status for o in occurrences(backend, campaign["id"])} == {"spooled"}
    # The first run mailed both; the later ones found nobody new.
    assert rows_by_run(backend, campaign["id"]) == [
        ["ann@example.com", "bob@example.com"],
        [],
        [],
        [],
    ]
    last_build = read_campaign(project, campaign["id"])["audience"]["last_build"]
    assert last_build["occurrence_at"] == (base_time + timedelta(minutes=30)).isoformat()
    assert (last_build["accepted"], last_build["already_received"]) == (2, 2)
    assert sample(scheduler, "envoi_scheduler_occurrences_total", outcome="spooled") == 4


def test_a_run_happens_at_its_time_not_before(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    add_users(project, "ann@example.com")
    # Hourly: `base_time` is its first time after the campaign started.
    campaign = automated(project, crontab="0 * * * *")
    clock = FrozenClock(base_time - timedelta(microseconds=1))
    scheduler = make_scheduler(clock)
    assert scheduler.tick()
    assert runs(backend, campaign["id"]) == []
    clock.set(base_time)
    assert scheduler.tick()
    assert runs(backend, campaign["id"]) == [base_time]


def test_run_from_and_run_to_bound_the_runs(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    # Nobody to mail: once run_to has passed, the campaign is finished.
    campaign = automated(
        project,
        run_from=(base_time + timedelta(minutes=15)).isoformat(),
        run_to=(base_time + timedelta(minutes=40)).isoformat(),
    )
    clock = FrozenClock(base_time)
    scheduler = make_scheduler(clock)
    tick_through(scheduler, clock, minutes(base_time, *range(0, 41, 5)))
    assert runs(backend, campaign["id"]) == minutes(base_time, 20, 30, 40)
    assert read_campaign(project, campaign["id"])["state"] == "running"

    tick_through(scheduler, clock, minutes(base_time, 45, 60))
    assert runs(backend, campaign["id"]) == minutes(base_time, 20, 30, 40)
    finished = read_campaign(project, campaign["id"])
    assert (finished["state"], finished["active"]) == ("finished", False)


def test_inactive_campaigns_never_run(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    add_users(project, "ann@example.com")
    draft = automated(project, active=False)
    assert (draft["state"], draft["active"]) == ("draft", False)
    paused = automated(project)
    response = project.client.post(f"/automated-campaigns/{paused['id']}/pause")
    assert response.json()["active"] is False
    no_crontab = automated(project, crontab=None)
    clock = FrozenClock(base_time)
    scheduler = make_scheduler(clock)
    tick_through(scheduler, clock, minutes(base_time, 0, 10, 20))
    for campaign in (draft, paused, no_crontab):
        assert occurrences(backend, campaign["id"]) == []
        assert spool_of(backend, campaign["id"]) == []


def test_times_missed_while_paused_are_skipped_and_an_outage_runs_the_latest_once(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    add_users(project, "ann@example.com")
    campaign = automated(project)
    clock = FrozenClock(base_time)
    scheduler = make_scheduler(clock)
    tick_through(scheduler, clock, minutes(base_time, 0))

    # Paused from :05 to :25 (the API has no clock to move, so the service is called
    # with the times): :10 and :20 fell while paused and are not made up at :25.
    for action, at in ((Action.PAUSE, 5), (Action.RESUME, 25)):
        with transaction(backend.sessions) as session:
            services.act(
                session,
                project.id,
                "A",
                campaign["id"],
                action=action,
                now=base_time + timedelta(minutes=at),
            )
    tick_through(scheduler, clock, minutes(base_time, 25, 29, 30))
    assert runs(backend, campaign["id"]) == minutes(base_time, 0, 30)

    # No scheduler from :31 to :75 (an outage): at :75 the latest missed time, :70,
    # runs once; :40 to :60 are not replayed.
    tick_through(scheduler, clock, minutes(base_time, 75, 76, 79))
    assert runs(backend, campaign["id"]) == minutes(base_time, 0, 30, 70)


# --- exactly once ---------------------------------------------------------------------------


def test_a_restarted_scheduler_never_reruns_a_time(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    add_users(project, "ann@example.com")
    # Every run mails ann (`resend`): a run made twice would show.
    campaign = automated(project, config={"resend": True})
    clock = FrozenClock(base_time)
    first = make_scheduler(clock)
    tick_through(first, clock, minutes(base_time, 0, 5, 10))
    first.stop()  # a graceful stop gives the lease up

    second = make_scheduler(clock)
    tick_through(second, clock, minutes(base_time, 10, 15, 20))
    # `second` dies without giving the lease up: a third waits for it to expire.
    third = make_scheduler(clock)
    assert not third.tick()
    clock.set(base_time + timedelta(minutes=20, seconds=31))
    assert third.tick()
    tick_through(third, clock, minutes(base_time, 21, 30))

    ran = occurrences(backend, campaign["id"])
    assert [o.occurrence_at for o in ran] == minutes(base_time, 0, 10, 20, 30)
    assert [o.owner for o in ran] == [first.owner, first.owner, second.owner, third.owner]
    assert rows_by_run(backend, campaign["id"]) == [["ann@example.com"]] * 4


def test_one_lease_one_active_scheduler(
    backend: Backend, make_scheduler: SchedulerFactory, base_time: datetime
) -> None:
    clock = FrozenClock(base_time)
    one, two = make_scheduler(clock), make_scheduler(clock)
    assert [one.tick(), two.tick()] == [True, False]
    # Renewed every third of its 30 s, so it never lapses while `one` ticks.
    for seconds in (10, 20, 30, 40, 50):
        clock.set(base_time + timedelta(seconds=seconds))
        assert [one.tick(), two.tick()] == [True, False]
    assert sample(one, "envoi_scheduler_lease_held") == 1
    assert sample(two, "envoi_scheduler_lease_held") == 0
    with backend.sessions() as session:
        lease = session.scalars(
            select(SchedulerLease).where(SchedulerLease.owner == one.owner)
        ).one()
        assert lease.expires_at == base_time + timedelta(seconds=80)


def test_two_schedulers_at_once_run_each_time_once(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    """Two schedulers on threads that both believe they are the active one (each on a
    lease of its own, as after a split): the occurrence rows still let one run each
    time, and its spool is built once."""
    emails = [f"user{i}@example.com" for i in range(5)]
    add_users(project, *emails)
    campaign = automated(project, config={"resend": True})
    clock = FrozenClock(base_time)
    schedulers = [
        make_scheduler(clock, lease_name=f"split-{i}-{secrets.token_hex(3)}") for i in (1, 2)
    ]
    for scheduler in schedulers:
        scheduler.start()

    def statuses() -> list[str]:
        return [o.status for o in occurrences(backend, campaign["id"])]

    def spooled(count: int) -> Callable[[], bool]:
        return lambda: statuses() == ["spooled"] * count

    for count, at in enumerate(range(0, 40, 10), start=1):
        clock.set(base_time + timedelta(minutes=at))
        wait_until(spooled(count), what=f"the run of :{at:02}", show=statuses)
    assert [sample(s, "envoi_scheduler_lease_held") for s in schedulers] == [1, 1]
    for scheduler in schedulers:
        scheduler.stop()

    assert runs(backend, campaign["id"]) == minutes(base_time, 0, 10, 20, 30)
    assert rows_by_run(backend, campaign["id"]) == [emails] * 4
    assert Counter(r.recipient for r in spool_of(backend, campaign["id"])) == dict.fromkeys(
        emails, 4
    )


# --- who a run reaches, and real mail --------------------------------------------------------


def test_each_run_reaches_only_new_recipients_over_smtp(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    add_users(project, "ann@example.com", "bob@example.com")
    clock = FrozenClock(base_time)
    with SmtpPeer() as peer:
        create_smtp_router(project.client, peer)
        campaign = automated(project)
        scheduler = make_scheduler(clock)
        with running_worker(backend.settings, backend.sessions, clock):
            tick_through(scheduler, clock, minutes(base_time, 0))
            wait_until(
                lambda: sorted(peer.recipients()) == ["ann@example.com", "bob@example.com"],
                what="the first run's mail",
                show=peer.recipients,
            )
            # A new user joins the segment; ann's profile changes (she stays in it).
            add_users(project, "cid@example.com")
            response = project.client.post(
                "/users", json={"email": "ann@example.com", "language": "fr"}
            )
            assert response.status_code == 201, response.text
            tick_through(scheduler, clock, minutes(base_time, 10))
            wait_until(
                lambda: len(peer.recipients()) == 3,
                what="the second run's mail",
                show=peer.recipients,
            )
            tick_through(scheduler, clock, minutes(base_time, 20))
            wait_until(
                lambda: (
                    not any(r.state in PENDING_STATES for r in spool_of(backend, campaign["id"]))
                ),
                what="every row sent",
            )
        received = peer.recipients()
    assert sorted(received) == ["ann@example.com", "bob@example.com", "cid@example.com"]
    assert rows_by_run(backend, campaign["id"]) == [
        ["ann@example.com", "bob@example.com"],
        ["cid@example.com"],
        [],
    ]
    assert {r.state for r in spool_of(backend, campaign["id"])} == {"delivered"}
    summaries = [o.summary or {} for o in occurrences(backend, campaign["id"])]
    assert [(s["accepted"], s["already_received"]) for s in summaries] == [(2, 0), (3, 2), (3, 3)]


def test_a_broken_source_fails_the_run_once(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    add_users(project, "ann@example.com")
    campaign = automated(project)
    with transaction(backend.sessions) as session:  # a field the condition names is gone
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign["id"])
            .values(source_id=_broken_segment(backend, project))
        )
    clock = FrozenClock(base_time)
    scheduler = make_scheduler(clock)
    tick_through(scheduler, clock, minutes(base_time, 0, 1, 2))
    (failed,) = occurrences(backend, campaign["id"])
    assert (failed.occurrence_at, failed.status) == (base_time, "failed")
    assert failed.error is not None
    assert "cannot be generated" in failed.error
    assert spool_of(backend, campaign["id"]) == []
    assert read_campaign(project, campaign["id"])["state"] == "running"


def _broken_segment(backend: Backend, project: ApiProject) -> int:
    from envoi.segments.models import Segment  # noqa: PLC0415

    with transaction(backend.sessions) as session:
        segment = Segment(
            project_id=project.id,
            name="Broken",
            condition={"field": "no_such_field", "op": "eq", "value": 1},
        )
        session.add(segment)
        session.flush()
        return segment.id


# --- planned campaigns ----------------------------------------------------------------------


def test_a_planned_campaign_starts_at_planned_at_not_before(
    backend: Backend,
    project: ApiProject,
    make_scheduler: SchedulerFactory,
    base_time: datetime,
) -> None:
    planned_at = base_time + timedelta(minutes=5)
    body = {
        "message_type": "L",
        "message_id": create_email(project.client),
        "source_type": "U",
        "source_uploaded_csv": data_url(
            csv_of(["a@example.com", "b@example.com", "c@example.com"])
        ),
        "planned_at": planned_at.isoformat(),
        "send_during_hours": 1,
        "start_immediately": True,
    }
    created = project.client.post("/campaigns", json=body)
    assert created.status_code == 201, created.text
    path = f"/campaigns/{created.json()['id']}"
    assert created.json()["state"] == "planned"
    clock = FrozenClock(planned_at - timedelta(microseconds=1))
    scheduler = make_scheduler(clock)
    assert scheduler.tick()
    assert project.client.get(path).json()["state"] == "planned"
    clock.set(planned_at)
    assert scheduler.tick()
    assert project.client.get(path).json()["state"] == "running"
    assert sample(scheduler, "envoi_scheduler_campaigns_started_total") == 1

    # The workers build its spool from the planned time, spread over the hour.
    with transaction(backend.sessions) as session:
        while spool.build_step(session, planned_at):
            pass
    rows = spool_of(backend, created.json()["id"])
    assert [r.not_before for r in rows] == [planned_at + timedelta(minutes=m) for m in (0, 20, 40)]


# --- the scheduler in `envoi serve` and in `envoi worker --scheduler` --------------------------


def test_serve_runs_the_scheduler(backend: Backend, project: ApiProject) -> None:
    """The app's lifespan runs a scheduler on the real clock: it holds the lease, starts
    a campaign planned a second ahead, and shows its metrics."""
    settings = backend.settings.model_copy(
        update={"scheduler_in_process": True, "scheduler_tick_seconds": 0.05}
    )
    app = create_app(settings, backend.sessions.kw["bind"])
    planned_at = datetime.now(UTC) + timedelta(seconds=2)
    body = {
        "message_type": "L",
        "message_id": create_email(project.client),
        "source_type": "U",
        "source_uploaded_csv": data_url(csv_of(["a@example.com"])),
        "planned_at": planned_at.isoformat(),
        "start_immediately": True,
    }
    with ServerThread(app) as base_url:
        client = httpx.Client(
            base_url=f"{base_url}/api/v1",
            auth=(project.creds.login, project.creds.secret),
            timeout=30,
        )
        with client:
            created = client.post("/campaigns", json=body).json()
            assert created["state"] == "planned"
            wait_until(
                lambda: client.get(f"/campaigns/{created['id']}").json()["state"] == "running",
                timeout=15,
                what="the planned campaign to start",
            )
            metrics = httpx.get(f"{base_url}/metrics").text
        assert "envoi_scheduler_lease_held 1.0" in metrics
        assert "envoi_scheduler_campaigns_started_total 1.0" in metrics
        owner = app.state.scheduler.owner
    with backend.sessions() as session:  # stopped: the lease was given up
        lease = session.get(SchedulerLease, "scheduler")
        assert lease is not None
        assert lease.owner == owner
        assert lease.expires_at <= datetime.now(UTC)


def test_worker_processes_with_scheduler_run_each_time_once(
    backend: Backend, project: ApiProject, tmp_path: Path
) -> None:
    """Two `envoi worker --scheduler` processes on the same database, on the real clock,
    a crontab every second: one scheduler is active, each time runs once."""
    emails = ["ann@example.com", "bob@example.com"]
    add_users(project, *emails)
    # croniter: seconds last
    campaign = automated(project, crontab="* * * * * *", config={"resend": True})
    env = {
        **os.environ,
        "ENVOI_DATABASE_URL": backend.database_url,
        "ENVOI_VAR_DIR": str(backend.settings.var_dir),
        "ENVOI_SECRET_KEY": backend.settings.secret_key,
        "ENVOI_SCHEDULER_TICK_SECONDS": "0.1",
    }
    logs = [tmp_path / f"worker{i}.log" for i in (1, 2)]
    processes = []
    for log_path in logs:
        with log_path.open("w") as log:
            processes.append(
                subprocess.Popen(  # noqa: S603 - our own console script
                    [*WORKER, "--scheduler"], env=env, stdout=log, stderr=log, text=True
                )
            )
    try:
        wait_until(
            lambda: (
                [o.status for o in occurrences(backend, campaign["id"])][:2]
                == ["spooled", "spooled"]
            ),
            timeout=30,
            what="two runs",
            show=lambda: [p.poll() for p in processes],
        )
    finally:
        stopping = datetime.now(UTC)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    ran = [o for o in occurrences(backend, campaign["id"]) if o.claimed_at < stopping]
    times = [o.occurrence_at for o in ran]
    assert times == sorted(set(times))
    assert all(t.microsecond == 0 for t in times)
    # One scheduler was active the whole time; each run it finished spooled everyone once
    # (a run claimed as the processes stopped may be left to build on the next start).
    assert len({o.owner for o in ran}) == 1
    assert [o.status for o in ran[:-1]] == ["spooled"] * (len(ran) - 1)
    spooled = [o for o in ran if o.status == "spooled"]
    assert rows_by_run(backend, campaign["id"]) == [emails] * len(spooled)
    # The active one gives the lease up as it stops: the other may take it before its
    # own SIGTERM lands. Before the stop, one acquisition.
    acquired = [
        line
        for path in logs
        for line in map(json.loads, _json_lines(path))
        if line.get("msg") == "scheduler lease acquired"
        and datetime.fromisoformat(line["ts"]) < stopping
    ]
    assert len(acquired) == 1
