"""Request bodies of the native metrics API (`/api/v1/metrics`, docs/api-metrics.md).

Only the shape is checked here: types, sizes, unknown keys (FastAPI's 422 with a `loc`
into the body), and the shape of the `filter` tree (`parse_filter`, `Invalid` with a
`loc` into the body). Names and values are checked against the catalogue by the
query plan, whose `loc`s `statistics.metrics` leads into the body too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, StrictStr

from envoi.core.errors import Invalid
from envoi.statistics.plan import MAX_IN, MAX_TREE_DEPTH, OPS, Filter, Where
from envoi.web.schemas import StrictModel

MAX_DIMENSIONS = 5
MAX_METRICS = 50
MAX_ORDER = 10
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
MAX_CURSOR = 2_000  # characters: a cursor is a few hundred

# `timebuckets.PRECISIONS` (`minute` is `1min`), and `none`: no time grouping.
Precision = Literal[
    "1min", "minute", "5min", "15min", "hour", "day", "week", "month", "quarter", "year", "none"
]
Limit = Annotated[StrictInt, Field(ge=1, le=MAX_LIMIT)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=100)]


class Selection(StrictModel):
    """What both queries share: the events (range, zone, filter) and the page."""

    start: datetime | None = None  # default: `end` - 7 days
    end: datetime | None = None  # default: now
    timezone: Annotated[StrictStr, Field(max_length=100)] = "UTC"
    filter: dict[str, Any] | None = None  # the boolean tree, checked by `metrics`
    limit: Limit = DEFAULT_LIMIT
    cursor: Annotated[StrictStr, Field(max_length=MAX_CURSOR)] | None = None


class MetricsQuery(Selection):
    """`POST /api/v1/metrics` (and `/metrics/export`)."""

    precision: Precision = "none"
    dimensions: Annotated[list[Name], Field(max_length=MAX_DIMENSIONS)] = []
    metrics: Annotated[list[Name], Field(min_length=1, max_length=MAX_METRICS)]
    order_by: Annotated[list[Name], Field(max_length=MAX_ORDER)] = []
    totals: StrictBool = False
    zero_fill: StrictBool = True


class RecipientsQuery(Selection):
    """`POST /api/v1/metrics/recipients`: the people behind the count `metric`."""

    metric: Name


# -- the filter tree -----------------------------------------------------------------------

_LEAF_KEYS = frozenset({"field", "op", "value"})


def parse_filter(value: dict[str, Any] | None) -> Filter | Where | None:
    """The body's `filter`: `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}`, or a
    condition `{"field": "domain", "op": "eq", "value": "example.com"}` (`in`: a list
    of values). The shape is checked here, names and values by the plan."""
    return None if value is None else _parse(value, ("body", "filter"), 1)


def as_where(node: Filter | Where | None) -> Where | None:
    """The query's `where`: a lone condition is an `and` of one."""
    return Where("and", (node,)) if isinstance(node, Filter) else node


def _parse(value: object, loc: tuple[str | int, ...], depth: int) -> Filter | Where:
    if depth > MAX_TREE_DEPTH:
        raise Invalid(f"filters nest at most {MAX_TREE_DEPTH} levels deep", loc)
    if not isinstance(value, dict):
        raise Invalid("expected an object: and, or, not, or a condition", loc)
    branches = [key for key in ("and", "or", "not") if key in value]
    if branches:
        op = branches[0]
        if len(value) != 1:
            extra = next(key for key in value if key != op)
            raise Invalid(f"{op} stands alone in its object", (*loc, extra))
        items = value[op]
        if op == "not":
            return Where("not", (_parse(items, (*loc, "not"), depth + 1),))
        if not isinstance(items, list):
            raise Invalid(f"{op} takes a list of filters", (*loc, op))
        return Where(op, tuple(_parse(v, (*loc, op, i), depth + 1) for i, v in enumerate(items)))
    return _leaf(value, loc)


def _leaf(value: dict[str, Any], loc: tuple[str | int, ...]) -> Filter:
    for key in value:
        if key not in _LEAF_KEYS:
            raise Invalid(f"unknown key {key!r}: a condition has field, op and value", (*loc, key))
    for key in ("field", "op", "value"):
        if key not in value:
            raise Invalid(f"{key} is required", (*loc, key))
    op = value["op"]
    if not isinstance(op, str) or op not in OPS:
        raise Invalid(f"unknown operator {op!r}: one of {', '.join(sorted(OPS))}", (*loc, "op"))
    if op != "in":
        return Filter(value["field"], op, (value["value"],))
    values = value["value"]
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_IN:
        raise Invalid(f"in takes a list of 1 to {MAX_IN} values", (*loc, "value"))
    return Filter(value["field"], op, tuple(values))


def filter_loc(node: Filter | Where | None, rest: Sequence[str | int]) -> tuple[str | int, ...]:
    """A plan's `loc` inside its `where` (after `"where"`) as the body's, after
    `"filter"`: a condition's `values` is the body's `value` (indexed for `in` only)."""
    if isinstance(node, Filter):
        rest = rest[2:]  # the `and` of one that `as_where` made
    out: list[str | int] = []
    index = 0
    while index < len(rest):
        part = rest[index]
        following = rest[index + 1] if index + 1 < len(rest) else None
        if isinstance(node, Where) and part in ("and", "or") and isinstance(following, int):
            node, index = node.items[following], index + 2
            out += [part, following]
        elif isinstance(node, Where) and part == "not":
            node, index = node.items[0], index + 1
            out.append(part)
        elif isinstance(node, Filter) and part == "values":
            if node.op == "in" and following is not None:
                return (*out, "value", following)
            return (*out, "value")
        else:
            out.append(part)
            index += 1
    return tuple(out)
