"""Filter predicates as SQL: one condition, a list condition, and the native API's
boolean tree (and / or / not) over conditions.

Like `statistics.sql`, only catalogue SQL and placeholders go into the text: every
value a client sends is a numbered parameter (`Parameters.add`).
"""

from __future__ import annotations

from typing import Any

from envoi.statistics.definitions import LOCAL
from envoi.statistics.plan import Condition, Node

_COMPARISONS = {"eq": "=", "ne": "IS DISTINCT FROM", "ge": ">=", "le": "<=", "gt": ">", "lt": "<"}


class Parameters:
    """The statement's parameter values; `add` gives the placeholder of one."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def predicate(expression: str, condition: Condition, parameters: Parameters) -> str:
    op, values = condition.op, condition.values
    if values == (None,):
        return f"({expression} IS {'NOT ' if op == 'ne' else ''}NULL)"
    if op == "in":
        listed = ", ".join(parameters.add(v) for v in values)
        return f"({expression} IN ({listed}))"
    if op == "like":
        return f"({expression} LIKE {parameters.add(values[0])})"
    return f"({expression} {_COMPARISONS[op]} {parameters.add(values[0])})"


def list_predicate(expression: str, condition: Condition, parameters: Parameters) -> str:
    """A filter on a list (tags): an element passes it; `ne`: no element is the value;
    a None value: the list is empty (eq) or not (ne)."""
    op, values = condition.op, condition.values
    listed = f"coalesce({expression}, [])"
    if values == (None,):
        return f"(len({listed}) {'>' if op == 'ne' else '='} 0)"
    if op == "eq":
        return f"list_contains({listed}, {parameters.add(values[0])})"
    if op == "ne":
        return f"NOT list_contains({listed}, {parameters.add(values[0])})"
    if op == "in":
        return f"list_has_any({listed}, [{', '.join(parameters.add(v) for v in values)}])"
    element = predicate("_element", condition, parameters)
    return f"(len(list_filter({listed}, lambda _element: {element})) > 0)"


def timed(node: Node) -> bool:
    """Whether a dimension of the tree depends on the query's time zone."""
    if isinstance(node, Condition):
        return node.dimension.timed
    return any(timed(item) for item in node.items)


def tree_sql(node: Node, parameters: Parameters, local: str) -> str:
    """The tree as one SQL boolean expression (`local`: the event's local time, for the
    time dimensions).

    SQL's three values are folded to two under `not`: an event without a value (a NULL
    comparison) fails a condition, so it passes the condition's `not`, and `not` is the
    exact complement of what it holds."""
    if isinstance(node, Condition):
        expression = node.dimension.sql.replace(LOCAL, local)
        if node.dimension.multi:
            return list_predicate(expression, node, parameters)
        return predicate(expression, node, parameters)
    parts = [tree_sql(item, parameters, local) for item in node.items]
    if node.op == "not":
        return f"(NOT coalesce({parts[0]}, false))"
    if not parts:
        return "true" if node.op == "and" else "false"
    return "(" + f" {node.op.upper()} ".join(parts) + ")"
