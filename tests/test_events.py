"""`/api/v1/events` (seed 002): record an event about a profile, read a profile's events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiProject
from tests.test_users import get_user
from tests.test_users_concurrency import N, concurrently

SEED_BODY = {"name": "login_user", "payload": {"email": "test@mail.ru"}}


def events_of(project: ApiProject, **params: Any) -> list[dict[str, Any]]:
    response = project.client.get("/events", params=params)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def test_seed_example(project: ApiProject) -> None:
    response = project.client.post("/events", json=SEED_BODY)
    assert response.status_code == 201
    assert response.json() == {"name": "login_user", "payload": {"email": "test@mail.ru"}}


def test_an_unknown_profile_is_created(project: ApiProject) -> None:
    project.client.post("/events", json=SEED_BODY)
    profile = get_user(project, email="test@mail.ru")
    assert profile["fields"] == {}
    (event,) = events_of(project, email="test@mail.ru")
    assert event["name"] == "login_user"
    assert event["payload"] == {"email": "test@mail.ru"}
    assert event["profile_id"] == profile["id"]
    assert event["created_at"].endswith("Z")


def test_events_attach_to_the_existing_profile(project: ApiProject) -> None:
    project.client.post("/users", json={"uid": "u1", "email": "ann@example.com"})
    payload = {"uid": "u1", "order": 7, "items": ["a", "b"]}
    answer = project.client.post("/events", json={"name": "purchase", "payload": payload})
    assert answer.json() == {"name": "purchase", "payload": payload}
    (event,) = events_of(project, email="ann@example.com")
    assert event["payload"] == payload
    assert event["profile_id"] == get_user(project, uid="u1")["id"]


def test_listing_is_newest_first_filtered_and_limited(project: ApiProject) -> None:
    for name in ("a", "b", "a", "c"):
        project.client.post("/events", json={"name": name, "payload": {"email": "x@example.com"}})
    assert [e["name"] for e in events_of(project, email="x@example.com")] == ["c", "a", "b", "a"]
    only_a = events_of(project, email="x@example.com", name="a")
    assert [e["name"] for e in only_a] == ["a", "a"]
    assert only_a[0]["id"] > only_a[1]["id"]
    assert [e["name"] for e in events_of(project, email="x@example.com", limit=2)] == ["c", "a"]


def test_the_seeds_string_payload_holding_json_is_accepted(project: ApiProject) -> None:
    body = {"name": "login_user", "payload": '{"email": "test@mail.ru"}'}
    response = project.client.post("/events", json=body)
    assert response.status_code == 201
    assert response.json() == body
    assert events_of(project, email="test@mail.ru")[0]["payload"] == {"email": "test@mail.ru"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "x", "payload": {"order": 1}}, ["body", "payload"]),
        ({"name": "x", "payload": {"email": "nope"}}, ["body", "payload", "email"]),
        ({"name": "x", "payload": {"email": None}}, ["body", "payload"]),
        ({"name": "x", "payload": "not json"}, ["body", "payload"]),
        ({"name": "x", "payload": "[1]"}, ["body", "payload"]),
        ({"name": "", "payload": {"email": "a@example.com"}}, ["body", "name"]),
        ({"name": "x" * 201, "payload": {"email": "a@example.com"}}, ["body", "name"]),
        ({"payload": {"email": "a@example.com"}}, ["body", "name"]),
        ({"name": "x"}, ["body", "payload"]),
        ({"name": "x", "payload": {"email": "a@example.com"}, "extra": 1}, ["body", "extra"]),
    ],
)
def test_bad_events_are_422_and_write_nothing(
    project: ApiProject, body: dict[str, Any], loc: list[object]
) -> None:
    response = project.client.post("/events", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][: len(loc)] == loc
    assert project.client.get("/users", params={"email": "a@example.com"}).status_code == 404


def test_a_list_payload_is_422(project: ApiProject) -> None:
    response = project.client.post("/events", json={"name": "x", "payload": [1]})
    assert response.status_code == 422


def test_longest_name_is_200_characters(project: ApiProject) -> None:
    body = {"name": "n" * 200, "payload": {"email": "a@example.com"}}
    assert project.client.post("/events", json=body).status_code == 201


def test_bad_json_is_422(project: ApiProject) -> None:
    response = project.client.post(
        "/events", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_identifiers_of_two_profiles_are_409(project: ApiProject) -> None:
    project.client.post("/users", json={"email": "a@example.com"})
    project.client.post("/users", json={"uid": "u2"})
    response = project.client.post(
        "/events", json={"name": "x", "payload": {"email": "a@example.com", "uid": "u2"}}
    )
    assert response.status_code == 409
    assert events_of(project, email="a@example.com") == []


def test_listing_errors(project: ApiProject) -> None:
    assert project.client.get("/events", params={"email": "no@example.com"}).status_code == 404
    assert project.client.get("/events").status_code == 422
    project.client.post("/events", json={"name": "x", "payload": {"email": "a@example.com"}})
    for limit in (0, 1001):
        response = project.client.get("/events", params={"email": "a@example.com", "limit": limit})
        assert response.status_code == 422


def test_projects_never_see_each_other(project: ApiProject, other_project: ApiProject) -> None:
    project.client.post("/events", json=SEED_BODY)
    assert other_project.client.get("/events", params={"email": "test@mail.ru"}).status_code == 404
    assert other_project.client.get("/users", params={"email": "test@mail.ru"}).status_code == 404

    other_project.client.post("/events", json={"name": "theirs", "payload": SEED_BODY["payload"]})
    assert [e["name"] for e in events_of(project, email="test@mail.ru")] == ["login_user"]
    assert [e["name"] for e in events_of(other_project, email="test@mail.ru")] == ["theirs"]
    mine = get_user(project, email="test@mail.ru")["id"]
    assert get_user(other_project, email="test@mail.ru")["id"] != mine


def test_concurrent_first_events_create_each_profile_once(project: ApiProject) -> None:
    """Events (and upserts) racing to create the same new profiles all succeed."""
    emails = ["first@example.com", "second@example.com"]
    requests = [
        ("/events", {"name": f"e{i}", "payload": {"email": emails[i % 2]}}) for i in range(N)
    ] + [("/users", {"email": emails[i % 2]}) for i in range(4)]
    responses = concurrently(project, requests)
    assert [r.status_code for r in responses] == [201] * (N + 4), [r.text for r in responses]
    first, second = (get_user(project, email=email) for email in emails)
    assert first["id"] != second["id"]
    for email, profile in ((emails[0], first), (emails[1], second)):
        events = events_of(project, email=email)
        assert sorted(e["name"] for e in events) == sorted(
            f"e{i}" for i in range(N) if emails[i % 2] == email
        )
        assert {e["profile_id"] for e in events} == {profile["id"]}
