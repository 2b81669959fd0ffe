"""The MIME structure and header values of a received feedback message, for the readers
of `inbound.parsing` (`arf`, `dsn`, `textbounces`, `autoreplies`).

It reads the parts of a report without descending into the message it returns, the
returned message's headers (attached whole, or as `text/rfc822-headers`), the text the
reporting system wrote (plain text, else HTML made text), the header blocks of a
`message/delivery-status` or `message/feedback-report` part, and the mailboxes and
hosts named in their fields. The messages come from the stdlib `email` package's
compat32 policy (see `inbound.parsing`), so header values are read here: non-ASCII
bytes kept as surrogate escapes are read as UTF-8, and RFC 2047 encoded words decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import parseaddr
from html.parser import HTMLParser

# --- MIME helpers ----------------------------------------------------------------------


def _unescape(text: str) -> str:
    """compat32 keeps non-ASCII bytes as surrogate escapes: read them as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _decoded(value: str) -> str:
    text = _unescape(value)
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (MessageError, ValueError, LookupError):
        return text


def loose_pattern(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled as the text of notices needs it: any case, `^`/`$` per line."""
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE)


def headers(message: Message, name: str) -> list[str]:
    wanted = name.lower()
    return [_decoded(v) for k, v in message.raw_items() if k.lower() == wanted]


def header(message: Message, name: str) -> str:
    values = headers(message, name)
    return " ".join(values[0].split()) if values else ""


def parts(message: Message) -> Iterator[Message]:
    """The message and its parts, not descending into attached (returned) messages."""
    yield message
    if message.get_content_maintype() == "multipart" and message.is_multipart():
        for part in message.get_payload():
            if isinstance(part, Message):
                yield from parts(part)


def returned_messages(message: Message) -> Iterator[Message]:
    """The headers of the message(s) a report returns, each as a `Message`."""
    for part in parts(message):
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global", "message/global-headers"):
            if part.is_multipart():
                yield from (p for p in part.get_payload() if isinstance(p, Message))
        elif kind == "text/rfc822-headers":
            yield HeaderParser().parsestr(_text(part))


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", "replace")
    except (LookupError, ValueError):  # an unknown charset ("unicode-1-1-utf-7" is seen)
        text = payload.decode("utf-8", "replace")
    if part.get_content_subtype() == "html":
        text = _html_text(text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _HtmlText(HTMLParser):
    """Some NDRs have only an HTML body: its text, one line per block element."""

    BLOCKS = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "table"})

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self.hidden += 1
        elif tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.chunks.append(data)


def _html_text(html: str) -> str:
    reader = _HtmlText()
    reader.feed(html)
    reader.close()
    return "".join(reader.chunks)


def notification(message: Message) -> str:
    """The text the reporting system wrote (plain text, else HTML), not what it returns."""
    leaves = [p for p in parts(message) if p.get_content_maintype() == "text"]
    leaves = [p for p in leaves if p.get_content_type() != "text/rfc822-headers"]
    plain = [p for p in leaves if p.get_content_subtype() == "plain"]
    return "\n".join(_text(p) for p in plain or leaves)


def evidence(message: Message) -> str:
    """Where send tokens and Message-IDs are looked for: the returned headers, the
    report's own text (plain-text bounces quote the message inline), and the
    In-Reply-To / References of the report itself (auto-replies name our message)."""
    chunks = [
        "\n".join(f"{k}: {_unescape(v)}" for k, v in returned.raw_items())
        for returned in returned_messages(message)
    ]
    chunks += [
        f"{name}: {v}" for name in ("In-Reply-To", "References") for v in headers(message, name)
    ]
    chunks.append(notification(message))
    return "\n".join(chunks)


def domain(address: str) -> str | None:
    found = address.rpartition("@")[2].lower()
    return found if "@" in address and found else None


# --- header blocks of delivery-status and feedback-report parts ------------------------

PARAGRAPH_END = re.compile(r"\n[ \t]*\n")


def field_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status (or feedback-report) part. The email
    package splits `message/delivery-status` into blocks itself; other `message/*`
    types come as one message whose body holds the blocks after the first."""
    if not part.is_multipart():
        return _blocks_of(_body(part))
    blocks: list[Message] = []
    for block in part.get_payload():
        if isinstance(block, Message):
            blocks.append(block)
            if not block.is_multipart():
                blocks += _blocks_of(_body(block))
    return blocks


def _body(part: Message) -> str:
    """A part's body as UTF-8 text (`get_payload()` would decode it as ASCII)."""
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _blocks_of(text: str) -> list[Message]:
    chunks = PARAGRAPH_END.split(text.replace("\r\n", "\n").strip())
    return [HeaderParser().parsestr(chunk) for chunk in chunks if chunk.strip()]


# --- addresses -------------------------------------------------------------------------

# A redacted recipient (RFC 6590 style, or a provider's placeholder) names nobody.
_REDACTED = re.compile(r"redacted|^x+$|^\*+$|^\[.*\]$|^undisclosed", re.IGNORECASE)


def mailbox(value: str | None) -> str | None:
    """The mailbox in "rfc822; a@b", "<a@b>", "Name <a@b>"; None if redacted or absent."""
    if not value:
        return None
    if ";" in value and "@" not in value.partition(";")[0]:
        value = value.partition(";")[2]
    address = parseaddr(value.strip())[1].strip().lower()
    local, at, host = address.rpartition("@")
    if not at or not local or not host or _REDACTED.search(local):
        return None
    return address


def mta(value: str | None) -> str | None:
    """The host named in "dns; mx.example.com"."""
    if not value:
        return None
    name = value.partition(";")[2] if ";" in value else value
    return name.strip().strip("[]<>").lower()[:255] or None
