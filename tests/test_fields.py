"""`/api/v1/fields`: the project's declared profile fields ("project settings" in seed 002)."""

from __future__ import annotations

import pytest

from tests.conftest import ApiProject
from tests.test_users_concurrency import concurrently

TYPES = ["String", "Int", "Float", "Bool", "Date", "DateTime", "List of String"]


def test_declare_list_get_delete(project: ApiProject) -> None:
    created = project.client.post("/fields", json={"name": "pole2", "type": "Int"})
    assert created.status_code == 201
    assert created.json() == {"name": "pole2", "type": "Int"}
    project.client.post("/fields", json={"name": "pole1", "type": "String"})

    assert project.client.get("/fields").json() == [
        {"name": "pole2", "type": "Int"},
        {"name": "pole1", "type": "String"},
    ]
    assert project.client.get("/fields/pole1").json() == {"name": "pole1", "type": "String"}

    assert project.client.delete("/fields/pole2").status_code == 204
    assert project.client.get("/fields/pole2").status_code == 404
    assert project.client.get("/fields").json() == [{"name": "pole1", "type": "String"}]


@pytest.mark.parametrize("type_", TYPES)
def test_every_type_can_be_declared(project: ApiProject, type_: str) -> None:
    response = project.client.post("/fields", json={"name": "f", "type": type_})
    assert response.status_code == 201
    assert response.json()["type"] == type_


def test_duplicate_name_is_409(project: ApiProject) -> None:
    project.client.post("/fields", json={"name": "pole1", "type": "String"})
    again = project.client.post("/fields", json={"name": "pole1", "type": "Int"})
    assert again.status_code == 409
    assert again.json() == {"detail": "field 'pole1' is already declared"}
    assert project.client.get("/fields/pole1").json()["type"] == "String"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "pole", "type": "Integer"},
        {"name": "pole", "type": "string"},
        {"name": "pole"},
        {"type": "Int"},
        {"name": "", "type": "Int"},
        {"name": "1pole", "type": "Int"},
        {"name": "po-le", "type": "Int"},
        {"name": "pôle", "type": "Int"},
        {"name": "p" * 65, "type": "Int"},
        {"name": "pole", "type": "Int", "extra": 1},
    ],
)
def test_bad_declarations_are_422(project: ApiProject, body: dict[str, object]) -> None:
    assert project.client.post("/fields", json=body).status_code == 422
    assert project.client.get("/fields").json() == []


@pytest.mark.parametrize(
    "name", ["uid", "email", "phone", "wp_token", "language", "fields", "subscriptions",
             "update_profile_last_updated_at", "Email", "ID"],
)  # fmt: skip
def test_system_names_are_refused(project: ApiProject, name: str) -> None:
    response = project.client.post("/fields", json={"name": name, "type": "String"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


def test_longest_name_is_64_characters(project: ApiProject) -> None:
    name = "_" + "a" * 63
    assert project.client.post("/fields", json={"name": name, "type": "Int"}).status_code == 201
    assert project.client.get(f"/fields/{name}").status_code == 200


def test_unknown_field_is_404(project: ApiProject) -> None:
    response = project.client.get("/fields/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "field 'nope' not found"}
    assert project.client.delete("/fields/nope").status_code == 404


def test_deleting_a_field_strips_its_values(project: ApiProject) -> None:
    project.client.post("/fields", json={"name": "pole1", "type": "String"})
    project.client.post("/fields", json={"name": "pole2", "type": "Int"})
    project.client.post(
        "/users", json={"email": "user@mail.ru", "fields": {"pole1": "text", "pole2": 5}}
    )
    assert project.client.delete("/fields/pole1").status_code == 204
    got = project.client.get("/users", params={"email": "user@mail.ru"}).json()
    assert got["fields"] == {"pole2": 5}

    # A new declaration of the same name never meets values of the old type.
    project.client.post("/fields", json={"name": "pole1", "type": "Int"})
    got = project.client.get("/users", params={"email": "user@mail.ru"}).json()
    assert got["fields"] == {"pole2": 5}


def test_projects_never_see_each_other(project: ApiProject, other_project: ApiProject) -> None:
    project.client.post("/fields", json={"name": "pole1", "type": "String"})
    assert other_project.client.get("/fields").json() == []
    assert other_project.client.get("/fields/pole1").status_code == 404
    assert other_project.client.delete("/fields/pole1").status_code == 404
    # The other project may declare the same name with its own type.
    created = other_project.client.post("/fields", json={"name": "pole1", "type": "Int"})
    assert created.status_code == 201
    assert project.client.get("/fields/pole1").json()["type"] == "String"

    # Values are kept only for the declaring project's own fields.
    other_project.client.post("/users", json={"email": "a@example.com", "fields": {"pole1": "7"}})
    got = other_project.client.get("/users", params={"email": "a@example.com"}).json()
    assert got["fields"] == {"pole1": 7}


def test_concurrent_declarations_of_one_name(project: ApiProject) -> None:
    requests = [("/fields", {"name": "pole1", "type": "Int"}) for _ in range(8)]
    responses = concurrently(project, requests)
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7
    for response in responses:
        if response.status_code == 409:
            assert response.json() == {"detail": "field 'pole1' is already declared"}
    assert project.client.get("/fields").json() == [{"name": "pole1", "type": "Int"}]
