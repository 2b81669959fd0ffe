"""Seed 002's example bodies, sent with curl to a real `envoi serve`, get the seed's answers.

This is what a client written against the seed sees (ids aside): the users, bulk
users, categories and events examples, verbatim.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.conftest import ENVOI, Served


def curl(served: Served, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    args = ["curl", "-sS", "-u", "demo:demo-secret", "-X", method, "-w", "\n%{http_code}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    done = subprocess.run(  # noqa: S603 - curl with our own arguments
        [*args, served.base_url + path], capture_output=True, text=True, check=True
    )
    text, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(text) if text else None


def test_seed_002_examples(served: Served) -> None:
    subprocess.run(  # noqa: S603 - our own console script
        [str(ENVOI), "project", "create", "Seed", "--login", "demo", "--secret", "demo-secret"],
        env=served.env,
        capture_output=True,
        check=True,
    )
    # Categories: create answers 201 with the id as `category` and every language key.
    status, category = curl(
        served,
        "POST",
        "/api/v1/categories",
        {"title": "Title", "description": "Description"},
    )
    assert status == 201
    assert category["title"] == "Title"
    assert category["description"] == "Description"
    assert category["title_en"] is None
    assert category["title_de"] is None
    status, listed = curl(served, "GET", "/api/v1/categories")
    assert (status, listed) == (200, [category])

    # Users: only declared fields are stored and echoed ('pole1' String is declared).
    assert curl(served, "POST", "/api/v1/fields", {"name": "pole1", "type": "String"})[0] == 201
    status, user = curl(
        served,
        "POST",
        "/api/v1/users",
        {"email": "user@mail.ru", "fields": {"pole1": "text", "pole2": 123}},
    )
    assert (status, user) == (201, {"email": "user@mail.ru", "fields": {"pole1": "text"}})

    # Bulk users: now only 'pole2' (Int) is declared.
    assert curl(served, "DELETE", "/api/v1/fields/pole1")[0] == 204
    assert curl(served, "POST", "/api/v1/fields", {"name": "pole2", "type": "Int"})[0] == 201
    status, users = curl(
        served,
        "POST",
        "/api/v1/users/bulk",
        [
            {"email": "user1@mail.ru", "fields": {"pole1": "text1", "pole2": 123}},
            {"email": "user2@mail.ru", "fields": {"pole1": "text2", "pole2": 777}},
        ],
    )
    assert (status, users) == (
        202,
        [
            {"email": "user1@mail.ru", "fields": {"pole2": 123}},
            {"email": "user2@mail.ru", "fields": {"pole2": 777}},
        ],
    )

    # Events.
    event = {"name": "login_user", "payload": {"email": "test@mail.ru"}}
    assert curl(served, "POST", "/api/v1/events", event) == (201, event)
