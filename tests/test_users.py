"""`POST /api/v1/users` (single upsert) and `GET /api/v1/users` (seed 002 "users")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiProject


def declare(project: ApiProject, **types: str) -> None:
    for name, type_ in types.items():
        response = project.client.post("/fields", json={"name": name, "type": type_})
        assert response.status_code == 201, response.text


def get_user(project: ApiProject, **identifier: str) -> dict[str, Any]:
    response = project.client.get("/users", params=identifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_seed_example_single_upsert(project: ApiProject) -> None:
    declare(project, pole1="String")
    response = project.client.post(
        "/users", json={"email": "user@mail.ru", "fields": {"pole1": "text", "pole2": 123}}
    )
    assert response.status_code == 201
    assert response.json() == {"email": "user@mail.ru", "fields": {"pole1": "text"}}


def test_get_answers_the_whole_profile(project: ApiProject) -> None:
    declare(project, pole1="String")
    project.client.post("/users", json={"email": "user@mail.ru", "fields": {"pole1": "text"}})
    got = get_user(project, email="user@mail.ru")
    assert set(got) == {
        "id", "project_id", "uid", "email", "phone", "wp_token", "language", "fields",
        "subscriptions", "update_profile_last_updated_at", "created_at", "updated_at",
    }  # fmt: skip
    assert isinstance(got["id"], int)
    assert got["project_id"] == project.id
    assert got["email"] == "user@mail.ru"
    assert got["uid"] is got["phone"] is got["wp_token"] is got["language"] is None
    assert got["fields"] == {"pole1": "text"}
    assert got["subscriptions"] == {}
    assert got["update_profile_last_updated_at"] is None
    assert got["created_at"].endswith("Z")
    assert got["updated_at"].endswith("Z")


def test_update_merges_fields_key_by_key(project: ApiProject) -> None:
    declare(project, pole1="String", pole2="Int")
    project.client.post("/users", json={"email": "a@example.com", "fields": {"pole1": "x"}})
    second = project.client.post(
        "/users", json={"email": "a@example.com", "fields": {"pole2": "5"}}
    )
    assert second.status_code == 201
    assert second.json() == {"email": "a@example.com", "fields": {"pole2": 5}}
    assert get_user(project, email="a@example.com")["fields"] == {"pole1": "x", "pole2": 5}


def test_null_clears_a_field(project: ApiProject) -> None:
    declare(project, pole1="String", pole2="Int")
    project.client.post(
        "/users", json={"email": "a@example.com", "fields": {"pole1": "x", "pole2": 1}}
    )
    cleared = project.client.post(
        "/users", json={"email": "a@example.com", "fields": {"pole1": None}}
    )
    assert cleared.json() == {"email": "a@example.com", "fields": {"pole1": None}}
    assert get_user(project, email="a@example.com")["fields"] == {"pole2": 1}


def test_identifiers_are_normalised_and_added(project: ApiProject) -> None:
    first = project.client.post("/users", json={"email": " Ann@Example.COM "})
    assert first.json() == {"email": "ann@example.com", "fields": {}}
    both = project.client.post(
        "/users", json={"email": "ann@example.com", "uid": 42, "phone": "+7 (900) 123-45-67"}
    )
    assert both.status_code == 201
    assert both.json() == {
        "uid": "42",
        "email": "ann@example.com",
        "phone": "+79001234567",
        "fields": {},
    }
    by_uid = get_user(project, uid="42")
    assert by_uid == get_user(project, phone="+79001234567")
    assert by_uid["email"] == "ann@example.com"
    project.client.post("/users", json={"uid": "42", "wp_token": "tok-1"})
    assert get_user(project, wp_token="tok-1")["id"] == by_uid["id"]


def test_typed_values_are_coerced_and_read_back(project: ApiProject) -> None:
    declare(
        project,
        s="String", i="Int", f="Float", b="Bool", d="Date", dt="DateTime", tags="List of String",
    )  # fmt: skip
    given = {
        "s": 12, "i": "123", "f": 3, "b": "true", "d": "2024-02-29",
        "dt": "2024-05-01T12:00:00+03:00", "tags": ["a", "b"],
    }  # fmt: skip
    stored = {
        "s": "12", "i": 123, "f": 3.0, "b": True, "d": "2024-02-29",
        "dt": "2024-05-01T09:00:00Z", "tags": ["a", "b"],
    }  # fmt: skip
    answer = project.client.post("/users", json={"uid": "u1", "fields": given})
    assert answer.status_code == 201
    assert answer.json()["fields"] == stored
    got = get_user(project, uid="u1")["fields"]
    assert got == stored
    assert type(got["f"]) is float
    assert type(got["i"]) is int


@pytest.mark.parametrize(
    ("type_", "value"),
    [
        ("Int", 1.5), ("Int", True), ("Int", "abc"), ("Float", "x"), ("Bool", "yes"),
        ("Date", "2024-02-30"), ("DateTime", "soon"), ("List of String", "a"), ("String", {}),
    ],
)  # fmt: skip
def test_uncoercible_value_is_422_and_writes_nothing(
    project: ApiProject, type_: str, value: object
) -> None:
    declare(project, pole1="String", pole2=type_)
    response = project.client.post(
        "/users", json={"email": "user@mail.ru", "fields": {"pole1": "text", "pole2": value}}
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "fields", "pole2"]
    assert error["type"] == "value_error"
    assert "pole2" in error["msg"]
    assert project.client.get("/users", params={"email": "user@mail.ru"}).status_code == 404


def test_uncoercible_update_leaves_the_profile_untouched(project: ApiProject) -> None:
    declare(project, pole1="String", pole2="Int")
    project.client.post("/users", json={"email": "a@example.com", "fields": {"pole1": "x"}})
    response = project.client.post(
        "/users", json={"email": "a@example.com", "fields": {"pole1": "y", "pole2": 1.5}}
    )
    assert response.status_code == 422
    assert get_user(project, email="a@example.com")["fields"] == {"pole1": "x"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"fields": {"pole1": "x"}}, ["body"]),
        ({"email": None}, ["body"]),
        ({"email": "not-an-email"}, ["body", "email"]),
        ({"phone": "call me"}, ["body", "phone"]),
        ({"uid": "x" * 201}, ["body", "uid"]),
        ({"email": "a@example.com", "language": "english"}, ["body", "language"]),
        ({"email": "a@example.com", "update_profile_last_updated_at": "now"},
         ["body", "update_profile_last_updated_at"]),
        ({"email": "a@example.com", "fields": {"update_profile_last_updated_at": 5}},
         ["body", "fields", "update_profile_last_updated_at"]),
        ({"email": "a@example.com", "subscriptions": {"999999": False}},
         ["body", "subscriptions", "999999"]),
        # Beyond the INTEGER id column: no such category, on both backends (not a 500).
        ({"email": "a@example.com", "subscriptions": {"2147483648": False}},
         ["body", "subscriptions", "2147483648"]),
        ({"email": "a@example.com", "subscriptions": {"99999999999999999999": True}},
         ["body", "subscriptions", "99999999999999999999"]),
        ({"email": "a@example.com", "subscriptions": {"-1": True}},
         ["body", "subscriptions", "-1"]),
        ({"email": "a@example.com", "fields": []}, ["body", "fields"]),
        ({"email": "a@example.com", "colour": "red"}, ["body", "colour"]),
        ({"email": ["a@example.com"]}, ["body", "email"]),
        ({"uid": True, "email": "a@example.com"}, ["body", "uid", "str"]),
    ],
)  # fmt: skip
def test_bad_items_are_422_at_the_right_place(
    project: ApiProject, body: dict[str, Any], loc: list[object]
) -> None:
    declare(project, pole1="String")
    response = project.client.post("/users", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert project.client.get("/users", params={"email": "a@example.com"}).status_code == 404


def test_bad_json_and_wrong_body_are_422(project: ApiProject) -> None:
    bad = project.client.post(
        "/users", content=b'{"email": "a@', headers={"content-type": "application/json"}
    )
    assert bad.status_code == 422
    assert project.client.post("/users", json=[{"email": "a@example.com"}]).status_code == 422
    assert project.client.get("/users", params={"email": "a@example.com"}).status_code == 404


def test_language_is_a_system_field(project: ApiProject) -> None:
    answer = project.client.post("/users", json={"email": "a@example.com", "language": "RU"})
    assert answer.json() == {"email": "a@example.com", "fields": {}, "language": "ru"}
    assert get_user(project, email="a@example.com")["language"] == "ru"
    # Not given: kept (and not echoed); null: cleared.
    assert "language" not in project.client.post("/users", json={"email": "a@example.com"}).json()
    assert get_user(project, email="a@example.com")["language"] == "ru"
    project.client.post("/users", json={"email": "a@example.com", "language": None})
    assert get_user(project, email="a@example.com")["language"] is None


def test_subscriptions_are_opt_out(project: ApiProject) -> None:
    first = project.client.post("/categories", json={"title": "Bonuses"}).json()["category"]
    second = project.client.post("/categories", json={"title": "News"}).json()["category"]
    answer = project.client.post(
        "/users", json={"email": "a@example.com", "subscriptions": {str(first): False}}
    )
    assert answer.status_code == 201
    assert answer.json() == {
        "email": "a@example.com",
        "fields": {},
        "subscriptions": {str(first): False},
    }
    assert get_user(project, email="a@example.com")["subscriptions"] == {str(first): False}

    project.client.post(
        "/users",
        json={"email": "a@example.com", "subscriptions": {str(first): True, str(second): False}},
    )
    assert get_user(project, email="a@example.com")["subscriptions"] == {
        str(first): True,
        str(second): False,
    }


def test_another_projects_category_is_refused(
    project: ApiProject, other_project: ApiProject
) -> None:
    theirs = other_project.client.post("/categories", json={"title": "X"}).json()["category"]
    response = project.client.post(
        "/users", json={"email": "a@example.com", "subscriptions": {str(theirs): False}}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == f"category {theirs} not found"


def test_category_ids_beyond_the_id_column_are_not_found(project: ApiProject) -> None:
    response = project.client.post(
        "/users", json={"email": "a@example.com", "subscriptions": {"99999999999": False}}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "subscriptions", "99999999999"],
            "msg": "category 99999999999 not found",
            "type": "value_error",
        }
    ]


def test_identifiers_of_two_profiles_are_a_conflict(project: ApiProject) -> None:
    declare(project, pole1="String")
    project.client.post("/users", json={"email": "a@example.com"})
    project.client.post("/users", json={"uid": "u2"})
    response = project.client.post(
        "/users", json={"email": "a@example.com", "uid": "u2", "fields": {"pole1": "x"}}
    )
    assert response.status_code == 409
    assert "name different profiles" in response.json()["detail"]
    assert get_user(project, email="a@example.com")["uid"] is None
    assert get_user(project, uid="u2")["fields"] == {}


def test_stale_update_is_409_and_not_applied(project: ApiProject) -> None:
    declare(project, pole1="String")
    fresh = project.client.post(
        "/users",
        json={
            "email": "a@example.com",
            "fields": {"pole1": "new", "update_profile_last_updated_at": "2024-05-01T10:00:00Z"},
        },
    )
    assert fresh.status_code == 201
    assert fresh.json() == {
        "email": "a@example.com",
        "fields": {"pole1": "new", "update_profile_last_updated_at": "2024-05-01T10:00:00Z"},
    }
    stale = project.client.post(
        "/users",
        json={
            "email": "a@example.com",
            "fields": {"pole1": "old"},
            "update_profile_last_updated_at": "2024-05-01T12:59:59+03:00",
        },
    )
    assert stale.status_code == 409
    assert "older than" in stale.json()["detail"]
    got = get_user(project, email="a@example.com")
    assert got["fields"] == {"pole1": "new"}
    assert got["update_profile_last_updated_at"] == "2024-05-01T10:00:00Z"

    # Same instant or later is applied; an update without a time always is.
    newer = project.client.post(
        "/users",
        json={
            "email": "a@example.com",
            "fields": {"pole1": "newer"},
            "update_profile_last_updated_at": "2024-05-01T10:00:00.250",
        },
    )
    assert newer.status_code == 201
    assert newer.json()["update_profile_last_updated_at"] == "2024-05-01T10:00:00.250000Z"
    untimed = project.client.post(
        "/users", json={"email": "a@example.com", "fields": {"pole1": "untimed"}}
    )
    assert untimed.status_code == 201
    got = get_user(project, email="a@example.com")
    assert got["fields"] == {"pole1": "untimed"}
    assert got["update_profile_last_updated_at"] == "2024-05-01T10:00:00.250000Z"


def test_get_needs_a_known_valid_identifier(project: ApiProject) -> None:
    missing = project.client.get("/users", params={"email": "nobody@example.com"})
    assert missing.status_code == 404
    assert missing.json() == {"detail": "user email=nobody@example.com not found"}
    none = project.client.get("/users")
    assert none.status_code == 422
    assert none.json()["detail"][0]["loc"] == ["query"]
    bad = project.client.get("/users", params={"email": "nope"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "email"]


def test_get_by_identifiers_of_two_profiles_is_409(project: ApiProject) -> None:
    project.client.post("/users", json={"email": "a@example.com"})
    project.client.post("/users", json={"uid": "u2"})
    response = project.client.get("/users", params={"email": "a@example.com", "uid": "u2"})
    assert response.status_code == 409


def test_projects_never_see_each_other(project: ApiProject, other_project: ApiProject) -> None:
    declare(project, pole1="String")
    declare(other_project, pole1="String")
    project.client.post("/users", json={"email": "a@example.com", "fields": {"pole1": "mine"}})

    assert other_project.client.get("/users", params={"email": "a@example.com"}).status_code == 404
    assert (
        other_project.client.delete("/users", params={"email": "a@example.com"}).status_code == 404
    )
    # The other project's upsert creates its own profile; mine is untouched.
    theirs = other_project.client.post(
        "/users", json={"email": "a@example.com", "fields": {"pole1": "theirs"}}
    )
    assert theirs.status_code == 201
    mine = get_user(project, email="a@example.com")
    assert mine["fields"] == {"pole1": "mine"}
    assert mine["project_id"] == project.id
    other = get_user(other_project, email="a@example.com")
    assert other["id"] != mine["id"]
    assert other["fields"] == {"pole1": "theirs"}
