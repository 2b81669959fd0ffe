"""`/api/v1/segments` over HTTP: CRUD, errors, isolation, generation and members.

Profiles and fields are written with the ORM (the users API is another package's);
everything else goes through the real server on both backends.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from envoi.campaigns.models import Campaign
from envoi.categories.models import Category
from envoi.core.campaign_states import State
from envoi.db.session import transaction
from envoi.emails.models import Email
from envoi.profiles.models import Profile, ProfileField
from envoi.segments.models import Segment, SegmentMember
from tests.conftest import ApiProject, Backend

CITY_IS_PARIS = {"field": "city", "op": "eq", "value": "Paris"}
SEGMENT_KEYS = {
    "id",
    "project_id",
    "name",
    "tags",
    "condition",
    "segment_limit",
    "status",
    "member_count",
    "generated_at",
    "error",
    "created_at",
    "updated_at",
}

# -- helpers shared by the other test_segments_* modules --------------------------------


def add_profiles(
    backend: Backend, project_id: int, fields: dict[str, str], profiles: list[dict[str, Any]]
) -> dict[str, int]:
    """Declare `fields` ({name: type}) and add `profiles` (Profile kwargs); {uid: id}."""
    with transaction(backend.sessions) as session:
        for name, type_ in fields.items():
            session.add(ProfileField(project_id=project_id, name=name, type=type_))
        rows = [Profile(project_id=project_id, **{"fields": {}, **p}) for p in profiles]
        session.add_all(rows)
        session.flush()
        return {row.uid or str(row.id): row.id for row in rows}


def create(project: ApiProject, condition: Any, **extra: Any) -> dict[str, Any]:
    response = project.client.post(
        "/segments", json={"name": "Segment", "condition": condition, **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_generated(client: httpx.Client, segment_id: int, timeout: float = 30) -> dict[str, Any]:
    """Poll until the generator is done with the segment (ready or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/segments/{segment_id}").json()
        if body["status"] in ("ready", "failed"):
            return body
        assert time.monotonic() < deadline, f"segment {segment_id} still {body['status']}"
        time.sleep(0.02)


def generate(project: ApiProject, segment_id: int) -> dict[str, Any]:
    response = project.client.post(f"/segments/{segment_id}/generate")
    assert response.status_code == 202, response.text
    return wait_generated(project.client, segment_id)


def member_uids(project: ApiProject, segment_id: int, page: int = 1000) -> list[str]:
    """Every member's uid, following `next_after` from page to page."""
    uids: list[str] = []
    after: int | None = None
    while True:
        params = {"limit": page} if after is None else {"limit": page, "after": after}
        response = project.client.get(f"/segments/{segment_id}/members", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        uids += [item["uid"] for item in body["items"]]
        after = body["next_after"]
        if after is None:
            return uids


def matches(project: ApiProject, cases: dict[str, Any]) -> dict[str, set[str]]:
    """Generate one segment per condition (all queued at once); the members' uids of each."""
    ids = {name: create(project, condition)["id"] for name, condition in cases.items()}
    for segment_id in ids.values():
        assert project.client.post(f"/segments/{segment_id}/generate").status_code == 202
    result = {}
    for name, segment_id in ids.items():
        body = wait_generated(project.client, segment_id)
        assert body["status"] == "ready", (name, body["error"])
        result[name] = set(member_uids(project, segment_id))
        assert body["member_count"] == len(result[name])
    return result


def city_profiles(backend: Backend, project: ApiProject, count: int = 3) -> dict[str, int]:
    """`p0`, `p1`, ... with a String field `city`; the even ones live in Paris."""
    profiles = [
        {"uid": f"p{i}", "fields": {"city": "Paris" if i % 2 == 0 else "Lyon"}}
        for i in range(count)
    ]
    return add_profiles(backend, project.id, {"city": "String"}, profiles)


# -- CRUD ----------------------------------------------------------------------------


def test_create_answers_201_with_status_new(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project)
    response = project.client.post(
        "/segments",
        json={"name": "Parisians", "tags": "geo", "condition": CITY_IS_PARIS, "segment_limit": 10},
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == SEGMENT_KEYS
    assert body["project_id"] == project.id
    assert (body["name"], body["tags"], body["segment_limit"]) == ("Parisians", "geo", 10)
    assert body["condition"] == CITY_IS_PARIS
    assert (body["status"], body["member_count"], body["generated_at"], body["error"]) == (
        "new",
        None,
        None,
        None,
    )


def test_list_get_rewrite_edit_delete(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project)
    first = create(project, CITY_IS_PARIS, tags="geo")
    second = create(project, {"and": []})
    assert [s["id"] for s in project.client.get("/segments").json()] == [first["id"], second["id"]]
    assert project.client.get(f"/segments/{first['id']}").json() == first

    rewritten = project.client.put(
        f"/segments/{first['id']}", json={"name": "Lyon", "condition": {"not": CITY_IS_PARIS}}
    )
    assert rewritten.status_code == 200
    assert rewritten.json()["name"] == "Lyon"
    assert rewritten.json()["condition"] == {"not": CITY_IS_PARIS}
    assert rewritten.json()["tags"] is None  # PUT rewrites the whole segment

    edited = project.client.patch(
        f"/segments/{first['id']}", json={"tags": "renamed", "segment_limit": 5}
    )
    assert edited.status_code == 200
    assert (edited.json()["name"], edited.json()["tags"]) == ("Lyon", "renamed")
    assert edited.json()["segment_limit"] == 5
    assert edited.json()["condition"] == {"not": CITY_IS_PARIS}  # absent keys are kept
    cleared = project.client.patch(f"/segments/{first['id']}", json={"segment_limit": None})
    assert cleared.json()["segment_limit"] is None

    assert project.client.delete(f"/segments/{first['id']}").status_code == 204
    assert project.client.get(f"/segments/{first['id']}").status_code == 404
    assert [s["id"] for s in project.client.get("/segments").json()] == [second["id"]]


def test_generate_answers_202_pending_then_ready_with_members(
    backend: Backend, project: ApiProject
) -> None:
    city_profiles(backend, project, count=5)
    segment = create(project, CITY_IS_PARIS)
    response = project.client.post(f"/segments/{segment['id']}/generate")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    done = wait_generated(project.client, segment["id"])
    assert (done["status"], done["member_count"], done["error"]) == ("ready", 3, None)
    assert done["generated_at"] is not None
    assert member_uids(project, segment["id"]) == ["p0", "p2", "p4"]


def test_members_are_paginated_by_profile_id(backend: Backend, project: ApiProject) -> None:
    ids = city_profiles(backend, project, count=5)
    segment = create(project, {"and": []})
    generate(project, segment["id"])
    first = project.client.get(f"/segments/{segment['id']}/members", params={"limit": 2}).json()
    assert first["items"] == [
        {"profile_id": ids["p0"], "uid": "p0", "email": None, "phone": None, "wp_token": None},
        {"profile_id": ids["p1"], "uid": "p1", "email": None, "phone": None, "wp_token": None},
    ]
    assert first["next_after"] == ids["p1"]
    second = project.client.get(
        f"/segments/{segment['id']}/members", params={"limit": 2, "after": ids["p1"]}
    ).json()
    assert [m["uid"] for m in second["items"]] == ["p2", "p3"]
    last = project.client.get(
        f"/segments/{segment['id']}/members", params={"limit": 2, "after": ids["p3"]}
    ).json()
    assert ([m["uid"] for m in last["items"]], last["next_after"]) == (["p4"], None)
    exact = project.client.get(f"/segments/{segment['id']}/members", params={"limit": 5}).json()
    assert (len(exact["items"]), exact["next_after"]) == (5, None)
    assert member_uids(project, segment["id"], page=1) == ["p0", "p1", "p2", "p3", "p4"]
    beyond = project.client.get(f"/segments/{segment['id']}/members", params={"after": 2**31 - 1})
    assert beyond.json() == {"items": [], "next_after": None}
    bad_pages: list[dict[str, Any]] = [
        {"limit": 0},
        {"limit": 1001},
        {"after": -1},
        {"after": 2**31},
        {"after": 2**63},
        {"limit": "x"},
    ]
    for bad in bad_pages:
        response = project.client.get(f"/segments/{segment['id']}/members", params=bad)
        assert response.status_code == 422


def test_members_of_a_never_generated_segment_is_409(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project)
    segment = create(project, CITY_IS_PARIS)
    response = project.client.get(f"/segments/{segment['id']}/members")
    assert response.status_code == 409
    assert response.json() == {"detail": "the segment has no members yet: generate it first"}


def test_segment_limit_keeps_the_lowest_profile_ids(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project, count=7)
    segment = create(project, CITY_IS_PARIS, segment_limit=2)
    assert generate(project, segment["id"])["member_count"] == 2
    assert member_uids(project, segment["id"]) == ["p0", "p2"]
    unlimited = create(project, CITY_IS_PARIS, segment_limit=None)
    assert generate(project, unlimited["id"])["member_count"] == 4


def test_regeneration_replaces_the_members(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project, count=2)
    segment = create(project, CITY_IS_PARIS)
    assert generate(project, segment["id"])["member_count"] == 1
    with transaction(backend.sessions) as session:
        session.add(Profile(project_id=project.id, uid="late", fields={"city": "Paris"}))
    assert generate(project, segment["id"])["member_count"] == 2
    assert member_uids(project, segment["id"]) == ["p0", "late"]


def test_changing_what_decides_membership_forgets_the_members(
    backend: Backend, project: ApiProject
) -> None:
    city_profiles(backend, project, count=3)
    segment = create(project, CITY_IS_PARIS)
    generate(project, segment["id"])
    url = f"/segments/{segment['id']}"

    renamed = project.client.patch(url, json={"name": "Still Parisians", "tags": "x"}).json()
    assert (renamed["status"], renamed["member_count"]) == ("ready", 2)
    same = project.client.put(url, json={"name": "n", "condition": CITY_IS_PARIS}).json()
    assert same["status"] == "ready"  # same condition and limit: members still hold
    assert member_uids(project, segment["id"]) == ["p0", "p2"]

    for change in ({"condition": {"not": CITY_IS_PARIS}}, {"segment_limit": 1}):
        generate(project, segment["id"])
        edited = project.client.patch(url, json=change).json()
        assert (edited["status"], edited["member_count"], edited["generated_at"]) == (
            "new",
            None,
            None,
        )
        assert project.client.get(f"{url}/members").status_code == 409
    with transaction(backend.sessions) as session:
        left = session.scalars(
            select(SegmentMember.profile_id).where(SegmentMember.segment_id == segment["id"])
        ).all()
    assert left == []


def test_a_condition_that_no_longer_holds_fails_generation(
    backend: Backend, project: ApiProject
) -> None:
    city_profiles(backend, project)
    segment = create(project, {"and": [{"and": []}, CITY_IS_PARIS]})
    with transaction(backend.sessions) as session:
        field = session.scalar(select(ProfileField).where(ProfileField.project_id == project.id))
        session.delete(field)
    project.client.post(f"/segments/{segment['id']}/generate")
    done = wait_generated(project.client, segment["id"])
    assert done["status"] == "failed"
    assert done["error"] == (
        "condition.and.1.field: unknown field 'city': not a system field nor declared"
    )
    assert project.client.get(f"/segments/{segment['id']}/members").status_code == 409


def add_campaign(
    backend: Backend, project_id: int, *, source_type: str, source_id: int, state: str
) -> str:
    """A campaign (with its category and email) reading `source_id`; its `post` key."""
    with transaction(backend.sessions) as session:
        category = Category(project_id=project_id, title="News", translations={})
        session.add(category)
        session.flush()
        email = Email(
            project_id=project_id,
            category_id=category.id,
            from_address="news@example.com",
            asset_key=secrets.token_hex(16),
        )
        session.add(email)
        session.flush()
        campaign = Campaign(
            project_id=project_id,
            post_type="S",
            message_id=email.id,
            source_type=source_type,
            source_id=source_id,
            spooler_token=secrets.token_hex(16),
            state=state,
        )
        session.add(campaign)
        session.flush()
        return campaign.post


@pytest.mark.parametrize("state", [s.value for s in State])
def test_only_a_campaign_done_with_its_segment_lets_it_be_deleted(
    backend: Backend, project: ApiProject, state: str
) -> None:
    # The rule API sources follow too: finished and archived campaigns are done with
    # their source; a draft, planned, running or paused one may still read it.
    segment = create(project, {"and": []})
    post = add_campaign(backend, project.id, source_type="S", source_id=segment["id"], state=state)
    response = project.client.delete(f"/segments/{segment['id']}")
    if state in ("finished", "archived"):
        assert response.status_code == 204
        assert project.client.get(f"/segments/{segment['id']}").status_code == 404
        return
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"segment {segment['id']} is the source of campaign {post}"
    }
    assert project.client.get(f"/segments/{segment['id']}").status_code == 200
    with transaction(backend.sessions) as session:
        session.execute(
            update(Campaign).where(Campaign.project_id == project.id).values(state="finished")
        )
    assert project.client.delete(f"/segments/{segment['id']}").status_code == 204


def test_only_campaigns_reading_this_segment_block_its_deletion(
    backend: Backend, project: ApiProject
) -> None:
    segment = create(project, {"and": []})
    other = create(project, {"and": []})
    # An API source or a CSV campaign with the same number, and a campaign of another
    # segment, read something else.
    for source_type, source_id in (("A", segment["id"]), ("U", segment["id"]), ("S", other["id"])):
        add_campaign(
            backend, project.id, source_type=source_type, source_id=source_id, state="running"
        )
    assert project.client.delete(f"/segments/{segment['id']}").status_code == 204
    assert project.client.delete(f"/segments/{other['id']}").status_code == 409


# -- errors --------------------------------------------------------------------------


def test_unknown_id_is_404_for_every_verb(project: ApiProject) -> None:
    response = project.client.get("/segments/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "segment 999999 not found"}
    body = {"name": "x", "condition": {"and": []}}
    assert project.client.put("/segments/999999", json=body).status_code == 404
    assert project.client.patch("/segments/999999", json={"name": "x"}).status_code == 404
    assert project.client.delete("/segments/999999").status_code == 404
    assert project.client.post("/segments/999999/generate").status_code == 404
    assert project.client.get("/segments/999999/members").status_code == 404


def test_bad_bodies_are_422_and_write_nothing(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project)
    bodies: list[tuple[Any, list[str | int]]] = [
        ({"condition": {"and": []}}, ["body", "name"]),
        ({"name": "", "condition": {"and": []}}, ["body", "name"]),
        ({"name": "x"}, ["body", "condition"]),
        ({"name": "x", "condition": [1]}, ["body", "condition"]),
        ({"name": "x", "condition": {"and": []}, "segment_limit": 0}, ["body", "segment_limit"]),
        ({"name": "x", "condition": {"and": []}, "segment_limit": "5"}, ["body", "segment_limit"]),
        ({"name": "x", "condition": {"and": []}, "colour": "red"}, ["body", "colour"]),
        (
            {"name": "x", "condition": {"and": [CITY_IS_PARIS, {"field": "pole9"}]}},
            ["body", "condition", "and", 1, "field"],
        ),
        (
            {"name": "x", "condition": {"field": "city", "op": "gt", "value": ["x"]}},
            ["body", "condition", "value"],
        ),
        (
            {"name": "x", "condition": {"not": {"subscribed": 999999}}},
            ["body", "condition", "not", "subscribed"],
        ),
    ]
    for body, loc in bodies:
        response = project.client.post("/segments", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"] == loc, body
    assert project.client.get("/segments").json() == []


def test_a_bad_node_names_itself(backend: Backend, project: ApiProject) -> None:
    add_profiles(backend, project.id, {"pole2": "Int"}, [])
    response = project.client.post(
        "/segments",
        json={"name": "x", "condition": {"and": [{"field": "pole2", "op": "ge", "value": "abc"}]}},
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "condition", "and", 0, "value"],
                "msg": "Int field 'pole2': expected an integer, got 'abc'",
                "type": "value_error",
            }
        ]
    }


def test_bad_rewrites_and_edits_change_nothing(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project)
    segment = create(project, CITY_IS_PARIS, tags="geo")
    generate(project, segment["id"])
    url = f"/segments/{segment['id']}"
    before = project.client.get(url).json()
    bad_condition = {"field": "city", "op": "between", "value": ["z", "a"]}
    attempts = [
        project.client.put(url, json={"name": "x", "condition": bad_condition}),
        project.client.put(url, json={"name": "x"}),
        project.client.patch(url, json={"condition": bad_condition}),
        project.client.patch(url, json={"name": None}),
        project.client.patch(url, json={"condition": None}),
        project.client.patch(url, json={"segment_limit": -1}),
        project.client.patch(url, json={"status": "ready"}),
    ]
    assert [a.status_code for a in attempts] == [422] * len(attempts)
    assert attempts[3].json()["detail"][0]["loc"] == ["body", "name"]
    assert project.client.get(url).json() == before
    assert member_uids(project, segment["id"]) == ["p0", "p2"]


# -- isolation -----------------------------------------------------------------------


def test_another_projects_segment_is_404_for_every_verb(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    city_profiles(backend, project)
    mine = create(project, CITY_IS_PARIS)["id"]
    generate(project, mine)
    other = other_project.client
    assert other.get("/segments").json() == []
    assert other.get(f"/segments/{mine}").status_code == 404
    body = {"name": "x", "condition": {"and": []}}
    assert other.put(f"/segments/{mine}", json=body).status_code == 404
    assert other.patch(f"/segments/{mine}", json={"name": "x"}).status_code == 404
    assert other.post(f"/segments/{mine}/generate").status_code == 404
    assert other.get(f"/segments/{mine}/members").status_code == 404
    assert other.delete(f"/segments/{mine}").status_code == 404
    got = project.client.get(f"/segments/{mine}").json()
    assert (got["name"], got["status"]) == ("Segment", "ready")


def test_another_projects_fields_and_categories_are_unknown(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    city_profiles(backend, project)
    with transaction(backend.sessions) as session:
        category = Category(project_id=project.id, title="Mine", translations={})
        session.add(category)
        session.flush()
        category_id = category.id
    create(project, {"and": [CITY_IS_PARIS, {"subscribed": category_id}]})
    for condition, loc in (
        (CITY_IS_PARIS, ["body", "condition", "field"]),
        ({"subscribed": category_id}, ["body", "condition", "subscribed"]),
    ):
        response = other_project.client.post(
            "/segments", json={"name": "x", "condition": condition}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == loc


def test_a_segment_never_matches_another_projects_profiles(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    city_profiles(backend, project, count=2)
    add_profiles(
        backend, other_project.id, {"city": "String"}, [{"uid": "x", "fields": {"city": "Paris"}}]
    )
    everyone = create(project, {"and": []})
    parisians = create(project, CITY_IS_PARIS)
    assert generate(project, everyone["id"])["member_count"] == 2
    assert generate(project, parisians["id"])["member_count"] == 1
    assert member_uids(project, parisians["id"]) == ["p0"]
    theirs = create(other_project, CITY_IS_PARIS)
    assert generate(other_project, theirs["id"])["member_count"] == 1
    assert member_uids(other_project, theirs["id"]) == ["x"]


def test_deleting_a_segment_deletes_its_members(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project)
    segment = create(project, CITY_IS_PARIS)
    generate(project, segment["id"])
    assert project.client.delete(f"/segments/{segment['id']}").status_code == 204
    with transaction(backend.sessions) as session:
        assert session.get(Segment, segment["id"]) is None
        rows = session.scalars(
            select(SegmentMember.profile_id).where(SegmentMember.segment_id == segment["id"])
        ).all()
    assert rows == []
