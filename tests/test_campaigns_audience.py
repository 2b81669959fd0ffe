"""Audiences built from a segment and from an API source."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from envoi.campaigns.models import Campaign
from tests.campaign_support import audience, data_url, make_email, make_profiles
from tests.conftest import ApiProject, Backend


def _campaign(
    project: ApiProject, email_id: int, source_type: str, source_id: int, **extra: Any
) -> dict[str, Any]:
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": source_type,
        "source_id": source_id,
        **extra,
    }
    response = project.client.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_segment_audience(backend: Backend, project: ApiProject, other_project: ApiProject) -> None:
    email_id = make_email(backend, project)
    with_email = make_profiles(backend, project, email=["ann@example.com", "bob@example.com"])
    make_profiles(backend, project, uid=["no-address"])
    make_profiles(backend, other_project, email=["theirs@example.com"])
    segment = project.client.post(
        "/segments",
        json={"name": "With email", "condition": {"field": "email", "op": "exists", "value": True}},
    )
    assert segment.status_code == 201, segment.text
    campaign = _campaign(
        project,
        email_id,
        "S",
        segment.json()["id"],
        additional_source_file=data_url("email,coupon\nbob@example.com,B2\n"),
        start_immediately=True,
    )
    assert campaign["state"] == "running"
    summary = campaign["audience"]["last_build"]
    assert campaign["audience"]["count"] == 2
    assert summary["read"] == 2
    assert summary["with_profile"] == 2
    assert summary["additional"]["merged"] == 1
    members = audience(backend, campaign["id"])
    assert {m.profile_id for m in members.values()} == set(with_email)
    assert members["email:ann@example.com"].email == "ann@example.com"
    assert members["email:ann@example.com"].params == {}
    assert members["email:bob@example.com"].params == {"coupon": "B2"}
    assert members["email:ann@example.com"].line is None


def test_segment_audience_is_generated_at_start(backend: Backend, project: ApiProject) -> None:
    """Profiles added after the campaign was created are in it: start generates the segment."""
    email_id = make_email(backend, project)
    segment = project.client.post(
        "/segments",
        json={"name": "All", "condition": {"field": "email", "op": "exists", "value": True}},
    ).json()
    campaign = _campaign(project, email_id, "S", segment["id"])
    make_profiles(backend, project, email=["late@example.com"])
    started = project.client.post(f"/campaigns/{campaign['id']}/start").json()
    assert started["audience"]["count"] == 1
    assert set(audience(backend, campaign["id"])) == {"email:late@example.com"}


def test_api_source_audience(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    [ann] = make_profiles(backend, project, email=["ann@example.com"])
    source = project.client.post("/sources", json={"name": "Buyers"}).json()
    added = project.client.post(
        f"/sources/{source['id']}/recipients",
        json=[
            {"email": "Ann@Example.com", "params": {"coupon": "A1", "amount": 5}},
            {"uid": "u-7", "email": "seven@example.com", "params": {"coupon": "S7"}},
            {"phone": "+33 6 12 34 56 78"},
        ],
    )
    assert added.json()["created"] == 3
    campaign = _campaign(project, email_id, "A", source["id"], start_immediately=True)
    assert campaign["audience"]["count"] == 3
    assert campaign["audience"]["last_build"]["with_profile"] == 1
    members = audience(backend, campaign["id"])
    assert members["email:ann@example.com"].profile_id == ann
    assert members["email:ann@example.com"].params == {"coupon": "A1", "amount": 5}
    # Keyed by uid, but the address the client gave is kept for delivery.
    assert members["uid:u-7"].email == "seven@example.com"
    assert members["phone:+33612345678"].email is None

    # A source in use by a campaign that is neither finished nor archived cannot be deleted.
    refused = project.client.delete(f"/sources/{source['id']}")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"API source {source['id']} is used by campaign {campaign['post']} (running)"
    )
    path = f"/campaigns/{campaign['id']}"
    project.client.post(f"{path}/pause")
    project.client.post(f"{path}/archive")
    assert project.client.delete(f"/sources/{source['id']}").status_code == 204


def test_empty_api_source_finishes_the_campaign(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    source = project.client.post("/sources", json={"name": "Empty"}).json()
    campaign = _campaign(project, email_id, "A", source["id"], start_immediately=True)
    assert campaign["state"] == "finished"
    assert campaign["audience"]["count"] == 0
    summary = campaign["audience"]["last_build"]
    assert (summary["read"], summary["accepted"], summary["errors"]) == (0, 0, [])
    # A finished campaign is done with its source (the same rule as for segments).
    assert project.client.delete(f"/sources/{source['id']}").status_code == 204


def test_an_api_source_recipient_is_in_the_audience_once(
    backend: Backend, project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    source = project.client.post("/sources", json={"name": "Buyers"}).json()
    url = f"/sources/{source['id']}/recipients"
    project.client.post(url, json=[{"uid": "42", "email": "ann@x.io", "params": {"v": 1}}])
    project.client.post(url, json=[{"email": "ann@x.io", "params": {"v": 2}}])
    campaign = _campaign(project, email_id, "A", source["id"], start_immediately=True)
    assert campaign["audience"]["count"] == 1
    [member] = audience(backend, campaign["id"]).values()
    assert (member.recipient_key, member.email, member.params) == ("uid:42", "ann@x.io", {"v": 2})


def test_an_api_source_of_another_project_is_never_read(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    """Checked at write time, and again at start: a campaign whose source id now names
    another project's source (a deleted id reused) reads nothing from it."""
    email_id = make_email(backend, project)
    mine = project.client.post("/sources", json={"name": "Mine"}).json()
    theirs = other_project.client.post("/sources", json={"name": "Theirs"}).json()
    other_project.client.post(
        f"/sources/{theirs['id']}/recipients", json=[{"email": "theirs@x.io"}]
    )
    campaign = _campaign(project, email_id, "A", mine["id"])
    with backend.sessions() as session, session.begin():
        session.execute(
            update(Campaign).where(Campaign.id == campaign["id"]).values(source_id=theirs["id"])
        )
    started = project.client.post(f"/campaigns/{campaign['id']}/start").json()
    assert started["state"] == "finished"
    assert started["audience"]["count"] == 0
    assert started["audience"]["last_build"]["errors"] == [
        {"line": None, "error": f"API source {theirs['id']} no longer exists"}
    ]
    assert audience(backend, campaign["id"]) == {}
