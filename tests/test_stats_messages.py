"""Seed 001's `get_message_stats` over real HTTP: the JSON-RPC envelope, every error of
the seed in its shape, the seed's counters per hour, day, month and year, unique
actions in the period of their first occurrence, `created_on`, and isolation."""

from __future__ import annotations

import email
import email.policy
import re
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.eventstore.interfaces import EventStore
from envoi.eventstore.schema import IMPORT_ID_BASE
from envoi.profiles.models import Profile
from envoi.projects.services import Credentials, create_project
from envoi.statistics.api import jsonrpc_router, tags_router
from envoi.testing.databases import sqlite_url, temporary_postgres_database
from envoi.testing.server import ServerThread
from envoi.web.app import create_app
from tests.conftest import POSTGRES_URL
from tests.delivery_support import (
    campaign_state,
    create_email,
    running_worker,
    start_campaign,
    wait_until,
)
from tests.test_feedback_flow import IPHONE_MAIL

# -- a served envoi whose event store the test can write to ---------------------------------


@dataclass
class StatsBackend:
    base_url: str
    sessions: sessionmaker[Session]
    store: EventStore
    settings: Settings
    app: FastAPI


def _ensure_surfaces(app: FastAPI) -> None:
    """The seed surfaces on `app`, whether or not `create_app` mounts them already."""
    paths = {getattr(route, "path", None) for route in app.routes}
    if "/api/1.5/" not in paths:
        app.include_router(jsonrpc_router)
    if "/v1/stats/{tag}" not in paths:
        app.include_router(tags_router)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stats_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StatsBackend]:
    name: str = request.param
    var_dir: Path = tmp_path_factory.mktemp(f"stats-{name}")
    with ExitStack() as stack:
        if name == "sqlite":
            url = sqlite_url(var_dir)
        else:
            url = stack.enter_context(temporary_postgres_database(POSTGRES_URL))
        upgrade(url)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        settings = Settings(
            database_url=url,
            var_dir=var_dir,
            events_url=f"duckdb:///{var_dir / 'events.duckdb'}",
            secret_key="test-secret-key",
            public_url="http://envoi.test",
            auth_max_failures=1_000_000,
            deliver_in_process=False,
            worker_poll_seconds=0.05,  # the projector's pace too
        )
        app = create_app(settings, engine)
        _ensure_surfaces(app)
        base_url = stack.enter_context(ServerThread(app))
        # The server opened its event store as it started (`web.app.start_projector`).
        store = app.state.event_store
        yield StatsBackend(base_url, make_sessionmaker(engine), store, settings, app)


@dataclass
class Tenant:
    creds: Credentials
    api: httpx.Client  # the native API, as this project
    rpc: httpx.Client  # the compatible surfaces, no credentials of their own


@pytest.fixture
def make_tenant(stats_backend: StatsBackend) -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def factory(allowed_ips: tuple[str, ...] = ()) -> Tenant:
        with transaction(stats_backend.sessions) as session:
            creds = create_project(
                session, "Stats", login=f"s-{secrets.token_hex(6)}", allowed_ips=allowed_ips
            )
        api = httpx.Client(
            base_url=f"{stats_backend.base_url}/api/v1",
            auth=(creds.login, creds.secret),
            timeout=60,
        )
        rpc = httpx.Client(base_url=stats_backend.base_url, timeout=60)
        clients.extend((api, rpc))
        return Tenant(creds, api, rpc)

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def tenant(make_tenant: Any) -> Tenant:
    made: Tenant = make_tenant()
    return made


_ids = iter(range(IMPORT_ID_BASE + 1, IMPORT_ID_BASE + 10_000_000))


def event(
    project_id: int,
    email_id: int,
    kind: str,
    at: datetime,
    recipient: str,
    **columns: Any,
) -> dict[str, Any]:
    """One row of the event table, as the projector writes it for a campaign's message."""
    return {
        "id": next(_ids),
        "project_id": project_id,
        "kind": kind,
        "occurred_at": at.replace(tzinfo=None),
        "campaign_id": email_id,
        "post": f"S_{email_id}",
        "post_type": "S",
        "message": f"L_{email_id}",
        "message_type": "L",
        "email_id": email_id,
        "recipient": recipient,
        "domain": recipient.partition("@")[2],
        "router": "capture",
        "tags": ["news"],
        **columns,
    }


def call(
    client: httpx.Client, params: Any, method: str = "get_message_stats", **envelope: Any
) -> dict[str, Any]:
    """A JSON-RPC 2.0 call as seed 001's PHP client makes it; the whole answer."""
    body = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1, **envelope}
    response = client.post("/api/1.5/", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    answer: dict[str, Any] = response.json()
    return answer


def error(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": 1}


def stats(client: httpx.Client, api_key: str, **conditions: Any) -> dict[str, Any]:
    answer = call(client, [api_key, conditions])
    assert "error" not in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


DAY1 = datetime(2024, 3, 1, 9, 15, tzinfo=UTC)
DAY2 = datetime(2024, 3, 2, 14, 40, tzinfo=UTC)


# -- the envelope and the errors -------------------------------------------------------------


def test_every_error_of_the_seed_in_its_shape(tenant: Tenant, make_tenant: Any) -> None:
    key = tenant.creds.api_key
    email_id = create_email(tenant.api)
    # params must be [API_KEY, {conditions}]
    for params in (None, [], [key], [key, "x"], [key, []], {"message": 1}, [key, {}, 3]):
        assert call(tenant.rpc, params) == error(-32602, "Invalid params"), params
    for wrong in ("", "0" * 40, 42, None):
        assert call(tenant.rpc, [wrong, {"message": email_id}]) == error(
            -1, "API key verification failed"
        )
    # The message is checked once the key is known.
    for message in (None, "", "abc", "L_", "1\n", -1, 2**31, 10**30, "L_0", f"L_{email_id + 1000}"):
        conditions = {} if message is None else {"message": message}
        assert call(tenant.rpc, [key, conditions]) == error(-1, "Missing message"), message
    # Another project's key does not see this project's message.
    other = make_tenant()
    assert call(other.rpc, [other.creds.api_key, {"message": email_id}]) == error(
        -1, "Missing message"
    )
    # Bad values of the conditions.
    bad: list[dict[str, Any]] = [
        {"grouping": "weekly"},
        {"grouping": 1},
        {"grouping": ["daily"]},
        {"created_on": {"FROM": 20240101}},
        {"created_on": "2024-01-01"},
        {"created_on": {"GREATER": "2024-01-01"}},
        {"created_on": {"from": "2024-01-01"}},
        {"created_on": {"FROM": "2024-02-30"}},
        {"created_on": {"FROM": "2024-01-01 10:00:00"}},
        {"mesage": email_id},
        {"message": [email_id]},
    ]
    for conditions in bad:
        body = {"message": email_id, **conditions}
        assert call(tenant.rpc, [key, body]) == error(-32602, "Invalid params"), conditions


def test_a_client_outside_the_allowlist_is_refused(make_tenant: Any) -> None:
    # Checked before the message: this client learns nothing about the project's emails.
    tenant = make_tenant(allowed_ips=("10.0.0.0/8",))
    assert call(tenant.rpc, [tenant.creds.api_key, {"message": 1}]) == error(
        -1, "API client IP not allowed"
    )
    allowed = make_tenant(allowed_ips=("127.0.0.0/8",))
    assert call(allowed.rpc, [allowed.creds.api_key, {"message": 1}]) == error(
        -1, "Missing message"
    )


def test_the_envelope_follows_the_request_version(tenant: Tenant) -> None:
    key = tenant.creds.api_key
    email_id = create_email(tenant.api)
    rpc = tenant.rpc
    # JSON-RPC 1.0 (no "jsonrpc" member): result and error both present.
    one = rpc.post(
        "/api/1.5/",
        json={"method": "get_message_stats", "params": [key, {"message": email_id}], "id": 7},
    )
    assert one.status_code == 200
    assert one.json() == {"result": {}, "error": None, "id": 7}
    failed = rpc.post(
        "/api/1.5/", json={"method": "get_message_stats", "params": [key, {}], "id": "a"}
    )
    assert failed.json() == {
        "result": None,
        "error": {"code": -1, "message": "Missing message"},
        "id": "a",
    }
    # 2.0: exactly one of result and error.
    assert call(rpc, [key, {"message": f"L_{email_id}"}]) == {
        "jsonrpc": "2.0",
        "result": {},
        "id": 1,
    }
    # Errors of the envelope itself carry the spec's codes.
    assert call(rpc, [key, {}], method="get_campaigns") == error(-32601, "Method not found")
    unparsable = rpc.post("/api/1.5/", content=b"{not json")
    assert unparsable.status_code == 200
    assert unparsable.json() == {
        "jsonrpc": "2.0",
        "error": {"code": -32700, "message": "Parse error"},
        "id": None,
    }
    for body in ([], [1], "x", {"params": [key, {}], "id": 1}):
        answer = rpc.post("/api/1.5/", json=body).json()
        answer = answer[0] if isinstance(answer, list) else answer
        assert answer["error"] == {"code": -32600, "message": "Invalid Request"}, body
    # A notification (2.0 without an id) gets no answer; a batch gets one answer per call.
    notification = {"jsonrpc": "2.0", "method": "get_message_stats", "params": [key, {}]}
    assert rpc.post("/api/1.5/", json=notification).status_code == 204
    batch = rpc.post(
        "/api/1.5/",
        json=[
            {
                "jsonrpc": "2.0",
                "method": "get_message_stats",
                "params": [key, {"message": email_id}],
                "id": 1,
            },
            notification,
            {"jsonrpc": "2.0", "method": "get_message_stats", "params": [key, {}], "id": 2},
        ],
    )
    assert batch.json() == [
        {"jsonrpc": "2.0", "result": {}, "id": 1},
        {"jsonrpc": "2.0", "error": {"code": -1, "message": "Missing message"}, "id": 2},
    ]
    # Without the trailing slash too (no redirect a POST would not follow).
    plain = rpc.post("/api/1.5", json={"method": "get_message_stats", "params": [key, {}], "id": 1})
    assert plain.json()["error"]["message"] == "Missing message"


# -- the counters ------------------------------------------------------------------------------

ZERO = dict.fromkeys(
    (
        "sent",
        "opened",
        "unique_opened",
        "clicked",
        "unique_clicked",
        "goals",
        "unique_goals",
        "forwarded",
        "unsubscribes",
        "bounces_user_unknown",
        "bounces_user_recycled",
        "bounces_mailbox_full",
        "bounces_block_content",
        "bounces_block_timeout",
        "bounces_block_other",
        "bounces_other_soft",
        "bounces_other_hard",
        "complaints_handled",
        "complaints_unhandled",
    ),
    0,
)


def counters(**values: int) -> dict[str, int]:
    return ZERO | values


def two_days(project_id: int, email_id: int) -> list[dict[str, Any]]:
    """A message's life over two days, then a quiet tail (times in order)."""

    def at(day: datetime, minutes: int) -> datetime:
        return day + timedelta(minutes=minutes)

    def on(kind: str, when: datetime, who: str, **columns: Any) -> dict[str, Any]:
        return event(project_id, email_id, kind, when, f"{who}@example.com", **columns)

    return [
        on("queued", at(DAY1, -10), "ann"),
        on("delivered", at(DAY1, 0), "ann"),
        on("delivered", at(DAY1, 1), "bob"),
        on("delivered", at(DAY1, 2), "cyd"),
        on("permfail", at(DAY1, 3), "dan", bounce_class="user_unknown", hard=True),
        on("open", at(DAY1, 30), "ann"),
        on("open", at(DAY1, 31), "bob", machine="apple_mpp"),  # not a person's
        on("open", at(DAY1, 90), "ann"),
        on("click", at(DAY1, 91), "ann", link=0),
        on("goal", at(DAY1, 95), "ann", goal="purchase", value=19.9),
        on("forward", at(DAY1, 120), "bob"),
        on("unsubscribe", at(DAY1, 125), "cyd", method="one-click"),
        on("complaint", at(DAY1, 130), "cyd", handled=True),
        # Day 2: Ann again (nothing unique), Bob's first open as a person.
        on("open", at(DAY2, 0), "ann"),
        on("open", at(DAY2, 5), "bob"),
        on("click", at(DAY2, 6), "ann", link=1),
        on("goal", at(DAY2, 7), "ann", goal="purchase", value=5.0),
        on("bounce", at(DAY2, 60), "bob", bounce_class="mailbox_full", hard=False),
        on("complaint", at(DAY2, 61), "bob", handled=False),
        # Later days with nothing the seed counts: no period of their own.
        on("tempfail", at(DAY2, 60 * 24), "eve"),
        on("queued", at(DAY2, 60 * 48), "fay"),
    ]


DAY1_COUNTS = counters(
    sent=4,
    opened=2,
    unique_opened=1,
    clicked=1,
    unique_clicked=1,
    goals=1,
    unique_goals=1,
    forwarded=1,
    unsubscribes=1,
    bounces_user_unknown=1,
    complaints_handled=1,
)
DAY2_COUNTS = counters(
    opened=2,
    unique_opened=1,
    clicked=1,
    goals=1,
    bounces_mailbox_full=1,
    complaints_unhandled=1,
)


def test_daily_counters_in_the_seed_order_with_uniques_at_the_first_occurrence(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    email_id = create_email(tenant.api)
    stats_backend.store.append(two_days(tenant.creds.id, email_id))
    key = tenant.creds.api_key
    result = stats(tenant.rpc, key, message=f"L_{email_id}", grouping="daily")
    assert result == {"2024-03-01": DAY1_COUNTS, "2024-03-02": DAY2_COUNTS}
    assert list(result["2024-03-01"]) == list(ZERO)  # the seed's order
    # daily is the default; the message may be given by its id, as a number or a string.
    assert stats(tenant.rpc, key, message=email_id) == result
    assert stats(tenant.rpc, key, message=str(email_id), grouping=None) == result


def test_hourly_monthly_and_yearly_keys(stats_backend: StatsBackend, tenant: Tenant) -> None:
    email_id = create_email(tenant.api)
    rows = two_days(tenant.creds.id, email_id)
    # A last open in April, by Ann: an open, not a unique one.
    rows.append(
        event(tenant.creds.id, email_id, "open", DAY2 + timedelta(days=40), "ann@example.com")
    )
    stats_backend.store.append(rows)
    key = tenant.creds.api_key

    hourly = stats(tenant.rpc, key, message=email_id, grouping="hourly")
    assert list(hourly) == [
        "2024-03-01 09",
        "2024-03-01 10",
        "2024-03-01 11",
        "2024-03-02 14",
        "2024-03-02 15",
        "2024-04-11 14",
    ]
    assert hourly["2024-03-01 09"] == counters(
        sent=4, opened=1, unique_opened=1, bounces_user_unknown=1
    )
    assert hourly["2024-03-02 14"] == counters(opened=2, unique_opened=1, clicked=1, goals=1)
    assert hourly["2024-04-11 14"] == counters(opened=1)

    monthly = stats(tenant.rpc, key, message=email_id, grouping="monthly")
    both_days = {name: DAY1_COUNTS[name] + DAY2_COUNTS[name] for name in ZERO}
    assert monthly == {"2024-03": both_days, "2024-04": counters(opened=1)}
    assert stats(tenant.rpc, key, message=email_id, grouping="yearly") == {
        "2024": both_days | {"opened": both_days["opened"] + 1}
    }


def test_another_message_and_another_project_see_nothing_of_it(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    email_id = create_email(tenant.api)
    other_email = create_email(tenant.api)
    stats_backend.store.append(two_days(tenant.creds.id, email_id))
    assert stats(tenant.rpc, tenant.creds.api_key, message=other_email) == {}
    # Events filed under another project with this message's key do not leak in either.
    intruder = make_tenant()
    stats_backend.store.append(two_days(intruder.creds.id, other_email))
    assert stats(tenant.rpc, tenant.creds.api_key, message=other_email) == {}
    assert call(intruder.rpc, [intruder.creds.api_key, {"message": email_id}]) == error(
        -1, "Missing message"
    )


@pytest.mark.parametrize("max_runs", [16, 0], ids=["id-runs", "id-list"])
def test_created_on_narrows_to_contacts_created_in_the_range(
    stats_backend: StatsBackend, tenant: Tenant, max_runs: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("envoi.statistics.messages.MAX_ID_RUNS", max_runs)
    email_id = create_email(tenant.api)
    created = {
        # Creation dates out of id order, so a range is several runs of ids.
        "ann@example.com": datetime(2024, 2, 20, 23, 59, tzinfo=UTC),
        "bob@example.com": datetime(2024, 1, 10, 12, 0, tzinfo=UTC),
        "cyd@example.com": datetime(2024, 2, 21, 0, 0, tzinfo=UTC),
        "dan@example.com": datetime(2024, 1, 31, 8, 0, tzinfo=UTC),
    }
    ids = {}
    for address, when in created.items():
        answer = tenant.api.post("/users", json={"email": address})
        assert answer.status_code in {200, 201}, answer.text
        with transaction(stats_backend.sessions) as session:
            profile = session.scalars(
                select(Profile).where(
                    Profile.project_id == tenant.creds.id, Profile.email == address
                )
            ).one()
            profile.created_at = when
            ids[address] = profile.id
    pid = tenant.creds.id
    rows = [
        event(pid, email_id, "delivered", DAY1, address, profile_id=profile_id)
        for address, profile_id in ids.items()
    ]
    # A recipient without a profile has no creation date: only counted without created_on.
    rows.append(event(pid, email_id, "delivered", DAY1, "eve@example.com"))
    stats_backend.store.append(rows)

    def sent(**created_on: str) -> int:
        result = stats(tenant.rpc, tenant.creds.api_key, message=email_id, created_on=created_on)
        return int(result["2024-03-01"]["sent"]) if result else 0

    assert stats(tenant.rpc, tenant.creds.api_key, message=email_id) == {
        "2024-03-01": counters(sent=5)
    }
    assert sent() == 5  # no operator: no narrowing
    assert sent(FROM="2024-02-01") == 2  # ann, cyd
    assert sent(TO="2024-01-31") == 2  # bob, dan: TO takes the whole day
    assert sent(FROM="2024-01-31", TO="2024-02-20") == 2  # dan, ann
    assert sent(EQUALS="2024-02-21") == 1  # cyd
    assert sent(AT="2024-01-10") == 1  # bob
    assert sent(FROM="2024-01-01") == 4  # every profile, not Eve
    assert sent(FROM="2024-03-01", TO="2024-02-01") == 0  # an empty range
    assert sent(FROM="2025-01-01") == 0


# -- end to end: a real campaign, sent, tracked and projected ------------------------------------


def test_a_campaign_sent_tracked_and_projected(stats_backend: StatsBackend, tenant: Tenant) -> None:
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    addresses = ["ann@example.com", "bob@example.com", "cyd@example.com"]
    for address in addresses:  # profiles, for created_on
        assert tenant.api.post("/users", json={"email": address}).status_code in {200, 201}
    email_id = create_email(tenant.api)
    with running_worker(stats_backend.settings, stats_backend.sessions):
        campaign = start_campaign(tenant.api, email_id, addresses, tags="spring,promo")
        wait_until(lambda: campaign_state(tenant.api, campaign["id"]) == "finished", timeout=60)
    captured = {m["recipient"]: m["raw"] for m in tenant.api.get("/captured").json()}
    with httpx.Client(timeout=30, follow_redirects=False) as tracking:
        ann = _tracked(stats_backend.base_url, captured["ann@example.com"])
        # Ann reads it twice in iPhone Mail; Bob's copy is fetched by Apple's privacy
        # proxy (a machine); Ann's click a second after delivery is a link scanner's.
        for _ in range(2):
            opened = tracking.get(ann["o"][0], headers={"User-Agent": IPHONE_MAIL})
            assert opened.status_code == 200
        bob = _tracked(stats_backend.base_url, captured["bob@example.com"])
        assert tracking.get(bob["o"][0], headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
        assert tracking.get(ann["c"][0], headers={"User-Agent": IPHONE_MAIL}).status_code == 302

    key = tenant.creds.api_key

    def total(**conditions: Any) -> dict[str, int]:
        """The counters over every period (the test may run across midnight)."""
        result = stats(tenant.rpc, key, message=f"L_{email_id}", **conditions)
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", day) for day in result)
        return {name: sum(day[name] for day in result.values()) for name in ZERO}

    expected = counters(sent=3, opened=2, unique_opened=1)
    # The server's projector moves the outbox into the event store in the background.
    wait_until(lambda: total() == expected, timeout=30, what="the projection", show=total)
    assert total(created_on={"FROM": started[:10]}) == expected
    assert stats(tenant.rpc, key, message=email_id, created_on={"TO": "2000-01-01"}) == {}

    spring = tenant.rpc.get(f"/v1/stats/spring?access_token={tenant.creds.access_token}")
    assert spring.status_code == 200
    body = spring.json()
    assert {name: body[name] for name in ("opens", "clicks", "messages", "deliveries")} == {
        "opens": 2,
        "clicks": 0,
        "messages": 3,
        "deliveries": 3,
    }
    assert started <= body["first"] <= body["last"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["last"])


def _tracked(base_url: str, raw: str) -> dict[str, list[str]]:
    """The open (`o`) and click (`c`) URLs of a captured message, on the served port."""
    message = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    html: str = part.get_content()
    urls: dict[str, list[str]] = {}
    for kind in ("o", "c"):
        for url in re.findall(rf'"(https?://[^"]+/t/{kind}/[^"]+)"', html):
            parts = urlsplit(url.replace("&amp;", "&"))
            query = f"?{parts.query}" if parts.query else ""
            urls.setdefault(kind, []).append(f"{base_url}{parts.path}{query}")
    return urls


def test_without_its_event_store_the_server_says_so(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    # `envoi serve` runs on when another process holds the store, statistics off.
    email_id = create_email(tenant.api)
    # Restored by hand: monkeypatch deletes an attribute of Starlette's `State` when it
    # undoes the change, which would break the module's later tests.
    state = stats_backend.app.state
    store, state.event_store = state.event_store, None
    try:
        assert call(tenant.rpc, [tenant.creds.api_key, {"message": email_id}]) == error(
            -32000, "Statistics unavailable"
        )
        answer = tenant.rpc.get(f"/v1/stats/spring?access_token={tenant.creds.access_token}")
        assert answer.status_code == 503
        assert answer.json() == {"error": "Statistics unavailable"}
    finally:
        state.event_store = store
