"""Concurrent users upserts on one profile: no acknowledged write is lost, on both backends.

Each request comes from its own HTTP client (its own connection, its own server
thread and database transaction), and they are released together by a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.conftest import ApiProject
from tests.test_users import declare, get_user

N = 16


def concurrently(project: ApiProject, requests: Sequence[tuple[str, Any]]) -> list[httpx.Response]:
    """POST each `(path, body)` at once, each from its own client; the answers, in order."""
    barrier = threading.Barrier(len(requests))
    auth = (project.creds.login, project.creds.secret)

    def post(request: tuple[str, Any]) -> httpx.Response:
        path, body = request
        with httpx.Client(base_url=project.client.base_url, auth=auth, timeout=120) as client:
            barrier.wait()
            return client.post(path, json=body)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


def test_concurrent_upserts_of_one_profile_keep_every_field(project: ApiProject) -> None:
    declare(project, **{f"f{i}": "Int" for i in range(N)})
    # A new profile: one request creates it, the others find it and merge into it.
    created = concurrently(
        project, [("/users", {"email": "p@example.com", "fields": {f"f{i}": i}}) for i in range(N)]
    )
    assert [r.status_code for r in created] == [201] * N, [r.text for r in created]
    assert get_user(project, email="p@example.com")["fields"] == {f"f{i}": i for i in range(N)}

    # An existing profile, another identifier added by one of the requests.
    updated = concurrently(
        project,
        [
            ("/users", {"email": "p@example.com", "fields": {f"f{i}": i + 100}})
            if i
            else ("/users", {"email": "p@example.com", "uid": "p", "fields": {"f0": 100}})
            for i in range(N)
        ],
    )
    assert [r.status_code for r in updated] == [201] * N, [r.text for r in updated]
    got = get_user(project, uid="p")
    assert got["email"] == "p@example.com"
    assert got["fields"] == {f"f{i}": i + 100 for i in range(N)}


def test_concurrent_bulk_upserts_keep_every_field(project: ApiProject) -> None:
    """Bulk requests naming the same profiles in different orders neither lose writes
    nor deadlock."""
    requests = 8
    emails = [f"user{j}@example.com" for j in range(50)]
    declare(project, **{f"f{i}": "Int" for i in range(requests)})
    existing = project.client.post("/users/bulk", json=[{"email": e} for e in emails[::2]])
    assert existing.status_code == 202

    bodies = []
    for i in range(requests):
        order = emails[i * 7 :] + emails[: i * 7]  # each request in its own order
        if i % 2:
            order.reverse()
        bodies.append(("/users/bulk", [{"email": e, "fields": {f"f{i}": i}} for e in order]))
    answers = concurrently(project, bodies)
    assert [r.status_code for r in answers] == [202] * requests
    for response in answers:
        assert not [a for a in response.json() if "error" in a]
    for email in emails:
        assert get_user(project, email=email)["fields"] == {f"f{i}": i for i in range(requests)}


def _stamp(second: int) -> str:
    return f"2024-05-01T10:00:{second:02d}Z"


def test_an_older_stamp_never_overwrites_a_newer_acknowledged_one(project: ApiProject) -> None:
    declare(project, n="Int")
    assert project.client.post("/users", json={"email": "q@example.com"}).status_code == 201
    seconds = [s * 7 % N for s in range(N)]  # every second once, out of order
    responses = concurrently(
        project,
        [
            (
                "/users",
                {
                    "email": "q@example.com",
                    "fields": {"n": s},
                    "update_profile_last_updated_at": _stamp(s),
                },
            )
            for s in seconds
        ],
    )
    acknowledged = [s for s, r in zip(seconds, responses, strict=True) if r.status_code == 201]
    for s, response in zip(seconds, responses, strict=True):
        assert response.status_code in (201, 409), response.text
        if response.status_code == 409:
            assert response.json()["detail"].startswith(
                f"update_profile_last_updated_at {_stamp(s)} is older than the profile's "
            )
    # The newest is never older than anything stored: it is always applied, and last.
    assert N - 1 in acknowledged
    got = get_user(project, email="q@example.com")
    assert got["update_profile_last_updated_at"] == _stamp(N - 1)
    assert got["fields"] == {"n": N - 1}
