"""Uploaded address lists: multipart or data URL, checks at upload, the audience they build."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from envoi.campaigns import forms
from envoi.campaigns.files import CHUNK_BYTES, open_file, store_file
from envoi.campaigns.models import CampaignFileChunk
from envoi.campaigns.spec import UploadedFile
from envoi.core.csvsource import read_rows
from tests.campaign_support import (
    LIST_CSV,
    audience,
    create_regular,
    data_url,
    make_email,
    make_profiles,
    regular_body,
    stored_rows,
)
from tests.conftest import ApiProject, Backend


def _form(email_id: int, **fields: Any) -> dict[str, str]:
    data = {"message_type": "L", "message_id": str(email_id), "source_type": "U"}
    return data | {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}


def _start(project: ApiProject, campaign_id: int, path: str = "/campaigns") -> dict[str, Any]:
    response = project.client.post(f"{path}/{campaign_id}/start")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_multipart_upload(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    response = project.client.post(
        "/campaigns",
        data=_form(
            email_id,
            config={"send_by_uid": True, "min_send_interval": 30},
            tags="spring",
            priority="2",
            planned_at="2031-03-01T10:00:00Z",
            send_during_hours="6",
            start_immediately="false",
        ),
        files={
            "source_uploaded_csv": ("list.csv", LIST_CSV.encode(), "text/csv"),
            "additional_source_file": ("extra.csv", b"email,coupon\nann@example.com,A1\n"),
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["source_uploaded_csv"] == {"filename": "list.csv", "size": len(LIST_CSV)}
    assert body["additional_source_file"] == {"filename": "extra.csv", "size": 32}
    assert body["config"]["send_by_uid"] is True
    assert body["config"]["min_send_interval"] == 30
    assert body["tags"] == "spring"
    assert body["priority"] == 2
    assert body["send_during_hours"] == 6
    assert body["planned_at"] == "2031-03-01T10:00:00Z"

    # The same endpoint, the same rules: a form is validated like a JSON body.
    bad = project.client.post(
        "/campaigns",
        data=_form(email_id, config={"colour": "red"}),
        files={"source_uploaded_csv": ("list.csv", LIST_CSV.encode())},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "config", "colour"]
    assert stored_rows(backend, project) == (1, 2)


def test_multipart_ab_campaign_and_rewrite(backend: Backend, project: ApiProject) -> None:
    email_a, email_b, email_c = (make_email(backend, project) for _ in range(3))
    files = {"source_uploaded_csv": ("list.csv", LIST_CSV.encode())}
    repeated = project.client.post(
        "/ab-campaigns",
        data=_form(email_a) | {"ab_message_ids": [str(email_b), str(email_c)]},
        files=files,
    )
    assert repeated.status_code == 201, repeated.text
    assert repeated.json()["ab_message_ids"] == [email_b, email_c]
    as_json = project.client.post(
        "/ab-campaigns", data=_form(email_a, ab_message_ids=[email_c]), files=files
    )
    assert as_json.json()["ab_message_ids"] == [email_c]

    url = f"/ab-campaigns/{as_json.json()['id']}"
    # PUT as a form: no file part keeps the stored list, an empty one removes a file.
    kept = project.client.put(
        url, data=_form(email_a, ab_message_ids=f"{email_b},{email_c}", additional_source_file="")
    )
    assert kept.status_code == 200, kept.text
    assert kept.json()["source_uploaded_csv"] == {"filename": "list.csv", "size": len(LIST_CSV)}
    assert kept.json()["ab_message_ids"] == [email_b, email_c]


def test_data_url_in_json_and_delimiters(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    lists = {
        ",": "email,name\nann@example.com,Ann\n",
        ";": "\ufeffEMAIL;name\nann@example.com;Ann\n",  # BOM and a capitalised header
        "\t": "name\temail\r\nAnn\tann@example.com\r\n",
    }
    for text in lists.values():
        campaign = create_regular(project, email_id, csv=text)
        started = _start(project, campaign["id"])
        assert started["audience"]["count"] == 1
        member = audience(backend, campaign["id"])["email:ann@example.com"]
        assert member.params == {"name": "Ann"}
        assert member.email == "ann@example.com"
        assert member.line == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"name,city\nAnn,Paris\n", "has no recipient column"),
        (b"", "is empty"),
        (b"email\n", "has a header but no recipient line"),
        (b"email,name\xff\nann@example.com,x\n", "is not UTF-8"),
        (b"email,,name\na@b.co,,x\n", "has no name"),
        (b"email,Email\na@b.co,a@b.co\n", "twice"),
    ],
)
def test_unusable_lists_are_422(
    backend: Backend, project: ApiProject, content: bytes, message: str
) -> None:
    email_id = make_email(backend, project)
    as_json = project.client.post(
        "/campaigns", json=regular_body(email_id) | {"source_uploaded_csv": data_url(content)}
    )
    assert as_json.status_code == 422
    detail = as_json.json()["detail"][0]
    assert detail["loc"] == ["body", "source_uploaded_csv"]
    assert message in detail["msg"]
    as_form = project.client.post(
        "/campaigns",
        data=_form(email_id),
        files={"source_uploaded_csv": ("list.csv", content)},
    )
    assert as_form.status_code == 422
    extra = project.client.post(
        "/campaigns", json=regular_body(email_id, additional_source_file=data_url(content))
    )
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"] == ["body", "additional_source_file"]
    assert stored_rows(backend, project) == (0, 0)


def test_bad_lines_are_reported_and_duplicates_removed(
    backend: Backend, project: ApiProject
) -> None:
    email_id = make_email(backend, project)
    csv = (
        "email,first_name\n"  # 1
        "ann@example.com,Ann\n"  # 2
        "not-an-address,X\n"  # 3
        ",Nobody\n"  # 4
        "bob@example.com,Bob,extra\n"  # 5
        "\n"  # 6: blank lines are skipped
        "ANN@example.com,Ann again\n"  # 7: the same address, another case
        '"cy@example.com","Cy\nmultiline"\n'  # 8-9
        "bob@example.com\n"  # 10
    )
    campaign = create_regular(project, email_id, csv=csv)
    build = _start(project, campaign["id"])["audience"]
    assert build["count"] == 2
    summary = build["last_build"]
    assert summary["read"] == 7
    assert summary["accepted"] == 2
    assert summary["rejected"] == 4
    assert summary["duplicates"] == 1
    assert summary["errors"] == [
        {"line": 3, "error": summary["errors"][0]["error"]},
        {"line": 4, "error": "empty recipient: no email"},
        {"line": 5, "error": "expected 2 fields, found 3"},
        {"line": 10, "error": "expected 2 fields, found 1"},
    ]
    assert "not-an-address" in summary["errors"][0]["error"]
    members = audience(backend, campaign["id"])
    assert set(members) == {"email:ann@example.com", "email:cy@example.com"}
    assert members["email:ann@example.com"].params == {"first_name": "Ann"}  # first one wins
    assert members["email:cy@example.com"].line == 8


def test_only_the_first_hundred_errors_are_kept(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    csv = "email\nok@example.com\n" + "bad\n" * 150
    campaign = create_regular(project, email_id, csv=csv)
    summary = _start(project, campaign["id"])["audience"]["last_build"]
    assert summary["rejected"] == 150
    assert len(summary["errors"]) == 100
    assert summary["errors"][-1]["line"] == 102


def test_additional_file_merges_into_params(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    extra = (
        "email;coupon;first_name\n"
        "bob@example.com;B2;Robert\n"  # overrides the list's first_name
        "nobody@example.com;N0;No\n"  # in no audience
        "broken\n"
        "ann@example.com;A1;Ann\n"
    )
    campaign = create_regular(project, email_id, additional_source_file=data_url(extra))
    summary = _start(project, campaign["id"])["audience"]["last_build"]
    assert summary["additional"] == {
        "read": 4,
        "merged": 2,
        "unmatched": 1,
        "rejected": 1,
        "errors": [{"line": 4, "error": "expected 3 fields, found 1"}],
    }
    members = audience(backend, campaign["id"])
    assert members["email:ann@example.com"].params == {"first_name": "Ann", "coupon": "A1"}
    assert members["email:bob@example.com"].params == {"first_name": "Robert", "coupon": "B2"}


def test_profiles_are_resolved_by_identifier(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    [ann] = make_profiles(backend, project, email=["ann@example.com"])
    [uid_42] = make_profiles(backend, project, uid=["42"])
    csv = "uid,email\n,ann@example.com\n42,\n43,new@example.com\n"
    campaign = create_regular(project, email_id, csv=csv)
    summary = _start(project, campaign["id"])["audience"]["last_build"]
    assert summary["with_profile"] == 2
    members = audience(backend, campaign["id"])
    assert members["email:ann@example.com"].profile_id == ann
    assert members["uid:42"].profile_id == uid_42
    assert members["uid:43"].profile_id is None
    assert members["uid:43"].email == "new@example.com"


def test_a_list_of_twenty_thousand_lines(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    lines = [f"user{i}@example.com,{i}" for i in range(20_000)]
    lines[500] = "broken-address,500"
    lines[19_999] = lines[0]  # a duplicate at the very end
    csv = "email,n\n" + "\n".join(lines) + "\n"
    campaign = project.client.post(
        "/campaigns",
        data=_form(email_id, start_immediately="true"),
        files={"source_uploaded_csv": ("big.csv", csv.encode())},
    )
    assert campaign.status_code == 201, campaign.text
    body = campaign.json()
    assert body["state"] == "running"
    summary = body["audience"]["last_build"]
    assert body["audience"]["count"] == 19_998
    assert summary["read"] == 20_000
    assert summary["rejected"] == 1
    assert summary["errors"][0]["line"] == 502
    assert summary["duplicates"] == 1
    members = audience(backend, body["id"])
    assert len(members) == 19_998
    assert members["email:user19998@example.com"].params == {"n": "19998"}
    assert members["email:user19998@example.com"].line == 20_000
    assert members["email:user0@example.com"].line == 2


def test_the_list_stored_at_start_is_the_one_used(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    campaign = create_regular(project, email_id)
    rewritten = project.client.put(
        f"/campaigns/{campaign['id']}",
        json=regular_body(email_id, csv="email\nzed@example.com\n"),
    )
    assert rewritten.status_code == 200
    _start(project, campaign["id"])
    assert set(audience(backend, campaign["id"])) == {"email:zed@example.com"}


# --- large files: stored in chunks, streamed both ways ---------------------------------


def _name(i: int, width: int) -> str:
    return f"Zoë\u2013{'é' * width}{i % 7}"


def _big_list(lines: int, width: int = 40, identifier: str = "email") -> bytes:
    """Non-ASCII parameters, so chunk boundaries fall inside characters and lines."""
    recipient = "user{}@example.com" if identifier == "email" else "user-{}"
    rows = [f"{recipient.format(i)},{i},{_name(i, width)}" for i in range(lines)]
    return (f"{identifier},n,name\n" + "\n".join(rows) + "\n").encode()


def _chunks(backend: Backend, campaign_id: int, kind: str = "source") -> list[bytes]:
    with backend.sessions() as session:
        return list(
            session.scalars(
                select(CampaignFileChunk.data)
                .where(CampaignFileChunk.campaign_id == campaign_id, CampaignFileChunk.kind == kind)
                .order_by(CampaignFileChunk.seq)
            )
        )


def test_a_multi_mib_list_round_trips_and_builds_its_audience(
    backend: Backend, project: ApiProject, tmp_path: Path
) -> None:
    email_id = make_email(backend, project)
    content = _big_list(10_000, width=200)
    assert len(content) > 4 * CHUNK_BYTES
    path = tmp_path / "big.csv"
    path.write_bytes(content)
    with path.open("rb") as upload:
        response = project.client.post(
            "/campaigns",
            data=_form(email_id),
            files={"source_uploaded_csv": ("big.csv", upload, "text/csv")},
        )
    assert response.status_code == 201, response.text
    campaign = response.json()
    assert campaign["source_uploaded_csv"] == {"filename": "big.csv", "size": len(content)}

    chunks = _chunks(backend, campaign["id"])
    assert len(chunks) == -(-len(content) // CHUNK_BYTES)
    assert all(len(chunk) == CHUNK_BYTES for chunk in chunks[:-1])
    assert b"".join(chunks) == content
    with backend.sessions() as session:
        stream = open_file(session, campaign["id"], "source")
        assert stream is not None
        with stream:
            assert stream.read() == content

    summary = _start(project, campaign["id"])["audience"]
    assert summary["count"] == 10_000
    assert summary["last_build"]["rejected"] == 0
    members = audience(backend, campaign["id"])
    assert len(members) == 10_000
    for i in range(10_000):
        member = members[f"email:user{i}@example.com"]
        assert member.params == {"n": str(i), "name": _name(i, 200)}
        assert member.line == i + 2


def test_stored_files_are_written_and_read_in_flat_memory(
    backend: Backend, project: ApiProject, tmp_path: Path
) -> None:
    """Storing a 24 MiB list and reading it back row by row never holds more than a few
    chunks: the whole file would be 24 MiB, read whole several times that."""
    campaign_id = create_regular(project, make_email(backend, project))["id"]
    path = tmp_path / "big.csv"
    path.write_bytes(_big_list(24_000, width=500, identifier="uid"))
    size = path.stat().st_size
    assert size > 20 * CHUNK_BYTES
    with path.open("rb") as stream, backend.sessions() as session, session.begin():
        tracemalloc.start()
        try:
            store_file(session, campaign_id, "source", UploadedFile("big.csv", stream, size))
            _, stored_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    with backend.sessions() as session:
        tracemalloc.start()
        try:
            opened = open_file(session, campaign_id, "source")
            assert opened is not None
            with opened:
                rows = sum(1 for _ in read_rows(opened))
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert rows == 24_000
    assert stored_peak < 6 * CHUNK_BYTES, stored_peak
    assert read_peak < 6 * CHUNK_BYTES, read_peak


def test_a_multipart_upload_is_not_held_in_memory(
    backend: Backend, project: ApiProject, tmp_path: Path
) -> None:
    """The server runs in this process: the whole request, parsing the form, checking
    and storing a 24 MiB list, peaks far below the list's size."""
    email_id = make_email(backend, project)
    path = tmp_path / "big.csv"
    path.write_bytes(_big_list(24_000, width=500))
    assert path.stat().st_size > 20 * CHUNK_BYTES
    with path.open("rb") as upload:
        tracemalloc.start()
        try:
            response = project.client.post(
                "/campaigns",
                data=_form(email_id),
                files={"source_uploaded_csv": ("big.csv", upload, "text/csv")},
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert response.status_code == 201, response.text
    assert response.json()["source_uploaded_csv"]["size"] == path.stat().st_size
    assert peak < 8 * CHUNK_BYTES, peak


def _multipart(email_id: int, content: bytes, boundary: str = "envoi-test-boundary") -> bytes:
    fields = _form(email_id)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f"--{boundary}\r\nContent-Disposition: form-data; "
        'name="source_uploaded_csv"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts)


def test_uploads_over_the_limit_are_413(
    backend: Backend, project: ApiProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server runs in this process: lower its limits for this test.
    monkeypatch.setattr(forms, "MAX_UPLOAD_BYTES", 256 * 1024)
    monkeypatch.setattr(forms, "FORM_OVERHEAD_BYTES", 4096)
    monkeypatch.setattr(forms, "MAX_JSON_BYTES", 64 * 1024)
    email_id = make_email(backend, project)
    fits = _big_list(1_000)
    assert 64 * 1024 < len(fits) < 256 * 1024
    too_big = _big_list(5_000)
    assert len(too_big) > 256 * 1024 + 4096

    accepted = project.client.post(
        "/campaigns", data=_form(email_id), files={"source_uploaded_csv": ("ok.csv", fits)}
    )
    assert accepted.status_code == 201, accepted.text

    # Refused from its Content-Length, before the body is read...
    declared = project.client.post(
        "/campaigns", data=_form(email_id), files={"source_uploaded_csv": ("big.csv", too_big)}
    )
    assert declared.status_code == 413
    assert declared.json() == {
        "detail": "the request body is too large: the files of a request are limited to "
        "262144 bytes"
    }
    # ... or, sent chunked without one, as soon as the bytes received pass the limit.
    boundary = "envoi-test-boundary"
    body = _multipart(email_id, too_big, boundary)
    chunked = project.client.post(
        "/campaigns",
        content=(body[i : i + 65536] for i in range(0, len(body), 65536)),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert chunked.status_code == 413, chunked.text
    assert "the files of a request are limited to" in chunked.json()["detail"]

    # A JSON body is parsed whole: its limit is lower, and says what to do instead.
    as_json = project.client.post(
        "/campaigns", json=regular_body(email_id) | {"source_uploaded_csv": data_url(fits)}
    )
    assert as_json.status_code == 413
    assert as_json.json()["detail"] == (
        "the request body is too large: a JSON body is limited to 65536 bytes; "
        "send large lists as multipart/form-data file parts"
    )
    assert stored_rows(backend, project) == (1, 1)
