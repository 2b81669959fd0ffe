"""Why a message failed, from what the receiving server said (pure, no I/O).

`classify(code, status, text)` names a fine-grained `reason` (one of `REASONS`) and
derives the rest from it through two tables of data:

- `BOUNCE_CLASSES_BY_REASON`: seed 001's eight classes, keyed by (reason, permanent);
- `ERROR_CODES_BY_REASON`: seed 003's numeric error codes, keyed by (reason, permanent).

A few wordings carry more than their reason (a Mail.ru spam refusal is error 16, a
connection that timed out is `block_timeout`): their `Pattern` names that override.

The reason comes from one ordered table of data, `PATTERNS`. The RFC 3463 enhanced
status code is read first, because it means the same at every provider; then the
diagnostic text of real MTAs, the only clue when the status is missing (Exim, Yahoo,
Mail.ru send none) or generic (`5.0.0`, `5.5.0`, and the `5.7.1` that Yandex gives
for an unknown user and everyone gives for a block). The first pattern whose reply
code, status and text patterns all match wins; no match is `undetermined`.

Hard or soft follows the reason, not only the reply class: `hard` is a permanent
failure whose class (derived from the reason) blames the address or nothing in
particular (`HARD_CLASSES`). A full mailbox, a block, a policy, a rate or an expiry
refuses this message or this sender, not the address: never hard, even with a 5xx
(a 5.2.2 full mailbox is soft). `quarantine` (the address does not exist, or no
longer does) is a permanent `QUARANTINE_REASONS` failure; a 4xx "user unknown"
(servers that verify recipients lazily say so) never quarantines.

`code` None or 0 means no SMTP reply code is known: a DSN may give only a status, and
delivery's code 0 is no answer at all. Permanence then comes from the status class,
else from the reason (`PERMANENT_BY_NATURE`), unless the caller says (`permanent=`).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

REASONS: tuple[str, ...] = (
    "user_unknown",  # the mailbox does not exist
    "host_unknown",  # the domain does not exist (or accepts no mail: null MX)
    "mailbox_full",  # over quota
    "mailbox_inactive",  # disabled, suspended, moved, recycled
    "content_rejected",  # spam, virus, suspicious content
    "reputation",  # the sending IP or domain is blocked: blocklists, complaints
    "policy",  # local policy, authentication (SPF / DKIM / DMARC), sender refused
    "rate_limited",  # too much too fast, greylisting: come back later
    "expired",  # the relay gave up retrying (delivery time expired)
    "relaying_denied",  # the server does not take mail for that domain from us
    "message_too_big",  # the message exceeds a size limit
    "system_error",  # the receiving system's own trouble
    "network_error",  # no answer, refused or dropped connection, TLS failure
    "undetermined",  # nothing says why
)

# Seed 001's bounce classes (get_message_stats' bounces_*).
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

# Seed 003's error codes (SendStatistics `errors`), with the table's own wording.
ERROR_CODES: dict[int, str] = {
    0: "retry",  # Повторная попытка отправки
    1: "mail server unavailable (501)",  # Почтовый сервер недоступен (501)
    2: "sending attempt ignored",  # Попытка отправки проигнорирована
    3: "message unfrozen by timer",  # Сообщение разморожено по таймеру
    4: "connection forbidden",  # Соединение запрещено
    5: "message frozen",  # Сообщение заморожено
    6: "domain does not exist",  # Домен не существует
    7: "TLS error on connection",  # Ошибка TLS при соединении
    8: "TLS session error",  # Ошибка TLS сессии
    9: "connection closed",  # Закрытое соединение
    10: "frozen",  # Заморожен
    11: "address does not exist",  # Адрес не существует
    12: "repeated timeout",  # Повторный таймаут
    13: "mailbox does not exist",  # Почта не существует
    14: "spam",  # СПАМ
    15: "mailbox full",  # Переполненый ящик
    16: "Mail.ru spam",  # Mail.ru СПАМ
    17: "missing technical records",  # Отсутствие технических записей (SPF/DKIM/DMARC)
    18: "error 18",  # Ошибка 18
    44: "response timeout exceeded",  # Превышен интервал ожидания ответа
    45: "refused",  # Отказ от приема
    46: "mail server overloaded",  # Почтовый сервер перегружен
    51: "retry time exceeded (501)",  # Превышено время повторной отправки (501)
    53: "blocked by greylisting",  # Заблокирован graylisting
    110: "mail server unavailable (505)",  # Почтовый сервер недоступен (505)
    111: "suspected greylisting",  # Подозрение на graylisting
    113: "blacklist",  # Blacklist
}

# (reason, permanent) → seed 001's class. A permanent failure that blames nothing
# in particular is `other_hard`, a temporary one `other_soft`.
BOUNCE_CLASSES_BY_REASON: dict[tuple[str, bool], str] = {
    ("user_unknown", True): "user_unknown",
    ("user_unknown", False): "user_unknown",
    ("host_unknown", True): "user_unknown",
    ("host_unknown", False): "user_unknown",
    ("mailbox_full", True): "mailbox_full",
    ("mailbox_full", False): "mailbox_full",
    ("mailbox_inactive", True): "user_recycled",
    ("mailbox_inactive", False): "user_recycled",
    ("content_rejected", True): "block_content",
    ("content_rejected", False): "block_content",
    ("reputation", True): "block_other",
    ("reputation", False): "block_other",
    ("policy", True): "block_other",
    ("policy", False): "block_other",
    # A permanent refusal for volume blocks the sender; a temporary one is a deferral.
    ("rate_limited", True): "block_other",
    ("rate_limited", False): "other_soft",
    ("expired", True): "block_timeout",
    ("expired", False): "block_timeout",
    ("relaying_denied", True): "block_other",
    ("relaying_denied", False): "block_other",
    ("message_too_big", True): "other_hard",
    ("message_too_big", False): "other_soft",
    ("system_error", True): "other_hard",
    ("system_error", False): "other_soft",
    ("network_error", True): "other_hard",
    ("network_error", False): "other_soft",
    ("undetermined", True): "other_hard",
    ("undetermined", False): "other_soft",
}

# (reason, permanent) → seed 003's error code; `Pattern.error_code` refines it.
ERROR_CODES_BY_REASON: dict[tuple[str, bool], int] = {
    ("user_unknown", True): 11,
    ("user_unknown", False): 11,
    ("host_unknown", True): 6,
    ("host_unknown", False): 6,
    ("mailbox_full", True): 15,
    ("mailbox_full", False): 15,
    # "Почта не существует": the mailbox is gone (disabled, moved), the address known.
    ("mailbox_inactive", True): 13,
    ("mailbox_inactive", False): 13,
    ("content_rejected", True): 14,
    ("content_rejected", False): 14,
    ("reputation", True): 113,
    ("reputation", False): 113,
    # "Отказ от приема"; authentication failures are 17 (their patterns say so).
    ("policy", True): 45,
    ("policy", False): 45,
    ("rate_limited", True): 46,
    ("rate_limited", False): 46,
    ("expired", True): 51,
    ("expired", False): 51,
    ("relaying_denied", True): 45,
    ("relaying_denied", False): 45,
    ("message_too_big", True): 45,
    ("message_too_big", False): 45,
    ("system_error", True): 110,
    ("system_error", False): 46,
    ("network_error", True): 110,
    ("network_error", False): 1,
    ("undetermined", True): 45,
    ("undetermined", False): 0,
}

# Hard bounces: a permanent failure whose class blames the address (unknown, recycled)
# or nothing in particular (`other_hard`). Since the class follows the reason, so does
# hardness: a permanent full mailbox, block, policy, rate or expiry is soft.
HARD_CLASSES = frozenset({"user_unknown", "user_recycled", "other_hard"})
# Permanent failures that say the address does not exist (any more): quarantine it.
QUARANTINE_REASONS = frozenset({"user_unknown", "host_unknown", "mailbox_inactive"})
# Reasons that are permanent by their nature, when neither code nor status says.
PERMANENT_BY_NATURE = frozenset(
    {"user_unknown", "host_unknown", "mailbox_inactive", "relaying_denied", "message_too_big"}
)


@dataclass(frozen=True)
class Verdict:
    reason: str  # one of REASONS
    bounce_class: str  # seed 001's eight
    error_code: int  # seed 003's table
    hard: bool
    quarantine: bool  # the address does not exist: quarantine it as `nonexistent`


@dataclass(frozen=True)
class Pattern:
    """One row of `PATTERNS`. `code`, `status` and `text` are regular expressions;
    None matches anything.

    `code` must match the whole reply code ("0" when none is known), `status` the
    whole enhanced status code ("" when none is known), and `text` is searched in
    the text lower-cased, accents stripped, whitespace collapsed. `error_code` and
    `bounce_class`, when given, override the reason's tables for this wording."""

    reason: str
    status: str | None = None
    text: str | None = None
    code: str | None = None
    error_code: int | None = None
    bounce_class: str | None = None


def verdict(
    reason: str, permanent: bool, *, error_code: int | None = None, bounce_class: str | None = None
) -> Verdict:
    """The verdict of a known reason (e.g. delivery's own `expired`)."""
    bounce_class = bounce_class or BOUNCE_CLASSES_BY_REASON[(reason, permanent)]
    if error_code is None:
        error_code = ERROR_CODES_BY_REASON[(reason, permanent)]
    return Verdict(
        reason=reason,
        bounce_class=bounce_class,
        error_code=error_code,
        hard=permanent and bounce_class in HARD_CLASSES,
        quarantine=permanent and reason in QUARANTINE_REASONS,
    )


# --- the patterns ----------------------------------------------------------------------
# Written by hand: no kept Python library classifies bounce reasons (sisimai, the
# reference, is Perl / Ruby / Go); its reason names and the providers' own help pages
# are where these wordings come from. The words of the texts, by what they blame:

_GREYLIST = r"gr[ae]y[- ]?list|postgrey"
# The sender's address, not the recipient's: the recipient may be fine.
_SENDER = (
    r"sender address rejected|sender verify|verification failed for <"
    r"|sender (domain |address )?(rejected|refused|not (allowed|permitted))"
    r"|(bad|invalid|unknown) sender|sender (domain|address) (does not exist|not found|unknown)"
    # A relay refusing our own account (Mail.ru: "message sending for this account is
    # disabled"): the recipient's mailbox is not the one disabled.
    r"|sending for this account|account .{0,30}(not allowed|blocked) (to|from) send"
)
_RELAY = (
    r"relay(ing)? (access )?(denied|not permitted|prohibited|not allowed)|not permitted to relay"
    r"|unable to relay|(we|i) do not relay|no relaying|isn'?t in my list of allowed rcpthosts"
)
# Mail.ru's own refusal for spam ("550 spam message rejected. Please visit
# http://help.mail.ru/notspam-support/..."): seed 003 counts it apart (16).
_MAILRU_SPAM = r"^spam message rejected|notspam-support|mail\.ru\b.*\bspam\b|\bspam\b.*\bmail\.ru\b"
_INACTIVE = (
    r"\b(mailbox|mail box|account|user|recipient|addressee)\b( \S+){0,4} (is |has been |was "
    r"|temporarily |currently |permanently )*(disabled|deactivated|inactive|suspended|closed"
    r"|frozen|locked|discontinued|archived|recycled)\b"
    r"|\b(disabled|deactivated|inactive|suspended|frozen|closed|dormant) (mailbox|account|user"
    r"|recipient|address)|no longer (active|in use|available|valid|accepts? mail)"
    r"|moved; no forwarding|mailbox has moved|(account|mailbox) (has )?expired"
    # Yandex: "Policy rejection on the target address" = the account is blocked.
    r"|policy rejection on the target address|boite du destinataire archivee|recipient suspend"
)
_HOST = (
    r"host or domain name not found|domain (name )?not found|no such domain|unknown domain"
    r"|domain (does not|doesn'?t) exist|nxdomain|name service error|host unknown|unknown host"
    r"|accepts no mail|null mx|unrouteable (mail )?domain|couldn'?t find any host"
)
_UNKNOWN = (
    r"user ?unknown|unknown (user|recipient|mailbox|local ?part|address|e-?mail address)"
    r"|no such (user|mailbox|recipient|address|account|person)|(user|recipient|mailbox|address"
    r"|account|addressee)\b.{0,40}\b(does not|doesn'?t|do not|not) exist"
    r"|mailbox (is )?unavailable|mailbox not found|recipient not found|user not found"
    r"|address not found|invalid (recipient|mailbox|address|user)|recipient (address )?rejected: "
    r"access denied|unrouteable address|no mailbox here|doesn'?t have an? [\w.-]+ account"
    r"|bad destination mailbox|not a valid (mailbox|recipient|user)|account (is )?unavailable"
    r"|recipientnotfound|destinataire invalide|utilisateur inconnu|is not a known user"
    r"|no account by that name|addressee unknown"
)
# A sending quota at a relay reads like a full mailbox, but blames the sender.
_SENDING_QUOTA = r"sending (quota|limit)|(daily|hourly) (user )?(sending |message )?(quota|limit)"
_FULL = (
    r"quota|mailbox (is )?full|mailbox size limit|insufficient (storage|disk space)|out of storage"
    r"|storage (space )?(exceeded|full)|full mailbox|account is full|mailbox size exceeded"
    r"|not enough (storage|space)|boite (aux lettres )?pleine"
)
_SIZE = (
    r"message (size )?(exceeds|is too (big|large)|too (big|large))|size limit|message length"
    r"|exceeds (the )?(maximum|fixed|max) (message )?size|too large|mail size"
)
_EXPIRED = (
    r"delivery time expired|message expired|retry time(out)? (exceeded|not reached)"
    r"|(in|been in) the queue too long|too long in (the )?queue|cannot send message for \d"
    r"|could not be delivered (for|within|in) \d|giving up|gave up|lifetime exceeded"
)
_REPUTATION = (
    r"black ?list|block ?list|deny ?list|\blisted (in|on|at|by)\b|in .{0,40}\blist\b"
    r"|spamhaus|spamcop|barracuda|sorbs|\brbl\b|dnsbl|\bdbl\b|reputation|banned|blocked using"
    r"|spam statistics|complaints|unsolicited mail originating from your"
    r"|\bip\b.{0,60}\b(blocked|block|not (allowed|authorized|accepted))|traffic not accepted"
    r"|not currently accepting mail from your|permanently deferred"
    # Orange: "Service refuse. Veuillez essayer plus tard" (OFR_999): a temporary
    # blocklisting of the sending address after complaints.
    r"|service refuse|\bofr_999\b"
)
# Authentication and technical records (SPF / DKIM / DMARC / PTR): seed 003's 17.
_AUTH = (
    r"\bdmarc\b|\bspf\b|\bdkim\b|unauthenticated|not authenticated|authentication (check|fail)"
    r"|(not|n'?t) pass authentication|\bptr\b|reverse dns|\brdns\b"
    r"|cannot find your (reverse )?hostname|must authenticate"
)
_CONTENT = (
    r"spam|unsolicited|content|phish|virus|malware|infected|suspicious|bulk mail|looks like"
    r"|security (issue|risk)|attachment|forbidden (file|extension)"
)
_RATE = (
    r"rate limit|ratelimit|rate[- ]limited|receiving mail (at a rate|too quickly)"
    r"|too many (connections|messages|emails|mails|recipients|sessions|concurrent)|too fast"
    r"|slow down|throttl|excessive (volume|number)|(sending|message|connection) rate"
    r"|unusual rate|trop de connexions"
)
# A server that demands TLS refuses us by policy; a TLS failure is the network's.
_TLS_REQUIRED = r"\b(tls|starttls|encryption)\b.{0,30}\brequired|must issue a starttls"
_TLS_SESSION = r"tls session|ssl (read|write)|decryption failed|bad record mac"
_TLS = r"\b(tls|ssl|starttls)\b|certificate|handshake"
_TIMEOUT = r"timed? ?out|timeout|no answer from|no response from|did not respond|not responding"
_REFUSED = r"connection refused|refused to connect|errno 111"
_CLOSED = (
    r"connection (lost|closed|reset|dropped|aborted|terminated)|lost connection|broken pipe"
    r"|closed (the )?connection|reset by peer|unexpected(ly)? (eof|end of file|disconnect)"
)
# The server would not talk to us at all (a 554 greeting, EHLO refused): it blocks
# the sender, seed 003's "connection forbidden" (4).
_FORBIDDEN = (
    r"no smtp service|refused to talk to me|(greeting|banner|ehlo|helo) (refused|rejected)"
    r"|refused by \S+: 5"
)
_SYSTEM = (
    r"local (error|problem)|temporary (local )?(problem|failure|error)|lookup failure"
    r"|insufficient (system )?(resources|storage)|system (error|resources|busy|problem|failure"
    r"|not accepting)|internal (server )?error|server (is )?(busy|error|overloaded)"
    r"|service (is )?(temporarily |currently )?(not available|unavailable)|transaction failed"
    r"|configuration error|misconfigur|routing loop|mail loop|too many hops|loop detected"
)
_TRY_LATER = (
    r"try (again )?later|temporarily (deferred|rejected)|\bdeferred\b|come back later"
    r"|resend (your message )?later|essayer plus tard"
)
_POLICY = (
    r"polic(y|ies)|prohibit|administrative|not accepted|denied|refused|rejected|blocked"
    r"|not allowed|not authorized|not permitted|forbidden|rejete|unacceptable"
)
_TEMPORARY = r"4\d\d|0"  # a 4xx reply, or no code known
_TEMPORARY_STATUS = r"(4\.\d{1,3}\.\d{1,3})?"

PATTERNS: tuple[Pattern, ...] = (
    # -- 1. Greylisting first: a scheduled retry, whatever else the status says.
    Pattern("rate_limited", _TEMPORARY_STATUS, _GREYLIST, code=_TEMPORARY, error_code=53),
    # -- 2. Enhanced status codes that name the reason whatever the text says.
    # X.1.7 / X.1.8: the *sender's* address is refused; the recipient may be fine.
    Pattern("policy", r"[45]\.1\.[78]"),
    Pattern("policy", None, _SENDER),
    # X.1.10 is RFC 7505's null MX, but Microsoft says it of an unknown recipient.
    Pattern("user_unknown", r"[45]\.1\.10", r"recipient ?not ?found"),
    Pattern("host_unknown", r"[45]\.1\.10"),
    Pattern("host_unknown", r"[45]\.1\.2"),
    Pattern("mailbox_inactive", r"[45]\.1\.1", _INACTIVE),
    Pattern("user_unknown", r"[45]\.1\.[13]"),
    # Moved (X.1.6), account disabled (X.7.13), mailbox or domain owner changed
    # (X.7.17, X.7.18: RFC 7293's recycled addresses).
    Pattern("mailbox_inactive", r"[45]\.1\.6|[45]\.7\.1[378]"),
    Pattern("mailbox_inactive", r"[45]\.2\.1", _INACTIVE),
    # Gmail: "4.2.1 The user you are trying to contact is receiving mail at a rate ..."
    Pattern("rate_limited", r"[45]\.2\.1", _RATE),
    Pattern("mailbox_full", r"[45]\.2\.2"),
    Pattern("mailbox_full", r"[45]\.2\.[03]", _FULL),
    Pattern("message_too_big", r"[45]\.2\.3|[45]\.3\.4"),
    Pattern("system_error", r"[45]\.3\.\d{1,3}"),  # the receiving system's own trouble
    # Microsoft 365 directory-based edge blocking: 5.4.1 "Recipient address rejected:
    # Access denied" names an address that is not in the tenant.
    Pattern("relaying_denied", r"[45]\.4\.1", _RELAY),
    Pattern("user_unknown", r"5\.4\.1", r"recipient|access denied"),
    Pattern("network_error", r"[45]\.4\.1", error_code=44, bounce_class="block_timeout"),
    Pattern("network_error", r"[45]\.4\.2", error_code=9, bounce_class="block_timeout"),
    Pattern("network_error", r"[45]\.4\.3"),  # directory (DNS) server failure
    Pattern("host_unknown", r"[45]\.4\.4"),  # unable to route: no such domain
    Pattern("rate_limited", r"[45]\.4\.5|[45]\.5\.3"),  # congestion, too many recipients
    Pattern("system_error", r"[45]\.4\.6"),  # routing loop
    Pattern("expired", r"[45]\.4\.7"),
    # X.7.20-X.7.27: DKIM, SPF, reverse DNS, several checks failed (RFC 7372).
    Pattern("policy", r"[45]\.7\.2[0-7]", error_code=17),
    Pattern("reputation", r"[45]\.7\.28"),  # mail flood: Gmail's "unusual rate of spam"
    Pattern("content_rejected", r"[45]\.6\.\d{1,3}"),  # media / content conversion
    # -- 3. The text of real MTAs, whatever (or where no) status: the generic statuses
    # (X.0.0, X.5.0, X.7.1 ...) and the providers that send none.
    Pattern("relaying_denied", None, _RELAY),
    Pattern("content_rejected", None, _MAILRU_SPAM, error_code=16),
    Pattern("mailbox_inactive", None, _INACTIVE),
    Pattern("host_unknown", None, _HOST),
    Pattern("user_unknown", None, _UNKNOWN),
    Pattern("rate_limited", None, _SENDING_QUOTA),
    Pattern("mailbox_full", None, _FULL),
    Pattern("message_too_big", None, _SIZE),
    Pattern("expired", None, _EXPIRED),
    Pattern("reputation", None, _REPUTATION),
    Pattern("policy", None, _AUTH, error_code=17),
    Pattern("content_rejected", None, _CONTENT),
    Pattern("rate_limited", None, _RATE),
    Pattern("policy", None, _FORBIDDEN, error_code=4),
    Pattern("policy", None, _TLS_REQUIRED, error_code=7),
    Pattern("network_error", None, _TLS_SESSION, error_code=8),
    Pattern("network_error", None, _TLS, error_code=7),
    Pattern("network_error", None, _TIMEOUT, error_code=44, bounce_class="block_timeout"),
    Pattern("network_error", None, _REFUSED, error_code=45),
    Pattern("network_error", None, _CLOSED, error_code=9),
    Pattern("system_error", None, _SYSTEM),
    # A bare "try again later" on a 4xx is how greylisting usually reads.
    Pattern("rate_limited", _TEMPORARY_STATUS, _TRY_LATER, code=_TEMPORARY, error_code=111),
    Pattern("policy", None, _POLICY),
    # -- 4. Statuses that only say which part failed, when the text said nothing.
    Pattern("user_unknown", r"[45]\.1\.\d{1,3}"),
    Pattern("mailbox_inactive", r"[45]\.2\.1"),
    Pattern("network_error", r"[45]\.4\.\d{1,3}"),
    Pattern("system_error", r"[45]\.5\.\d{1,3}"),
    Pattern("policy", r"[45]\.7\.\d{1,3}"),
)


# An enhanced status code at the start of the text, after an optional reply code:
# "550-5.1.1 The email account ...", "5.7.1 Service unavailable".
_LEADING_STATUS = re.compile(r"^\s*(?:\d{3}[\s-]+)?([245]\.\d{1,3}\.\d{1,3})\b")
# qmail ends its texts with one: "Sorry, no mailbox here by that name. (#5.1.1)".
_HASH_STATUS = re.compile(r"#([245]\.\d{1,3}\.\d{1,3})\b")


def status_from_text(text: str) -> str | None:
    """The enhanced status code a reply's text starts with, if any."""
    match = _LEADING_STATUS.match(text)
    return match.group(1) if match else None


def classify(
    code: int | None, status: str | None, text: str, *, permanent: bool | None = None
) -> Verdict:
    """Why a message failed, from the reply code (None or 0: none known), the RFC 3463
    status and the diagnostic text. `permanent` says whether the failure is final
    when the caller knows better than the code (a DSN's `Action: failed`)."""
    status = (status or "").strip() or status_from_text(text) or _hash_status(text) or ""
    pattern = _match(str(code or 0), status, _normal(text))
    if permanent is None:
        if code:
            permanent = code >= 500
        elif status:
            permanent = status.startswith("5")
        else:
            permanent = pattern.reason in PERMANENT_BY_NATURE
    return verdict(
        pattern.reason, permanent, error_code=pattern.error_code, bounce_class=pattern.bounce_class
    )


def no_answer(text: str) -> Verdict:
    """Delivery's own account of a session that got no SMTP answer (reply code 0):
    temporary, and a `network_error` unless its text says more (a refused greeting
    quotes the server's reason)."""
    found = classify(None, None, text, permanent=False)
    return found if found.reason != "undetermined" else verdict("network_error", False)


def _hash_status(text: str) -> str | None:
    match = _HASH_STATUS.search(text)
    return match.group(1) if match else None


def _normal(text: str) -> str:
    """Lower-cased, accents stripped ("refusé" → "refuse"), whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.split())


_Compiled = tuple[Pattern, re.Pattern[str] | None, re.Pattern[str] | None, re.Pattern[str] | None]
_COMPILED: tuple[_Compiled, ...] = tuple(
    (
        pattern,
        re.compile(pattern.code) if pattern.code is not None else None,
        re.compile(pattern.status) if pattern.status is not None else None,
        re.compile(pattern.text) if pattern.text is not None else None,
    )
    for pattern in PATTERNS
)
_UNDETERMINED = Pattern("undetermined")


def _match(code: str, status: str, text: str) -> Pattern:
    for pattern, code_re, status_re, text_re in _COMPILED:
        if code_re is not None and not code_re.fullmatch(code):
            continue
        if status_re is not None and not status_re.fullmatch(status):
            continue
        if text_re is not None and not text_re.search(text):
            continue
        return pattern
    return _UNDETERMINED
