"""`/api/v1/emails` (seed 002): fields in ten languages, PUT and PATCH, validation,
templates, and isolation between projects. Uploads are in test_emails_uploads.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from envoi.core.languages import LANGUAGES
from tests.conftest import ApiProject

KINDS = ("subject", "text_html", "text_plain", "x_amp_html")
FLAGS = ("is_urgent", "not_add_unsubscr_link", "not_add_web_view_link", "in_archive")


def new_category(project: ApiProject, title: str = "News") -> int:
    response = project.client.post("/categories", json={"title": title})
    assert response.status_code == 201
    category: int = response.json()["category"]
    return category


def new_email(project: ApiProject, **fields: Any) -> dict[str, Any]:
    body = {"category": new_category(project), "from_address": "news@example.com", **fields}
    response = project.client.post("/emails", json=body)
    assert response.status_code == 201, response.text
    email: dict[str, Any] = response.json()
    return email


def every_language_body(category: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "category": category,
        "from_address": "Game News <news@example.com>",
        "internal_name": "Comeback, March",
        "is_urgent": True,
        "not_add_web_view_link": True,
    }
    for kind in KINDS:
        body[kind] = f"{kind}: Hello {{{{ name }}}}"
        for lang in LANGUAGES:
            body[f"{kind}_{lang}"] = f"{kind} [{lang}]"
    return body


def test_create_answers_every_field_and_get_and_list_agree(project: ApiProject) -> None:
    body = every_language_body(new_category(project))
    response = project.client.post("/emails", json=body)
    assert response.status_code == 201
    email = response.json()
    assert isinstance(email["id"], int)
    assert email["project_id"] == project.id
    for key, value in body.items():
        assert email[key] == value, key
    assert email["not_add_unsubscr_link"] is False
    assert email["in_archive"] is False
    assert email["assets"] == []
    assert email["created_at"] == email["updated_at"]
    assert not any(key.startswith("file_html") for key in email)  # uploads are write-only

    assert project.client.get(f"/emails/{email['id']}").json() == email
    assert project.client.get("/emails").json() == [email]


def test_unset_texts_are_null_and_flags_false(project: ApiProject) -> None:
    email = new_email(project, subject_de="Hallo")
    assert email["subject_de"] == "Hallo"
    assert email["internal_name"] is None
    for kind in KINDS:
        assert email[kind] is None
        assert all(email[f"{kind}_{lang}"] is None for lang in LANGUAGES if kind != "subject")
    assert all(email[flag] is False for flag in FLAGS)


def test_zn_is_accepted_for_chinese(project: ApiProject) -> None:
    email = new_email(project, subject_zn="你好", text_html_zn="<p>你好</p>", text_plain_zn="你好")
    assert email["subject_zh"] == "你好"
    assert email["text_html_zh"] == "<p>你好</p>"
    assert email["text_plain_zh"] == "你好"
    assert "subject_zn" not in email
    edited = project.client.patch(f"/emails/{email['id']}", json={"x_amp_html_zn": "<b>amp</b>"})
    assert edited.json()["x_amp_html_zh"] == "<b>amp</b>"


def test_put_rewrites_the_whole_email(project: ApiProject) -> None:
    category = new_category(project)
    email = project.client.post("/emails", json=every_language_body(category)).json()
    other_category = new_category(project, "Bonuses")
    response = project.client.put(
        f"/emails/{email['id']}",
        json={
            "category": other_category,
            "from_address": "bonus@example.com",
            "subject_en": "Bonus",
        },
    )
    assert response.status_code == 200
    rewritten = response.json()
    assert rewritten["id"] == email["id"]
    assert rewritten["category"] == other_category
    assert rewritten["from_address"] == "bonus@example.com"
    assert rewritten["subject_en"] == "Bonus"
    assert rewritten["subject"] is None  # absent optional fields are cleared
    assert rewritten["text_html_ru"] is None
    assert rewritten["internal_name"] is None
    assert rewritten["is_urgent"] is False
    assert rewritten["created_at"] == email["created_at"]
    assert rewritten["updated_at"] > email["updated_at"]
    assert project.client.get(f"/emails/{email['id']}").json() == rewritten

    missing = project.client.put(f"/emails/{email['id']}", json={"subject": "no category"})
    assert missing.status_code == 422
    locs = [error["loc"] for error in missing.json()["detail"]]
    assert ["body", "category"] in locs
    assert ["body", "from_address"] in locs


def test_patch_changes_only_the_keys_given(project: ApiProject) -> None:
    email = project.client.post("/emails", json=every_language_body(new_category(project))).json()
    response = project.client.patch(
        f"/emails/{email['id']}",
        json={"subject_ru": "Новое", "text_plain_ko": None, "in_archive": True},
    )
    assert response.status_code == 200
    edited = response.json()
    assert edited["subject_ru"] == "Новое"
    assert edited["text_plain_ko"] is None  # null clears an optional text
    assert edited["in_archive"] is True
    assert edited["updated_at"] > email["updated_at"]
    changed = {"subject_ru", "text_plain_ko", "in_archive", "updated_at"}
    assert {k: v for k, v in edited.items() if k not in changed} == {
        k: v for k, v in email.items() if k not in changed
    }

    # Required fields and flags may be changed but not cleared.
    for key in ("category", "from_address", "is_urgent"):
        refused = project.client.patch(f"/emails/{email['id']}", json={key: None})
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["loc"] == ["body", key]
    assert project.client.get(f"/emails/{email['id']}").json() == edited


def test_patch_can_move_an_email_and_change_its_sender(project: ApiProject) -> None:
    email = new_email(project)
    category = new_category(project, "Other")
    edited = project.client.patch(
        f"/emails/{email['id']}", json={"category": category, "from_address": "Shop <s@ex.io>"}
    ).json()
    assert edited["category"] == category
    assert edited["from_address"] == "Shop <s@ex.io>"


def test_in_archive_filter(project: ApiProject) -> None:
    live = new_email(project, internal_name="live")
    archived = new_email(project, internal_name="archived", in_archive=True)
    everything = project.client.get("/emails").json()
    assert [e["id"] for e in everything] == [live["id"], archived["id"]]
    only_archived = project.client.get("/emails", params={"in_archive": "true"}).json()
    assert [e["id"] for e in only_archived] == [archived["id"]]
    not_archived = project.client.get("/emails", params={"in_archive": "false"}).json()
    assert [e["id"] for e in not_archived] == [live["id"]]
    assert project.client.get("/emails", params={"in_archive": "maybe"}).status_code == 422


def test_list_pages_with_limit_and_after(project: ApiProject) -> None:
    ids = [new_email(project, internal_name=f"e{i}", in_archive=i == 3)["id"] for i in range(5)]

    def page(**params: Any) -> list[int]:
        response = project.client.get("/emails", params=params)
        assert response.status_code == 200, response.text
        return [email["id"] for email in response.json()]

    assert page() == ids
    assert page(limit=2) == ids[:2]
    assert page(limit=2, after=ids[1]) == ids[2:4]
    assert page(limit=2, after=ids[3]) == ids[4:]
    assert page(after=ids[4]) == []
    assert page(after=0) == ids
    assert page(limit=1000) == ids
    # The filter applies before the page is cut.
    assert page(in_archive="false", limit=3, after=ids[0]) == [ids[1], ids[2], ids[4]]
    assert page(after=2**31 - 1) == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}, {"after": 2**31}, {"limit": "x"}):
        response = project.client.get("/emails", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", next(iter(bad))]


@pytest.mark.parametrize(
    "address",
    ["news@example.com", "Game News <news@example.com>", "Магазин <shop@example.ru>"],
)
def test_valid_sender_forms(project: ApiProject, address: str) -> None:
    assert new_email(project, from_address=address)["from_address"] == address


@pytest.mark.parametrize(
    "address", ["not an address", "news@", "News <news>", "a@b.io, c@d.io", "x@localhost", ""]
)
def test_invalid_sender_is_422_and_nothing_is_stored(project: ApiProject, address: str) -> None:
    body = {"category": new_category(project), "from_address": address}
    response = project.client.post("/emails", json=body)
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "from_address"]
    assert error["msg"].startswith("invalid from address")
    assert project.client.get("/emails").json() == []


def test_header_injection_in_sender_is_refused(project: ApiProject) -> None:
    email = new_email(project)
    response = project.client.patch(
        f"/emails/{email['id']}", json={"from_address": "a@example.com\r\nBcc: all@example.com"}
    )
    assert response.status_code == 422
    assert project.client.get(f"/emails/{email['id']}").json()["from_address"] == (
        "news@example.com"
    )


def test_category_must_be_one_of_the_project(
    project: ApiProject, other_project: ApiProject
) -> None:
    theirs = new_category(other_project)
    for category in (999999, theirs, 2**40):
        body = {"category": category, "from_address": "news@example.com"}
        response = project.client.post("/emails", json=body)
        assert response.status_code == 422
        assert response.json()["detail"] == [
            {
                "loc": ["body", "category"],
                "msg": f"category {category} not found",
                "type": "value_error",
            }
        ]
    email = new_email(project)
    moved = project.client.patch(f"/emails/{email['id']}", json={"category": theirs})
    assert moved.status_code == 422
    assert project.client.get(f"/emails/{email['id']}").json()["category"] == email["category"]
    assert len(project.client.get("/emails").json()) == 1


def test_template_syntax_error_names_field_and_line(project: ApiProject) -> None:
    body = {
        "category": new_category(project),
        "from_address": "news@example.com",
        "subject": "Hello {{ name }}",
        "text_html_de": "<p>\nHallo\n{{ name } }}</p>",
    }
    response = project.client.post("/emails", json=body)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": ["body", "text_html_de"],
            "msg": "template syntax error at line 3: unexpected '}'",
            "type": "value_error",
        }
    ]
    assert project.client.get("/emails").json() == []


@pytest.mark.parametrize("field", ["subject", "text_plain_ru", "x_amp_html_zh", "text_html"])
def test_bad_template_in_patch_changes_nothing(project: ApiProject, field: str) -> None:
    email = new_email(project, internal_name="before", subject="Hi {{ name }}")
    response = project.client.patch(
        f"/emails/{email['id']}",
        json={"internal_name": "after", "subject": "Hi", field: "{% if vip %}Dear VIP"},
    )
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", field]
    assert error["msg"].startswith("template syntax error at line 1: Unexpected end of template")
    assert project.client.get(f"/emails/{email['id']}").json() == email


@pytest.mark.parametrize(
    ("template", "msg"),
    [
        ("{{ name|nosuch }}", "template error at line 1: unknown filter 'nosuch'"),
        ("Hi\n{{ name is nosuch }}", "template error at line 2: unknown test 'nosuch'"),
        # Jinja itself defers these to render time when inside an `if`: refused all the same.
        (
            "{% if vip %}\n\n{{ name|upper|nosuch(2) }}{% endif %}",
            "template error at line 3: unknown filter 'nosuch'",
        ),
        (
            "{% if vip %}{% if name is nosuch %}x{% endif %}{% endif %}",
            "template error at line 1: unknown test 'nosuch'",
        ),
        (
            "{% filter nosuch %}x{% endfilter %}",
            "template error at line 1: unknown filter 'nosuch'",
        ),
        (
            "{% block a %}{% endblock %}\n{% block a %}{% endblock %}",
            "template syntax error at line 2: block 'a' defined twice",
        ),
        (
            "{% include 'footer.html' %}",
            "template error at line 1: an email template cannot include, import or extend "
            "other templates",
        ),
        (
            "x\n{% extends 'base.html' %}",
            "template error at line 2: an email template cannot include, import or extend "
            "other templates",
        ),
    ],
)
def test_templates_that_could_not_render_are_422(
    project: ApiProject, template: str, msg: str
) -> None:
    email = new_email(project, subject="Hi")
    for field in ("subject_de", "text_html", "text_plain_ko", "x_amp_html_zh"):
        response = project.client.patch(f"/emails/{email['id']}", json={field: template})
        assert response.status_code == 422, field
        assert response.json()["detail"] == [
            {"loc": ["body", field], "msg": msg, "type": "value_error"}
        ]
    assert project.client.get(f"/emails/{email['id']}").json() == email


def test_builtin_filters_and_tests_are_accepted(project: ApiProject) -> None:
    template = (
        "{% if name is defined and name is string %}{{ name|title|truncate(20) }}"
        "{% else %}{{ 'friend'|upper }}{% endif %} {{ bonus|default(0)|round|int }}"
        " {{ link|safe }} {{ items|join(', ')|e }}"
    )
    email = new_email(project, subject=template, text_html=template, x_amp_html_fr=template)
    assert (email["subject"], email["text_html"], email["x_amp_html_fr"]) == (template,) * 3


def test_templates_may_use_the_sandboxed_syntax(project: ApiProject) -> None:
    html = "{% for item in items %}<li>{{ item.title | e }}</li>{% endfor %}{# note #}"
    assert new_email(project, text_html_fr=html)["text_html_fr"] == html


def test_nul_characters_are_refused(project: ApiProject) -> None:
    body = {"category": new_category(project), "from_address": "a@example.com", "subject": "a\x00b"}
    response = project.client.post("/emails", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "subject"]


def test_bad_json_and_unknown_keys_are_422(project: ApiProject) -> None:
    bad_json = project.client.post(
        "/emails", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422
    body = {"category": new_category(project), "from_address": "a@example.com", "colour": "red"}
    unknown = project.client.post("/emails", json=body)
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["body", "colour"]
    assert project.client.get("/emails").json() == []


def test_unknown_id_is_404(project: ApiProject) -> None:
    category = new_category(project)
    body = {"category": category, "from_address": "a@example.com"}
    for email_id in (999999, 2**40):
        response = project.client.get(f"/emails/{email_id}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"email {email_id} not found"}
        assert project.client.put(f"/emails/{email_id}", json=body).status_code == 404
        assert project.client.patch(f"/emails/{email_id}", json={}).status_code == 404


def test_projects_never_see_each_other(project: ApiProject, other_project: ApiProject) -> None:
    mine = new_email(project, subject="Mine")
    theirs_category = new_category(other_project)
    assert other_project.client.get("/emails").json() == []
    assert other_project.client.get("/emails", params={"in_archive": "false"}).json() == []
    url = f"/emails/{mine['id']}"
    assert other_project.client.get(url).status_code == 404
    body = {"category": theirs_category, "from_address": "x@example.com", "subject": "Stolen"}
    assert other_project.client.put(url, json=body).status_code == 404
    assert other_project.client.patch(url, json={"subject": "Stolen"}).status_code == 404
    assert project.client.get(url).json() == mine


def test_emails_need_credentials(project: ApiProject, anonymous: httpx.Client) -> None:
    new_email(project)
    assert anonymous.get("/api/v1/emails").status_code == 401
    assert anonymous.post("/api/v1/emails", json={}).status_code == 401
