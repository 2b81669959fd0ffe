"""Statistics over a large event store: the report builder and one campaign's seed views.

    .venv/bin/python bench/stats.py [--events 10000000] [--store PATH] [--keep] [--events-path]

Generates N realistic events straight into a throw-away DuckDB event store through the
store's own import path (`DuckDBStore.importing()` / `import_rows`), so the
first-occurrence flags and the providers are computed as in production. The events
are made set-wise in SQL (`range()`, `hash()`, arithmetic; no Python per event):

- four projects (the first one holds about 90 % of the events), campaigns of 5,000 to
  500,000 recipients (log-uniform) sent over a year, one in ten an A/B test of two
  emails; recipients drawn from each project's pool, so people recur across campaigns;
- a domain mix (gmail.com, outlook.com, hotmail.fr, yahoo.com, orange.fr, icloud.com,
  mail.ru, corporate domains ...), whose providers the store finds (`core.providers`);
- per recipient: its build event (queued, or blocked / quarantined with a reason), a
  few deferrals, delivered (about 97 %) or a permanent failure of one of the eight
  bounce classes with its SMTP code, enhanced status and seed 003 error code, some
  later bounces; opens on a decaying curve over days after sending (Apple MPP machine
  opens at icloud.com within minutes), clicks on a skewed choice of links, security
  scanners' clicks at corporate domains, web views, goals, unsubscribes, complaints.

The events are imported campaign after campaign in sending order, a few million
events an `import_rows` call (each call's events in time order, as the projector
would have appended them), about 10,000,000 a transaction; the last call is cut at N
events (the campaigns still running "now"). `--store PATH` puts the store
there (an existing store is reused: nothing is generated, and it is kept); a
generated store is deleted afterwards unless `--keep`.

Then each surface is timed through the query layer (`StatisticsEngine`) and the
surfaces' own mappings, best of 3 (the median too), over the first project:
- `report_all`: seed 002's report builder over all of the project's events, grouped by
  date and message, with every aggregated field of the seed's table (39 measures);
  `report_all_5` the same with the five of the seed's example; `report_7d` with the
  builder's default filter, the last 7 days;
- one campaign (the largest complete one): seed 001's `get_message_stats`, daily
  (`statistics.messages.message_stats`); seed 004's tag statistics of the campaign's
  own tag (`statistics.tags.tag_stats`; `seed004_newsletter`: a tag on most
  campaigns); a seed 000-like query (by router and provider: activity, routing and
  spooling counters); a seed 003-like view (common counts, opens per hour over the
  first two days, clicks per link, delivered / bounced per domain, errors by code:
  five queries, one request's worth).

The queries read the store's rollups (`eventstore.rollups`) whenever one gives the
events' answer, as in production; `--events-path` times them over the events alone
(`statistics.sql.statement(..., rollups=False)`). A store made before rollups existed
gets them when opened (`rollup_build_s`); `rollup_*_rows` are the rollups' sizes, and
`load_average` the machine's 1-minute load before and after the timings (the machine
is shared).

Figures are printed last, one `name: value` per line. Bars (issue 5): the report
builder over 100,000,000 events under 1 s; one campaign's seed views under 100 ms.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.mapping import GIVEN, TYPES
from envoi.eventstore.rollups import ROLLUPS
from envoi.statistics import sql
from envoi.statistics.catalogue import MEASURES
from envoi.statistics.messages import GROUPINGS, Selection, message_stats
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery
from envoi.statistics.tags import tag_stats

PROJECT = 1  # the project every query reads
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
EVENTS_PER_RECIPIENT = 2.5  # what the rules below make, on average (to plan campaigns)
BATCH_EVENTS = 3_000_000  # events of one import_rows call, about
COMMIT_EVENTS = 9_000_000  # events of one transaction, about
RUNS = 3

# domain, share of recipients (%), router, open factor, Apple MPP share, scanner share,
# permanent failure rate.
DOMAINS: tuple[tuple[str, int, str, float, float, float, float], ...] = (
    ("gmail.com", 30, "mta-1", 1.0, 0.04, 0.0, 0.015),
    ("outlook.com", 6, "mta-ms", 0.8, 0.03, 0.01, 0.02),
    ("hotmail.com", 5, "mta-ms", 0.7, 0.03, 0.01, 0.025),
    ("hotmail.fr", 5, "mta-ms", 0.7, 0.03, 0.01, 0.025),
    ("live.fr", 2, "mta-ms", 0.6, 0.03, 0.01, 0.03),
    ("yahoo.com", 4, "mta-2", 0.7, 0.04, 0.0, 0.03),
    ("yahoo.fr", 3, "mta-2", 0.7, 0.04, 0.0, 0.03),
    ("orange.fr", 8, "mta-2", 1.1, 0.05, 0.0, 0.02),
    ("wanadoo.fr", 3, "mta-2", 0.9, 0.05, 0.0, 0.04),
    ("free.fr", 5, "mta-1", 1.0, 0.05, 0.0, 0.02),
    ("sfr.fr", 3, "mta-1", 0.9, 0.05, 0.0, 0.03),
    ("laposte.net", 3, "mta-1", 1.0, 0.05, 0.0, 0.02),
    ("icloud.com", 6, "mta-1", 1.0, 0.92, 0.0, 0.01),
    ("me.com", 1, "mta-1", 1.0, 0.92, 0.0, 0.015),
    ("gmx.de", 2, "mta-2", 0.9, 0.04, 0.0, 0.02),
    ("web.de", 1, "mta-2", 0.9, 0.04, 0.0, 0.02),
    ("mail.ru", 2, "mta-2", 0.6, 0.02, 0.0, 0.06),
    ("yandex.ru", 1, "mta-2", 0.6, 0.02, 0.0, 0.05),
    ("comcast.net", 1, "mta-1", 0.8, 0.05, 0.0, 0.03),
    ("acme-industries.com", 6, "mta-1", 1.2, 0.03, 0.15, 0.02),
    ("univ-lyon.fr", 3, "mta-1", 1.1, 0.03, 0.1, 0.03),
)
# Seed 001's eight classes, their share of permanent failures, and what a server said:
# (class, share %, core.bounces reason, SMTP code, enhanced status, seed 003 code, hard).
CLASSES: tuple[tuple[str, int, str, int | None, str, int, bool], ...] = (
    ("user_unknown", 45, "user_unknown", 550, "5.1.1", 11, True),
    ("user_recycled", 5, "mailbox_inactive", 550, "5.2.1", 13, True),
    ("mailbox_full", 10, "mailbox_full", 552, "5.2.2", 15, False),
    ("block_content", 8, "content_rejected", 554, "5.7.1", 14, False),
    ("block_timeout", 5, "expired", None, "4.4.7", 51, False),
    ("block_other", 15, "reputation", 554, "5.7.1", 113, False),
    ("other_soft", 4, "system_error", 451, "4.3.0", 46, False),
    ("other_hard", 8, "undetermined", 550, "5.0.0", 45, True),
)
GEO: tuple[tuple[str, str, str, str], ...] = (
    ("FR", "France", "Île-de-France", "Paris"),
    ("FR", "France", "Île-de-France", "Paris"),
    ("FR", "France", "Île-de-France", "Boulogne-Billancourt"),
    ("FR", "France", "Auvergne-Rhône-Alpes", "Lyon"),
    ("FR", "France", "Provence-Alpes-Côte d'Azur", "Marseille"),
    ("FR", "France", "Occitanie", "Toulouse"),
    ("FR", "France", "Hauts-de-France", "Lille"),
    ("BE", "Belgium", "Brussels Capital", "Brussels"),
    ("CA", "Canada", "Quebec", "Montreal"),
    ("DE", "Germany", "Berlin", "Berlin"),
    ("US", "United States", "California", "San Francisco"),
    ("RU", "Russia", "Moscow", "Moscow"),
)
CLIENTS: tuple[tuple[str, str, str], ...] = (
    ("Gmail", "Webmail", "Android"),
    ("Gmail", "Mobile", "Android"),
    ("Apple Mail", "Mobile", "iOS"),
    ("Apple Mail", "Desktop", "macOS"),
    ("Outlook", "Desktop", "Windows"),
    ("Outlook.com", "Webmail", "Windows"),
    ("Thunderbird", "Desktop", "Linux"),
    ("Samsung Email", "Mobile", "Android"),
    ("Yahoo Mail", "Webmail", "Windows"),
    ("Orange Mail", "Webmail", "Windows"),
)
QUARANTINE_REASONS = ("nonexistent", "nonexistent", "nonexistent", "unsubscribed", "spam")
BLOCK_REASONS = ("invalid", "duplicate", "sent_quarantine", "category_unsubscribed", "gdpr")
UNSUBSCRIBE_METHODS = ("one-click", "one-click", "one-click", "page", "page", "mailto")
CATEGORIES = ("newsletter", "newsletter", "newsletter", "promo", "promo", "product")

# Seed 002's aggregated fields (the seed's table), seed 000's and seed 003's counters.
REPORT = tuple(m.name for m in MEASURES.values() if "002" in m.seeds)
REPORT_EXAMPLE = (
    "click_rate_unique",
    "sum_delivered",
    "sum_opened",
    "open_rate_unique",
    "sum_clicked",
)
SPOOLER = (
    "open",
    "click",
    "mirror",
    "ok",
    "tempfail",
    "permfail",
    "count",
    "blocked",
    "quarantine",
)
COMMON = ("count", "delivered", "bounce", "opened", "clicked", "spam", "unsubs")


@dataclass(frozen=True)
class Campaign:
    id: int
    project_id: int
    size: int  # recipients
    sent_at: datetime
    email_a: int
    email_b: int | None  # the second email of an A/B test
    pool_base: int  # the project's first profile id
    pool_size: int
    pool_offset: int
    router: str
    category: str
    language: str
    engagement: float
    links: int


# --- the events, in SQL ------------------------------------------------------------------


def literal(value: object) -> str:
    """`value` as a DuckDB literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):  # naive UTC, as the store keeps times
        return f"TIMESTAMP '{value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def pick(values: Sequence[object], index: str) -> str:
    """`values[index]`, index 0-based SQL: a constant list's element."""
    return f"{literal(list(values))}[1 + CAST({index} AS INTEGER)]"


def unit(*parts: object) -> str:
    """A uniform number in (0, 1) from a hash of `parts` (SQL)."""
    args = ", ".join(str(p) for p in parts)
    return f"((hash({args}) % 1000003 + 1) / 1000004.0)"


def seconds(expression: str) -> str:
    return f"to_seconds(CAST({expression} AS DOUBLE))"


def _campaigns_sql(campaigns: Sequence[Campaign]) -> str:
    rows = ",\n".join(
        "("
        + ", ".join(
            literal(v)
            for v in (
                c.id,
                c.project_id,
                c.size,
                c.sent_at,
                c.email_a,
                c.email_b,
                c.pool_base,
                c.pool_size,
                c.pool_offset,
                c.router,
                [c.category, f"campaign-{c.id}"],
                c.language,
                c.engagement,
                c.links,
            )
        )
        + ")"
        for c in campaigns
    )
    columns = (
        "campaign_id, project_id, size, sent_at, email_a, email_b, pool_base, pool_size, "
        "pool_offset, main_router, tags, language, engagement, links"
    )
    return f"(VALUES {rows}) AS camp({columns})"


def _recipients_sql(campaigns: Sequence[Campaign]) -> str:
    """One row per recipient of `campaigns`, with everything its events depend on."""
    slots = [i for i, d in enumerate(DOMAINS) for _ in range(d[1])]
    if len(slots) != 100:
        raise RuntimeError("the domain shares must add up to 100")
    class_slots = [i for i, c in enumerate(CLASSES) for _ in range(c[1])]
    if len(class_slots) != 100:
        raise RuntimeError("the bounce class shares must add up to 100")
    domains, routers, opens, mpp, scanner, fail = (
        [d[i] for d in DOMAINS] for i in (0, 2, 3, 4, 5, 6)
    )
    base = f"""
    SELECT c.*,
        CAST(campaign_id AS BIGINT) * 1000000 + n AS send_id,
        CAST(pool_base + (pool_offset + n) % pool_size AS INTEGER) AS profile_id,
        CASE WHEN email_b IS NULL OR hash(campaign_id, n, 0) % 2 = 0
             THEN email_a ELSE email_b END AS email_id,
        sent_at + {seconds("n / 1000.0")} AS t_send,
        {unit("campaign_id", "n", 1)} AS u_build,
        {unit("campaign_id", "n", 2)} AS u_send,
        {unit("campaign_id", "n", 3)} AS u_temp,
        {unit("campaign_id", "n", 4)} AS u_open,
        {unit("campaign_id", "n", 5)} AS u_click,
        {unit("campaign_id", "n", 6)} AS u_misc,
        {unit("campaign_id", "n", 7)} AS u_class,
        {unit("campaign_id", "n", 8)} AS u_delay,
        {unit("campaign_id", "n", 9)} AS u_count
    FROM (SELECT *, unnest(range(size)) AS n FROM {_campaigns_sql(campaigns)}) c
    """  # noqa: S608
    person = f"""
    SELECT b.*,
        {pick(slots, "hash(profile_id, 1) % 100")} AS di,
        hash(profile_id, 2) % {len(GEO)} AS gi,
        hash(profile_id, 3) % {len(CLIENTS)} AS ci
    FROM ({base}) b
    """  # noqa: S608
    mail_ru = domains.index("mail.ru")
    outcome = f"""
    SELECT p.*,
        {pick(domains, "di")} AS domain,
        'u' || profile_id || '@' || {pick(domains, "di")} AS recipient,
        CASE WHEN {pick(routers, "di")} = 'mta-1' THEN main_router
             ELSE {pick(routers, "di")} END AS router,
        CASE WHEN u_build < 0.002 THEN 'quarantined' WHEN u_build < 0.006 THEN 'blocked'
             ELSE 'queued' END AS build,
        CASE WHEN u_build < 0.002 THEN {pick(QUARANTINE_REASONS, "hash(send_id, 1) % 5")}
             WHEN u_build < 0.006 THEN {pick(BLOCK_REASONS, "hash(send_id, 1) % 5")}
        END AS stop_reason,
        u_build >= 0.006 AND u_build < 0.007 AS refused,  -- the pre-send hook
        u_build >= 0.007 AS sent,
        u_send < {pick(fail, "di")} AS failed,
        CASE WHEN u_temp < 0.01 THEN 2 WHEN u_temp < 0.04 THEN 1 ELSE 0 END AS n_temp,
        {pick(class_slots, "hash(send_id, 2) % 100")} AS cls,
        u_misc < 0.003 AS late_bounce,
        u_open < 0.24 * engagement * {pick(opens, "di")} AS opener,
        hash(send_id, 3) % 1000 < 1000 * {pick(mpp, "di")} AS mpp,
        hash(send_id, 4) % 1000 < 1000 * {pick(scanner, "di")} AS scanned,
        u_click < 0.16 * engagement AS clicker,
        -- opens: the first one hours to days after delivery, a decaying curve
        least(30 * 86400, CASE WHEN u_delay < 0.7 THEN -ln({unit("send_id", 5)}) * 14400
                               ELSE -ln({unit("send_id", 5)}) * 259200 END) AS open_after,
        least(20, 1 + floor(-ln(u_count) * 1.2)) AS n_open,
        least(6, 1 + floor(-ln({unit("send_id", 6)}) * 0.6)) AS n_click,
        hash(send_id, 7) % 1000 AS misc
    FROM ({person}) p
    """  # noqa: S608
    return f"""
    SELECT o.*,
        t_send + to_minutes(15 * n_temp) AS t_done,
        t_send + to_minutes(15 * n_temp) + {seconds("open_after")} AS t_open,
        {pick([c[0] for c in CLASSES], "cls")} AS bounce_class,
        {pick([c[2] for c in CLASSES], "cls")} AS bounce_reason,
        {pick([c[3] for c in CLASSES], "cls")} AS smtp_code,
        {pick([c[4] for c in CLASSES], "cls")} AS smtp_status,
        CASE WHEN di = {mail_ru} AND cls = 3 THEN 16
             ELSE {pick([c[5] for c in CLASSES], "cls")} END AS error_code,
        {pick([c[6] for c in CLASSES], "cls")} AS hard
    FROM ({outcome}) o
    """  # noqa: S608


# Every event carries these, from its recipient's row.
_COMMON = {
    "project_id": "project_id",
    "campaign_id": "campaign_id",
    "post": "'S_' || campaign_id",
    "post_type": "CASE WHEN email_b IS NULL THEN 'S' ELSE 'B' END",
    "message": "'L_' || email_id",
    "message_type": "'L'",
    "email_id": "email_id",
    "send_id": "send_id",
    "profile_id": "profile_id",
    "recipient": "recipient",
    "domain": "domain",
    "router": "router",
    "tags": "tags",
    "language": "language",
}
_HIT = {
    "client": pick([c[0] for c in CLIENTS], "ci"),
    "device": pick([c[1] for c in CLIENTS], "ci"),
    "os": pick([c[2] for c in CLIENTS], "ci"),
    "country_code": pick([g[0] for g in GEO], "gi"),
    "country_name": pick([g[1] for g in GEO], "gi"),
    "region_name": pick([g[2] for g in GEO], "gi"),
    "city_name": pick([g[3] for g in GEO], "gi"),
}
_FAILURE = {
    "bounce_class": "bounce_class",
    "bounce_reason": "bounce_reason",
    "smtp_code": "smtp_code",
    "smtp_status": "smtp_status",
    "error_code": "error_code",
    "hard": "hard",
}


def _branch(
    kind: str, at: str, where: str, columns: dict[str, str], repeat: str | None = None
) -> str:
    """The events of one kind: a SELECT of the `GIVEN` columns but `id`, from `rc`
    (with `k` = 0 .. `repeat` - 1 when given)."""
    values = {"kind": literal(kind), "occurred_at": at} | _COMMON | columns
    select = ", ".join(
        f"{values[name]} AS {name}" if name in values else f"CAST(NULL AS {TYPES[name]}) AS {name}"
        for name in GIVEN[1:]
    )
    each = f"unnest(range(CAST({repeat} AS BIGINT))) AS k"
    source = f"(SELECT *, {each} FROM rc WHERE {where})" if repeat else "rc"  # noqa: S608
    condition = "true" if repeat else where
    return f"SELECT {select} FROM {source} WHERE {condition}"  # noqa: S608


def events_sql(campaigns: Sequence[Campaign], limit: int | None) -> str:
    """The events of `campaigns` in time order (the first `limit` of them)."""
    delivered = "sent AND NOT failed"
    branches = [
        _branch(
            "queued",
            "sent_at - INTERVAL 10 MINUTE",
            "build = 'queued'",
            {},
        ),
        _branch(
            "blocked",
            "sent_at - INTERVAL 10 MINUTE",
            "build <> 'queued'",
            {"kind": "build", "reason": "stop_reason"},
        ),
        _branch(
            "blocked",
            "t_send",
            "refused",
            {"reason": "'external_check'"},
        ),
        _branch(
            "tempfail",
            "t_send + to_minutes(15 * k)",
            "sent AND n_temp > 0",
            {
                "smtp_code": "CASE WHEN k = 0 THEN 421 ELSE 451 END",
                "smtp_status": "CASE WHEN k = 0 THEN '4.7.0' ELSE '4.7.1' END",
                "error_code": "CASE WHEN k = 0 THEN 46 ELSE 53 END",
                "bounce_class": "'other_soft'",
                "bounce_reason": "'rate_limited'",
                "hard": "false",
                "in_band": "true",
            },
            repeat="n_temp",
        ),
        _branch("delivered", "t_done", delivered, {"smtp_code": "250"}),
        _branch(
            "permfail",
            "CASE WHEN bounce_class = 'block_timeout' THEN t_send + INTERVAL 3 DAY ELSE t_done END",
            "sent AND failed",
            _FAILURE | {"in_band": "true"},
        ),
        _branch(
            "bounce",
            f"t_done + {seconds('3600 + misc * 170')}",
            f"{delivered} AND late_bounce",
            {
                "bounce_class": "CASE WHEN misc < 700 THEN 'user_unknown' ELSE 'mailbox_full' END",
                "bounce_reason": "CASE WHEN misc < 700 THEN 'user_unknown' ELSE 'mailbox_full' END",
                "smtp_status": "CASE WHEN misc < 700 THEN '5.1.1' ELSE '5.2.2' END",
                "error_code": "CASE WHEN misc < 700 THEN 11 ELSE 15 END",
                "hard": "misc < 700",
                "in_band": "false",
            },
        ),
        _branch(  # Apple Mail Privacy Protection fetches the images on arrival
            "open",
            f"t_done + {seconds('60 + misc * 1.8')}",
            f"{delivered} AND mpp",
            {"machine": "'apple_mpp'", "client": "'Apple Mail'", "device": "'Proxy'"},
        ),
        _branch(
            "open",
            f"t_open + CASE WHEN k = 0 THEN INTERVAL 0 SECOND "
            f"ELSE {seconds('-ln(' + unit('send_id', 'k', 10) + ') * 86400')} END",
            f"{delivered} AND opener",
            _HIT,
            repeat="n_open",
        ),
        _branch(  # link scanners of corporate gateways follow the first links
            "click",
            f"t_done + {seconds('5 + k * 2 + misc / 20')}",
            f"{delivered} AND scanned",
            {
                "machine": "'scanner'",
                "link": "CAST(k AS INTEGER)",
                "url": "'https://www.example.com/c' || campaign_id || '/l' || k",
            },
            repeat="least(2, links)",
        ),
        _branch(
            "click",
            f"t_open + {seconds('20 + k * 90 - ln(' + unit('send_id', 'k', 11) + ') * 60')}",
            f"{delivered} AND opener AND clicker",
            _HIT
            | {
                "link": f"CAST(floor(links * pow({unit('send_id', 'k', 12)}, 2)) AS INTEGER)",
                "url": f"'https://www.example.com/c' || campaign_id || '/l' || "
                f"CAST(floor(links * pow({unit('send_id', 'k', 12)}, 2)) AS INTEGER)",
            },
            repeat="n_click",
        ),
        _branch(
            "mirror",
            "t_open + INTERVAL 30 SECOND",
            f"{delivered} AND opener AND misc < 10",
            _HIT,
        ),
        _branch(
            "goal",
            "t_open + INTERVAL 12 MINUTE",
            f"{delivered} AND opener AND clicker AND misc >= 950",
            {"goal": "'purchase'", "value": "20 + misc % 180"},
        ),
        _branch(
            "unsubscribe",
            "t_open + INTERVAL 2 MINUTE",
            f"{delivered} AND u_misc >= 0.995 AND u_misc < 0.9975",
            {"method": pick(UNSUBSCRIBE_METHODS, "misc % 6")},
        ),
        _branch(
            "complaint",
            f"t_done + {seconds('600 + misc * 200')}",
            f"{delivered} AND u_misc >= 0.9995",
            {"handled": "misc < 970"},
        ),
    ]
    union = "\nUNION ALL\n".join(branches)
    cut = f" LIMIT {limit}" if limit is not None else ""
    return (
        f"WITH rc AS MATERIALIZED ({_recipients_sql(campaigns)})\n"
        f"SELECT * FROM ({union}) ORDER BY occurred_at{cut}"
    )


# --- the plan: which campaigns --------------------------------------------------------------


def plan_campaigns(events: int, rnd: random.Random) -> list[Campaign]:
    """Campaigns of four projects over a year, enough for about `events` events."""
    sizes: list[tuple[int, int]] = []
    expected = 0.0
    while expected < events * 1.03:
        project = rnd.choices((1, 2, 3, 4), weights=(75, 10, 9, 6))[0]
        top = 500_000 if project == 1 else 100_000
        size = round(math.exp(rnd.uniform(math.log(5_000), math.log(top))))
        sizes.append((project, size))
        expected += size * EVENTS_PER_RECIPIENT
    campaigns = []
    for number, (project, size) in enumerate(sizes, start=1):
        day = (number - 1 + rnd.random()) * 365 / len(sizes)
        sent_at = YEAR_START + timedelta(days=int(day), hours=rnd.randint(7, 18))
        ab = rnd.random() < 0.1
        campaigns.append(
            Campaign(
                id=number,
                project_id=project,
                size=size,
                sent_at=sent_at + timedelta(minutes=rnd.randrange(0, 60, 5)),
                email_a=2 * number - 1,
                email_b=2 * number if ab else None,
                pool_base=project * 10_000_000,
                pool_size=700_000 if project == 1 else 130_000,
                pool_offset=rnd.randrange(700_000),
                router=rnd.choice(("mta-1", "mta-1", "mta-3")),
                category=rnd.choice(CATEGORIES),
                language="fr" if rnd.random() < 0.8 else "en",
                engagement=round(rnd.uniform(0.5, 1.5), 3),
                links=rnd.randint(3, 15),
            )
        )
    return campaigns


def batches(campaigns: Sequence[Campaign]) -> list[list[Campaign]]:
    """Campaigns in sending order, BATCH_EVENTS events a batch, about."""
    result: list[list[Campaign]] = [[]]
    expected = 0.0
    for campaign in campaigns:
        if result[-1] and expected + campaign.size * EVENTS_PER_RECIPIENT > BATCH_EVENTS:
            result.append([])
            expected = 0.0
        result[-1].append(campaign)
        expected += campaign.size * EVENTS_PER_RECIPIENT
    return result


def generate(store: DuckDBStore, events: int) -> tuple[int, float]:
    """Import `events` events, a transaction per COMMIT_EVENTS; (how many, seconds).

    A transaction per batch made each commit slower than the last as the store grew;
    one transaction for everything kept the rate flat, but held 0.6 GB more memory per
    million events until its commit."""
    campaigns = plan_campaigns(events, random.Random(2025))  # noqa: S311 - test data
    pending = batches(campaigns)
    started = time.perf_counter()
    made = 0
    while made < events and pending:
        committed = made
        with store.importing():
            while made < events and pending and made - committed < COMMIT_EVENTS:
                made += store.import_rows(events_sql(pending.pop(0), events - made))
        rate = made / (time.perf_counter() - started)
        print(f"imported: {made:,} events, {rate:,.0f} events/s", flush=True)
    return made, time.perf_counter() - started


# --- the timings -------------------------------------------------------------------------------


def timed(name: str, work: Callable[[], object], figures: dict[str, float]) -> None:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    figures[f"{name}_ms"] = min(times)
    figures[f"{name}_median_ms"] = statistics.median(times)


@dataclass(frozen=True)
class Chosen:
    campaign_id: int
    message: str
    recipients: int
    events: int
    sent_at: datetime  # aware


def choose_campaign(store: DuckDBStore) -> Chosen:
    """The project's largest campaign but its last one (which may be cut)."""
    _names, rows = store.query(
        "SELECT campaign_id, 'L_' || min(email_id), "
        "count(*) FILTER (WHERE kind IN ('queued', 'blocked', 'quarantined') "
        "AND coalesce(reason, '') <> 'external_check'), count(*), "
        "min(occurred_at) FILTER (WHERE kind IN ('delivered', 'permfail')) "
        "FROM events WHERE project_id = ? AND campaign_id < "
        "(SELECT max(campaign_id) FROM events WHERE project_id = ?) "
        "GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 1",
        [PROJECT, PROJECT],
    )
    campaign_id, message, recipients, count, sent_at = rows[0]
    return Chosen(campaign_id, message, recipients, count, sent_at.replace(tzinfo=UTC))


def time_surfaces(store: DuckDBStore) -> dict[str, float]:
    engine = StatisticsEngine(store)
    run = engine.run
    figures: dict[str, float] = {}
    _names, rows = store.query(
        "SELECT count(*), max(occurred_at)::DATE FROM events WHERE project_id = ?", [PROJECT]
    )
    project_events, last_day = rows[0]
    chosen = choose_campaign(store)
    figures["report_events"] = project_events
    figures["campaign_recipients"] = chosen.recipients
    figures["campaign_events"] = chosen.events
    by_day = ("date", "message")
    week = (
        Filter("date", "ge", (last_day - timedelta(days=6),)),
        Filter("date", "le", (last_day,)),
    )
    post = (Filter("post", "eq", (f"S_{chosen.campaign_id}",)),)

    def seed003() -> None:
        run(StatsQuery(PROJECT, (), COMMON, post))
        run(
            StatsQuery(
                PROJECT,
                ("bucket_hour",),
                ("opened",),
                post,
                start=chosen.sent_at,
                end=chosen.sent_at + timedelta(days=2),
            )
        )
        run(StatsQuery(PROJECT, ("link", "url"), ("clicked", "unique_clicked"), post))
        run(StatsQuery(PROJECT, ("domain",), ("delivered", "bounce"), post))
        run(StatsQuery(PROJECT, ("error_code",), ("bounce",), post))

    daily = Selection(chosen.message, GROUPINGS["daily"])
    surfaces: dict[str, Callable[[], object]] = {
        "report_all_5": lambda: run(StatsQuery(PROJECT, by_day, REPORT_EXAMPLE, limit=100)),
        "report_all": lambda: run(StatsQuery(PROJECT, by_day, REPORT, limit=100)),
        "report_7d": lambda: run(StatsQuery(PROJECT, by_day, REPORT, week, limit=100)),
        "seed004_newsletter": lambda: tag_stats(engine, PROJECT, "newsletter"),
        "seed001": lambda: message_stats(engine, PROJECT, daily),
        "seed004": lambda: tag_stats(engine, PROJECT, f"campaign-{chosen.campaign_id}"),
        "seed000": lambda: run(StatsQuery(PROJECT, ("router", "provider"), SPOOLER, post)),
        "seed003": seed003,
    }
    for name, work in surfaces.items():
        timed(name, work, figures)
    return figures


def file_mb(path: Path) -> float:
    files = (path, path.with_name(path.name + ".wal"))
    return sum(p.stat().st_size for p in files if p.exists()) / 1e6


def measure(store: DuckDBStore, figures: dict[str, float]) -> None:
    """Time the surfaces into `figures`, with the store's and the machine's state."""
    load_before = os.getloadavg()[0]
    figures |= time_surfaces(store)
    figures["load_before"], figures["load_after"] = load_before, os.getloadavg()[0]
    figures["events"] = store.query("SELECT count(*) FROM events")[1][0][0]
    for r in ROLLUPS:
        rows = store.query(f"SELECT count(*) FROM {r.table}")[1][0][0]  # noqa: S608
        figures[f"{r.table}_rows"] = rows


def show(figures: dict[str, float], rate: float | None) -> None:
    for name, value in figures.items():
        if name.endswith("_median_ms"):
            print(f"{name}: {value:.1f}")
    for name in ("report_events", "campaign_recipients", "campaign_events"):
        print(f"{name}: {figures[name]:.0f}")
    for name in ("report_all_5_ms", "seed004_newsletter_ms"):
        print(f"{name}: {figures[name]:.1f}")
    print(f"events: {figures['events']:.0f}")
    for r in ROLLUPS:
        print(f"{r.table}_rows: {figures[r.table + '_rows']:.0f}")
    print(f"rollup_build_s: {figures['rollup_build_s']:.1f}")
    print(f"load_average: {figures['load_before']:.1f} / {figures['load_after']:.1f}")
    print(f"generate_events_per_s: {'-' if rate is None else f'{rate:.0f}'}")
    for name in ("report_all", "report_7d", "seed001", "seed004", "seed000", "seed003"):
        print(f"{name}_ms: {figures[name + '_ms']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--store", type=Path, help="the store file (an existing one is reused)")
    parser.add_argument("--keep", action="store_true", help="keep the generated store")
    parser.add_argument(
        "--events-path", action="store_true", help="time the queries over the events alone"
    )
    args = parser.parse_args()
    if args.events_path:  # every statement the engine makes, without the rollups
        sql.statement = functools.partial(sql.statement, rollups=False)
    scratch = Path(tempfile.mkdtemp(prefix="envoi-stats-"))
    path: Path = args.store or scratch / "events.duckdb"
    reused = path.exists()
    figures: dict[str, float] = {}
    try:
        opening = time.perf_counter()
        store = DuckDBStore(path)  # makes the rollups of a store that has none
        figures["rollup_build_s"] = time.perf_counter() - opening
        try:
            rate: float | None = None
            if not reused:
                made, elapsed = generate(store, args.events)
                rate = made / elapsed
                print(f"generated: {made:,} events in {elapsed:.1f} s", flush=True)
            measure(store, figures)
        finally:
            store.close()
        size = file_mb(path)
    finally:
        if not args.keep and not reused:
            for leftover in (path, path.with_name(path.name + ".wal")):
                leftover.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    if args.keep or reused:
        print(f"store: {path}")
    print(f"store_mb: {size:.0f}")
    show(figures, rate)


if __name__ == "__main__":
    main()
