"""What an SMTP reply says about a failed message: its bounce class (pure, no I/O).

The eight classes are seed 001's: `user_unknown`, `user_recycled`, `mailbox_full`,
`block_content`, `block_timeout`, `block_other`, `other_soft`, `other_hard`.

`classify` reads the RFC 3463 enhanced status code first, because it is the part of
a reply that means the same thing at every provider, then the diagnostic text, which
is the only clue when the status is missing or generic (`5.0.0`, `5.5.0`: Outlook says
"mailbox unavailable" for an unknown user under 5.5.0, Exim sends no status at all).
Both are read through one ordered table, `RULES`: the first rule whose status pattern
and text pattern both match wins; a reply no rule matches is `other_hard` when
permanent (5xx) and `other_soft` otherwise (4xx, or code 0: no answer at all).

- `hard`: a hard bounce, a permanent (5xx) failure of the address itself
  (`user_unknown`, `user_recycled`, `other_hard`). A full mailbox or a block refuses
  this message, not the address, so it is not hard even with a 5xx code.
- `quarantine`: the address does not exist (a 5xx `user_unknown` or `user_recycled`):
  delivery quarantines it as `nonexistent`. A 4xx "user unknown" (greylisting servers
  that verify recipients lazily say so) never quarantines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

BOUNCE_CLASSES: tuple[str, ...] = (
    "user_unknown",
    "user_recycled",
    "mailbox_full",
    "block_content",
    "block_timeout",
    "block_other",
    "other_soft",
    "other_hard",
)
HARD_CLASSES = frozenset({"user_unknown", "user_recycled", "other_hard"})
NONEXISTENT_CLASSES = frozenset({"user_unknown", "user_recycled"})


@dataclass(frozen=True)
class Classification:
    bounce_class: str
    hard: bool
    quarantine: bool  # the address does not exist: quarantine it as `nonexistent`


class ReplyLike(Protocol):
    """What `classify_reply` reads: `delivery.interfaces.SmtpReply` is one."""

    @property
    def code(self) -> int: ...
    @property
    def status(self) -> str | None: ...
    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class Rule:
    """`status`, `text` and `code` are regular expressions; None matches anything.

    `status` must match the whole enhanced status code, `code` the whole reply code
    ("0" when there was no answer); `text` is searched in the lower-cased text."""

    bounce_class: str
    status: str | None = None
    text: str | None = None
    code: str | None = None


# Words of the diagnostic texts, by what they blame.
_SENDER = r"sender address rejected|sender verify|verification failed for <"
_RECYCLED = (
    r"\b(disabled|deactivated|inactive|suspended|recycled|expired|closed|no longer (active"
    r"|in use|available))\b"
)
_UNKNOWN = (
    r"user ?unknown|unknown (user|recipient|mailbox|local ?part|address)|no such (user|mailbox"
    r"|recipient|address|account)|(does not|doesn't|do not) exist|not exist|mailbox "
    r"unavailable|mailbox not found|recipient not found|user not found|address not found"
    r"|invalid (recipient|mailbox|address)|recipient (address )?rejected: access denied"
    r"|unrouteable address|no mailbox here|doesn't have an? [\w.-]+ account"
    r"|bad destination mailbox|not a valid (mailbox|recipient)|account (is )?unavailable"
)
_FULL = (
    r"quota|mailbox (is )?full|mailbox size limit|insufficient (storage|disk space)"
    r"|out of storage|storage (space )?(exceeded|full)|full mailbox"
)
# Reputation, authentication and rate: the sender or its IP is refused, not the content.
_REPUTATION = (
    r"black ?list|block ?list|deny ?list|\blisted (in|on|at|by)\b|in .{0,40}\blist\b"
    r"|spamhaus|spamcop|barracuda|\brbl\b|dnsbl|reputation|banned|blocked using"
    r"|\bip\b.{0,60}\b(blocked|block|not (allowed|authorized|accepted))|not authorized"
    r"|unauthenticated|authenticat|dmarc|\bspf\b|dkim|rate limit|unusual rate|too many"
    r"|throttl|volume|complaints|relay access denied|relaying denied"
)
_CONTENT = (
    r"spam|unsolicited|content|phish|virus|malware|suspicious|bulk mail"
    r"|message (was )?rejected|looks like|security (issue|risk)"
)
_TIMEOUT = r"timed? ?out|timeout|delivery time expired|no answer|connection (lost|dropped|reset)"
_BLOCK = r"block|denied|prohibit|policy|refused|not accepted|rejected"
_GREYLIST = r"grey ?list|gray ?list|greylisted|try again later"

RULES: tuple[Rule, ...] = (
    # No answer at all: the text is the client's own account of the failure.
    Rule("block_timeout", None, _TIMEOUT, code="0"),
    Rule("other_soft", code="0"),
    # Greylisting is a scheduled retry, not a block.
    Rule("other_soft", r"4\.\d{1,3}\.\d{1,3}", _GREYLIST),
    # X.1.7 / X.1.8: the *sender's* address is refused; the recipient may be fine.
    Rule("block_other", r"[45]\.1\.[78]"),
    Rule("block_other", None, _SENDER),
    Rule("user_recycled", r"[45]\.1\.6"),
    Rule("user_recycled", r"[45]\.2\.1", _RECYCLED),
    Rule("user_unknown", r"[45]\.1\.(0|1|2|3|10)"),
    # Microsoft 365 directory-based edge blocking: 5.4.1 "Recipient address rejected:
    # Access denied" names an address that is not in the tenant.
    Rule("user_unknown", r"5\.4\.1", r"recipient|access denied"),
    Rule("mailbox_full", r"[45]\.2\.2"),
    Rule("mailbox_full", r"[45]\.2\.[03]", _FULL),
    Rule("block_timeout", r"[45]\.4\.[1247]"),
    # X.4.5: the sending account's quota at a relay, not the recipient's mailbox.
    Rule("block_other", r"[45]\.4\.5"),
    Rule("block_other", r"[45]\.7\.\d{1,3}", _REPUTATION),
    Rule("block_content", r"[45]\.7\.\d{1,3}", _CONTENT),
    Rule("block_other", r"[45]\.7\.\d{1,3}"),
    Rule("block_content", r"[45]\.6\.\d{1,3}"),  # media / content conversion errors
    Rule("other_hard", r"5\.3\.4"),  # message too big for the system
    Rule("other_soft", r"4\.5\.3"),  # too many recipients in this transaction
    Rule("other_soft", r"4\.3\.\d{1,3}"),  # the receiving system's own trouble
    # The text, whatever (or where no) status.
    Rule("user_recycled", None, r"mailbox (is )?" + _RECYCLED + r"|account (is )?" + _RECYCLED),
    Rule("user_unknown", None, _UNKNOWN),
    Rule("mailbox_full", None, _FULL),
    Rule("block_other", None, _REPUTATION),
    Rule("block_content", None, _CONTENT),
    Rule("block_timeout", None, _TIMEOUT),
    Rule("other_soft", None, _GREYLIST),
    Rule("block_other", None, _BLOCK),
)

_Compiled = tuple[str, re.Pattern[str] | None, re.Pattern[str] | None, re.Pattern[str] | None]
_COMPILED: tuple[_Compiled, ...] = tuple(
    (
        rule.bounce_class,
        re.compile(rule.status) if rule.status else None,
        re.compile(rule.text) if rule.text else None,
        re.compile(rule.code) if rule.code else None,
    )
    for rule in RULES
)
# An enhanced status code at the start of the text, after an optional reply code:
# "550-5.1.1 The email account ...", "5.7.1 Service unavailable".
_LEADING_STATUS = re.compile(r"^\s*(?:\d{3}[\s-]+)?([245]\.\d{1,3}\.\d{1,3})\b")


def status_from_text(text: str) -> str | None:
    """The enhanced status code a reply's text starts with, if any."""
    match = _LEADING_STATUS.match(text)
    return match.group(1) if match else None


def classify(code: int, status: str | None, text: str) -> Classification:
    """The bounce class of an SMTP reply (code 0: no answer at all)."""
    status = (status or status_from_text(text) or "").strip()
    lowered = " ".join(text.lower().split())
    fallback = "other_hard" if code >= 500 else "other_soft"
    bounce_class = _match(str(code), status, lowered) or fallback
    permanent = code >= 500
    return Classification(
        bounce_class=bounce_class,
        hard=permanent and bounce_class in HARD_CLASSES,
        quarantine=permanent and bounce_class in NONEXISTENT_CLASSES,
    )


def classify_reply(reply: ReplyLike) -> Classification:
    return classify(reply.code, reply.status, reply.text)


def _match(code: str, status: str, text: str) -> str | None:
    for bounce_class, status_pattern, text_pattern, code_pattern in _COMPILED:
        if code_pattern is not None and not code_pattern.fullmatch(code):
            continue
        if status_pattern is not None and not status_pattern.fullmatch(status):
            continue
        if text_pattern is not None and not text_pattern.search(text):
            continue
        return bounce_class
    return None
