"""`/api/v1/sources`: API sources, their recipients, errors and isolation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.campaign_support import make_email
from tests.conftest import ApiProject, Backend


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
    assert bad.json()["detail"][0]["loc"] == ["body", 1, "email"]
    for wrong_type in ({"uid": True}, {"email": 5}, {"phone": None, "wp_token": 7}):
        refused = project.client.request("DELETE", url, json=[wrong_type])
        assert refused.status_code == 422, wrong_type
    assert project.client.get(f"/sources/{source}").json()["recipients"] == 1


def _recipients(project: ApiProject, source: int) -> list[dict[str, Any]]:
    page: list[dict[str, Any]] = project.client.get(
        f"/sources/{source}/recipients", params={"limit": 1000}
    ).json()
    return page


def _identifiers(recipient: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(recipient[name] for name in ("uid", "email", "phone", "wp_token"))


def test_a_recipient_is_found_by_any_of_its_identifiers(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    first = project.client.post(url, json=[{"uid": "42", "email": "ann@x.io"}]).json()
    assert first == {"created": 1, "updated": 0, "rejected": 0, "errors": []}

    # Removed by its second identifier, from the query string or from a body.
    assert project.client.delete(url, params={"email": "ANN@x.io"}).json() == {"removed": 1}
    assert _recipients(project, source) == []
    project.client.post(url, json=[{"uid": "42", "email": "ann@x.io"}])
    removed = project.client.request("DELETE", url, json=[{"email": "ann@x.io"}])
    assert removed.json() == {"removed": 1}

    # Added again by its second identifier: the same recipient is updated, never doubled.
    project.client.post(url, json=[{"uid": "42", "email": "ann@x.io", "params": {"n": 1}}])
    [before] = _recipients(project, source)
    again = project.client.post(url, json=[{"email": "Ann@X.io", "params": {"n": 2}}]).json()
    assert again == {"created": 0, "updated": 1, "rejected": 0, "errors": []}
    [after] = _recipients(project, source)
    assert after["id"] == before["id"]
    assert after["recipient_key"] == "uid:42"
    assert _identifiers(after) == ("42", "ann@x.io", None, None)
    assert after["params"] == {"n": 2}  # params are replaced

    # Identifiers given are set, the others kept: a new address for uid 42.
    moved = project.client.post(
        url, json=[{"uid": 42, "email": "ann@new.io", "phone": 33612345678}]
    )
    assert moved.json()["updated"] == 1
    [current] = _recipients(project, source)
    assert current["id"] == before["id"]
    assert _identifiers(current) == ("42", "ann@new.io", "33612345678", None)
    assert current["params"] == {}
    # The old address names nobody any more; the new one and the phone name her.
    assert project.client.delete(url, params={"email": "ann@x.io"}).json() == {"removed": 0}
    assert project.client.delete(url, params={"phone": "33612345678"}).json() == {"removed": 1}
    assert project.client.get(f"/sources/{source}").json()["recipients"] == 0


def test_items_naming_one_recipient_in_one_request_are_merged(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    added = project.client.post(
        url,
        json=[
            {"uid": "9", "email": "nine@x.io", "params": {"n": 1}},
            {"email": "nine@x.io", "params": {"n": 2}},
            {"phone": "+33612345678"},
            {"uid": "9", "phone": "+33 6 12 34 56 78"},  # uid 9 and that phone: two recipients
        ],
    ).json()
    assert added["created"] == 2
    assert added["updated"] == 0
    assert added["rejected"] == 1
    assert added["errors"] == [
        {
            "index": 3,
            "loc": [3],
            "msg": "uid 9 and phone +33612345678 name different recipients of this source",
        }
    ]
    listed = _recipients(project, source)
    assert [_identifiers(r) for r in listed] == [
        ("9", "nine@x.io", None, None),
        (None, None, "+33612345678", None),
    ]
    assert listed[0]["params"] == {"n": 2}


def test_a_conflicting_item_changes_nothing(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    project.client.post(url, json=[{"uid": "1"}, {"email": "b@x.io", "params": {"k": "b"}}])
    before = _recipients(project, source)
    ids = sorted(r["id"] for r in before)
    response = project.client.post(
        url, json=[{"uid": "1", "email": "b@x.io", "params": {"k": "both"}}, {"uid": "2"}]
    ).json()
    assert response == {
        "created": 1,
        "updated": 0,
        "rejected": 1,
        "errors": [
            {
                "index": 0,
                "loc": [0],
                "msg": "uid 1 and email b@x.io name different recipients of this source "
                f"({ids[0]}, {ids[1]})",
            }
        ],
    }
    assert _recipients(project, source)[:2] == before


def test_an_identifier_may_move_between_recipients(project: ApiProject) -> None:
    """B gives up b@x.io and A takes it in the same request: the unique constraints hold
    whatever order the rows are written in."""
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    project.client.post(
        url, json=[{"uid": "1", "email": "a@x.io"}, {"uid": "2", "email": "b@x.io"}]
    )
    response = project.client.post(
        url, json=[{"uid": "2", "email": "c@x.io"}, {"uid": "1", "email": "b@x.io"}]
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"created": 0, "updated": 2, "rejected": 0, "errors": []}
    assert [_identifiers(r) for r in _recipients(project, source)] == [
        ("1", "b@x.io", None, None),
        ("2", "c@x.io", None, None),
    ]
    assert project.client.delete(url, params={"email": "a@x.io"}).json() == {"removed": 0}


def test_concurrent_adds_of_one_person_make_one_recipient(project: ApiProject) -> None:
    """Writers of a source take its lock: no request fails on a unique constraint, and
    whichever identifiers each one sends, the person is in the source once."""
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    bodies = [
        [{"uid": "42", "email": "ann@x.io", "params": {"n": i}}]
        if i % 2
        else [{"email": "ann@x.io", "params": {"n": i}}]
        for i in range(16)
    ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda body: project.client.post(url, json=body), bodies))
    assert [a.status_code for a in answers] == [200] * 16
    assert sum(a.json()["created"] for a in answers) == 1
    assert sum(a.json()["updated"] for a in answers) == 15
    [ann] = _recipients(project, source)
    assert _identifiers(ann) == ("42", "ann@x.io", None, None)


def test_identifiers_are_typed_like_users(project: ApiProject) -> None:
    source = _source(project)["id"]
    url = f"/sources/{source}/recipients"
    response = project.client.post(
        url,
        json=[
            {"uid": True},
            {"phone": False},
            {"email": 5},
            {"wp_token": 7},
            {"uid": 1.5},
            {"uid": ["1"]},
            {"uid": 7, "phone": 33612345678},  # integers are fine for uid and phone
            {"uid": "  8 ", "wp_token": " tok "},
        ],
    ).json()
    assert response["created"] == 2
    assert [(e["index"], e["loc"], e["msg"]) for e in response["errors"]] == [
        (0, [0, "uid"], "uid must be a string or an integer"),
        (1, [1, "phone"], "phone must be a string or an integer"),
        (2, [2, "email"], "email must be a string"),
        (3, [3, "wp_token"], "wp_token must be a string"),
        (4, [4, "uid"], "uid must be a string or an integer"),
        (5, [5, "uid"], "uid must be a string or an integer"),
    ]
    assert [_identifiers(r) for r in _recipients(project, source)] == [
        ("7", None, "33612345678", None),
        ("8", None, None, "tok"),
    ]


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
