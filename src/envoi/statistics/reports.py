"""Seed 002's report builder (`GET /api/v1/stats`) mapped onto the query layer.

The query string becomes a `StatsQuery`: `fields` names grouping fields (catalogue
dimensions of the same names) and aggregated fields (catalogue measures of the same
names) mixed in any order; every other parameter is a grouping field filtered with a
Django-style `op:value` (a plain value is equality); without a filter on a period
(`date`, `month_year`, `year`) the last week is added. The `StatsResult` becomes the
seed's objects: exactly the requested fields, in the requested order, at most 99
groups ordered by the grouping fields, then the totals with the grouping fields
blanked. docs/api-report-builder.md is the user's account of every rule here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from envoi.core.errors import Invalid
from envoi.statistics.catalogue import DIMENSIONS, MEASURES
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery
from envoi.statistics.timebuckets import zone

# The seed's grouping fields, each the catalogue dimension of that name.
GROUPING_FIELDS: tuple[str, ...] = (
    "project_id",
    "message",
    "post",
    "message_type",
    "post_type",
    "year",
    "quarter",
    "month_year",
    "day_of_month",
    "day_of_week",
    "week",
    "date",
    "hour",
    "client",
    "language",
    "city_name",
    "region_name",
    "country_name",
)
# The seed's aggregated fields, each the catalogue measure of that name; the seed's
# garbled `sum_stop_ xistent` and `sum_bounce_ xistent` are `..._nonexistent`.
AGGREGATED_FIELDS: tuple[str, ...] = (
    "sum_total",
    "sum_selected",
    "sum_sended",
    "sum_delivered",
    "sum_opened",
    "sum_opened_unique",
    "sum_clicked",
    "sum_clicked_unique",
    "sum_unsubscribed",
    "sum_spam_reports",
    "sum_churn",
    "open_rate",
    "open_rate_unique",
    "click_rate",
    "click_rate_unique",
    "ctor",
    "delivery_rate",
    "bounce_rate",
    "unsub_rate",
    "abuse_rate",
    "churn_rate",
    "sum_stop_total",
    "sum_stop_invalid",
    "sum_stop_nonexistent",
    "sum_stop_spam_added",
    "sum_stop_gdpr",
    "sum_stop_unsubscr",
    "sum_bounce_total",
    "sum_bounce_nonexistent",
    "sum_bounce_temp_unavailable",
    "sum_bounce_spam",
    "sum_bounce_other",
    "sum_stop_sendlog_added",
    "sum_stop_letter_single_quarantine",
    "sum_stop_inactive",
    "sum_stop_noaddress",
    "sum_stop_send_policy",
    "sum_stop_external_check",
)
OPERATORS: tuple[str, ...] = ("eq", "ne", "gt", "ge", "lt", "le", "in")
MAX_OBJECTS = 100  # the seed's cap, the totals object included
DEFAULT_DAYS = 7  # no period filtered: date >= today - 7, today included
PERIOD_FIELDS = frozenset({"date", "month_year", "year"})  # name a period on their own
FIELDS = "fields"
TIMEZONE = "timezone"
# The totals object's grouping fields, by the type of their values: each type's
# default value (the seed shows a date as 1970-01-01, a message as "").
BLANKS: dict[str, Any] = {"str": "", "int": 0, "month": "", "date": "1970-01-01"}


class ReportError(Exception):
    """A request the report builder cannot answer: 400 with `message`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Report:
    fields: tuple[str, ...]  # as requested, in order
    query: StatsQuery
    labels: tuple[str, ...]  # per filter of `query`, the parameter that made it


@dataclass(frozen=True)
class Answer:
    objects: list[dict[str, Any]]  # the groups, then the totals
    truncated: bool  # more groups matched than the cap lets through


def parse_report(
    params: Sequence[tuple[str, str]], project_id: int, now: datetime | None = None
) -> Report:
    """The query string's (name, value) pairs, in order, as a report for `project_id`;
    ReportError naming the field at the first problem."""
    fields = _fields([value for name, value in params if name == FIELDS])
    timezone = _timezone([value for name, value in params if name == TIMEZONE])
    filters: list[Filter] = []
    labels: list[str] = []
    for name, value in params:
        if name in (FIELDS, TIMEZONE):
            continue
        filters.append(_filter(name, value))
        labels.append(name)
    if not PERIOD_FIELDS & {f.field for f in filters}:
        today = (now or datetime.now(UTC)).astimezone(zone(timezone)).date()
        since = today - timedelta(days=DEFAULT_DAYS)
        filters.append(Filter("date", "ge", (since,)))
        labels.append("date")
    group_by = tuple(f for f in fields if f in DIMENSIONS)
    query = StatsQuery(
        project_id=project_id,
        group_by=group_by,
        measures=tuple(f for f in fields if f not in DIMENSIONS),
        filters=tuple(filters),
        timezone=timezone,
        # One more than shown: its presence tells the list was cut.
        limit=MAX_OBJECTS if group_by else None,
    )
    return Report(fields, query, tuple(labels))


def run_report(engine: StatisticsEngine, report: Report) -> Answer:
    """The seed's objects: groups ordered by the grouping fields, the totals last."""
    try:
        result = engine.run(report.query)
    except Invalid as error:
        raise ReportError(_located(error, report)) from None
    groups = result.rows[: MAX_OBJECTS - 1] if report.query.group_by else []
    objects = [{f: _json(row[f]) for f in report.fields} for row in groups]
    objects.append({f: _totals_value(f, result.totals) for f in report.fields})
    return Answer(objects, truncated=len(result.rows) > len(groups))


def _fields(values: list[str]) -> tuple[str, ...]:
    """`fields` (repeated: joined), comma-separated, blanks around names ignored."""
    names = [n.strip() for value in values for n in value.split(",") if n.strip()]
    if not names:
        raise ReportError(
            "fields is required: a comma-separated list of grouping and aggregated fields"
        )
    seen: set[str] = set()
    for name in names:
        if name not in GROUPING_FIELDS and name not in AGGREGATED_FIELDS:
            raise ReportError(f"fields: unknown field {name!r}")
        if name in seen:
            raise ReportError(f"fields: {name!r} is named twice")
        seen.add(name)
    return tuple(names)


def _timezone(values: list[str]) -> str:
    if not values:
        return "UTC"
    if len(values) > 1:
        raise ReportError("timezone: give one time zone")
    try:
        zone(values[0])
    except Invalid as error:
        raise ReportError(f"timezone: {error.message}") from None
    return values[0]


def _filter(name: str, value: str) -> Filter:
    """`name=op:value`, `name=in:a,b` or `name=value` (equality)."""
    if name not in GROUPING_FIELDS:
        if name in AGGREGATED_FIELDS:
            raise ReportError(f"{name}: an aggregated field cannot filter; filter a grouping field")
        raise ReportError(f"unknown parameter {name!r}: filters take grouping fields")
    op, colon, operand = value.partition(":")
    if not colon:  # no operator: the whole value, equality
        op, operand = "eq", value
    elif op not in OPERATORS:
        raise ReportError(
            f"{name}: unknown operator {op!r} (one of {', '.join(OPERATORS)}; "
            f"a value with a colon is written eq:VALUE)"
        )
    values = tuple(operand.split(",")) if op == "in" else (operand,)
    if any(v == "" for v in values):
        raise ReportError(f"{name}: a filter needs a value ({name}={op}:VALUE)")
    return Filter(name, op, values)


def _located(error: Invalid, report: Report) -> str:
    """The engine's message, prefixed by the parameter it is about."""
    loc = error.loc
    if len(loc) >= 2 and loc[0] == "filters" and isinstance(loc[1], int):
        return f"{report.labels[loc[1]]}: {error.message}"
    if loc and loc[0] == "timezone":
        return f"timezone: {error.message}"
    return error.message


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _totals_value(field: str, totals: dict[str, Any]) -> Any:
    if field in DIMENSIONS:
        return BLANKS[DIMENSIONS[field].type]
    return totals[field]


def _check() -> None:
    """Every field is in the catalogue, and every grouping field has a blank."""
    for name in GROUPING_FIELDS:
        if DIMENSIONS[name].type not in BLANKS:
            raise RuntimeError(f"grouping field {name}: no blank for {DIMENSIONS[name].type}")
    for name in AGGREGATED_FIELDS:
        if name not in MEASURES:
            raise RuntimeError(f"aggregated field {name} is not in the catalogue")


_check()
