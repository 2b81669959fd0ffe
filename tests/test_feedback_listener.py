"""The inbound SMTP listener over a real SMTP session, on SQLite and on PostgreSQL.

A module fixture delivers three campaigns for real (a worker, a real SMTP peer on
loopback): two marketing campaigns to the same audience and one transactional
(`is_urgent`) email. Each test then plays a receiving server or a mailbox provider:
it sends the listener a report about one of those sends, built from the message the
peer received (its VERP return path, its returned headers), over smtplib, and reads
what envoi recorded: outbox events, quarantine, subscriptions, metrics.
"""

from __future__ import annotations

import email
import email.policy
import os
import secrets
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from envoi.core.tokens import MessageLinks, Signer
from envoi.db.session import make_engine, make_sessionmaker, transaction
from envoi.emails.models import Email
from envoi.inbound.listener import FeedbackListener
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Profile, Subscription
from envoi.projects.services import create_project
from envoi.spool.models import SpoolEntry
from envoi.testing.smtppeer import SmtpPeer
from tests.conftest import POSTGRES_URL, Backend, served_backend
from tests.delivery_support import (
    WorkerClock,
    campaign_state,
    create_email,
    create_smtp_router,
    running_worker,
    start_campaign,
    wait_until,
)

BOUNCE_DOMAIN = "bounces.envoi.test"
# Who gets what in the tests below (one address per test, so tests stay independent).
# `fullbox` is refused by the peer (552 5.2.2) in both campaigns: two in-band soft bounces.
WITH_PROFILE = ["ann@example.com", "cyd@example.com", "eve@example.com"]
AUDIENCE = [
    *WITH_PROFILE,
    "gone@example.com",
    "late@example.com",
    "noprofile@example.com",
    "over@example.com",
    "window@example.com",
    "twice@example.com",
    "auto@example.com",
    "garbage@example.com",
    "storm@example.com",
    "fullbox@example.com",
    "byid@example.com",
]
URGENT = "urgent@example.com"
SOFT_BOUNCE_LIMIT = 2
MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sent:
    """One message the peer received: what a real receiving server would hold."""

    send_id: int
    mail_from: str  # the VERP return path
    headers: str  # the message's header block, as a DSN returns it
    token: str  # X-Envoi-Send
    message_id: str
    mailto: str  # the List-Unsubscribe mailto address


@dataclass
class World:
    backend: Backend
    client: httpx.Client
    project_id: int
    category_id: int
    campaigns: list[int]  # the two marketing campaigns
    urgent_campaign: int
    sent: dict[tuple[int, str], Sent]  # (campaign, address) -> message
    listener: FeedbackListener
    clock: WorkerClock

    def message(self, address: str, campaign: int = 0) -> Sent:
        return self.sent[(self.campaigns[campaign], address)]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """A database of this module's own: its worker delivers every running campaign."""
    name: str = request.param
    var_dir = tmp_path_factory.mktemp(f"feedback-{name}")
    with served_backend(name, var_dir, bounce_domain=BOUNCE_DOMAIN) as served:
        yield served


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _read(raw: bytes) -> tuple[str, str, str, str]:
    """(header block, X-Envoi-Send, Message-ID, mailto) of a sent message."""
    header_block = raw.split(b"\r\n\r\n", 1)[0].decode()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    unsubscribe = str(message["List-Unsubscribe"])
    mailto = unsubscribe.split("<mailto:", 1)[1].split(">", 1)[0]
    return header_block, str(message["X-Envoi-Send"]), str(message["Message-ID"]), mailto


@pytest.fixture(scope="module")
def world(backend: Backend) -> Iterator[World]:
    with transaction(backend.sessions) as session:
        creds = create_project(session, "Feedback", login=f"f-{secrets.token_hex(6)}")
    client = httpx.Client(
        base_url=f"{backend.base_url}/api/v1", auth=(creds.login, creds.secret), timeout=60
    )
    for address in WITH_PROFILE:  # profiles, so that complaints can be handled
        assert client.post("/users", json={"email": address}).status_code in {200, 201}
    with SmtpPeer() as peer:
        create_smtp_router(client, peer)
        news = create_email(client)
        receipt = create_email(client, is_urgent=True)
        campaigns = [start_campaign(client, news, AUDIENCE)["id"] for _ in range(2)]
        urgent = start_campaign(client, receipt, [URGENT])["id"]
        with running_worker(backend.settings, backend.sessions):
            wait_until(
                lambda: all(campaign_state(client, c) == "finished" for c in [*campaigns, urgent]),
                what="the campaigns to finish",
            )
        received = peer.messages
    with backend.sessions() as session:
        rows = session.scalars(select(SpoolEntry).where(SpoolEntry.project_id == creds.id))
        sends = {row.id: (row.campaign_id or 0, row.recipient or "") for row in rows}
        category_id = session.scalar(select(Email.category_id).where(Email.id == news))
    assert category_id is not None
    sent: dict[tuple[int, str], Sent] = {}
    for message in received:
        headers, token, message_id, mailto = _read(message.data)
        send_id = int(token.split(".")[0])
        sent[sends[send_id]] = Sent(send_id, message.mail_from, headers, token, message_id, mailto)
    settings = backend.settings.model_copy(
        update={
            "smtp_listen": f"127.0.0.1:{_free_port()}",
            "soft_bounce_limit": SOFT_BOUNCE_LIMIT,
            "soft_bounce_days": 7,
            "inbound_max_message_bytes": MAX_BYTES,
        }
    )
    clock = WorkerClock()
    with FeedbackListener(settings, backend.sessions, clock) as listener:
        yield World(
            backend, client, creds.id, category_id, campaigns, urgent, sent, listener, clock
        )
    client.close()


# --- reports, as receiving servers and providers write them ------------------------------


def dsn(
    to: str,
    recipient: str,
    *,
    status: str,
    diagnostic: str,
    returned: str,
    action: str = "failed",
    message_id: str | None = None,
) -> bytes:
    """An RFC 3464 delivery status notification returning the original's headers."""
    message_id = message_id or f"<{secrets.token_hex(8)}@mx.example.com>"
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        f"To: {to}\r\n"
        f"Message-ID: {message_id}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        "Your message could not be delivered to one or more recipients.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        "Remote-MTA: dns; mailbox.example.com\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{returned}\r\n"
        "\r\n--B--\r\n"
    ).encode()


def unknown_user(sent: Sent, recipient: str, **extra: Any) -> bytes:
    return dsn(
        sent.mail_from,
        recipient,
        status="5.1.1",
        diagnostic=f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown",
        returned=sent.headers,
        **extra,
    )


def mailbox_full(sent: Sent, recipient: str, **extra: Any) -> bytes:
    return dsn(
        sent.mail_from,
        recipient,
        status="4.2.2",
        diagnostic=f"452 4.2.2 <{recipient}>: Mailbox full, quota exceeded",
        returned=sent.headers,
        **extra,
    )


def arf(to: str, recipient: str, returned: str, feedback_type: str = "abuse") -> bytes:
    """An RFC 5965 feedback report: `recipient` marked the message as spam."""
    return (
        "From: Feedback Loop <fbl@provider.example>\r\n"
        f"To: {to}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@provider.example>\r\n"
        "Subject: complaint about message\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n'
        "\r\n--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "\r\n--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: {feedback_type}\r\nUser-Agent: ProviderFBL/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: <{recipient}>\r\nReporting-MTA: dns; mx.provider.example\r\n"
        "\r\n--F\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{returned}\r\n"
        "\r\n--F--\r\n"
    ).encode()


def out_of_office(sent: Sent) -> bytes:
    return (
        "From: Auto <auto@example.com>\r\n"
        f"To: {sent.mail_from}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.com>\r\n"
        "Subject: Out of office: back on Monday\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "\r\nI am away until Monday and will answer your message then.\r\n"
    ).encode()


# --- an SMTP client ---------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    rcpt: tuple[int, bytes]
    data: tuple[int, bytes] | None  # None when the recipient was refused


def deliver(world: World, recipient: str, raw: bytes) -> Answer:
    """One SMTP transaction to the listener, as a receiving server sends a DSN (null
    sender); the answers to RCPT and to the data."""
    with smtplib.SMTP(world.listener.host, world.listener.port, timeout=30) as smtp:
        smtp.ehlo("mx.example.com")
        smtp.mail("")
        rcpt = smtp.rcpt(recipient)
        if rcpt[0] != 250:
            return Answer(rcpt, None)
        return Answer(rcpt, smtp.data(raw))


def accepted(world: World, recipient: str, raw: bytes) -> None:
    answer = deliver(world, recipient, raw)
    assert answer.rcpt[0] == 250, answer
    assert answer.data is not None
    assert answer.data[0] == 250, answer


def events(world: World, address: str, kind: str | None = None) -> list[OutboxEvent]:
    with world.backend.sessions() as session:
        query = select(OutboxEvent).where(
            OutboxEvent.project_id == world.project_id, OutboxEvent.recipient == address
        )
        if kind is not None:
            query = query.where(OutboxEvent.kind == kind)
        return list(session.scalars(query.order_by(OutboxEvent.id)))


def feedback_events(world: World, address: str) -> list[str]:
    """The kinds of the events reports wrote about `address` (not delivery's own)."""
    return [
        event.kind
        for event in events(world, address)
        if event.kind in {"bounce", "complaint", "unsubscribe"}
        or (event.kind == "tempfail" and event.data.get("in_band") is False)
    ]


def quarantine(world: World) -> dict[str, str]:
    listed = world.client.get("/quarantine", params={"limit": 1000}).json()
    return {entry["address"]: entry["reason"] for entry in listed}


def metric(world: World, name: str, **labels: str) -> float:
    value = world.listener.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def dimensions_of(world: World, address: str, sent: Sent) -> dict[str, Any]:
    """The dimensions delivery's own `delivered` event of that send carries."""
    [delivered] = [
        event
        for event in events(world, address, "delivered")
        if event.data["send_id"] == sent.send_id
    ]
    keys = ("post", "post_type", "message", "message_type", "domain", "router", "tags")
    return {key: delivered.data[key] for key in (*keys, "language", "send_id")}


# --- the tests --------------------------------------------------------------------------


def test_hard_bounce_is_recorded_with_its_send_and_quarantines_the_address(world: World) -> None:
    sent = world.message("gone@example.com")
    before = metric(world, "envoi_inbound_reports_total", kind="bounce", outcome="recorded")
    accepted(world, sent.mail_from, unknown_user(sent, "gone@example.com"))

    [bounce] = events(world, "gone@example.com", "bounce")
    assert bounce.campaign_id == world.campaigns[0]
    dimensions = dimensions_of(world, "gone@example.com", sent)
    assert {key: bounce.data[key] for key in dimensions} == dimensions
    assert (dimensions["router"], dimensions["post"]) == ("peer", f"S_{world.campaigns[0]}")
    assert {
        key: bounce.data[key]
        for key in (
            "bounce_class",
            "bounce_reason",
            "hard",
            "smtp_code",
            "smtp_status",
            "reporting_mta",
            "in_band",
        )
    } == {
        "bounce_class": "user_unknown",
        "bounce_reason": "user_unknown",
        "hard": True,
        "smtp_code": 550,
        "smtp_status": "5.1.1",
        "reporting_mta": "mx.example.com",
        "in_band": False,
    }
    assert bounce.data["error_code"] == 11  # seed 003: address does not exist
    assert "User unknown" in bounce.data["smtp_text"]
    assert quarantine(world)["gone@example.com"] == "nonexistent"
    after = metric(world, "envoi_inbound_reports_total", kind="bounce", outcome="recorded")
    assert after == before + 1


def test_delayed_dsn_is_a_tempfail_not_a_bounce(world: World) -> None:
    sent = world.message("late@example.com")
    report = dsn(
        sent.mail_from,
        "late@example.com",
        action="delayed",
        status="4.4.1",
        diagnostic="421 4.4.1 Connection timed out, will keep trying",
        returned=sent.headers,
    )
    accepted(world, sent.mail_from, report)
    assert feedback_events(world, "late@example.com") == ["tempfail"]
    [tempfail] = events(world, "late@example.com", "tempfail")
    assert tempfail.data["in_band"] is False
    assert tempfail.data["smtp_status"] == "4.4.1"
    assert tempfail.data["send_id"] == sent.send_id
    assert "late@example.com" not in quarantine(world)


def test_complaint_to_the_feedback_address_unsubscribes_and_quarantines(world: World) -> None:
    sent = world.message("ann@example.com")
    accepted(
        world,
        f"feedback@{BOUNCE_DOMAIN}",
        arf(f"feedback@{BOUNCE_DOMAIN}", "ann@example.com", sent.headers),
    )
    [complaint] = events(world, "ann@example.com", "complaint")
    assert complaint.data["handled"] is True
    assert complaint.data["feedback_type"] == "abuse"
    assert complaint.data["send_id"] == sent.send_id
    assert complaint.data["post"] == f"S_{world.campaigns[0]}"
    assert quarantine(world)["ann@example.com"] == "spam"
    assert _subscribed(world, "ann@example.com") is False


def test_complaint_about_a_send_without_profile_is_unhandled_but_quarantined(
    world: World,
) -> None:
    sent = world.message("noprofile@example.com")
    accepted(
        world,
        "feedback@any.example",
        arf("feedback@any.example", "noprofile@example.com", sent.headers),
    )
    [complaint] = events(world, "noprofile@example.com", "complaint")
    assert complaint.data["handled"] is False
    assert complaint.profile_id is None
    assert quarantine(world)["noprofile@example.com"] == "spam"


def test_complaint_found_by_message_id_alone(world: World) -> None:
    """A provider that strips custom headers still returns the Message-ID."""
    sent = world.message("eve@example.com")
    returned = f"From: news@example.com\r\nTo: eve@example.com\r\nMessage-ID: {sent.message_id}"
    accepted(
        world,
        f"feedback@{BOUNCE_DOMAIN}",
        arf(f"feedback@{BOUNCE_DOMAIN}", "eve@example.com", returned),
    )
    [complaint] = events(world, "eve@example.com", "complaint")
    assert complaint.data["send_id"] == sent.send_id
    assert complaint.data["handled"] is True


def test_complaint_naming_no_send_is_accepted_and_writes_nothing(world: World) -> None:
    before = metric(world, "envoi_inbound_reports_total", kind="complaint", outcome="unmatched")
    forged = world.message("byid@example.com").token[:-4] + "0000"
    returned = f"From: news@example.com\r\nTo: byid@example.com\r\nX-Envoi-Send: {forged}"
    accepted(
        world,
        f"feedback@{BOUNCE_DOMAIN}",
        arf(f"feedback@{BOUNCE_DOMAIN}", "byid@example.com", returned),
    )
    assert events(world, "byid@example.com", "complaint") == []
    assert "byid@example.com" not in quarantine(world)
    after = metric(world, "envoi_inbound_reports_total", kind="complaint", outcome="unmatched")
    assert after == before + 1


def test_mailto_unsubscribe(world: World) -> None:
    sent = world.message("cyd@example.com")
    assert sent.mailto.startswith("unsubscribe+")
    assert sent.mailto.endswith(f"@{BOUNCE_DOMAIN}")
    request = (
        f"From: cyd@example.com\r\nTo: {sent.mailto}\r\nSubject: unsubscribe\r\n\r\n"
    ).encode()
    with smtplib.SMTP(world.listener.host, world.listener.port, timeout=30) as smtp:
        smtp.sendmail("cyd@example.com", [sent.mailto], request)
    [unsubscribe] = events(world, "cyd@example.com", "unsubscribe")
    assert unsubscribe.data["method"] == "mailto"
    assert unsubscribe.data["send_id"] == sent.send_id
    assert _subscribed(world, "cyd@example.com") is False


def test_forged_tokens_and_unknown_recipients_are_refused_at_rcpt(world: World) -> None:
    sent = world.message("byid@example.com")
    token = sent.mail_from.split("+", 1)[1].split("@", 1)[0]
    send_id, mac = token.split(".")
    other = str(int(send_id) + 1)
    refused = [
        f"bounces+{send_id}.{'0' * len(mac)}@{BOUNCE_DOMAIN}",  # a wrong MAC
        f"bounces+{other}.{mac}@{BOUNCE_DOMAIN}",  # the MAC of another send
        f"bounces+{send_id}@{BOUNCE_DOMAIN}",  # no MAC
        f"unsubscribe+{token}@{BOUNCE_DOMAIN}",  # a bounce token is no unsubscribe token
        f"postmaster@{BOUNCE_DOMAIN}",
        f"news@{BOUNCE_DOMAIN}",
        "feedback-loop@example.com",
    ]
    before = metric(world, "envoi_inbound_refused_recipients_total", reason="forged")
    for recipient in refused:
        answer = deliver(world, recipient, unknown_user(sent, "byid@example.com"))
        assert answer.rcpt[0] == 550, (recipient, answer)
        assert answer.rcpt[1].startswith(b"5.1.1"), answer
    assert events(world, "byid@example.com", "bounce") == []
    after = metric(world, "envoi_inbound_refused_recipients_total", reason="forged")
    assert after == before + 4
    # The genuine address at any domain is taken (a project may use its own domain).
    elsewhere = sent.mail_from.replace(BOUNCE_DOMAIN, "mail.customer.example")
    assert deliver(world, elsewhere, b"Subject: hello\r\n\r\nhi\r\n").data == (250, b"2.0.0 OK")


def test_oversize_message_is_refused_with_552(world: World) -> None:
    sent = world.message("byid@example.com")
    padding = ("x" * 998 + "\r\n") * (MAX_BYTES // 1000 + 10)
    report = unknown_user(sent, "byid@example.com") + padding.encode()
    answer = deliver(world, sent.mail_from, report)
    assert answer.data is not None
    assert answer.data[0] == 552, answer
    assert events(world, "byid@example.com", "bounce") == []


def test_garbage_and_autoreplies_are_accepted_and_record_nothing(world: World) -> None:
    garbage = world.message("garbage@example.com")
    noise = (os.urandom(60).replace(b"\r", b"").replace(b"\n", b"") for _ in range(50))
    accepted(world, garbage.mail_from, b"\r\n".join(noise))
    accepted(world, garbage.mail_from, b"no headers, no body, nothing a parser knows")
    auto = world.message("auto@example.com")
    before = metric(world, "envoi_inbound_reports_total", kind="autoreply", outcome="ignored")
    accepted(world, auto.mail_from, out_of_office(auto))
    after = metric(world, "envoi_inbound_reports_total", kind="autoreply", outcome="ignored")
    assert after == before + 1
    assert feedback_events(world, "garbage@example.com") == []
    assert feedback_events(world, "auto@example.com") == []


def test_the_same_dsn_delivered_twice_counts_once(world: World) -> None:
    """An SMTP client that lost our 250 sends the message again: one event, and one
    soft bounce (two would reach the limit and quarantine the address)."""
    sent = world.message("twice@example.com")
    report = mailbox_full(sent, "twice@example.com", action="failed")
    before = metric(world, "envoi_inbound_reports_total", kind="bounce", outcome="duplicate")
    accepted(world, sent.mail_from, report)
    accepted(world, sent.mail_from, report)
    assert feedback_events(world, "twice@example.com") == ["bounce"]
    [bounce] = events(world, "twice@example.com", "bounce")
    assert (bounce.data["bounce_reason"], bounce.data["hard"]) == ("mailbox_full", False)
    assert "twice@example.com" not in quarantine(world)
    after = metric(world, "envoi_inbound_reports_total", kind="bounce", outcome="duplicate")
    assert after == before + 1


def test_soft_bounces_within_the_window_quarantine_the_address_as_inactive(
    world: World,
) -> None:
    first, second = world.message("over@example.com", 0), world.message("over@example.com", 1)
    accepted(world, first.mail_from, mailbox_full(first, "over@example.com"))
    assert "over@example.com" not in quarantine(world)
    accepted(world, second.mail_from, mailbox_full(second, "over@example.com"))
    assert quarantine(world)["over@example.com"] == "inactive"
    assert len(events(world, "over@example.com", "bounce")) == 2


def test_soft_bounces_further_apart_than_the_window_do_not(world: World) -> None:
    first, second = world.message("window@example.com", 0), world.message("window@example.com", 1)
    accepted(world, first.mail_from, mailbox_full(first, "window@example.com"))
    world.clock.advance(days=8)
    try:
        accepted(world, second.mail_from, mailbox_full(second, "window@example.com"))
    finally:
        world.clock.advance(days=-8)
    assert "window@example.com" not in quarantine(world)


def test_delivery_s_own_soft_bounces_count_too(world: World) -> None:
    """`fullbox` was refused at RCPT (552 5.2.2) in both campaigns: two in-band soft
    bounces. A relay's report of one more reaches the limit."""
    with world.backend.sessions() as session:
        [send_id, *_] = session.scalars(
            select(SpoolEntry.id).where(
                SpoolEntry.recipient == "fullbox@example.com",
                SpoolEntry.project_id == world.project_id,
                SpoolEntry.state == "permfail",
                SpoolEntry.reason == "mailbox_full",
            )
        ).all()
    links = MessageLinks("http://envoi.test", Signer(world.listener.settings.resolved_secret_key()))
    mail_from = links.return_path(send_id, BOUNCE_DOMAIN)
    template = world.message("byid@example.com")
    returned = template.headers.replace(template.token, links.send_header(send_id))
    report = dsn(
        mail_from,
        "fullbox@example.com",
        status="4.2.2",
        diagnostic="452 4.2.2 Mailbox full",
        returned=returned,
    )
    accepted(world, mail_from, report)
    assert quarantine(world)["fullbox@example.com"] == "inactive"


def test_transactional_email_bounces_never_quarantine(world: World) -> None:
    sent = world.sent[(world.urgent_campaign, URGENT)]
    accepted(world, sent.mail_from, unknown_user(sent, URGENT))
    [bounce] = events(world, URGENT, "bounce")
    assert bounce.data["hard"] is True
    assert URGENT not in quarantine(world)


def test_a_busy_database_does_not_stall_other_sessions(world: World) -> None:
    """While one message waits for the database (a test transaction holds the write
    lock), another session is answered at once, and the first gets its 250 once the
    lock is released."""
    sent = world.message("storm@example.com")
    answers: list[Answer] = []
    with world.backend.sessions() as blocker, blocker.begin():
        _hold_write_lock(blocker)
        sender = threading.Thread(
            target=lambda: answers.append(
                deliver(world, sent.mail_from, unknown_user(sent, "storm@example.com"))
            )
        )
        sender.start()
        time.sleep(0.5)  # the message is in the listener, waiting for the database
        assert answers == []
        started = time.monotonic()
        with smtplib.SMTP(world.listener.host, world.listener.port, timeout=5) as smtp:
            assert smtp.ehlo()[0] == 250
            smtp.mail("")
            assert smtp.rcpt(sent.mail_from)[0] == 250
            assert smtp.rset()[0] == 250
        assert time.monotonic() - started < 2
    sender.join(timeout=30)
    assert [answer.data for answer in answers] == [(250, b"2.0.0 OK")]
    assert len(events(world, "storm@example.com", "bounce")) == 1


def test_a_database_error_answers_451(world: World) -> None:
    """Nothing is written and the sender is told to retry."""
    engine = make_engine(f"{POSTGRES_URL.rsplit('/', 1)[0]}/envoi_no_such_database")
    settings = world.listener.settings.model_copy(
        update={"smtp_listen": f"127.0.0.1:{_free_port()}"}
    )
    sent = world.message("byid@example.com")
    try:
        with FeedbackListener(settings, make_sessionmaker(engine)) as broken:
            with smtplib.SMTP(broken.host, broken.port, timeout=30) as smtp:
                smtp.ehlo("mx.example.com")
                smtp.mail("")
                assert smtp.rcpt(sent.mail_from)[0] == 250
                code, message = smtp.data(unknown_user(sent, "byid@example.com"))
            assert (code, message[:5]) == (451, b"4.3.0")
            tempfails = broken.metrics.registry.get_sample_value(
                "envoi_inbound_messages_total", {"answer": "tempfail"}
            )
            assert tempfails == 1
    finally:
        engine.dispose()
    assert events(world, "byid@example.com", "bounce") == []


# --- helpers ----------------------------------------------------------------------------


def _subscribed(world: World, address: str) -> bool | None:
    """The profile's subscription to the news category: None when it has no row."""
    with world.backend.sessions() as session:
        profile_id = session.scalar(
            select(Profile.id).where(
                Profile.project_id == world.project_id, Profile.email == address
            )
        )
        return session.scalar(
            select(Subscription.subscribed).where(
                Subscription.profile_id == profile_id,
                Subscription.category_id == world.category_id,
            )
        )


def _hold_write_lock(session: Session) -> None:
    """Make the listener's transaction wait: SQLite's BEGIN IMMEDIATE (taken when the
    session's transaction starts) holds the single writer's lock; on PostgreSQL an
    EXCLUSIVE lock on the listener's table blocks its writes."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE inbound_reports IN EXCLUSIVE MODE"))
    else:
        session.execute(text("SELECT 1"))
