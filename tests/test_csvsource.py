"""envoi.core.csvsource: header checks and the streaming row reader (no database)."""

from __future__ import annotations

import io
import itertools
import tracemalloc
from collections.abc import Iterator

import pytest

from envoi.core.csvsource import (
    CsvRow,
    CsvRowError,
    CsvSourceError,
    ErrorLog,
    inspect,
    parse_header,
    read_rows,
    sniff_delimiter,
)


def _rows(text: str | bytes) -> list[CsvRow | CsvRowError]:
    data = text.encode() if isinstance(text, str) else text
    return list(read_rows(io.BytesIO(data)))


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        ("email,name", ","),
        ("email;name", ";"),
        ("email\tname", "\t"),
        ("email", ","),
        ('email;"last, first"', ";"),
        ("email,name;with;semicolons", ","),  # only "," yields the email column
        ("name;with;semicolons", ";"),
    ],
)
def test_sniff_delimiter(header: str, delimiter: str) -> None:
    assert sniff_delimiter(header) == delimiter


def test_header_layout() -> None:
    layout = parse_header(" Name ; EMAIL ;uid;coupon\r\n")
    assert layout.delimiter == ";"
    assert layout.columns == ("Name", "EMAIL", "uid", "coupon")
    assert layout.identifiers == (("email", 1), ("uid", 2))
    assert layout.params == (("Name", 0), ("coupon", 3))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"name,city\nAnn,Paris\n", "has no recipient column"),
        (b"email\n\n", "has a header but no recipient line"),
        (b"email,\na@b.co,\n", "header column 2 has no name"),
        (b"email,EMAIL\na,b\n", "header names column 'EMAIL' twice"),
        (b"\xff\xfee\x00m\x00", "is not UTF-8"),
        (b"email\na@b.co\n\xc3", "ends inside a character"),
    ],
)
def test_unusable_files(data: bytes, message: str) -> None:
    with pytest.raises(CsvSourceError, match=message):
        inspect(io.BytesIO(data))


def test_a_bom_is_allowed_and_dropped() -> None:
    data = "\ufeffemail,name\nann@example.com,Änn\n".encode()
    assert inspect(io.BytesIO(data)).columns == ("email", "name")
    [row] = _rows(data)
    assert isinstance(row, CsvRow)
    assert row.params == {"name": "Änn"}


def test_rows_with_line_numbers() -> None:
    rows = _rows(
        "email,uid,first_name\n"
        "Ann@Example.com,,Ann\n"
        "\n"
        ",u-2,Bob\n"
        ",,Nobody\n"
        "bad,,x\n"
        "c@example.com,3\n"
        '"d@example.com",,"two\nlines"\n'
        "e@example.com,5,Eve\n"
    )
    assert [(r.line, type(r).__name__) for r in rows] == [
        (2, "CsvRow"),
        (4, "CsvRow"),
        (5, "CsvRowError"),
        (6, "CsvRowError"),
        (7, "CsvRowError"),
        (8, "CsvRow"),
        (10, "CsvRow"),
    ]
    ann, bob, nobody, bad, short, dee, eve = rows
    assert isinstance(ann, CsvRow)
    assert ann.identity.key == "email:ann@example.com"
    assert ann.params == {"first_name": "Ann"}
    assert isinstance(bob, CsvRow)
    assert bob.identity.key == "uid:u-2"
    assert isinstance(nobody, CsvRowError)
    assert nobody.error == "empty recipient: no email or uid"
    assert isinstance(bad, CsvRowError)
    assert "invalid email address 'bad'" in bad.error
    assert isinstance(short, CsvRowError)
    assert short.error == "expected 3 fields, found 2"
    assert isinstance(dee, CsvRow)
    assert dee.params == {"first_name": "two\nlines"}
    assert isinstance(eve, CsvRow)
    # uid first, as everywhere a recipient is keyed; both identifiers are kept.
    assert eve.identity.key == "uid:5"
    assert eve.identity.email == "e@example.com"


def test_crlf_and_tabs() -> None:
    rows = _rows("phone\tname\r\n+33 6 12 34 56 78\tAnn\r\n")
    [row] = rows
    assert isinstance(row, CsvRow)
    assert row.identity.key == "phone:+33612345678"
    assert row.line == 2


def test_error_log_keeps_the_first_errors_and_counts_all() -> None:
    log = ErrorLog(keep=3)
    for line in range(10):
        log.add(line, f"error {line}")
    assert log.count == 10
    assert log.errors == [
        {"line": 0, "error": "error 0"},
        {"line": 1, "error": "error 1"},
        {"line": 2, "error": "error 2"},
    ]


class _Lines(io.RawIOBase):
    """A readable byte stream of `count` CSV lines, generated on demand (never whole)."""

    def __init__(self, count: int) -> None:
        self._lines: Iterator[bytes] = itertools.chain(
            [b"uid,n\n"], (f"u{i},{i}\n".encode() for i in range(count))
        )
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while len(self._buffer) < len(target):
            line = next(self._lines, None)
            if line is None:
                break
            self._buffer += line
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def test_reading_is_streamed() -> None:
    """Peak memory while reading does not grow with the number of lines."""
    tracemalloc.start()
    try:
        count = 0
        for row in read_rows(io.BufferedReader(_Lines(20_000))):
            assert isinstance(row, CsvRow)
            count += 1
            if count == 1:
                tracemalloc.reset_peak()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 1_000_000
