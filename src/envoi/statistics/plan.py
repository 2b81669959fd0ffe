"""A statistics query checked and resolved against the catalogue: the `Plan`.

Every name becomes its catalogue entry, every filter value the Python type of its
dimension (so the statement binds a DATE to a date, an INTEGER to an int), times
the store's naive UTC. Anything wrong raises `Invalid` with `loc` naming the field:
`("group_by", 0)`, `("filters", 1, "values")`, `("timezone",)` ...
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

from envoi.core.errors import Invalid
from envoi.statistics.catalogue import DIMENSIONS, dimension, measure
from envoi.statistics.definitions import Dimension, Measure
from envoi.statistics.timebuckets import local, utc, zone

if TYPE_CHECKING:
    from envoi.statistics.query import Filter, StatsQuery

OPS = frozenset({"eq", "ne", "in", "ge", "le", "gt", "lt", "like"})
MAX_IN = 10_000  # values of one `in` filter
_INTEGER = re.compile(r"-?\d{1,18}")
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True)
class Condition:
    """A filter with its dimension and its values coerced (None: a missing value)."""

    dimension: Dimension
    op: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Order:
    """Sort by group key `index` (`key`) or measure `index` of `Plan.measures`."""

    key: bool
    index: int
    descending: bool


@dataclass(frozen=True)
class Plan:
    project_id: int
    keys: tuple[Dimension, ...]
    shown: tuple[Measure, ...]  # the measures asked for, in order
    measures: tuple[Measure, ...]  # `shown`, then those only sorted by
    conditions: tuple[Condition, ...]
    start: datetime | None  # naive UTC
    end: datetime | None
    zone_name: str
    zone: ZoneInfo
    order: tuple[Order, ...]
    limit: int | None


def plan(query: StatsQuery) -> Plan:
    """`query` checked and resolved; Invalid at the first wrong field."""
    project_id = query.project_id
    if not isinstance(project_id, int) or isinstance(project_id, bool):
        raise Invalid("project_id must be an integer", ("project_id",))
    where = zone(query.timezone)
    keys = _distinct(
        [dimension(n, ("group_by", i)) for i, n in enumerate(query.group_by)], "group_by"
    )
    shown = _distinct(
        [measure(n, ("measures", i)) for i, n in enumerate(query.measures)], "measures"
    )
    if not keys and not shown:
        raise Invalid("name at least one measure or group key", ("measures",))
    start = utc(query.start, ("start",)) if query.start is not None else None
    end = utc(query.end, ("end",)) if query.end is not None else None
    if start is not None and end is not None and end <= start:
        raise Invalid("end must be after start", ("end",))
    conditions = tuple(_condition(f, i, where) for i, f in enumerate(query.filters))
    measures = list(shown)
    order = _order(query.order_by, keys, measures)
    limit = query.limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise Invalid("limit must be a positive integer", ("limit",))
    return Plan(
        project_id=project_id,
        keys=tuple(keys),
        shown=tuple(shown),
        measures=tuple(measures),
        conditions=conditions,
        start=start,
        end=end,
        zone_name=query.timezone,
        zone=where,
        order=order,
        limit=limit,
    )


Named = TypeVar("Named", Dimension, Measure)


def _distinct(items: list[Named], loc: str) -> list[Named]:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.name in seen:
            raise Invalid(f"{item.name!r} is named twice", (loc, index))
        seen.add(item.name)
    return items


def _order(
    names: tuple[str, ...], keys: list[Dimension], measures: list[Measure]
) -> tuple[Order, ...]:
    """The sort: the names asked for, then every group key (so it is total); a measure
    not asked for is computed for the sort alone."""
    order: list[Order] = []
    for index, raw in enumerate(names):
        loc = ("order_by", index)
        if not isinstance(raw, str) or not raw:
            raise Invalid("expected a name, or -name for descending", loc)
        descending = raw.startswith("-")
        name = raw.removeprefix("-")
        key = next((i for i, d in enumerate(keys) if d.name == name), None)
        if key is not None:
            order.append(Order(True, key, descending))
            continue
        if name in DIMENSIONS:
            raise Invalid(f"{name!r} is not grouped by: it cannot order the rows", loc)
        found = measure(name, loc)
        if found not in measures:
            measures.append(found)
        order.append(Order(False, measures.index(found), descending))
    ordered = {o.index for o in order if o.key}
    order += [Order(True, i, False) for i in range(len(keys)) if i not in ordered]
    return tuple(order)


def _condition(item: Filter, index: int, where: ZoneInfo) -> Condition:
    loc: tuple[str | int, ...] = ("filters", index)
    found = dimension(item.field, (*loc, "field"))
    if item.op not in OPS:
        raise Invalid(
            f"unknown operator {item.op!r}: one of {', '.join(sorted(OPS))}", (*loc, "op")
        )
    values = item.values
    value_loc = (*loc, "values")
    if not isinstance(values, tuple | list):
        raise Invalid("values must be a list", value_loc)
    if item.op == "in":
        if not 1 <= len(values) <= MAX_IN:
            raise Invalid(f"in takes 1 to {MAX_IN} values", value_loc)
    elif len(values) != 1:
        raise Invalid(f"{item.op} takes one value", value_loc)
    if item.op == "like" and found.type not in {"str", "month"}:
        raise Invalid(f"like applies to text, not to {found.name}", (*loc, "op"))
    if item.op in {"eq", "ne"} and values[0] is None:
        return Condition(found, item.op, (None,))
    coerced = tuple(
        _coerce(found, item.op, v, (*value_loc, i), where) for i, v in enumerate(values)
    )
    return Condition(found, item.op, coerced)


def _coerce(
    found: Dimension, op: str, value: object, loc: tuple[str | int, ...], where: ZoneInfo
) -> Any:
    """`value` as the Python type of `found`'s values, or Invalid."""
    kind = "str" if op == "like" else found.type
    if kind == "time":  # a bucket start, compared on the zone's wall clock
        moment = _datetime(value)
        read: Any = local(moment, where) if moment is not None else None
    else:
        read = _READERS[kind](value)
    if read is None:
        raise Invalid(f"{value!r} is not a valid {found.name} ({_EXPECTED[kind]})", loc)
    return read


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def _boolean(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    return _BOOLEANS.get(value.strip().lower()) if isinstance(value, str) else None


def _month(value: object) -> str | None:
    return value if isinstance(value, str) and _MONTH.fullmatch(value) else None


def _date(value: object) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def _datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


_READERS: dict[str, Callable[[object], Any]] = {
    "str": _text,
    "int": _integer,
    "bool": _boolean,
    "month": _month,
    "date": _date,
}
_EXPECTED = {
    "str": "text",
    "int": "an integer",
    "bool": "true or false",
    "month": "YYYY-MM",
    "date": "YYYY-MM-DD",
    "time": "an ISO 8601 date and time",
}
