"""What the inbound parser finds in one received message (no I/O).

A received message yields one `Report` per recipient it speaks of: a DSN names each
failed recipient, an ARF report the one complaining recipient, a plain-text bounce
of a real MTA usually one. `inbound.parsing.parse` makes them; `inbound.services`
applies them to the sends they name; `envoi bounce classify` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# bounce: a permanent or soft failure reported after delivery (out of band);
# delayed: a DSN with action "delayed" (a tempfail, never counted as a bounce);
# complaint: an ARF feedback report (abuse / fraud / not-spam ... see `feedback_type`);
# autoreply: vacation / out-of-office / auto-submitted answers (never a bounce);
# not-bounce: anything else (a human reply, a newsletter, garbage).
Kind = Literal["bounce", "delayed", "complaint", "autoreply", "not-bounce"]


@dataclass(frozen=True)
class Report:
    kind: Kind
    # The failed (or complaining) address, lower-cased, when the message names it.
    recipient: str | None = None
    # core.bounces: the fine-grained reason, seed 001's class, seed 003's error code,
    # and whether the failure is hard. None for complaints, autoreplies, not-bounces.
    reason: str | None = None
    bounce_class: str | None = None
    error_code: int | None = None
    hard: bool | None = None
    smtp_code: int | None = None  # the remote server's reply code (550), when given
    status: str | None = None  # RFC 3463 enhanced status code ("5.1.1"), when given
    diagnostic: str | None = None  # the remote server's text, whitespace collapsed
    reporting_mta: str | None = None  # who wrote the report (Reporting-MTA, or a guess)
    # ARF: Feedback-Type (abuse, fraud, virus, not-spam, other ...); None otherwise.
    feedback_type: str | None = None
    # What may name the original send, best first: the VERP token of the address the
    # report came to is added by the listener, not the parser. These come from the
    # returned message: the X-Envoi-Send header's token, and its Message-ID.
    send_tokens: tuple[str, ...] = field(default=())
    message_ids: tuple[str, ...] = field(default=())
