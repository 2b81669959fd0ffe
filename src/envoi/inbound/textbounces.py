"""The plain-text bounces of real MTAs, which carry no `message/delivery-status` part.

`TEXT_FORMATS` is a table of data: Postfix, Exim, Sendmail, qmail, Exchange /
Outlook.com, Gmail and Yahoo, each known by how its notification begins, the lines that
name a failed recipient and the words of its delay warnings. For a message that says it
is a failure notice in a format not in the table (a mailer daemon's From, Exim's
X-Failed-Recipients, a failure subject), flufl.bounce's detectors (GNU Mailman's: about
twenty more formats) name the recipients.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses, parseaddr

from flufl.bounce import all_failures

from envoi.inbound import mime, replies
from envoi.inbound.mime import loose_pattern as _c
from envoi.inbound.reports import Kind, Report

log = logging.getLogger("envoi.inbound")
# flufl.bounce logs each of its detectors at INFO for every message it scans, and an
# error before raising it again: `_flufl_failures` logs that once, here.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

_ADDR = r"[^\s<>()\[\]\"',;:@]+@[\w-]+(?:\.[\w-]+)*"


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


def text_bounces(message: Message, raw: bytes) -> list[Report]:
    text = mime.notification(message)
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
            return [replies.failure(kind, a, replies.read_reply(lines), mta) for a, lines in blocks]
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
    subject = mime.header(message, "Subject")
    failed = mime.headers(message, "X-Failed-Recipients")
    daemon = _DAEMON.search(parseaddr(mime.header(message, "From"))[1])
    if not (daemon or failed or _FAILURE_SUBJECT.search(subject)):
        return []
    temporary, permanent = _flufl_failures(raw)
    found: dict[str | None, Kind] = {}
    for item in permanent:
        found[mime.mailbox(item.decode("ascii", "replace"))] = "bounce"
    for item in temporary:
        found.setdefault(mime.mailbox(item.decode("ascii", "replace")), "delayed")
    for _, address in getaddresses(failed):
        found.setdefault(mime.mailbox(address), "bounce")
    found.pop(None, None)
    if not found:
        if not daemon:
            return []
        found[None] = "delayed" if _DELAY_SUBJECT.search(subject) else "bounce"
    reply = replies.read_reply(text)
    return [replies.failure(kind, address, reply, None) for address, kind in found.items()]


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
