"""Every measure a statistics query computes, defined from the events.

Which events exist, and when (docs/statistics.md tells it at length):
- build (`spool.building`): each spooled row writes exactly one of `queued`,
  `blocked` or `quarantined` (with its `reason`);
- send (`spool.recording`): a queued row writes `tempfail` at each temporary failure,
  then one `delivered` or `permfail`; or `blocked` with reason `external_check` when
  the pre-send hook refuses it (so that row wrote `queued` before);
- later (`inbound`): `bounce` (a delivered message reported undeliverable),
  `tempfail` (a delay report), `complaint`;
- tracking: `open`, `click`, `mirror`, `unsubscribe`, `forward`, `goal`. Opens,
  clicks and web views carry `machine`: None for a person.

Activity counts people by default: `_machine` and `_all` variants count the rest.
Unique counts sum `is_first_human` (`is_first` for `_all` and for hits that are never
flagged): each recipient counts once per post, in the period of the first occurrence.
"""

from __future__ import annotations

from envoi.core.bounces import BOUNCE_CLASSES
from envoi.statistics.definitions import Count, Measure, Moment, Rate, Sum, alias

S000, S001, S002, S003, S004 = ("000",), ("001",), ("002",), ("003",), ("004",)

HUMAN = "machine IS NULL"
MACHINE = "machine IS NOT NULL"
# Reasons the send step blocks a row for, after the build step queued it.
SEND_TIME_BLOCKS = ("external_check",)
_SEND_TIME = ", ".join(f"'{reason}'" for reason in SEND_TIME_BLOCKS)
BUILT = (
    "(kind IN ('queued', 'quarantined') OR "
    f"(kind = 'blocked' AND coalesce(reason, '') NOT IN ({_SEND_TIME})))"
)
STOPPED = "kind IN ('blocked', 'quarantined')"
SENT = "kind IN ('delivered', 'permfail')"
BOUNCED = "kind IN ('permfail', 'bounce')"


def _kind(kind: str, *more: str) -> str:
    return " AND ".join((f"kind = '{kind}'", *more))


def _count(name: str, doc: str, where: str, seeds: tuple[str, ...] = ()) -> Count:
    return Count(name, doc, where, seeds)


# --- spooling: what became of each recipient of a campaign at build -------------------

SPOOLING: tuple[Measure, ...] = (
    _count(
        "spooled",
        "recipients spooled: every spool row once, by the event its build wrote "
        "(queued, quarantined, or blocked for a reason of the build)",
        BUILT,
    ),
    _count(
        "queued", "recipients that passed the build's checks and were queued", "kind = 'queued'"
    ),
    _count(
        "stopped",
        "messages stopped before SMTP: blocked or quarantined at build, or blocked by "
        "the pre-send hook",
        STOPPED,
    ),
    _count(
        "blocked", "messages blocked, at build or by the pre-send hook", "kind = 'blocked'", S000
    ),
    _count(
        "quarantined", "messages stopped because the address is quarantined", "kind = 'quarantined'"
    ),
)

# (reason, what it means) for the `stopped_<reason>` counts.
STOP_REASONS: tuple[tuple[str, str], ...] = (
    ("noaddress", "the recipient has no address"),
    ("invalid", "the address is invalid (bad syntax, or quarantined as invalid)"),
    ("nonexistent", "the address is quarantined as nonexistent (a hard bounce)"),
    ("spam", "the address is quarantined after a spam complaint"),
    ("gdpr", "the person was erased (GDPR)"),
    ("unsubscribed", "the address is quarantined as unsubscribed"),
    ("category_unsubscribed", "the profile is unsubscribed from the email's category"),
    ("sent_quarantine", "mailed too recently (the campaign's min_send_interval)"),
    ("duplicate", "another recipient of the campaign has the same address"),
    ("inactive", "the address is quarantined after repeated soft bounces"),
    ("manual", "the address was quarantined by hand"),
    ("external_check", "the pre-send hook refused the message"),
)
STOPS: tuple[Measure, ...] = tuple(
    _count(
        f"stopped_{reason}", f"messages stopped because {doc}", f"{STOPPED} AND reason = '{reason}'"
    )
    for reason, doc in STOP_REASONS
)

# --- delivery ---------------------------------------------------------------------------

# Seed 002's four groups of SMTP errors, by bounce class (together: every bounce).
NONEXISTENT_CLASSES = ("user_unknown", "user_recycled")
TEMP_UNAVAILABLE_CLASSES = ("mailbox_full", "block_timeout", "other_soft")
SPAM_CLASSES = ("block_content",)


def _classes(classes: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{name}'" for name in classes) + ")"


_GROUPED = _classes(NONEXISTENT_CLASSES + TEMP_UNAVAILABLE_CLASSES + SPAM_CLASSES)

DELIVERY: tuple[Measure, ...] = (
    _count(
        "sent",
        "messages sent: SMTP attempts that ended, delivered or refused for good "
        "(a message deferred and then delivered counts once)",
        SENT,
        S001,
    ),
    _count(
        "delivered", "messages the receiving server accepted", "kind = 'delivered'", S001 + S003
    ),
    _count(
        "permfail",
        "messages the receiving server refused for good, or given up",
        "kind = 'permfail'",
        S000,
    ),
    _count(
        "tempfail",
        "messages that met a temporary failure (deferred, or reported delayed), each once",
        "kind = 'tempfail' AND is_first",
        S000,
    ),
    _count(
        "deferrals",
        "temporary failures: every deferred attempt and delay report",
        "kind = 'tempfail'",
    ),
    _count(
        "bounced",
        "bounces: messages refused in the SMTP session (permfail) plus bounces reported "
        "after delivery",
        BOUNCED,
    ),
    _count("bounced_late", "bounces reported after delivery (out of band)", "kind = 'bounce'"),
    _count("hard_bounces", "hard bounces (the address is bad)", f"{BOUNCED} AND hard"),
    _count("soft_bounces", "soft bounces", f"{BOUNCED} AND NOT coalesce(hard, false)"),
    *(
        _count(
            f"bounces_{name}",
            f"bounces of class {name}",
            f"{BOUNCED} AND bounce_class = '{name}'",
            S001,
        )
        for name in BOUNCE_CLASSES
    ),
    _count(
        "sum_bounce_nonexistent",
        "bounces: the address does not exist (classes user_unknown, user_recycled)",
        f"{BOUNCED} AND bounce_class IN {_classes(NONEXISTENT_CLASSES)}",
        S002,
    ),
    _count(
        "sum_bounce_temp_unavailable",
        "bounces: temporarily unavailable (classes mailbox_full, block_timeout, other_soft)",
        f"{BOUNCED} AND bounce_class IN {_classes(TEMP_UNAVAILABLE_CLASSES)}",
        S002,
    ),
    _count(
        "sum_bounce_spam",
        "bounces: rejected as spam (class block_content)",
        f"{BOUNCED} AND bounce_class IN {_classes(SPAM_CLASSES)}",
        S002,
    ),
    _count(
        "sum_bounce_other",
        "bounces: every other class (block_other, other_hard, or none)",
        f"{BOUNCED} AND coalesce(bounce_class, '') NOT IN {_GROUPED}",
        S002,
    ),
)

# --- activity ---------------------------------------------------------------------------


def _hits(kind: str, noun: str, seeds: tuple[str, ...] = ()) -> tuple[Measure, ...]:
    """A hit kind's counts: by people, by machines, all; unique people and unique all."""
    verb = {"open": "opened", "click": "clicked", "mirror": "mirrored"}[kind]
    return (
        _count(verb, f"{noun} by people", _kind(kind, HUMAN), seeds),
        _count(f"{verb}_machine", f"{noun} flagged as made by machines", _kind(kind, MACHINE)),
        _count(f"{verb}_all", f"{noun} by people and machines", _kind(kind)),
        _count(
            f"unique_{verb}",
            f"recipients with {noun} by a person, counted at the first",
            _kind(kind, "is_first_human"),
            seeds,
        ),
        _count(
            f"unique_{verb}_all",
            f"recipients with {noun} by anyone, counted at the first",
            _kind(kind, "is_first"),
        ),
    )


ACTIVITY: tuple[Measure, ...] = (
    *_hits("open", "opens", S001 + S003),
    *_hits("click", "clicks", S001 + S003),
    *_hits("mirror", "web views"),
    _count("goals", "goals reached", "kind = 'goal'", S001),
    _count(
        "unique_goals",
        "recipients that reached a goal, counted at the first",
        _kind("goal", "is_first"),
        S001,
    ),
    Sum("goal_value", "the goals' values added up", "value", "kind = 'goal'"),
    _count("forwarded", "messages forwarded to a friend", "kind = 'forward'", S001),
    _count(
        "unsubscribes", "unsubscribes (link, one-click or mailto)", "kind = 'unsubscribe'", S001
    ),
    _count("complaints", "spam complaints", "kind = 'complaint'"),
    _count(
        "complaints_handled",
        "spam complaints whose profile was found and unsubscribed",
        _kind("complaint", "coalesce(handled, false)"),
        S001,
    ),
    _count(
        "complaints_unhandled",
        "spam complaints without a profile to unsubscribe (the address is quarantined)",
        _kind("complaint", "NOT coalesce(handled, false)"),
        S001,
    ),
    _count(
        "churn",
        "churn: unsubscribes + complaints + bounces (events: a recipient who does two "
        "of them counts twice)",
        f"(kind IN ('unsubscribe', 'complaint') OR {BOUNCED})",
    ),
)

# Seed 004's activity: a message sent (delivered or refused), an open or a click.
_ACTIVE = f"({SENT} OR (kind IN ('open', 'click') AND {HUMAN}))"
MOMENTS: tuple[Measure, ...] = (
    Moment("first", "the first activity: a message sent, an open or a click", "min", _ACTIVE, S004),
    Moment("last", "the last activity: a message sent, an open or a click", "max", _ACTIVE, S004),
)

# --- rates: numerator / denominator of summed counts, 0.0 when the denominator is 0 ----

RATES: tuple[Measure, ...] = (
    Rate("open_rate", "opens per delivered message", "opened", "delivered", S002),
    Rate(
        "open_rate_unique", "unique opens per delivered message", "unique_opened", "delivered", S002
    ),
    Rate("click_rate", "clicks per delivered message", "clicked", "delivered", S002),
    Rate(
        "click_rate_unique",
        "unique clicks per delivered message",
        "unique_clicked",
        "delivered",
        S002,
    ),
    Rate(
        "ctor",
        "click to open rate: unique clicks per unique open",
        "unique_clicked",
        "unique_opened",
        S002,
    ),
    Rate("delivery_rate", "delivered messages per message sent", "delivered", "sent", S002),
    Rate("bounce_rate", "bounces per message sent", "bounced", "sent", S002),
    Rate("unsub_rate", "unsubscribes per delivered message", "unsubscribes", "delivered", S002),
    Rate("abuse_rate", "spam complaints per delivered message", "complaints", "delivered", S002),
    Rate("churn_rate", "churn per message sent", "churn", "sent", S002),
    Rate(
        "machine_open_share", "the share of opens made by machines", "opened_machine", "opened_all"
    ),
    Rate(
        "machine_click_share",
        "the share of clicks made by machines",
        "clicked_machine",
        "clicked_all",
    ),
)

CANONICAL: tuple[Measure, ...] = SPOOLING + STOPS + DELIVERY + ACTIVITY + MOMENTS + RATES
_BY_NAME = {measure.name: measure for measure in CANONICAL}

# The seeds' own names for canonical measures: (name, canonical name, seeds).
ALIASES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # seed 002, report builder
    ("sum_total", "spooled", S002),
    ("sum_selected", "queued", S002),
    ("sum_sended", "sent", S002),
    ("sum_delivered", "delivered", S002),
    ("sum_opened", "opened", S002),
    ("sum_opened_unique", "unique_opened", S002),
    ("sum_clicked", "clicked", S002),
    ("sum_clicked_unique", "unique_clicked", S002),
    ("sum_unsubscribed", "unsubscribes", S002),
    ("sum_spam_reports", "complaints", S002),
    ("sum_churn", "churn", S002),
    ("sum_stop_total", "stopped", S002),
    ("sum_stop_invalid", "stopped_invalid", S002),
    ("sum_stop_nonexistent", "stopped_nonexistent", S002),
    ("sum_stop_spam_added", "stopped_spam", S002),
    ("sum_stop_gdpr", "stopped_gdpr", S002),
    ("sum_stop_unsubscr", "stopped_unsubscribed", S002),
    ("sum_bounce_total", "bounced", S002),
    ("sum_stop_sendlog_added", "stopped_sent_quarantine", S002),
    ("sum_stop_letter_single_quarantine", "stopped_duplicate", S002),
    ("sum_stop_inactive", "stopped_inactive", S002),
    ("sum_stop_noaddress", "stopped_noaddress", S002),
    ("sum_stop_send_policy", "stopped_category_unsubscribed", S002),
    ("sum_stop_external_check", "stopped_external_check", S002),
    # seed 000, spooler statistics
    ("open", "unique_opened", S000),
    ("click", "unique_clicked", S000),
    ("mirror", "unique_mirrored", S000),
    ("ok", "delivered", S000),
    ("count", "spooled", S000 + S003),
    ("quarantine", "quarantined", S000),
    # seed 003, SendStatistics
    ("bounce", "bounced", S003),
    ("spam", "complaints", S003),
    ("unsubs", "unsubscribes", S003),
    # seed 004, tag statistics
    ("opens", "opened", S004),
    ("clicks", "clicked", S004),
    ("messages", "sent", S004),
    ("deliveries", "delivered", S004),
)

MEASURES: tuple[Measure, ...] = CANONICAL + tuple(
    alias(name, _BY_NAME[canonical], seeds) for name, canonical, seeds in ALIASES
)
