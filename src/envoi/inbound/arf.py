"""Complaints from feedback loops: RFC 5965 ARF reports (`multipart/report;
report-type=feedback-report`) and Microsoft's older JMRP complaints (the reported
message attached, no ARF part).

One `complaint` report per recipient its fields name (Original-Rcpt-To,
Removal-Recipient), else one for the recipient named in the reported message's own
headers (None when it is redacted or not one address), with the Feedback-Type and the
Reporting-MTA (or User-Agent) of the report.
"""

from __future__ import annotations

import re
from email.message import Message
from email.utils import getaddresses

from envoi.inbound import mime
from envoi.inbound.reports import Report


def complaints(message: Message) -> list[Report]:
    part = next(
        (p for p in mime.parts(message) if p.get_content_type() == "message/feedback-report"),
        None,
    )
    if part is None:
        return _jmrp(message)
    fields = mime.field_blocks(part)
    found = [mime.mailbox(v) for b in fields for v in mime.headers(b, "Original-Rcpt-To")]
    found += [mime.mailbox(v) for b in fields for v in mime.headers(b, "Removal-Recipient")]
    recipients: list[str | None] = list(dict.fromkeys(a for a in found if a))
    recipients = recipients or [_returned_recipient(message)]
    feedback_type = (_first(fields, "Feedback-Type").split() or ["abuse"])[0].lower()
    mta = mime.mta(_first(fields, "Reporting-MTA")) or _first(fields, "User-Agent")[:255] or None
    return [
        Report("complaint", r, reporting_mta=mta, feedback_type=feedback_type) for r in recipients
    ]


def _first(blocks: list[Message], name: str) -> str:
    return next((mime.header(block, name) for block in blocks if mime.headers(block, name)), "")


def _jmrp(message: Message) -> list[Report]:
    """Microsoft's older JMRP complaints: the reported message attached, no ARF part."""
    if not re.search(r"complaint about message from", mime.header(message, "Subject"), re.I):
        return []
    return [Report("complaint", _returned_recipient(message), feedback_type="abuse")]


def _returned_recipient(message: Message) -> str | None:
    """Who got the reported message, from its own headers (None when redacted)."""
    for returned in mime.returned_messages(message):
        for name in ("X-HmXmrOriginalRecipient", "To"):
            addresses = [a for _, a in getaddresses(mime.headers(returned, name))]
            if len(addresses) == 1:
                return mime.mailbox(addresses[0])
    return None
