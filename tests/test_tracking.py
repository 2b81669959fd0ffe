"""Opens, clicks and web views of a delivered campaign, over real HTTP.

Each test sends a real campaign: created and started through the API, delivered by
a worker through the `capture` router; the tracked URLs are read from the captured
messages and requested as a recipient's mail client would. The outbox is read back
from another connection right after each answer: an answered hit is committed.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select, text, update

from envoi.core.tokens import MessageLinks, Signer
from envoi.outbox.models import OutboxEvent
from envoi.spool.models import SpoolEntry
from envoi.tracking.pages import PIXEL
from tests.campaign_support import make_profiles
from tests.conftest import ApiProject, Backend, served_backend
from tests.delivery_support import create_email, running_worker, start_campaign, states, wait_until

PUBLIC_URL = "http://envoi.test"
SECRET = "test-secret-key"  # conftest's
HTML = (
    "<html><body><p>Hello {{ first_name }} from {{ city }}!</p>"
    '<p><a href="https://example.com/b">literal</a></p>'
    '<p><a href="https://example.com/p?c={{ city }}">written</a></p>'
    '<p><a href="https://shop.example.com/?envoi={{ goal_token }}">shop</a></p>'
    "<p>Tell a friend: {{ forward_url }}</p>"
    "</body></html>"
)
_TRACKED = re.compile(re.escape(PUBLIC_URL) + r"/t/[a-z]/[^\s\"'<>]+")
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
DIMENSIONS = {"post", "post_type", "message", "message_type", "domain", "router", "tags"}
VISITOR = {"client", "device", "os", "country_code", "country_name", "region_name"}
VISITOR |= {"city_name", "ip", "user_agent", "machine"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database of this module's own: its worker delivers every running campaign."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"tracking-{name}")
    with served_backend(name, var_dir, public_url=PUBLIC_URL) as served:
        yield served


@dataclass
class Message:
    """One delivered message: its send and the tracked URLs in it (on the test server)."""

    send_id: int
    recipient: str
    html: str
    urls: list[str]
    clicks: list[str] = field(default_factory=list)

    def url(self, kind: str) -> str:
        return next(u for u in self.urls if f"/t/{kind}/" in u)

    def token(self, kind: str) -> str:
        return self.url(kind).rsplit("/", 1)[1]


@dataclass
class Campaign:
    id: int
    email_id: int
    messages: dict[str, Message]


def deliver(
    backend: Backend,
    project: ApiProject,
    addresses: list[str],
    profiles: tuple[str, ...] = (),
) -> Campaign:
    """Send a campaign to `addresses` (those in `profiles` get a profile first) and
    read back the delivered messages."""
    if profiles:
        make_profiles(backend, project, email=list(profiles))
    email_id = create_email(project.client, text_html=HTML, text_plain=None)
    campaign = start_campaign(project.client, email_id, addresses, tags="spring, sale")
    with running_worker(backend.settings, backend.sessions):
        wait_until(
            lambda: (
                set(states(backend.sessions, campaign["id"]).values()) == {"delivered"}
                and len(states(backend.sessions, campaign["id"])) == len(addresses)
            ),
            what="delivery",
        )
    captured = project.client.get("/captured").json()
    messages = {}
    for item in captured:
        parsed = email.message_from_string(item["raw"], policy=email.policy.default)
        part = parsed.get_body(("html",))
        assert isinstance(part, email.message.EmailMessage)
        html = part.get_content()
        urls = [u.replace(PUBLIC_URL, backend.base_url) for u in _TRACKED.findall(html)]
        message = Message(item["spool_id"], item["recipient"], html, urls)
        message.clicks = [u for u in urls if "/t/c/" in u]
        messages[item["recipient"]] = message
    return Campaign(campaign["id"], email_id, messages)


def events(backend: Backend, send_id: int, kind: str | None = None) -> list[OutboxEvent]:
    """The send's tracking events, read on a connection of their own."""
    with backend.sessions() as session:
        query = select(OutboxEvent).order_by(OutboxEvent.id)
        if kind is not None:
            query = query.where(OutboxEvent.kind == kind)
        return [e for e in session.scalars(query) if (e.data or {}).get("send_id") == send_id]


def tracking_events(backend: Backend, send_id: int) -> list[OutboxEvent]:
    kinds = {"open", "click", "mirror", "unsubscribe", "forward", "goal"}
    return [e for e in events(backend, send_id) if e.kind in kinds]


def delivered_long_ago(backend: Backend, send_id: int) -> None:
    """Put the delivery a minute back: a click seconds after delivery is a scanner's."""
    with backend.sessions() as session, session.begin():
        session.execute(
            update(SpoolEntry)
            .where(SpoolEntry.id == send_id)
            .values(updated_at=datetime.now(UTC) - timedelta(minutes=1))
        )


@pytest.fixture
def campaign(backend: Backend, project: ApiProject) -> Campaign:
    sent = deliver(backend, project, ["ann@example.com", "bob@example.org"])
    for message in sent.messages.values():
        delivered_long_ago(backend, message.send_id)
    return sent


def links(backend: Backend) -> MessageLinks:
    return MessageLinks(backend.base_url, Signer(SECRET))


def test_open_pixel_is_recorded_with_its_dimensions_before_the_answer(
    backend: Backend, campaign: Campaign, anonymous: httpx.Client
) -> None:
    ann = campaign.messages["ann@example.com"]
    headers = {"User-Agent": BROWSER, "X-Forwarded-For": "81.2.69.160"}
    response = anonymous.get(ann.url("o"), headers=headers)
    assert response.status_code == 200
    assert response.content == PIXEL
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == "no-store, no-cache, must-revalidate, private"
    # Durable before the answer: another connection sees the event at once.
    [opened] = events(backend, ann.send_id, "open")
    assert opened.campaign_id == campaign.id
    assert opened.email_id == campaign.email_id
    assert opened.recipient == "ann@example.com"
    assert opened.project_id is not None
    data = opened.data
    assert data["post"] == f"S_{campaign.id}"
    assert data["message"] == f"L_{campaign.email_id}"
    assert data["tags"] == ["spring", "sale"]
    assert data["router"] == "capture"
    assert data["domain"] == "example.com"
    assert data["send_id"] == ann.send_id
    assert data["ip"] == "81.2.69.160"  # from the trusted proxy's X-Forwarded-For
    assert data["user_agent"] == BROWSER
    assert data["machine"] is None
    assert data["client"] == "Chrome"
    assert set(data) >= DIMENSIONS | VISITOR
    # HEAD fetches no image: answered, not an open.
    assert anonymous.head(ann.url("o")).status_code == 200
    assert len(events(backend, ann.send_id, "open")) == 1


def test_click_redirects_to_the_link_and_records_it(
    backend: Backend, campaign: Campaign, anonymous: httpx.Client
) -> None:
    bob = campaign.messages["bob@example.org"]
    literal, written, shop = bob.clicks[:3]
    answer = anonymous.get(literal, headers={"User-Agent": BROWSER})
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://example.com/b"
    assert answer.headers["cache-control"].startswith("no-store")
    answer = anonymous.get(written, headers={"User-Agent": BROWSER})
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://example.com/p?c=Paris"
    goal_token = parse_qs(urlsplit(parse_qs(urlsplit(shop).query)["u"][0]).query)["envoi"][0]
    assert goal_token == links(backend).goal_token(bob.send_id)
    clicks = events(backend, bob.send_id, "click")
    assert [(c.data["link"], c.data["url"]) for c in clicks] == [
        (0, "https://example.com/b"),
        (1, "https://example.com/p?c=Paris"),
    ]
    assert [c.data["machine"] for c in clicks] == [None, None]
    assert clicks[0].data["post"] == f"S_{campaign.id}"
    # A HEAD (a link checker) is answered and recorded, flagged.
    answer = anonymous.head(literal, headers={"User-Agent": BROWSER})
    assert answer.status_code == 302
    assert events(backend, bob.send_id, "click")[-1].data["machine"] == "head"


def test_click_seconds_after_delivery_is_flagged_as_a_scanner(
    backend: Backend, project: ApiProject, anonymous: httpx.Client
) -> None:
    sent = deliver(backend, project, ["cat@example.com"])
    cat = sent.messages["cat@example.com"]
    assert anonymous.get(cat.clicks[0], headers={"User-Agent": BROWSER}).status_code == 302
    [click] = events(backend, cat.send_id, "click")
    assert click.data["machine"] == "scanner"


def test_web_view_shows_the_recipients_message(
    backend: Backend, campaign: Campaign, anonymous: httpx.Client
) -> None:
    ann = campaign.messages["ann@example.com"]
    answer = anonymous.get(ann.url("m"), headers={"User-Agent": BROWSER})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    page = answer.text
    assert "Hello Ann from Paris!" in page
    # The same tracked links as the message, but no open pixel.
    for url in ann.clicks:
        assert url.replace(backend.base_url, PUBLIC_URL) in page
    assert "/t/o/" not in page
    [mirror] = events(backend, ann.send_id, "mirror")
    assert mirror.data["user_agent"] == BROWSER
    assert events(backend, ann.send_id, "open") == []


def test_forged_tokens_get_404_and_record_nothing(
    backend: Backend, campaign: Campaign, anonymous: httpx.Client
) -> None:
    ann = campaign.messages["ann@example.com"]
    literal, written = ann.clicks[:2]

    def altered(url: str) -> str:
        head, mac = url.rsplit(".", 1)
        return f"{head}.{'0' if mac[0] != '0' else '1'}{mac[1:]}"

    def with_purpose(url: str, kind: str) -> str:
        return url.replace("/t/o/", f"/t/{kind}/")

    token_path, query = written.split("?", 1)
    refused = [
        altered(literal),
        altered(written.split("?")[0]) + "?" + query,
        f"{token_path}?u=https%3A//evil.example/",  # the target changed
        f"{literal}?u=https%3A//evil.example/",  # a target added to a literal link
        f"{written}&u=https%3A//evil.example/",  # two targets
        token_path,  # the target taken away
        with_purpose(ann.url("o"), "c"),  # an open token used for a click
        with_purpose(ann.url("o"), "m"),
        with_purpose(ann.url("o"), "u"),
        with_purpose(ann.url("o"), "f"),
        altered(ann.url("m")),
        altered(ann.url("u")),
        f"{backend.base_url}/t/c/{ann.send_id}-0",  # no MAC at all
        f"{backend.base_url}/t/x/{ann.token('o')}",  # no such endpoint
    ]
    for url in refused:
        answer = anonymous.get(url)
        assert answer.status_code == 404, url
        assert "location" not in answer.headers
    assert anonymous.post(altered(ann.url("u")), data={"unsubscribe": "yes"}).status_code == 404
    goal = anonymous.post(f"{backend.base_url}/t/g/{ann.token('o')}", json={"goal": "buy"})
    assert goal.status_code == 404
    assert goal.json() == {"detail": "no such goal token"}
    # A forged open still gets its pixel (nothing to learn from an image that fails).
    forged_open = anonymous.get(altered(ann.url("o")))
    assert forged_open.status_code == 200
    assert forged_open.content == PIXEL
    assert tracking_events(backend, ann.send_id) == []
    metrics = anonymous.get("/metrics").text
    assert re.search(r'envoi_tracking_forged_total\{kind="click"\} [1-9]', metrics)


def test_unknown_send_rules(backend: Backend, anonymous: httpx.Client) -> None:
    """A genuine token whose spool row is gone: nothing is recorded; a written link
    still leads to its (signed) target, a literal one cannot."""
    gone = 987_654_321
    made = links(backend)
    opened = anonymous.get(made.open(gone))
    assert (opened.status_code, opened.content) == (200, PIXEL)
    assert anonymous.get(made.click(gone, 0)).status_code == 404
    written = anonymous.get(made.click(gone, 3, "https://example.com/x?y=1&z=2"))
    assert written.status_code == 302
    assert written.headers["location"] == "https://example.com/x?y=1&z=2"
    assert anonymous.get(made.mirror(gone)).status_code == 404
    assert anonymous.get(made.unsubscribe(gone)).status_code == 404
    goal = anonymous.post(f"/t/g/{made.goal_token(gone)}", json={"goal": "buy"})
    assert goal.status_code == 404
    assert events(backend, gone) == []


def test_a_target_cannot_break_the_location_header(
    backend: Backend, anonymous: httpx.Client
) -> None:
    made = links(backend)
    answer = anonymous.get(made.click(987_654_321, 0, "https://example.com/a b\u00e9"))
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://example.com/a%20b%C3%A9"


def test_concurrent_hits_are_group_committed(
    backend: Backend, campaign: Campaign, anonymous: httpx.Client
) -> None:
    ann = campaign.messages["ann@example.com"]
    before = _batches(anonymous)

    async def hit_all() -> list[int]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50), timeout=30) as client:
            answers = await asyncio.gather(*(client.get(ann.url("o")) for _ in range(200)))
            return [a.status_code for a in answers]

    assert asyncio.run(hit_all()) == [200] * 200
    assert len(events(backend, ann.send_id, "open")) == 200
    batches = _batches(anonymous) - before
    assert 0 < batches < 200  # hits shared transactions


def _batches(client: httpx.Client) -> float:
    found = re.search(r"^envoi_tracking_batch_hits_count (\S+)$", client.get("/metrics").text, re.M)
    return float(found[1]) if found else 0.0


def test_the_api_is_still_served_beside_tracking(anonymous: httpx.Client) -> None:
    assert anonymous.get("/api/v1/health").json()["status"] == "ok"
    assert anonymous.post("/t/o/1.00000000000000000000").status_code == 405
    assert anonymous.get("/t/o").status_code == 404
    assert anonymous.get("/t/").status_code == 404


def test_answers_carry_their_headers(backend: Backend, anonymous: httpx.Client) -> None:
    page = anonymous.get(links(backend).mirror(987_654_321))
    assert page.headers["x-robots-tag"] == "noindex, nofollow"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def _data(event: OutboxEvent) -> dict[str, Any]:
    return event.data


def test_a_hit_the_database_does_not_take_is_answered_503(tmp_path: Path) -> None:
    """Never acknowledged unless committed: with the spool unreadable, every hit's
    batch fails, then each hit alone: 503, nothing recorded; the API still answers."""
    with served_backend("sqlite", tmp_path, public_url=PUBLIC_URL) as broken:
        with broken.sessions() as session, session.begin():
            session.execute(text("ALTER TABLE spool RENAME TO spool_gone"))
        made = MessageLinks(broken.base_url, Signer(SECRET))

        async def hit_all() -> list[int]:
            async with httpx.AsyncClient(base_url=broken.base_url, timeout=30) as client:
                urls = [made.open(n) for n in range(1, 6)] + [made.click(9, 0, "https://e.x/")]
                answers = await asyncio.gather(*(client.get(url) for url in urls))
                return [answer.status_code for answer in answers]

        assert asyncio.run(hit_all()) == [503] * 6
        with httpx.Client(base_url=broken.base_url) as client:
            failed = client.get(made.open(1))
            assert failed.headers["retry-after"] == "1"
            assert client.get("/api/v1/health").status_code == 200
            metrics = client.get("/metrics").text
        assert re.search(r'envoi_tracking_hits_total\{kind="open",result="failed"\} 6', metrics)
        with broken.sessions() as session:
            assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
