"""`DELETE /api/v1/users?email=...`: GDPR erasure, and re-registration lifting it."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import select

from envoi.campaigns.models import AudienceMember, Campaign
from envoi.core.identity import erasure_hash
from envoi.db.session import transaction
from envoi.events.models import ApiEvent
from envoi.outbox.models import OutboxEvent
from envoi.profiles.erasure import is_erased
from envoi.profiles.models import Erasure, Profile, Subscription
from envoi.segments.models import Segment, SegmentMember
from envoi.spool.models import SpoolEntry
from tests.campaign_support import make_email
from tests.conftest import ApiProject, Backend
from tests.test_users import declare, get_user


def _seed_person(backend: Backend, project: ApiProject) -> tuple[int, int, int]:
    """A profile with a subscription, an event, a segment membership and an outbox fact."""
    declare(project, pole1="String")
    category = project.client.post("/categories", json={"title": "News"}).json()["category"]
    project.client.post(
        "/users",
        json={
            "email": "ann@example.com",
            "uid": "ann",
            "phone": "+79001234567",
            "fields": {"pole1": "x"},
            "subscriptions": {str(category): False},
        },
    )
    project.client.post(
        "/events", json={"name": "login_user", "payload": {"email": "ann@example.com"}}
    )
    profile_id = get_user(project, email="ann@example.com")["id"]
    with transaction(backend.sessions) as session:
        segment = Segment(project_id=project.id, name="All", condition={})
        session.add(segment)
        session.flush()
        session.add(SegmentMember(segment_id=segment.id, profile_id=profile_id))
        fact = OutboxEvent(
            project_id=project.id,
            kind="sent",
            occurred_at=datetime.now(UTC),
            profile_id=profile_id,
            recipient="ann@example.com",
            data={},
        )
        keyed = OutboxEvent(
            project_id=project.id,
            kind="open",
            occurred_at=datetime.now(UTC),
            recipient="email:ann@example.com",
            data={},
        )
        session.add_all([fact, keyed])
        session.flush()
        return profile_id, fact.id, keyed.id


def test_erasure_removes_the_person_and_keeps_only_hashes(
    backend: Backend, project: ApiProject
) -> None:
    profile_id, fact_id, keyed_id = _seed_person(backend, project)

    response = project.client.delete("/users", params={"email": "ann@example.com"})
    assert response.status_code == 204
    assert response.content == b""
    for identifier in ({"email": "ann@example.com"}, {"uid": "ann"}, {"phone": "+79001234567"}):
        assert project.client.get("/users", params=identifier).status_code == 404

    with backend.sessions() as session:
        assert session.get(Profile, profile_id) is None
        by_profile = [
            select(Subscription).where(Subscription.profile_id == profile_id),
            select(ApiEvent).where(ApiEvent.profile_id == profile_id),
            select(SegmentMember).where(SegmentMember.profile_id == profile_id),
        ]
        for query in by_profile:
            assert session.scalars(query).all() == []
        for fact_key in (fact_id, keyed_id):
            fact = session.get(OutboxEvent, fact_key)
            assert fact is not None
            assert fact.profile_id is None
            assert fact.recipient is None
        stored = set(
            session.scalars(select(Erasure.identifier_hash).where(Erasure.project_id == project.id))
        )
        assert stored == {
            erasure_hash("email", "ann@example.com"),
            erasure_hash("uid", "ann"),
            erasure_hash("phone", "+79001234567"),
        }
        assert is_erased(session, project.id, "email", "ann@example.com")
        assert not is_erased(session, project.id, "email", "bob@example.com")


def test_upsert_of_an_erased_identifier_lifts_its_erasure(
    backend: Backend, project: ApiProject
) -> None:
    _seed_person(backend, project)
    project.client.delete("/users", params={"uid": "ann"})

    again = project.client.post("/users", json={"email": "Ann@Example.com"})
    assert again.status_code == 201
    got = get_user(project, email="ann@example.com")
    assert got["uid"] is None  # a new profile: nothing of the erased one came back
    assert got["fields"] == {}
    assert got["subscriptions"] == {}
    with backend.sessions() as session:
        assert not is_erased(session, project.id, "email", "ann@example.com")
        assert is_erased(session, project.id, "uid", "ann")
        assert is_erased(session, project.id, "phone", "+79001234567")

    # Bulk upserts lift erasures too.
    answers = project.client.post("/users/bulk", json=[{"uid": "ann"}]).json()
    assert answers == [{"uid": "ann", "fields": {}}]
    with backend.sessions() as session:
        assert not is_erased(session, project.id, "uid", "ann")


def test_an_event_does_not_bring_an_erased_person_back(
    backend: Backend, project: ApiProject
) -> None:
    _seed_person(backend, project)
    project.client.delete("/users", params={"email": "ann@example.com"})
    project.client.post("/users", json={"uid": "bob"})

    refused = project.client.post(
        "/events", json={"name": "login_user", "payload": {"email": "Ann@Example.com"}}
    )
    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "email=ann@example.com names a person erased at the project's request"
        " (GDPR); only a users upsert registers them again"
    }
    # Any erased identifier, alone or beside one of a known profile, refuses the event.
    for payload in (
        {"phone": "+7 900 123-45-67", "order": 7},
        {"uid": "bob", "email": "ann@example.com"},
    ):
        response = project.client.post("/events", json={"name": "x", "payload": payload})
        assert response.status_code == 409, response.text
        assert "erased" in response.json()["detail"]

    assert project.client.get("/users", params={"email": "ann@example.com"}).status_code == 404
    assert project.client.get("/users", params={"phone": "+79001234567"}).status_code == 404
    with backend.sessions() as session:
        stored = select(ApiEvent).where(ApiEvent.project_id == project.id)
        assert session.scalars(stored).all() == []
        assert is_erased(session, project.id, "email", "ann@example.com")
        assert is_erased(session, project.id, "phone", "+79001234567")

    # Registered again by a users upsert, the person's events are recorded again.
    project.client.post("/users", json={"email": "ann@example.com"})
    again = project.client.post(
        "/events", json={"name": "x", "payload": {"email": "ann@example.com"}}
    )
    assert again.status_code == 201


def test_erasing_twice_stores_each_hash_once(backend: Backend, project: ApiProject) -> None:
    project.client.post("/users", json={"email": "bob@example.com"})
    project.client.delete("/users", params={"email": "bob@example.com"})
    # A profile of an erased identifier that no upsert lifted (written behind the API).
    with transaction(backend.sessions) as session:
        session.add(Profile(project_id=project.id, email="bob@example.com", fields={}))
    assert project.client.delete("/users", params={"email": "bob@example.com"}).status_code == 204
    with backend.sessions() as session:
        hashes = session.scalars(
            select(Erasure.identifier_hash).where(Erasure.project_id == project.id)
        ).all()
    assert hashes == [erasure_hash("email", "bob@example.com")]


def _campaign_with_audience(
    backend: Backend, project: ApiProject, members: list[tuple[str, int | None, str | None]]
) -> int:
    """A campaign whose audience is `(recipient_key, profile_id, email)` rows."""
    email_id = make_email(backend, project)
    with transaction(backend.sessions) as session:
        campaign = Campaign(
            project_id=project.id,
            post_type="S",
            message_id=email_id,
            source_type="U",
            spooler_token=secrets.token_hex(16),
        )
        session.add(campaign)
        session.flush()
        session.add_all(
            AudienceMember(campaign_id=campaign.id, recipient_key=key, profile_id=pid, email=email)
            for key, pid, email in members
        )
        return campaign.id


def _audience_keys(backend: Backend, campaign_id: int) -> set[str]:
    with backend.sessions() as session:
        query = select(AudienceMember.recipient_key).where(
            AudienceMember.campaign_id == campaign_id
        )
        return set(session.scalars(query))


def _source_with(project: ApiProject, recipients: list[dict[str, str]]) -> str:
    source = project.client.post("/sources", json={"name": "Buyers"}).json()["id"]
    added = project.client.post(f"/sources/{source}/recipients", json=recipients)
    assert added.status_code == 200, added.text
    assert added.json()["created"] == len(recipients)
    return f"/sources/{source}"


def test_erasure_forgets_the_person_in_audiences_and_sources(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    profile_id, _, _ = _seed_person(backend, project)
    campaign = _campaign_with_audience(
        backend,
        project,
        [
            ("email:ann@example.com", profile_id, "ann@example.com"),
            ("phone:+79001234567", profile_id, None),  # linked to the profile
            ("uid:ann", None, None),  # keyed by one of its identifiers
            ("uid:x-1", None, "ann@example.com"),  # carrying its address
            ("email:bob@example.com", None, "bob@example.com"),
        ],
    )
    theirs = _campaign_with_audience(
        backend, other_project, [("email:ann@example.com", None, "ann@example.com")]
    )
    source = _source_with(
        project,
        [
            {"email": "ann@example.com"},
            {"uid": "ann"},
            {"uid": "x-2", "phone": "+7 900 123-45-67"},
            {"email": "bob@example.com"},
        ],
    )
    their_source = _source_with(other_project, [{"email": "ann@example.com"}])

    assert project.client.delete("/users", params={"uid": "ann"}).status_code == 204

    assert _audience_keys(backend, campaign) == {"email:bob@example.com"}
    assert _audience_keys(backend, theirs) == {"email:ann@example.com"}
    assert project.client.get(source).json()["recipients"] == 1
    listed = project.client.get(f"{source}/recipients").text
    assert "bob@example.com" in listed
    for trace in ("ann@example.com", '"ann"', "+79001234567"):
        assert trace not in listed
    assert other_project.client.get(their_source).json()["recipients"] == 1


def test_erasure_errors(project: ApiProject) -> None:
    missing = project.client.delete("/users", params={"email": "nobody@example.com"})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "user email=nobody@example.com not found"}
    assert project.client.delete("/users").status_code == 422
    assert project.client.delete("/users", params={"phone": "abc"}).status_code == 422


def test_erasure_is_scoped_to_the_project(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    project.client.post("/users", json={"email": "ann@example.com"})
    other_project.client.post("/users", json={"email": "ann@example.com"})
    assert project.client.delete("/users", params={"email": "ann@example.com"}).status_code == 204
    assert get_user(other_project, email="ann@example.com")["email"] == "ann@example.com"
    with backend.sessions() as session:
        assert is_erased(session, project.id, "email", "ann@example.com")
        assert not is_erased(session, other_project.id, "email", "ann@example.com")


def test_erasure_stops_pending_sends_and_strips_the_spool(
    backend: Backend, project: ApiProject
) -> None:
    project.client.post("/users", json={"email": "ann@example.com", "uid": "ann"})
    profile_id = get_user(project, email="ann@example.com")["id"]
    email_id = make_email(backend, project)
    now = datetime.now(UTC)
    with transaction(backend.sessions) as session:
        campaign = Campaign(
            project_id=project.id,
            post_type="S",
            message_id=email_id,
            source_type="U",
            state="running",
            spooler_token=secrets.token_urlsafe(24),
        )
        session.add(campaign)
        session.flush()
        rows = {
            state: SpoolEntry(
                project_id=project.id,
                campaign_id=campaign.id,
                email_id=email_id,
                profile_id=profile_id if state != "deferred" else None,
                recipient="ann@example.com",
                params={"first_name": "Ann"},
                state=state,
                not_before=now,
                lease_owner="worker-1" if state in ("leased", "sending") else None,
            )
            for state in ("queued", "leased", "deferred", "sending", "delivered")
        }
        session.add_all(rows.values())
        session.flush()
        ids = {state: row.id for state, row in rows.items()}

    assert project.client.delete("/users", params={"email": "ann@example.com"}).status_code == 204

    with backend.sessions() as session:
        after = {state: session.get(SpoolEntry, row_id) for state, row_id in ids.items()}
    states = {state: (row.state, row.reason) for state, row in after.items() if row}
    assert states == {
        "queued": ("quarantined", "gdpr"),
        "leased": ("quarantined", "gdpr"),  # its worker's lease is gone: it never sends it
        "deferred": ("quarantined", "gdpr"),  # found by address, without a profile link
        "sending": ("sending", None),  # already in an SMTP session: its outcome is recorded
        "delivered": ("delivered", None),
    }
    for row in after.values():
        assert row is not None
        assert (row.recipient, row.profile_id, row.params) == (None, None, {})
    leased = after["leased"]
    assert leased is not None
    assert leased.lease_owner is None
