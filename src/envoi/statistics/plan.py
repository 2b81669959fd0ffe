"""A statistics query checked and resolved against the catalogue: the `Plan`.

Every name becomes its catalogue entry, every filter value the Python type of its
dimension (so the statement binds a DATE to a date, an INTEGER to an int), times
the store's naive UTC. Anything wrong raises `Invalid` with `loc` naming the field:
`("group_by", 0)`, `("filters", 1, "values")`, `("timezone",)` ...

`StatsQuery.where`, the native API's boolean filter, becomes `Plan.tree`, and an error
in it has a `loc` that walks the tree: `("where", "and", 1, "values", 0)` is the first
value of the second item of the top `and`; under a `not` there is no index
(`("where", "not", "field")`). The conditions ANDed at the top of the tree join the flat
`conditions` (the same answer, and a filter on a date then bounds the scan, one on a
grouped `tag` picks the groups, as flat filters do).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from envoi.core.errors import Invalid
from envoi.statistics.catalogue import DIMENSIONS, dimension, measure
from envoi.statistics.definitions import Dimension, Measure
from envoi.statistics.timebuckets import local, utc, zone

if TYPE_CHECKING:
    from envoi.statistics.query import StatsQuery

OPS = frozenset({"eq", "ne", "in", "ge", "le", "gt", "lt", "like"})
MAX_IN = 10_000  # values of one `in` filter
MAX_TREE_DEPTH = 20  # levels of a `where` tree
MAX_TREE_NODES = 500  # branches and conditions of a `where` tree
BRANCHES = ("and", "or", "not")
_INTEGER = re.compile(r"-?\d{1,18}")
_MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_DATES = (date(1, 1, 3), date(9999, 12, 29))


@dataclass(frozen=True)
class Filter:
    """`field` (a catalogue dimension) `op` `values`: one value, or several for `in`.
    A None value with eq / ne tests for a missing value (IS NULL / IS NOT NULL)."""

    field: str
    op: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Where:
    """A boolean tree over filters: `and` / `or` of its items, or `not` of its one item
    (the native API's `filter`)."""

    op: str
    items: tuple[Filter | Where, ...]


@dataclass(frozen=True)
class Condition:
    """A filter with its dimension and its values coerced (None: a missing value)."""

    dimension: Dimension
    op: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Branch:
    """`and` / `or` / `not` (one item) over conditions and branches: the native API's
    filter tree, ANDed with the flat `conditions`."""

    op: Literal["and", "or", "not"]
    items: tuple[Node, ...]


Node = Condition | Branch


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
    tree: Node | None = None  # the native API's boolean filter (`StatsQuery.where`)
    offset: int = 0  # groups skipped, after the order (the native API's cursor)


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
    conditions = tuple(_condition(f, ("filters", i), where) for i, f in enumerate(query.filters))
    tree, conjuncts = _hoist(_tree(query.where, where))
    conditions += conjuncts
    measures = list(shown)
    order = _order(query.order_by, keys, measures)
    limit = query.limit
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise Invalid("limit must be a positive integer", ("limit",))
    offset = query.offset
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise Invalid("offset must be an integer from 0", ("offset",))
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
        tree=tree,
        offset=offset,
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


def _tree(root: Where | None, where: ZoneInfo) -> Node | None:
    """`StatsQuery.where` resolved, or None; Invalid with a `loc` into the tree."""
    if root is None:
        return None
    budget = [MAX_TREE_NODES]
    return _node(root, ("where",), where, 1, budget)


def _node(
    item: object, loc: tuple[str | int, ...], where: ZoneInfo, depth: int, budget: list[int]
) -> Node:
    budget[0] -= 1
    if budget[0] < 0:
        raise Invalid(f"a filter has at most {MAX_TREE_NODES} nodes", loc)
    if depth > MAX_TREE_DEPTH:
        raise Invalid(f"filters nest at most {MAX_TREE_DEPTH} levels deep", loc)
    if isinstance(item, Filter):
        return _condition(item, loc, where)
    if not isinstance(item, Where):
        raise Invalid("expected a filter, or an and / or / not of filters", loc)
    op = item.op
    if op not in BRANCHES:
        raise Invalid(f"unknown branch {op!r}: one of and, or, not", loc)
    if op == "not":
        if len(item.items) != 1:
            raise Invalid("not takes one filter", (*loc, "not"))
        return Branch("not", (_node(item.items[0], (*loc, "not"), where, depth + 1, budget),))
    if op == "or" and not item.items:
        raise Invalid("or takes at least one filter", (*loc, "or"))
    items = tuple(
        _node(child, (*loc, op, index), where, depth + 1, budget)
        for index, child in enumerate(item.items)
    )
    return Branch("and" if op == "and" else "or", items)


def _hoist(tree: Node | None) -> tuple[Node | None, tuple[Condition, ...]]:
    """The tree split into the conditions ANDed at its top, and what is left of it."""
    if tree is None:
        return None, ()
    conjuncts: list[Condition] = []
    rest: list[Node] = []
    pending: list[Node] = [tree]
    while pending:
        node = pending.pop(0)
        if isinstance(node, Condition):
            conjuncts.append(node)
        elif node.op == "and":
            pending[:0] = node.items
        else:
            rest.append(node)
    if not rest:
        return None, tuple(conjuncts)
    return (rest[0] if len(rest) == 1 else Branch("and", tuple(rest))), tuple(conjuncts)


def _condition(item: Filter, loc: tuple[str | int, ...], where: ZoneInfo) -> Condition:
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
    try:
        if kind == "time":  # a bucket start, compared on the zone's wall clock
            moment = _datetime(value)
            read: Any = local(moment, where) if moment is not None else None
        else:
            read = _READERS[kind](value)
    except OverflowError:  # a time at the very ends of the calendar, in this zone
        read = None
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
    read: date | None = None
    if isinstance(value, date) and not isinstance(value, datetime):
        read = value
    elif isinstance(value, str):
        try:
            read = date.fromisoformat(value.strip())
        except ValueError:
            return None
    # A day either side stays a date: `sql` bounds the scan by them.
    return read if read is not None and _DATES[0] <= read <= _DATES[1] else None


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
