"""A started campaign reaches real SMTP: outcomes, retries, quarantine, the outbox.

Each test drives envoi through its HTTP API (router, email, campaign, start, pause)
and runs a delivery worker on a thread, as `envoi serve` does, against a real SMTP
peer on loopback (`envoi.testing.smtppeer`) whose answers depend on the recipient.
The worker's clock is a `WorkerClock` the test moves forward, so a retry due in a
minute happens at once.
"""

from __future__ import annotations

import email
import email.policy
import html as html_module
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type information
import httpx
import pytest

from envoi.core.tokens import Click, Signer, read_click
from envoi.delivery.services import create_dkim_key
from envoi.spool.models import SpoolEntry
from envoi.testing.smtppeer import SmtpPeer
from tests.conftest import ENVOI, ApiProject, Backend, Served, served_backend
from tests.delivery_support import (
    WorkerClock,
    campaign_state,
    create_email,
    create_smtp_router,
    data_url,
    outbox,
    running_worker,
    spool_rows,
    start_campaign,
    states,
    wait_until,
)

FINAL = {"delivered", "permfail", "blocked", "quarantined"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database of this module's own: a worker delivers every running campaign it
    finds, and the other modules' campaigns are none of its business."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"delivery-{name}")
    with served_backend(name, var_dir, bounce_domain="bounces.envoi.test") as served:
        yield served


def test_campaign_reaches_every_outcome(backend: Backend, project: ApiProject) -> None:
    client = project.client
    clock = WorkerClock()
    first_pass = {
        "ok1@example.com": "delivered",
        "ok2@example.org": "delivered",
        "unknown1@example.com": "permfail",
        "full1@example.com": "permfail",
        "spam1@example.com": "permfail",
        "grey1@example.com": "deferred",
        "busy1@example.net": "deferred",
        "drop1@example.com": "deferred",
    }
    with SmtpPeer() as peer:
        router = create_smtp_router(client, peer)
        email_id = create_email(client)
        campaign = start_campaign(client, email_id, list(first_pass), tags="spring, sale")
        post = campaign["post"]
        with running_worker(backend.settings, backend.sessions, clock):
            wait_until(
                lambda: states(backend.sessions, campaign["id"]) == first_pass,
                what="the first attempt at every row",
                show=lambda: states(backend.sessions, campaign["id"]),
            )
            # Retries wait for their backoff (a minute): the campaign is not done.
            assert campaign_state(client, campaign["id"]) == "running"
            clock.advance(minutes=2)
            wait_until(
                lambda: campaign_state(client, campaign["id"]) == "finished",
                what="the campaign to finish",
            )
        received = peer.recipients()

    # Everyone deliverable got exactly one message; the others none.
    assert sorted(received) == sorted(
        [
            "ok1@example.com",
            "ok2@example.org",
            "grey1@example.com",
            "busy1@example.net",
            "drop1@example.com",
        ]
    )
    rows = spool_rows(backend.sessions, campaign["id"])
    assert {a: r.state for a, r in rows.items()} == first_pass | {
        "grey1@example.com": "delivered",
        "busy1@example.net": "delivered",
        "drop1@example.com": "delivered",
    }
    assert {a: r.attempts for a, r in rows.items()} == {
        a: 2 if s == "deferred" else 1 for a, s in first_pass.items()
    }
    unknown = rows["unknown1@example.com"]
    assert (unknown.reason, unknown.smtp_code, unknown.smtp_status) == (
        "user_unknown",
        550,
        "5.1.1",
    )
    assert "user unknown" in (unknown.smtp_text or "")
    assert (rows["full1@example.com"].reason, rows["full1@example.com"].smtp_status) == (
        "mailbox_full",
        "5.2.2",
    )
    assert rows["spam1@example.com"].reason == "block_content"
    assert all(r.router == "peer" for r in rows.values())
    assert not any(r.uncertain for r in rows.values())

    # Only the nonexistent address is quarantined.
    quarantine = client.get("/quarantine").json()
    assert [(q["address"], q["reason"]) for q in quarantine] == [
        ("unknown1@example.com", "nonexistent")
    ]

    # The outbox tells each row's story with the statistics' dimensions.
    events = outbox(backend.sessions, campaign["id"])
    story: dict[str, list[str]] = {}
    for event in events:
        story.setdefault(event.recipient or "", []).append(event.kind)
    assert story["ok1@example.com"] == ["queued", "delivered"]
    assert story["grey1@example.com"] == ["queued", "tempfail", "delivered"]
    assert story["unknown1@example.com"] == ["queued", "permfail"]
    delivered = next(
        e for e in events if e.recipient == "busy1@example.net" and e.kind == "delivered"
    )
    assert delivered.data | {"smtp_text": "-"} == {
        "post": post,
        "post_type": "S",
        "message": f"L_{email_id}",
        "message_type": "L",
        "domain": "example.net",
        "router": router["name"],
        "tags": ["spring", "sale"],
        "language": None,  # the default variant
        "send_id": rows["busy1@example.net"].id,
        "smtp_code": 250,
        "smtp_status": "2.0.0",
        "smtp_text": "-",
        "attempt": 2,
        "uncertain": False,
    }
    tempfail = next(
        e for e in events if e.recipient == "grey1@example.com" and e.kind == "tempfail"
    )
    assert (tempfail.data["smtp_code"], tempfail.data["smtp_status"]) == (451, "4.7.1")
    permfail = next(e for e in events if e.kind == "permfail")
    assert permfail.data["bounce_class"] == permfail.data["reason"] == "user_unknown"
    # The fine-grained reason and seed 003's error code (docs/bounces.md).
    assert (permfail.data["bounce_reason"], permfail.data["error_code"]) == ("user_unknown", 11)
    assert permfail.data["hard"] is True


def test_retries_give_up_after_the_deadline(backend: Backend, project: ApiProject) -> None:
    """A destination that never answers: deferred with growing delays, then `expired`."""
    client = project.client
    clock = WorkerClock()
    with SmtpPeer() as peer:
        create_smtp_router(client, peer)
    # The peer is gone: every connection is refused.
    email_id = create_email(client)
    campaign = start_campaign(client, email_id, ["ok-but-down@example.com"])
    with running_worker(backend.settings, backend.sessions, clock):
        delays = []
        for attempt in range(1, 4):
            row = _wait_for_attempt(backend, campaign["id"], attempt)
            delays.append(round((row.not_before - clock()).total_seconds() / 60))
            clock.advance(hours=2)
        assert delays == [1, 2, 4]  # minutes: the backoff doubles
        clock.advance(days=3)
        wait_until(lambda: campaign_state(client, campaign["id"]) == "finished", what="give-up")
    row = spool_rows(backend.sessions, campaign["id"])["ok-but-down@example.com"]
    assert (row.state, row.reason, row.smtp_code) == ("permfail", "expired", 0)
    last = outbox(backend.sessions, campaign["id"])[-1]
    assert (last.kind, last.data["reason"], last.data["bounce_class"]) == (
        "permfail",
        "expired",
        "block_timeout",
    )
    assert (last.data["bounce_reason"], last.data["error_code"]) == ("expired", 51)


def _wait_for_attempt(backend: Backend, campaign_id: int, attempts: int) -> SpoolEntry:
    """The campaign's only row once it is deferred after its `attempts`-th attempt."""

    def deferred() -> SpoolEntry | None:
        rows = list(spool_rows(backend.sessions, campaign_id).values())
        if rows and rows[0].attempts >= attempts and rows[0].state == "deferred":
            return rows[0]
        return None

    found: SpoolEntry = wait_until(deferred, what=f"attempt {attempts}")
    return found


def test_pause_stops_new_transactions_within_a_second(
    backend: Backend, project: ApiProject
) -> None:
    client = project.client
    addresses = [f"ok{i}@example.com" for i in range(300)]
    with SmtpPeer() as peer:
        # 50 messages a second: six seconds of work, paused in the middle.
        create_smtp_router(client, peer, messages_per_second=50)
        email_id = create_email(client)
        campaign = start_campaign(client, email_id, addresses)
        with running_worker(backend.settings, backend.sessions):
            peer.wait_for(40, timeout=20)
            paused = client.post(f"/campaigns/{campaign['id']}/pause")
            assert paused.status_code == 200, paused.text
            paused_at = time.time()
            time.sleep(2.5)
            late = [m for m in peer.messages if m.received_at.timestamp() > paused_at + 1.0]
            assert late == []
            sent_while_paused = len(peer.messages)
            assert sent_while_paused < len(addresses)
            # Nothing is left half-claimed: the rows not sent are back in the queue.
            held = states(backend.sessions, campaign["id"])
            assert set(held.values()) <= {"delivered", "queued"}
            resumed = client.post(f"/campaigns/{campaign['id']}/resume")
            assert resumed.status_code == 200, resumed.text
            wait_until(
                lambda: campaign_state(client, campaign["id"]) == "finished",
                timeout=30,
                what="the resumed campaign to finish",
            )
        assert sorted(peer.recipients()) == sorted(addresses)  # each exactly once


def test_higher_priority_campaign_goes_first(backend: Backend, project: ApiProject) -> None:
    client = project.client
    with SmtpPeer() as peer:
        create_smtp_router(client, peer)
        email_id = create_email(client)
        low = [f"low{i}@example.com" for i in range(30)]
        high = [f"high{i}@example.com" for i in range(30)]
        start_campaign(client, email_id, low, priority=0)
        start_campaign(client, email_id, high, priority=5)
        with running_worker(backend.settings, backend.sessions, worker_connections=1):
            peer.wait_for(60, timeout=30)
        order = peer.recipients()
    assert set(order[:30]) == set(high)
    assert set(order[30:]) == set(low)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_message_is_personalised_tracked_and_signed(
    backend: Backend, project: ApiProject, algorithm: str
) -> None:
    client = project.client
    assert client.post("/fields", json={"name": "nickname", "type": "String"}).status_code == 201
    user = {
        "email": "anna@example.com",
        "uid": "u-anna",
        "language": "de",
        "fields": {"nickname": "Annie"},
    }
    assert client.post("/users", json=user).status_code == 201, "profile"
    with backend.sessions() as session, session.begin():
        _, txt = create_dkim_key(session, project.id, "example.com", "sel1", algorithm, active=True)
    with SmtpPeer() as peer:
        create_smtp_router(client, peer)
        email_id = create_email(
            client,
            subject_de="Hallo {{ nickname }}",
            text_html_de='<p>Hallo {{ nickname }} aus {{ city }}</p><a href="https://example.de/x">x</a>',
        )
        campaign = start_campaign(
            client, email_id, ["anna@example.com", "bob@example.com"], tags="news"
        )
        with running_worker(backend.settings, backend.sessions):
            wait_until(lambda: campaign_state(client, campaign["id"]) == "finished")
        messages = {m.recipients[0]: m for m in peer.messages}
    rows = spool_rows(backend.sessions, campaign["id"])
    signer = Signer("test-secret-key")

    def dns(name: bytes, timeout: int = 5) -> bytes | None:  # noqa: ARG001 - dkimpy's signature
        return txt.encode() if name == b"sel1._domainkey.example.com." else None

    for address, received in messages.items():
        send_id = rows[address].id
        # The signature holds over the very bytes the peer received.
        assert dkim.verify(received.data, dnsfunc=dns), address
        signature = received.data.split(b"\r\n", 1)[0]
        assert signature.startswith(b"DKIM-Signature:")
        assert (b"a=ed25519-sha256" if algorithm == "ed25519" else b"a=rsa-sha256") in signature
        # VERP: the envelope sender names the send.
        local, _, domain = received.mail_from.partition("@")
        assert domain == "bounces.envoi.test"
        assert signer.unsign("bounce", local.removeprefix("bounces+")) == str(send_id)

        message = email.message_from_bytes(received.data, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        token = message["X-Envoi-Send"]
        assert signer.unsign("send", token) == str(send_id)
        assert message["Message-ID"] == f"<{token}@example.com>"
        assert message["To"] == address
        assert message["X-Envoi-Tags"] == "news"
        assert message["Feedback-ID"] == f"{campaign['id']}:L:{project.id}:envoi"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https, mailto = (part.strip(" <>") for part in message["List-Unsubscribe"].split(","))
        assert signer.unsign("unsubscribe", https.removeprefix("http://envoi.test/t/u/")) == str(
            send_id
        )
        assert mailto.startswith("mailto:unsubscribe+")
        assert mailto.endswith("@bounces.envoi.test")
        assert message.get_content_type() == "multipart/alternative"
        parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
        assert list(parts) == ["text/plain", "text/html"]
        html = parts["text/html"]
        # Every link is a signed click URL naming this send and the link's index; a
        # link the template writes carries its target, signed too.
        clicks = [_read_click(signer, url) for url in re.findall(r'href="([^"]+/t/c/[^"]+)"', html)]
        assert clicks, html
        assert {click.send_id for click in clicks} == {send_id}
        assert len({click.link for click in clicks}) == len(clicks)  # one index per link
        if address == "bob@example.com":
            targets = {click.target for click in clicks}
            assert targets == {None, "https://example.com/a?c=Paris"}
        assert "http://envoi.test/t/o/" in html  # the open pixel
        assert "http://envoi.test/t/m/" in html  # the web view link
        hrefs = re.findall(r'href="([^"]+)"', html)
        assert all(h.startswith("http://envoi.test/t/") for h in hrefs), hrefs  # none untracked
    anna = email.message_from_bytes(messages["anna@example.com"].data, policy=email.policy.default)
    bob = email.message_from_bytes(messages["bob@example.com"].data, policy=email.policy.default)
    assert isinstance(anna, EmailMessage)
    assert isinstance(bob, EmailMessage)
    # Anna's profile says German: her variant, her profile field and her CSV column.
    assert anna["Subject"] == "Hallo Annie"
    anna_html = _part(anna, "text/html")
    assert "Hallo Annie aus Paris" in anna_html
    bob_html = _part(bob, "text/html")
    assert bob["Subject"] == "Hi Bob"
    assert "Hello Bob from Paris!" in bob_html
    assert 'style="color: #333333;"' in bob_html  # CSS inlined at compile time
    # A text part made from the HTML carries the tracked links too.
    assert "http://envoi.test/t/c/" in _part(anna, "text/plain")
    assert rows["anna@example.com"].language == "de"


def _read_click(signer: Signer, url: str) -> Click:
    """The verified click of a tracked URL (`/t/c/TOKEN`, `?u=TARGET` for a written link)."""
    parsed = urlsplit(html_module.unescape(url))
    assert f"{parsed.scheme}://{parsed.netloc}" == "http://envoi.test"
    target = parse_qs(parsed.query).get("u", [None])[0]
    click = read_click(signer, parsed.path.removeprefix("/t/c/"), target)
    assert click is not None, url
    return click


def _part(message: EmailMessage, kind: str) -> str:
    for part in message.iter_parts():
        if part.get_content_type() == kind:
            content: str = part.get_content()
            return content
    raise AssertionError(f"no {kind} part")


def test_served_capture_router_keeps_three_rendered_messages(served: Served) -> None:
    """`envoi serve` delivers in process; with no router configured, mail is captured."""
    env = served.env
    creds = subprocess.run(  # noqa: S603 - our own console script
        [str(ENVOI), "project", "create", "Demo"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    login = json.loads(creds.stdout)
    with httpx.Client(
        base_url=f"{served.base_url}/api/v1", auth=(login["login"], login["secret"]), timeout=30
    ) as client:
        email_id = create_email(client)
        addresses = ["ann@example.com", "bob@example.com", "cyd@example.com"]
        campaign = start_campaign(client, email_id, addresses)
        wait_until(lambda: campaign_state(client, campaign["id"]) == "finished", timeout=30)
        captured = client.get("/captured").json()
    assert sorted(m["recipient"] for m in captured) == addresses
    for message in captured:
        assert message["post"] == campaign["post"]
        assert message["mail_from"].startswith("bounces+")
        parsed = email.message_from_string(message["raw"], policy=email.policy.default)
        assert parsed["Subject"] == f"Hi {message['recipient'].split('@')[0].capitalize()}"
    listed = subprocess.run(  # noqa: S603 - our own console script
        [str(ENVOI), "captured"], env=env, capture_output=True, text=True, check=True
    )
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(line["recipient"] for line in lines) == addresses
    assert {line["subject"] for line in lines} == {"Hi Ann", "Hi Bob", "Hi Cyd"}


def test_a_row_whose_template_fails_is_a_permanent_failure(
    backend: Backend, project: ApiProject
) -> None:
    """The template divides by a CSV column: zero for one recipient, whose row fails
    (with the reason kept) while the others are sent."""
    client = project.client
    with SmtpPeer() as peer:
        create_smtp_router(client, peer)
        email_id = create_email(client, text_html="<p>{{ 12 // (n | int) }} each</p>")
        csv = "email,n\nok1@example.com,3\nok2@example.com,0\nok3@example.com,4\n"
        body = {
            "message_type": "L",
            "message_id": email_id,
            "source_type": "U",
            "source_uploaded_csv": data_url(csv),
            "start_immediately": True,
        }
        created = client.post("/campaigns", json=body)
        assert created.status_code == 201, created.text
        campaign = created.json()
        with running_worker(backend.settings, backend.sessions):
            wait_until(lambda: campaign_state(client, campaign["id"]) == "finished")
        assert sorted(peer.recipients()) == ["ok1@example.com", "ok3@example.com"]
    failed = spool_rows(backend.sessions, campaign["id"])["ok2@example.com"]
    assert (failed.state, failed.smtp_code, failed.smtp_status) == ("permfail", 554, "5.6.0")
    assert "not rendered" in (failed.smtp_text or "")
    assert "ZeroDivisionError" in (failed.smtp_text or "")


def test_pre_send_hook_lets_through_personalises_and_refuses(
    backend: Backend, project: ApiProject
) -> None:
    client = project.client
    with SmtpPeer() as peer, HookServer() as hook:
        create_smtp_router(client, peer)
        email_id = create_email(client, text_html="<p>Your coupon: {{ coupon }}</p>")
        config = {
            "hook_url_template": f"{hook.url}/check?to={{{{ email }}}}",
            "hook_pre_post": True,
        }
        campaign = start_campaign(
            client, email_id, ["ok1@example.com", "refused1@example.com"], config=config
        )
        with running_worker(backend.settings, backend.sessions):
            wait_until(lambda: campaign_state(client, campaign["id"]) == "finished")
            wait_until(lambda: len(hook.calls("post")) == 1, what="the post-send report")
        messages = peer.messages
    assert [m.recipients for m in messages] == [("ok1@example.com",)]
    assert b"Your coupon: C-ok1@example.com" in messages[0].data.replace(b"=\r\n", b"")
    rows = spool_rows(backend.sessions, campaign["id"])
    refused = rows["refused1@example.com"]
    assert (refused.state, refused.reason) == ("blocked", "external_check")
    assert rows["ok1@example.com"].params["coupon"] == "C-ok1@example.com"  # kept on the row
    pre = hook.calls("pre")
    assert sorted(call["email"] for call in pre) == ["ok1@example.com", "refused1@example.com"]
    assert {call["post"] for call in pre} == {campaign["post"]}
    (post,) = hook.calls("post")
    assert (post["email"], post["result"], post["smtp_code"]) == (
        "ok1@example.com",
        "delivered",
        250,
    )
    blocked = [e for e in outbox(backend.sessions, campaign["id"]) if e.kind == "blocked"]
    assert [(e.recipient, e.data["reason"]) for e in blocked] == [
        ("refused1@example.com", "external_check")
    ]


class HookServer:
    """A campaign hook on loopback: 403 for `refused…` addresses, else 200 with a coupon."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self._received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append(body)
                refused = body["email"].startswith("refused")
                answer = json.dumps({"params": {"coupon": f"C-{body['email']}"}}).encode()
                self.send_response(403 if refused and body["stage"] == "pre" else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def calls(self, stage: str) -> list[dict[str, Any]]:
        return [call for call in list(self._received) if call["stage"] == stage]

    def __enter__(self) -> HookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
