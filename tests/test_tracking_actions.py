"""Unsubscribes (RFC 8058 one-click, the page, mail), forwards to a friend and goals,
over real HTTP on a delivered campaign (see test_tracking.py for how it is sent)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from envoi.profiles.models import Subscription
from envoi.quarantine.models import QuarantineEntry
from envoi.spool.models import SpoolEntry
from envoi.tracking import services
from envoi.tracking.pages import PIXEL
from envoi.tracking.services import MAX_FORWARDS
from tests.conftest import ApiProject, Backend, served_backend
from tests.test_tracking import (
    BROWSER,
    PUBLIC_URL,
    Campaign,
    deliver,
    delivered_long_ago,
    events,
    links,
    tracking_events,
)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database of this module's own: its worker delivers every running campaign."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"tracking-actions-{name}")
    with served_backend(name, var_dir, public_url=PUBLIC_URL) as served:
        yield served


@pytest.fixture
def campaign(backend: Backend, project: ApiProject) -> Campaign:
    """Ann has a profile, Bob has none."""
    sent = deliver(
        backend, project, ["ann@example.com", "bob@example.org"], profiles=("ann@example.com",)
    )
    for message in sent.messages.values():
        delivered_long_ago(backend, message.send_id)
    return sent


def subscribed(backend: Backend, profile_id: int | None) -> list[bool]:
    with backend.sessions() as session:
        query = select(Subscription.subscribed).where(Subscription.profile_id == profile_id)
        return list(session.scalars(query))


def quarantine_reason(backend: Backend, project: ApiProject, address: str) -> str | None:
    with backend.sessions() as session:
        return session.scalar(
            select(QuarantineEntry.reason).where(
                QuarantineEntry.project_id == project.id, QuarantineEntry.address == address
            )
        )


def test_one_click_unsubscribe_per_rfc_8058(
    backend: Backend, campaign: Campaign, anonymous: httpx.Client
) -> None:
    ann = campaign.messages["ann@example.com"]
    url = ann.url("u")
    # The List-Unsubscribe URL is the page's; a GET (a scanner's prefetch) changes nothing.
    page = anonymous.get(url, headers={"User-Agent": BROWSER})
    assert page.status_code == 200
    assert "ann@example.com" in page.text
    assert "<form" in page.text
    assert tracking_events(backend, ann.send_id) == []
    # The mailbox provider's POST, as RFC 8058 writes it.
    answer = anonymous.post(url, data=ONE_CLICK, headers={"User-Agent": "GoogleOneClick/1.0"})
    assert answer.status_code == 200
    [unsubscribed] = events(backend, ann.send_id, "unsubscribe")
    assert unsubscribed.data["method"] == "one-click"
    assert unsubscribed.data["post"] == f"S_{campaign.id}"
    assert unsubscribed.profile_id is not None
    assert subscribed(backend, unsubscribed.profile_id) == [False]
    # Again (another button, the page): answered, nothing more recorded.
    assert anonymous.post(url, data=ONE_CLICK).status_code == 200
    again = anonymous.post(url, files={"List-Unsubscribe": (None, "One-Click")})  # multipart
    assert again.status_code == 200
    bare = anonymous.post(url, content=b"List-Unsubscribe=One-Click")  # no Content-Type
    assert bare.status_code == 200
    assert "already" in anonymous.get(url).text
    assert len(events(backend, ann.send_id, "unsubscribe")) == 1


def test_unsubscribe_page_without_profile_quarantines_the_address(
    backend: Backend, project: ApiProject, campaign: Campaign, anonymous: httpx.Client
) -> None:
    bob = campaign.messages["bob@example.org"]
    url = bob.url("u")
    assert anonymous.post(url, data={"other": "x"}).status_code == 400
    answer = anonymous.post(url, data={"unsubscribe": "yes"}, headers={"User-Agent": BROWSER})
    assert answer.status_code == 200
    assert "no longer receive" in answer.text
    assert quarantine_reason(backend, project, "bob@example.org") == "unsubscribed"
    [event] = events(backend, bob.send_id, "unsubscribe")
    assert (event.data["method"], event.data["user_agent"]) == ("page", BROWSER)
    assert anonymous.post(url, data={"unsubscribe": "yes"}).status_code == 200
    assert len(events(backend, bob.send_id, "unsubscribe")) == 1


def test_unsubscribe_by_mail_for_the_inbound_listener(backend: Backend, campaign: Campaign) -> None:
    ann = campaign.messages["ann@example.com"]
    now = datetime.now(UTC)
    with backend.sessions() as session, session.begin():
        assert services.unsubscribe(session, ann.send_id, "mailto", now) is True
    with backend.sessions() as session, session.begin():
        assert services.unsubscribe(session, ann.send_id, "mailto", now) is False
        assert services.unsubscribe(session, 987_654_321, "mailto", now) is False
    [event] = events(backend, ann.send_id, "unsubscribe")
    assert event.data["method"] == "mailto"
    assert event.data["ip"] is None
    assert subscribed(backend, event.profile_id) == [False]


def test_forward_to_a_friend(
    backend: Backend, project: ApiProject, campaign: Campaign, anonymous: httpx.Client
) -> None:
    bob = campaign.messages["bob@example.org"]
    url = bob.url("f")  # the template's {{ forward_url }}
    assert url == links(backend).forward(bob.send_id)
    form = anonymous.get(url)
    assert form.status_code == 200
    assert 'name="email"' in form.text
    answer = anonymous.post(url, data={"email": "Carol@Example.NET", "name": "Carol"})
    assert answer.status_code == 200
    [forward] = events(backend, bob.send_id, "forward")
    assert forward.data["friend_domain"] == "example.net"
    assert "carol" not in str(forward.data).lower()
    with backend.sessions() as session:
        original = session.get(SpoolEntry, bob.send_id)
        friend = session.scalars(
            select(SpoolEntry).where(SpoolEntry.recipient == "carol@example.net")
        ).one()
    assert original is not None
    assert (friend.state, friend.profile_id, friend.domain) == ("queued", None, "example.net")
    assert (friend.project_id, friend.campaign_id) == (project.id, campaign.id)
    assert (friend.email_id, friend.language) == (original.email_id, original.language)
    assert friend.params == {**original.params, "friend_name": "Carol"}
    [queued] = events(backend, friend.id, "queued")
    assert queued.data["forwarded_from"] == bob.send_id
    # Refused: no address, an invalid one; skipped without saying so: a quarantined one.
    assert anonymous.post(url, data={"email": ""}).status_code == 400
    assert anonymous.post(url, data={"email": "not an address"}).status_code == 400
    project.client.post("/quarantine", json={"address": "dan@example.com", "reason": "manual"})
    assert anonymous.post(url, data={"email": "dan@example.com"}).status_code == 200
    assert len(events(backend, bob.send_id, "forward")) == 1
    # At most MAX_FORWARDS forwards a send.
    for n in range(MAX_FORWARDS - 1):
        assert anonymous.post(url, data={"email": f"f{n}@example.com"}).status_code == 200
    assert anonymous.post(url, data={"email": "late@example.com"}).status_code == 429
    assert anonymous.get(url).status_code == 429
    assert len(events(backend, bob.send_id, "forward")) == MAX_FORWARDS
    with backend.sessions() as session:
        friends = session.scalar(
            select(func.count()).where(
                SpoolEntry.campaign_id == campaign.id, SpoolEntry.profile_id.is_(None)
            )
        )
    assert friends == 1 + MAX_FORWARDS  # Bob's own row and his friends'


def test_goals(backend: Backend, campaign: Campaign, anonymous: httpx.Client) -> None:
    ann = campaign.messages["ann@example.com"]
    token = links(backend).goal_token(ann.send_id)
    pixel = anonymous.get(f"/t/g/{token}", params={"goal": "signup", "value": "12.5"})
    assert (pixel.status_code, pixel.content) == (200, PIXEL)
    posted = anonymous.post(f"/t/g/{token}", json={"goal": "purchase", "value": 30})
    assert posted.status_code == 204
    assert posted.headers["access-control-allow-origin"] == "*"
    assert anonymous.post(f"/t/g/{token}", json={"goal": "visit"}).status_code == 204
    goals = events(backend, ann.send_id, "goal")
    assert [(g.data["goal"], g.data["value"]) for g in goals] == [
        ("signup", 12.5),
        ("purchase", 30.0),
        ("visit", None),
    ]
    assert goals[0].data["post"] == f"S_{campaign.id}"
    bad = [
        {"goal": ""},
        {"goal": "no spaces"},
        {"goal": "x" * 65},
        {"goal": "buy", "value": "12"},
        {"goal": "buy", "value": True},
        {"goal": "buy", "extra": 1},
        ["buy"],
    ]
    for body in bad:
        answer = anonymous.post(f"/t/g/{token}", json=body)
        assert answer.status_code == 400, body
        assert set(answer.json()) == {"detail"}
    assert anonymous.post(f"/t/g/{token}", content=b"{nope").status_code == 400
    for query in ({"goal": "buy", "value": "lots"}, {"goal": "buy", "value": "inf"}, {}):
        assert anonymous.get(f"/t/g/{token}", params=query).status_code == 400
    preflight = anonymous.options(f"/t/g/{token}")
    assert preflight.status_code == 204
    assert "content-type" in preflight.headers["access-control-allow-headers"]
    assert len(events(backend, ann.send_id, "goal")) == 3
