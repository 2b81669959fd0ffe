"""A `Plan` as one parameterised SQL statement over the event table, or over one of its
rollups when that gives the same answer (`statistics.rollups`), in DuckDB's SQL.

The statement's text is made of catalogue SQL and fixed aliases only (`_k0` for the
first group key, `_m0` for the first measure): every value the query brings is a
numbered parameter (`$1`), so nothing a client sends is ever read as SQL (hence the
S608 waivers).

Shape, for groups and their totals in one scan:

    WITH g AS MATERIALIZED (
        SELECT _k0, _k1, <measures>, GROUPING(_k0, _k1) AS _totals
        FROM (SELECT *, <key0> AS _k0, <key1> AS _k1 FROM events WHERE <filters>)
        GROUP BY GROUPING SETS ((_k0, _k1), ()))
    SELECT * FROM ((SELECT * FROM g WHERE _totals = 0 ORDER BY ... LIMIT $n)
                   UNION ALL (SELECT * FROM g WHERE _totals <> 0))
    ORDER BY _totals, ...

The last row is the totals (`_totals` non-zero), whose rates come from its own summed
counts. Grouped by `tag`, an event is in one group per tag (UNNEST), so the totals
are a second aggregate over the events themselves, each counted once.

A rollup (`eventstore.rollups`) has the events' dimension columns, `occurred_at` the
hour, so the same text reads it: only the table and each measure's SQL (the sum of
its column) differ.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from envoi.statistics import predicates
from envoi.statistics import rollups as rollup_sources
from envoi.statistics.definitions import LOCAL, Dimension
from envoi.statistics.plan import Condition, Order, Plan
from envoi.statistics.predicates import Parameters, list_predicate, predicate
from envoi.statistics.timebuckets import date_range_utc, local_sql


def statement(plan: Plan, *, rollups: bool = True) -> tuple[str, list[Any]]:
    """The SQL and its parameters: rows of group keys, measures and `_totals`. Over a
    rollup when one answers the plan exactly, unless `rollups` is False."""
    parameters = Parameters()
    window = _window(plan)
    source = rollup_sources.source(plan, window) if rollups else rollup_sources.EVENTS
    table = source.table
    timed = (
        any(d.timed for d in plan.keys)
        or any(c.dimension.timed for c in plan.conditions)
        or (plan.tree is not None and predicates.timed(plan.tree))
    )
    # Only when used: a parameter the statement does not use is an error.
    local = local_sql(plan.zone_name, parameters.add, *window) if timed else ""
    where = " AND ".join(where_clauses(plan, parameters, local))
    measures = ", ".join(f"{source.measure_sql(m)} AS _m{i}" for i, m in enumerate(plan.measures))
    if not plan.keys:
        selected = f"{measures}, " if measures else ""
        sql = f"SELECT {selected}1 AS _totals FROM {table} WHERE {where}"  # noqa: S608 - module doc
        return sql, parameters.values
    aliases = ", ".join(f"_k{i}" for i in range(len(plan.keys)))
    keys = ", ".join(f"{_key_sql(d, local)} AS _k{i}" for i, d in enumerate(plan.keys))
    measured = f"{measures}, " if measures else ""
    order = ", ".join(_order_sql(o) for o in plan.order)
    limit = f" LIMIT {parameters.add(plan.limit)}" if plan.limit is not None else ""
    if plan.offset:
        limit += f" OFFSET {parameters.add(plan.offset)}"
    if any(d.multi for d in plan.keys):
        unnested = " AND ".join(_unnested_where(plan, parameters)) or "true"
        blanks = ", ".join(f"NULL AS _k{i}" for i in range(len(plan.keys)))
        lists = " AND ".join(f"len(coalesce({d.sql}, [])) > 0" for d in plan.keys if d.multi)
        head = (
            f"WITH e AS (SELECT * FROM {table} WHERE {where}), "  # noqa: S608 - module doc
            f"g AS (SELECT {aliases}, {measured}0 AS _totals "
            f"FROM (SELECT *, {keys} FROM e) WHERE {unnested} GROUP BY {aliases}), "
            # One totals row; without measures, nothing to read for it.
            f"t AS (SELECT {blanks}, {measured}1 AS _totals"
            f"{f' FROM e WHERE {lists}' if measures else ''}) "
        )
        groups, totals = "SELECT * FROM g", "SELECT * FROM t"
    else:
        head = (
            f"WITH g AS MATERIALIZED (SELECT {aliases}, {measured}GROUPING({aliases}) AS _totals "  # noqa: S608 - module doc
            f"FROM (SELECT *, {keys} FROM {table} WHERE {where}) "
            f"GROUP BY GROUPING SETS (({aliases}), ())) "
        )
        groups, totals = "SELECT * FROM g WHERE _totals = 0", "SELECT * FROM g WHERE _totals <> 0"
    sql = (
        f"{head}SELECT * FROM (({groups} ORDER BY {order}{limit}) UNION ALL ({totals})) "  # noqa: S608
        f"ORDER BY _totals, {order}"
    )
    return sql, parameters.values


def _window(plan: Plan) -> tuple[datetime | None, datetime | None]:
    """The UTC times the events of the answer lie within, as far as the range and the
    date filters tell: local time is computed by table for those."""
    low, high = plan.start, plan.end
    for condition in plan.conditions:
        bounds = _date_bounds(condition)
        if bounds is not None:
            if bounds[0] is not None:
                low = max(low or bounds[0], bounds[0])
            if bounds[1] is not None:
                high = min(high or bounds[1], bounds[1])
    return low, high


def _key_sql(dimension: Dimension, local: str) -> str:
    if dimension.multi:
        return f"unnest({dimension.sql})"
    return dimension.sql.replace(LOCAL, local)


def _order_sql(order: Order) -> str:
    column = f"_k{order.index}" if order.key else f"_m{order.index}"
    return f"{column} {'DESC' if order.descending else 'ASC'} NULLS LAST"


def where_clauses(plan: Plan, parameters: Parameters, local: str) -> list[str]:
    """The events' predicates: the project, the time range, each filter."""
    where = [f"project_id = {parameters.add(plan.project_id)}"]
    if plan.start is not None:
        where.append(f"occurred_at >= {parameters.add(plan.start)}")
    if plan.end is not None:
        where.append(f"occurred_at < {parameters.add(plan.end)}")
    for condition in plan.conditions:
        expression = condition.dimension.sql.replace(LOCAL, local)
        if condition.dimension.multi:
            where.append(list_predicate(expression, condition, parameters))
        else:
            where.append(predicate(expression, condition, parameters))
        where += _pruning(condition, parameters)
    if plan.tree is not None:
        where.append(predicates.tree_sql(plan.tree, parameters, local))
    return where


def _unnested_where(plan: Plan, parameters: Parameters) -> list[str]:
    """Filters on a list dimension that is grouped by: each group's own value too
    (grouped by tag with tag in (a, b), only groups a and b)."""
    where = []
    for index, key in enumerate(plan.keys):
        if key.multi:
            where += [
                predicate(f"_k{index}", c, parameters)
                for c in plan.conditions
                if c.dimension.name == key.name
            ]
    return where


def _pruning(condition: Condition, parameters: Parameters) -> list[str]:
    """For a filter on the local `date`, loose bounds on `occurred_at` that hold in any
    time zone: they change no answer, and let the scan skip the row groups outside."""
    bounds = _date_bounds(condition)
    if bounds is None:
        return []
    lower, upper = bounds
    pruning = [f"occurred_at >= {parameters.add(lower)}"] if lower is not None else []
    return pruning + ([f"occurred_at < {parameters.add(upper)}"] if upper is not None else [])


def _date_bounds(condition: Condition) -> tuple[datetime | None, datetime | None] | None:
    """Naive UTC bounds of the events a filter on the local `date` keeps, or None."""
    if condition.dimension.name != "date" or condition.values == (None,):
        return None
    if condition.op not in {"eq", "in", "ge", "gt", "le", "lt"}:
        return None
    lower, upper = date_range_utc(min(condition.values), max(condition.values))
    return (
        None if condition.op in {"le", "lt"} else lower,
        None if condition.op in {"ge", "gt"} else upper,
    )
