"""The projector: outbox rows of a real OLTP database into a real DuckDB store, a crash
in the middle, PostgreSQL's out-of-order commits, and the projector of `envoi serve`
fed by a real campaign and a real open."""

from __future__ import annotations

import email
import email.policy
import re
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.projector import Awaited, Hole, Projector
from envoi.outbox.models import OutboxEvent
from envoi.projects.services import create_project
from envoi.spool.bulk import OUTBOX, bulk_insert
from envoi.testing.databases import scratch_database
from envoi.testing.server import ServerThread
from envoi.web.app import create_app
from tests.delivery_support import campaign_state, create_email, start_campaign, wait_until

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
DATA = {"post": "S_1", "message": "L_1", "domain": "gmail.com", "tags": ["news"], "send_id": 1}


class Outbox:
    """An OLTP database with a project, and outbox rows written as envoi writes them."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        with transaction(sessions) as session:
            self.project_id = create_project(session, "P", login=f"p-{secrets.token_hex(4)}").id

    def event(self, kind: str = "open", minutes: float = 0, **data: Any) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "kind": kind,
            "occurred_at": T0 + timedelta(minutes=minutes),
            "campaign_id": 1,
            "email_id": 1,
            "profile_id": None,
            "recipient": data.pop("recipient", "ann@gmail.com"),
            "data": {**DATA, "machine": None, **data},
        }

    def add(self, *events: dict[str, Any]) -> list[int]:
        with transaction(self.sessions) as session:
            return bulk_insert(session, OUTBOX, list(events), return_ids=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    with scratch_database(request.param, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield Outbox(make_sessionmaker(engine))
        finally:
            engine.dispose()


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Outbox]:
    with scratch_database("postgresql", tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield Outbox(make_sessionmaker(engine))
        finally:
            engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "events.duckdb")
    yield opened
    opened.close()


def metric(projector: Projector, name: str) -> float | None:
    return projector.metrics.registry.get_sample_value(name)


def stored_ids(store: DuckDBStore) -> list[int]:
    return [row[0] for row in store.query("SELECT id FROM events ORDER BY id")[1]]


def test_the_outbox_is_projected_batch_by_batch(outbox: Outbox, store: DuckDBStore) -> None:
    ids = outbox.add(*(outbox.event(minutes=i) for i in range(5)), outbox.event("click"))
    projector = Projector(outbox.sessions, store, batch=4)
    assert projector.step() == 4
    assert store.cursor() == ids[3]
    assert projector.run_until_idle() == 2
    assert stored_ids(store) == ids
    assert store.cursor() == ids[-1]
    assert projector.run_until_idle() == 0
    rows = store.query("SELECT kind, is_first, tags, provider FROM events ORDER BY id")[1]
    assert rows[0] == ("open", True, ["news"], "google")
    assert [row[1] for row in rows] == [True, False, False, False, False, True]
    assert metric(projector, "envoi_events_projected_total") == 6
    assert metric(projector, "envoi_events_projector_cursor") == ids[-1]
    assert metric(projector, "envoi_events_projector_lag_seconds") == 0


def test_a_crash_between_batches_loses_and_repeats_nothing(
    outbox: Outbox, store: DuckDBStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ids = outbox.add(*(outbox.event(minutes=i, recipient=f"u{i}@gmail.com") for i in range(6)))
    projector = Projector(outbox.sessions, store, batch=2)
    projector.step()

    def crash(*_args: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(store, "_set_cursor", crash)  # dies inside the second batch
    with pytest.raises(OSError, match="killed"):
        projector.step()
    monkeypatch.undo()
    assert stored_ids(store) == ids[:2]  # the second batch's rows went with its cursor
    store.close()
    # A new process: the cursor is read back from the store.
    reopened = DuckDBStore(tmp_path / "events.duckdb")
    try:
        assert reopened.cursor() == ids[1]
        assert Projector(outbox.sessions, reopened, batch=2).run_until_idle() == 4
        assert stored_ids(reopened) == ids
        (firsts,) = reopened.query("SELECT count(*) FROM events WHERE is_first")[1][0]
        assert firsts == 6
    finally:
        reopened.close()


def test_rows_projected_beyond_the_cursor_are_not_counted_twice(
    outbox: Outbox, store: DuckDBStore
) -> None:
    ids = outbox.add(outbox.event(), outbox.event("click"), outbox.event("open", 5))
    projector = Projector(outbox.sessions, store)
    projector.run_until_idle()
    store.append_outbox((), cursor=ids[0])  # as if the process died before a later cursor
    again = Projector(outbox.sessions, store)
    assert again.run_until_idle() == 0
    assert stored_ids(store) == ids
    assert store.cursor() == ids[-1]


def test_postgresql_commits_out_of_order_are_awaited(postgres: Outbox, store: DuckDBStore) -> None:
    first = postgres.add(postgres.event(minutes=0))[0]
    # A transaction takes the next id, and is still running when a later one commits.
    slow = postgres.sessions()
    slow.begin()
    late = OutboxEvent(**postgres.event("click", minutes=1))
    slow.add(late)
    slow.flush()
    later = postgres.add(postgres.event("open", minutes=2, recipient="bob@gmail.com"))[0]
    assert first < late.id < later
    projector = Projector(postgres.sessions, store)
    assert projector.run_until_idle() == 2
    assert stored_ids(store) == [first, later]  # projected beyond the hole...
    assert store.cursor() == first  # ...but the cursor waits below it
    assert metric(projector, "envoi_events_projector_awaited_ids") == later - first - 1
    slow.commit()
    slow.close()
    assert projector.run_until_idle() == 1
    assert stored_ids(store) == [first, late.id, later]
    assert store.cursor() == later
    assert projector.run_until_idle() == 0
    (clicks,) = store.query("SELECT count(*) FROM events WHERE kind = 'click' AND is_first")[1][0]
    assert clicks == 1


def test_a_rolled_back_id_is_given_up_after_a_minute(postgres: Outbox, store: DuckDBStore) -> None:
    now = [1000.0]
    projector = Projector(postgres.sessions, store, clock=lambda: now[0])
    first = postgres.add(postgres.event())[0]
    with postgres.sessions() as rolled_back:
        rolled_back.begin()
        rolled_back.add(OutboxEvent(**postgres.event("click")))
        rolled_back.flush()  # takes an id from the sequence
        rolled_back.rollback()
    after = postgres.add(postgres.event("open", 3, recipient="bob@gmail.com"))[0]
    projector.run_until_idle()
    assert store.cursor() == first
    now[0] += 59
    assert projector.run_until_idle() == 0
    assert store.cursor() == first
    now[0] += 2
    assert projector.run_until_idle() == 0
    assert store.cursor() == after  # the transaction never came: rolled back
    assert metric(projector, "envoi_events_projector_awaited_ids") == 0


def test_awaited_ids_are_tracked_as_ranges() -> None:
    awaited = Awaited(60, lambda: 5.0)
    assert awaited.see([1, 2, 6, 7, 10], seen=0) == 10
    assert awaited.holes == [Hole(3, 5, 5.0), Hole(8, 9, 5.0)]
    assert awaited.cursor(10) == 2
    assert awaited.see([4, 9, 11], seen=10) == 11
    assert awaited.ranges() == ((3, 3), (5, 5), (8, 8))
    assert awaited.count() == 3
    assert awaited.see([3, 5, 8], seen=11) == 11
    assert awaited.cursor(11) == 11


@pytest.mark.parametrize("name", ["sqlite", "postgresql"])
def test_a_served_campaign_and_an_open_reach_the_store(name: str, tmp_path: Path) -> None:
    """`envoi serve`'s projector thread: delivered through the capture router and
    opened over HTTP, the events are in the store moments later."""
    public_url = "http://envoi.test"
    with ExitStack() as stack:
        url = stack.enter_context(scratch_database(name, tmp_path))
        upgrade(url)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        settings = Settings(
            database_url=url,
            var_dir=tmp_path,
            events_url=f"duckdb:///{tmp_path / 'events.duckdb'}",
            secret_key="test-secret-key",
            public_url=public_url,
            worker_poll_seconds=0.1,
        )
        app = create_app(settings, engine)
        base_url = stack.enter_context(ServerThread(app))
        with transaction(make_sessionmaker(engine)) as session:
            creds = create_project(session, "Shop", login=f"s-{secrets.token_hex(4)}")
        client = stack.enter_context(
            httpx.Client(base_url=f"{base_url}/api/v1", auth=(creds.login, creds.secret))
        )
        addresses = ["ann@gmail.com", "bob@orange.fr", "cyd@example.com"]
        campaign = start_campaign(client, create_email(client), addresses, tags="spring")
        wait_until(lambda: campaign_state(client, campaign["id"]) == "finished", what="delivery")
        raw = next(m["raw"] for m in client.get("/captured").json() if "ann@" in m["recipient"])
        html = email.message_from_string(raw, policy=email.policy.default).get_body(("html",))
        assert isinstance(html, email.message.EmailMessage)
        pixel = re.search(re.escape(public_url) + r"/t/o/[^\s\"'<>]+", html.get_content())
        assert pixel is not None
        browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0.0.0 Safari/537.36"
        opened = httpx.get(
            pixel.group().replace(public_url, base_url), headers={"User-Agent": browser}
        )
        assert opened.status_code == 200

        store: DuckDBStore = app.state.event_store
        post = f"S_{campaign['id']}"

        def seen() -> list[tuple[Any, ...]]:
            return store.query(
                "SELECT kind, recipient, provider, tags, is_first, is_first_human FROM events "
                "WHERE post = ? AND kind IN ('delivered', 'open') ORDER BY kind, recipient",
                [post],
            )[1]

        rows = wait_until(lambda: len(seen()) == 4 and seen(), what="projected events", show=seen)
        assert rows == [
            ("delivered", "ann@gmail.com", "google", ["spring"], True, True),
            ("delivered", "bob@orange.fr", "orange", ["spring"], True, True),
            ("delivered", "cyd@example.com", None, ["spring"], True, True),
            ("open", "ann@gmail.com", "google", ["spring"], True, True),
        ]
        metrics = httpx.get(f"{base_url}/metrics").text
        assert "envoi_events_projected_total" in metrics
        assert "envoi_events_projector_lag_seconds" in metrics
