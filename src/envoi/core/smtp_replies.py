"""What an SMTP reply says about a failed message (pure, no I/O).

Delivery's view of `core.bounces`: `classify(code, status, text)` reads one reply of
an SMTP session and gives seed 001's bounce class, hard or soft, whether the address
is to be quarantined, and the finer `reason` and seed 003's `error_code` behind them.
`core.bounces` holds the one ordered table of patterns and the mapping tables; this
module only adds what is particular to delivery: code 0 means that no SMTP answer came
at all (connection refused, dropped, timed out), which is temporary whatever its text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from envoi.core.bounces import (
    BOUNCE_CLASSES,
    HARD_CLASSES,
    QUARANTINE_REASONS,
    no_answer,
    status_from_text,
)
from envoi.core.bounces import PATTERNS as RULES
from envoi.core.bounces import classify as classify_failure

__all__ = [
    "BOUNCE_CLASSES",
    "HARD_CLASSES",
    "QUARANTINE_REASONS",
    "RULES",
    "Classification",
    "ReplyLike",
    "classify",
    "classify_reply",
    "status_from_text",
]


@dataclass(frozen=True)
class Classification:
    bounce_class: str  # seed 001's eight
    hard: bool
    quarantine: bool  # the address does not exist: quarantine it as `nonexistent`
    # The finer detail the three fields above derive from (`core.bounces`). Left out of
    # equality: two replies of one class, hardness and quarantine are handled alike.
    reason: str = field(default="undetermined", compare=False)
    error_code: int = field(default=0, compare=False)


class ReplyLike(Protocol):
    """What `classify_reply` reads: `delivery.interfaces.SmtpReply` is one."""

    @property
    def code(self) -> int: ...
    @property
    def status(self) -> str | None: ...
    @property
    def text(self) -> str: ...


def classify(code: int, status: str | None, text: str) -> Classification:
    """What a failed reply says (code 0: no answer at all, a temporary failure)."""
    verdict = no_answer(text) if code == 0 else classify_failure(code, status, text)
    return Classification(
        bounce_class=verdict.bounce_class,
        hard=verdict.hard,
        quarantine=verdict.quarantine,
        reason=verdict.reason,
        error_code=verdict.error_code,
    )


def classify_reply(reply: ReplyLike) -> Classification:
    return classify(reply.code, reply.status, reply.text)
