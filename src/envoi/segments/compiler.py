"""Condition nodes to one SQLAlchemy boolean over `profiles`, for SQLite and PostgreSQL.

The expression is meant for `select(...).where(Profile.project_id == p, expression)`:
activity, event and subscription nodes are subqueries correlated to `profiles.id`.

Rules that keep both backends answering the same:
- a custom field is read only when its stored JSON type is the declared one (else NULL),
  so a stray value never breaks a cast; a comparison without a value is false, not
  NULL: comparisons are two-valued and `not` is an exact complement;
- strings compare byte-wise (PostgreSQL `COLLATE "C"`, SQLite's default BINARY);
- `contains` / `startswith` use instr/strpos and substr rather than LIKE: no wildcard
  to escape, and case-sensitive on both (SQLite's LIKE ignores ASCII case);
- every value is a bound parameter; times ("within 30 days") are computed in Python.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Numeric,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB

from envoi.core.conditions import (
    LIST_OF_STRING,
    Activity,
    And,
    Compare,
    EventCount,
    FieldRef,
    Node,
    Not,
    Or,
    Scalar,
    Subscribed,
)
from envoi.events.models import ApiEvent
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Profile, Subscription

DIALECTS = ("sqlite", "postgresql")
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
# What the outbox calls each activity.
OUTBOX_KINDS = {"received": "delivered", "opened": "open", "clicked": "click"}
_TEXT_TYPES = ("String", "Date", "DateTime")
# json_type() on SQLite, jsonb_typeof() on PostgreSQL, of a well-typed stored value.
_SQLITE_JSON_TYPES = {
    "String": ("text",),
    "Date": ("text",),
    "DateTime": ("text",),
    "Int": ("integer", "real"),
    "Float": ("integer", "real"),
    "Bool": ("true", "false"),
    LIST_OF_STRING: ("array",),
}
_PG_JSON_TYPES = {
    "String": "string",
    "Date": "string",
    "DateTime": "string",
    "Int": "number",
    "Float": "number",
    "Bool": "boolean",
    LIST_OF_STRING: "array",
}
_SYSTEM_COLUMNS: dict[str, ColumnElement[Any]] = {
    "uid": Profile.uid.expression,
    "email": Profile.email.expression,
    "phone": Profile.phone.expression,
    "wp_token": Profile.wp_token.expression,
    "language": Profile.language.expression,
    "created_at": Profile.created_at.expression,
    "updated_at": Profile.updated_at.expression,
}


def compile_condition(
    node: Node, *, project_id: int, dialect: str, now: datetime
) -> ColumnElement[bool]:
    """The SQL boolean of `node`; `now` anchors every `within_days`."""
    if dialect not in DIALECTS:
        raise ValueError(f"segments run on {' and '.join(DIALECTS)}, not {dialect}")
    return _Compiler(project_id, dialect, now).node(node)


class _Compiler:
    def __init__(self, project_id: int, dialect: str, now: datetime) -> None:
        self.project_id = project_id
        self.pg = dialect == "postgresql"
        self.now = now

    def node(self, node: Node) -> ColumnElement[bool]:  # noqa: PLR0911 - one per node kind
        match node:
            case And(children):
                return and_(true(), *(self.node(c) for c in children))
            case Or(children):
                return or_(false(), *(self.node(c) for c in children))
            case Not(child):
                return not_(self.node(child))
            case Compare():
                return self.compare(node)
            case Subscribed(category_id):
                opted_out = select(Subscription.profile_id).where(
                    Subscription.profile_id == Profile.id,
                    Subscription.category_id == category_id,
                    Subscription.subscribed.is_(False),
                )
                return not_(opted_out.exists())
            case Activity():
                return self.activity(node)
            case EventCount():
                return self.event(node)
        raise TypeError(f"not a condition node: {node!r}")  # pragma: no cover

    # -- fields ------------------------------------------------------------------------

    def compare(self, node: Compare) -> ColumnElement[bool]:
        field, op, value = node.field, node.op, node.value
        if field.type == LIST_OF_STRING:
            return self.list_compare(node)
        column = self.value_of(field)
        if op == "exists":
            return column.is_not(None) if value else column.is_(None)
        # Unknown (no value) is false, so `not` complements exactly.
        return func.coalesce(self.test(column, op, value), false())

    def test(
        self, column: ColumnElement[Any], op: str, value: Scalar | tuple[Scalar, ...]
    ) -> ColumnElement[bool]:
        if isinstance(value, tuple):
            if op == "in":
                return column.in_(value)
            # Not BETWEEN: SQLAlchemy would render `BETWEEN $1 COLLATE "C" AND ...`,
            # which PostgreSQL cannot parse.
            return and_(column >= value[0], column <= value[1])
        if op == "contains":
            position = func.strpos if self.pg else func.instr
            return position(column, value) > 0
        if op == "startswith":
            assert isinstance(value, str)  # noqa: S101 - the parser only allows strings
            return func.substr(column, 1, len(value)) == value
        result: ColumnElement[bool] = _OPERATORS[op](column, value)
        return result

    def value_of(self, field: FieldRef) -> ColumnElement[Any]:
        """The field's value, NULL when absent or of another JSON type than declared."""
        if field.system and field.name == "email_domain":
            column = self.email_domain()
        elif field.system:
            column = _SYSTEM_COLUMNS[field.name]
        else:
            column = self.pg_value(field) if self.pg else self.sqlite_value(field)
        is_text = field.type == "String" or (not field.system and field.type in _TEXT_TYPES)
        if self.pg and is_text:
            column = column.collate("C")  # byte order, as SQLite compares text
        return column

    def email_domain(self) -> ColumnElement[Any]:
        # Stored addresses are validated: exactly one "@", lower-cased.
        if self.pg:
            return func.split_part(Profile.email, "@", 2)
        return func.substr(Profile.email, func.instr(Profile.email, "@") + 1)

    def sqlite_value(self, field: FieldRef) -> ColumnElement[Any]:
        # Untyped on purpose: parameters bind as the Python int / float / str they are,
        # so 64-bit integers compare exactly (a Numeric type would bind them as floats).
        path = sqlite_path(field.name)
        is_typed = func.json_type(Profile.fields, path).in_(_SQLITE_JSON_TYPES[field.type])
        return case((is_typed, func.json_extract(Profile.fields, path)), else_=None)

    def pg_value(self, field: FieldRef) -> ColumnElement[Any]:
        item = Profile.fields[field.name]
        is_typed = func.jsonb_typeof(item) == _PG_JSON_TYPES[field.type]
        text = Profile.fields[field.name].as_string()
        if field.type in ("Int", "Float"):
            # NUMERIC, not INTEGER: stored integers are 64-bit and INTEGER is 32.
            return case((is_typed, cast(text, Numeric())), else_=None)
        if field.type == "Bool":
            return case((is_typed, cast(text, Boolean())), else_=None)
        assert field.type in _TEXT_TYPES  # noqa: S101 - lists take list_compare
        return case((is_typed, text), else_=None)

    def list_compare(self, node: Compare) -> ColumnElement[bool]:
        name = node.field.name
        if self.pg:
            json_type = func.jsonb_typeof(Profile.fields[name])
        else:
            json_type = func.json_type(Profile.fields, sqlite_path(name))
        # coalesce: a missing key has no type, and NULL would make `not` three-valued.
        is_list = func.coalesce(json_type, "null") == "array"
        if node.op == "exists":
            return is_list if node.value else not_(is_list)
        if self.pg:
            # JSONB containment: {"name": ["x"]} is in fields when x is an element.
            return type_coerce(Profile.fields, JSONB).contains({name: [node.value]})
        elements = func.json_each(Profile.fields, sqlite_path(name)).table_valued("value", "type")
        has_element = (
            select(literal(1))
            .select_from(elements)
            .where(elements.c.type == "text", elements.c.value == node.value)
            .exists()
        )
        return and_(is_list, has_element)

    # -- activity and events -----------------------------------------------------------

    def since(self, within_days: int | None) -> datetime | None:
        return None if within_days is None else self.now - timedelta(days=within_days)

    def activity(self, node: Activity) -> ColumnElement[bool]:
        # No project_id test: the correlated profile already is the project's, and
        # with one SQLite would pick ix_outbox_project_id over ix_outbox_profile_kind
        # and scan the project's whole outbox once per profile.
        query = select(OutboxEvent.id).where(
            OutboxEvent.profile_id == Profile.id,
            OutboxEvent.kind == OUTBOX_KINDS[node.action],
        )
        if node.campaign_id is not None:
            query = query.where(OutboxEvent.campaign_id == node.campaign_id)
        since = self.since(node.within_days)
        if since is not None:
            query = query.where(OutboxEvent.occurred_at >= since)
        return query.exists()

    def event(self, node: EventCount) -> ColumnElement[bool]:
        criteria = [
            ApiEvent.profile_id == Profile.id,
            ApiEvent.project_id == self.project_id,
            ApiEvent.name == node.name,
        ]
        since = self.since(node.within_days)
        if since is not None:
            criteria.append(ApiEvent.created_at >= since)
        # "At least once" and "never" are EXISTS probes, which stop at the first row.
        if (node.op, node.value) in (("ge", 1), ("gt", 0)):
            return select(ApiEvent.id).where(*criteria).exists()
        if (node.op, node.value) in (("lt", 1), ("le", 0), ("eq", 0)):
            return not_(select(ApiEvent.id).where(*criteria).exists())
        count = select(func.count(ApiEvent.id)).where(*criteria).scalar_subquery()
        return self.test(count, node.op, node.value)


def sqlite_path(name: str) -> str:
    """`$."name"`; SQLite's JSON path has no escape for `"` (the parser refuses such names)."""
    if '"' in name or "\\" in name:
        raise ValueError(f"field name {name!r} cannot be a SQLite JSON path")
    return f'$."{name}"'
