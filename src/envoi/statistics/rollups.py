"""Which table answers a plan: a rollup of the event store (`eventstore.rollups`) when
it gives exactly the events' answer, else the events themselves.

A rollup row is a group of events of one UTC hour, its measures summed ahead. It
answers a plan when
- every measure is one it keeps (a count or moment, or a rate of two counts);
- every dimension the plan groups or filters by, in `conditions` and in the `tree`,
  reads only the rollup's columns, and a time dimension is no finer than the hour
  (HOURLY: each is a function of the hour its time falls in);
- `start` and `end` are whole UTC hours (or None), so the hour tells on which side of
  them an event lies;
- when a time dimension is used, the query's zone is a whole number of hours ahead of
  UTC, changing offset at whole UTC hours only, over the times the statement reads
  local time for (Europe/Paris: yes; Asia/Kolkata, +05:30: no). Then an event's local
  hour is its UTC hour's, shifted: the same date, hour, week ... as the event's.

The statement is the same either way (`statistics.sql`): only the table and the
measures' SQL change, a count becoming the sum of its column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from envoi.eventstore.rollups import MEASURE_COLUMNS, ROLLUPS, Rollup, columns_of, quoted
from envoi.eventstore.schema import TABLE
from envoi.statistics.catalogue import MEASURES
from envoi.statistics.definitions import LOCAL, Count, Dimension, Measure, Moment, Rate
from envoi.statistics.plan import Branch, Condition, Node, Plan
from envoi.statistics.timebuckets import OFFSET_YEARS, _offsets, is_utc

# Time dimensions whose value is the same for every time of one local hour.
HOURLY = frozenset(
    {
        "year",
        "quarter",
        "month_year",
        "day_of_month",
        "day_of_week",
        "week",
        "date",
        "hour",
        "bucket_hour",
        "bucket_day",
        "bucket_week",
        "bucket_month",
        "bucket_quarter",
        "bucket_year",
    }
)
HOUR = 3600
_COLUMNS = {m.name for m in MEASURE_COLUMNS}


@dataclass(frozen=True)
class Source:
    """The table a statement reads, and how a measure is computed from its rows."""

    table: str
    rolled_up: bool

    def measure_sql(self, measure: Measure) -> str:
        if not self.rolled_up:
            return measure.sql(MEASURES)
        if isinstance(measure, Rate):
            numerator = self.measure_sql(MEASURES[measure.numerator])
            denominator = self.measure_sql(MEASURES[measure.denominator])
            # As `Rate.sql`: the same DOUBLE division of the same integers.
            return (
                f"CASE WHEN ({denominator}) = 0 THEN CAST(0 AS DOUBLE) "
                f"ELSE CAST({numerator} AS DOUBLE) / CAST({denominator} AS DOUBLE) END"
            )
        column = quoted(measure.same_as or measure.name)
        if isinstance(measure, Moment):
            return f"{measure.extreme}({column})"
        return f"coalesce(sum({column}), 0)"  # 0 for no row, as count(*) gives


EVENTS = Source(TABLE, rolled_up=False)


def source(plan: Plan, window: tuple[datetime | None, datetime | None]) -> Source:
    """The smallest rollup that answers `plan` exactly, else the events. `window`: the
    UTC times the statement reads local time for (`sql._window`)."""
    if not all(_kept(m) for m in plan.measures):
        return EVENTS
    if not all(_whole_hour(t) for t in (plan.start, plan.end)):
        return EVENTS
    dimensions = [*plan.keys, *(c.dimension for c in plan.conditions)]
    if plan.tree is not None:
        dimensions += list(_tree_dimensions(plan.tree))
    if any(d.timed for d in dimensions) and not hourly_zone(plan.zone_name, *window):
        return EVENTS
    for rollup in ROLLUPS:
        if all(_answers(rollup, d) for d in dimensions):
            return Source(rollup.table, rolled_up=True)
    return EVENTS


def _kept(measure: Measure) -> bool:
    if isinstance(measure, Rate):
        return _kept(MEASURES[measure.numerator]) and _kept(MEASURES[measure.denominator])
    return isinstance(measure, Count | Moment) and (measure.same_as or measure.name) in _COLUMNS


def _answers(rollup: Rollup, dimension: Dimension) -> bool:
    if dimension.timed and dimension.name not in HOURLY:
        return False
    read = columns_of(dimension.sql.replace(LOCAL, "occurred_at"))
    return read <= set(rollup.dimensions)


def _tree_dimensions(node: Node) -> Iterator[Dimension]:
    if isinstance(node, Condition):
        yield node.dimension
        return
    if isinstance(node, Branch):
        for item in node.items:
            yield from _tree_dimensions(item)


def _whole_hour(moment: datetime | None) -> bool:
    return moment is None or (moment.minute, moment.second, moment.microsecond) == (0, 0, 0)


def hourly_zone(zone_name: str, start: datetime | None, end: datetime | None) -> bool:
    """Whether `zone_name`'s offset is whole hours, changing at whole UTC hours, over
    the offset table `timebuckets.local_sql` reads for [start, end) (naive UTC). Times
    outside its years are read by DuckDB's conversion, which the rollups give their
    own time (not the hour's)."""
    if is_utc(zone_name):
        return True
    first, last = (datetime(year, 1, 1) for year in OFFSET_YEARS)  # noqa: DTZ001 - naive UTC
    low = max(start or first, first)
    high = min(end or last, last)
    points = [p for p in _offsets(zone_name) if p[0] < high]
    before = [p for p in points if p[0] <= low]
    changes = [p for p in points if p[0] > low]
    return all(offset % HOUR == 0 for _since, offset in before[-1:] + changes) and all(
        _whole_hour(since) for since, _offset in changes
    )
