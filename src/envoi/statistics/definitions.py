"""What a dimension and a measure are (pure declarations, no I/O).

A `Dimension` is a value every event has (a column, a part of its local time, an
element of its tags) that a query groups or filters by. A `Measure` is an aggregate
over the events of a group: a `Count` of the events a condition selects, a `Sum` of
a column, a `Moment` (the first or last time), or a `Rate`, one count divided by
another from the group's summed counts. Their SQL is written here, once, from the
event table's columns (`eventstore.schema`): a query only ever puts catalogue text
into a statement, never a name or a value it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

# What a dimension's values are: how filter values are read and results returned.
#   str, int, bool: as stored; date: a datetime.date; month: "YYYY-MM";
#   time: the start of a time bucket, an aware datetime in the query's time zone.
ValueType = Literal["str", "int", "bool", "date", "month", "time"]

# In a dimension's SQL, the event's local wall-clock time in the query's time zone.
LOCAL = "{local}"


@dataclass(frozen=True)
class Dimension:
    """`sql` is an expression over one event's columns (LOCAL for its local time);
    `multi`: the expression is a list, and an event belongs to one group per element
    (tags)."""

    name: str
    doc: str
    sql: str
    type: ValueType = "str"
    multi: bool = False
    seeds: tuple[str, ...] = ()

    @property
    def timed(self) -> bool:
        """Whether the value depends on the query's time zone."""
        return LOCAL in self.sql


@dataclass(frozen=True)
class Count:
    """The number of events `where` selects."""

    name: str
    doc: str
    where: str
    seeds: tuple[str, ...] = ()
    same_as: str | None = None

    def sql(self, _measures: Mapping[str, Measure]) -> str:
        return f"count(*) FILTER (WHERE {self.where})"


@dataclass(frozen=True)
class Sum:
    """The sum of `column` over the events `where` selects (0 for none)."""

    name: str
    doc: str
    column: str
    where: str
    seeds: tuple[str, ...] = ()
    same_as: str | None = None

    def sql(self, _measures: Mapping[str, Measure]) -> str:
        return f"coalesce(sum({self.column}) FILTER (WHERE {self.where}), 0)"


@dataclass(frozen=True)
class Moment:
    """The first (`min`) or last (`max`) time of the events `where` selects; None
    for none. An event's time is UTC in the store; results are in the query's zone."""

    name: str
    doc: str
    extreme: Literal["min", "max"]
    where: str
    seeds: tuple[str, ...] = ()
    same_as: str | None = None

    def sql(self, _measures: Mapping[str, Measure]) -> str:
        return f"{self.extreme}(occurred_at) FILTER (WHERE {self.where})"


@dataclass(frozen=True)
class Rate:
    """`numerator / denominator`, both catalogue counts summed over the group (never
    an average of rates), 0.0 when the denominator is 0."""

    name: str
    doc: str
    numerator: str
    denominator: str
    seeds: tuple[str, ...] = ()
    same_as: str | None = None

    def sql(self, measures: Mapping[str, Measure]) -> str:
        numerator = measures[self.numerator].sql(measures)
        denominator = measures[self.denominator].sql(measures)
        # DOUBLE division, as Python divides two ints: the same float to the last digit.
        return (
            f"CASE WHEN ({denominator}) = 0 THEN CAST(0 AS DOUBLE) "
            f"ELSE CAST({numerator} AS DOUBLE) / CAST({denominator} AS DOUBLE) END"
        )


Measure = Count | Sum | Moment | Rate


def alias(name: str, of: Measure, seeds: tuple[str, ...]) -> Measure:
    """`of` under a seed's name: the same definition, `same_as` naming the original."""
    return replace(of, name=name, seeds=seeds, same_as=of.name)
