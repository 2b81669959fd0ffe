"""The spool: building it from started campaigns, leases, outcomes and finishing.

Campaigns are created and started through the API; the spool functions run as a
worker runs them, one transaction per call, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from envoi.campaigns.models import AudienceMember, Campaign
from envoi.db.base import utcnow
from envoi.db.session import transaction
from envoi.delivery.interfaces import SmtpReply
from envoi.emails.models import Email
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Profile
from envoi.quarantine.models import QuarantineEntry
from envoi.spool import services as spool
from envoi.spool.models import PENDING_STATES, SpoolEntry
from envoi.spool.services import Claim, Result
from envoi.testing.smtppeer import SmtpPeer
from tests import transport_support as smtp
from tests.campaign_support import LIST_CSV, audience, make_email, regular_body
from tests.conftest import ApiProject, Backend

T = TypeVar("T")
OWNER = "worker-a"
THREE = "email,first_name\nann@example.com,Ann\nbob@example.org,Bob\ncid@example.net,Cid\n"
OK = SmtpReply(250, "2.0.0", "Ok: queued as 4F2A")


# --- helpers shared with test_spool_checks -----------------------------------------------


@pytest.fixture(autouse=True)
def quiet(request: pytest.FixtureRequest) -> Iterator[None]:
    """The backend's database is shared by the whole session: every campaign left
    running or planned is paused before and after each test, so that builds and
    claims here see this test's rows only, and later tests' workers never see them."""
    if "backend" not in request.fixturenames:
        yield  # a test without a database
        return
    backend: Backend = request.getfixturevalue("backend")
    _pause_everything(backend)
    yield
    _pause_everything(backend)


def _pause_everything(backend: Backend) -> None:
    with transaction(backend.sessions) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.state.in_(["running", "planned"]))
            .values(state="paused")
        )
        # Rows outside campaigns are always claimable: none may be left pending.
        session.execute(
            update(SpoolEntry)
            .where(SpoolEntry.campaign_id.is_(None), SpoolEntry.state.in_(PENDING_STATES))
            .values(state="blocked")
        )


def run(backend: Backend, work: Callable[[Session], T]) -> T:
    """One transaction, committed, as a worker's call is."""
    with transaction(backend.sessions) as session:
        return work(session)


def start(
    project: ApiProject, email_id: int, csv: str = LIST_CSV, path: str = "/campaigns", **extra: Any
) -> dict[str, Any]:
    body = regular_body(email_id, csv, start_immediately=True, **extra)
    response = project.client.post(path, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def build_all(backend: Backend, now: datetime | None = None, batch: int = 1000) -> int:
    """Build steps until none is left; how many did work."""
    steps = 0
    while run(backend, lambda s: spool.build_step(s, now or utcnow(), batch)):
        steps += 1
    return steps


def spool_rows(backend: Backend, campaign_id: int) -> list[SpoolEntry]:
    with backend.sessions() as session:
        query = select(SpoolEntry).where(SpoolEntry.campaign_id == campaign_id)
        return list(session.scalars(query.order_by(SpoolEntry.id)))


def outbox(backend: Backend, campaign_id: int, kind: str | None = None) -> list[OutboxEvent]:
    with backend.sessions() as session:
        query = select(OutboxEvent).where(OutboxEvent.campaign_id == campaign_id)
        if kind is not None:
            query = query.where(OutboxEvent.kind == kind)
        return list(session.scalars(query.order_by(OutboxEvent.id)))


def campaign_row(backend: Backend, campaign_id: int) -> Campaign:
    with backend.sessions() as session:
        campaign = session.get(Campaign, campaign_id)
        assert campaign is not None
        return campaign


def claim(
    backend: Backend, now: datetime, limit: int = 100, owner: str = OWNER, lease: float = 60
) -> list[Claim]:
    return run(backend, lambda s: spool.claim(s, owner, now, limit, lease))


def record(backend: Backend, results: list[Result], now: datetime, owner: str = OWNER) -> None:
    run(backend, lambda s: spool.record(s, owner, results, now))


def send(backend: Backend, now: datetime, owner: str = OWNER) -> list[Claim]:
    """Claim every due row and mark it sending, as a worker does before SMTP.

    In id order: a claim's order among rows of equal priority and time is the index's,
    which PostgreSQL does not promise, and tests compare lists."""
    claims = sorted(claim(backend, now, owner=owner), key=lambda c: c.id)
    ids = [c.id for c in claims]
    run(backend, lambda s: spool.mark_sending(s, owner, ids, now))
    return claims


def set_email(backend: Backend, email_id: int, **values: Any) -> None:
    run(backend, lambda s: s.execute(update(Email).where(Email.id == email_id).values(**values)))


def add_profile(backend: Backend, project_id: int, **identifiers: str) -> int:
    def add(session: Session) -> int:
        profile = Profile(project_id=project_id, fields={}, **identifiers)
        session.add(profile)
        session.flush()
        return profile.id

    return run(backend, add)


# --- building --------------------------------------------------------------------------------


def test_build_spools_each_member_once_with_its_event(
    backend: Backend, project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id, THREE, tags="spring, promo ,", priority=5)
    before = utcnow()
    assert build_all(backend, batch=2) == 2  # 2 members, then the last one and done
    assert not run(backend, lambda s: spool.build_step(s, utcnow()))

    rows = spool_rows(backend, campaign["id"])
    assert [(r.recipient, r.domain, r.state, r.reason) for r in rows] == [
        ("ann@example.com", "example.com", "queued", None),
        ("bob@example.org", "example.org", "queued", None),
        ("cid@example.net", "example.net", "queued", None),
    ]
    assert {r.email_id for r in rows} == {email_id}
    assert {r.priority for r in rows} == {5}
    assert rows[0].params == {"first_name": "Ann"}
    started = datetime.fromisoformat(campaign["started_at"].replace("Z", "+00:00"))
    assert {r.not_before for r in rows} == {started}
    assert {r.project_id for r in rows} == {project.id}

    events = outbox(backend, campaign["id"])
    assert [e.kind for e in events] == ["queued"] * 3
    assert [e.recipient for e in events] == [r.recipient for r in rows]
    assert events[0].email_id == email_id
    assert events[0].occurred_at >= before
    assert events[0].data == {
        "post": campaign["post"],
        "post_type": "S",
        "message": f"L_{email_id}",
        "message_type": "L",
        "domain": "example.com",
        "router": None,
        "tags": ["spring", "promo"],
        "language": None,
        "send_id": rows[0].id,
    }
    assert [e.data["send_id"] for e in events] == [r.id for r in rows]

    stored = campaign_row(backend, campaign["id"])
    assert stored.spool_built_at is not None
    members = run(
        backend,
        lambda s: list(
            s.scalars(select(AudienceMember.id).where(AudienceMember.campaign_id == stored.id))
        ),
    )
    assert stored.spool_cursor == max(members)
    assert stored.audience_summary is not None
    assert stored.audience_summary["spooled"] == 3


def test_a_failed_batch_leaves_nothing_and_the_build_resumes(
    backend: Backend, project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id, THREE)
    assert run(backend, lambda s: spool.build_step(s, utcnow(), 2))

    class Crash(Exception):
        pass

    def crashing(session: Session) -> None:
        spool.build_step(session, utcnow(), 2)
        raise Crash

    with pytest.raises(Crash):
        run(backend, crashing)
    assert len(spool_rows(backend, campaign["id"])) == 2  # the crashed batch left nothing
    assert build_all(backend, batch=2) == 1
    rows = spool_rows(backend, campaign["id"])
    assert [r.recipient for r in rows] == ["ann@example.com", "bob@example.org", "cid@example.net"]
    assert len(outbox(backend, campaign["id"], "queued")) == 3


def test_language_and_address_come_from_the_profile(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)

    def add(session: Session) -> None:
        session.add(
            Profile(project_id=project.id, uid="u1", email="uma@example.com", language="de")
        )

    run(backend, add)
    campaign = start(project, email_id, "uid,coupon\nu1,X1\n")
    build_all(backend)
    [row] = spool_rows(backend, campaign["id"])
    assert (row.recipient, row.language, row.params) == ("uma@example.com", "de", {"coupon": "X1"})
    assert row.profile_id is not None
    [event] = outbox(backend, campaign["id"])
    assert (event.profile_id, event.data["language"]) == (row.profile_id, "de")


def test_an_ab_test_spools_only_its_sample_dealt_evenly(
    backend: Backend, project: ApiProject
) -> None:
    """The test phase spools ab_percent of the audience (4 of 7 at 50 %, rounded half
    up), dealt evenly among the variants; the rest waits for the winner (tests of the
    whole test: tests/test_ab_campaigns.py)."""
    email_a, email_b, email_c = (make_email(backend, project) for _ in range(3))
    csv = "email\n" + "".join(f"r{i}@example.com\n" for i in range(7))
    campaign = start(
        project,
        email_a,
        csv,
        path="/ab-campaigns",
        ab_message_ids=[email_b, email_c],
        ab_percent=50,
    )
    build_all(backend, batch=2)  # the sample is spooled across batches
    rows = spool_rows(backend, campaign["id"])
    variants = [email_a, email_b, email_c]
    drawn = {k: m.ab_variant for k, m in audience(backend, campaign["id"]).items()}
    assert sorted(r.email_id for r in rows) == sorted([email_a, email_a, email_b, email_c])
    assert {f"email:{r.recipient}": variants.index(r.email_id) for r in rows} == {
        key: variant for key, variant in drawn.items() if variant is not None
    }
    events = outbox(backend, campaign["id"])
    assert {e.data["message"] for e in events} == {f"L_{i}" for i in variants}
    assert {e.data["post_type"] for e in events} == {"B"}


def test_send_during_hours_spreads_rows_evenly(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    csv = "email\n" + "".join(f"r{i}@example.com\n" for i in range(4))
    campaign = start(project, email_id, csv, send_during_hours=2)
    build_all(backend, batch=3)
    rows = spool_rows(backend, campaign["id"])
    started = rows[0].not_before
    assert [r.not_before - started for r in rows] == [timedelta(minutes=m) for m in (0, 30, 60, 90)]
    # Only the first row is due now; the last one in an hour and a half.
    now = started + timedelta(seconds=1)
    assert [c.recipient for c in claim(backend, now, lease=7200)] == ["r0@example.com"]
    later = [c.recipient for c in claim(backend, started + timedelta(minutes=61))]
    assert later == ["r1@example.com", "r2@example.com"]


def test_planned_campaigns_start_on_time(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    at = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    campaign = start(project, email_id, planned_at=at.isoformat())
    assert campaign["state"] == "planned"
    assert build_all(backend) == 0  # a planned campaign is not spooled yet
    assert campaign["id"] not in run(backend, lambda s: spool.promote_planned(s, utcnow()))
    due = at + timedelta(seconds=1)
    assert campaign["id"] in run(backend, lambda s: spool.promote_planned(s, due))
    assert run(backend, lambda s: spool.campaign_states(s, [campaign["id"]])) == {
        campaign["id"]: "running"
    }
    build_all(backend, due)
    assert {r.not_before for r in spool_rows(backend, campaign["id"])} == {at}


def test_automated_campaigns_are_not_spooled(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    segment_body = {"name": "All", "condition": {"field": "email", "op": "exists", "value": True}}
    segment = project.client.post("/segments", json=segment_body).json()
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "S",
        "source_id": segment["id"],
        "crontab": "0 9 * * *",
        "start_immediately": True,
    }
    response = project.client.post("/automated-campaigns", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "running"
    assert build_all(backend) == 0
    assert spool_rows(backend, response.json()["id"]) == []


# --- claiming --------------------------------------------------------------------------------


def test_claims_go_by_priority_then_time(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    low = start(project, email_id, "email\nlow1@example.com\nlow2@example.com\n", priority=1)
    high = start(project, email_id, "email\nhigh1@example.com\nhigh2@example.com\n", priority=9)
    middle = start(project, email_id, "email\nmid@example.com\n", priority=5)
    build_all(backend)
    now = utcnow()
    first = claim(backend, now, limit=3)
    assert [c.recipient for c in first] == [
        "high1@example.com",
        "high2@example.com",
        "mid@example.com",
    ]
    assert [c.priority for c in first] == [9, 9, 5]
    rest = claim(backend, now, limit=10)
    assert [c.recipient for c in rest] == ["low1@example.com", "low2@example.com"]
    assert claim(backend, now) == []  # everything is leased
    assert {c.campaign_id for c in first + rest} == {low["id"], high["id"], middle["id"]}


def test_a_claim_carries_what_the_worker_needs(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id, "email,coupon\nann@example.com,A1\n")
    build_all(backend)
    now = utcnow()
    [got] = claim(backend, now, lease=30)
    [row] = spool_rows(backend, campaign["id"])
    assert got == Claim(
        id=row.id,
        project_id=project.id,
        campaign_id=campaign["id"],
        email_id=email_id,
        profile_id=None,
        recipient="ann@example.com",
        domain="example.com",
        params={"coupon": "A1"},
        attempts=0,
        uncertain=False,
        priority=0,
    )
    assert (row.state, row.lease_owner, row.lease_until) == (
        "leased",
        OWNER,
        now + timedelta(seconds=30),
    )


def test_rows_outside_campaigns_are_always_claimable(backend: Backend, project: ApiProject) -> None:
    """A transactional send (no campaign) has no campaign state to wait for; it is
    claimed with its own priority among the campaigns' rows, and recorded like them."""
    email_id = make_email(backend, project)
    start(project, email_id, "email\ncampaign@example.com\n", priority=3)
    build_all(backend)
    now = utcnow()

    def transactional(session: Session) -> int:
        row = SpoolEntry(
            project_id=project.id,
            email_id=email_id,
            recipient="reset@example.com",
            domain="example.com",
            priority=7,
            not_before=now,
        )
        session.add(row)
        session.flush()
        return row.id

    send_id = run(backend, transactional)
    claims = claim(backend, now)
    assert (claims[0].id, claims[0].campaign_id) == (send_id, None)
    assert [c.recipient for c in claims] == ["reset@example.com", "campaign@example.com"]
    run(backend, lambda s: spool.mark_sending(s, OWNER, [send_id], now))
    record(backend, [Result(send_id, OK)], now)
    with backend.sessions() as session:
        event = session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.project_id == project.id, OutboxEvent.kind == "delivered"
            )
        ).one()
    assert event.campaign_id is None
    assert (event.data["post"], event.data["message"]) == (None, f"L_{email_id}")


def test_paused_campaigns_and_future_rows_are_not_claimed(
    backend: Backend, project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id)
    build_all(backend)
    assert project.client.post(f"/campaigns/{campaign['id']}/pause").status_code == 200
    assert claim(backend, utcnow()) == []
    assert project.client.post(f"/campaigns/{campaign['id']}/resume").status_code == 200
    past = utcnow() - timedelta(days=1)  # before the rows' not_before
    assert claim(backend, past) == []
    assert len(claim(backend, utcnow())) == 2


def test_release_puts_leased_rows_back(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id)
    build_all(backend)
    now = utcnow()
    claims = claim(backend, now)
    ids = [c.id for c in claims]
    run(backend, lambda s: spool.release(s, "someone-else", ids))  # not theirs: no effect
    assert {r.state for r in spool_rows(backend, campaign["id"])} == {"leased"}
    run(backend, lambda s: spool.release(s, OWNER, ids))
    rows = spool_rows(backend, campaign["id"])
    assert {(r.state, r.lease_owner, r.lease_until) for r in rows} == {("queued", None, None)}
    assert [c.id for c in claim(backend, now)] == ids


def test_expired_leases_are_taken_over(
    backend: Backend, project: ApiProject, caplog: pytest.LogCaptureFixture
) -> None:
    email_id = make_email(backend, project)
    start(project, email_id)
    build_all(backend)
    now = utcnow()
    ann, bob = claim(backend, now, lease=60)
    marked = run(backend, lambda s: spool.mark_sending(s, OWNER, [bob.id], now, 60))
    assert marked == [bob.id]
    # The worker dies. Within the lease nothing is claimable ...
    assert claim(backend, now + timedelta(seconds=59), owner="worker-b") == []
    # ... after it, the leased row comes back silently and the one in flight uncertain.
    later = now + timedelta(seconds=61)
    with caplog.at_level(logging.WARNING, logger="envoi.spool"):
        taken = claim(backend, later, owner="worker-b")
    assert {c.id: c.uncertain for c in taken} == {ann.id: False, bob.id: True}
    warnings = [r for r in caplog.records if r.name == "envoi.spool"]
    assert len(warnings) == 1
    assert str(bob.id) in warnings[0].getMessage()
    assert str(ann.id) not in warnings[0].getMessage()
    # The dead worker's late calls change nothing: the rows are worker-b's now.
    assert run(backend, lambda s: spool.mark_sending(s, OWNER, [ann.id], later)) == []
    record(backend, [Result(bob.id, OK)], later)
    with backend.sessions() as session:
        row = session.get(SpoolEntry, bob.id)
        assert row is not None
        assert (row.state, row.lease_owner, row.uncertain) == ("leased", "worker-b", True)
    # The new owner's outcome carries the flag to the outbox.
    run(backend, lambda s: spool.mark_sending(s, "worker-b", [bob.id], later))
    record(backend, [Result(bob.id, OK)], later, owner="worker-b")
    [delivered] = outbox(backend, bob.campaign_id or 0, "delivered")
    assert delivered.data["uncertain"] is True


def test_concurrent_claimers_never_get_the_same_row(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    csv = "email\n" + "".join(f"r{i}@example.com\n" for i in range(120))
    campaign = start(project, email_id, csv)
    build_all(backend)
    now = utcnow()
    barrier = threading.Barrier(2)
    got: dict[str, list[int]] = {"w1": [], "w2": []}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            barrier.wait()
            while claims := claim(backend, now, limit=7, owner=name):
                got[name] += [c.id for c in claims]
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert not set(got["w1"]) & set(got["w2"])
    assert sorted(got["w1"] + got["w2"]) == [r.id for r in spool_rows(backend, campaign["id"])]
    owners = {r.id: r.lease_owner for r in spool_rows(backend, campaign["id"])}
    assert all(owners[i] == "w1" for i in got["w1"])
    assert all(owners[i] == "w2" for i in got["w2"])


def test_a_claim_skips_rows_another_claim_holds(backend: Backend, project: ApiProject) -> None:
    """PostgreSQL: while one worker's claim is not committed, another's takes the next
    rows at once instead of waiting (SQLite runs write transactions one at a time)."""
    if backend.name != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    email_id = make_email(backend, project)
    csv = "email\n" + "".join(f"r{i}@example.com\n" for i in range(6))
    campaign = start(project, email_id, csv)
    build_all(backend)
    now = utcnow()
    with transaction(backend.sessions) as first:
        held = spool.claim(first, "w1", now, 4)
        with transaction(backend.sessions) as second:
            rest = spool.claim(second, "w2", now, 4)
    rows = [r.id for r in spool_rows(backend, campaign["id"])]
    assert [c.id for c in held] == rows[:4]
    assert [c.id for c in rest] == rows[4:]


# --- recording -------------------------------------------------------------------------------


def test_delivered(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id, "email\nann@example.com\n", tags="news")
    build_all(backend)
    now = utcnow()
    [sent] = send(backend, now)
    reply = SmtpReply(250, "2.0.0", "Ok: queued as " + "X" * 2000)
    record(backend, [Result(sent.id, reply, "relay-1", "fr", params={"coupon": "Z9"})], now)
    [row] = spool_rows(backend, campaign["id"])
    assert (row.state, row.reason, row.attempts, row.lease_owner) == ("delivered", None, 1, None)
    assert (row.router, row.language, row.smtp_code, row.smtp_status) == (
        "relay-1",
        "fr",
        250,
        "2.0.0",
    )
    assert row.smtp_text is not None
    assert len(row.smtp_text) == 1000
    assert row.first_attempt_at == now
    assert row.params == {"coupon": "Z9"}
    [event] = outbox(backend, campaign["id"], "delivered")
    assert event.recipient == "ann@example.com"
    assert event.data == {
        "post": campaign["post"],
        "post_type": "S",
        "message": f"L_{email_id}",
        "message_type": "L",
        "domain": "example.com",
        "router": "relay-1",
        "tags": ["news"],
        "language": "fr",
        "send_id": row.id,
        "smtp_code": 250,
        "smtp_status": "2.0.0",
        "smtp_text": row.smtp_text,
        "attempt": 1,
        "uncertain": False,
    }


def test_temporary_failures_back_off_then_give_up(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id, "email\ngrey@example.com\n")
    build_all(backend)
    now = utcnow()
    greylisted = SmtpReply(451, "4.7.1", "Greylisted, please try again later")
    delays = []
    for attempt in range(1, 5):
        [sent] = send(backend, now)
        record(backend, [Result(sent.id, greylisted)], now)
        [row] = spool_rows(backend, campaign["id"])
        assert (row.state, row.attempts, row.lease_owner) == ("deferred", attempt, None)
        assert claim(backend, row.not_before - timedelta(seconds=1)) == []  # not yet due
        delays.append(row.not_before - now)
        now = row.not_before
    assert delays == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    events = outbox(backend, campaign["id"], "tempfail")
    assert [e.data["attempt"] for e in events] == [1, 2, 3, 4]
    assert events[0].data["smtp_code"] == 451
    assert events[0].data["bounce_class"] == "other_soft"
    assert campaign_row(backend, campaign["id"]).state == "running"

    # Three days after the first attempt, the next failure gives up.
    first = spool_rows(backend, campaign["id"])[0].first_attempt_at
    assert first is not None
    late = first + spool.GIVE_UP_AFTER
    [sent] = send(backend, late)
    record(backend, [Result(sent.id, SmtpReply(0, None, "connection timed out"))], late)
    [row] = spool_rows(backend, campaign["id"])
    assert (row.state, row.reason, row.attempts) == ("permfail", "expired", 5)
    [gave_up] = outbox(backend, campaign["id"], "permfail")
    assert gave_up.data["reason"] == "expired"
    assert gave_up.data["bounce_class"] == "block_timeout"
    assert gave_up.data["smtp_code"] == 0


def test_retry_delay_schedule() -> None:
    assert [spool.retry_delay(n) for n in (0, 1, 2, 3, 6, 7, 50)] == [
        timedelta(minutes=1),
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(minutes=32),
        timedelta(hours=1),
        timedelta(hours=1),
    ]


def test_the_last_retry_is_at_the_deadline(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id, "email\ngrey@example.com\n")
    build_all(backend)
    now = utcnow()
    [sent] = send(backend, now)
    nearly = now + spool.GIVE_UP_AFTER - timedelta(seconds=30)  # less than the 1 min delay
    record(backend, [Result(sent.id, SmtpReply(421, "4.7.0", "busy"))], nearly)
    [row] = spool_rows(backend, campaign["id"])
    assert row.state == "deferred"
    assert row.not_before == now + spool.GIVE_UP_AFTER


def test_a_message_whose_answer_never_came_stays_uncertain(
    backend: Backend, project: ApiProject
) -> None:
    """The server read the message to its final dot and dropped the connection without
    answering: it may have taken it. The row is retried flagged `uncertain`, and its
    events say so; a greylisted recipient's plain temporary failure is not."""
    email_id = make_email(backend, project)
    campaign = start(project, email_id, "email\nnodot@example.com\ngrey@example.com\n")
    build_all(backend)
    now = utcnow()
    with SmtpPeer() as peer:

        def attempt(at: datetime) -> tuple[list[Claim], list[SmtpReply]]:
            claims = send(backend, at)
            to = [c.recipient for c in claims]
            replies = smtp.run(lambda: smtp.send_all(smtp.relay(peer), to))
            results = [Result(c.id, r, "relay") for c, r in zip(claims, replies, strict=True)]
            record(backend, results, at)
            return claims, replies

        _, replies = attempt(now)
        assert [(r.outcome, r.uncertain) for r in replies] == [
            ("tempfail", True),
            ("tempfail", False),
        ]
        rows = spool_rows(backend, campaign["id"])
        assert [(r.state, r.uncertain) for r in rows] == [("deferred", True), ("deferred", False)]
        tempfails = outbox(backend, campaign["id"], "tempfail")
        assert [e.data["uncertain"] for e in tempfails] == [True, False]

        claims, replies = attempt(now + timedelta(minutes=2))
        assert [c.uncertain for c in claims] == [True, False]
        assert [r.outcome for r in replies] == ["delivered", "delivered"]
        rows = spool_rows(backend, campaign["id"])
        assert [(r.state, r.uncertain) for r in rows] == [("delivered", True), ("delivered", False)]
        delivered = outbox(backend, campaign["id"], "delivered")
        assert [e.data["uncertain"] for e in delivered] == [True, False]
        # What the flag warns of: the first copy had arrived after all.
        assert peer.recipients().count("nodot@example.com") == 2


def test_permanent_failures_are_classified_and_unknown_users_quarantined(
    backend: Backend, project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    csv = "email\nunknown@example.com\nfull@example.com\nspam@example.com\n"
    campaign = start(project, email_id, csv)
    build_all(backend)
    now = utcnow()
    unknown, full, spam = send(backend, now)
    replies = {
        unknown.id: SmtpReply(550, "5.1.1", "<unknown@example.com>: Recipient address rejected"),
        full.id: SmtpReply(552, "5.2.2", "Mailbox full"),
        spam.id: SmtpReply(554, "5.7.1", "Message rejected as spam"),
    }
    record(backend, [Result(i, reply, "relay-1") for i, reply in replies.items()], now)
    rows = {r.recipient: r for r in spool_rows(backend, campaign["id"])}
    assert {a: (r.state, r.reason, r.smtp_code) for a, r in rows.items()} == {
        "unknown@example.com": ("permfail", "user_unknown", 550),
        "full@example.com": ("permfail", "mailbox_full", 552),
        "spam@example.com": ("permfail", "block_content", 554),
    }
    events = {e.recipient: e.data for e in outbox(backend, campaign["id"], "permfail")}
    assert events["unknown@example.com"]["bounce_class"] == "user_unknown"
    assert events["unknown@example.com"]["reason"] == "user_unknown"
    assert events["unknown@example.com"]["smtp_status"] == "5.1.1"
    assert events["full@example.com"]["smtp_text"] == "Mailbox full"
    with backend.sessions() as session:
        entries = session.scalars(
            select(QuarantineEntry).where(QuarantineEntry.project_id == project.id)
        ).all()
    assert [(e.address, e.reason, e.expires_at) for e in entries] == [
        ("unknown@example.com", "nonexistent", None)
    ]
    assert entries[0].note is not None
    assert str(unknown.id) in entries[0].note
    assert "5.1.1" in entries[0].note


def test_transactional_email_never_quarantines(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    set_email(backend, email_id, is_urgent=True)
    start(project, email_id, "email\nunknown@example.com\n")
    build_all(backend)
    now = utcnow()
    [sent] = send(backend, now)
    record(backend, [Result(sent.id, SmtpReply(550, "5.1.1", "User unknown"))], now)
    with backend.sessions() as session:
        query = select(QuarantineEntry).where(QuarantineEntry.project_id == project.id)
        assert session.scalars(query).all() == []


def test_a_hard_bounce_over_an_existing_entry(backend: Backend, project: ApiProject) -> None:
    """Like `quarantine.services.add`: a weaker or expired entry becomes `nonexistent`,
    a stronger one (a complaint) keeps its reason; either way the entry is permanent."""
    email_id = make_email(backend, project)
    past, future = utcnow() - timedelta(days=1), utcnow() + timedelta(days=1)
    existing = {
        "expired@example.com": ("spam", past),  # expired: mailed again
        "manual@example.com": ("manual", future),  # not checked: quarantined
        "complained@example.com": ("spam", future),
    }

    def add(session: Session) -> None:
        for address, (reason, expires_at) in existing.items():
            entry = QuarantineEntry(
                project_id=project.id,
                address=address,
                reason=reason,
                note="before",
                expires_at=expires_at,
            )
            session.add(entry)

    run(backend, add)
    csv = "email\nexpired@example.com\nmanual@example.com\ncomplained@example.com\n"
    campaign = start(project, email_id, csv, config={"not_check_spam_quarantine": True})
    build_all(backend)
    assert [r.state for r in spool_rows(backend, campaign["id"])] == [
        "queued",
        "quarantined",
        "queued",
    ]
    now = utcnow()
    sent = send(backend, now)
    record(backend, [Result(c.id, SmtpReply(550, "5.1.1", "no such user")) for c in sent], now)
    with backend.sessions() as session:
        entries = session.scalars(
            select(QuarantineEntry).where(QuarantineEntry.project_id == project.id)
        ).all()
    got = {e.address: (e.reason, e.expires_at, e.note == "before") for e in entries}
    assert got == {
        "expired@example.com": ("nonexistent", None, False),
        "manual@example.com": ("manual", future, True),  # not mailed, not bounced
        "complained@example.com": ("spam", None, True),
    }


def test_a_refusing_hook_blocks_the_row(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id)
    build_all(backend)
    now = utcnow()
    leased, other = claim(backend, now)  # refused before it was ever handed to SMTP
    record(backend, [Result(leased.id, None, skip_reason="external_check")], now)
    row = spool_rows(backend, campaign["id"])[0]
    assert (row.state, row.reason, row.attempts, row.lease_owner) == (
        "blocked",
        "external_check",
        0,
        None,
    )
    [event] = outbox(backend, campaign["id"], "blocked")
    assert event.data["reason"] == "external_check"
    with pytest.raises(ValueError, match="neither reply nor skip reason"):
        record(backend, [Result(other.id, None)], now)
    assert spool_rows(backend, campaign["id"])[1].state == "leased"


def test_record_writes_a_whole_batch(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    csv = "email\n" + "".join(f"r{i}@example.com\n" for i in range(300))
    campaign = start(project, email_id, csv)
    build_all(backend, batch=128)
    now = utcnow()
    claims = send(backend, now)
    assert len(claims) == 100  # the helper's limit
    more = claim(backend, now, limit=500)
    run(backend, lambda s: spool.mark_sending(s, OWNER, [c.id for c in more], now))
    results = [
        Result(c.id, OK if i % 3 else SmtpReply(451, "4.3.0", "try later"))
        for i, c in enumerate(claims + more)
    ]
    record(backend, results, now)
    states = [r.state for r in spool_rows(backend, campaign["id"])]
    assert states.count("delivered") == 200
    assert states.count("deferred") == 100
    assert len(outbox(backend, campaign["id"], "delivered")) == 200
    assert len(outbox(backend, campaign["id"], "tempfail")) == 100


# --- GDPR erasure ----------------------------------------------------------------------------


def test_an_erasure_stops_leased_rows_for_good(backend: Backend, project: ApiProject) -> None:
    """The erasure quarantines rows not yet in an SMTP session, leased ones too: their
    worker can neither send them nor record an outcome over the erasure."""
    email_id = make_email(backend, project)
    add_profile(backend, project.id, uid="u-1", email="uma@example.com")
    campaign = start(project, email_id, "uid,email\nu-1,\n,ok@example.com\n")
    build_all(backend)
    now = utcnow()
    uma, ok = claim(backend, now)
    assert uma.recipient == "uma@example.com"
    assert project.client.delete("/users", params={"uid": "u-1"}).status_code == 204
    assert run(backend, lambda s: spool.mark_sending(s, OWNER, [uma.id, ok.id], now)) == [ok.id]
    for reply in (OK, SmtpReply(451, "4.3.0", "later")):  # a worker that sent it anyway
        record(backend, [Result(uma.id, reply), Result(ok.id, OK)], now)
    rows = spool_rows(backend, campaign["id"])
    assert [(r.state, r.reason, r.recipient, r.lease_owner, r.attempts) for r in rows] == [
        ("quarantined", "gdpr", None, None, 0),
        ("delivered", None, "ok@example.com", None, 1),
    ]
    outcomes = [e for e in outbox(backend, campaign["id"]) if e.kind not in ("queued", "blocked")]
    assert [(e.kind, e.data["send_id"]) for e in outcomes] == [("delivered", ok.id)]
    later = now + timedelta(hours=1)
    assert claim(backend, later) == []
    assert run(backend, lambda s: spool.finish_campaigns(s, later)) == [campaign["id"]]


def test_a_row_erased_in_flight_is_recorded_but_never_retried(
    backend: Backend, project: ApiProject
) -> None:
    """Rows already in an SMTP session keep their state through the erasure, and lose
    their address: the outcome is recorded, but there is nobody to retry."""
    email_id = make_email(backend, project)
    for uid in ("u-1", "u-2"):
        add_profile(backend, project.id, uid=uid, email=f"{uid}@example.com")
    campaign = start(project, email_id, "uid\nu-1\nu-2\n")
    build_all(backend)
    now = utcnow()
    first, _ = send(backend, now)
    for uid in ("u-1", "u-2"):
        assert project.client.delete("/users", params={"uid": uid}).status_code == 204
    assert {r.state for r in spool_rows(backend, campaign["id"])} == {"sending"}
    # The first one's worker records a temporary failure ...
    record(backend, [Result(first.id, SmtpReply(451, "4.3.0", "later"))], now)
    # ... the second one's dies: after its lease, it is not sent again.
    later = now + timedelta(hours=1)
    assert claim(backend, later, owner="worker-b") == []
    rows = spool_rows(backend, campaign["id"])
    assert [(r.state, r.reason, r.recipient, r.lease_owner, r.attempts) for r in rows] == [
        ("quarantined", "gdpr", None, None, 1),
        ("quarantined", "gdpr", None, None, 0),
    ]
    [tempfail] = outbox(backend, campaign["id"], "tempfail")
    assert (tempfail.recipient, tempfail.data["send_id"]) == (None, first.id)
    assert (tempfail.data["reason"], tempfail.data["smtp_code"]) == ("gdpr", 451)
    assert "retry_at" not in tempfail.data
    assert run(backend, lambda s: spool.finish_campaigns(s, later)) == [campaign["id"]]


# --- finishing -------------------------------------------------------------------------------


def test_a_campaign_finishes_when_no_row_is_pending(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = start(project, email_id, "email\nann@example.com\n")
    finish: Callable[[Session], list[int]] = lambda s: spool.finish_campaigns(s, utcnow())  # noqa: E731
    assert campaign["id"] not in run(backend, finish)  # not built yet
    build_all(backend)
    now = utcnow()
    [sent] = send(backend, now)
    assert campaign["id"] not in run(backend, finish)  # a row is in flight
    record(backend, [Result(sent.id, SmtpReply(451, "4.3.0", "later"))], now)
    assert campaign["id"] not in run(backend, finish)  # deferred: still pending
    [again] = send(backend, now + timedelta(minutes=2))
    record(backend, [Result(again.id, OK)], now + timedelta(minutes=2))
    assert run(backend, finish) == [campaign["id"]]
    assert project.client.get(f"/campaigns/{campaign['id']}").json()["state"] == "finished"
    assert run(backend, finish) == []


def test_campaign_states(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    running = start(project, email_id)
    draft = project.client.post("/campaigns", json=regular_body(email_id)).json()
    states = run(backend, lambda s: spool.campaign_states(s, [running["id"], draft["id"], 0]))
    assert states == {running["id"]: "running", draft["id"]: "draft"}
    assert run(backend, lambda s: spool.campaign_states(s, [])) == {}
