"""Seed 001's `get_message_stats`: one message's counters per hour, day, month or year,
mapped onto the query layer.

The message is an email (`L_<id>`: an A/B variant is its own email). Every counter is a
catalogue measure of the same name, counting people (machine opens and bot clicks
excluded); unique counters sum `is_first_human`, so a unique action counts in the
period it first happened, as the seed warns. A period is listed only when one of its
counters is positive.

`created_on` narrows the counts to recipients whose profile was created in a date
range. Profiles live in the OLTP store, events in the event store: the range is
resolved in the OLTP store to runs of consecutive profile ids (a profile's
`created_at` is its insert time, so ids and creation times rise together and a date
range is one run, give or take a few rows written concurrently at its edges), and the
events are then filtered on `profile_id` per run. That keeps the request small
whatever the number of profiles, where a list of ids could reach millions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from envoi.core.errors import Invalid, NotFound
from envoi.emails.models import Email
from envoi.profiles.models import Profile
from envoi.statistics.plan import MAX_IN
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery

MISSING_MESSAGE = "Missing message"

# The seed's counters in the seed's order; each is the catalogue measure of that name.
COUNTERS: tuple[str, ...] = (
    "sent",
    "opened",
    "unique_opened",
    "clicked",
    "unique_clicked",
    "goals",
    "unique_goals",
    "forwarded",
    "unsubscribes",
    "bounces_user_unknown",
    "bounces_user_recycled",
    "bounces_mailbox_full",
    "bounces_block_content",
    "bounces_block_timeout",
    "bounces_block_other",
    "bounces_other_soft",
    "bounces_other_hard",
    "complaints_handled",
    "complaints_unhandled",
)


@dataclass(frozen=True)
class Grouping:
    bucket: str  # the catalogue's time bucket
    key_format: str  # strftime of the seed's result keys


GROUPINGS: dict[str, Grouping] = {
    "hourly": Grouping("bucket_hour", "%Y-%m-%d %H"),
    "daily": Grouping("bucket_day", "%Y-%m-%d"),
    "monthly": Grouping("bucket_month", "%Y-%m"),
    "yearly": Grouping("bucket_year", "%Y"),
}
DEFAULT_GROUPING = "daily"

# Seed 001's time operators ("AT" is the API's general name for EQUALS on dates).
TIME_OPERATORS = ("EQUALS", "AT", "FROM", "TO")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MESSAGE_KEY = re.compile(r"(?:L_)?(\d{1,18})")
MAX_ID = 2**31 - 1  # ids are 32-bit integers in the OLTP store
CONDITIONS = frozenset({"message", "grouping", "created_on"})
# Past this many runs of profile ids (creation times far from insert order), the
# events are filtered on the ids themselves, MAX_IN ids a query.
MAX_ID_RUNS = 16


@dataclass(frozen=True)
class CreatedOn:
    """Profile creation times in [start, end), UTC; None: unbounded on that side."""

    start: datetime | None = None
    end: datetime | None = None

    @property
    def empty(self) -> bool:
        return self.start is not None and self.end is not None and self.start >= self.end


@dataclass(frozen=True)
class MessageStatsRequest:
    email_id: int
    grouping: Grouping
    created_on: CreatedOn | None = None


@dataclass(frozen=True)
class Selection:
    """What the OLTP store said about a request: the message's key, and the recipients
    to count (None: everyone; else runs of profile ids, or explicit ids)."""

    message: str
    grouping: Grouping
    id_runs: tuple[tuple[int, int], ...] | None = None
    profile_ids: tuple[int, ...] | None = None


def parse_conditions(conditions: Mapping[str, Any]) -> MessageStatsRequest:
    """The seed's conditions object; `NotFound(Missing message)` or `Invalid`."""
    unknown = sorted(set(conditions) - CONDITIONS)
    if unknown:
        raise Invalid(f"unknown condition {unknown[0]!r}", (unknown[0],))
    email_id = parse_message(conditions.get("message"))
    grouping = conditions.get("grouping")
    if grouping is None:
        grouping = DEFAULT_GROUPING
    if not isinstance(grouping, str) or grouping not in GROUPINGS:
        raise Invalid("grouping must be hourly, daily, monthly or yearly", ("grouping",))
    created_on = conditions.get("created_on")
    return MessageStatsRequest(
        email_id,
        GROUPINGS[grouping],
        None if created_on is None else parse_created_on(created_on),
    )


def parse_message(value: Any) -> int:
    """An email's id, given as a number, a numeric string or its `L_<id>` key."""
    if value is None or value == "":
        raise NotFound(MISSING_MESSAGE)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid("message must be a MESSAGE_ID string", ("message",))
    match = _MESSAGE_KEY.fullmatch(str(value))
    if match is None or not 0 < int(match[1]) <= MAX_ID:
        raise NotFound(MISSING_MESSAGE)  # no email has such an id
    return int(match[1])


def parse_created_on(value: Any) -> CreatedOn:
    """`{"OPERATOR": "YYYY-MM-DD", ...}`, every operator ANDed; days are UTC days."""
    if not isinstance(value, dict):
        raise Invalid("created_on must be an object of time operators", ("created_on",))
    start: datetime | None = None
    end: datetime | None = None
    for operator, text in value.items():
        if operator not in TIME_OPERATORS:
            raise Invalid(f"unknown time operator {operator!r}", ("created_on", operator))
        if not isinstance(text, str) or not _DATE.fullmatch(text):
            raise Invalid("dates are YYYY-MM-DD", ("created_on", operator))
        try:
            day = datetime.combine(date.fromisoformat(text), time(), UTC)
        except ValueError:
            raise Invalid(f"{text!r} is not a date", ("created_on", operator)) from None
        if operator in ("EQUALS", "AT", "FROM"):
            start = day if start is None else max(start, day)
        if operator in ("EQUALS", "AT", "TO"):
            next_day = day + timedelta(days=1)  # TO is inclusive: the whole day
            end = next_day if end is None else min(end, next_day)
    return CreatedOn(start, end)


def select_recipients(session: Session, project_id: int, request: MessageStatsRequest) -> Selection:
    """Check the message is one of the project's emails and resolve `created_on`."""
    found = session.scalar(
        select(Email.id).where(Email.id == request.email_id, Email.project_id == project_id)
    )
    if found is None:
        raise NotFound(MISSING_MESSAGE)
    message = f"L_{request.email_id}"
    if request.created_on is None or request.created_on == CreatedOn():
        return Selection(message, request.grouping)
    if request.created_on.empty:
        return Selection(message, request.grouping, id_runs=())
    runs = _id_runs(session, project_id, request.created_on)
    if len(runs) <= MAX_ID_RUNS:
        return Selection(message, request.grouping, id_runs=tuple(runs))
    ids = session.scalars(
        select(Profile.id)
        .where(Profile.project_id == project_id, *_created(request.created_on))
        .order_by(Profile.id)
    )
    return Selection(message, request.grouping, profile_ids=tuple(ids))


def _created(created_on: CreatedOn) -> list[Any]:
    conditions = []
    if created_on.start is not None:
        conditions.append(Profile.created_at >= created_on.start)
    if created_on.end is not None:
        conditions.append(Profile.created_at < created_on.end)
    return conditions


def _id_runs(session: Session, project_id: int, created_on: CreatedOn) -> list[tuple[int, int]]:
    """Maximal runs of consecutive (in id order) profiles created in the range, as
    (first id, last id): the classic gaps-and-islands query, on SQLite and PostgreSQL."""
    matched = case((and_(*_created(created_on)), 1), else_=0)
    ordered = (
        select(
            Profile.id,
            matched.label("matched"),
            # The run number: how many unmatched profiles came before this one.
            func.sum(1 - matched).over(order_by=Profile.id).label("run"),
        )
        .where(Profile.project_id == project_id)
        .subquery()
    )
    rows = session.execute(
        select(func.min(ordered.c.id), func.max(ordered.c.id))
        .where(ordered.c.matched == 1)
        .group_by(ordered.c.run)
        .order_by(func.min(ordered.c.id))
    )
    return [(int(first), int(last)) for first, last in rows]


def message_stats(
    engine: StatisticsEngine, project_id: int, selection: Selection
) -> dict[str, dict[str, int]]:
    """The seed's result object: period key → every counter, periods with a positive
    counter only, in time order."""
    periods: dict[Any, dict[str, int]] = {}
    for filters in _filter_sets(selection):
        _add(periods, engine, project_id, selection.grouping, filters)
    return {
        _key(bucket, selection.grouping): counters
        for bucket, counters in sorted(periods.items())
        if any(value > 0 for value in counters.values())
    }


def _filter_sets(selection: Selection) -> list[tuple[Filter, ...]]:
    """One set of filters per query: the message, and one run (or slice) of profiles."""
    message = Filter("message", "eq", (selection.message,))
    if selection.profile_ids is not None:
        ids = selection.profile_ids
        return [
            (message, Filter("profile_id", "in", ids[at : at + MAX_IN]))
            for at in range(0, len(ids), MAX_IN)
        ]
    if selection.id_runs is not None:
        return [
            (message, Filter("profile_id", "ge", (first,)), Filter("profile_id", "le", (last,)))
            for first, last in selection.id_runs
        ]
    return [(message,)]


def _add(
    periods: dict[Any, dict[str, int]],
    engine: StatisticsEngine,
    project_id: int,
    grouping: Grouping,
    filters: Sequence[Filter],
) -> None:
    # Every counter is a count over people: disjoint sets of recipients add up.
    result = engine.run(
        StatsQuery(
            project_id=project_id,
            group_by=(grouping.bucket,),
            measures=COUNTERS,
            filters=tuple(filters),
        )
    )
    for row in result.rows:
        counters = periods.setdefault(row[grouping.bucket], dict.fromkeys(COUNTERS, 0))
        for name in COUNTERS:
            counters[name] += int(row[name] or 0)


def _key(bucket: Any, grouping: Grouping) -> str:
    if isinstance(bucket, datetime | date):
        return bucket.strftime(grouping.key_format)
    return str(bucket)
