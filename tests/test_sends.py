"""`POST /api/v1/send` over real HTTP and real SMTP: one message to one recipient now.

A send goes through the campaign pipeline (spool, render, DKIM, router, outbox), as
post type P of a stream campaign: it reaches the SMTP peer signed and tracked, its
tags are seed 004's tags, tracking turned off leaves nothing to count, a retried
request with the same idempotency key sends once, and a bad request writes nothing.
"""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type information
import httpx
import pytest
from sqlalchemy import func, select

from envoi.campaigns.models import Campaign
from envoi.core.tokens import MessageLinks, Signer
from envoi.delivery.services import create_dkim_key
from envoi.emails.models import Email
from envoi.outbox.models import OutboxEvent
from envoi.sends.models import IdempotencyKey, SendRegistry
from envoi.spool.models import SpoolEntry
from envoi.testing.smtppeer import Received, SmtpPeer
from tests.delivery_support import create_email, create_smtp_router, running_worker, wait_until
from tests.test_feedback_flow import IPHONE_MAIL
from tests.test_stats_messages import (  # a served app with its event store and projector
    StatsBackend,
    Tenant,
    _tracked,
    make_tenant,
    stats_backend,
    tenant,
)

__all__ = ["make_tenant", "stats_backend", "tenant"]

RECEIPT_HTML = (
    "<html><body><p>Order {{ order }} for {{ email }}</p>"
    '<p><a href="https://shop.example.com/orders/{{ order }}">your order</a></p></body></html>'
)


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer() as running:
        yield running


@pytest.fixture
def dkim_txt(stats_backend: StatsBackend, tenant: Tenant) -> str:
    """The DNS record of the active DKIM key of example.com, the senders' domain."""
    with stats_backend.sessions() as session, session.begin():
        _, txt = create_dkim_key(session, tenant.creds.id, "example.com", "s1", "rsa", active=True)
    return txt


def post_send(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/send", json=body)


def parsed(received: Received) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    text: str = part.get_content()
    return text


def send_view(api: httpx.Client, send_id: int) -> dict[str, Any]:
    answer = api.get(f"/send/{send_id}")
    assert answer.status_code == 200, answer.text
    view: dict[str, Any] = answer.json()
    return view


def tag_stats(tenant: Tenant, tag: str) -> dict[str, Any]:
    answer = tenant.rpc.get(f"/v1/stats/{tag}", params={"access_token": tenant.creds.access_token})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_send_reaches_the_peer_signed_tracked_and_personalised(
    stats_backend: StatsBackend, tenant: Tenant, peer: SmtpPeer, dkim_txt: str
) -> None:
    api = tenant.api
    assert api.post("/fields", json={"name": "nickname", "type": "String"}).status_code == 201
    user = {"uid": "u-7", "email": "Ann@Example.org", "fields": {"nickname": "Annie"}}
    assert api.post("/users", json=user).status_code == 201
    create_smtp_router(api, peer)
    email_id = create_email(
        api,
        subject="Welcome {{ nickname }}",
        text_html='<p>Hi {{ nickname }}, code {{ code }}</p><a href="https://example.com/go">go</a>',
    )
    answer = post_send(
        api, uid="u-7", message_id=email_id, params={"code": "X42"}, tags=["welcome", "onboarding"]
    )
    assert answer.status_code == 201, answer.text
    sent = answer.json()
    assert sent["state"] == "queued"
    assert sent["email"] == "ann@example.org"  # the profile's address
    assert (sent["post_type"], sent["message_id"]) == ("P", email_id)
    assert sent["post"] == f"P_{sent['post'].removeprefix('P_')}"
    assert sent["tags"] == ["onboarding", "welcome"]
    assert (sent["track_opens"], sent["track_clicks"]) == (True, True)
    # The stream is hidden: no campaign path knows it.
    stream_id = int(sent["post"].removeprefix("P_"))
    assert api.get(f"/campaigns/{stream_id}").status_code == 404
    assert all(c["id"] != stream_id for c in api.get("/campaigns").json())

    with running_worker(stats_backend.settings, stats_backend.sessions):
        [received] = peer.wait_for(1, timeout=30)
        wait_until(lambda: send_view(api, sent["id"])["state"] == "delivered")
    message = parsed(received)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:  # noqa: ARG001 - dkimpy's signature
        return dkim_txt.encode() if name == b"s1._domainkey.example.com." else None

    assert dkim.verify(received.data, dnsfunc=dns)
    assert received.recipients == ("ann@example.org",)
    assert message["Subject"] == "Welcome Annie"
    assert message["X-Envoi-Tags"] == "onboarding, welcome"
    html = html_of(message)
    assert "Hi Annie, code X42" in html
    tracked = _tracked(stats_backend.base_url, received.data.decode())
    assert len(tracked["o"]) == 1  # the pixel
    assert len(tracked["c"]) == 1  # the link, rewritten
    assert "https://example.com/go" not in html

    # Read back by id: its state, SMTP answer and events (queued, delivered).
    view = wait_until(
        lambda: (
            (v := send_view(api, sent["id"]))["events"]
            and [e["kind"] for e in v["events"]] == ["queued", "delivered"]
            and v
        ),
        what="the send's events",
        show=lambda: send_view(api, sent["id"]),
    )
    # As docs/api-send.md shows it.
    assert {k: view[k] for k in ("state", "attempts", "smtp_code", "smtp_status", "smtp_text")} == {
        "state": "delivered",
        "attempts": 1,
        "smtp_code": 250,
        "smtp_status": "2.0.0",
        "smtp_text": "OK queued",
    }
    assert view["events"][0]["data"] == {}
    assert view["events"][1]["data"] == {"router": "peer", "smtp_code": 250, "smtp_status": "2.0.0"}
    assert {k: view[k] for k in sent} == sent | {"state": "delivered"}


def test_tags_count_in_seed_004_and_tracking_off_counts_nothing(
    stats_backend: StatsBackend, tenant: Tenant, peer: SmtpPeer
) -> None:
    api = tenant.api
    create_smtp_router(api, peer)
    inline = {
        "from_address": "Shop <shop@example.com>",
        "subject": "Order {{ order }}",
        "text_html": RECEIPT_HTML,
    }
    tracked = post_send(
        api, email="bob@example.net", params={"order": 1}, tags=["receipt"], **inline
    )
    untracked = post_send(
        api,
        email="cyd@example.net",
        params={"order": 2},
        tags=["receipt"],
        track_opens=False,
        track_clicks=False,
        **inline,
    )
    assert tracked.status_code == untracked.status_code == 201, untracked.text
    # One inline email for both (same content), sent in two streams (the switches).
    assert tracked.json()["message_id"] == untracked.json()["message_id"]
    assert tracked.json()["post"] != untracked.json()["post"]
    assert untracked.json()["track_opens"] is False
    with running_worker(stats_backend.settings, stats_backend.sessions):
        messages = {m.recipients[0]: m for m in peer.wait_for(2, timeout=30)}
    on = parsed(messages["bob@example.net"])
    off = parsed(messages["cyd@example.net"])
    assert on["Subject"] == "Order 1"
    assert on["X-Envoi-Tags"] == off["X-Envoi-Tags"] == "receipt"
    # Inline content is the whole message: no footer links.
    assert "Unsubscribe" not in html_of(on)
    assert on["List-Unsubscribe"] is None
    # Tracking off: no pixel, the link as written.
    links = _tracked(stats_backend.base_url, messages["cyd@example.net"].data.decode())
    assert links == {}
    assert 'href="https://shop.example.com/orders/2"' in html_of(off)
    assert "Order 2 for cyd@example.net" in html_of(off)

    bob = _tracked(stats_backend.base_url, messages["bob@example.net"].data.decode())
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        assert client.get(bob["o"][0], headers={"User-Agent": IPHONE_MAIL}).status_code == 200
        clicked = client.get(bob["c"][0], headers={"User-Agent": IPHONE_MAIL})
        assert clicked.status_code == 302
        assert clicked.headers["location"] == "https://shop.example.com/orders/1"

    # A click within seconds of the delivery is a link scanner's, not a person's: it is
    # recorded (flagged) but seed 004 counts people (docs/api-tag-stats.md).
    expected = {"opens": 1, "clicks": 0, "messages": 2, "deliveries": 2}
    wait_until(
        lambda: {k: tag_stats(tenant, "receipt")[k] for k in expected} == expected,
        what="the projection",
        show=lambda: tag_stats(tenant, "receipt"),
    )
    stats = tag_stats(tenant, "receipt")
    assert stats["first"] <= stats["last"]
    assert tag_stats(tenant, "other")["messages"] == 0
    events = send_view(api, tracked.json()["id"])["events"]
    assert [e["kind"] for e in events] == ["queued", "delivered", "open", "click"]
    assert events[3]["data"]["url"] == "https://shop.example.com/orders/1"
    assert events[3]["data"]["machine"] == "scanner"
    assert [e["kind"] for e in send_view(api, untracked.json()["id"])["events"]] == [
        "queued",
        "delivered",
    ]


def test_a_hit_on_an_untracked_message_is_not_counted(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    api = tenant.api
    answer = post_send(
        api,
        email="dee@example.net",
        from_address="shop@example.com",
        text_plain="Thanks",
        tags=["quiet"],
        track_opens=False,
        track_clicks=False,
    )
    assert answer.status_code == 201, answer.text
    send_id = answer.json()["id"]
    with running_worker(stats_backend.settings, stats_backend.sessions):
        wait_until(lambda: send_view(api, send_id)["state"] == "delivered")
    wait_until(lambda: tag_stats(tenant, "quiet")["deliveries"] == 1, what="the delivery")
    first_and_last = tag_stats(tenant, "quiet")
    # A hit arrives anyway (a URL made with the server's key: nothing else can make one).
    links = MessageLinks("http://envoi.test", Signer("test-secret-key"))
    path = links.open(send_id).removeprefix("http://envoi.test")
    with httpx.Client(timeout=30) as client:
        hit = client.get(stats_backend.base_url + path, headers={"User-Agent": IPHONE_MAIL})
        assert hit.status_code == 200  # the pixel, as for any genuine token
    wait_for_projection(stats_backend)
    assert tag_stats(tenant, "quiet") == first_and_last
    kinds = [e["kind"] for e in send_view(api, send_id)["events"] or []]
    assert "open" not in kinds


def wait_for_projection(stats_backend: StatsBackend) -> None:
    """Until the projector has moved every outbox row written so far into the store."""
    with stats_backend.sessions() as session:
        last = session.scalar(select(func.max(OutboxEvent.id))) or 0
    wait_until(lambda: stats_backend.store.cursor() >= last, what="the projection")


def count_rows(stats_backend: StatsBackend, project_id: int) -> dict[str, int]:
    """What the project has of every table a send writes."""
    with stats_backend.sessions() as session:
        return {
            model.__tablename__: session.scalar(
                select(func.count()).select_from(model).where(model.project_id == project_id)
            )
            or 0
            for model in (SpoolEntry, OutboxEvent, Campaign, Email, SendRegistry, IdempotencyKey)
        }


def test_a_retried_request_sends_once(
    stats_backend: StatsBackend, tenant: Tenant, peer: SmtpPeer
) -> None:
    api = tenant.api
    create_smtp_router(api, peer)
    body = {
        "email": "fay@example.com",
        "from_address": "shop@example.com",
        "subject": "Reset",
        "text_plain": "Your code: {{ code }}",
        "params": {"code": "123"},
        "idempotency_key": "reset-fay-1",
    }
    first = post_send(api, **body)
    again = post_send(api, **body)
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    # Two at once with a new key: one send, the same answer to both.
    racing: list[httpx.Response] = []

    def race() -> None:
        racing.append(post_send(api, **(body | {"idempotency_key": "reset-fay-2"})))

    threads = [threading.Thread(target=race) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in racing) == [200, 201], [r.text for r in racing]
    assert racing[0].json() == racing[1].json()
    assert racing[0].json()["id"] != first.json()["id"]
    # The same key with another request: refused, nothing written.
    before = count_rows(stats_backend, tenant.creds.id)
    changed = post_send(api, **(body | {"params": {"code": "999"}}))
    assert changed.status_code == 422
    [error] = changed.json()["detail"]
    assert error["loc"] == ["body", "idempotency_key"]
    assert "another request" in error["msg"]
    assert count_rows(stats_backend, tenant.creds.id) == before
    assert before["spool"] == 2

    with running_worker(stats_backend.settings, stats_backend.sessions):
        peer.wait_for(2, timeout=30)
        wait_until(lambda: send_view(api, first.json()["id"])["state"] == "delivered")
    assert sorted(peer.recipients()) == ["fay@example.com", "fay@example.com"]
    assert len(peer.messages) == 2  # one per key


@pytest.mark.parametrize(
    ("body", "status", "loc"),
    [
        ({"message_id": 1}, 422, ["body", "email"]),
        ({"email": "a@example.com"}, 422, ["body", "message_id"]),
        ({"email": "not an address", "message_id": 1}, 422, ["body", "email"]),
        ({"email": "a@example.com", "from_address": "x@example.com"}, 422, ["body", "text_html"]),
        ({"email": "a@example.com", "text_plain": "hi"}, 422, ["body", "from_address"]),
        ({"email": "a@example.com", "from_address": "nobody", "text_plain": "x"}, 422, None),
        (
            {"email": "a@example.com", "from_address": "a@example.com", "text_html": "{% if %}"},
            422,
            ["body", "text_html"],
        ),
        ({"email": "a@example.com", "message_id": 1, "subject": "x"}, 422, ["body", "message_id"]),
        ({"email": "a@example.com", "message_id": 2_000_000}, 422, ["body", "message_id"]),
        ({"email": "a@example.com", "message_id": 1, "tags": ["a,b"]}, 422, ["body", "tags", 0]),
        (
            {"email": "a@example.com", "message_id": 1, "tags": [str(i) for i in range(11)]},
            422,
            ["body", "tags"],
        ),
        ({"email": "a@example.com", "message_id": 1, "colour": "red"}, 422, ["body", "colour"]),
        ({"email": "a@example.com", "message_id": 1, "category": 5}, 422, ["body", "category"]),
        ({"uid": "nobody", "message_id": 1}, 404, None),
    ],
)
def test_a_bad_request_is_refused_and_writes_nothing(
    stats_backend: StatsBackend,
    tenant: Tenant,
    body: dict[str, Any],
    status: int,
    loc: list[Any] | None,
) -> None:
    """Every request here is bad but for ids: message 1 is another project's email
    (or none); the services refuse it at the field as FastAPI's validation does."""
    before = count_rows(stats_backend, tenant.creds.id)
    answer = post_send(tenant.api, **body)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    if loc is not None:
        assert detail[0]["loc"] == loc, detail
    elif status == 404:
        assert detail == "user uid=nobody not found"
    assert count_rows(stats_backend, tenant.creds.id) == before


def test_a_quarantined_address_is_answered_with_its_state(tenant: Tenant) -> None:
    api = tenant.api
    entry = {"address": "gone@example.com", "reason": "manual"}
    assert api.post("/quarantine", json=entry).status_code == 201
    answer = post_send(
        api, email="gone@example.com", from_address="shop@example.com", text_plain="x"
    )
    assert answer.status_code == 201, answer.text
    assert (answer.json()["state"], answer.json()["reason"]) == ("quarantined", "manual")


def test_a_send_is_read_back_by_its_project_only(tenant: Tenant, make_tenant: Any) -> None:
    answer = post_send(
        tenant.api, email="gil@example.com", from_address="shop@example.com", text_plain="x"
    )
    assert answer.status_code == 201, answer.text
    send_id = answer.json()["id"]
    other = make_tenant()
    assert other.api.get(f"/send/{send_id}").status_code == 404
    assert other.api.get(f"/send/{send_id}").json() == {"detail": f"send {send_id} not found"}
    assert tenant.api.get("/send/0").status_code == 422
    view = send_view(tenant.api, send_id)
    assert view["state"] == "queued"
    assert view["post_type"] == "P"
