"""A/B campaigns end to end: the test sample is mailed over SMTP, its messages are opened
and clicked over HTTP, the scheduler picks the winner from those hits in the event store
and the rest of the audience receives the winner.

Everything a user does goes through the API and the tracking URLs of the received
mail; the delivery worker sends to a real SMTP peer; the served app projects the outbox
into its event store; the scheduler runs on a `FrozenClock` the test moves and reads
that store. SQLite and PostgreSQL, each a database of this module's own.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from envoi.campaigns.models import Campaign
from envoi.campaigns.scheduler import Scheduler
from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.eventstore.interfaces import EventStore
from envoi.projects.services import create_project
from envoi.spool import services as spool
from envoi.spool.models import SpoolEntry
from envoi.testing.databases import sqlite_url, temporary_postgres_database
from envoi.testing.server import ServerThread
from envoi.testing.smtppeer import Received, SmtpPeer
from envoi.web.app import create_app
from tests.conftest import POSTGRES_URL, ApiProject, Backend
from tests.delivery_support import (
    WorkerClock,
    create_email,
    create_smtp_router,
    csv_of,
    data_url,
    running_worker,
    wait_until,
)
from tests.test_scheduler import FrozenClock

PUBLIC_URL = "http://envoi.test"
TRACKED = re.compile(re.escape(PUBLIC_URL) + r"/t/[a-z]/[^\s\"'<>]+")
BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
SCRIPT = "curl/8.5.0"  # a machine: its opens and clicks never count


@dataclass
class Served:
    backend: Backend
    app: FastAPI

    def store(self) -> EventStore | None:
        store: EventStore | None = self.app.state.event_store
        return store


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """envoi's API over a database of this module's own, with its event store and
    projector (as `envoi serve`), no in-process scheduler or delivery worker: each
    test runs its own."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"ab-{name}")
    with ExitStack() as stack:
        if name == "sqlite":
            url = sqlite_url(var_dir)
        else:
            url = stack.enter_context(temporary_postgres_database(POSTGRES_URL))
        upgrade(url)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        settings = Settings(
            database_url=url,
            var_dir=var_dir,
            secret_key="test-secret-key",
            public_url=PUBLIC_URL,
            auth_max_failures=1_000_000,
            deliver_in_process=False,
            scheduler_in_process=False,
            worker_poll_seconds=0.05,  # the projector's too
        )
        app = create_app(settings, engine)
        base_url = stack.enter_context(ServerThread(app))
        backend = Backend(name, url, base_url, make_sessionmaker(engine), settings)
        yield Served(backend, app)


@pytest.fixture
def project(served: Served) -> Iterator[ApiProject]:
    with transaction(served.backend.sessions) as session:
        creds = create_project(session, "AB", login=f"ab-{secrets.token_hex(6)}")
    with httpx.Client(
        base_url=f"{served.backend.base_url}/api/v1", auth=(creds.login, creds.secret), timeout=60
    ) as client:
        yield ApiProject(creds, client)
    with transaction(served.backend.sessions) as session:  # later tests see only theirs
        session.execute(
            update(Campaign)
            .where(Campaign.project_id == creds.id, Campaign.state.in_(["running", "planned"]))
            .values(state="paused")
        )


@pytest.fixture
def make_scheduler(served: Served) -> Iterator[Callable[..., Scheduler]]:
    made: list[Scheduler] = []
    lease_name = f"ab-{secrets.token_hex(4)}"

    def factory(clock: FrozenClock, **options: Any) -> Scheduler:
        options.setdefault("events", served.store)
        options.setdefault("lease_name", lease_name)
        scheduler = Scheduler(served.backend.sessions, clock=clock, **options)
        made.append(scheduler)
        return scheduler

    yield factory
    for scheduler in made:
        scheduler.stop()


# --- helpers ---------------------------------------------------------------------------------


def ab_campaign(project: ApiProject, addresses: list[str], **fields: Any) -> dict[str, Any]:
    body = {
        "message_type": "L",
        "source_type": "U",
        "source_uploaded_csv": data_url(csv_of(addresses)),
        **fields,
    }
    created = project.client.post("/ab-campaigns", json=body)
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    return answer


def read(project: ApiProject, campaign_id: int) -> dict[str, Any]:
    response = project.client.get(f"/ab-campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Mail:
    recipient: str
    subject: str
    opens: list[str]
    clicks: list[str]


def mail_of(received: Received, base_url: str) -> Mail:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("html",))
    assert isinstance(part, EmailMessage)
    urls = [u.replace("&amp;", "&") for u in TRACKED.findall(part.get_content())]
    urls = [u.replace(PUBLIC_URL, base_url) for u in urls]
    return Mail(
        received.recipients[0],
        str(message["Subject"]),
        [u for u in urls if "/t/o/" in u],
        [u for u in urls if "/t/c/" in u],
    )


def delivered_a_while_ago(served: Served, campaign_id: int) -> None:
    """Put the deliveries a minute back: a click seconds after delivery is a scanner's
    (`core.robots`), and these clicks are people's."""
    with transaction(served.backend.sessions) as session:
        session.execute(
            update(SpoolEntry)
            .where(SpoolEntry.campaign_id == campaign_id, SpoolEntry.state == "delivered")
            .values(updated_at=datetime.now(UTC) - timedelta(minutes=1))
        )


def hit(url: str, agent: str = BROWSER) -> None:
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        answer = client.get(url, headers={"User-Agent": agent})
    assert answer.status_code in {200, 302}, answer.text


def spooled(served: Served, campaign_id: int) -> list[SpoolEntry]:
    with served.backend.sessions() as session:
        query = select(SpoolEntry).where(SpoolEntry.campaign_id == campaign_id)
        return list(session.scalars(query.order_by(SpoolEntry.id)))


# --- the tests ----------------------------------------------------------------------------------


def test_the_winner_by_real_clicks_goes_to_the_rest_of_the_audience(
    served: Served, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    client = project.client
    addresses = [f"r{i:02}@example.com" for i in range(12)]
    with SmtpPeer() as peer:
        create_smtp_router(client, peer)
        emails = {
            name: create_email(client, subject=f"{name}: hello {{{{ first_name }}}}")
            for name in "ABC"
        }
        main_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        campaign = ab_campaign(
            project,
            addresses,
            message_id=emails["A"],
            ab_message_ids=[emails["B"], emails["C"]],
            ab_percent=50,  # 6 of 12: 2 per variant
            win_parameter="C",  # click rate
            main_planned_at=main_at.isoformat(),
        )
        assert (campaign["ab_phase"], campaign["ab_variants"], campaign["ab_main_at"]) == (
            None,
            None,
            None,
        )
        cid = campaign["id"]
        started = client.post(f"/ab-campaigns/{cid}/start")
        assert started.status_code == 200, started.text
        test = started.json()
        assert (test["state"], test["ab_phase"], test["ab_winner"]) == ("running", "test", None)
        assert when(test["ab_main_at"]) == main_at
        assert [(v["email_id"], v["message"], v["sample"]) for v in test["ab_variants"]] == [
            (emails[n], f"L_{emails[n]}", 2) for n in "ABC"
        ]
        assert {v["rate"] for v in test["ab_variants"]} == {None}

        worker_clock = WorkerClock()
        with running_worker(served.backend.settings, served.backend.sessions, worker_clock):
            # The test: the sample only, each variant to its share.
            received = peer.wait_for(6, timeout=30)
            wait_until(
                lambda: {r.state for r in spooled(served, cid)} == {"delivered"},
                what="the test's deliveries",
            )
            assert len(spooled(served, cid)) == 6
            assert read(project, cid)["state"] == "running"  # the winner's send is to come
            mails = [mail_of(r, served.backend.base_url) for r in received]
            by_variant = {n: [m for m in mails if m.subject.startswith(f"{n}:")] for n in "ABC"}
            assert [len(by_variant[n]) for n in "ABC"] == [2, 2, 2]
            delivered_a_while_ago(served, cid)

            # A's readers are scripts: their opens and clicks are machines', never counted.
            for mail in by_variant["A"]:
                hit(mail.opens[0], SCRIPT)
                hit(mail.clicks[0], SCRIPT)
            # B: both open, one clicks (twice: one click counted).
            b1, b2 = by_variant["B"]
            hit(b1.opens[0])
            hit(b1.clicks[0])
            hit(b1.clicks[0])
            hit(b2.opens[0])
            # C: both open and click.
            for mail in by_variant["C"]:
                hit(mail.opens[0])
                hit(mail.clicks[1])

            clock = FrozenClock(main_at - timedelta(minutes=1))
            scheduler = make_scheduler(clock)
            scheduler.tick()
            assert read(project, cid)["ab_phase"] == "test"  # not yet time

            clock.set(main_at + timedelta(seconds=1))
            # Decided once the projector has caught up with the hits.
            wait_until(
                lambda: (scheduler.tick(), read(project, cid)["ab_phase"] == "main")[1],
                what="the decision",
            )
            decided = read(project, cid)
            assert decided["ab_winner"] == emails["C"]
            assert when(decided["ab_decided_at"]) == main_at + timedelta(seconds=1)
            assert decided["ab_variants"] == [
                {
                    "email_id": emails["A"],
                    "message": f"L_{emails['A']}",
                    "sample": 2,
                    "delivered": 2,
                    "opened": 0,
                    "clicked": 0,
                    "rate": 0.0,
                    "winner": False,
                },
                {
                    "email_id": emails["B"],
                    "message": f"L_{emails['B']}",
                    "sample": 2,
                    "delivered": 2,
                    "opened": 2,
                    "clicked": 1,
                    "rate": 0.5,
                    "winner": False,
                },
                {
                    "email_id": emails["C"],
                    "message": f"L_{emails['C']}",
                    "sample": 2,
                    "delivered": 2,
                    "opened": 2,
                    "clicked": 2,
                    "rate": 1.0,
                    "winner": True,
                },
            ]

            # Exactly once: another scheduler (or this one again) decides nothing more.
            other = make_scheduler(clock, lease_name=f"other-{secrets.token_hex(3)}")
            other.tick()
            scheduler.tick()
            assert read(project, cid)["ab_decided_at"] == decided["ab_decided_at"]

            # The main phase is due when decided (an hour ahead of the worker's clock).
            worker_clock.advance(hours=2)
            rest = peer.wait_for(12, timeout=30)[6:]
            wait_until(lambda: read(project, cid)["state"] == "finished", what="the finish")

        test_sample = {m.recipient for m in mails}
        assert {r.recipients[0] for r in rest} == set(addresses) - test_sample
        assert {mail_of(r, served.backend.base_url).subject[:2] for r in rest} == {"C:"}
        assert {r.email_id for r in spooled(served, cid)[6:]} == {emails["C"]}
        assert len(spooled(served, cid)) == 12

    # The statistics group by variant: each email of post B_<id> is its own message.
    def report() -> list[dict[str, Any]]:
        fields = "message,sum_delivered,sum_opened_unique,sum_clicked_unique"
        answer = client.get("/stats", params={"fields": fields, "post": f"B_{cid}"})
        assert answer.status_code == 200, answer.text
        groups: list[dict[str, Any]] = answer.json()["result"]
        return groups

    groups = wait_until(
        lambda: (found := report())[-1]["sum_delivered"] == 12 and found,
        what="the projection of the main phase",
        show=report,
    )
    assert groups[:-1] == [
        {
            "message": f"L_{emails['A']}",
            "sum_delivered": 2,
            "sum_opened_unique": 0,
            "sum_clicked_unique": 0,
        },
        {
            "message": f"L_{emails['B']}",
            "sum_delivered": 2,
            "sum_opened_unique": 2,
            "sum_clicked_unique": 1,
        },
        {
            "message": f"L_{emails['C']}",
            "sum_delivered": 8,
            "sum_opened_unique": 2,
            "sum_clicked_unique": 2,
        },
    ]
    # The native metrics API's `variant` dimension: the same, and null for the messages
    # of other campaigns (none here).
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    start = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    body = {"start": start, "end": end, "dimensions": ["variant"], "metrics": ["delivered"]}
    answer = client.post(
        "/metrics", json=body | {"filter": {"field": "post", "op": "eq", "value": f"B_{cid}"}}
    )
    assert answer.status_code == 200, answer.text
    assert [(row["variant"], row["delivered"]) for row in answer.json()["rows"]] == [
        (f"L_{emails['A']}", 2),
        (f"L_{emails['B']}", 2),
        (f"L_{emails['C']}", 8),
    ]


def build_all(served: Served, now: datetime) -> None:
    """What a delivery worker does first: spool every started campaign's audience."""
    while True:
        with transaction(served.backend.sessions) as session:
            if not spool.build_step(session, now, 1000):
                return


def test_an_empty_sample_goes_to_the_first_variant_at_the_default_main_time(
    served: Served,
    project: ApiProject,
    make_scheduler: Callable[..., Scheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No main_planned_at: the winner is decided 4 hours after the test starts. Nobody
    opened anything: every rate is 0 and the tie goes to the first variant. The decision
    waits for the sample to be spooled, for a running campaign, and for the event store."""
    client = project.client
    email_a, email_b = create_email(client), create_email(client)
    test_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    addresses = ["ann@example.com", "bob@example.com", "cyd@example.com"]
    campaign = ab_campaign(
        project,
        addresses,
        message_id=email_a,
        ab_message_ids=[email_b],
        win_parameter="U",
        test_planned_at=test_at.isoformat(),
        start_immediately=True,
    )
    cid = campaign["id"]
    # 10 % of 3, but one recipient per variant.
    assert (campaign["state"], campaign["ab_phase"]) == ("planned", "test")
    assert [v["sample"] for v in campaign["ab_variants"]] == [1, 1]
    main_at = test_at + timedelta(hours=4)
    assert when(campaign["ab_main_at"]) == main_at

    clock = FrozenClock(test_at + timedelta(seconds=1))
    scheduler = make_scheduler(clock)
    scheduler.tick()
    assert read(project, cid)["state"] == "running"

    clock.set(main_at + timedelta(seconds=1))
    scheduler.tick()
    assert read(project, cid)["ab_phase"] == "test"  # no worker has spooled the sample yet
    build_all(served, test_at + timedelta(seconds=2))
    sample = spooled(served, cid)
    assert sorted(r.email_id for r in sample) == sorted([email_a, email_b])

    # A scheduler of a process without the event store waits, and says so.
    with caplog.at_level(logging.WARNING, logger="envoi.scheduler"):
        make_scheduler(clock, events=lambda: None).tick()
        make_scheduler(clock, events=None).tick()  # one that never decides: silent
    assert read(project, cid)["ab_phase"] == "test"
    warned = [r for r in caplog.records if r.getMessage() == "A/B test due but not decided"]
    assert len(warned) == 1

    # A paused test is decided once resumed.
    assert client.post(f"/ab-campaigns/{cid}/pause").status_code == 200
    scheduler.tick()
    assert read(project, cid)["ab_phase"] == "test"
    # (`resume` reads the real clock, an hour before the test time: planned, until the
    # scheduler's next tick.)
    assert client.post(f"/ab-campaigns/{cid}/resume").json()["state"] == "planned"
    wait_until(
        lambda: (scheduler.tick(), read(project, cid)["ab_phase"] == "main")[1],
        what="the decision",
    )
    decided = read(project, cid)
    assert decided["ab_winner"] == email_a
    assert [
        (v["delivered"], v["opened"], v["clicked"], v["rate"]) for v in decided["ab_variants"]
    ] == [
        (0, 0, 0, 0.0),
        (0, 0, 0, 0.0),
    ]
    assert [v["winner"] for v in decided["ab_variants"]] == [True, False]

    build_all(served, main_at + timedelta(seconds=2))
    rows = spooled(served, cid)
    assert [r.email_id for r in rows[2:]] == [email_a]
    assert sorted(r.recipient or "" for r in rows) == addresses
    assert rows[2].not_before == main_at + timedelta(seconds=1)  # sent once decided
