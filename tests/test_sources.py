"""`/api/v1/sources`: API sources, their recipients, errors and isolation."""

from __future__ import annotations

from typing import Any

from tests.conftest import ApiProject, Backend
from tests.test_campaigns_support import make_email


def _source(project: ApiProject, name: str = "Buyers") -> dict[str, Any]:
    response = project.client.post("/sources", json={"name": name})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_list_get_delete(project: ApiProject) -> None:
    first = _source(project)
    assert set(first) == {"id", "project_id", "name", "recipients", "created_at", "updated_at"}
    assert first["project_id"] == project.id
    assert first["name"] == "Buyers"
    assert first["recipients"] == 0
    second = _source(project, "Trial users")
    assert project.client.get("/sources").json() == [first, second]
    assert project.client.get(f"/sources/{first['id']}").json() == first

    assert project.client.delete(f"/sources/{first['id']}").status_code == 204
    assert project.client.get(f"/sources/{first['id']}").status_code == 404
    assert project.client.get("/sources").json() == [second]


def test_recipients_upsert_by_key(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    added = project.client.post(
        url,
        json=[
            {"email": "Ann@Example.com", "params": {"coupon": "A1"}},
            {"uid": 42, "email": "bob@example.com"},
            {"phone": "+33 6 12 34 56 78", "params": {"n": 1}},
            {"wp_token": "tok-1"},
        ],
    )
    assert added.status_code == 200, added.text
    assert added.json() == {"created": 4, "updated": 0, "rejected": 0, "errors": []}
    again = project.client.post(
        url,
        json=[
            {"email": "ann@example.com", "params": {"coupon": "A2"}},
            {"email": "new@example.com"},
            {"email": "new@example.com", "params": {"last": True}},  # the last one wins
        ],
    ).json()
    assert again == {"created": 1, "updated": 1, "rejected": 0, "errors": []}

    listed = project.client.get(url).json()
    assert [r["recipient_key"] for r in listed] == [
        "email:ann@example.com",
        "uid:42",
        "phone:+33612345678",
        "wp_token:tok-1",
        "email:new@example.com",
    ]
    ann = listed[0]
    assert set(ann) == {
        "id",
        "recipient_key",
        "uid",
        "email",
        "phone",
        "wp_token",
        "params",
        "created_at",
        "updated_at",
    }
    assert ann["email"] == "ann@example.com"
    assert ann["params"] == {"coupon": "A2"}
    assert listed[1]["uid"] == "42"
    assert listed[1]["email"] == "bob@example.com"
    assert listed[4]["params"] == {"last": True}
    assert project.client.get(f"/sources/{source}").json()["recipients"] == 5


def test_recipient_pages(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    project.client.post(url, json=[{"uid": str(i)} for i in range(25)])
    first = project.client.get(url, params={"limit": 10}).json()
    assert [r["uid"] for r in first] == [str(i) for i in range(10)]
    rest = project.client.get(url, params={"limit": 100, "after": first[-1]["id"]}).json()
    assert [r["uid"] for r in rest] == [str(i) for i in range(10, 25)]
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"limit": "x"}):
        assert project.client.get(url, params=bad).status_code == 422


def test_bad_items_are_reported_one_by_one(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    response = project.client.post(
        url,
        json=[
            {"email": "ok@example.com"},
            {"email": "not-an-address"},
            {"params": {"x": 1}},
            {"email": "x@example.com", "colour": "red"},
            "ann@example.com",
            {"email": "y@example.com", "params": ["not", "an", "object"]},
            {"phone": "12"},
        ],
    )
    assert response.status_code == 200
    body = response.json()
    assert body["created"] == 1
    assert body["rejected"] == 6
    assert [e["index"] for e in body["errors"]] == [1, 2, 3, 4, 5, 6]
    assert body["errors"][2]["loc"] == [3, "colour"]
    assert "not-an-address" in body["errors"][0]["msg"]
    assert [r["email"] for r in project.client.get(url).json()] == ["ok@example.com"]


def test_whole_request_errors(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    assert project.client.post(url, json={"email": "a@b.co"}).status_code == 422
    too_many = [{"uid": str(i)} for i in range(10_001)]
    assert project.client.post(url, json=too_many).status_code == 422
    bad_json = project.client.post(url, content=b"[{", headers={"content-type": "application/json"})
    assert bad_json.status_code == 422
    assert project.client.get(url).json() == []
    for body in ({}, {"name": ""}, {"name": "x", "kind": "y"}, {"name": 5}):
        assert project.client.post("/sources", json=body).status_code == 422
    assert project.client.get("/sources").json() == [
        project.client.get(f"/sources/{source}").json()
    ]


def test_remove_recipients(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    project.client.post(
        url,
        json=[
            {"email": "ann@example.com"},
            {"email": "bob@example.com"},
            {"uid": "7"},
            {"phone": "+33612345678"},
        ],
    )
    removed = project.client.request(
        "DELETE", url, json=[{"email": "ANN@example.com"}, {"email": "nobody@example.com"}]
    )
    assert removed.status_code == 200
    assert removed.json() == {"removed": 1}
    by_query = project.client.delete(url, params={"uid": "7", "phone": "+33 6 12 34 56 78"})
    assert by_query.json() == {"removed": 2}
    assert [r["email"] for r in project.client.get(url).json()] == ["bob@example.com"]

    assert project.client.delete(url).status_code == 422  # names nobody
    bad = project.client.request("DELETE", url, json=[{"email": "bob@example.com"}, {"email": "x"}])
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", 1]
    assert project.client.get(f"/sources/{source}").json()["recipients"] == 1


def test_a_source_used_by_a_campaign_is_not_deleted(backend: Backend, project: ApiProject) -> None:
    source = _source(project)["id"]
    email_id = make_email(backend, project)
    campaign = project.client.post(
        "/campaigns",
        json={"message_type": "L", "message_id": email_id, "source_type": "A", "source_id": source},
    ).json()
    response = project.client.delete(f"/sources/{source}")
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"API source {source} is used by campaign {campaign['post']} (draft)"
    )
    project.client.post(f"/campaigns/{campaign['id']}/archive")
    assert project.client.delete(f"/sources/{source}").status_code == 204
    # The archived campaign keeps its answer; it just reads from a source that is gone.
    assert project.client.get(f"/campaigns/{campaign['id']}").json()["source_id"] == source


def test_unknown_and_huge_ids_are_404(project: ApiProject) -> None:
    for source in (999999, 2**31, 2**70):
        assert project.client.get(f"/sources/{source}").status_code == 404
        assert project.client.delete(f"/sources/{source}").status_code == 404
        url = f"/sources/{source}/recipients"
        assert project.client.get(url).status_code == 404
        assert project.client.post(url, json=[{"uid": "1"}]).status_code == 404
    assert project.client.get("/sources/999999").json() == {"detail": "API source 999999 not found"}


def test_projects_never_see_each_other(project: ApiProject, other_project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    project.client.post(url, json=[{"uid": "1"}])
    theirs = other_project.client
    assert theirs.get("/sources").json() == []
    assert theirs.get(f"/sources/{source}").status_code == 404
    assert theirs.delete(f"/sources/{source}").status_code == 404
    assert theirs.get(url).status_code == 404
    assert theirs.post(url, json=[{"uid": "2"}]).status_code == 404
    assert theirs.request("DELETE", url, json=[{"uid": "1"}]).status_code == 404
    assert project.client.get(f"/sources/{source}").json()["recipients"] == 1
