"""Seed 003's SendStatistics: the list of a project's mailings, and one mailing's
`common` counters, `open_time`, `click_statistic`, `domain_statistic` and `errors`,
mapped onto the query layer.

A mailing is a campaign (its id); its `letter_title` is the subject of the campaign's
email, default language. The counters are catalogue measures (`statistics.measures`):
`count` recipients spooled, `delivered` messages accepted by the receiving server,
`bounce` messages refused (in the SMTP session, or bounced later), `opened` opens and
`clicked` clicks by people (every one: the seed's "clicked" is the number of clicks),
`spam` complaints, `unsubs` unsubscribes.

The sections take at most three queries, each run only when a field needs it:
1. grouped by `domain`: `domain_statistic`, and `common` from the same scan's totals,
   which also give the campaign's first activity, where `open_time`'s two days start;
2. grouped by (`url`, `error_code`) over clicks and failures only: a click has a URL
   and no error code, a failure an error code and no URL, so the groups of one are
   never split by the other: `click_statistic` and `errors` together;
3. grouped by hour over the two days: `open_time`.

The seed's answers come from PHP, whose `json_encode` writes an empty associative
array as `[]`: an empty mapping is answered `[]`, as in the seed's example.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.core.errors import Invalid
from envoi.db.lookup import is_db_id
from envoi.emails.models import EmailContent
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery, StatsResult

FIELDS: tuple[str, ...] = (
    "id",
    "common",
    "open_time",
    "click_statistic",
    "domain_statistic",
    "errors",
)
DEFAULT_FIELDS: tuple[str, ...] = ("id",)
SORT_FIELDS: tuple[str, ...] = ("id",)
# The seed's keys of `common`, in its order; each is the catalogue measure of that name.
COMMON: tuple[str, ...] = ("count", "delivered", "bounce", "opened", "clicked", "spam", "unsubs")
DOMAIN: tuple[str, ...] = ("delivered", "bounce")
OPEN_WINDOW = timedelta(days=2)  # "за последующие 2 дня после отправки"
# The events of the second query: clicks, and failures (which carry an error code).
FAILURES: tuple[str, ...] = ("tempfail", "permfail", "bounce")
FIELDS_ERROR = "Invalid fields. Wrong parameters of string fields"
_FIELDS_KEY = re.compile(r"fields(\[\d*\])?")

# A JSON-ready value; an empty mapping of the seed's answers is PHP's `[]`.
PhpMap = dict[str, Any] | list[Any]


def php_map(mapping: Mapping[str, Any]) -> PhpMap:
    """`mapping` as PHP's json_encode writes an associative array: `[]` when empty."""
    return dict(mapping) if mapping else []


# -- the request --------------------------------------------------------------------------


def fields_values(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The raw values of `fields` among the query's pairs: `fields=...`, `fields[]=...`
    and `fields[0]=...`, in order."""
    return [value for key, value in pairs if _FIELDS_KEY.fullmatch(key)]


def parse_fields(values: Sequence[str]) -> tuple[str, ...]:
    """The fields asked for, in the seed's order; `["id"]` when none is given. Each value
    is a JSON array of names (`["id","common"]`), or names separated by commas
    (`id,common`). Anything else, or a name not in FIELDS: Invalid."""
    if not values:
        return DEFAULT_FIELDS
    asked: set[str] = set()
    for value in values:
        names = _names(value)
        if not names or any(name not in FIELDS for name in names):
            raise Invalid(FIELDS_ERROR, ("query", "fields"))
        asked.update(names)
    return tuple(name for name in FIELDS if name in asked)


def _names(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            return []
        if not isinstance(parsed, list) or not all(isinstance(n, str) for n in parsed):
            return []
        return [name.strip() for name in parsed]
    return [name.strip() for name in text.split(",")]


def check_sort_field(values: Sequence[str]) -> None:
    """Only `id` (ascending) sorts the list: any other value is Invalid."""
    for value in values:
        if value not in SORT_FIELDS:
            raise Invalid("Invalid sort_field. Allowed values: id", ("query", "sort_field"))


# -- the list -----------------------------------------------------------------------------


def mailings(session: Session, project_id: int) -> list[dict[str, Any]]:
    """Every campaign of the project by id: `{"id": ..., "letter_title": subject}`; an
    email without a subject in its default language gives `""`."""
    query = (
        select(Campaign.id, EmailContent.subject)
        .outerjoin(
            EmailContent,
            and_(EmailContent.email_id == Campaign.message_id, EmailContent.language == ""),
        )
        # Not the hidden streams of single and test sends (post types P, T: `sends`).
        .where(Campaign.project_id == project_id, Campaign.post_type.in_(("S", "B", "A")))
        .order_by(Campaign.id)
    )
    return [{"id": row.id, "letter_title": row.subject or ""} for row in session.execute(query)]


def owned_mailing(session: Session, project_id: int, raw_id: str) -> int | None:
    """The id of the project's campaign `raw_id` (digits), None for anything else."""
    if not raw_id.isdigit() or not raw_id.isascii() or not is_db_id(int(raw_id)):
        return None
    query = select(Campaign.id).where(Campaign.id == int(raw_id), Campaign.project_id == project_id)
    found: int | None = session.scalar(query)
    return found


# -- one mailing --------------------------------------------------------------------------


def mailing_stats(
    engine: StatisticsEngine, project_id: int, campaign_id: int, fields: Sequence[str]
) -> dict[str, Any]:
    """The fields asked for, in the seed's order; only the queries they need run."""
    asked = set(fields)
    campaign = (Filter("campaign_id", "eq", (campaign_id,)),)
    found: dict[str, Any] = {"id": campaign_id}
    if asked & {"common", "domain_statistic", "open_time"}:
        by_domain = ("domain",) if "domain_statistic" in asked else ()
        overview = engine.run(StatsQuery(project_id, by_domain, (*COMMON, "first"), campaign))
        found["common"] = {name: int(overview.totals.get(name) or 0) for name in COMMON}
        if by_domain:
            found["domain_statistic"] = php_map(domain_statistic(overview))
        if "open_time" in asked:
            first = overview.totals.get("first")
            found["open_time"] = php_map(open_time(engine, project_id, campaign, first))
    if asked & {"click_statistic", "errors"}:
        kinds = (*campaign, Filter("kind", "in", ("click", *FAILURES)))
        measures = ("clicked", "deferrals", "bounce")
        hits = engine.run(StatsQuery(project_id, ("url", "error_code"), measures, kinds))
        found["click_statistic"] = php_map(click_statistic(hits))
        found["errors"] = php_map(errors(hits))
    return {field: found[field] for field in fields}


def open_time(
    engine: StatisticsEngine,
    project_id: int,
    campaign: tuple[Filter, ...],
    first: datetime | None,
) -> dict[str, int]:
    """Opens by people per hour (epoch seconds of the hour's start, as a string) over
    the 48 hours from the hour of the campaign's first activity; hours without opens
    are left out."""
    if first is None:
        return {}
    start = first.replace(minute=0, second=0, microsecond=0)
    result = engine.run(
        StatsQuery(
            project_id,
            ("bucket_hour",),
            ("opened",),
            (*campaign, Filter("kind", "eq", ("open",))),
            start=start,
            end=start + OPEN_WINDOW,
        )
    )
    return {
        str(int(row["bucket_hour"].timestamp())): int(row["opened"])
        for row in result.rows
        if row["opened"]
    }


def click_statistic(result: StatsResult) -> dict[str, int]:
    """Clicks by people per link target."""
    return {
        row["url"]: int(row["clicked"])
        for row in result.rows
        if row["url"] is not None and row["clicked"]
    }


def domain_statistic(result: StatsResult) -> dict[str, dict[str, int]]:
    """Delivered and bounced messages per recipient domain of the mailing."""
    return {
        row["domain"]: {name: int(row[name]) for name in DOMAIN}
        for row in result.rows
        if row["domain"] is not None and any(row[name] for name in (*DOMAIN, "count"))
    }


def errors(result: StatsResult) -> dict[str, int]:
    """Failures per seed 003 error code: every deferral, refusal and bounce report."""
    found: dict[str, int] = {}
    for row in result.rows:
        code = row["error_code"]
        failures = int(row["deferrals"]) + int(row["bounce"])
        if code is not None and failures:
            found[str(code)] = found.get(str(code), 0) + failures
    return found
