"""`POST /api/v1/users/bulk` (seed 002): per-item answers, partial errors, 10,000 items."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from envoi.profiles.models import Profile
from tests.conftest import ApiProject, Backend
from tests.test_users import declare, get_user

SEED_BODY = [
    {"email": "user1@mail.ru", "fields": {"pole1": "text1", "pole2": 123}},
    {"email": "user2@mail.ru", "fields": {"pole1": "text2", "pole2": 777}},
]


def bulk(project: ApiProject, items: Any) -> list[dict[str, Any]]:
    response = project.client.post("/users/bulk", json=items)
    assert response.status_code == 202, response.text
    answers: list[dict[str, Any]] = response.json()
    return answers


def test_seed_example_bulk_upsert(project: ApiProject) -> None:
    declare(project, pole2="Int")
    response = project.client.post("/users/bulk", json=SEED_BODY)
    assert response.status_code == 202
    assert response.json() == [
        {"email": "user1@mail.ru", "fields": {"pole2": 123}},
        {"email": "user2@mail.ru", "fields": {"pole2": 777}},
    ]
    assert get_user(project, email="user1@mail.ru")["fields"] == {"pole2": 123}
    assert get_user(project, email="user2@mail.ru")["fields"] == {"pole2": 777}


def test_bad_item_is_refused_alone(project: ApiProject) -> None:
    declare(project, pole2="Int")
    answers = bulk(
        project,
        [
            {"email": "ok1@example.com", "fields": {"pole2": 1}},
            {"email": "BAD@example.com", "fields": {"pole2": 1.5}},
            {"email": "ok2@example.com", "fields": {"pole2": "2"}},
        ],
    )
    assert answers[0] == {"email": "ok1@example.com", "fields": {"pole2": 1}}
    assert answers[1] == {
        "email": "bad@example.com",  # normalised: the identifiers were fine
        "error": {
            "type": "value_error",
            "loc": ["body", 1, "fields", "pole2"],
            "msg": "pole2 (Int): expected an integer, got 1.5",
        },
    }
    assert answers[2] == {"email": "ok2@example.com", "fields": {"pole2": 2}}
    assert get_user(project, email="ok2@example.com")["fields"] == {"pole2": 2}
    assert project.client.get("/users", params={"email": "bad@example.com"}).status_code == 404


def test_every_kind_of_bad_item_gets_its_own_error(project: ApiProject) -> None:
    answers = bulk(
        project,
        [
            {"fields": {}},
            {"email": "nope"},
            {"email": "a@example.com", "colour": "red"},
            {"email": "b@example.com", "language": "english"},
            {"email": "c@example.com", "subscriptions": {"999999": False}},
            {"email": "d@example.com", "update_profile_last_updated_at": "later"},
            {"email": "fine@example.com"},
        ],
    )
    assert [a.get("error", {}).get("loc") for a in answers] == [
        ["body", 0],
        ["body", 1, "email"],
        ["body", 2, "colour"],
        ["body", 3, "language"],
        ["body", 4, "subscriptions", "999999"],
        ["body", 5, "update_profile_last_updated_at"],
        None,
    ]
    assert answers[1]["email"] == "nope"  # a refused item echoes its identifiers as given
    assert answers[2]["error"]["type"] == "extra_forbidden"
    assert answers[6] == {"email": "fine@example.com", "fields": {}}
    for email in ("a@example.com", "b@example.com", "c@example.com", "d@example.com"):
        assert project.client.get("/users", params={"email": email}).status_code == 404


def test_items_naming_the_same_profile_are_both_refused(project: ApiProject) -> None:
    declare(project, pole1="String")
    answers = bulk(
        project,
        [
            {"email": "same@example.com", "fields": {"pole1": "a"}},
            {"email": "other@example.com"},
            {"email": "SAME@example.com", "uid": "u3", "fields": {"pole1": "b"}},
        ],
    )
    assert answers[0]["error"]["type"] == "duplicate"
    assert answers[2]["error"]["type"] == "duplicate"
    assert "(0, 2)" in answers[0]["error"]["msg"]
    assert answers[2]["uid"] == "u3"
    assert answers[1] == {"email": "other@example.com", "fields": {}}
    assert project.client.get("/users", params={"email": "same@example.com"}).status_code == 404
    assert project.client.get("/users", params={"uid": "u3"}).status_code == 404


def test_different_identifiers_of_one_existing_profile_are_duplicates(
    project: ApiProject,
) -> None:
    project.client.post("/users", json={"email": "a@example.com", "uid": "u1"})
    answers = bulk(project, [{"email": "a@example.com"}, {"uid": "u1", "language": "de"}])
    assert [a["error"]["type"] for a in answers] == ["duplicate", "duplicate"]
    assert get_user(project, uid="u1")["language"] is None


def test_conflicting_identifiers_fail_that_item_only(project: ApiProject) -> None:
    bulk(project, [{"email": "a@example.com"}, {"uid": "u2"}])
    answers = bulk(project, [{"email": "a@example.com", "uid": "u2"}, {"email": "c@example.com"}])
    assert answers[0]["error"]["type"] == "conflict"
    assert answers[0]["error"]["loc"] == ["body", 0]
    assert answers[1] == {"email": "c@example.com", "fields": {}}
    assert get_user(project, email="a@example.com")["uid"] is None


def test_stale_items_are_not_applied(project: ApiProject) -> None:
    declare(project, pole1="String")
    bulk(
        project,
        [
            {"uid": "1", "fields": {"pole1": "v2"}, "update_profile_last_updated_at": "2024-05-02"},
            {"uid": "2", "fields": {"pole1": "v2"}, "update_profile_last_updated_at": "2024-05-02"},
        ],
    )
    answers = bulk(
        project,
        [
            {"uid": "1", "fields": {"pole1": "v1"}, "update_profile_last_updated_at": "2024-05-01"},
            {"uid": "2", "fields": {"pole1": "v3"}, "update_profile_last_updated_at": "2024-05-03"},
        ],
    )
    assert answers[0]["uid"] == "1"
    assert answers[0]["error"]["type"] == "stale"
    assert answers[1] == {
        "uid": "2",
        "fields": {"pole1": "v3"},
        "update_profile_last_updated_at": "2024-05-03T00:00:00Z",
    }
    assert get_user(project, uid="1")["fields"] == {"pole1": "v2"}
    assert get_user(project, uid="2")["fields"] == {"pole1": "v3"}


def test_language_and_subscriptions_in_bulk(project: ApiProject) -> None:
    category = project.client.post("/categories", json={"title": "News"}).json()["category"]
    answers = bulk(
        project,
        [
            {"email": "a@example.com", "language": "EN", "subscriptions": {str(category): False}},
            {"email": "b@example.com"},
        ],
    )
    assert answers[0] == {
        "email": "a@example.com",
        "fields": {},
        "language": "en",
        "subscriptions": {str(category): False},
    }
    got = get_user(project, email="a@example.com")
    assert got["language"] == "en"
    assert got["subscriptions"] == {str(category): False}
    assert get_user(project, email="b@example.com")["subscriptions"] == {}


def test_bad_bodies_are_422_and_write_nothing(project: ApiProject) -> None:
    client = project.client
    bad_json = client.post(
        "/users/bulk", content=b"[{", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert client.post("/users/bulk", json={"email": "a@example.com"}).status_code == 422
    too_many = client.post(
        "/users/bulk", json=[{"uid": str(i)} for i in range(10_001)], timeout=120
    )
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["body"]
    assert client.get("/users", params={"email": "a@example.com"}).status_code == 404
    assert client.get("/users", params={"uid": "0"}).status_code == 404


def test_an_item_that_is_not_an_object_is_refused_alone(project: ApiProject) -> None:
    answers = bulk(
        project, [{"email": "a@example.com"}, 5, "b@example.com", None, [{"uid": "1"}], {}]
    )
    assert answers[0] == {"email": "a@example.com", "fields": {}}
    not_objects = answers[1:5]
    assert all(set(a) == {"error"} for a in not_objects)  # no identifiers to echo
    assert [a["error"]["loc"] for a in not_objects] == [["body", i] for i in range(1, 5)]
    assert {a["error"]["type"] for a in not_objects} == {"model_type"}
    assert answers[5]["error"] == {
        "type": "value_error",
        "loc": ["body", 5],
        "msg": "one of uid, email, phone or wp_token is required",
    }
    assert get_user(project, email="a@example.com")["email"] == "a@example.com"
    assert project.client.get("/users", params={"email": "b@example.com"}).status_code == 404


def test_category_ids_beyond_the_id_column_fail_their_item(project: ApiProject) -> None:
    category = project.client.post("/categories", json={"title": "News"}).json()["category"]
    big = ["2147483648", "99999999999", "99999999999999999999"]
    answers = bulk(
        project,
        [{"email": f"u{i}@example.com", "subscriptions": {key: False}} for i, key in enumerate(big)]
        + [{"email": "ok@example.com", "subscriptions": {str(category): False}}],
    )
    for i, key in enumerate(big):
        assert answers[i] == {
            "email": f"u{i}@example.com",
            "error": {
                "type": "value_error",
                "loc": ["body", i, "subscriptions", key],
                "msg": f"category {key} not found",
            },
        }
        assert (
            project.client.get("/users", params={"email": f"u{i}@example.com"}).status_code == 404
        )
    assert answers[3]["subscriptions"] == {str(category): False}


def test_empty_bulk_is_an_empty_answer(project: ApiProject) -> None:
    assert bulk(project, []) == []


def test_bulk_never_touches_another_project(project: ApiProject, other_project: ApiProject) -> None:
    declare(project, pole1="String")
    declare(other_project, pole1="String")
    project.client.post("/users", json={"email": "a@example.com", "fields": {"pole1": "mine"}})
    answers = bulk(other_project, [{"email": "a@example.com", "fields": {"pole1": "theirs"}}])
    assert answers == [{"email": "a@example.com", "fields": {"pole1": "theirs"}}]
    assert get_user(project, email="a@example.com")["fields"] == {"pole1": "mine"}
    assert get_user(other_project, email="a@example.com")["fields"] == {"pole1": "theirs"}


def test_ten_thousand_profiles_in_one_request(backend: Backend, project: ApiProject) -> None:
    """Correctness at the seed's size; its speed is measured by bench/bulk_upsert.py."""
    declare(project, pole1="String", pole2="Int", since="DateTime")
    items = [
        {
            "email": f"user{i}@mail.ru",
            "uid": f"u{i}",
            "fields": {"pole1": f"text{i}", "pole2": i, "since": "2024-05-01T10:00:00+02:00"},
        }
        for i in range(10_000)
    ]
    answers = bulk(project, items)
    assert len(answers) == 10_000
    assert not [a for a in answers if "error" in a]
    assert answers[9_999] == {
        "uid": "u9999",
        "email": "user9999@mail.ru",
        "fields": {"pole1": "text9999", "pole2": 9999, "since": "2024-05-01T08:00:00Z"},
    }

    for item in items:
        item["fields"] = {"pole2": "-1"}
    answers = bulk(project, items)
    assert len(answers) == 10_000
    assert not [a for a in answers if "error" in a]
    assert answers[0] == {"email": "user0@mail.ru", "uid": "u0", "fields": {"pole2": -1}}

    for i in (0, 4_321, 9_999):
        got = get_user(project, email=f"user{i}@mail.ru")
        assert got["uid"] == f"u{i}"
        assert got["fields"] == {"pole1": f"text{i}", "pole2": -1, "since": "2024-05-01T08:00:00Z"}
    with backend.sessions() as session:
        query = select(Profile.uid, Profile.email, Profile.fields).where(
            Profile.project_id == project.id
        )
        stored = {uid: (email, fields) for uid, email, fields in session.execute(query)}
    assert len(stored) == 10_000
    for i in range(10_000):
        assert stored[f"u{i}"] == (
            f"user{i}@mail.ru",
            {"pole1": f"text{i}", "pole2": -1, "since": "2024-05-01T08:00:00Z"},
        )
