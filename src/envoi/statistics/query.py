"""The query layer: one function answers every statistics question of every surface.

`StatisticsEngine(store).run(StatsQuery(...))` groups one project's events by
catalogue dimensions, computes catalogue measures per group and over all groups (the
totals, which a limit never cuts), with filters on dimensions, a [start, end) range
of event times and a time zone for the time dimensions. It is one parameterised SQL
statement (`statistics.sql`) over the event store: one columnar scan, no Python per
event. A bad name or value raises `Invalid` whose `loc` names the field
(`statistics.plan`); each surface maps it onto its own error shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from envoi.eventstore.interfaces import EventStore
from envoi.statistics import plan as planning
from envoi.statistics import sql
from envoi.statistics.definitions import Dimension, Measure, Moment, Rate, Sum
from envoi.statistics.plan import Filter, Where
from envoi.statistics.timebuckets import aware, from_utc

# A query's filters are declared beside the plan that resolves them, and named here.
__all__ = ["UNAVAILABLE", "Filter", "StatisticsEngine", "StatsQuery", "StatsResult", "Where"]

# What every surface says, in its own error shape, when this process does not hold the
# event store (another process has the DuckDB file): docs/api-*-stats.md.
UNAVAILABLE = "Statistics unavailable"


@dataclass(frozen=True)
class StatsQuery:
    project_id: int
    group_by: tuple[str, ...] = ()  # dimensions and time buckets (catalogue names)
    measures: tuple[str, ...] = ()  # measure names (catalogue)
    filters: tuple[Filter, ...] = ()
    start: datetime | None = None  # aware; occurred_at >= start
    end: datetime | None = None  # aware; occurred_at < end
    timezone: str = "UTC"  # time dimensions are read in this zone
    order_by: tuple[str, ...] = ()  # names; "-name" descending; default: the group keys
    limit: int | None = None
    where: Where | None = None  # ANDed with `filters`
    offset: int = 0  # groups skipped after the order (for pagination)


@dataclass
class StatsResult:
    rows: list[dict[str, Any]]  # one per group: group keys then measures
    totals: dict[str, Any] = field(default_factory=dict)  # the measures over all groups


class StatisticsEngine:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    def run(self, query: StatsQuery) -> StatsResult:
        """The query's groups and totals; Invalid (with `loc`) for a bad query."""
        plan = planning.plan(query)
        statement, parameters = sql.statement(plan)
        _columns, rows = self._store.query(statement, parameters)
        return _shape(plan, rows)


def _shape(plan: planning.Plan, rows: list[tuple[Any, ...]]) -> StatsResult:
    """Named, typed rows: bucket starts and moments as aware datetimes in the query's
    zone, counts as int, rates and sums as float. The statement's last row is the
    totals; without group keys it is the one group too."""
    width = len(plan.keys)
    result = StatsResult(rows=[])
    for row in rows:
        measures = row[width : width + len(plan.shown)]
        values = {
            m.name: _measure_value(m, v, plan) for m, v in zip(plan.shown, measures, strict=True)
        }
        if row[-1]:
            result.totals = values
            continue
        keys = {d.name: _key_value(d, v, plan) for d, v in zip(plan.keys, row, strict=False)}
        result.rows.append(keys | values)
    if not plan.keys:
        result.rows = [dict(result.totals)]
    return result


def _key_value(dimension: Dimension, value: Any, plan: planning.Plan) -> Any:
    if dimension.type == "time" and value is not None:
        return aware(value, plan.zone)
    return value


def _measure_value(measure: Measure, value: Any, plan: planning.Plan) -> Any:
    if isinstance(measure, Moment):
        return from_utc(value, plan.zone) if value is not None else None
    if isinstance(measure, Rate | Sum):
        return float(value)
    return int(value)
