"""SMTP submission over real SMTP: a project's application hands mail to `envoi serve`.

A client authenticates with the project's `login:secret` (AUTH PLAIN or LOGIN), and
each recipient of its message becomes a single send (post type P) that the real
delivery worker sends to the test SMTP peer, signed and tracked as the headers say,
with tags from `X-Envoi-Tags` counted in seed 004's statistics; a bad login, a
missing AUTH and content a send cannot carry are refused with SMTP codes, and write
nothing.
"""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import dkim  # type: ignore[import-untyped]  # dkimpy ships no type information
import httpx
import pytest

from envoi.config import Settings
from envoi.sends.submission import SubmissionListener, plaintext_auth_allowed
from envoi.testing.smtppeer import SmtpPeer
from tests.conftest import ENVOI
from tests.delivery_support import create_smtp_router, running_worker, wait_until
from tests.test_sends import (  # the served app, its tenants, the peer, the DKIM key
    count_rows,
    dkim_txt,
    html_of,
    parsed,
    peer,
    send_view,
    tag_stats,
)
from tests.test_stats_messages import (
    StatsBackend,
    Tenant,
    _tracked,
    make_tenant,
    stats_backend,
    tenant,
)
from tests.transport_support import Certificate

__all__ = ["dkim_txt", "make_tenant", "peer", "stats_backend", "tenant"]

MAX_RECIPIENTS = 3
SEND_LINE = re.compile(r"2\.0\.0 send (\d+) <([^>]+)> (\w+)")


@pytest.fixture(scope="module")
def listener(stats_backend: StatsBackend) -> Iterator[SubmissionListener]:
    settings = stats_backend.settings.model_copy(
        update={"submission_listen": "127.0.0.1:0", "submission_max_recipients": MAX_RECIPIENTS}
    )
    with SubmissionListener(settings, stats_backend.sessions) as running:
        yield running


def message(**headers: str) -> EmailMessage:
    """A receipt with a text and an HTML body; `headers` added (`_` for `-`)."""
    mail = EmailMessage()
    mail["From"] = "Shop <shop@example.com>"
    mail["To"] = "someone@example.net"
    mail["Subject"] = "Order {{ 42 }} shipped"
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content("Your order {% shipped %}: https://shop.example.com/orders/42\n")
    mail.add_alternative(
        '<p>Your order is on its way.</p><p><a href="https://shop.example.com/orders/42">'
        "follow it</a></p>",
        subtype="html",
    )
    return mail


def connect(listener: SubmissionListener) -> smtplib.SMTP:
    client = smtplib.SMTP(listener.host, listener.port, timeout=30)
    client.ehlo("app.example.com")
    return client


def login(client: smtplib.SMTP, tenant: Tenant, mechanism: str = "PLAIN", secret: str = "") -> None:
    client.user, client.password = tenant.creds.login, secret or tenant.creds.secret
    method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
    client.auth(mechanism, method)


def submit(
    listener: SubmissionListener,
    tenant: Tenant,
    mail: EmailMessage,
    recipients: list[str],
    mechanism: str = "PLAIN",
) -> tuple[int, str]:
    """(code, text) of the answer to DATA after AUTH as `tenant`."""
    with connect(listener) as client:
        login(client, tenant, mechanism)
        assert client.mail("app@example.com")[0] == 250
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250, recipient
        code, text = client.data(mail.as_bytes(policy=SMTP))
        return code, text.decode()


def send_ids(reply: str) -> dict[str, int]:
    """recipient -> send id, from a 250 answer's lines."""
    return {found[2]: int(found[1]) for found in SEND_LINE.finditer(reply)}


def test_auth_plain_message_is_sent_as_p_signed_tracked_and_tagged(
    stats_backend: StatsBackend,
    listener: SubmissionListener,
    tenant: Tenant,
    peer: SmtpPeer,
    dkim_txt: str,
) -> None:
    api = tenant.api
    create_smtp_router(api, peer)
    mail = message(
        X_Envoi_Tags="receipt, smtp",
        X_Envoi_Track_Opens="true",
        X_Envoi_Idempotency_Key="order-42",
        X_Mailer="shop 1.0",
    )
    code, reply = submit(listener, tenant, mail, ["Ann@Example.org"])
    assert code == 250, reply
    [(address, send_id)] = send_ids(reply).items()
    assert address == "ann@example.org"
    assert reply == f"2.0.0 send {send_id} <ann@example.org> queued"
    # Committed before the answer: the API reads it back at once.
    sent = send_view(api, send_id)
    assert (sent["post_type"], sent["state"], sent["tags"]) == ("P", "queued", ["receipt", "smtp"])
    assert (sent["track_opens"], sent["track_clicks"]) == (True, True)

    with running_worker(stats_backend.settings, stats_backend.sessions):
        [received] = peer.wait_for(1, timeout=30)
        wait_until(lambda: send_view(api, send_id)["state"] == "delivered")

    def dns(name: bytes, timeout: int = 5) -> bytes | None:  # noqa: ARG001 - dkimpy's signature
        return dkim_txt.encode() if name == b"s1._domainkey.example.com." else None

    assert dkim.verify(received.data, dnsfunc=dns)
    assert received.recipients == ("ann@example.org",)
    assert received.mail_from.startswith("bounces+")  # its own VERP return path
    delivered = parsed(received)
    assert delivered["Subject"] == "Order {{ 42 }} shipped"  # sent as written, no template
    assert delivered["From"] == "Shop <shop@example.com>"
    # The client's X-Envoi-* headers are not sent (X-Envoi-Tags is the renderer's own).
    assert delivered["X-Envoi-Tags"] == "receipt, smtp"
    for name in ("X-Envoi-Track-Opens", "X-Envoi-Idempotency-Key", "X-Mailer"):
        assert delivered[name] is None, name
    text = delivered.get_body(preferencelist=("plain",))
    assert text is not None
    assert "Your order {% shipped %}" in text.get_content()
    tracked = _tracked(stats_backend.base_url, received.data.decode())
    assert len(tracked["o"]) == 1  # the pixel
    assert tracked["c"]  # the link, rewritten
    assert 'href="https://shop.example.com/orders/42"' not in html_of(delivered)

    expected = {"messages": 1, "deliveries": 1}
    wait_until(
        lambda: {k: tag_stats(tenant, "smtp")[k] for k in expected} == expected,
        what="the projection",
        show=lambda: tag_stats(tenant, "smtp"),
    )
    assert listener.metrics.registry.get_sample_value(
        "envoi_submission_messages_total", {"answer": "accepted"}
    )


def test_auth_login_two_recipients_two_untracked_sends_sent_once(
    stats_backend: StatsBackend, listener: SubmissionListener, tenant: Tenant, peer: SmtpPeer
) -> None:
    api = tenant.api
    create_smtp_router(api, peer)
    mail = message(
        X_Envoi_Track_Opens="false", X_Envoi_Track_Clicks="0", X_Envoi_Idempotency_Key="k-1"
    )
    recipients = ["bob@example.net", "cyd@example.net"]
    code, reply = submit(listener, tenant, mail, recipients, mechanism="LOGIN")
    assert code == 250, reply
    ids = send_ids(reply)
    assert sorted(ids) == recipients
    assert len(set(ids.values())) == 2
    # The same message again (a client's retry): the same sends, nothing more.
    before = count_rows(stats_backend, tenant.creds.id)
    again_code, again = submit(listener, tenant, mail, recipients[::-1])
    assert (again_code, send_ids(again)) == (250, ids)
    assert count_rows(stats_backend, tenant.creds.id) == before
    # The key with another message: refused, nothing written.
    other = message(X_Envoi_Idempotency_Key="k-1")
    other.replace_header("Subject", "Another")
    other_code, other_reply = submit(listener, tenant, other, recipients)
    assert other_code == 554
    assert "X-Envoi-Idempotency-Key was used with another message" in other_reply
    assert count_rows(stats_backend, tenant.creds.id) == before

    with running_worker(stats_backend.settings, stats_backend.sessions):
        received = {m.recipients: m for m in peer.wait_for(2, timeout=30)}
        wait_until(
            lambda: all(send_view(api, s)["state"] == "delivered" for s in ids.values()),
            what="both deliveries",
        )
    assert sorted(received) == [("bob@example.net",), ("cyd@example.net",)]
    for one in received.values():
        assert _tracked(stats_backend.base_url, one.data.decode()) == {}
        assert 'href="https://shop.example.com/orders/42"' in html_of(parsed(one))
    views = [send_view(api, send_id) for send_id in ids.values()]
    assert [(v["track_opens"], v["track_clicks"], v["post_type"]) for v in views] == [
        (False, False, "P")
    ] * 2
    assert len(peer.messages) == 2


def test_no_auth_or_a_wrong_secret_sends_nothing(
    stats_backend: StatsBackend, listener: SubmissionListener, tenant: Tenant, make_tenant: Any
) -> None:
    before = count_rows(stats_backend, tenant.creds.id)
    with connect(listener) as client:
        assert client.mail("app@example.com") == (530, b"5.7.0 Authentication required")
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            login(client, tenant, secret="not-the-secret")
        assert (wrong.value.smtp_code, wrong.value.smtp_error) == (
            535,
            b"5.7.8 Authentication credentials invalid",
        )
        client.user, client.password = "nobody-here", "x"
        with pytest.raises(smtplib.SMTPAuthenticationError) as unknown:
            client.auth("LOGIN", client.auth_login)
        assert unknown.value.smtp_code == 535
        assert client.rcpt("ann@example.org")[0] == 530
    # A project's allowlist applies to the peer's address.
    fenced = make_tenant(allowed_ips=("10.0.0.0/8",))
    with connect(listener) as client, pytest.raises(smtplib.SMTPAuthenticationError) as outside:
        login(client, fenced)
    assert outside.value.smtp_error == b"5.7.1 Client address not allowed for this login"
    assert count_rows(stats_backend, tenant.creds.id) == before
    samples = listener.metrics.registry
    assert (
        samples.get_sample_value("envoi_submission_auth_total", {"outcome": "invalid"}) or 0
    ) >= 2
    assert samples.get_sample_value("envoi_submission_auth_total", {"outcome": "forbidden"})


def with_attachment() -> EmailMessage:
    mail = message()
    mail.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="bill.pdf")
    return mail


@pytest.mark.parametrize(
    ("mail", "reply"),
    [
        (with_attachment(), "5.6.1 Attachments are not supported (application/pdf 'bill.pdf')"),
        (message(X_Envoi_Tags="a,b,c,d,e,f,g,h,i,j,k"), "5.6.0 X-Envoi-Tags: at most 10"),
        (message(X_Envoi_Track_Clicks="maybe"), "5.6.0 X-Envoi-Track-Clicks: say true or false"),
        (message(Reply_To="x@example.com"), None),  # accepted: the control
    ],
    ids=["attachment", "tags", "switch", "control"],
)
def test_content_a_send_cannot_carry_is_refused(
    stats_backend: StatsBackend,
    listener: SubmissionListener,
    tenant: Tenant,
    mail: EmailMessage,
    reply: str | None,
) -> None:
    before = count_rows(stats_backend, tenant.creds.id)
    code, text = submit(listener, tenant, mail, ["dee@example.net"])
    if reply is None:
        assert code == 250, text
        return
    assert code == 554
    assert text.startswith(reply), text
    assert count_rows(stats_backend, tenant.creds.id) == before


def test_bad_sender_and_recipients_are_refused(
    stats_backend: StatsBackend, listener: SubmissionListener, tenant: Tenant
) -> None:
    before = count_rows(stats_backend, tenant.creds.id)
    mail = message()
    mail.replace_header("From", "not an address")
    with connect(listener) as client:
        login(client, tenant)
        client.mail("")
        assert client.rcpt("no-at-sign")[0] == 553
        for index in range(MAX_RECIPIENTS):
            assert client.rcpt(f"r{index}@example.net")[0] == 250
        assert client.rcpt("r0@example.net")[0] == 250  # the same one: counted once
        assert client.rcpt("one-more@example.net") == (452, b"4.5.3 Too many recipients")
        code, text = client.data(mail.as_bytes(policy=SMTP))
    assert code == 554
    assert text.startswith(b"5.6.0 From: invalid from address: "), text
    assert count_rows(stats_backend, tenant.creds.id) == before


def test_starttls_comes_before_auth_with_a_certificate(
    stats_backend: StatsBackend, tenant: Tenant, tmp_path: Path
) -> None:
    certificate = Certificate(tmp_path)
    settings = stats_backend.settings.model_copy(
        update={
            "submission_listen": "127.0.0.1:0",
            "submission_tls_cert": str(certificate.cert_file),
            "submission_tls_key": str(certificate.key_file),
        }
    )
    trusting = ssl.create_default_context(cafile=str(certificate.cert_file))
    with SubmissionListener(settings, stats_backend.sessions) as secure:
        with connect(secure) as client:
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")  # no secret in clear
            plain = f"\0{tenant.creds.login}\0{tenant.creds.secret}".encode()
            code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(plain).decode())
            assert code == 538
            client.starttls(context=trusting)
            client.ehlo("app.example.com")
            assert client.has_extn("auth")
            login(client, tenant)
            client.mail("app@example.com")
            client.rcpt("eve@example.net")
            code, text = client.data(message().as_bytes(policy=SMTP))
        assert code == 250, text
        [send_id] = send_ids(text.decode()).values()
        assert send_view(tenant.api, send_id)["state"] == "queued"


def test_auth_in_clear_needs_loopback_or_the_setting() -> None:
    def settings(**values: Any) -> Settings:
        return Settings(submission_listen="0.0.0.0:2587", **values)

    with pytest.raises(ValueError, match="not a loopback address"):
        plaintext_auth_allowed(settings(), None)
    assert plaintext_auth_allowed(settings(submission_allow_plaintext_auth=True), None)
    assert plaintext_auth_allowed(Settings(submission_listen="127.0.0.1:2587"), None)
    assert plaintext_auth_allowed(Settings(submission_listen="[::1]:2587"), None)
    assert not plaintext_auth_allowed(settings(), ssl.create_default_context())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_envoi_serve_listens_for_submissions_and_shows_its_metrics(tmp_path: Path) -> None:
    http, smtp, submission = _free_port(), _free_port(), _free_port()
    env = {
        **os.environ,
        "ENVOI_VAR_DIR": str(tmp_path),
        "ENVOI_DATABASE_URL": f"sqlite:///{tmp_path}/envoi.db",
        "ENVOI_HTTP_LISTEN": f"127.0.0.1:{http}",
        "ENVOI_SMTP_LISTEN": f"127.0.0.1:{smtp}",
        "ENVOI_SUBMISSION_LISTEN": f"127.0.0.1:{submission}",
        "ENVOI_DELIVER_IN_PROCESS": "false",
        "ENVOI_SCHEDULER_IN_PROCESS": "false",
    }
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [str(ENVOI), "serve"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        base_url = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "envoi serve exited"
            assert time.monotonic() < deadline, "envoi serve did not start"
            time.sleep(0.1)
        with smtplib.SMTP("127.0.0.1", submission, timeout=30) as client:
            client.ehlo("app.example.com")
            assert client.has_extn("auth")
            client.user, client.password = "nobody", "wrong"
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.auth("PLAIN", client.auth_plain)
        metrics = httpx.get(f"{base_url}/metrics").text
        assert 'envoi_submission_auth_total{outcome="invalid"} 1.0' in metrics
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(line["msg"] == "listening for submissions" for line in lines)
    assert any(line["msg"] == "submission auth failed" for line in lines)


def test_envoi_serve_refuses_auth_in_clear_on_the_network(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ENVOI_VAR_DIR": str(tmp_path),
        "ENVOI_DATABASE_URL": f"sqlite:///{tmp_path}/envoi.db",
        "ENVOI_HTTP_LISTEN": f"127.0.0.1:{_free_port()}",
        "ENVOI_SMTP_LISTEN": f"127.0.0.1:{_free_port()}",
        "ENVOI_SUBMISSION_LISTEN": "0.0.0.0:2587",  # what is refused
    }
    done = subprocess.run(  # noqa: S603 - our own console script
        [str(ENVOI), "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "error: ENVOI_SUBMISSION_LISTEN=0.0.0.0:2587 is not a loopback address" in done.stderr
