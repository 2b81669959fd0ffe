"""GDPR erasure reaches the event store: a real campaign delivered through the capture
router and opened over HTTP, events imported, then `DELETE /api/v1/users?email=...`,
projected: nothing in the store names the person any more, and every count stays.
Then `envoi events rebuild` and `envoi events import` through the console script."""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from envoi.core.identity import erasure_hash
from envoi.db.session import transaction
from envoi.eventstore import imports
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.projector import Projector
from envoi.eventstore.schema import IMPORT_ID_BASE
from envoi.outbox.models import OutboxEvent
from envoi.statistics.query import StatisticsEngine, StatsQuery
from tests.conftest import ENVOI, ApiProject, Backend, served_backend
from tests.delivery_support import (
    campaign_state,
    create_email,
    running_worker,
    spool_rows,
    start_campaign,
    wait_until,
)
from tests.test_users import get_user

ANN = "ann@example.com"
BOB = "bob@example.com"
HISTORY = "S_9093"  # an imported campaign
MEASURES = (
    "spooled",
    "sent",
    "delivered",
    "opened",
    "opened_all",
    "unique_opened",
    "unique_opened_all",
    "complaints",
    "goals",
    "unique_goals",
)


def history(project_id: int, other_id: int, post: str = HISTORY) -> list[dict[str, Any]]:
    """Imported events: Ann delivered and opened three times, Bob delivered and opened
    once; in the other project, an Ann of its own."""

    def event(kind: str, at: str, recipient: str, project: int = project_id) -> dict[str, Any]:
        return {
            "kind": kind,
            "occurred_at": f"2021-01-27T{at}:00Z",
            "project_id": project,
            "post": post,
            "message": post.replace("S_", "L_"),
            "recipient": recipient,
            "machine": None,
        }

    return [
        event("delivered", "10:00", "Ann@Example.com"),
        event("open", "10:05", ANN),
        event("open", "11:05", ANN),
        event("open", "12:05", ANN),
        event("delivered", "10:00", BOB),
        event("open", "10:30", BOB),
        event("delivered", "10:00", ANN, other_id),
        event("open", "10:02", ANN, other_id),
    ]


def import_events(store: DuckDBStore, path: Path, events: list[dict[str, Any]]) -> int:
    """Load `events` as `envoi events import` does (no erasures given)."""
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    projects = {event["project_id"] for event in events}
    checked = imports.check_jsonl(path, projects, lambda _done: None)
    try:
        return imports.load(store, checked, lambda _done: None)
    finally:
        checked.close()


@dataclass
class Scene:
    backend: Backend
    project: ApiProject
    other: ApiProject
    path: Path
    store: DuckDBStore
    ann: int  # Ann's profile id
    ann_send: int  # her spool row
    post: str  # the campaign's key

    def project_all(self) -> None:
        Projector(self.backend.sessions, self.store).run_until_idle()

    def traces(self, project_id: int | None = None) -> list[tuple[Any, ...]]:
        """Events of the project naming Ann: her address (in any form) or her profile."""
        return self.store.query(
            "SELECT id, kind, recipient, profile_id FROM events WHERE project_id = ? "
            "AND (recipient LIKE '%ann@example.com%' OR profile_id = ?) ORDER BY id",
            [project_id or self.project.id, self.ann],
        )[1]

    def counts(self) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
        """The statistics per post, and the events per kind with their flags."""
        query = StatsQuery(project_id=self.project.id, group_by=("post",), measures=MEASURES)
        stats = StatisticsEngine(self.store).run(query).rows
        kinds = self.store.query(
            "SELECT kind, count(*), count(*) FILTER (WHERE is_first), "
            "count(*) FILTER (WHERE is_first_human) FROM events WHERE project_id = ? "
            "GROUP BY kind ORDER BY kind",
            [self.project.id],
        )[1]
        return stats, kinds

    def named(self, recipient: str, project_id: int) -> int:
        (count,) = self.store.query(
            "SELECT count(*) FROM events WHERE project_id = ? AND recipient = ?",
            [project_id, recipient],
        )[1][0]
        return int(count)


def _open(backend: Backend, project: ApiProject, recipient: str) -> None:
    """Open the captured message to `recipient` (its tracking pixel, over HTTP)."""
    captured = project.client.get("/captured").json()
    raw = next(m["raw"] for m in captured if recipient in m["recipient"])
    html = email.message_from_string(raw, policy=email.policy.default).get_body(("html",))
    assert isinstance(html, email.message.EmailMessage)
    public_url = backend.settings.public_url
    pixel = re.search(re.escape(public_url) + r"/t/o/[^\s\"'<>]+", html.get_content())
    assert pixel is not None
    browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0.0.0 Safari/537.36"
    url = pixel.group().replace(public_url, backend.base_url)
    assert httpx.get(url, headers={"User-Agent": browser}).status_code == 200


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database of this module's own: its worker delivers every running campaign it
    finds, and the other modules' campaigns are none of its business."""
    name: str = request.param
    with served_backend(name, tmp_path_factory.mktemp(f"erasure-{name}")) as served:
        yield served


@pytest.fixture
def scene(
    backend: Backend, project: ApiProject, other_project: ApiProject, tmp_path: Path
) -> Iterator[Scene]:
    """Ann and Bob sent a campaign through the capture router; Ann opened it twice and
    Bob once; facts about Ann known by her profile only, by her address only, by her
    identity key; and imported history: all projected into a store of the test's own."""
    for person in ({"email": ANN, "uid": "ann", "phone": "+79001234567"}, {"email": BOB}):
        assert project.client.post("/users", json=person).status_code == 201
    ann = get_user(project, email=ANN)["id"]
    campaign = start_campaign(project.client, create_email(project.client), [ANN, BOB])
    with running_worker(backend.settings, backend.sessions):
        wait_until(
            lambda: campaign_state(project.client, campaign["id"]) == "finished", what="delivery"
        )
    for recipient in (ANN, ANN, BOB):
        _open(backend, project, recipient)
    sends = spool_rows(backend.sessions, campaign["id"])
    assert sends[ANN].profile_id == ann
    post = f"S_{campaign['id']}"
    now = datetime.now(UTC)
    with transaction(backend.sessions) as session:
        common = {"project_id": project.id, "occurred_at": now, "campaign_id": campaign["id"]}
        session.add_all(
            [
                # Her profile only (no address, no send): a goal she reached.
                OutboxEvent(
                    **common, kind="goal", profile_id=ann, data={"post": post, "goal": "signup"}
                ),
                # Her address only: a complaint that found no send.
                OutboxEvent(**common, kind="complaint", recipient=ANN, data={"post": post}),
                # Her identity key as the recipient.
                OutboxEvent(
                    **common,
                    kind="open",
                    recipient=f"email:{ANN}",
                    data={"post": post, "machine": None},
                ),
            ]
        )
    store = DuckDBStore(tmp_path / "events.duckdb")
    scene = Scene(backend, project, other_project, tmp_path, store, ann, sends[ANN].id, post)
    try:
        assert import_events(store, tmp_path / "h.jsonl", history(project.id, other_project.id))
        scene.project_all()
        yield scene
    finally:
        scene.store.close()


def _erase(scene: Scene) -> None:
    response = scene.project.client.delete("/users", params={"email": ANN})
    assert response.status_code == 204, response.text


def test_an_erasure_strips_the_person_from_the_event_store(scene: Scene) -> None:
    traces = scene.traces()
    kinds = {kind for _, kind, _, _ in traces}
    assert kinds == {"queued", "delivered", "open", "goal", "complaint"}
    assert any(event_id >= IMPORT_ID_BASE for event_id, *_ in traces)
    before = scene.counts()
    stats = {row["post"]: row for row in before[0]}
    assert (stats[scene.post]["delivered"], stats[scene.post]["opened"]) == (2, 4)
    assert (stats[HISTORY]["opened"], stats[HISTORY]["unique_opened"]) == (4, 2)
    bob = scene.named(BOB, scene.project.id)
    theirs = scene.named(ANN, scene.other.id)

    _erase(scene)

    # The order went through the outbox, naming no identifier in clear.
    with scene.backend.sessions() as session:
        order = session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.project_id == scene.project.id, OutboxEvent.kind == "erasure"
            )
        ).one()
    assert (order.profile_id, order.recipient, order.campaign_id) == (None, None, None)
    assert order.data == {
        "profile_id": scene.ann,
        "hashes": sorted(
            erasure_hash(name, value)
            for name, value in (("email", ANN), ("uid", "ann"), ("phone", "+79001234567"))
        ),
        "send_ids": [scene.ann_send],
    }
    assert "ann" not in json.dumps(order.data)
    assert "+7900" not in json.dumps(order.data)

    scene.project_all()
    assert scene.traces() == []
    assert scene.counts() == before  # every count, every first occurrence
    (orders,) = scene.store.query("SELECT count(*) FROM events WHERE kind = 'erasure'")[1][0]
    assert orders == 0  # an order, not an event
    assert scene.named(BOB, scene.project.id) == bob
    assert scene.named(ANN, scene.other.id) == theirs  # another project's Ann
    erased = scene.store.query(
        "SELECT count(*) FROM events WHERE project_id = ? AND send_id = ? "
        "AND recipient IS NULL AND profile_id IS NULL",
        [scene.project.id, scene.ann_send],
    )[1][0]
    assert erased == (4,)  # queued, delivered, two opens: kept, anonymous

    # Applied again (the store's cursor before the order, as after a crash): no change.
    scene.store.append_outbox((), cursor=order.id - 1)
    scene.project_all()
    assert scene.store.cursor() >= order.id
    assert scene.traces() == []
    assert scene.counts() == before


def _run(scene: Scene, *args: str) -> subprocess.CompletedProcess[str]:
    """`envoi events ...` on the backend's database and the scene's store (closed)."""
    env = {
        **os.environ,
        "ENVOI_VAR_DIR": str(scene.path),
        "ENVOI_DATABASE_URL": scene.backend.database_url,
        "ENVOI_EVENTS_URL": f"duckdb:///{scene.path / 'events.duckdb'}",
        "ENVOI_SECRET_KEY": "test-secret-key",
    }
    scene.store.close()
    try:
        return subprocess.run(  # noqa: S603 - our own console script
            [str(ENVOI), "events", *args], env=env, capture_output=True, text=True, check=False
        )
    finally:
        scene.store = DuckDBStore(scene.path / "events.duckdb")


def test_a_rebuild_applies_the_erasure_again(scene: Scene) -> None:
    _erase(scene)
    scene.project_all()
    assert scene.traces() == []
    # Events naming her come into the store by a way that does not apply erasures.
    late = history(scene.project.id, scene.other.id, post="S_9094")
    assert import_events(scene.store, scene.path / "late.jsonl", late) == len(late)
    assert len(scene.traces()) == 4
    before = scene.counts()
    imported = scene.store.query("SELECT count(*) FROM events WHERE id >= ?", [IMPORT_ID_BASE])
    bob, theirs = scene.named(BOB, scene.project.id), scene.named(ANN, scene.other.id)

    done = _run(scene, "rebuild")
    assert done.returncode == 0, done.stderr

    assert scene.traces() == []  # the outbox's erasure, projected again
    assert scene.counts() == before  # imported events keep their first occurrences
    assert scene.store.query("SELECT count(*) FROM events WHERE id >= ?", [IMPORT_ID_BASE]) == (
        imported
    )
    assert scene.named(BOB, scene.project.id) == bob
    assert scene.named(ANN, scene.other.id) == theirs


def test_an_import_strips_the_persons_erased_in_the_database(scene: Scene) -> None:
    _erase(scene)
    # Carol was erased, then registered again: her erasure is lifted.
    client = scene.project.client
    assert client.post("/users", json={"email": "carol@example.com"}).status_code == 201
    assert client.delete("/users", params={"email": "carol@example.com"}).status_code == 204
    assert client.post("/users", json={"email": "carol@example.com"}).status_code == 201
    scene.project_all()
    late = [
        *history(scene.project.id, scene.other.id, post="S_9094"),
        {
            "kind": "open",
            "occurred_at": "2021-01-28T10:00:00Z",
            "project_id": scene.project.id,
            "post": "S_9094",
            "recipient": "carol@example.com",
        },
    ]
    file = scene.path / "late.jsonl"
    file.write_text("".join(json.dumps(event) + "\n" for event in late))
    bob, theirs = scene.named(BOB, scene.project.id), scene.named(ANN, scene.other.id)

    done = _run(scene, "import", str(file))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == len(late)

    assert scene.traces() == []
    (stripped,) = scene.store.query(
        "SELECT count(*) FROM events WHERE post = 'S_9094' AND project_id = ? "
        "AND recipient IS NULL",
        [scene.project.id],
    )[1][0]
    assert stripped == 4  # Ann's delivered and three opens, loaded without her
    assert scene.named("carol@example.com", scene.project.id) == 1
    assert scene.named(BOB, scene.project.id) == bob + 2  # delivered, opened
    assert scene.named(ANN, scene.other.id) == theirs + 2  # another project's Ann
    stats = {
        row["post"]: row
        for row in StatisticsEngine(scene.store)
        .run(StatsQuery(project_id=scene.project.id, group_by=("post",), measures=MEASURES))
        .rows
    }
    assert (stats["S_9094"]["opened"], stats["S_9094"]["unique_opened"]) == (5, 3)
