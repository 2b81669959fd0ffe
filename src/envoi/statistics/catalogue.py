"""The catalogue: every dimension and measure by name, and how to describe them.

A statistics query names only what is here; a surface maps its seed's names onto
these (seed 002's are here as they are). `describe()` is the catalogue as data, for
the native API's `GET /api/v1/metrics/catalogue` and docs/statistics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envoi.core.errors import Invalid
from envoi.statistics.definitions import Count, Dimension, Measure, Moment, Rate, Sum
from envoi.statistics.dimensions import DIMENSIONS as _DIMENSIONS
from envoi.statistics.measures import MEASURES as _MEASURES

DIMENSIONS: dict[str, Dimension] = {dimension.name: dimension for dimension in _DIMENSIONS}
MEASURES: dict[str, Measure] = {measure.name: measure for measure in _MEASURES}


def dimension(name: object, loc: Sequence[str | int]) -> Dimension:
    """The dimension `name`, or Invalid at `loc`."""
    found = DIMENSIONS.get(name) if isinstance(name, str) else None
    if found is None:
        raise Invalid(f"unknown dimension {name!r}", loc)
    return found


def measure(name: object, loc: Sequence[str | int]) -> Measure:
    """The measure `name`, or Invalid at `loc`."""
    found = MEASURES.get(name) if isinstance(name, str) else None
    if found is None:
        raise Invalid(f"unknown measure {name!r}", loc)
    return found


def definition(item: Measure) -> str:
    """How `item` is computed, in words a reader of the catalogue needs."""
    if isinstance(item, Rate):
        return f"{item.numerator} / {item.denominator} (0 when {item.denominator} is 0)"
    if isinstance(item, Sum):
        return f"sum({item.column}) of the events where {item.where}"
    if isinstance(item, Moment):
        return f"{item.extreme}(occurred_at) of the events where {item.where}"
    return f"count of the events where {item.where}"


def kind_of(item: Measure) -> str:
    if isinstance(item, Rate):
        return "rate"
    if isinstance(item, Moment):
        return "time"
    return "sum" if isinstance(item, Sum) else "count"


def describe() -> dict[str, list[dict[str, Any]]]:
    """The catalogue as JSON-ready data: dimensions, then measures."""
    dimensions = [
        {"name": d.name, "doc": d.doc, "type": d.type, "timed": d.timed, "seeds": list(d.seeds)}
        for d in DIMENSIONS.values()
    ]
    measures = []
    for m in MEASURES.values():
        entry: dict[str, Any] = {
            "name": m.name,
            "kind": kind_of(m),
            "doc": m.doc,
            "definition": definition(m),
            "same_as": m.same_as,
            "seeds": list(m.seeds),
        }
        if isinstance(m, Rate):
            entry |= {"numerator": m.numerator, "denominator": m.denominator}
        variants = _variants(m)
        if variants:
            entry["variants"] = variants
        measures.append(entry)
    return {"dimensions": dimensions, "measures": measures}


def _variants(item: Measure) -> dict[str, str] | None:
    """The people / machines / everyone family of an activity count (`opened`,
    `opened_machine`, `opened_all`; `unique_opened`, `unique_opened_all`), each
    naming the others; None for a measure of no such family."""
    if item.same_as is not None:
        return None
    base = item.name.removesuffix("_machine").removesuffix("_all")
    family = {"human": base, "machine": f"{base}_machine", "all": f"{base}_all"}
    present = {who: name for who, name in family.items() if name in MEASURES}
    return present if len(present) > 1 and item.name in present.values() else None


def _check() -> None:
    """The catalogue holds together: unique names, rates over counts that exist."""
    if len(DIMENSIONS) != len(_DIMENSIONS) or len(MEASURES) != len(_MEASURES):
        raise RuntimeError("a statistics name is defined twice")
    for item in MEASURES.values():
        if isinstance(item, Rate):
            for part in (item.numerator, item.denominator):
                if not isinstance(MEASURES.get(part), Count):
                    raise RuntimeError(f"rate {item.name}: {part} is no count")


_check()
