"""Applying a parsed report to the send it names (the rules; no SMTP, no threads).

The inbound listener calls `apply` once per report of a received message, and
`apply_unsubscribe` for a mailto unsubscribe, inside one transaction per message
that it commits before answering 250.

Finding the send: the VERP address's token (`send_id_hint`, verified by the listener
at RCPT), else the report's `X-Envoi-Send` tokens, else the Message-IDs of the
returned message (`<TOKEN@domain>`, the same `send` token). A report no genuine token
names is `unmatched`: nothing is written, there is not even a project to write to.

What a report writes (each with the send's dimensions, `spool.building.Dimensions`):
- bounce: a `bounce` event (`in_band` False). A hard bounce of an address that does
  not exist (`core.bounces.QUARANTINE_REASONS`) quarantines it `nonexistent`; a full
  or suspended mailbox that soft-bounced `soft_bounce_limit` times within
  `soft_bounce_days` is quarantined `inactive` (`soft_bounces`).
- delayed: a `tempfail` event (`in_band` False), nothing else.
- complaint: a `complaint` event; the profile is unsubscribed from the email's
  category and the address quarantined `spam`. `handled` says both happened: False
  when the send has no profile (a CSV recipient without one): the address is still
  quarantined. ARF `not-spam` and `auth-failure` reports are no complaints.
- autoreply, not-bounce: nothing.
Transactional (`is_urgent`) emails never quarantine (issue 3): their bounces and
complaints are recorded, their addresses stay mailable.

Idempotence: every applied report leaves a `ReceivedReport` row, unique per (send,
received message): the same message delivered again (an SMTP client that lost our
250 retries) is a `duplicate` and writes nothing.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.config import Settings
from envoi.core.bounces import QUARANTINE_REASONS, classify
from envoi.core.tokens import Signer
from envoi.emails.models import Email
from envoi.inbound.models import ReceivedReport
from envoi.inbound.reports import Report
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Profile
from envoi.quarantine import services as quarantine
from envoi.spool.building import Dimensions
from envoi.spool.models import SpoolEntry
from envoi.tracking.services import unsubscribe, unsubscribe_profile

log = logging.getLogger("envoi.inbound")

Outcome = Literal["recorded", "duplicate", "unmatched", "ignored"]

# Soft bounces that say the mailbox itself is in trouble (not this message or this
# sender): after enough of them the address is quarantined `inactive`.
SOFT_COUNTED_REASONS = ("mailbox_full", "mailbox_inactive")
# The same, among delivery's own permanent failures (the spool keeps seed 001's class
# as their reason): a 552 5.2.2 at RCPT is a soft bounce too.
SOFT_COUNTED_CLASSES = ("mailbox_full",)
# ARF feedback types that are not complaints (RFC 5965 `not-spam`; RFC 6591's DMARC
# authentication failure reports).
NOT_COMPLAINTS = frozenset({"not-spam", "auth-failure"})
_SMTP_TEXT = 1000  # SpoolEntry.smtp_text's size, kept for the event's diagnostic too
_MESSAGE_ID = re.compile(r"<?\s*([^<>@\s]+)@[^<>\s]*>?")


@dataclass(frozen=True)
class Applied:
    """What applying one report did (for the listener's metrics and log lines)."""

    kind: str
    outcome: Outcome
    send_id: int | None = None
    project_id: int | None = None
    quarantined: str | None = None  # the reason the address was quarantined for
    handled: bool | None = None  # complaints only


def message_key(raw: bytes) -> str:
    """What identifies a received message across deliveries: its Message-ID, or its
    bytes when it has none (SHA-256, hex)."""
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    message_id = str(headers.get("Message-ID") or "").strip()
    material = f"id:{message_id}".encode() if message_id else b"raw:" + raw
    return hashlib.sha256(material).hexdigest()


def send_id_of(signer: Signer, purpose: str, token: str) -> int | None:
    """The send id a genuine token of `purpose` carries, else None."""
    value = signer.unsign(purpose, token.strip().lower())
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def find_send(
    session: Session, signer: Signer, report: Report, send_id_hint: int | None
) -> SpoolEntry | None:
    """The spool row the report is about (see the module docstring), or None."""
    candidates: list[int] = [] if send_id_hint is None else [send_id_hint]
    for token in report.send_tokens:
        send_id = send_id_of(signer, "send", token)
        if send_id is not None:
            candidates.append(send_id)
    for message_id in report.message_ids:
        match = _MESSAGE_ID.fullmatch(message_id.strip())
        send_id = send_id_of(signer, "send", match[1]) if match else None
        if send_id is not None:
            candidates.append(send_id)
    for send_id in candidates:
        row = session.get(SpoolEntry, send_id)
        if row is not None:
            return row
    return None


def apply(
    session: Session,
    report: Report,
    *,
    send_id_hint: int | None,
    now: datetime,
    settings: Settings,
    message_key: str,
    signer: Signer | None = None,
) -> Applied:
    """Write what `report` means for its send (module docstring); the caller commits."""
    kind = report.kind
    if kind in {"autoreply", "not-bounce"} or (
        kind == "complaint" and report.feedback_type in NOT_COMPLAINTS
    ):
        return Applied(kind, "ignored")
    signer = signer or Signer(settings.resolved_secret_key())
    row = find_send(session, signer, report, send_id_hint)
    if row is None:
        log.info(
            "report names no send",
            extra={"kind": kind, "recipient": report.recipient, "hint": send_id_hint},
        )
        return Applied(kind, "unmatched")
    fields = _bounce_fields(report) if kind in {"bounce", "delayed"} else {}
    reason = fields.get("bounce_reason")
    if not _first_time(session, row, kind, reason, message_key, now):
        return Applied(kind, "duplicate", row.id, row.project_id)
    email_row = session.get(Email, row.email_id)
    urgent = bool(email_row is not None and email_row.is_urgent)
    data = _dimensions(session, row)
    if kind == "complaint":
        handled, quarantined = _complain(session, row, email_row, urgent, now)
        data |= {
            "handled": handled,
            "feedback_type": report.feedback_type,
            "reporting_mta": report.reporting_mta,
        }
        _event(session, row, "complaint", data, now)
        return Applied(kind, "recorded", row.id, row.project_id, quarantined, handled)
    data |= fields
    if kind == "delayed":
        _event(session, row, "tempfail", data, now)
        return Applied(kind, "recorded", row.id, row.project_id)
    _event(session, row, "bounce", data, now)
    quarantined = None if urgent else _quarantine_bounced(session, row, data, now, settings)
    return Applied(kind, "recorded", row.id, row.project_id, quarantined)


def apply_unsubscribe(
    session: Session, send_id: int, *, now: datetime, message_key: str
) -> Applied:
    """A message to the mailto List-Unsubscribe address of send `send_id` (verified by
    the listener): unsubscribe its recipient (`tracking.services.unsubscribe`, which
    records the `unsubscribe` event, method `mailto`), once per received message.
    `ignored` when the recipient was unsubscribed already."""
    row = session.get(SpoolEntry, send_id)
    if row is None:
        log.info("unsubscribe names no send", extra={"send_id": send_id})
        return Applied("unsubscribe", "unmatched")
    if not _first_time(session, row, "unsubscribe", None, message_key, now):
        return Applied("unsubscribe", "duplicate", row.id, row.project_id)
    changed = unsubscribe(session, send_id, "mailto", now)
    return Applied("unsubscribe", "recorded" if changed else "ignored", row.id, row.project_id)


def soft_bounces(session: Session, project_id: int, address: str, since: datetime) -> int:
    """How many times `address` soft-bounced for a full or suspended mailbox since
    `since`: reports received (`ReceivedReport`) and delivery's own permanent failures
    of that class (the spool), both read through their (project, recipient) index."""
    received = select(func.count()).where(
        ReceivedReport.project_id == project_id,
        ReceivedReport.recipient == address,
        ReceivedReport.received_at >= since,
        ReceivedReport.kind == "bounce",
        ReceivedReport.reason.in_(SOFT_COUNTED_REASONS),
    )
    in_band = select(func.count()).where(
        SpoolEntry.project_id == project_id,
        SpoolEntry.recipient == address,
        SpoolEntry.state == "permfail",
        SpoolEntry.reason.in_(SOFT_COUNTED_CLASSES),
        SpoolEntry.updated_at >= since,
    )
    return (session.scalar(received) or 0) + (session.scalar(in_band) or 0)


def quarantine_if_inactive(
    session: Session,
    project_id: int,
    address: str,
    *,
    now: datetime,
    settings: Settings,
    note: str,
) -> bool:
    """Quarantine `address` as `inactive` when it reached the soft-bounce limit."""
    since = now - timedelta(days=settings.soft_bounce_days)
    count = soft_bounces(session, project_id, address, since)
    if count < settings.soft_bounce_limit:
        return False
    note = f"{count} soft bounces in {settings.soft_bounce_days} days, the last: {note}"
    quarantine.add(session, project_id, address, "inactive", note=note[:1000], now=now)
    return True


# --- the parts ---------------------------------------------------------------------------


def _first_time(  # noqa: PLR0917 - one row's columns
    session: Session, row: SpoolEntry, kind: str, reason: str | None, key: str, now: datetime
) -> bool:
    """Remember that this message was applied to this send; False if it already was.

    An INSERT that does nothing on conflict, atomic on both back-ends, so two copies
    of one message applied at once by two threads still count once."""
    values = {
        "project_id": row.project_id,
        "send_id": row.id,
        "message_key": key,
        "kind": kind,
        "recipient": row.recipient,
        "reason": reason,
        "received_at": now,
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(ReceivedReport).values(values)
    statement = statement.on_conflict_do_nothing(index_elements=["send_id", "message_key"])
    return session.scalar(statement.returning(ReceivedReport.id)) is not None


def _dimensions(session: Session, row: SpoolEntry) -> dict[str, Any]:
    """The send's dimensions, as delivery's own events carry them."""
    campaign = session.get(Campaign, row.campaign_id) if row.campaign_id is not None else None
    dimensions = (
        Dimensions.named(campaign.id, campaign.post_type, campaign.message_type, campaign.tags)
        if campaign is not None
        else Dimensions.of(None)
    )
    data = dimensions.data(row.email_id, row.domain, row.language, row.id)
    data["router"] = row.router
    return data


def _bounce_fields(report: Report) -> dict[str, Any]:
    """A bounce's or delay's fields; classified here when the parser could not."""
    reason, bounce_class, error_code, hard = (
        report.reason,
        report.bounce_class,
        report.error_code,
        report.hard,
    )
    if reason is None or bounce_class is None:
        found = classify(report.smtp_code, report.status, report.diagnostic or "")
        reason, bounce_class, error_code, hard = (
            found.reason,
            found.bounce_class,
            found.error_code,
            found.hard,
        )
    return {
        "bounce_class": bounce_class,
        "bounce_reason": reason,
        "error_code": error_code,
        "hard": bool(hard) and report.kind == "bounce",
        "smtp_code": report.smtp_code,
        "smtp_status": report.status,
        "smtp_text": (report.diagnostic or "")[:_SMTP_TEXT] or None,
        "reporting_mta": report.reporting_mta,
        "in_band": False,
    }


def _event(
    session: Session, row: SpoolEntry, kind: str, data: dict[str, Any], now: datetime
) -> None:
    session.add(
        OutboxEvent(
            project_id=row.project_id,
            kind=kind,
            occurred_at=now,
            campaign_id=row.campaign_id,
            email_id=row.email_id,
            profile_id=row.profile_id,
            recipient=row.recipient,
            data=data,
        )
    )


def _quarantine_bounced(
    session: Session, row: SpoolEntry, data: dict[str, Any], now: datetime, settings: Settings
) -> str | None:
    """Quarantine the address of a bounced send when the bounce says so; the reason."""
    if row.recipient is None:  # erased meanwhile
        return None
    reason = data["bounce_reason"]
    note = " ".join(
        f"bounce of send {row.id} (campaign {row.campaign_id}): {data['smtp_code'] or ''} "
        f"{data['smtp_status'] or ''} {data['smtp_text'] or ''}".split()
    )
    if data["hard"] and reason in QUARANTINE_REASONS:
        quarantine.add(session, row.project_id, row.recipient, "nonexistent", note=note, now=now)
        return "nonexistent"
    if reason in SOFT_COUNTED_REASONS and quarantine_if_inactive(
        session, row.project_id, row.recipient, now=now, settings=settings, note=note
    ):
        return "inactive"
    return None


def _complain(
    session: Session, row: SpoolEntry, email_row: Email | None, urgent: bool, now: datetime
) -> tuple[bool, str | None]:
    """Unsubscribe the profile from the email's category and quarantine the address as
    spam (not for a transactional email). Whether the complaint was handled (the
    profile was found and unsubscribed; the quarantine needs no profile), and the
    quarantine reason applied."""
    handled = False
    if row.profile_id is not None and email_row is not None:
        profile = session.get(Profile, row.profile_id)
        if profile is not None:
            unsubscribe_profile(session, profile.id, email_row.category_id, now)
            handled = True
    if row.recipient is None or urgent:
        return handled, None
    note = f"complaint about send {row.id} (campaign {row.campaign_id})"
    quarantine.add(session, row.project_id, row.recipient, "spam", note=note, now=now)
    return handled, "spam"
