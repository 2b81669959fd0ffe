"""Helpers shared by the rendering tests (no tests here): a compiled sample email, a
recipient, and readers of the message through the standard library's `email` package
(policy.default), so that what is checked is what an independent reader sees."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import envoi.db.models  # noqa: F401 - every table mapped, so Email rows can be built
from envoi.core.tokens import MessageLinks, Signer, read_click
from envoi.delivery.render import (
    CompiledMessage,
    MessageContext,
    Recipient,
    choose_content,
    compile_message,
)
from envoi.emails.models import Email, EmailContent

SIGNER = Signer("test-secret")
LINKS = MessageLinks("https://t.example.com", SIGNER)
CONTEXT = MessageContext(
    project_id=3,
    campaign_id=12,
    post="S_12",
    message_type="L",
    tags=("news", "spring sale"),
    bounce_domain="bounces.example.com",
)
BOB = Recipient(
    send_id=41,
    email="bob@example.org",
    profile={"uid": "u1", "email": "bob@example.org", "first_name": "Bob", "city": "Paris"},
    params={"coupon": "SPRING10"},
)
PAGE = """<html><head><style>p { color: #333333 } .big { font-size: 20px }</style></head>
<body><h1 class="big">Hello {{ first_name }}!</h1>
<p>Your coupon: {{ coupon }}</p>
<p><a href="https://shop.example.com/a?x=1&amp;y=2">Spring sale</a></p>
<p><a href="https://shop.example.com/b">https://shop.example.com/b</a></p>
</body></html>"""
_CONTENT_KINDS = ("subject", "text_plain", "x_amp_html")


def variant(language: str = "", **texts: str | None) -> EmailContent:
    return EmailContent(language=language, **texts)


def make_email(*contents: EmailContent, **head: Any) -> Email:
    fields: dict[str, Any] = {
        "id": 7,
        "project_id": CONTEXT.project_id,
        "from_address": "Shop <news@example.com>",
        "not_add_unsubscr_link": False,
        "not_add_web_view_link": False,
        **head,
    }
    return Email(**fields, contents=list(contents))


def compiled(
    html: str | None = PAGE, *, language: str | None = None, **texts: Any
) -> CompiledMessage:
    """The sample email compiled: `html` and `texts` (subject, text_plain, x_amp_html)
    for its variant, anything else for the Email row."""
    head = {key: texts.pop(key) for key in list(texts) if key not in _CONTENT_KINDS}
    content = variant(text_html=html, **{"subject": "News for {{ first_name }}", **texts})
    message = make_email(content, **head)
    return compile_message(message, choose_content(message, language), CONTEXT, LINKS)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def parts(message: EmailMessage) -> dict[str, str]:
    """Decoded body per content type, line ends as in Python text."""
    inner = cast(list[EmailMessage], list(message.iter_parts()))
    return {
        part.get_content_type(): str(part.get_content()).replace("\r\n", "\n")
        for part in (inner if message.is_multipart() else [message])
    }


def render(message: CompiledMessage, recipient: Recipient = BOB) -> tuple[bytes, EmailMessage]:
    raw = message.render(recipient)
    return raw, parse(raw)


def assert_wire_format(raw: bytes) -> None:
    """CRLF line ends only, no line over 998 octets, headers within 78 where foldable."""
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 90
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76


def follow(message: CompiledMessage, url: str, send_id: int) -> str | None:
    """Where a click on `url` leads, as the tracking endpoint decides it: the token
    verified with the URL's `u` (the target of a link the template wrote), else the
    literal link's URL by index. None when the URL is not a genuine click of `send_id`."""
    parts_ = urlsplit(url)
    query = parse_qs(parts_.query)
    if not parts_.path.startswith("/t/c/") or len(query.get("u", [])) > 1:
        return None
    click = read_click(SIGNER, parts_.path.rsplit("/", 1)[1], query.get("u", [None])[0])
    if click is None or click.send_id != send_id:
        return None
    if click.target is not None:
        return click.target
    return message.link_urls[click.link] if click.link < len(message.link_urls) else None
