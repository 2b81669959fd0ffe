"""Event-driven automated campaigns: an API event or a profile change fires a mail.

Campaigns, users and events are made over HTTP, as a client does; the scheduler that
turns due firings into spool rows runs on a `FrozenClock` the test moves, against
this module's own database on SQLite and on PostgreSQL; the mail itself goes through
a delivery worker to a real SMTP peer. What happened is read back from the peer, the
trigger queue and the spool.
"""

from __future__ import annotations

import email
import email.policy
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from envoi.automation.models import CampaignTrigger
from envoi.campaigns.models import Campaign
from envoi.campaigns.scheduler import Scheduler
from envoi.db.session import transaction
from envoi.spool.models import SpoolEntry
from envoi.testing.smtppeer import SmtpPeer
from tests.conftest import ApiProject, Backend, served_backend
from tests.delivery_support import create_email, create_smtp_router, running_worker

WELCOME_HTML = (
    "<html><body><p>Welcome {{ first_name }} to the {{ event.plan }} plan"
    " ({{ plan }}).</p></body></html>"
)
WELCOME_TEXT = "Welcome {{ first_name }} to the {{ event.plan }} plan."


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database of this module's own, whose server runs no scheduler: each test runs
    its own, on its own clock."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"triggers-{name}")
    with served_backend(name, var_dir, scheduler_in_process=False) as served:
        yield served


@pytest.fixture(autouse=True)
def quiet(backend: Backend) -> Iterator[None]:
    """Campaigns left running are paused after each test: a later test's schedulers see
    only their own firings."""
    yield
    with transaction(backend.sessions) as session:
        session.execute(update(Campaign).where(Campaign.state == "running").values(state="paused"))


class FrozenClock:
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
def make_scheduler(backend: Backend) -> Iterator[Callable[..., Scheduler]]:
    lease_name = f"test-{secrets.token_hex(4)}"
    made: list[Scheduler] = []

    def factory(clock: FrozenClock, **options: Any) -> Scheduler:
        scheduler = Scheduler(
            backend.sessions,
            clock=clock,
            tick_seconds=0.01,
            lease_name=lease_name,
            build_batch=options.pop("build_batch", 100),
            **options,
        )
        made.append(scheduler)
        return scheduler

    yield factory
    for scheduler in made:
        scheduler.stop()


def soon() -> datetime:
    """A moment after every firing a test made so far (they are stamped with real time)."""
    return datetime.now(UTC) + timedelta(seconds=1)


# --- helpers: what a client does, what the database holds --------------------------------


def triggered(project: ApiProject, trigger: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An automated campaign on `trigger`, started (`active: true`)."""
    body = {
        "message_type": "L",
        "message_id": fields.pop("message_id", None) or create_email(project.client),
        "trigger": trigger,
        "active": True,
        **fields,
    }
    response = project.client.post("/automated-campaigns", json=body)
    assert response.status_code == 201, response.text
    campaign: dict[str, Any] = response.json()
    return campaign


def post_event(client: httpx.Client, name: str, payload: dict[str, Any]) -> None:
    response = client.post("/events", json={"name": name, "payload": payload})
    assert response.status_code == 201, response.text


def upsert(project: ApiProject, email_address: str, **fields: Any) -> None:
    response = project.client.post("/users", json={"email": email_address, "fields": fields})
    assert response.status_code == 201, response.text


def declare(project: ApiProject, name: str, type_: str = "String") -> None:
    response = project.client.post("/fields", json={"name": name, "type": type_})
    assert response.status_code == 201, response.text


def firings(backend: Backend, campaign_id: int) -> list[CampaignTrigger]:
    with backend.sessions() as session:
        query = (
            select(CampaignTrigger)
            .where(CampaignTrigger.campaign_id == campaign_id)
            .order_by(CampaignTrigger.id)
        )
        return list(session.scalars(query))


def outcomes(backend: Backend, campaign_id: int) -> Counter[str]:
    return Counter(row.reason or row.state for row in firings(backend, campaign_id))


def spool_of(backend: Backend, campaign_id: int) -> list[SpoolEntry]:
    with backend.sessions() as session:
        query = (
            select(SpoolEntry).where(SpoolEntry.campaign_id == campaign_id).order_by(SpoolEntry.id)
        )
        return list(session.scalars(query))


def campaign_count(backend: Backend, project: ApiProject) -> int:
    with backend.sessions() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Campaign).where(Campaign.project_id == project.id)
            )
            or 0
        )


def body_text(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    text: str = part.get_content()
    return text


# --- an API event ------------------------------------------------------------------------


def test_an_event_sends_the_welcome_mail_with_its_payload_over_smtp(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    declare(project, "first_name")
    upsert(project, "ann@example.com", first_name="Ann")
    with SmtpPeer() as peer:
        create_smtp_router(project.client, peer)
        email_id = create_email(
            project.client,
            subject="Welcome {{ first_name }}",
            text_html=WELCOME_HTML,
            text_plain=WELCOME_TEXT,
        )
        campaign = triggered(project, {"event": "login_user"}, message_id=email_id)
        assert campaign["source_type"] == "E"
        assert campaign["source_id"] is None
        assert campaign["trigger"] == {
            "event": "login_user",
            "delay_minutes": 0,
            "condition": None,
            "payload_condition": None,
        }
        post_event(project.client, "login_user", {"email": "ann@example.com", "plan": "pro"})
        post_event(project.client, "logout_user", {"email": "ann@example.com"})
        # The event is queued by the request; nothing is sent until the scheduler runs.
        assert [f.state for f in firings(backend, campaign["id"])] == ["pending"]

        clock = FrozenClock(soon())
        with running_worker(backend.settings, backend.sessions, clock):
            assert make_scheduler(clock).tick()
            [received] = peer.wait_for(1, timeout=30)
    assert received.recipients == ("ann@example.com",)
    assert "Welcome Ann to the pro plan." in body_text(received.data)
    [firing] = firings(backend, campaign["id"])
    [row] = spool_of(backend, campaign["id"])
    assert (firing.state, firing.send_id) == ("spooled", row.id)
    assert row.params["event"] == {"email": "ann@example.com", "plan": "pro"}


def test_a_trigger_can_be_sent_as_a_form_field(project: ApiProject) -> None:
    form = {
        "message_type": "L",
        "message_id": str(create_email(project.client)),
        "trigger": '{"event": "signup", "delay_minutes": 5}',
    }
    # multipart/form-data with plain fields only (no filename: not file parts).
    parts = {name: (None, value) for name, value in form.items()}
    response = project.client.post("/automated-campaigns", files=parts)
    assert response.status_code == 201, response.text
    assert response.json()["trigger"]["delay_minutes"] == 5
    assert response.json()["state"] == "draft"


def test_an_event_for_an_unknown_person_creates_the_profile_and_mails_it(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    campaign = triggered(project, {"event": "signup"})
    post_event(project.client, "signup", {"email": "new@example.com"})
    clock = FrozenClock(soon())
    assert make_scheduler(clock).tick()
    assert [(r.recipient, r.state) for r in spool_of(backend, campaign["id"])] == [
        ("new@example.com", "queued")
    ]


def test_the_delay_is_honoured(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    campaign = triggered(project, {"event": "cart_abandoned", "delay_minutes": 30})
    fired_at = datetime.now(UTC)
    post_event(project.client, "cart_abandoned", {"email": "ann@example.com"})
    clock = FrozenClock(fired_at + timedelta(minutes=29))
    scheduler = make_scheduler(clock)
    assert scheduler.tick()
    assert spool_of(backend, campaign["id"]) == []
    [firing] = firings(backend, campaign["id"])
    assert firing.state == "pending"
    assert firing.due_at - firing.fired_at == timedelta(minutes=30)

    clock.set(fired_at + timedelta(minutes=31))
    assert scheduler.tick()
    [row] = spool_of(backend, campaign["id"])
    assert row.recipient == "ann@example.com"
    assert row.not_before == clock()


def test_conditions_on_the_payload_and_the_profile_filter(
    backend: Backend,
    project: ApiProject,
    other_project: ApiProject,
    make_scheduler: Callable[..., Scheduler],
) -> None:
    declare(project, "city")
    upsert(project, "paris@example.com", city="Paris")
    upsert(project, "berlin@example.com", city="Berlin")
    trigger = {
        "event": "purchase",
        "payload_condition": {
            "and": [
                {"payload": "plan", "op": "eq", "value": "pro"},
                {"payload": "order.total", "op": "ge", "value": 100},
            ]
        },
        "condition": {"field": "city", "op": "eq", "value": "Paris"},
    }
    campaign = triggered(project, trigger)
    for address, plan, total in (
        ("paris@example.com", "pro", 150),  # mailed
        ("paris@example.com", "basic", 150),  # the payload's plan
        ("paris@example.com", "pro", 50),  # the payload's nested total
        ("berlin@example.com", "pro", 150),  # the profile's city
    ):
        post_event(
            project.client, "purchase", {"email": address, "plan": plan, "order": {"total": total}}
        )
    assert make_scheduler(FrozenClock(soon())).tick()
    assert outcomes(backend, campaign["id"]) == Counter(
        {"spooled": 1, "payload_condition": 2, "condition": 1}
    )
    assert [r.recipient for r in spool_of(backend, campaign["id"])] == ["paris@example.com"]
    # What the client sees: the firings and why the skipped ones were.
    path = f"/automated-campaigns/{campaign['id']}/triggers"
    skipped = project.client.get(path, params={"state": "skipped"})
    assert skipped.status_code == 200, skipped.text
    assert sorted(f["reason"] for f in skipped.json()) == [
        "condition",
        "payload_condition",
        "payload_condition",
    ]
    [spooled] = project.client.get(path, params={"state": "spooled"}).json()
    assert spooled["payload"] == {
        "email": "paris@example.com",
        "plan": "pro",
        "order": {"total": 150},
    }
    assert spooled["send_id"] == spool_of(backend, campaign["id"])[0].id
    assert other_project.client.get(path).status_code == 404


def test_the_same_event_is_never_sent_twice(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    campaign = triggered(project, {"event": "login_user"})
    post_event(project.client, "login_user", {"email": "ann@example.com"})
    post_event(project.client, "login_user", {"email": "ann@example.com"})
    clock = FrozenClock(soon())
    first = make_scheduler(clock)
    assert first.tick()
    assert first.tick()
    first.stop()  # a restart: a new scheduler finds nothing left to do
    second = make_scheduler(clock)
    assert second.tick()
    # Two events, two mails: each event once.
    assert len(spool_of(backend, campaign["id"])) == 2
    assert [f.state for f in firings(backend, campaign["id"])] == ["spooled", "spooled"]


def test_run_from_and_run_to_bound_when_events_count(backend: Backend, project: ApiProject) -> None:
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    waiting = triggered(project, {"event": "login_user"}, run_from=later)
    over = triggered(project, {"event": "login_user"}, run_to=earlier)
    now_open = triggered(project, {"event": "login_user"}, run_from=earlier, run_to=later)
    post_event(project.client, "login_user", {"email": "ann@example.com"})
    assert [len(firings(backend, c["id"])) for c in (waiting, over, now_open)] == [0, 0, 1]


def test_the_sending_policy_applies(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    response = project.client.post(
        "/quarantine", json={"address": "blocked@example.com", "reason": "manual"}
    )
    assert response.status_code in (200, 201), response.text
    campaign = triggered(project, {"event": "login_user"})
    post_event(project.client, "login_user", {"email": "blocked@example.com"})
    assert make_scheduler(FrozenClock(soon())).tick()
    [row] = spool_of(backend, campaign["id"])
    assert (row.state, row.reason) == ("quarantined", "manual")


def test_paused_campaigns_hear_nothing_and_keep_their_queue_archived_ones_drop_it(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    campaign = triggered(project, {"event": "login_user", "delay_minutes": 10})
    post_event(project.client, "login_user", {"email": "ann@example.com"})
    assert project.client.post(f"/automated-campaigns/{campaign['id']}/pause").is_success
    post_event(project.client, "login_user", {"email": "bob@example.com"})  # not listening
    clock = FrozenClock(soon() + timedelta(minutes=11))
    scheduler = make_scheduler(clock)
    assert scheduler.tick()
    assert [f.state for f in firings(backend, campaign["id"])] == ["pending"]  # waits

    assert project.client.post(f"/automated-campaigns/{campaign['id']}/resume").is_success
    assert scheduler.tick()
    assert [r.recipient for r in spool_of(backend, campaign["id"])] == ["ann@example.com"]

    other = triggered(project, {"event": "login_user", "delay_minutes": 10})
    post_event(project.client, "login_user", {"email": "cid@example.com"})
    assert project.client.post(f"/automated-campaigns/{other['id']}/pause").is_success
    assert project.client.post(f"/automated-campaigns/{other['id']}/archive").is_success
    clock.set(soon() + timedelta(minutes=11))
    assert scheduler.tick()
    assert outcomes(backend, other["id"]) == Counter({"campaign_ended": 1})


def test_an_erased_person_is_not_mailed_by_a_waiting_firing(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    campaign = triggered(project, {"event": "login_user", "delay_minutes": 10})
    post_event(project.client, "login_user", {"email": "ann@example.com"})
    post_event(project.client, "login_user", {"email": "bob@example.com"})
    response = project.client.delete("/users", params={"email": "ann@example.com"})
    assert response.status_code == 204, response.text
    assert make_scheduler(FrozenClock(soon() + timedelta(minutes=11))).tick()
    assert [f.payload["email"] for f in firings(backend, campaign["id"])] == ["bob@example.com"]
    assert [r.recipient for r in spool_of(backend, campaign["id"])] == ["bob@example.com"]


# --- a profile change ------------------------------------------------------------------------


def test_a_profile_update_fires_its_field_trigger(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    declare(project, "plan")
    declare(project, "first_name")
    upsert(project, "ann@example.com", first_name="Ann")
    upsert(project, "bob@example.com", plan="basic")
    with SmtpPeer() as peer:
        create_smtp_router(project.client, peer)
        email_id = create_email(
            project.client,
            subject="Your plan",
            text_plain="{{ first_name }}: {{ event.old }} -> {{ event.new }}",
        )
        campaign = triggered(project, {"field": "plan"}, message_id=email_id)
        assert campaign["trigger"]["on"] == "change"

        upsert(project, "ann@example.com", plan="pro")  # set: fires
        upsert(project, "ann@example.com", plan="pro")  # the same value: nothing
        upsert(project, "ann@example.com", first_name="Anne")  # another field: nothing
        response = project.client.post(
            "/users/bulk",
            json=[
                {"email": "bob@example.com", "fields": {"plan": "pro"}},  # changed: fires
                {"email": "cid@example.com", "fields": {"plan": "pro"}},  # new profile: fires
                {"email": "dan@example.com", "fields": {"first_name": "Dan"}},  # no plan
            ],
        )
        assert response.status_code == 202, response.text
        upsert(project, "bob@example.com", plan=None)  # cleared: nothing

        payloads = sorted(
            (f.payload["old"] or "", f.payload["new"]) for f in firings(backend, campaign["id"])
        )
        assert payloads == [("", "pro"), ("", "pro"), ("basic", "pro")]
        clock = FrozenClock(soon())
        with running_worker(backend.settings, backend.sessions, clock):
            assert make_scheduler(clock).tick()
            received = peer.wait_for(3, timeout=30)
    texts = {m.recipients[0]: body_text(m.data).splitlines()[0] for m in received}
    assert texts == {
        "ann@example.com": "Anne: None -> pro",
        "bob@example.com": ": basic -> pro",
        "cid@example.com": ": None -> pro",
    }


def test_on_set_fires_only_when_the_field_had_no_value(
    backend: Backend, project: ApiProject
) -> None:
    declare(project, "company")
    campaign = triggered(project, {"field": "company", "on": "set"})
    upsert(project, "ann@example.com", company="Acme")  # set: fires
    upsert(project, "ann@example.com", company="Initech")  # changed, not set: nothing
    assert [f.payload for f in firings(backend, campaign["id"])] == [
        {"field": "company", "old": None, "new": "Acme"}
    ]


# --- a burst --------------------------------------------------------------------------------

BURST = 1000
CLIENTS = 16


def test_a_burst_of_events_is_all_queued_then_all_spooled(
    backend: Backend, project: ApiProject, make_scheduler: Callable[..., Scheduler]
) -> None:
    """1,000 concurrent events over HTTP (bench/triggers.py sends 10,000): each answered
    201 at once, each queued, each spooled once."""
    campaign = triggered(project, {"event": "visit"})

    def send(numbers: range) -> Counter[int]:
        codes: Counter[int] = Counter()
        with httpx.Client(
            base_url=project.client.base_url, auth=project.client.auth, timeout=60
        ) as client:
            for i in numbers:
                payload = {"email": f"u{i}@example.com", "n": i}
                response = client.post("/events", json={"name": "visit", "payload": payload})
                codes[response.status_code] += 1
        return codes

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        codes = sum(pool.map(send, (range(k, BURST, CLIENTS) for k in range(CLIENTS))), Counter())
    took = time.monotonic() - started
    assert codes == Counter({201: BURST}), codes
    assert len(firings(backend, campaign["id"])) == BURST
    assert took < 60

    scheduler = make_scheduler(FrozenClock(soon()), build_batch=400)
    assert scheduler.tick()
    rows = spool_of(backend, campaign["id"])
    assert len(rows) == BURST
    assert len({r.recipient for r in rows}) == BURST
    assert outcomes(backend, campaign["id"]) == Counter({"spooled": BURST})


# --- bad definitions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "loc", "words"),
    [
        ({"trigger": {"event": "x"}, "crontab": "0 * * * *"}, ["body", "trigger"], "not both"),
        (
            {"trigger": {"event": "x"}, "source_type": "S", "source_id": 1},
            ["body", "source_type"],
            "leave source_type out",
        ),
        ({"trigger": {"event": "x"}, "source_id": 1}, ["body", "source_id"], "no source_id"),
        ({"trigger": {}}, ["body", "trigger"], "exactly one of"),
        ({"trigger": {"event": "x", "field": "plan"}}, ["body", "trigger"], "exactly one of"),
        ({"trigger": {"event": "x", "on": "set"}}, ["body", "trigger"], "field triggers only"),
        ({"trigger": {"field": "nope"}}, ["body", "trigger", "field"], "not a declared"),
        (
            {"trigger": {"event": "x", "delay_minutes": -1}},
            ["body", "trigger", "delay_minutes"],
            "greater than",
        ),
        ({"trigger": {"event": "x", "wat": 1}}, ["body", "trigger", "wat"], "xtra"),
        (
            {"trigger": {"event": "x", "condition": {"field": "nope", "op": "eq", "value": 1}}},
            ["body", "trigger", "condition", "field"],
            "unknown field",
        ),
        (
            {"trigger": {"event": "x", "payload_condition": {"payload": "a", "op": "like"}}},
            ["body", "trigger", "payload_condition", "op"],
            "op is one of",
        ),
        ({}, ["body", "source_type"], "unless the campaign has a trigger"),
        ({"source_type": "E"}, ["body", "source_type"], "unless the campaign has a trigger"),
    ],
)
def test_bad_trigger_definitions_are_refused_and_store_nothing(
    backend: Backend,
    project: ApiProject,
    fields: dict[str, Any],
    loc: list[str],
    words: str,
) -> None:
    body = {"message_type": "L", "message_id": create_email(project.client), **fields}
    before = campaign_count(backend, project)
    response = project.client.post("/automated-campaigns", json=body)
    assert response.status_code == 422, response.text
    [error] = [e for e in response.json()["detail"] if e["loc"][: len(loc)] == loc]
    assert words in error["msg"], error
    assert campaign_count(backend, project) == before
