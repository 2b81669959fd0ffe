"""`/api/v1/categories` (seed 002): shapes, languages, errors and isolation."""

from __future__ import annotations

from envoi.core.languages import LANGUAGES
from tests.conftest import ApiProject

SEED_BODY = {
    "title": "Return",
    "description": "Need to take a long break from the game?",
    "title_ru": "Возвращение",
    "description_ru": "Нужно сделать долгую паузу в игре?",
    "title_en": "Return",
}


def test_create_returns_201_with_the_seed_shape(project: ApiProject) -> None:
    response = project.client.post("/categories", json=SEED_BODY)
    assert response.status_code == 201
    body = response.json()
    assert isinstance(body["category"], int)
    assert body["project_id"] == project.id
    assert body["title"] == "Return"
    assert body["title_ru"] == "Возвращение"
    assert body["title_de"] is None
    for lang in LANGUAGES:
        assert f"title_{lang}" in body
        assert f"description_{lang}" in body


def test_zn_is_accepted_for_chinese(project: ApiProject) -> None:
    body = project.client.post(
        "/categories", json={"title": "T", "title_zn": "回归", "description_zn": "描述"}
    ).json()
    assert body["title_zh"] == "回归"
    assert body["description_zh"] == "描述"


def test_list_get_rewrite_delete(project: ApiProject) -> None:
    first = project.client.post("/categories", json=SEED_BODY).json()
    second = project.client.post("/categories", json={"title": "Bonuses"}).json()
    listed = project.client.get("/categories").json()
    assert [c["category"] for c in listed] == [first["category"], second["category"]]

    got = project.client.get(f"/categories/{first['category']}").json()
    assert got == first

    rewritten = project.client.put(
        f"/categories/{first['category']}", json={"title": "Comeback", "title_de": "Rückkehr"}
    )
    assert rewritten.status_code == 200
    assert rewritten.json()["title"] == "Comeback"
    assert rewritten.json()["title_de"] == "Rückkehr"
    assert rewritten.json()["title_ru"] is None  # PUT rewrites the whole category

    assert project.client.delete(f"/categories/{first['category']}").status_code == 204
    assert project.client.get(f"/categories/{first['category']}").status_code == 404
    assert [c["category"] for c in project.client.get("/categories").json()] == [second["category"]]


def test_unknown_id_is_404(project: ApiProject) -> None:
    response = project.client.get("/categories/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "category 999999 not found"}
    assert project.client.put("/categories/999999", json={"title": "x"}).status_code == 404
    assert project.client.delete("/categories/999999").status_code == 404


def test_bad_input_is_422_and_writes_nothing(project: ApiProject) -> None:
    assert project.client.post("/categories", json={"description": "no title"}).status_code == 422
    assert project.client.post("/categories", json={"title": 5}).status_code == 422
    assert (
        project.client.post("/categories", json={"title": "x", "colour": "red"}).status_code == 422
    )
    bad_json = project.client.post(
        "/categories", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    assert project.client.get("/categories").json() == []


def test_projects_never_see_each_other(project: ApiProject, other_project: ApiProject) -> None:
    mine = project.client.post("/categories", json={"title": "Mine"}).json()["category"]
    assert other_project.client.get("/categories").json() == []
    assert other_project.client.get(f"/categories/{mine}").status_code == 404
    assert other_project.client.put(f"/categories/{mine}", json={"title": "x"}).status_code == 404
    assert other_project.client.delete(f"/categories/{mine}").status_code == 404
    assert project.client.get(f"/categories/{mine}").json()["title"] == "Mine"


def test_an_id_beyond_the_integer_range_is_404(project: ApiProject) -> None:
    # PostgreSQL cannot compare such a number with an INTEGER id: it must not get there.
    response = project.client.get(f"/categories/{2**40}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"category {2**40} not found"}


def test_a_body_beyond_the_app_wide_cap_is_413_and_writes_nothing(project: ApiProject) -> None:
    huge = b'{"title": "' + b"x" * (65 << 20) + b'"}'
    response = project.client.post(
        "/categories", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": f"the request body exceeds {64 << 20} bytes"}
    assert project.client.get("/categories").json() == []
