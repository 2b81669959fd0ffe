"""The segment condition language: a JSON tree parsed into typed nodes, with no I/O.

A condition is one JSON object naming exactly one kind of node:

    {"and": [<condition>, ...]}        every child matches ({"and": []} matches everyone)
    {"or": [<condition>, ...]}         at least one child matches (never empty)
    {"not": <condition>}               the child does not match
    {"field": "pole2", "op": "ge", "value": 100}
    {"subscribed": <category id>}      no opt-out row for the category, or it says subscribed
    {"received" | "opened" | "clicked": {"campaign": 12, "within_days": 30}}  (both optional)
    {"event": "login_user", "within_days": 7, "op": "ge", "value": 3}  (op/value: "ge", 1)

Comparisons are two-valued: a profile without a value of the field's type matches no
comparison but `{"op": "exists", "value": false}`, so `not` is an exact complement.
Values are coerced with the same rules as profile writes (`envoi.core.fieldtypes`), so
a value matches exactly the stored form it would have been written as.

`parse_condition` raises `Invalid` whose `loc` names the bad node, e.g.
`["body", "condition", "and", 1, "value"]`; the nodes keep their own path for
checks that need the database (does category 3 exist?) and for error messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from envoi.core.errors import Invalid
from envoi.core.fieldtypes import FIELD_TYPES, FieldTypeError, coerce, describe, parse_datetime

Path: TypeAlias = tuple[str | int, ...]
Scalar: TypeAlias = str | int | float | bool | datetime

MAX_DEPTH = 20
MAX_NODES = 500
# Each `in` value becomes one bound parameter; SQLite allows 32766 per statement.
MAX_IN_VALUES = 1000
MAX_TOTAL_IN_VALUES = 5000
MAX_WITHIN_DAYS = 36500
MAX_EVENT_NAME = 200

LIST_OF_STRING = "List of String"

# Columns of the profile itself; `email_domain` is derived from `email`.
SYSTEM_FIELDS: Mapping[str, str] = {
    "uid": "String",
    "email": "String",
    "email_domain": "String",
    "phone": "String",
    "wp_token": "String",
    "language": "String",
    "created_at": "DateTime",
    "updated_at": "DateTime",
}
# Stored lower-case (envoi.core.identity), so values are lower-cased to match.
LOWER_CASE_FIELDS = frozenset({"email", "email_domain"})

_ORDERED = ("eq", "ne", "lt", "le", "gt", "ge", "in", "between", "exists")
OPS_BY_TYPE: Mapping[str, tuple[str, ...]] = {
    "String": (*_ORDERED, "contains", "startswith"),
    "Int": _ORDERED,
    "Float": _ORDERED,
    "Date": _ORDERED,
    "DateTime": _ORDERED,
    "Bool": ("eq", "ne", "exists"),
    LIST_OF_STRING: ("contains", "exists"),
}
COUNT_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "between")
ACTIONS = ("received", "opened", "clicked")
KINDS = ("and", "or", "not", "field", "subscribed", *ACTIONS, "event")


@dataclass(frozen=True)
class FieldRef:
    """A field a comparison reads: a profile column (`system`) or a declared custom field."""

    name: str
    type: str
    system: bool


@dataclass(frozen=True)
class Compare:
    """`value` is a scalar, a tuple for `in` and `between`, or a bool for `exists`."""

    field: FieldRef
    op: str
    value: Scalar | tuple[Scalar, ...]
    path: Path = ()


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]
    path: Path = ()


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]
    path: Path = ()


@dataclass(frozen=True)
class Not:
    child: Node
    path: Path = ()


@dataclass(frozen=True)
class Subscribed:
    category_id: int
    path: Path = ()


@dataclass(frozen=True)
class Activity:
    """The profile received, opened or clicked a campaign (any campaign when None)."""

    action: str  # one of ACTIONS
    campaign_id: int | None
    within_days: int | None
    path: Path = ()


@dataclass(frozen=True)
class EventCount:
    """How many API events `name` the profile has (within N days), compared with `value`."""

    name: str
    within_days: int | None
    op: str
    value: int | tuple[int, int]
    path: Path = ()


Node: TypeAlias = And | Or | Not | Compare | Subscribed | Activity | EventCount


def parse_condition(
    raw: object, custom_fields: Mapping[str, str], root: Path = ("body", "condition")
) -> Node:
    """Validate `raw` against the project's declared fields `{name: type}`."""
    return _Parser(custom_fields, root).node(raw, (), 1)


def walk(node: Node) -> list[Node]:
    """`node` and every node below it, depth first."""
    match node:
        case And(children) | Or(children):
            return [node, *(n for child in children for n in walk(child))]
        case Not(child):
            return [node, *walk(child)]
        case _:
            return [node]


_KIND_LIST = ", ".join(KINDS)


def _fold(field: FieldRef, value: str) -> str:
    return value.lower() if field.system and field.name in LOWER_CASE_FIELDS else value


class _Parser:
    def __init__(self, custom_fields: Mapping[str, str], root: Path) -> None:
        self._custom = custom_fields
        self._root = root
        self._nodes = 0
        self._in_values = 0

    def fail(self, message: str, path: Path) -> Invalid:
        return Invalid(message, (*self._root, *path))

    def node(self, raw: object, path: Path, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.fail(f"the condition is nested deeper than {MAX_DEPTH} levels", path)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise self.fail(f"the condition has more than {MAX_NODES} nodes", path)
        if not isinstance(raw, dict):
            raise self.fail(f"a condition is a JSON object with one of: {_KIND_LIST}", path)
        kinds = [key for key in KINDS if key in raw]
        if not kinds:
            unknown = next(iter(raw), None)
            where = path if unknown is None else (*path, unknown)
            raise self.fail(f"a condition needs one of: {_KIND_LIST}", where)
        if len(kinds) > 1:
            raise self.fail(
                f"a condition has one kind, got both {kinds[0]!r} and {kinds[1]!r}", path
            )
        kind = kinds[0]
        if kind in ("and", "or"):
            return self.junction(kind, raw, path, depth)
        if kind == "not":
            self.only(raw, ("not",), path)
            return Not(self.node(raw["not"], (*path, "not"), depth + 1), path)
        if kind == "field":
            return self.compare(raw, path)
        if kind == "subscribed":
            self.only(raw, ("subscribed",), path)
            return Subscribed(self.integer(raw["subscribed"], (*path, "subscribed"), 1), path)
        if kind == "event":
            return self.event(raw, path)
        return self.activity(kind, raw, path)

    def only(self, raw: dict[str, Any], allowed: Sequence[str], path: Path) -> None:
        for key in raw:
            if key not in allowed:
                expected = ", ".join(allowed)
                raise self.fail(
                    f"unknown key {key!r}; this condition takes {expected}", (*path, key)
                )

    def junction(self, kind: str, raw: dict[str, Any], path: Path, depth: int) -> Node:
        self.only(raw, (kind,), path)
        items = raw[kind]
        here = (*path, kind)
        if not isinstance(items, list):
            raise self.fail(f"{kind!r} takes a list of conditions", here)
        children = tuple(self.node(item, (*here, i), depth + 1) for i, item in enumerate(items))
        if kind == "and":
            return And(children, path)
        if not children:
            raise self.fail(
                "'or' needs at least one condition (an empty 'or' matches nobody)", here
            )
        return Or(children, path)

    def integer(self, raw: object, path: Path, minimum: int, maximum: int = 2**31 - 1) -> int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise self.fail(f"expected an integer, got {describe(raw)}", path)
        if not minimum <= raw <= maximum:
            raise self.fail(f"expected an integer from {minimum} to {maximum}", path)
        return raw

    def within_days(self, raw: dict[str, Any], path: Path) -> int | None:
        if raw.get("within_days") is None:
            return None
        return self.integer(raw["within_days"], (*path, "within_days"), 1, MAX_WITHIN_DAYS)

    # -- field comparisons -------------------------------------------------------------

    def compare(self, raw: dict[str, Any], path: Path) -> Compare:
        self.only(raw, ("field", "op", "value"), path)
        field = self.field(raw["field"], (*path, "field"))
        allowed = OPS_BY_TYPE[field.type]
        op = raw.get("op")
        if op not in allowed:
            raise self.fail(
                f"op of {field.type} field {field.name!r} is one of {', '.join(allowed)}",
                (*path, "op"),
            )
        if "value" not in raw:
            raise self.fail(f"op {op!r} needs a value", (*path, "value"))
        return Compare(field, op, self.operand(field, op, raw["value"], (*path, "value")), path)

    def field(self, raw: object, path: Path) -> FieldRef:
        if not isinstance(raw, str):
            raise self.fail("field is the name of a system or declared field", path)
        if '"' in raw or "\\" in raw:
            # SQLite's JSON paths cannot quote them; refused here so both backends agree.
            raise self.fail(
                f"field {raw!r}: names with quotes or backslashes cannot be queried", path
            )
        # Declared names never collide with the reserved profile keys (the fields API
        # refuses them); `email_domain` is not reserved, so a declared one wins.
        if raw in self._custom:
            type_ = self._custom[raw]
            if type_ not in FIELD_TYPES:
                raise self.fail(f"field {raw!r} has the unsupported type {type_!r}", path)
            return FieldRef(raw, type_, system=False)
        if raw in SYSTEM_FIELDS:
            return FieldRef(raw, SYSTEM_FIELDS[raw], system=True)
        raise self.fail(f"unknown field {raw!r}: not a system field nor declared", path)

    def operand(
        self, field: FieldRef, op: str, raw: object, path: Path
    ) -> Scalar | tuple[Scalar, ...]:
        if op == "exists":
            if not isinstance(raw, bool):
                raise self.fail("exists takes true or false", path)
            return raw
        if op == "in":
            return self.values(field, raw, path)
        if op == "between":
            return self.bounds(field, raw, path)
        if op in ("contains", "startswith"):
            return self.text(field, op, raw, path)
        return self.scalar(field, raw, path)

    def values(self, field: FieldRef, raw: object, path: Path) -> tuple[Scalar, ...]:
        if not isinstance(raw, list) or not raw:
            raise self.fail("in takes a non-empty list of values", path)
        if len(raw) > MAX_IN_VALUES:
            raise self.fail(f"in takes at most {MAX_IN_VALUES} values", path)
        self._in_values += len(raw)
        if self._in_values > MAX_TOTAL_IN_VALUES:
            raise self.fail(f"the condition has more than {MAX_TOTAL_IN_VALUES} in values", path)
        return tuple(self.scalar(field, item, (*path, i)) for i, item in enumerate(raw))

    def bounds(self, field: FieldRef, raw: object, path: Path) -> tuple[Scalar, ...]:
        if not isinstance(raw, list) or len(raw) != 2:
            raise self.fail("between takes a list [low, high] (both included)", path)
        low, high = (self.scalar(field, item, (*path, i)) for i, item in enumerate(raw))
        if low > high:  # type: ignore[operator]  # both are of the field's one type
            raise self.fail("between takes [low, high] with low <= high", path)
        return (low, high)

    def text(self, field: FieldRef, op: str, raw: object, path: Path) -> str:
        if not isinstance(raw, str) or not raw:
            what = "an element" if field.type == LIST_OF_STRING else "a non-empty string"
            raise self.fail(f"{op} takes {what} of {field.type} field {field.name!r}", path)
        return _fold(field, raw)

    def scalar(self, field: FieldRef, raw: object, path: Path) -> Scalar:
        if raw is None:
            raise self.fail("null matches nothing; use op exists with false", path)
        if isinstance(raw, list | dict):
            raise self.fail(f"expected a single {field.type} value, got {describe(raw)}", path)
        try:
            if field.system and field.type == "DateTime":
                return parse_datetime(raw)  # compared with the column's own type
            value = coerce(field.type, raw)
        except FieldTypeError as exc:
            raise self.fail(f"{field.type} field {field.name!r}: {exc}", path) from None
        assert not isinstance(value, list | None)  # noqa: S101 - scalar types coerce to scalars
        return _fold(field, value) if isinstance(value, str) else value

    # -- activity and events -----------------------------------------------------------

    def activity(self, action: str, raw: dict[str, Any], path: Path) -> Activity:
        self.only(raw, (action,), path)
        spec = raw[action]
        here = (*path, action)
        if not isinstance(spec, dict):
            raise self.fail(f"{action!r} takes an object with optional campaign, within_days", here)
        self.only(spec, ("campaign", "within_days"), here)
        campaign = spec.get("campaign")
        campaign_id = None if campaign is None else self.integer(campaign, (*here, "campaign"), 1)
        return Activity(action, campaign_id, self.within_days(spec, here), path)

    def event(self, raw: dict[str, Any], path: Path) -> EventCount:
        self.only(raw, ("event", "within_days", "op", "value"), path)
        name = raw["event"]
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_EVENT_NAME:
            raise self.fail(
                f"event is an event name of 1 to {MAX_EVENT_NAME} characters", (*path, "event")
            )
        within = self.within_days(raw, path)
        if "op" not in raw and "value" not in raw:
            return EventCount(name, within, "ge", 1, path)  # "happened at least once"
        op = raw.get("op")
        if op not in COUNT_OPS:
            raise self.fail(f"op of an event count is one of {', '.join(COUNT_OPS)}", (*path, "op"))
        if "value" not in raw:
            raise self.fail(f"op {op!r} needs a value", (*path, "value"))
        here = (*path, "value")
        if op != "between":
            return EventCount(name, within, op, self.integer(raw["value"], here, 0), path)
        bounds = raw["value"]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise self.fail("between takes a list [low, high] (both included)", here)
        low, high = (self.integer(b, (*here, i), 0) for i, b in enumerate(bounds))
        if low > high:
            raise self.fail("between takes [low, high] with low <= high", here)
        return EventCount(name, within, op, (low, high), path)
