"""Reading one received feedback message into `Report`s (pure: bytes in, reports out).

What comes back to the bounce and feedback-loop addresses, read in this order:

1. ARF complaint reports (RFC 5965 `multipart/report; report-type=feedback-report`),
   and Microsoft's older JMRP complaints (the reported message attached, no ARF part);
2. DSNs (RFC 3464 `message/delivery-status`, RFC 6533 `message/global-delivery-status`):
   one report per per-recipient block, its kind from `Action:`. Checked before the
   auto-reply headers because a DSN carries `Auto-Submitted: auto-replied` too;
3. the plain-text bounces of real MTAs (`TEXT_FORMATS`, a table of data: Postfix,
   Exim, Sendmail, qmail, Exchange / Outlook.com, Gmail, Yahoo); then, for a message
   that says it is a failure notice in a format not in the table, flufl.bounce's
   detectors (GNU Mailman's: about twenty more formats) name the recipients;
4. auto-replies (RFC 3834 `Auto-Submitted`, `X-Autoreply`, out-of-office subjects);
5. anything else is `not-bounce` (a human reply, a newsletter, garbage).

Every bounce and delayed report is classified by `core.bounces.classify` from the
SMTP reply code, the RFC 3463 status and the diagnostic text found. The send it
belongs to is named by `send_tokens` found in the returned message (its `X-Envoi-Send`
header and Message-ID) or in an auto-reply's In-Reply-To / References; the listener
adds the VERP token of the address the message came to.

The stdlib `email` package reads the MIME structure with its compat32 policy: it
keeps going through malformed headers where the newer policy can raise, and a parser
of mail that anyone may send must never fail (anything unreadable is `not-bounce`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from email.errors import MessageError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser

from flufl.bounce import all_failures

from envoi.core.bounces import classify
from envoi.inbound.reports import Kind, Report

log = logging.getLogger("envoi.inbound")
# flufl.bounce logs each of its detectors at INFO for every message it scans, and an
# error before raising it again: `_flufl_failures` logs that once, here.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

NOT_BOUNCE = Report("not-bounce")

# A send token (`SENDID.MAC`, see core.tokens): in an `X-Envoi-Send` header, and as
# the local part of the Message-ID envoi gives every message.
_TOKEN = r"\d+\.[0-9a-f]{20}"  # noqa: S105 - a pattern, not a secret
_SEND_HEADER = re.compile(rf"^[ \t>]*X-Envoi-Send:\s*({_TOKEN})\b", re.IGNORECASE | re.MULTILINE)
_ID_LOCAL_PART = re.compile(rf"<({_TOKEN})@")
_ID_HEADER = re.compile(
    r"^[ \t>]*(?:Message-ID|In-Reply-To|References):((?:.*)(?:\n[ \t]+.*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_ANGLED = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


def parse(raw: bytes) -> list[Report]:
    """Every report one received message holds; `[NOT_BOUNCE]` for anything else."""
    if not raw.strip():
        return [NOT_BOUNCE]
    try:
        return _read(message_from_bytes(raw), raw)
    except Exception:  # a parser of mail anyone may send must survive anything
        log.warning("unreadable feedback message", exc_info=True)
        return [NOT_BOUNCE]


def find_send_tokens(text: str) -> tuple[str, ...]:
    """Send tokens in returned headers, best first: `X-Envoi-Send` values, then
    Message-ID local parts (`<TOKEN@domain>`, also in In-Reply-To / References)."""
    found = [m[1] for m in _SEND_HEADER.finditer(text)]
    found += [m[1] for m in _ID_LOCAL_PART.finditer(text)]
    return tuple(dict.fromkeys(found))


def _read(message: Message, raw: bytes) -> list[Report]:
    reports = (
        _complaints(message)
        or _status_reports(message)
        or _text_bounces(message, raw)
        or _autoreply(message)
        or [NOT_BOUNCE]
    )
    evidence = _evidence(message)
    ids = tuple(
        dict.fromkeys(i for m in _ID_HEADER.finditer(evidence) for i in _ANGLED.findall(m[1]))
    )
    sender = _domain(parseaddr(_header(message, "From"))[1])
    return [
        replace(
            report,
            send_tokens=find_send_tokens(evidence),
            message_ids=ids,
            reporting_mta=report.reporting_mta
            or (sender if report.kind in ("bounce", "delayed", "complaint") else None),
        )
        for report in reports
    ]


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


def _headers(message: Message, name: str) -> list[str]:
    wanted = name.lower()
    return [_decoded(v) for k, v in message.raw_items() if k.lower() == wanted]


def _header(message: Message, name: str) -> str:
    values = _headers(message, name)
    return " ".join(values[0].split()) if values else ""


def _parts(message: Message) -> Iterator[Message]:
    """The message and its parts, not descending into attached (returned) messages."""
    yield message
    if message.get_content_maintype() == "multipart" and message.is_multipart():
        for part in message.get_payload():
            if isinstance(part, Message):
                yield from _parts(part)


def _returned(message: Message) -> Iterator[Message]:
    """The headers of the message(s) a report returns, each as a `Message`."""
    for part in _parts(message):
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


def _notification(message: Message) -> str:
    """The text the reporting system wrote (plain text, else HTML), not what it returns."""
    leaves = [p for p in _parts(message) if p.get_content_maintype() == "text"]
    leaves = [p for p in leaves if p.get_content_type() != "text/rfc822-headers"]
    plain = [p for p in leaves if p.get_content_subtype() == "plain"]
    return "\n".join(_text(p) for p in plain or leaves)


def _evidence(message: Message) -> str:
    """Where send tokens and Message-IDs are looked for: the returned headers, the
    report's own text (plain-text bounces quote the message inline), and the
    In-Reply-To / References of the report itself (auto-replies name our message)."""
    chunks = [
        "\n".join(f"{k}: {_unescape(v)}" for k, v in returned.raw_items())
        for returned in _returned(message)
    ]
    chunks += [
        f"{name}: {v}" for name in ("In-Reply-To", "References") for v in _headers(message, name)
    ]
    chunks.append(_notification(message))
    return "\n".join(chunks)


def _domain(address: str) -> str | None:
    domain = address.rpartition("@")[2].lower()
    return domain if "@" in address and domain else None


# --- addresses -------------------------------------------------------------------------

# A redacted recipient (RFC 6590 style, or a provider's placeholder) names nobody.
_REDACTED = re.compile(r"redacted|^x+$|^\*+$|^\[.*\]$|^undisclosed", re.IGNORECASE)


def _address(value: str | None) -> str | None:
    """The mailbox in "rfc822; a@b", "<a@b>", "Name <a@b>"; None if redacted or absent."""
    if not value:
        return None
    if ";" in value and "@" not in value.partition(";")[0]:
        value = value.partition(";")[2]
    address = parseaddr(value.strip())[1].strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or _REDACTED.search(local):
        return None
    return address


def _mta(value: str | None) -> str | None:
    """The host named in "dns; mx.example.com"."""
    if not value:
        return None
    name = value.partition(";")[2] if ";" in value else value
    return name.strip().strip("[]<>").lower()[:255] or None


# --- SMTP replies inside diagnostic text -----------------------------------------------

_STATUS = r"[245]\.\d{1,3}\.\d{1,3}"
# A reply code, repeated by some relays ("550 550 5.1.1"), then maybe a status.
_CODE = rf"(?P<code>[245]\d\d)(?:[ -](?P=code))?(?:[ -]+#?(?P<status>{_STATUS}))?(?!\d|\.\d)"
_AFTER_MARKER = re.compile(
    rf"(?:said|returned(?: was)?|was|reason|<<<|-->)\s*:?\s*['\"(]?#?{_CODE}", re.IGNORECASE
)
_AT_LINE_START = re.compile(rf"^[ \t>]*(?:\(reason:\s*)?['\"#]?{_CODE}", re.MULTILINE)
# qmail's "(#5.1.1)"; not the end of an IP address ("10.4.5.6").
_STATUS_ALONE = re.compile(rf"\(?#?(?<![\d.])(?P<status>{_STATUS})(?!\.?\d)\)?")
_TRAILERS = re.compile(
    r"\(in reply to [^)]*\)|Giving up on \S+|\[(?:RCPT_TO|MAIL_FROM|DATA|CONNECT)[^\]]*\]",
    re.IGNORECASE,
)
_PARAGRAPH_END = re.compile(r"\n[ \t]*\n")
_REPLY_END = re.compile(r"\n[ \t]*(?:\n|-{2,})")  # a blank line or a separator


@dataclass(frozen=True)
class _Reply:
    code: int | None
    status: str | None
    text: str


def _read_reply(text: str) -> _Reply:
    """The remote server's reply in a diagnostic: code, status, and its text (without
    them, on one line), "host mx said: 550 5.1.1 <a@b>... User unknown" and the like."""
    match = _AFTER_MARKER.search(text) or _AT_LINE_START.search(text)
    if match:
        code, status = match["code"], match["status"]
        rest = _REPLY_END.split(text[match.end() :].strip("\n"), maxsplit=1)[0]
        # Multi-line replies repeat "550-5.1.1" on each line.
        repeated = rf"\b{code}[ -]{re.escape(status)}\b" if status else rf"\b{code}-"
        rest = re.sub(repeated, " ", rest)
        return _Reply(int(code), status, _tidy(rest))
    first = _PARAGRAPH_END.split(text.strip("\n"), maxsplit=1)[0]
    found = _STATUS_ALONE.search(first)
    if found:  # qmail: "Sorry, no mailbox here by that name. (#5.1.1)"
        return _Reply(None, found["status"], _tidy(_STATUS_ALONE.sub(" ", first, count=1)))
    return _Reply(None, None, _tidy(first))


def _tidy(text: str) -> str:
    """One line, without the MTA's own trailers, and without the closing quote or
    bracket of what the marker opened ("returned '550 ...'", "(reason: 550 ...)")."""
    text = " ".join(_TRAILERS.sub(" ", text).split()).strip(" #").lstrip(":; ")
    for quote in ("'", '"'):
        if text.count(quote) % 2:
            text = text.removesuffix(quote).removeprefix(quote)
    while text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].rstrip()
    return text


def _better_status(declared: str | None, in_text: str | None) -> str | None:
    """A DSN's Status field, unless it is generic (X.0.0) and the reply is precise."""
    if declared and in_text and declared.endswith(".0.0") and declared[0] == in_text[0]:
        return in_text
    return declared or in_text


def _failure(
    kind: Kind, recipient: str | None, reply: _Reply, mta: str | None, status: str | None = None
) -> Report:
    status = status or reply.status
    verdict = classify(
        reply.code, status, reply.text, permanent=False if kind == "delayed" else None
    )
    return Report(
        kind,
        recipient,
        reason=verdict.reason,
        bounce_class=verdict.bounce_class,
        error_code=verdict.error_code,
        hard=verdict.hard,
        smtp_code=reply.code,
        status=status,
        diagnostic=reply.text or None,
        reporting_mta=mta,
    )


# --- ARF complaints --------------------------------------------------------------------


def _complaints(message: Message) -> list[Report]:
    part = next(
        (p for p in _parts(message) if p.get_content_type() == "message/feedback-report"), None
    )
    if part is None:
        return _jmrp(message)
    fields = _field_blocks(part)
    found = [_address(v) for b in fields for v in _headers(b, "Original-Rcpt-To")]
    found += [_address(v) for b in fields for v in _headers(b, "Removal-Recipient")]
    recipients: list[str | None] = list(dict.fromkeys(a for a in found if a))
    recipients = recipients or [_returned_recipient(message)]
    feedback_type = (_first(fields, "Feedback-Type").split() or ["abuse"])[0].lower()
    mta = _mta(_first(fields, "Reporting-MTA")) or _first(fields, "User-Agent")[:255] or None
    return [
        Report("complaint", r, reporting_mta=mta, feedback_type=feedback_type) for r in recipients
    ]


def _first(blocks: list[Message], name: str) -> str:
    return next((_header(block, name) for block in blocks if _headers(block, name)), "")


def _jmrp(message: Message) -> list[Report]:
    """Microsoft's older JMRP complaints: the reported message attached, no ARF part."""
    if not re.search(r"complaint about message from", _header(message, "Subject"), re.I):
        return []
    return [Report("complaint", _returned_recipient(message), feedback_type="abuse")]


def _returned_recipient(message: Message) -> str | None:
    """Who got the reported message, from its own headers (None when redacted)."""
    for returned in _returned(message):
        for name in ("X-HmXmrOriginalRecipient", "To"):
            addresses = [a for _, a in getaddresses(_headers(returned, name))]
            if len(addresses) == 1:
                return _address(addresses[0])
    return None


# --- DSNs ------------------------------------------------------------------------------

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_ACTION_KINDS: dict[str, Kind] = {
    "failed": "bounce",
    "error": "bounce",  # OpenSMTPD's non-standard word for failed
    "delayed": "delayed",
    "delivered": "not-bounce",
    "relayed": "not-bounce",
    "expanded": "not-bounce",
}
_STATUS_CLASS_KINDS: dict[str, Kind] = {"5": "bounce", "4": "delayed", "2": "not-bounce"}


def _field_blocks(part: Message) -> list[Message]:
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
    chunks = _PARAGRAPH_END.split(text.replace("\r\n", "\n").strip())
    return [HeaderParser().parsestr(chunk) for chunk in chunks if chunk.strip()]


def _status_reports(message: Message) -> list[Report]:
    blocks = [
        block
        for part in _parts(message)
        if part.get_content_type() in _STATUS_TYPES
        for block in _field_blocks(part)
    ]
    per_message = [b for b in blocks if not _header(b, "Final-Recipient")]
    reporting = next((_mta(_header(b, "Reporting-MTA")) for b in per_message), None)
    return [_recipient_report(b, reporting) for b in blocks if _header(b, "Final-Recipient")]


def _recipient_report(block: Message, reporting_mta: str | None) -> Report:
    recipient = _address(_header(block, "Original-Recipient")) or _address(
        _header(block, "Final-Recipient")
    )
    declared = re.search(_STATUS, _header(block, "Status"))
    status = declared[0] if declared else None
    action = (_header(block, "Action").lower().split() or [""])[0]
    kind = _ACTION_KINDS.get(action) or _STATUS_CLASS_KINDS.get((status or "5")[0], "bounce")
    mta = reporting_mta or _mta(_header(block, "Remote-MTA"))
    if kind == "not-bounce":
        return Report("not-bounce", recipient, status=status, reporting_mta=mta)
    # Without a Diagnostic-Code, the Status comment may say why: "4.0.0 (host name
    # lookup failure)".
    diagnostic = _header(block, "Diagnostic-Code")
    if not diagnostic:
        diagnostic = ";" + (re.findall(r"\((.*)\)", _header(block, "Status")) or [""])[0]
    reply = _read_reply(diagnostic.partition(";")[2] if ";" in diagnostic else diagnostic)
    return _failure(kind, recipient, reply, mta, _better_status(status, reply.status))


# --- plain-text bounces ----------------------------------------------------------------

_ADDR = r"[^\s<>()\[\]\"',;:@]+@[\w-]+(?:\.[\w-]+)*"


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class TextFormat:
    """A plain-text bounce format: how it begins (`intro`, whose `host` group names the
    reporting host when it does), the lines that name a failed recipient (`addr`
    group; what follows on the line is part of the diagnostic), and the words of its
    delay warnings. The lines after a recipient, up to the next one, hold its reply."""

    mta: str
    intro: re.Pattern[str]
    recipients: tuple[re.Pattern[str], ...]
    delayed: re.Pattern[str] | None = None
    host: re.Pattern[str] | None = None


_ANGLED_RECIPIENT = _c(rf"^<(?P<addr>{_ADDR})>:?\s*(?P<rest>.*)$")

TEXT_FORMATS: tuple[TextFormat, ...] = (
    TextFormat(
        "Postfix",
        _c(r"^This is the (?:mail system|Postfix program) at host (?P<host>[\w.-]+?)\.?$"),
        # "<a@b> (expanded from <list@b>): host ... said: ...": we sent to list@b.
        (
            _c(rf"^<{_ADDR}> \(expanded from <(?P<addr>{_ADDR})>\):\s*(?P<rest>.*)$"),
            _ANGLED_RECIPIENT,
        ),
        delayed=_c(r"THIS IS A WARNING ONLY"),
    ),
    TextFormat(
        "Exim",
        _c(r"^This message was created automatically by mail delivery software"),
        (_c(rf"^ {{1,3}}(?P<addr>{_ADDR})(?:\s+<[^>]*>)?(?::\s*(?P<rest>.*))?$"),),
        delayed=_c(r"has not yet been delivered|^\s*Delay reason:"),
    ),
    TextFormat(
        "Sendmail",
        _c(
            r"-{3,}\s*The following addresse?s? had (?:permanent fatal errors|delivery problems"
            r"|transient non-fatal errors)"
        ),
        (_ANGLED_RECIPIENT,),
        delayed=_c(r"transient non-fatal errors|Warning: could not send message for past"),
    ),
    TextFormat(
        "qmail",
        _c(
            r"^(?:Hi\. This is the qmail(?:-send)? program|This is the mail delivery agent"
            r"|Hi\. The MTA program) at (?P<host>[\w.-]+?)\.?$"
        ),
        (_ANGLED_RECIPIENT,),
    ),
    TextFormat(
        "Exchange / Outlook.com",
        _c(
            r"^Delivery has failed to these recipients or groups:|^Your message to \S+ couldn't "
            r"be delivered|^Diagnostic information for administrators:"
        ),
        (
            _c(rf"^Your message to (?P<addr>{_ADDR}) couldn't be delivered\.?(?P<rest>.*)$"),
            _c(
                rf"^\s*(?:[^<>()@\n]*[(<])?(?:mailto:)?(?P<addr>{_ADDR})(?:<mailto:[^>]*>)?[)>]?\s*$"
            ),
        ),
        delayed=_c(r"^Delivery (?:has been|is) delayed"),
        host=_c(r"^Generating server:\s*(?P<host>[\w.-]+)"),
    ),
    TextFormat(
        "Gmail",
        _c(
            r"^\*\* (?:Address not found|Message not delivered|Message blocked|Delivery incomplete)"
            r" \*\*|^Delivery to the following recipients? (?:failed|has been delayed)"
        ),
        (
            _c(rf"(?:wasn't delivered|delivering your message) to (?P<addr>{_ADDR})(?P<rest>.*)"),
            _c(rf"^\s+(?P<addr>{_ADDR})\s*$"),
        ),
        delayed=_c(r"Delivery incomplete|has been delayed|temporary problem delivering"),
    ),
    TextFormat(
        "Yahoo",
        _c(r"^Sorry, we were unable to deliver your message to the following address"),
        (_ANGLED_RECIPIENT,),
    ),
)

# Where a plain-text notification ends and the returned message begins.
_TEXT_END = _c(
    r"^\s*(?:-{2,}\s*)?(?:This is a copy of (?:the|your) message|Below this line is a copy"
    r"|Original message (?:follows|headers)|Original message\s*-{2,}|Message header follows"
    r"|Return-Path:|Received:)"
)
_DAEMON = _c(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon|mdaemon)@")
_FAILURE_SUBJECT = _c(
    r"undeliver|returned mail|delivery (?:status notification|failure|failed|has failed|problem)"
    r"|failure notice|mail delivery failed|could not be delivered|not delivered|delayed mail"
    r"|non remis|unzustellbar|nicht zustellbar|no entregado|non recapitabile|не доставлено"
)
_DELAY_SUBJECT = _c(r"\bdelay|warning: message .* delayed|still being retried")


def _text_bounces(message: Message, raw: bytes) -> list[Report]:
    text = _notification(message)
    for fmt in TEXT_FORMATS:
        intro = fmt.intro.search(text)
        if intro is None:
            continue
        body = text[intro.start() :]
        end = _TEXT_END.search(body, intro.end() - intro.start())
        body = body[: end.start()] if end else body
        blocks = _blocks(body, fmt)
        if blocks:
            kind: Kind = "delayed" if fmt.delayed and fmt.delayed.search(body) else "bounce"
            host = (fmt.host or fmt.intro).search(body)
            mta = host["host"].lower() if host and host.groupdict().get("host") else None
            return [_failure(kind, a, _read_reply(lines), mta) for a, lines in blocks]
    return _unknown_format(message, text, raw)


def _blocks(body: str, fmt: TextFormat) -> list[tuple[str, str]]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in body.splitlines():
        for pattern in fmt.recipients:
            match = pattern.search(line)
            if match:
                current = blocks.setdefault(match["addr"].lower(), [])
                current.append(match.groupdict().get("rest") or "")
                break
        else:
            if current is not None:
                current.append(line)
    return [(address, "\n".join(lines).strip("\n")) for address, lines in blocks.items()]


def _unknown_format(message: Message, text: str, raw: bytes) -> list[Report]:
    """A failure notice in a format `TEXT_FORMATS` does not know: flufl.bounce's
    detectors, or Exim's X-Failed-Recipients, name the recipients. With none, a notice
    from a mailer daemon is one report without recipient (the listener still has the
    VERP address's token); a failure subject alone may be a human's "Re: not delivered"."""
    subject = _header(message, "Subject")
    failed = _headers(message, "X-Failed-Recipients")
    daemon = _DAEMON.search(parseaddr(_header(message, "From"))[1])
    if not (daemon or failed or _FAILURE_SUBJECT.search(subject)):
        return []
    temporary, permanent = _flufl_failures(raw)
    found: dict[str | None, Kind] = {}
    for item in permanent:
        found[_address(item.decode("ascii", "replace"))] = "bounce"
    for item in temporary:
        found.setdefault(_address(item.decode("ascii", "replace")), "delayed")
    for _, address in getaddresses(failed):
        found.setdefault(_address(address), "bounce")
    found.pop(None, None)
    if not found:
        if not daemon:
            return []
        found[None] = "delayed" if _DELAY_SUBJECT.search(subject) else "bounce"
    reply = _read_reply(text)
    return [_failure(kind, address, reply, None) for address, kind in found.items()]


def _flufl_failures(raw: bytes) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """flufl.bounce's temporary and permanent failures. Its detectors read headers as
    strings (the default policy's, not compat32's Header objects), and one indexes the
    From address unguarded: a message without a readable From is not given to it."""
    message = message_from_bytes(raw, policy=policy.default)
    try:
        if getaddresses([str(message.get("From", ""))]):
            return all_failures(message)
    except Exception:  # its heuristics may still trip on a malformed part
        log.warning("flufl.bounce failed on a failure notice", exc_info=True)
    return frozenset(), frozenset()


# --- auto-replies ----------------------------------------------------------------------

# Headers that mark an automatic answer (RFC 3834 and the de-facto ones), with the
# values that do (Auto-Submitted: no is a human's message).
AUTO_REPLY_HEADERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Auto-Submitted", _c(r"^(?!no\b)\S")),
    ("X-Autoreply", _c(r"\S")),
    ("X-Autorespond", _c(r"\S")),
    ("X-Autogenerated", _c(r"reply")),
    ("Precedence", _c(r"auto[_-]?reply")),
    ("X-Precedence", _c(r"auto[_-]?reply")),
)
# Subjects of out-of-office answers, at the start of the subject only: a human's
# "Re: vacation offers" must stay a reply.
AUTO_REPLY_SUBJECTS = _c(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto[- ]?reply|auto[- ]?response"
    r"|autosvar|abwesenheitsnotiz|automatische antwort|abwesend|r[ée]ponse automatique|absence"
    r"|absent(?:e)? du bureau|(?:on )?vacation(?: reply| notice| message)?\s*(?::|$)|away from"
    r"|respuesta autom[áa]tica|fuera de la oficina|risposta automatica|fuori (?:sede|ufficio)"
    r"|automatisch antwoord|afwezig|resposta autom[áa]tica|автоответ|автоматический ответ)"
)


def _autoreply(message: Message) -> list[Report]:
    marked = any(pattern.search(_header(message, name)) for name, pattern in AUTO_REPLY_HEADERS)
    if marked or AUTO_REPLY_SUBJECTS.search(_header(message, "Subject")):
        return [Report("autoreply", _address(_header(message, "From")))]
    return []
