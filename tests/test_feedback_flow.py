"""A campaign's whole life after delivery, through a real `envoi serve`: its messages are
opened, clicked, viewed on the web, unsubscribed from over HTTP, bounced and complained
about over SMTP, and the outbox holds each fact once, with the send's dimensions."""

from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import sqlite3
import subprocess
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from envoi.core.tokens import MessageLinks, Signer
from tests.conftest import ENVOI, Served
from tests.delivery_support import campaign_state, create_email, start_campaign, wait_until

IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
ADDRESSES = ["ann@example.com", "bob@example.com", "cyd@example.com", "dan@example.com"]


def _login(served: Served) -> dict[str, str]:
    created = subprocess.run(  # noqa: S603 - our own console script
        [str(ENVOI), "project", "create", "Flow"],
        env=served.env,
        capture_output=True,
        text=True,
        check=True,
    )
    login: dict[str, str] = json.loads(created.stdout)
    return login


def _html(raw: str) -> str:
    message = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def _local(served: Served, url: str) -> str:
    """`url` (made with the default public URL) on the served port."""
    parts = urlsplit(url.replace("&amp;", "&"))
    return f"{served.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def _links(html: str, kind: str) -> list[str]:
    return re.findall(rf'"(https?://[^"]+/t/{kind}/[^"]+)"', html)


def _dsn(mail_from: str, recipient: str, send_token: str) -> bytes:
    """A Postfix-style RFC 3464 DSN: `recipient` does not exist."""
    return (
        "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\r\n"
        f"To: {mail_from}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not be delivered.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        "Remote-MTA: dns; mailbox.example.com\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: "
        "User unknown in local recipient table\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: news@example.com\r\nTo: {recipient}\r\nX-Envoi-Send: {send_token}\r\n"
        "\r\n--B--\r\n"
    ).encode()


def _arf(recipient: str, send_token: str) -> bytes:
    """An RFC 5965 feedback report: `recipient` marked the message as spam."""
    return (
        "From: staff@hotmail.example\r\nTo: feedback@localhost\r\n"
        "Subject: complaint about message\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n'
        "\r\n--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "\r\n--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        f"Original-Rcpt-To: <{recipient}>\r\nReporting-MTA: dns; mail.hotmail.example\r\n"
        "\r\n--F\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: news@example.com\r\nTo: {recipient}\r\nX-Envoi-Send: {send_token}\r\n"
        "\r\n--F--\r\n"
    ).encode()


def _events(served: Served, campaign_id: int) -> list[tuple[str, str | None, dict[str, Any]]]:
    with sqlite3.connect(served.var_dir / "envoi.db") as connection:
        rows = connection.execute(
            "SELECT kind, recipient, data FROM outbox WHERE campaign_id = ? ORDER BY id",
            (campaign_id,),
        ).fetchall()
    return [(kind, recipient, json.loads(data)) for kind, recipient, data in rows]


def test_opens_clicks_views_unsubscribes_bounces_and_complaints_are_recorded(
    served: Served,
) -> None:
    login = _login(served)
    with httpx.Client(
        base_url=f"{served.base_url}/api/v1", auth=(login["login"], login["secret"]), timeout=30
    ) as client:
        for address in ADDRESSES:  # profiles, so that a complaint can be handled
            created = client.post("/users", json={"email": address})
            assert created.status_code in {200, 201}, created.text
        email_id = create_email(client)
        campaign = start_campaign(client, email_id, ADDRESSES, tags="spring,promo")
        wait_until(lambda: campaign_state(client, campaign["id"]) == "finished", timeout=60)
        captured = {m["recipient"]: m for m in client.get("/captured").json()}
    html = {address: _html(captured[address]["raw"]) for address in ADDRESSES}
    tokens = {
        address: email.message_from_string(captured[address]["raw"])["X-Envoi-Send"]
        for address in ADDRESSES
    }
    with httpx.Client(timeout=30, follow_redirects=False) as tracking:
        # Ann opens in iPhone Mail and clicks both links.
        opened = tracking.get(
            _local(served, _links(html["ann@example.com"], "o")[0]),
            headers={"User-Agent": IPHONE_MAIL},
        )
        assert opened.status_code == 200
        assert opened.headers["content-type"] == "image/gif"
        clicks = _links(html["ann@example.com"], "c")
        targets = []
        for url in clicks:
            answer = tracking.get(_local(served, url), headers={"User-Agent": CHROME})
            assert answer.status_code == 302
            targets.append(answer.headers["location"])
        assert targets == ["https://example.com/a?c=Paris", "https://example.com/b"]
        # A forged click is never a redirect.
        forged = _local(served, clicks[1])[:-3] + "000"
        assert tracking.get(forged).status_code == 404

        # Bob reads the web version: his own message.
        mirror = tracking.get(_local(served, _links(html["bob@example.com"], "m")[0]))
        assert mirror.status_code == 200
        assert "Hello Bob from Paris!" in mirror.text

        # Cyd unsubscribes with the mail client's one-click button (RFC 8058).
        unsubscribe = email.message_from_string(captured["cyd@example.com"]["raw"])
        https = re.search(r"<(https?://[^>]+)>", unsubscribe["List-Unsubscribe"])
        assert https is not None
        one_click = tracking.post(
            _local(served, https[1]),
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert one_click.status_code == 200

        # Bob forwards it to Eve once the campaign has finished: her copy is still sent.
        key = (served.var_dir / "secret_key").read_text().strip()
        bob = int(tokens["bob@example.com"].partition(".")[0])
        form = MessageLinks(served.base_url, Signer(key)).forward(bob)
        forwarded = tracking.post(form, data={"email": "eve@example.com"})
        assert forwarded.status_code == 200, forwarded.text

    # Dan's mailbox does not exist: a DSN comes back to his VERP address. Ann complains.
    with smtplib.SMTP("127.0.0.1", served.smtp_port, timeout=30) as smtp:
        dan = captured["dan@example.com"]
        smtp.sendmail(
            "",
            [dan["mail_from"]],
            _dsn(dan["mail_from"], dan["recipient"], tokens["dan@example.com"]),
        )
        smtp.sendmail(
            "", ["feedback@localhost"], _arf("ann@example.com", tokens["ann@example.com"])
        )

    with httpx.Client(
        base_url=f"{served.base_url}/api/v1", auth=(login["login"], login["secret"]), timeout=30
    ) as client:
        wait_until(
            lambda: any(
                m["recipient"] == "eve@example.com" for m in client.get("/captured").json()
            ),
            timeout=60,
            what="the forwarded copy",
        )
        wait_until(lambda: campaign_state(client, campaign["id"]) == "finished", timeout=60)

    events = _events(served, campaign["id"])
    by_kind: dict[str, list[tuple[str | None, dict[str, Any]]]] = {}
    for kind, recipient, data in events:
        by_kind.setdefault(kind, []).append((recipient, data))
    assert [r for r, _ in by_kind["open"]] == ["ann@example.com"]
    # Literal links are numbered first (the HTML's, then the text's own), links the
    # template wrote after them (docs/rendering.md).
    assert sorted((r, d["link"], d["url"]) for r, d in by_kind["click"]) == [
        ("ann@example.com", 0, "https://example.com/b"),
        ("ann@example.com", 2, "https://example.com/a?c=Paris"),
    ]
    assert [r for r, _ in by_kind["mirror"]] == ["bob@example.com"]
    assert [(r, d["method"]) for r, d in by_kind["unsubscribe"]] == [
        ("cyd@example.com", "one-click")
    ]
    [(forwarder, forward)] = by_kind["forward"]
    assert (forwarder, forward["friend_domain"]) == ("bob@example.com", "example.com")
    assert "eve@example.com" not in json.dumps(forward)  # the friend's address is kept apart
    [(bounced, bounce)] = by_kind["bounce"]
    assert bounced == "dan@example.com"
    assert bounce["bounce_class"] == "user_unknown"
    assert bounce["hard"] is True
    assert bounce["smtp_status"] == "5.1.1"
    assert bounce["in_band"] is False
    [(complainer, complaint)] = by_kind["complaint"]
    assert complainer == "ann@example.com"
    assert complaint["handled"] is True

    # Every fact names its send and carries the campaign's dimensions.
    delivered = {r: d["send_id"] for r, d in by_kind["delivered"]}
    assert delivered.keys() == {*ADDRESSES, "eve@example.com"}
    for kind in ("open", "click", "mirror", "unsubscribe", "forward", "bounce", "complaint"):
        for recipient, data in by_kind[kind]:
            assert data["send_id"] == delivered[recipient], kind
            assert data["post"] == campaign["post"], kind
            assert data["message"] == f"L_{email_id}", kind
            assert data["router"] == "capture", kind
            assert data["domain"] == "example.com", kind
            assert data["tags"] == ["spring", "promo"], kind
    assert by_kind["open"][0][1]["client"] != "Other"
    assert by_kind["open"][0][1]["device"] == "Mobile"

    # The quarantine now holds Dan (nonexistent) and Ann (spam).
    with httpx.Client(
        base_url=f"{served.base_url}/api/v1", auth=(login["login"], login["secret"]), timeout=30
    ) as client:
        listed = client.get("/quarantine").json()
    items = listed["items"] if isinstance(listed, dict) else listed
    reasons = {item["address"]: item["reason"] for item in items}
    assert reasons == {"dan@example.com": "nonexistent", "ann@example.com": "spam"}
