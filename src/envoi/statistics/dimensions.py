"""Every dimension a statistics query groups or filters by.

Seed 002's grouping fields keep their names; the time parts among them (`year` ...
`hour`) are read in the query's time zone. The `bucket_*` dimensions are the native
API's precisions: the start of the minute, 5 or 15 minutes, hour, day, week (Monday),
month, quarter or year an event falls in, in the query's time zone. The others are
the event table's columns (`eventstore.schema`), `tag` one group per tag of the
event, `human` whether a person (not a machine) made the hit, and `variant` the
email of an A/B campaign's message.
"""

from __future__ import annotations

from envoi.statistics.definitions import LOCAL, Dimension, ValueType

S002 = ("002",)


def _column(
    name: str, doc: str, type_: ValueType = "str", seeds: tuple[str, ...] = ()
) -> Dimension:
    return Dimension(name, doc, name, type_, seeds=seeds)


def _time(
    name: str, doc: str, sql: str, type_: ValueType, seeds: tuple[str, ...] = S002
) -> Dimension:
    return Dimension(name, doc, sql.replace("@", LOCAL), type_, seeds=seeds)


COLUMNS: tuple[Dimension, ...] = (
    _column("project_id", "the project", "int", S002),
    _column("post", "the campaign, `S_12` (`post_type` and its id)", seeds=S002),
    _column(
        "post_type",
        "the campaign's type: S one-time, B A/B, A automated (seed 002)",
        seeds=S002,
    ),
    _column("message", "the email, `L_34`: an A/B variant is an email of its own", seeds=S002),
    _column("message_type", "the message type: L email", seeds=S002),
    _column("campaign_id", "the campaign's id (None: a message outside campaigns)", "int"),
    _column("email_id", "the email's id", "int"),
    _column("send_id", "one message to one recipient (the spool row)", "int"),
    _column("profile_id", "the recipient's profile", "int"),
    _column("recipient", "the recipient's address, lower-cased"),
    _column("domain", "the recipient's domain", seeds=("000", "003")),
    _column("provider", "the recipient domain's mailbox provider", seeds=("000",)),
    _column("router", "the route the message was sent through", seeds=("000",)),
    Dimension(
        "tag",
        "a tag of the campaign: an event with two tags is in both tags' groups",
        "tags",
        multi=True,
        seeds=("004",),
    ),
    _column("link", "click: the link's index in the message", "int", ("003",)),
    _column("url", "click: the link's target", seeds=("003",)),
    _column("kind", "the event: queued, blocked, quarantined, delivered, tempfail ..."),
    _column("reason", "blocked / quarantined: why the message was stopped"),
    _column("bounce_class", "seed 001's eight bounce classes"),
    _column("bounce_reason", "the fine-grained bounce reason (docs/bounces.md)"),
    _column("smtp_code", "the SMTP reply code", "int"),
    _column("smtp_status", "the enhanced status code (RFC 3463)"),
    _column("error_code", "seed 003's numeric error code", "int", ("003",)),
    _column("hard", "a hard bounce", "bool"),
    _column("in_band", "a failure told in the SMTP session (False: reported later)", "bool"),
    _column("uncertain", "a delivery that may have gone out twice", "bool"),
    _column("client", "the email client of the hit", seeds=S002),
    _column("device", "Desktop, Mobile, Tablet, Webmail, Proxy, Bot or Other"),
    _column("os", "the operating system of the hit"),
    _column("language", "the language of the variant sent", seeds=S002),
    _column("country_code", "ISO 3166 code of the hit's address"),
    _column("country_name", "the country of the hit's address", seeds=S002),
    _column("region_name", "the region of the hit's address", seeds=S002),
    _column("city_name", "the city of the hit's address", seeds=S002),
    _column("machine", "the machine flag of a hit (apple_mpp, prefetch, scanner, bot, head)"),
    Dimension("human", "a hit by a person: no machine flag", "machine IS NULL", "bool"),
    # An A/B variant is an email of its own (docs/campaigns-ab.md): `message` groups by
    # it too; `variant` leaves the messages of other campaigns out (null).
    Dimension(
        "variant",
        "an A/B campaign's variant: the email sent, `L_34`; null outside A/B campaigns",
        "CASE WHEN post_type = 'B' THEN message END",
        "str",
    ),
    _column("method", "unsubscribe: one-click, page or mailto"),
    _column("goal", "goal: its name"),
)

# Seed 002's time parts, in the query's time zone (`@`: the event's local time).
TIME_PARTS: tuple[Dimension, ...] = (
    _time("year", "the year, 2021", "year(@)", "int"),
    _time("quarter", "the quarter of the year, 1 to 4", "quarter(@)", "int"),
    _time("month_year", "the month, `2021-01`", "strftime(@, '%Y-%m')", "month"),
    _time("day_of_month", "the day of the month, 1 to 31", "day(@)", "int"),
    _time("day_of_week", "the day of the week, 1 Monday to 7 Sunday (ISO)", "isodow(@)", "int"),
    _time("week", "the ISO week number, 1 to 53", "week(@)", "int"),
    _time("date", "the date, 2021-01-27", "CAST(@ AS DATE)", "date"),
    _time("hour", "the hour of the day, 0 to 23", "hour(@)", "int"),
)

# The native API's precisions (`timebuckets.PRECISIONS`), as bucket starts.
BUCKETS: tuple[Dimension, ...] = (
    _time("bucket_minute", "the minute", "date_trunc('minute', @)", "time", ()),
    _time("bucket_5min", "the 5 minutes", "time_bucket(INTERVAL 5 MINUTE, @)", "time", ()),
    _time("bucket_15min", "the 15 minutes", "time_bucket(INTERVAL 15 MINUTE, @)", "time", ()),
    _time("bucket_hour", "the hour", "date_trunc('hour', @)", "time", ()),
    _time("bucket_day", "the day", "date_trunc('day', @)", "time", ()),
    _time("bucket_week", "the week, from Monday", "date_trunc('week', @)", "time", ()),
    _time("bucket_month", "the month", "date_trunc('month', @)", "time", ()),
    _time("bucket_quarter", "the quarter", "date_trunc('quarter', @)", "time", ()),
    _time("bucket_year", "the year", "date_trunc('year', @)", "time", ()),
)

DIMENSIONS: tuple[Dimension, ...] = COLUMNS + TIME_PARTS + BUCKETS
