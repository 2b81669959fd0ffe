"""Seed 000's spooler statistics over real HTTP: `POST /api/3.0/statistics/spooler/{token}`
with every `groupBy`, every error in its shape, isolation, the IP allowlist, and a
campaign really sent and tracked."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from envoi.db.session import transaction
from envoi.projects.models import Project
from tests.delivery_support import (
    campaign_state,
    create_email,
    csv_of,
    data_url,
    running_worker,
    start_campaign,
    wait_until,
)
from tests.test_feedback_flow import IPHONE_MAIL
from tests.test_stats_messages import (  # the served app and its event store
    StatsBackend,
    Tenant,
    _tracked,
    event,
    make_tenant,
    stats_backend,
    tenant,
)

__all__ = ["make_tenant", "stats_backend", "tenant"]  # fixtures shared with seed 001's tests

DOCS = Path(__file__).resolve().parent.parent / "docs"
T0 = datetime(2024, 6, 3, 10, 20, tzinfo=UTC)
URL_A = "https://shop.example.com/a"
URL_B = "https://shop.example.com/b"


def create_campaign(tenant: Tenant, **email: Any) -> dict[str, Any]:
    """A draft campaign of a new email (its events are written by the test)."""
    email_id = create_email(tenant.api, **email)
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "U",
        "source_uploaded_csv": data_url(csv_of(["ann@gmail.com"])),
    }
    created = tenant.api.post("/campaigns", json=body)
    assert created.status_code == 201, created.text
    campaign: dict[str, Any] = created.json()
    return campaign


def campaign_events(project_id: int, campaign: dict[str, Any]) -> list[dict[str, Any]]:
    """A campaign's life over three days, through routers r1 and r2.

    Build (no router yet): five queued, one blocked, one quarantined. Ann (r1) is
    delivered, opens twice, clicks A twice and complains; Bob (r1) is deferred twice
    (greylisting, error 53), then delivered; Apple's proxy opens his copy. Cyd (r2) is
    refused for good (error 11). Dan (r2) is deferred (error 46) and waits. Eve (r2) is
    delivered, opens the next day and three days later, views it online, clicks B (and a
    scanner clicks it too), unsubscribes, and her mailbox bounces it later (error 15).
    """
    cid = campaign["id"]

    def on(kind: str, minutes: float, who: str, **columns: Any) -> dict[str, Any]:
        at = T0 + timedelta(minutes=minutes)
        columns.setdefault("router", None)
        return event(
            project_id,
            campaign["message_id"],
            kind,
            at,
            who,
            campaign_id=cid,
            post=f"S_{cid}",
            **columns,
        )

    ann, bob, cyd = "ann@gmail.com", "bob@gmail.com", "cyd@hotmail.fr"
    dan, eve = "dan@example.com", "eve@example.com"
    day = 24 * 60
    return [
        *(on("queued", -10, who) for who in (ann, bob, cyd, dan, eve)),
        on("blocked", -10, "zed@example.com", reason="invalid"),
        on("quarantined", -10, "qua@hotmail.fr", reason="nonexistent"),
        on("delivered", 0, ann, router="r1"),
        on("tempfail", 0, bob, router="r1", error_code=53, bounce_class="other_soft"),
        on("permfail", 1, cyd, router="r2", error_code=11, bounce_class="user_unknown"),
        on("tempfail", 1, dan, router="r2", error_code=46, bounce_class="other_soft"),
        on("delivered", 2, eve, router="r2"),
        on("open", 5, bob, router="r1", machine="apple_mpp"),
        on("tempfail", 15, bob, router="r1", error_code=53, bounce_class="other_soft"),
        on("delivered", 30, bob, router="r1"),
        on("open", 30, ann, router="r1"),
        on("click", 31, ann, router="r1", link=0, url=URL_A),
        on("click", 32, ann, router="r1", link=0, url=URL_A),
        on("open", 120, ann, router="r1"),
        on("complaint", 130, ann, router="r1", handled=True),
        on("click", 2 + 1 / 60, eve, router="r2", link=1, url=URL_B, machine="scanner"),
        on("bounce", 200, eve, router="r2", error_code=15, bounce_class="mailbox_full"),
        on("open", day, eve, router="r2"),
        on("mirror", day + 1, eve, router="r2"),
        on("click", day + 2, eve, router="r2", link=1, url=URL_B),
        on("unsubscribe", day + 3, eve, router="r2", method="page"),
        on("open", 3 * day, eve, router="r2"),
    ]


def counters(
    activity: tuple[int, int, int] = (0, 0, 0),
    routing: tuple[int, int, int] = (0, 0, 0),
    spooling: tuple[int, int, int] = (0, 0, 0),
) -> dict[str, dict[str, int]]:
    return {
        "activity": dict(zip(("open", "click", "mirror"), activity, strict=True)),
        "routing": dict(zip(("ok", "tempfail", "permfail"), routing, strict=True)),
        "spooling": dict(zip(("count", "blocked", "quarantine"), spooling, strict=True)),
    }


def spooler(client: httpx.Client, token: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    if body is not None:
        kwargs["json"] = body
    return client.post(f"/api/3.0/statistics/spooler/{token}", **kwargs)


def stats(client: httpx.Client, token: str, body: Any = None) -> Any:
    answer = spooler(client, token, body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return answer.json()


def documented(page: str) -> list[Any]:
    """The plain ```json examples of a docs page (those the docs runner cannot run)."""
    text = (DOCS / page).read_text()
    return [json.loads(block) for block in re.findall(r"^```json\n(.*?)^```", text, re.M | re.S)]


def error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# The routers' own counters; the spooling ones are written before any router is chosen.
R1 = counters(activity=(1, 1, 0), routing=(2, 1, 0))
R2 = counters(activity=(1, 1, 1), routing=(1, 1, 1))
UNROUTED = counters(spooling=(7, 1, 1))
GLOBAL = counters(activity=(2, 2, 1), routing=(3, 2, 1), spooling=(7, 1, 1))


def test_every_grouping_of_the_seed(stats_backend: StatsBackend, tenant: Tenant) -> None:
    campaign = create_campaign(tenant)
    stats_backend.store.append(campaign_events(tenant.creds.id, campaign))
    token = campaign["spooler_token"]

    assert stats(tenant.rpc, token, {"groupBy": "global"}) == GLOBAL
    # No body, or no groupBy, is the global view.
    assert stats(tenant.rpc, token) == GLOBAL
    assert stats(tenant.rpc, token, {}) == GLOBAL

    by_router = stats(tenant.rpc, token, {"groupBy": "router"})
    assert by_router == {"r1": R1, "r2": R2, "none": UNROUTED}
    assert list(by_router) == ["r1", "r2", "none"]  # by name, the unrouted last

    assert stats(tenant.rpc, token, {"groupBy": "router+domain"}) == {
        "r1": {"gmail.com": R1},
        "r2": {
            "example.com": counters(activity=(1, 1, 1), routing=(1, 1, 0)),
            "hotmail.fr": counters(routing=(0, 0, 1)),
        },
        "none": {
            "example.com": counters(spooling=(3, 1, 0)),
            "gmail.com": counters(spooling=(2, 0, 0)),
            "hotmail.fr": counters(spooling=(2, 0, 1)),
        },
    }
    by_provider = stats(tenant.rpc, token, {"groupBy": "router+provider"})
    assert by_provider == {
        "r1": {"google": R1},
        "r2": {
            "microsoft": counters(routing=(0, 0, 1)),
            "other": counters(activity=(1, 1, 1), routing=(1, 1, 0)),
        },
        "none": {
            "google": counters(spooling=(2, 0, 0)),
            "microsoft": counters(spooling=(2, 0, 1)),
            "other": counters(spooling=(3, 1, 0)),
        },
    }
    # The page's examples are these answers.
    assert GLOBAL in documented("api-spooler-stats.md")
    assert by_provider in documented("api-spooler-stats.md")
    assert stats(tenant.rpc, token, {"groupBy": "domain"}) == {
        "example.com": counters(activity=(1, 1, 1), routing=(1, 1, 0), spooling=(3, 1, 0)),
        "gmail.com": counters(activity=(1, 1, 0), routing=(2, 1, 0), spooling=(2, 0, 0)),
        "hotmail.fr": counters(routing=(0, 0, 1), spooling=(2, 0, 1)),
    }
    assert stats(tenant.rpc, token, {"groupBy": "provider"}) == {
        "google": counters(activity=(1, 1, 0), routing=(2, 1, 0), spooling=(2, 0, 0)),
        "microsoft": counters(routing=(0, 0, 1), spooling=(2, 0, 1)),
        "other": counters(activity=(1, 1, 1), routing=(1, 1, 0), spooling=(3, 1, 0)),
    }


def test_each_token_sees_its_own_campaign_only(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    mine, quiet = create_campaign(tenant), create_campaign(tenant)
    stats_backend.store.append(campaign_events(tenant.creds.id, mine))
    # Another project's events filed under this campaign's id do not leak in.
    intruder = make_tenant()
    stats_backend.store.append(campaign_events(intruder.creds.id, mine))
    assert stats(tenant.rpc, mine["spooler_token"]) == GLOBAL
    # A campaign without events: zeros, and no groups.
    assert stats(tenant.rpc, quiet["spooler_token"]) == counters()
    for grouping in ("router", "router+domain", "router+provider", "domain", "provider"):
        assert stats(tenant.rpc, quiet["spooler_token"], {"groupBy": grouping}) == {}
    # The intruder's own campaign answers its own events only.
    theirs = create_campaign(intruder)
    assert stats(intruder.rpc, theirs["spooler_token"]) == counters()


def test_every_error_in_its_shape(stats_backend: StatsBackend, tenant: Tenant) -> None:
    token = create_campaign(tenant)["spooler_token"]
    for unknown in ("not-a-token", token[:-1], token + "x", "x" * 500):
        answer = spooler(tenant.rpc, unknown, {"groupBy": "router"})
        assert answer.status_code == 404, unknown
        assert answer.json() == error(404, "Unknown spooler token")
    assert spooler(tenant.rpc, "").status_code in {404, 405}  # no token: no such route

    allowed = ", ".join(("global", "router", "router+domain", "router+provider"))
    bad_value = f"groupBy must be one of: {allowed}, domain, provider"
    for body, message in (
        (b"{not json", "The body is not valid JSON"),
        (b"\xff\xfe", "The body is not valid JSON"),
        (b"[]", "The body must be a JSON object"),
        (b'"router"', "The body must be a JSON object"),
        (b"null", "The body must be a JSON object"),
        (b'{"groupBy": "routers"}', bad_value),
        (b'{"groupBy": "Router"}', bad_value),
        (b'{"groupBy": "provider+router"}', bad_value),
        (b'{"groupBy": ""}', bad_value),
        (b'{"groupBy": 1}', bad_value),
        (b'{"groupBy": null}', bad_value),
        (b'{"groupBy": ["router"]}', bad_value),
        (b'{"groupby": "router"}', "Unknown field 'groupby': the body takes groupBy only"),
    ):
        answer = spooler(tenant.rpc, token, content=body)
        assert answer.status_code == 400, body
        assert answer.json() == error(400, message), body

    with without_event_store(stats_backend):
        answer = spooler(tenant.rpc, token)
    assert answer.status_code == 503
    assert answer.json() == error(503, "Statistics unavailable")


@contextmanager
def without_event_store(backend: StatsBackend) -> Iterator[None]:
    """The server as `envoi serve` runs when another process holds the event store.
    (Not monkeypatch: its undo deletes an attribute of Starlette's `State`.)"""
    store = backend.app.state.event_store
    backend.app.state.event_store = None
    try:
        yield
    finally:
        backend.app.state.event_store = store


def fence(backend: StatsBackend, project_id: int, allowed_ips: list[str]) -> None:
    """Narrow a project's IP allowlist (after its campaigns were made through the API)."""
    with transaction(backend.sessions) as session:
        project = session.get(Project, project_id)
        assert project is not None
        project.allowed_ips = allowed_ips


def test_the_project_allowlist_applies_to_the_token(
    stats_backend: StatsBackend, make_tenant: Any
) -> None:
    fenced = make_tenant()
    token = create_campaign(fenced)["spooler_token"]
    fence(stats_backend, fenced.creds.id, ["10.0.0.0/8"])
    # Checked before the body: this client learns nothing more than that the token exists.
    for body in ({"groupBy": "router"}, {"groupBy": "nonsense"}):
        answer = spooler(fenced.rpc, token, body)
        assert answer.status_code == 403
        assert answer.json() == error(403, "API client IP not allowed")
    fence(stats_backend, fenced.creds.id, ["10.0.0.0/8", "127.0.0.0/8"])
    assert stats(fenced.rpc, token) == counters()


def test_a_campaign_sent_tracked_and_projected(stats_backend: StatsBackend, tenant: Tenant) -> None:
    addresses = ["ann@example.com", "bob@example.com", "cyd@example.com"]
    email_id = create_email(tenant.api)
    with running_worker(stats_backend.settings, stats_backend.sessions):
        campaign = start_campaign(tenant.api, email_id, [*addresses, "not-an-address"])
        wait_until(lambda: campaign_state(tenant.api, campaign["id"]) == "finished", timeout=60)
    captured = {m["recipient"]: m["raw"] for m in tenant.api.get("/captured").json()}
    with httpx.Client(timeout=30, follow_redirects=False) as tracking:
        # Ann reads it twice in iPhone Mail (one recipient); Bob's copy is fetched by
        # a machine; Ann's click a second after delivery is a link scanner's.
        ann = _tracked(stats_backend.base_url, captured["ann@example.com"])
        for _ in range(2):
            assert tracking.get(ann["o"][0], headers={"User-Agent": IPHONE_MAIL}).status_code == 200
        bob = _tracked(stats_backend.base_url, captured["bob@example.com"])
        assert tracking.get(bob["o"][0], headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
        assert tracking.get(ann["c"][0], headers={"User-Agent": IPHONE_MAIL}).status_code == 302

    token = campaign["spooler_token"]
    # The line without an address is not in the audience: three spooled, three sent.
    expected = counters(activity=(1, 0, 0), routing=(3, 0, 0), spooling=(3, 0, 0))
    # The server's projector moves the outbox into the event store in the background.
    wait_until(
        lambda: stats(tenant.rpc, token) == expected,
        timeout=30,
        what="the projection",
        show=lambda: stats(tenant.rpc, token),
    )
    by_router = stats(tenant.rpc, token, {"groupBy": "router+domain"})
    [router] = [name for name in by_router if name != "none"]
    assert by_router == {
        router: {"example.com": counters(activity=(1, 0, 0), routing=(3, 0, 0))},
        "none": {"example.com": counters(spooling=(3, 0, 0))},
    }
    assert stats(tenant.rpc, token, {"groupBy": "provider"}) == {"other": expected}
