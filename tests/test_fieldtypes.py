"""`envoi.core.fieldtypes`: every declared type's accepted inputs and stored JSON form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from envoi.core.fieldtypes import (
    FIELD_TYPES,
    FieldTypeError,
    coerce,
    format_datetime,
    iso_utc,
    parse_datetime,
)


def test_the_seven_types() -> None:
    assert FIELD_TYPES == ("String", "Int", "Float", "Bool", "Date", "DateTime", "List of String")


@pytest.mark.parametrize("field_type", FIELD_TYPES)
def test_null_clears_any_type(field_type: str) -> None:
    assert coerce(field_type, None) is None


def test_unknown_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown field type"):
        coerce("Money", 1)


@pytest.mark.parametrize(
    ("field_type", "given", "stored"),
    [
        ("String", "text", "text"),
        ("String", "", ""),
        ("String", 123, "123"),
        ("String", 1.5, "1.5"),
        ("Int", 123, 123),
        ("Int", "123", 123),
        ("Int", " -7 ", -7),
        ("Int", 123.0, 123),
        ("Int", 2**63 - 1, 2**63 - 1),
        ("Float", 1.5, 1.5),
        ("Float", 3, 3.0),
        ("Float", "2.25", 2.25),
        ("Float", "-1e3", -1000.0),
        ("Bool", True, True),
        ("Bool", False, False),
        ("Bool", 1, True),
        ("Bool", 0, False),
        ("Bool", "true", True),
        ("Bool", "FALSE", False),
        ("Bool", "1", True),
        ("Date", "2024-02-29", "2024-02-29"),
        ("DateTime", "2024-05-01T10:20:30Z", "2024-05-01T10:20:30Z"),
        ("DateTime", "2024-05-01T10:20:30+03:00", "2024-05-01T07:20:30Z"),
        ("DateTime", "2024-05-01T23:30:00-01:00", "2024-05-02T00:30:00Z"),
        ("DateTime", "2024-05-01T10:20:30", "2024-05-01T10:20:30Z"),
        ("DateTime", "2024-05-01 10:20:30.999", "2024-05-01T10:20:30Z"),
        ("DateTime", "2024-05-01", "2024-05-01T00:00:00Z"),
        ("List of String", ["a", "b"], ["a", "b"]),
        ("List of String", [], []),
        ("List of String", ["a", 2], ["a", "2"]),
    ],
)
def test_accepted_values_and_their_stored_form(
    field_type: str, given: object, stored: object
) -> None:
    result = coerce(field_type, given)
    assert result == stored
    assert type(result) is type(stored)


@pytest.mark.parametrize(
    ("field_type", "given"),
    [
        ("String", True),
        ("String", ["a"]),
        ("String", {"a": 1}),
        ("Int", 1.5),
        ("Int", True),
        ("Int", "1.5"),
        ("Int", "12a"),
        ("Int", "1_000"),
        ("Int", ""),
        ("Int", 2**63),
        ("Int", 1e20),
        ("Int", float("nan")),
        ("Int", [1]),
        ("Float", True),
        ("Float", "abc"),
        ("Float", "nan"),
        ("Float", "inf"),
        ("Float", "1e999"),
        ("Float", float("inf")),
        ("Float", 10**400),
        ("Bool", 2),
        ("Bool", "yes"),
        ("Bool", 1.0),
        ("Bool", [True]),
        ("Date", "2024-02-30"),
        ("Date", "01.05.2024"),
        ("Date", "20240501"),
        ("Date", "2024-05-01T00:00:00"),
        ("Date", 20240501),
        ("DateTime", "yesterday"),
        ("DateTime", ""),
        ("DateTime", 1714557630),
        ("DateTime", "2024-13-01T00:00:00Z"),
        ("List of String", "a"),
        ("List of String", ["a", None]),
        ("List of String", ["a", True]),
        ("List of String", [["a"]]),
    ],
)
def test_refused_values(field_type: str, given: object) -> None:
    with pytest.raises(FieldTypeError):
        coerce(field_type, given)


def test_errors_say_what_was_expected_and_what_came() -> None:
    with pytest.raises(FieldTypeError, match=r"expected an integer, got 1\.5"):
        coerce("Int", 1.5)


def test_stored_datetimes_are_fixed_width_and_sort_as_text() -> None:
    early = coerce("DateTime", "0999-01-02T03:04:05Z")
    late = coerce("DateTime", "2024-01-02T03:04:05+00:00")
    assert early == "0999-01-02T03:04:05Z"
    assert isinstance(early, str)
    assert isinstance(late, str)
    assert len(early) == len(late) == 20
    assert early < late


def test_parse_datetime_is_aware_utc() -> None:
    parsed = parse_datetime("2024-05-01T12:00:00+02:00")
    assert parsed == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parsed.tzinfo is UTC
    assert parse_datetime("2024-05-01T12:00:00").tzinfo is UTC


def test_format_datetime_converts_to_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    assert format_datetime(datetime(2024, 5, 1, 3, 0, 0, 500, tzinfo=moscow)) == (
        "2024-05-01T00:00:00Z"
    )


def test_iso_utc_keeps_microseconds_only_when_present() -> None:
    assert iso_utc(datetime(2024, 5, 1, 10, tzinfo=UTC)) == "2024-05-01T10:00:00Z"
    assert iso_utc(datetime(2024, 5, 1, 10, 0, 0, 1500, tzinfo=UTC)) == (
        "2024-05-01T10:00:00.001500Z"
    )
