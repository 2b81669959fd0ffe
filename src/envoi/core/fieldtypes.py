"""Declared profile field types and how a client's JSON value is coerced to each.

The stored JSON form of every type is a contract with the segment engine, which
compares stored values in SQL:

| type | stored as | accepted on write |
|---|---|---|
| `String` | string | string; a number becomes its text |
| `Int` | integer (64-bit) | integer, integral float (`123.0`), decimal string (`"123"`) |
| `Float` | float | number, numeric string |
| `Bool` | `true` / `false` | boolean, `0` / `1`, `"true"` / `"false"` / `"0"` / `"1"` |
| `Date` | `"YYYY-MM-DD"` | that string |
| `DateTime` | `"YYYY-MM-DDTHH:MM:SSZ"` (UTC, fixed width, whole seconds) | ISO 8601; naive is UTC |
| `List of String` | list of strings | list of strings (numbers become text) |

`None` (JSON null) is never coerced: it clears the field, whatever its type.
Pure rules, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TypeGuard

FieldValue = str | int | float | bool | list[str]

FIELD_TYPES: tuple[str, ...] = (
    "String",
    "Int",
    "Float",
    "Bool",
    "Date",
    "DateTime",
    "List of String",
)

# Stored integers must fit SQLite's and PostgreSQL's 64-bit integers, or comparisons
# in SQL silently turn into floating point.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

_INT_TEXT = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_TEXT = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_DATE_TEXT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


class FieldTypeError(ValueError):
    """A value that cannot be stored as the declared type; the text says why."""


def describe(value: object) -> str:
    """A value as error messages quote it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: object) -> TypeGuard[int | float]:
    # bool is an int subclass, but `true` is never a number for a client.
    return isinstance(value, int | float) and not isinstance(value, bool)


def to_string(value: object) -> str:
    if isinstance(value, str):
        return value
    if _is_number(value):
        return str(value)
    raise FieldTypeError(f"expected a string, got {describe(value)}")


def to_int(value: object) -> int:
    result: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        result = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        result = int(value)
    elif isinstance(value, str) and _INT_TEXT.match(value.strip()):
        result = int(value.strip())
    if result is None:
        raise FieldTypeError(f"expected an integer, got {describe(value)}")
    if not INT_MIN <= result <= INT_MAX:
        raise FieldTypeError(f"integer {describe(value)} is out of the 64-bit range")
    return result


def to_float(value: object) -> float:
    result: float | None = None
    if _is_number(value):
        try:
            result = float(value)
        except OverflowError:  # an integer beyond the float range
            result = None
    elif isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        result = float(value.strip())
    if result is None or not math.isfinite(result):
        raise FieldTypeError(f"expected a number, got {describe(value)}")
    return result


def to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise FieldTypeError(f"expected true or false, got {describe(value)}")


def to_date(value: object) -> str:
    if isinstance(value, str) and _DATE_TEXT.match(value.strip()):
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise FieldTypeError(f"expected a date YYYY-MM-DD, got {describe(value)}")


def parse_datetime(value: object) -> datetime:
    """An ISO 8601 date-time as an aware UTC datetime; a naive one is taken as UTC."""
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            pass
    raise FieldTypeError(f"expected an ISO 8601 date-time, got {describe(value)}")


def format_datetime(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`, always 20 characters, so stored values sort as text."""
    utc = value.astimezone(UTC) if value.tzinfo else value
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


def iso_utc(value: datetime) -> str:
    """An answer's timestamp: ISO 8601 in UTC with `Z`, microseconds only when present."""
    utc = value.astimezone(UTC)
    return utc.isoformat(timespec="microseconds" if utc.microsecond else "seconds").replace(
        "+00:00", "Z"
    )


def to_datetime(value: object) -> str:
    return format_datetime(parse_datetime(value))


def to_string_list(value: object) -> list[str]:
    if not isinstance(value, list):
        raise FieldTypeError(f"expected a list of strings, got {describe(value)}")
    result = []
    for item in value:
        if not (isinstance(item, str) or _is_number(item)):
            raise FieldTypeError(f"expected a list of strings, got the item {describe(item)}")
        result.append(str(item))
    return result


_COERCERS: dict[str, Callable[[object], FieldValue]] = {
    "String": to_string,
    "Int": to_int,
    "Float": to_float,
    "Bool": to_bool,
    "Date": to_date,
    "DateTime": to_datetime,
    "List of String": to_string_list,
}


def coerce(field_type: str, value: object) -> FieldValue | None:
    """The stored form of `value` for `field_type`; None stays None (it clears the field)."""
    if value is None:
        return None
    try:
        coercer = _COERCERS[field_type]
    except KeyError:
        raise ValueError(f"unknown field type {field_type!r}") from None
    return coercer(value)


__all__ = [
    "FIELD_TYPES",
    "FieldTypeError",
    "FieldValue",
    "coerce",
    "format_datetime",
    "iso_utc",
    "parse_datetime",
]
