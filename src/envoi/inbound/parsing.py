"""Reading one received feedback message into `Report`s (pure: bytes in, reports out).

What comes back to the bounce and feedback-loop addresses, read in this order:

1. ARF complaint reports (RFC 5965 `multipart/report; report-type=feedback-report`),
   and Microsoft's older JMRP complaints (the reported message attached, no ARF part):
   `inbound.arf`;
2. DSNs (RFC 3464 `message/delivery-status`, RFC 6533 `message/global-delivery-status`):
   one report per per-recipient block, its kind from `Action:`. Checked before the
   auto-reply headers because a DSN carries `Auto-Submitted: auto-replied` too:
   `inbound.dsn`;
3. the plain-text bounces of real MTAs (`TEXT_FORMATS`, a table of data: Postfix,
   Exim, Sendmail, qmail, Exchange / Outlook.com, Gmail, Yahoo); then, for a message
   that says it is a failure notice in a format not in the table, flufl.bounce's
   detectors (GNU Mailman's: about twenty more formats) name the recipients:
   `inbound.textbounces`;
4. auto-replies (RFC 3834 `Auto-Submitted`, `X-Autoreply`, out-of-office subjects):
   `inbound.autoreplies`;
5. anything else is `not-bounce` (a human reply, a newsletter, garbage).

Every bounce and delayed report is classified by `core.bounces.classify` from the
SMTP reply code, the RFC 3463 status and the diagnostic text found (`inbound.replies`).
The send it belongs to is named by `send_tokens` found in the returned message (its
`X-Envoi-Send` header and Message-ID) or in an auto-reply's In-Reply-To / References;
the listener adds the VERP token of the address the message came to.

The stdlib `email` package reads the MIME structure with its compat32 policy: it
keeps going through malformed headers where the newer policy can raise, and a parser
of mail that anyone may send must never fail (anything unreadable is `not-bounce`).
`inbound.mime` reads the parts and header values of such a message.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from email import message_from_bytes
from email.message import Message
from email.utils import parseaddr

from envoi.inbound import arf, autoreplies, dsn, mime, textbounces
from envoi.inbound.reports import Report

log = logging.getLogger("envoi.inbound")

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
        arf.complaints(message)
        or dsn.status_reports(message)
        or textbounces.text_bounces(message, raw)
        or autoreplies.autoreply(message)
        or [NOT_BOUNCE]
    )
    evidence = mime.evidence(message)
    ids = tuple(
        dict.fromkeys(i for m in _ID_HEADER.finditer(evidence) for i in _ANGLED.findall(m[1]))
    )
    sender = mime.domain(parseaddr(mime.header(message, "From"))[1])
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
