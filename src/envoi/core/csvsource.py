"""Address-list CSV files: header checks at upload, then a streaming row reader.

A list is UTF-8 (a byte-order mark is allowed), its first line is a header, its
delimiter is sniffed among `,`, `;` and tab. One of the header's identifier columns
(`email`, `uid`, `phone`, `wp_token`, matched case-insensitively) names the
recipient; every other column is a per-recipient template parameter.

Files can hold a million lines, so nothing here loads them whole: `inspect` decodes
in chunks and `read_rows` yields one row at a time from a text stream over the bytes
(an upload's spooled file, or the stored chunks `envoi.campaigns.files.open_file`
fetches one at a time).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from envoi.core.identity import IDENTIFIERS, Identity, IdentityError

DELIMITERS: tuple[str, ...] = (",", ";", "\t")
MAX_KEPT_ERRORS = 100
_CHUNK = 1 << 16


class CsvSourceError(ValueError):
    """The file cannot be used at all (encoding, header)."""


@dataclass(frozen=True)
class CsvLayout:
    """What the header says: the delimiter and which column means what."""

    delimiter: str
    columns: tuple[str, ...]
    # (identifier name, column index), in the header's order.
    identifiers: tuple[tuple[str, int], ...]
    # (parameter name, column index) for every other column.
    params: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class CsvRow:
    line: int
    identity: Identity
    params: dict[str, str]


@dataclass(frozen=True)
class CsvRowError:
    line: int
    error: str


@dataclass
class ErrorLog:
    """The first `keep` errors with their lines, and how many there were in all."""

    keep: int = MAX_KEPT_ERRORS
    count: int = 0
    errors: list[dict[str, int | str | None]] = field(default_factory=list)

    def add(self, line: int | None, error: str) -> None:
        """`line` is None for recipients that do not come from a file."""
        self.count += 1
        if len(self.errors) < self.keep:
            self.errors.append({"line": line, "error": error})


def text_stream(stream: IO[bytes]) -> io.TextIOWrapper:
    """Decode lazily; `utf-8-sig` drops a byte-order mark, `newline=""` is what csv wants."""
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def check_utf8(stream: IO[bytes]) -> None:
    """Decode the whole stream chunk by chunk, so memory stays flat in the file's size."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while chunk := stream.read(_CHUNK):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise CsvSourceError(
                f"is not UTF-8 text (invalid byte at offset {offset + exc.start})"
            ) from None
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CsvSourceError("is not UTF-8 text (it ends inside a character)") from None


def sniff_delimiter(header_line: str) -> str:
    """The candidate that yields a recipient column, then the most columns, then `,`."""

    def score(delimiter: str) -> tuple[bool, int]:
        fields = next(csv.reader([header_line], delimiter=delimiter), [])
        names = {f.strip().lower() for f in fields}
        return bool(names & set(IDENTIFIERS)), len(fields)

    # max() keeps the first of equal scores: DELIMITERS is in order of preference.
    return max(DELIMITERS, key=score)


def parse_header(header_line: str) -> CsvLayout:
    delimiter = sniff_delimiter(header_line)
    columns = tuple(c.strip() for c in next(csv.reader([header_line], delimiter=delimiter), []))
    if not columns or columns == ("",):
        raise CsvSourceError("has an empty header line")
    identifiers: list[tuple[str, int]] = []
    params: list[tuple[str, int]] = []
    seen: set[str] = set()
    for index, name in enumerate(columns):
        if not name:
            raise CsvSourceError(f"header column {index + 1} has no name")
        if name.lower() in seen:
            raise CsvSourceError(f"header names column {name!r} twice")
        seen.add(name.lower())
        if name.lower() in IDENTIFIERS:
            identifiers.append((name.lower(), index))
        else:
            params.append((name, index))
    if not identifiers:
        raise CsvSourceError(
            "has no recipient column: the header must name one of "
            f"{', '.join(IDENTIFIERS)} (found {', '.join(columns)})"
        )
    return CsvLayout(delimiter, columns, tuple(identifiers), tuple(params))


def inspect(stream: IO[bytes]) -> CsvLayout:
    """Check encoding and header, and that at least one line follows the header."""
    check_utf8(stream)
    stream.seek(0)
    text = text_stream(stream)
    try:
        header_line = text.readline()
        if not header_line.strip():
            raise CsvSourceError("is empty: the first line must be a header")
        layout = parse_header(header_line)
        if not any(line.strip() for line in text):
            raise CsvSourceError("has a header but no recipient line")
        return layout
    finally:
        text.detach()


def read_rows(stream: IO[bytes]) -> Iterator[CsvRow | CsvRowError]:
    """Every data line of an inspected file, validated, with its 1-based line number.

    Blank lines are skipped silently; a line the csv module cannot parse, with the
    wrong number of fields, without any identifier or with an invalid one is a
    CsvRowError, and reading goes on.
    """
    text = text_stream(stream)
    try:
        layout = parse_header(text.readline())
        reader = csv.reader(text, delimiter=layout.delimiter)
        while True:
            # The line a record starts on (a quoted field may span several): +1 for the
            # header, read before the reader started counting, +1 for the next line.
            line = reader.line_num + 2
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield CsvRowError(line, f"unreadable line: {exc}")
                continue
            if not fields or fields == [""]:
                continue
            yield _row(layout, line, fields)
    finally:
        text.detach()


def _row(layout: CsvLayout, line: int, fields: list[str]) -> CsvRow | CsvRowError:
    if len(fields) != len(layout.columns):
        return CsvRowError(line, f"expected {len(layout.columns)} fields, found {len(fields)}")
    values = {name: fields[index] for name, index in layout.identifiers if fields[index].strip()}
    if not values:
        names = " or ".join(name for name, _ in layout.identifiers)
        return CsvRowError(line, f"empty recipient: no {names}")
    try:
        identity = Identity.from_mapping(dict(values))
    except IdentityError as exc:
        return CsvRowError(line, str(exc))
    return CsvRow(line, identity, {name: fields[index] for name, index in layout.params})
