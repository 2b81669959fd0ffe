"""`DELETE /api/v1/users?email=...`: GDPR erasure, and re-registration lifting it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from envoi.core.identity import erasure_hash
from envoi.db.session import transaction
from envoi.events.models import ApiEvent
from envoi.outbox.models import OutboxEvent
from envoi.profiles.erasure import is_erased
from envoi.profiles.models import Erasure, Profile, Subscription
from envoi.segments.models import Segment, SegmentMember
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


def test_an_event_does_not_lift_an_erasure(backend: Backend, project: ApiProject) -> None:
    _seed_person(backend, project)
    project.client.delete("/users", params={"email": "ann@example.com"})
    project.client.post(
        "/events", json={"name": "login_user", "payload": {"email": "ann@example.com"}}
    )
    with backend.sessions() as session:
        assert is_erased(session, project.id, "email", "ann@example.com")


def test_erasing_twice_stores_each_hash_once(backend: Backend, project: ApiProject) -> None:
    project.client.post("/users", json={"email": "bob@example.com"})
    project.client.delete("/users", params={"email": "bob@example.com"})
    project.client.post("/events", json={"name": "x", "payload": {"email": "bob@example.com"}})
    assert project.client.delete("/users", params={"email": "bob@example.com"}).status_code == 204
    with backend.sessions() as session:
        hashes = session.scalars(
            select(Erasure.identifier_hash).where(Erasure.project_id == project.id)
        ).all()
    assert hashes == [erasure_hash("email", "bob@example.com")]


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
