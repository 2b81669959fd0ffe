"""Delivery status notifications: RFC 3464 `message/delivery-status` and RFC 6533
`message/global-delivery-status` parts.

One report per per-recipient block (the blocks with a Final-Recipient), its kind from
`Action:` (else from the Status class), its reply from the Diagnostic-Code (else from
the Status comment), and the Reporting-MTA of the per-message block. `inbound.parsing`
reads DSNs before auto-replies because a DSN carries `Auto-Submitted: auto-replied` too.
"""

from __future__ import annotations

import re
from email.message import Message

from envoi.inbound import mime, replies
from envoi.inbound.reports import Kind, Report

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


def status_reports(message: Message) -> list[Report]:
    blocks = [
        block
        for part in mime.parts(message)
        if part.get_content_type() in _STATUS_TYPES
        for block in mime.field_blocks(part)
    ]
    per_message = [b for b in blocks if not mime.header(b, "Final-Recipient")]
    reporting = next((mime.mta(mime.header(b, "Reporting-MTA")) for b in per_message), None)
    return [_recipient_report(b, reporting) for b in blocks if mime.header(b, "Final-Recipient")]


def _recipient_report(block: Message, reporting_mta: str | None) -> Report:
    recipient = mime.mailbox(mime.header(block, "Original-Recipient")) or mime.mailbox(
        mime.header(block, "Final-Recipient")
    )
    declared = re.search(replies.STATUS, mime.header(block, "Status"))
    status = declared[0] if declared else None
    action = (mime.header(block, "Action").lower().split() or [""])[0]
    kind = _ACTION_KINDS.get(action) or _STATUS_CLASS_KINDS.get((status or "5")[0], "bounce")
    mta = reporting_mta or mime.mta(mime.header(block, "Remote-MTA"))
    if kind == "not-bounce":
        return Report("not-bounce", recipient, status=status, reporting_mta=mta)
    # Without a Diagnostic-Code, the Status comment may say why: "4.0.0 (host name
    # lookup failure)".
    diagnostic = mime.header(block, "Diagnostic-Code")
    if not diagnostic:
        diagnostic = ";" + (re.findall(r"\((.*)\)", mime.header(block, "Status")) or [""])[0]
    reply = replies.read_reply(diagnostic.partition(";")[2] if ";" in diagnostic else diagnostic)
    return replies.failure(kind, recipient, reply, mta, replies.better_status(status, reply.status))
