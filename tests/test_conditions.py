"""The condition language, parsed and validated without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from envoi.core.conditions import (
    MAX_DEPTH,
    MAX_IN_VALUES,
    MAX_NODES,
    Activity,
    And,
    Compare,
    EventCount,
    FieldRef,
    Not,
    Or,
    Subscribed,
    parse_condition,
    walk,
)
from envoi.core.errors import Invalid

FIELDS = {
    "city": "String",
    "pole2": "Int",
    "score": "Float",
    "vip": "Bool",
    "birthday": "Date",
    "last_seen": "DateTime",
    "interests": "List of String",
}
ROOT = ["body", "condition"]


def parse(raw: object) -> Any:
    return parse_condition(raw, FIELDS)


def error(raw: object) -> tuple[list[str | int], str]:
    with pytest.raises(Invalid) as caught:
        parse(raw)
    return caught.value.loc, caught.value.message


def compare(field: str, op: str, value: object) -> Any:
    node = parse({"field": field, "op": op, "value": value})
    assert isinstance(node, Compare)
    return node.value


# -- what parses ---------------------------------------------------------------------


def test_a_comparison_becomes_a_typed_node() -> None:
    node = parse({"field": "pole2", "op": "ge", "value": 100})
    assert node == Compare(FieldRef("pole2", "Int", system=False), "ge", 100)
    assert node.path == ()


def test_junctions_keep_their_children_and_paths() -> None:
    node = parse(
        {
            "and": [
                {"field": "city", "op": "eq", "value": "Paris"},
                {"or": [{"not": {"subscribed": 3}}, {"opened": {}}]},
            ]
        }
    )
    assert isinstance(node, And)
    first, second = node.children
    assert first.path == ("and", 0)
    assert isinstance(second, Or)
    negated, opened = second.children
    assert isinstance(negated, Not)
    assert negated.child == Subscribed(3, path=("and", 1, "or", 0, "not"))
    assert opened == Activity("opened", None, None, path=("and", 1, "or", 1))
    assert len(walk(node)) == 6


def test_an_empty_and_matches_everyone() -> None:
    assert parse({"and": []}) == And(())


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("city", "eq", "Paris", "Paris"),
        ("city", "ne", "Paris", "Paris"),
        ("city", "lt", "M", "M"),
        ("city", "le", "M", "M"),
        ("city", "gt", "M", "M"),
        ("city", "ge", "M", "M"),
        ("city", "in", ["Paris", "Lyon"], ("Paris", "Lyon")),
        ("city", "between", ["A", "M"], ("A", "M")),
        ("city", "contains", "ar", "ar"),
        ("city", "startswith", "Pa", "Pa"),
        ("city", "exists", True, True),
        ("city", "eq", 75, "75"),  # coerced as a profile write would be
        ("pole2", "eq", 100, 100),
        ("pole2", "eq", "100", 100),
        ("pole2", "between", [1, 9_000_000_000], (1, 9_000_000_000)),
        ("pole2", "exists", False, False),
        ("score", "lt", 1, 1.0),
        ("score", "in", [0.5, 2], (0.5, 2.0)),
        ("vip", "eq", True, True),
        ("vip", "ne", "false", False),
        ("birthday", "lt", "2000-01-01", "2000-01-01"),
        ("last_seen", "ge", "2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00Z"),
        ("last_seen", "ge", "2024-05-01T10:00:00", "2024-05-01T10:00:00Z"),
        ("interests", "contains", "golf", "golf"),
        ("interests", "exists", True, True),
        ("email", "eq", "Ann@Example.COM", "ann@example.com"),
        ("email_domain", "in", ["Example.com"], ("example.com",)),
        ("uid", "startswith", "u-", "u-"),
        ("phone", "exists", True, True),
        ("wp_token", "eq", "t", "t"),
        ("language", "in", ["en", "de"], ("en", "de")),
    ],
)
def test_every_op_of_every_type(field: str, op: str, value: object, expected: object) -> None:
    assert compare(field, op, value) == expected


def test_system_times_are_datetimes() -> None:
    assert compare("created_at", "ge", "2024-05-01T00:00:00Z") == datetime(2024, 5, 1, tzinfo=UTC)
    low, high = compare("updated_at", "between", ["2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"])
    assert (low.month, high.month) == (1, 2)


def test_a_declared_email_domain_field_wins_over_the_derived_one() -> None:
    node = parse_condition(
        {"field": "email_domain", "op": "eq", "value": "X"}, {"email_domain": "String"}
    )
    assert isinstance(node, Compare)
    assert node.field == FieldRef("email_domain", "String", system=False)
    assert node.value == "X"  # not lower-cased: it is the project's own field


def test_activity_and_events() -> None:
    assert parse({"clicked": {"campaign": 12, "within_days": 30}}) == Activity("clicked", 12, 30)
    assert parse({"received": {"campaign": None}}) == Activity("received", None, None)
    assert parse({"event": "login_user"}) == EventCount("login_user", None, "ge", 1)
    assert parse({"event": "login_user", "within_days": 7, "op": "ge", "value": 3}) == EventCount(
        "login_user", 7, "ge", 3
    )
    assert parse({"event": "buy", "op": "between", "value": [2, 5]}) == EventCount(
        "buy", None, "between", (2, 5)
    )
    assert parse({"event": "buy", "op": "eq", "value": 0}) == EventCount("buy", None, "eq", 0)


# -- what does not, and where the error points ----------------------------------------


@pytest.mark.parametrize(
    ("raw", "loc", "message"),
    [
        ([], [], "a condition is a JSON object"),
        ({}, [], "a condition needs one of"),
        ({"feild": "x"}, ["feild"], "a condition needs one of"),
        ({"and": [], "or": []}, [], "got both 'and' and 'or'"),
        ({"and": {}}, ["and"], "'and' takes a list"),
        ({"or": []}, ["or"], "at least one condition"),
        ({"and": [{"or": [5]}]}, ["and", 0, "or", 0], "a condition is a JSON object"),
        ({"not": {"field": "city"}, "x": 1}, ["x"], "unknown key 'x'"),
        ({"not": []}, ["not"], "a condition is a JSON object"),
        ({"field": "pole9", "op": "eq", "value": 1}, ["field"], "unknown field 'pole9'"),
        ({"field": 5, "op": "eq", "value": 1}, ["field"], "field is the name"),
        ({"field": 'a"b', "op": "eq", "value": 1}, ["field"], "quotes"),
        ({"field": "city", "op": "like", "value": "x"}, ["op"], "op of String field"),
        ({"field": "city", "value": "x"}, ["op"], "op of String field"),
        ({"field": "city", "op": "eq"}, ["value"], "needs a value"),
        ({"field": "city", "op": "eq", "value": "x", "extra": 1}, ["extra"], "unknown key"),
        ({"field": "city", "op": "eq", "value": None}, ["value"], "use op exists"),
        ({"field": "city", "op": "eq", "value": ["x"]}, ["value"], "single String value"),
        ({"field": "city", "op": "contains", "value": ""}, ["value"], "non-empty string"),
        ({"field": "city", "op": "startswith", "value": 5}, ["value"], "non-empty string"),
        ({"field": "pole2", "op": "eq", "value": "abc"}, ["value"], "Int field 'pole2'"),
        ({"field": "pole2", "op": "eq", "value": 1.5}, ["value"], "expected an integer"),
        ({"field": "pole2", "op": "eq", "value": 2**64}, ["value"], "64-bit"),
        ({"field": "pole2", "op": "contains", "value": "1"}, ["op"], "op of Int field"),
        ({"field": "pole2", "op": "in", "value": []}, ["value"], "non-empty list"),
        ({"field": "pole2", "op": "in", "value": 5}, ["value"], "non-empty list"),
        ({"field": "pole2", "op": "in", "value": [1, "x"]}, ["value", 1], "expected an integer"),
        ({"field": "pole2", "op": "between", "value": [1]}, ["value"], "[low, high]"),
        ({"field": "pole2", "op": "between", "value": [5, 1]}, ["value"], "low <= high"),
        ({"field": "pole2", "op": "exists", "value": "yes"}, ["value"], "true or false"),
        ({"field": "score", "op": "gt", "value": "high"}, ["value"], "expected a number"),
        ({"field": "vip", "op": "lt", "value": True}, ["op"], "op of Bool field"),
        ({"field": "vip", "op": "eq", "value": "maybe"}, ["value"], "true or false"),
        ({"field": "birthday", "op": "eq", "value": "01/02/2000"}, ["value"], "YYYY-MM-DD"),
        ({"field": "birthday", "op": "eq", "value": "2000-02-30"}, ["value"], "YYYY-MM-DD"),
        ({"field": "last_seen", "op": "lt", "value": "yesterday"}, ["value"], "ISO 8601"),
        ({"field": "created_at", "op": "lt", "value": 5}, ["value"], "ISO 8601"),
        ({"field": "interests", "op": "eq", "value": "golf"}, ["op"], "op of List of String"),
        ({"field": "interests", "op": "contains", "value": ["golf"]}, ["value"], "an element"),
        ({"subscribed": "3"}, ["subscribed"], "expected an integer"),
        ({"subscribed": 0}, ["subscribed"], "from 1"),
        ({"subscribed": True}, ["subscribed"], "expected an integer"),
        ({"opened": 12}, ["opened"], "takes an object"),
        ({"opened": {"campaign": "12"}}, ["opened", "campaign"], "expected an integer"),
        ({"opened": {"within_days": 0}}, ["opened", "within_days"], "from 1"),
        ({"clicked": {"days": 3}}, ["clicked", "days"], "unknown key 'days'"),
        ({"received": {}, "campaign": 3}, ["campaign"], "unknown key"),
        ({"event": ""}, ["event"], "event name"),
        ({"event": "x" * 201}, ["event"], "event name"),
        ({"event": "e", "op": "contains", "value": 1}, ["op"], "op of an event count"),
        ({"event": "e", "op": "ge"}, ["value"], "needs a value"),
        ({"event": "e", "value": 3}, ["op"], "op of an event count"),
        ({"event": "e", "op": "ge", "value": -1}, ["value"], "from 0"),
        ({"event": "e", "op": "between", "value": [3, 1]}, ["value"], "low <= high"),
        ({"event": "e", "op": "between", "value": [1, "x"]}, ["value", 1], "integer"),
        ({"event": "e", "within_days": 100000}, ["within_days"], "to 36500"),
        ({"event": "e", "name": "x"}, ["name"], "unknown key"),
    ],
)
def test_errors_name_the_bad_node(raw: object, loc: list[str | int], message: str) -> None:
    got_loc, got_message = error(raw)
    assert got_loc == ROOT + loc
    assert message in got_message


def test_errors_deep_in_the_tree_have_the_full_path() -> None:
    raw = {
        "and": [
            {"field": "city", "op": "eq", "value": "Paris"},
            {"or": [{"opened": {}}, {"not": {"field": "pole2", "op": "ge", "value": "x"}}]},
        ]
    }
    loc, _ = error(raw)
    assert loc == [*ROOT, "and", 1, "or", 1, "not", "value"]


def test_the_root_of_locations_can_be_chosen() -> None:
    with pytest.raises(Invalid) as caught:
        parse_condition({"or": []}, FIELDS, root=("condition",))
    assert caught.value.loc == ["condition", "or"]


def test_an_unsupported_declared_type_is_an_error() -> None:
    with pytest.raises(Invalid, match="unsupported type 'Blob'"):
        parse_condition({"field": "x", "op": "exists", "value": True}, {"x": "Blob"})


def test_depth_is_capped() -> None:
    raw: dict[str, Any] = {"field": "city", "op": "exists", "value": True}
    for _ in range(MAX_DEPTH - 1):
        raw = {"not": raw}
    parse(raw)  # exactly MAX_DEPTH levels
    loc, message = error({"not": raw})
    assert "deeper than 20" in message
    assert loc == ROOT + ["not"] * MAX_DEPTH


def test_size_is_capped() -> None:
    leaf = {"field": "city", "op": "exists", "value": True}
    parse({"or": [leaf] * (MAX_NODES - 1)})
    loc, message = error({"or": [leaf] * MAX_NODES})
    assert f"more than {MAX_NODES} nodes" in message
    assert loc == [*ROOT, "or", MAX_NODES - 1]


def test_in_lists_are_capped() -> None:
    parse({"field": "pole2", "op": "in", "value": list(range(MAX_IN_VALUES))})
    loc, message = error({"field": "pole2", "op": "in", "value": list(range(MAX_IN_VALUES + 1))})
    assert loc == [*ROOT, "value"]
    assert f"at most {MAX_IN_VALUES}" in message
    many = {"field": "pole2", "op": "in", "value": list(range(MAX_IN_VALUES))}
    loc, message = error({"or": [many] * 6})
    assert loc == [*ROOT, "or", 5, "value"]
    assert "more than 5000 in values" in message
