"""start / pause / resume / archive over HTTP: every allowed move, and every other is a 409."""

from __future__ import annotations

from typing import Any

from tests.campaign_support import (
    audience,
    create_regular,
    make_email,
    make_segment,
    regular_body,
)
from tests.conftest import ApiProject, Backend

ACTIONS = ("start", "pause", "resume", "archive")
# What each state allows over the API; everything else must be a 409.
ALLOWED = {
    "draft": {"start", "archive"},
    "planned": {"pause", "archive"},
    "running": {"pause"},
    "paused": {"resume", "archive"},
    "finished": {"archive"},
    "archived": set(),
}


def _do(project: ApiProject, path: str, action: str) -> dict[str, Any]:
    response = project.client.post(f"{path}/{action}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refused(project: ApiProject, path: str, state: str) -> None:
    """Every action the state does not allow is a 409 that changes nothing."""
    before = project.client.get(path).json()
    assert before["state"] == state
    for action in set(ACTIONS) - ALLOWED[state]:
        response = project.client.post(f"{path}/{action}")
        assert response.status_code == 409, (state, action)
        assert response.json()["detail"].startswith(f"campaign {before['post']} is {state}")
    assert project.client.get(path).json() == before


def test_regular_life_cycle(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id)
    path = f"/campaigns/{campaign['id']}"
    _refused(project, path, "draft")

    running = _do(project, path, "start")
    assert running["state"] == "running"
    assert running["started_at"] is not None
    assert running["audience"]["count"] == 2
    _refused(project, path, "running")

    assert _do(project, path, "pause")["state"] == "paused"
    _refused(project, path, "paused")
    resumed = _do(project, path, "resume")
    assert resumed["state"] == "running"
    assert resumed["started_at"] == running["started_at"]
    assert resumed["audience"] == running["audience"]  # resume does not rebuild

    assert _do(project, path, "pause")["state"] == "paused"
    archived = _do(project, path, "archive")
    assert archived["state"] == "archived"
    _refused(project, path, "archived")
    refused = project.client.post(f"{path}/start").json()["detail"]
    assert refused == f"campaign {campaign['post']} is archived and cannot start: archived is final"


def test_running_must_be_paused_before_archiving(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id, start_immediately=True)
    assert campaign["state"] == "running"
    assert campaign["start_immediately"] is True
    assert campaign["audience"]["count"] == 2
    response = project.client.post(f"/campaigns/{campaign['id']}/archive")
    assert response.status_code == 409
    assert response.json()["detail"].endswith("cannot be archived: pause it first")


def test_a_draft_can_be_archived(backend: Backend, project: ApiProject) -> None:
    campaign = create_regular(project, make_email(backend, project))
    path = f"/campaigns/{campaign['id']}"
    archived = _do(project, path, "archive")
    assert archived["state"] == "archived"
    assert archived["started_at"] is None
    _refused(project, path, "archived")


def test_a_future_start_time_plans_the_campaign(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id, planned_at="2099-01-01T00:00:00Z")
    path = f"/campaigns/{campaign['id']}"
    planned = _do(project, path, "start")
    assert planned["state"] == "planned"
    assert planned["audience"]["count"] == 2  # built at start, whatever the start time
    _refused(project, path, "planned")
    assert _do(project, path, "pause")["state"] == "paused"
    assert _do(project, path, "resume")["state"] == "planned"
    assert _do(project, path, "archive")["state"] == "archived"

    past = create_regular(project, email_id, planned_at="2001-01-01T00:00:00Z")
    assert _do(project, f"/campaigns/{past['id']}", "start")["state"] == "running"
    immediate = create_regular(
        project, email_id, planned_at="2099-01-01T00:00:00Z", start_immediately=True
    )
    assert immediate["state"] == "planned"


def test_an_empty_audience_finishes_at_once(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id, csv="email\nnot-an-address\n")
    path = f"/campaigns/{campaign['id']}"
    finished = _do(project, path, "start")
    assert finished["state"] == "finished"
    assert finished["audience"]["count"] == 0
    assert finished["audience"]["last_build"]["rejected"] == 1
    _refused(project, path, "finished")
    assert _do(project, path, "archive")["state"] == "archived"


def test_rewrite_is_for_drafts_only(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id)
    path = f"/campaigns/{campaign['id']}"
    assert project.client.put(path, json=regular_body(email_id)).status_code == 200
    for action, state in (("start", "running"), ("pause", "paused"), ("archive", "archived")):
        assert _do(project, path, action)["state"] == state
        response = project.client.put(path, json=regular_body(email_id, tags="new"))
        assert response.status_code == 409
        assert response.json()["detail"] == (
            f"campaign {campaign['post']} is {state} and cannot be rewritten: "
            "only draft campaigns can be rewritten"
        )
        assert project.client.get(path).json()["tags"] is None


def test_rewrite_with_start_immediately_starts(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id)
    started = project.client.put(
        f"/campaigns/{campaign['id']}", json=regular_body(email_id, start_immediately=True)
    ).json()
    assert started["state"] == "running"
    assert started["audience"]["count"] == 2


def test_ab_campaign_waits_for_its_test(backend: Backend, project: ApiProject) -> None:
    email_a, email_b = make_email(backend, project), make_email(backend, project)
    body = regular_body(email_a, ab_message_ids=[email_b], test_planned_at="2099-01-01T00:00:00Z")
    campaign = project.client.post("/ab-campaigns", json=body).json()
    path = f"/ab-campaigns/{campaign['id']}"
    assert _do(project, path, "start")["state"] == "planned"
    assert _do(project, path, "pause")["state"] == "paused"
    assert _do(project, path, "resume")["state"] == "planned"
    now = project.client.post(
        "/ab-campaigns", json=regular_body(email_a, ab_message_ids=[email_b])
    ).json()
    assert _do(project, f"/ab-campaigns/{now['id']}", "start")["state"] == "running"


def test_automated_campaign_is_active_while_running(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "S",
        "source_id": make_segment(backend, project),
        "crontab": "0 9 * * *",
    }
    campaign = project.client.post("/automated-campaigns", json=body).json()
    path = f"/automated-campaigns/{campaign['id']}"
    assert campaign["active"] is False
    started = _do(project, path, "start")
    # An empty segment does not finish an automated campaign: its next run reads it again.
    assert (started["state"], started["active"]) == ("running", True)
    assert started["audience"]["count"] == 0
    paused = _do(project, path, "pause")
    assert (paused["state"], paused["active"]) == ("paused", False)
    resumed = _do(project, path, "resume")
    assert (resumed["state"], resumed["active"]) == ("running", True)
    _do(project, path, "pause")
    archived = _do(project, path, "archive")
    assert (archived["state"], archived["active"]) == ("archived", False)

    active = project.client.post("/automated-campaigns", json=body | {"active": True}).json()
    assert (active["state"], active["active"]) == ("running", True)


def test_start_builds_from_the_source_once(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id, start_immediately=True)
    assert set(audience(backend, campaign["id"])) == {
        "email:ann@example.com",
        "email:bob@example.com",
    }
    second = project.client.post(f"/campaigns/{campaign['id']}/start")
    assert second.status_code == 409
    assert second.json()["detail"].endswith("cannot start: it is already running")
