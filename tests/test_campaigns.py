"""The three campaign resources (seed 002): every field, validation, types and isolation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.campaign_support import (
    CONFIG_KEYS,
    create_regular,
    data_url,
    make_email,
    make_segment,
    regular_body,
    stored_rows,
)
from tests.conftest import ApiProject, Backend

FULL_CONFIG = {
    "not_check_subscription": True,
    "not_check_sent_quarantine": True,
    "retry_sent_quarantine_rejected": True,
    "retry_sent_quarantine_rejected_interval": 3600,
    "min_send_interval": 60,
    "hook_url_template": "https://hooks.example.com/{{ email }}?post={post}",
    "hook_use_auth": True,
    "hook_pre_post": True,
    "not_check_spam_quarantine": True,
    "send_to_corp": True,
    "send_by_uid": True,
    "resend": True,
}
COMMON_KEYS = {
    "id",
    "project_id",
    "post",
    "post_type",
    "message_type",
    "message_id",
    "source_type",
    "source_id",
    "config",
    "tags",
    "priority",
    "start_immediately",
    "state",
    "spooler_token",
    "audience",
    "created_at",
    "updated_at",
    "started_at",
}
REGULAR_KEYS = COMMON_KEYS | {
    "planned_at",
    "send_during_hours",
    "source_uploaded_csv",
    "additional_source_file",
}
AB_KEYS = REGULAR_KEYS | {
    "ab_message_ids",
    "ab_percent",
    "win_parameter",
    "test_planned_at",
    "main_planned_at",
    "ab_phase",
    "ab_main_at",
    "ab_winner",
    "ab_decided_at",
    "ab_variants",
}
AUTOMATED_KEYS = COMMON_KEYS | {"active", "trigger", "crontab", "run_from", "run_to"}


def _api_source(project: ApiProject) -> int:
    response = project.client.post("/sources", json={"name": "Buyers"})
    assert response.status_code == 201
    source_id: int = response.json()["id"]
    return source_id


def test_regular_campaign_with_every_field(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    body = regular_body(
        email_id,
        additional_source_file=data_url("email,coupon\nann@example.com,A1\n"),
        config=FULL_CONFIG,
        tags="spring,sale",
        priority=5,
        planned_at="2031-03-01T10:00:00",
        send_during_hours=12,
    )
    response = project.client.post("/campaigns", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == REGULAR_KEYS
    assert created["project_id"] == project.id
    assert created["post_type"] == "S"
    assert created["post"] == f"S_{created['id']}"
    assert created["message_type"] == "L"
    assert created["message_id"] == email_id
    assert created["source_type"] == "U"
    assert created["source_id"] is None
    assert created["config"] == FULL_CONFIG
    assert created["tags"] == "spring,sale"
    assert created["priority"] == 5
    assert created["planned_at"] == "2031-03-01T10:00:00Z"  # naive means UTC
    assert created["send_during_hours"] == 12
    assert created["start_immediately"] is False
    assert created["state"] == "draft"
    assert len(created["spooler_token"]) >= 32
    assert created["audience"] == {"count": 0, "last_build": None}
    assert created["started_at"] is None
    assert created["source_uploaded_csv"] == {"filename": None, "size": 57}
    assert created["additional_source_file"] == {"filename": None, "size": 32}

    assert project.client.get(f"/campaigns/{created['id']}").json() == created
    assert project.client.get("/campaigns").json() == [created]


def test_config_defaults_and_unknown_keys(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    config = create_regular(project, email_id)["config"]
    assert set(config) == CONFIG_KEYS
    assert config["hook_url_template"] is None
    assert config["min_send_interval"] is None
    assert not any(v for v in config.values())

    partial = create_regular(project, email_id, config={"send_by_uid": True})["config"]
    assert partial["send_by_uid"] is True
    assert partial["not_check_subscription"] is False

    as_text = create_regular(project, email_id, config='{"hook_use_auth": true}')["config"]
    assert as_text["hook_use_auth"] is True

    for bad in (
        {"send_by_ui": True},
        {"min_send_interval": -1},
        {"min_send_interval": "soon"},
        {"hook_url_template": "ftp://example.com/x"},
        {"hook_url_template": "not a url"},
        {"hook_url_template": "https://{{ domain }}.example.com/x"},
        "{not json",
        [1, 2],
    ):
        response = project.client.post("/campaigns", json=regular_body(email_id, config=bad))
        assert response.status_code == 422, bad
    unknown = project.client.post(
        "/campaigns", json=regular_body(email_id, config={"colour": "red"})
    )
    assert unknown.json()["detail"][0]["loc"] == ["body", "config", "colour"]


def test_messages_type_is_accepted_for_message_type(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    body = regular_body(email_id)
    body["messages_type"] = body.pop("message_type")
    response = project.client.post("/campaigns", json=body)
    assert response.status_code == 201
    assert response.json()["message_type"] == "L"
    for bad in ({"message_type": "W"}, {"message_type": "L", "messages_type": "W"}):
        assert (
            project.client.post("/campaigns", json=regular_body(email_id) | bad).status_code == 422
        )
    missing = regular_body(email_id)
    del missing["message_type"]
    assert project.client.post("/campaigns", json=missing).status_code == 422


def test_ab_campaign_with_every_field(backend: Backend, project: ApiProject) -> None:
    email_a, email_b, email_c = (make_email(backend, project) for _ in range(3))
    body = regular_body(
        email_a,
        ab_message_ids=[email_b, email_c],
        ab_percent=20,
        win_parameter="U",
        test_planned_at="2031-03-01T08:00:00+02:00",
        main_planned_at="2031-03-02T08:00:00Z",
        config={"send_to_corp": True},
        tags="ab",
        priority=1,
        send_during_hours=168,
    )
    body["messages_type"] = body.pop("message_type")  # the seed's A/B spelling
    response = project.client.post("/ab-campaigns", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == AB_KEYS
    assert created["post"] == f"B_{created['id']}"
    assert created["post_type"] == "B"
    assert created["ab_message_ids"] == [email_b, email_c]
    assert created["ab_percent"] == 20
    assert created["win_parameter"] == "U"
    assert created["test_planned_at"] == "2031-03-01T06:00:00Z"
    assert created["main_planned_at"] == "2031-03-02T08:00:00Z"
    assert created["config"]["send_to_corp"] is True

    defaults = project.client.post(
        "/ab-campaigns", json=regular_body(email_a, ab_message_ids=[email_b])
    ).json()
    assert defaults["ab_percent"] == 10
    assert defaults["win_parameter"] == "O"
    assert project.client.get("/ab-campaigns").json() == [created, defaults]


def test_ab_variants_are_checked(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    email_a, email_b = make_email(backend, project), make_email(backend, project)
    foreign = make_email(backend, other_project)
    cases: list[dict[str, Any]] = [
        {"ab_message_ids": [email_a]},  # variant A named again
        {"ab_message_ids": [email_b, email_b]},
        {"ab_message_ids": [foreign]},
        {"ab_message_ids": [999999]},
        {"ab_message_ids": [email_b], "ab_percent": 0},
        {"ab_message_ids": [email_b], "ab_percent": 101},
        {"ab_message_ids": [email_b], "win_parameter": "X"},
        {
            "ab_message_ids": [email_b],
            "test_planned_at": "2031-03-02T00:00:00Z",
            "main_planned_at": "2031-03-01T00:00:00Z",
        },
    ]
    for extra in cases:
        response = project.client.post("/ab-campaigns", json=regular_body(email_a, **extra))
        assert response.status_code == 422, extra
    duplicate = project.client.post(
        "/ab-campaigns", json=regular_body(email_a, ab_message_ids=[email_b, email_b])
    )
    assert duplicate.json()["detail"][0]["loc"] == ["body", "ab_message_ids", 1]
    assert stored_rows(backend, project) == (0, 0)


def test_ab_campaign_from_the_seed_fields_alone(backend: Backend, project: ApiProject) -> None:
    """The seed's A/B table has no ab_message_ids: such a draft is accepted, and `start`
    is what needs a second variant."""
    email_a, email_b = make_email(backend, project), make_email(backend, project)
    seed_body = {
        "messages_type": "L",
        "message_id": email_a,
        "source_type": "U",
        "source_uploaded_csv": data_url("email\nann@example.com\n"),
        "ab_percent": 30,
        "win_parameter": "C",
    }
    response = project.client.post("/ab-campaigns", json=seed_body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["ab_message_ids"] == []
    assert (created["ab_percent"], created["win_parameter"]) == (30, "C")
    empty = project.client.post("/ab-campaigns", json=seed_body | {"ab_message_ids": []})
    assert empty.status_code == 201
    assert empty.json()["ab_message_ids"] == []

    path = f"/ab-campaigns/{created['id']}"
    refused = project.client.post(f"{path}/start")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"A/B campaign {created['post']} has one variant (email {email_a}) and cannot start: "
        "name at least one other email in ab_message_ids (PUT the draft), then start it"
    )
    assert project.client.get(path).json() == created  # still a draft, no audience

    # Starting in the create request is refused the same way, and stores nothing.
    immediate = project.client.post("/ab-campaigns", json=seed_body | {"start_immediately": True})
    assert immediate.status_code == 409
    assert [c["id"] for c in project.client.get("/ab-campaigns").json()] == [
        created["id"],
        empty.json()["id"],
    ]

    rewritten = project.client.put(path, json=seed_body | {"ab_message_ids": [email_b]})
    assert rewritten.status_code == 200, rewritten.text
    started = project.client.post(f"{path}/start")
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "running"
    assert started.json()["audience"]["count"] == 1


def test_automated_campaign_with_every_field(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    segment_id = make_segment(backend, project)
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "S",
        "source_id": segment_id,
        "config": {"not_check_sent_quarantine": True},
        "tags": "welcome",
        "priority": 3,
        "active": False,
        "crontab": "0 9 * * 1-5",
        "run_from": "2031-01-01T00:00:00Z",
        "run_to": 1956528000,  # the seed types run_to "int | datetime": a Unix time
    }
    response = project.client.post("/automated-campaigns", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == AUTOMATED_KEYS
    assert created["post"] == f"A_{created['id']}"
    assert created["source_type"] == "S"
    assert created["source_id"] == segment_id
    assert created["active"] is False
    assert created["crontab"] == "0 9 * * 1-5"
    assert created["run_from"] == "2031-01-01T00:00:00Z"
    assert created["run_to"] == "2032-01-01T00:00:00Z"
    assert created["state"] == "draft"
    assert project.client.get(f"/automated-campaigns/{created['id']}").json() == created

    api_source = _api_source(project)
    from_api = project.client.post(
        "/automated-campaigns", json=body | {"source_type": "A", "source_id": api_source}
    )
    assert from_api.status_code == 201
    assert from_api.json()["source_type"] == "A"


@pytest.mark.parametrize(
    "change",
    [
        {"crontab": "61 * * * *"},
        {"crontab": "every day"},
        {"crontab": "0 0 30 2 *"},
        {"run_to": "2030-12-31T00:00:00Z"},
        {"source_type": "U"},
        {"source_id": None},
        {"source_uploaded_csv": "data:text/csv;base64,ZW1haWwK"},
        {"planned_at": "2031-01-01T00:00:00Z"},
        {"ab_message_ids": [1]},
    ],
)
def test_automated_campaign_rules(backend: Backend, project: ApiProject, change: Any) -> None:
    email_id = make_email(backend, project)
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "S",
        "source_id": make_segment(backend, project),
        "crontab": "*/5 * * * *",
        "run_from": "2031-01-01T00:00:00Z",
    }
    response = project.client.post("/automated-campaigns", json=body | change)
    assert response.status_code == 422, response.text
    assert stored_rows(backend, project) == (0, 0)


def test_sources_are_checked(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    segment_id = make_segment(backend, project)
    foreign_segment = make_segment(backend, other_project)
    foreign_source = _api_source(other_project)
    foreign_email = make_email(backend, other_project)
    base = {"message_type": "L", "message_id": email_id}
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"source_type": "U"}, ["body", "source_uploaded_csv"]),
        (regular_body(email_id, source_id=segment_id), ["body", "source_id"]),
        ({"source_type": "S"}, ["body", "source_id"]),
        (
            {
                "source_type": "S",
                "source_id": segment_id,
                "source_uploaded_csv": data_url("email\na@b.co\n"),
            },
            ["body", "source_uploaded_csv"],
        ),
        ({"source_type": "S", "source_id": foreign_segment}, ["body", "source_id"]),
        ({"source_type": "A", "source_id": foreign_source}, ["body", "source_id"]),
        ({"source_type": "A", "source_id": segment_id + 100000}, ["body", "source_id"]),
        ({"source_type": "X", "source_id": segment_id}, ["body", "source_type"]),
        (regular_body(foreign_email), ["body", "message_id"]),
        (regular_body(999999), ["body", "message_id"]),
        (regular_body(email_id, source_id=2**40), ["body", "source_id"]),
    ]
    for extra, loc in cases:
        response = project.client.post("/campaigns", json=base | extra)
        assert response.status_code == 422, extra
        assert response.json()["detail"][0]["loc"] == loc, response.text
    assert stored_rows(backend, project) == (0, 0)
    segment = project.client.post(
        "/campaigns", json=base | {"source_type": "S", "source_id": segment_id}
    )
    assert segment.status_code == 201
    assert segment.json()["source_uploaded_csv"] is None


@pytest.mark.parametrize(
    "change",
    [
        {"send_during_hours": 0},
        {"send_during_hours": 169},
        {"priority": 2**31},
        {"planned_at": "tomorrow"},
        {"tags": "x" * 1001},
        {"start_immediately": "perhaps"},
        {"colour": "red"},
        {"source_uploaded_csv": "http://example.com/list.csv"},
        {"source_uploaded_csv": "data:text/csv;base64,!!!"},
        {"source_uploaded_csv": 5},
    ],
)
def test_bad_fields_are_422_and_write_nothing(
    backend: Backend, project: ApiProject, change: dict[str, Any]
) -> None:
    email_id = make_email(backend, project)
    response = project.client.post("/campaigns", json=regular_body(email_id) | change)
    assert response.status_code == 422, response.text
    assert stored_rows(backend, project) == (0, 0)


def test_bad_json_is_422(backend: Backend, project: ApiProject) -> None:
    for content in (b"{not json", b"", b"[1, 2]", b"\xff"):
        response = project.client.post(
            "/campaigns", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, content
    bad = project.client.post(
        "/campaigns", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.json()["detail"][0]["type"] == "json_invalid"
    assert stored_rows(backend, project) == (0, 0)


def test_rewrite_replaces_every_field_and_keeps_unsent_files(
    backend: Backend, project: ApiProject
) -> None:
    email_a, email_b = make_email(backend, project), make_email(backend, project)
    created = create_regular(
        project,
        email_a,
        additional_source_file=data_url("email,coupon\nann@example.com,A1\n"),
        tags="old",
        priority=9,
        config={"send_by_uid": True},
    )
    url = f"/campaigns/{created['id']}"
    rewritten = project.client.put(
        url, json={"message_type": "L", "message_id": email_b, "source_type": "U"}
    )
    assert rewritten.status_code == 200, rewritten.text
    body = rewritten.json()
    assert body["message_id"] == email_b
    assert body["tags"] is None
    assert body["priority"] == 0
    assert body["config"]["send_by_uid"] is False
    # Files not mentioned stay; an explicit null removes one.
    assert body["source_uploaded_csv"] == created["source_uploaded_csv"]
    assert body["additional_source_file"] == created["additional_source_file"]
    assert body["spooler_token"] == created["spooler_token"]

    dropped = project.client.put(
        url,
        json=regular_body(email_b, csv="email\nzed@example.com\n", additional_source_file=None),
    ).json()
    assert dropped["additional_source_file"] is None
    assert dropped["source_uploaded_csv"] == {"filename": None, "size": 22}

    # Moving to a segment drops the uploaded list.
    segment_id = make_segment(backend, project)
    moved = project.client.put(
        url,
        json={
            "message_type": "L",
            "message_id": email_b,
            "source_type": "S",
            "source_id": segment_id,
        },
    ).json()
    assert moved["source_uploaded_csv"] is None
    back = project.client.put(
        url, json={"message_type": "L", "message_id": email_b, "source_type": "U"}
    )
    assert back.status_code == 422  # no list stored any more
    assert project.client.get(url).json()["source_type"] == "S"


def test_a_campaign_is_404_under_another_types_path(backend: Backend, project: ApiProject) -> None:
    email_a, email_b = make_email(backend, project), make_email(backend, project)
    regular = create_regular(project, email_a)["id"]
    ab = project.client.post(
        "/ab-campaigns", json=regular_body(email_a, ab_message_ids=[email_b])
    ).json()["id"]
    automated = project.client.post(
        "/automated-campaigns",
        json={
            "message_type": "L",
            "message_id": email_a,
            "source_type": "S",
            "source_id": make_segment(backend, project),
        },
    ).json()["id"]
    owners = {"/campaigns": regular, "/ab-campaigns": ab, "/automated-campaigns": automated}
    # A body each path accepts, so only the campaign's type can make the PUT a 404.
    valid_bodies = {
        "/campaigns": regular_body(email_a),
        "/ab-campaigns": regular_body(email_a, ab_message_ids=[email_b]),
        "/automated-campaigns": {
            "message_type": "L",
            "message_id": email_a,
            "source_type": "S",
            "source_id": make_segment(backend, project),
        },
    }
    for path, own in owners.items():
        assert [c["id"] for c in project.client.get(path).json()] == [own]
        assert project.client.put(f"{path}/{own}", json=valid_bodies[path]).status_code == 200
        for other in set(owners.values()) - {own}:
            assert project.client.get(f"{path}/{other}").status_code == 404
            rewrite = project.client.put(f"{path}/{other}", json=valid_bodies[path])
            assert rewrite.status_code == 404, rewrite.text
            for action in ("start", "pause", "resume", "archive"):
                assert project.client.post(f"{path}/{other}/{action}").status_code == 404
    detail = project.client.get(f"/ab-campaigns/{regular}").json()["detail"]
    assert detail == f"A/B campaign {regular} not found"


def test_projects_never_see_each_others_campaigns(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    mine = create_regular(project, email_id)
    cid = mine["id"]
    theirs = other_project.client
    assert theirs.get("/campaigns").json() == []
    assert theirs.get(f"/campaigns/{cid}").status_code == 404
    foreign_email = make_email(backend, other_project)
    assert theirs.put(f"/campaigns/{cid}", json=regular_body(foreign_email)).status_code == 404
    for action in ("start", "pause", "resume", "archive"):
        assert theirs.post(f"/campaigns/{cid}/{action}").status_code == 404
    # Their own email does not make my campaign theirs, and mine is not theirs to use.
    assert theirs.post("/campaigns", json=regular_body(email_id)).status_code == 422
    assert project.client.get(f"/campaigns/{cid}").json() == mine


def test_unknown_and_huge_ids_are_404(project: ApiProject) -> None:
    for cid in (999999, 2**31, 2**70):
        assert project.client.get(f"/campaigns/{cid}").status_code == 404
        assert project.client.post(f"/campaigns/{cid}/start").status_code == 404
    assert project.client.get("/campaigns/999999").json() == {"detail": "campaign 999999 not found"}


def test_openapi_declares_both_encodings(project: ApiProject) -> None:
    spec = project.client.get("/openapi.json").json()
    for path in ("/api/v1/campaigns", "/api/v1/ab-campaigns", "/api/v1/automated-campaigns"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "multipart/form-data"}
        properties = content["application/json"]["schema"]["properties"]
        assert "message_id" in properties
        assert set(properties["config"]["properties"]) == CONFIG_KEYS
    regular = spec["paths"]["/api/v1/campaigns"]["post"]["requestBody"]["content"]
    form = regular["multipart/form-data"]["schema"]["properties"]
    assert form["source_uploaded_csv"]["format"] == "binary"
