"""Conditions on a trigger's payload: a small JSON language, parsed and evaluated in Python.

The node shapes follow the segment language (`core.conditions`), with `payload`
where a segment names a `field`:

    {"and": [<condition>, ...]}   {"or": [<condition>, ...]}   {"not": <condition>}
    {"payload": "plan", "op": "eq", "value": "pro"}
    {"payload": "order.total", "op": "ge", "value": 100}      (a dotted path into objects)

ops: eq, ne, lt, le, gt, ge, in (a list of values), contains (a substring of a string,
or an element of a list), startswith, exists (true / false). Comparisons are
two-valued, as in segments: a path the payload does not have matches nothing but
`{"op": "exists", "value": false}`, so `not` is an exact complement. Order
comparisons need both sides numbers or both strings (a mismatch does not match);
`eq` compares JSON values (1 equals 1.0, true equals neither).

The payload is known when the event arrives and never changes, so the condition is
pure: no database, no clock.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from envoi.core.errors import Invalid

Path: TypeAlias = tuple[str | int, ...]

MAX_DEPTH = 20
MAX_NODES = 200
MAX_PATH = 200
OPS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "contains", "startswith", "exists")
_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_MISSING = object()


@dataclass(frozen=True)
class PayloadCompare:
    path: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True)
class PayloadAnd:
    children: tuple[PayloadNode, ...]


@dataclass(frozen=True)
class PayloadOr:
    children: tuple[PayloadNode, ...]


@dataclass(frozen=True)
class PayloadNot:
    child: PayloadNode


PayloadNode: TypeAlias = PayloadCompare | PayloadAnd | PayloadOr | PayloadNot


def parse_payload_condition(raw: object, root: Path) -> PayloadNode:
    """The checked tree; Invalid whose loc names the bad node under `root`."""
    return _Parser(root).node(raw, (), 1)


def matches(node: PayloadNode, payload: dict[str, Any]) -> bool:
    match node:
        case PayloadAnd(children):
            return all(matches(child, payload) for child in children)
        case PayloadOr(children):
            return any(matches(child, payload) for child in children)
        case PayloadNot(child):
            return not matches(child, payload)
        case PayloadCompare():
            return _compare(node, _lookup(payload, node.path))
    raise TypeError(f"not a payload condition: {node!r}")  # pragma: no cover


def _lookup(payload: Any, path: tuple[str, ...]) -> Any:
    value = payload
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return _MISSING if value is None else value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_kind(a: Any, b: Any) -> bool:
    return (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


def _compare(node: PayloadCompare, found: Any) -> bool:  # noqa: PLR0911 - one per op
    if node.op == "exists":
        return (found is not _MISSING) is node.value
    if found is _MISSING:
        return False
    if node.op == "eq":
        return _equal(found, node.value)
    if node.op == "ne":
        return not _equal(found, node.value)
    if node.op == "in":
        return any(_equal(found, item) for item in node.value)
    if node.op == "contains":
        if isinstance(found, str):
            return isinstance(node.value, str) and node.value in found
        return isinstance(found, list) and any(_equal(item, node.value) for item in found)
    if node.op == "startswith":
        return isinstance(found, str) and found.startswith(node.value)
    return _same_kind(found, node.value) and _ORDER[node.op](found, node.value)


class _Parser:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._nodes = 0

    def fail(self, message: str, path: Path) -> Invalid:
        return Invalid(message, (*self._root, *path))

    def node(self, raw: object, path: Path, depth: int) -> PayloadNode:
        if depth > MAX_DEPTH:
            raise self.fail(f"the condition is nested deeper than {MAX_DEPTH} levels", path)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise self.fail(f"the condition has more than {MAX_NODES} nodes", path)
        if not isinstance(raw, dict):
            raise self.fail("a payload condition is an object: and, or, not or payload", path)
        kinds = [key for key in ("and", "or", "not", "payload") if key in raw]
        if len(kinds) != 1:
            raise self.fail("a payload condition has exactly one of: and, or, not, payload", path)
        kind = kinds[0]
        if kind in ("and", "or"):
            return self.junction(kind, raw, path, depth)
        if kind == "not":
            self.only(raw, ("not",), path)
            return PayloadNot(self.node(raw["not"], (*path, "not"), depth + 1))
        return self.compare(raw, path)

    def only(self, raw: dict[str, Any], allowed: tuple[str, ...], path: Path) -> None:
        for key in raw:
            if key not in allowed:
                raise self.fail(
                    f"unknown key {key!r}; this condition takes {', '.join(allowed)}",
                    (*path, key),
                )

    def junction(self, kind: str, raw: dict[str, Any], path: Path, depth: int) -> PayloadNode:
        self.only(raw, (kind,), path)
        here = (*path, kind)
        items = raw[kind]
        if not isinstance(items, list):
            raise self.fail(f"{kind!r} takes a list of conditions", here)
        children = tuple(self.node(item, (*here, i), depth + 1) for i, item in enumerate(items))
        if kind == "and":
            return PayloadAnd(children)
        if not children:
            raise self.fail(
                "'or' needs at least one condition (an empty 'or' matches nothing)", here
            )
        return PayloadOr(children)

    def compare(self, raw: dict[str, Any], path: Path) -> PayloadCompare:
        self.only(raw, ("payload", "op", "value"), path)
        name = raw["payload"]
        if not isinstance(name, str) or not name or len(name) > MAX_PATH:
            raise self.fail(
                f"payload is a key of the payload (dotted for nested objects, at most"
                f" {MAX_PATH} characters)",
                (*path, "payload"),
            )
        keys = tuple(name.split("."))
        if any(not key for key in keys):
            raise self.fail(f"payload {name!r} has an empty key", (*path, "payload"))
        op = raw.get("op")
        if op not in OPS:
            raise self.fail(f"op is one of {', '.join(OPS)}", (*path, "op"))
        if "value" not in raw:
            raise self.fail(f"op {op!r} needs a value", (*path, "value"))
        return PayloadCompare(keys, op, self.value(op, raw["value"], (*path, "value")))

    def value(self, op: str, raw: object, path: Path) -> Any:
        if op == "exists":
            if not isinstance(raw, bool):
                raise self.fail("exists takes true or false", path)
            return raw
        if raw is None:
            raise self.fail("null matches nothing; use op exists with false", path)
        if op == "in":
            if not isinstance(raw, list) or not raw:
                raise self.fail("in takes a non-empty list of values", path)
            return tuple(raw)
        if op == "startswith" and not isinstance(raw, str):
            raise self.fail("startswith takes a string", path)
        if op in _ORDER and not (_number(raw) or isinstance(raw, str)):
            raise self.fail(f"{op} takes a number or a string", path)
        if isinstance(raw, dict):
            raise self.fail("expected a JSON value that is not an object", path)
        return raw
