"""The remote server's SMTP reply inside a bounce's diagnostic text, and the classified
`Report` made from it, for the DSN (`dsn`) and plain-text (`textbounces`) readers.

A DSN's Diagnostic-Code and a plain-text bounce's lines quote the reply in many ways
("host mx said: 550 5.1.1 <a@b>... User unknown", "550-5.1.1" on each line of a
multi-line reply, qmail's "(#5.1.1)"): `read_reply` finds the reply code, the RFC 3463
status and the reply's text, and `failure` has `core.bounces.classify` judge them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from envoi.core.bounces import classify
from envoi.inbound.mime import PARAGRAPH_END
from envoi.inbound.reports import Kind, Report

# --- SMTP replies inside diagnostic text -----------------------------------------------

STATUS = r"[245]\.\d{1,3}\.\d{1,3}"
# A reply code, repeated by some relays ("550 550 5.1.1"), then maybe a status.
_CODE = rf"(?P<code>[245]\d\d)(?:[ -](?P=code))?(?:[ -]+#?(?P<status>{STATUS}))?(?!\d|\.\d)"
_AFTER_MARKER = re.compile(
    rf"(?:said|returned(?: was)?|was|reason|<<<|-->)\s*:?\s*['\"(]?#?{_CODE}", re.IGNORECASE
)
_AT_LINE_START = re.compile(rf"^[ \t>]*(?:\(reason:\s*)?['\"#]?{_CODE}", re.MULTILINE)
# qmail's "(#5.1.1)"; not the end of an IP address ("10.4.5.6").
_STATUS_ALONE = re.compile(rf"\(?#?(?<![\d.])(?P<status>{STATUS})(?!\.?\d)\)?")
_TRAILERS = re.compile(
    r"\(in reply to [^)]*\)|Giving up on \S+|\[(?:RCPT_TO|MAIL_FROM|DATA|CONNECT)[^\]]*\]",
    re.IGNORECASE,
)
_REPLY_END = re.compile(r"\n[ \t]*(?:\n|-{2,})")  # a blank line or a separator


@dataclass(frozen=True)
class Reply:
    code: int | None
    status: str | None
    text: str


def read_reply(text: str) -> Reply:
    """The remote server's reply in a diagnostic: code, status, and its text (without
    them, on one line), "host mx said: 550 5.1.1 <a@b>... User unknown" and the like."""
    match = _AFTER_MARKER.search(text) or _AT_LINE_START.search(text)
    if match:
        code, status = match["code"], match["status"]
        rest = _REPLY_END.split(text[match.end() :].strip("\n"), maxsplit=1)[0]
        # Multi-line replies repeat "550-5.1.1" on each line.
        repeated = rf"\b{code}[ -]{re.escape(status)}\b" if status else rf"\b{code}-"
        rest = re.sub(repeated, " ", rest)
        return Reply(int(code), status, _tidy(rest))
    first = PARAGRAPH_END.split(text.strip("\n"), maxsplit=1)[0]
    found = _STATUS_ALONE.search(first)
    if found:  # qmail: "Sorry, no mailbox here by that name. (#5.1.1)"
        return Reply(None, found["status"], _tidy(_STATUS_ALONE.sub(" ", first, count=1)))
    return Reply(None, None, _tidy(first))


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


def better_status(declared: str | None, in_text: str | None) -> str | None:
    """A DSN's Status field, unless it is generic (X.0.0) and the reply is precise."""
    if declared and in_text and declared.endswith(".0.0") and declared[0] == in_text[0]:
        return in_text
    return declared or in_text


def failure(
    kind: Kind, recipient: str | None, reply: Reply, mta: str | None, status: str | None = None
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
