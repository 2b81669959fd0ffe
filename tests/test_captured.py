"""The capture router stores mail durably in batches; `/api/v1/captured` shows and clears it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from typer.testing import CliRunner

from envoi.db.session import make_engine, make_sessionmaker, transaction
from envoi.delivery.interfaces import Envelope, SmtpReply
from envoi.projects.services import create_project
from envoi.routers.capture import CaptureTransport
from envoi.routers.cli import captured_command
from envoi.routers.models import CapturedMessage
from envoi.testing.databases import sqlite_url
from tests.conftest import ApiProject, Backend

RAW = (
    "From: Shop <shop@envoi.test>\r\nTo: {to}\r\nSubject: =?utf-8?q?H=C3=A9llo?= {n}\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Bonjour, ça va ?\r\n"
)


def _message(recipient: str, n: int) -> bytes:
    return RAW.format(to=recipient, n=n).encode()


def _capture(
    backend: Backend, project_id: int, recipients: list[str], post: str | None = "S_1"
) -> list[SmtpReply]:
    """Send concurrently through one capture transport, as a worker does."""

    async def send_all() -> list[SmtpReply]:
        transport = CaptureTransport(backend.sessions, router_id=None)
        sends = [
            transport.send(
                Envelope(
                    "bounces+x@envoi.test",
                    recipient,
                    recipient.rsplit("@", 1)[1],
                    spool_id=n,
                    post=post,
                    project_id=project_id,
                ),
                _message(recipient, n),
            )
            for n, recipient in enumerate(recipients)
        ]
        replies = await asyncio.gather(*sends)
        await transport.close()
        return replies

    return asyncio.run(send_all())


def test_sends_are_group_committed_and_durable(backend: Backend, project: ApiProject) -> None:
    engine = backend.sessions.kw["bind"]
    commits: list[int] = []

    def count(_connection: Any) -> None:
        commits.append(1)

    event.listen(engine, "commit", count)
    try:
        replies = _capture(backend, project.id, [f"user{i}@example.com" for i in range(300)])
    finally:
        event.remove(engine, "commit", count)
    assert {(r.code, r.status) for r in replies} == {(250, "2.0.0")}
    ids = [int(r.text.rsplit(" ", 1)[1]) for r in replies]
    assert len(set(ids)) == 300
    assert len(commits) < 30  # hundreds of messages, a handful of transactions
    with transaction(backend.sessions) as session:
        stored = session.scalar(
            select(func.count()).where(CapturedMessage.project_id == project.id)
        )
        first = session.get_one(CapturedMessage, ids[0])
    assert stored == 300
    assert (first.recipient, first.spool_id, first.post) == ("user0@example.com", 0, "S_1")
    assert first.raw == _message("user0@example.com", 0)


def test_a_message_without_project_is_refused(backend: Backend) -> None:
    async def send() -> SmtpReply:
        transport = CaptureTransport(backend.sessions)
        return await transport.send(Envelope("a@b.test", "c@d.test", "d.test"), b"x")

    reply = asyncio.run(send())
    assert (reply.code, reply.outcome) == (0, "tempfail")


def test_list_newest_first_with_pages_and_filters(backend: Backend, project: ApiProject) -> None:
    _capture(backend, project.id, ["ann@example.com", "bob@example.com"], post="S_1")
    _capture(backend, project.id, ["ann@example.com"], post="S_2")
    listed = project.client.get("/captured").json()
    assert [(m["post"], m["recipient"]) for m in listed] == [
        ("S_2", "ann@example.com"),
        ("S_1", "bob@example.com"),
        ("S_1", "ann@example.com"),
    ]
    newest = listed[0]
    assert set(newest) == {
        "id",
        "post",
        "spool_id",
        "mail_from",
        "recipient",
        "received_at",
        "subject",
        "raw",
    }
    assert newest["mail_from"] == "bounces+x@envoi.test"
    assert newest["subject"] == "Héllo 0"
    assert "Bonjour, ça va ?" in newest["raw"]
    assert newest["raw"] == _message("ann@example.com", 0).decode()

    page = project.client.get("/captured", params={"limit": 2}).json()
    older = project.client.get("/captured", params={"after_id": page[-1]["id"]}).json()
    assert [m["id"] for m in page + older] == [m["id"] for m in listed]
    by_post = project.client.get("/captured", params={"post": "S_1"}).json()
    assert [m["recipient"] for m in by_post] == ["bob@example.com", "ann@example.com"]
    to_ann = project.client.get("/captured", params={"recipient": "ANN@example.com"}).json()
    assert [m["post"] for m in to_ann] == ["S_2", "S_1"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"after_id": 0}, {"after_id": "x"}):
        assert project.client.get("/captured", params=bad).status_code == 422


def test_undecodable_bytes_are_replaced(backend: Backend, project: ApiProject) -> None:
    async def send() -> None:
        transport = CaptureTransport(backend.sessions)
        envelope = Envelope("a@b.test", "c@d.test", "d.test", project_id=project.id)
        await transport.send(envelope, b"Subject: latin-1\r\n\r\ncaf\xe9\r\n")
        await transport.close()

    asyncio.run(send())
    [message] = project.client.get("/captured").json()
    assert message["raw"] == "Subject: latin-1\r\n\r\ncaf\ufffd\r\n"


def test_delete_clears_only_the_project(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    _capture(backend, project.id, ["ann@example.com", "bob@example.com"])
    _capture(backend, other_project.id, ["zoe@example.com"])
    assert [m["recipient"] for m in other_project.client.get("/captured").json()] == [
        "zoe@example.com"
    ]
    deleted = project.client.delete("/captured")
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": 2}
    assert project.client.get("/captured").json() == []
    assert len(other_project.client.get("/captured").json()) == 1


def test_captured_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer  # noqa: PLC0415 - only this test builds a one-command app

    url = sqlite_url(tmp_path)
    monkeypatch.setenv("ENVOI_DATABASE_URL", url)
    monkeypatch.setenv("ENVOI_VAR_DIR", str(tmp_path))
    command = typer.Typer()
    command.command()(captured_command)
    runner = CliRunner()
    assert runner.invoke(command, []).output == ""  # migrates, nothing captured yet
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with transaction(sessions) as session:
        first = create_project(session, "One").id
        second = create_project(session, "Two").id
    backend = Backend("sqlite", url, "", sessions, None)  # type: ignore[arg-type]
    _capture(backend, first, ["ann@example.com", "bob@example.com"])
    _capture(backend, second, ["zoe@example.com"])
    engine.dispose()

    lines = runner.invoke(command, ["--limit", "2"]).output.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["recipient"] for r in rows] == ["zoe@example.com", "bob@example.com"]
    assert set(rows[0]) == {
        "id",
        "project_id",
        "post",
        "mail_from",
        "recipient",
        "received_at",
        "subject",
    }
    mine = runner.invoke(command, ["--project", str(first)]).output.splitlines()
    assert [json.loads(line)["recipient"] for line in mine] == [
        "bob@example.com",
        "ann@example.com",
    ]
    raw = runner.invoke(command, ["--project", str(second), "--raw"]).output
    assert raw.startswith("From bounces+x@envoi.test ")
    assert "To: zoe@example.com\nSubject: =?utf-8?q?H=C3=A9llo?= 0\n" in raw
