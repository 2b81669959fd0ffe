"""`envoi events import FILE`: historical events into the store (docs/events.md).

A file is checked whole before anything is loaded: the first bad line (JSON lines) or
row (Parquet) is reported with its number and nothing is written. Then it is loaded
in one store transaction, a part at a time for the progress bar.

JSON lines are checked in Python, line by line, and written back normalised (times
in naive UTC, only known fields) to temporary files DuckDB reads at full speed;
Parquet files are checked and read by DuckDB itself.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from envoi.core.errors import EnvoiError
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.mapping import GIVEN, IN_BAND_KINDS, TYPES, Erasure, domain_of

# The fields of an imported event: every column but what the store assigns.
FIELDS: tuple[str, ...] = tuple(name for name in GIVEN if name != "id")
REQUIRED: tuple[str, ...] = ("kind", "occurred_at", "project_id")
PART_ROWS = 500_000  # rows loaded per statement (one step of the progress bar)

Progress = Callable[[int], None]  # called with how much more was done


class ImportRejected(EnvoiError):
    """The file is not loadable; `message` names the line or row."""


_TYPE_NAMES = {
    "INTEGER": "an integer",
    "BIGINT": "an integer",
    "DOUBLE": "a number",
    "BOOLEAN": "true or false",
    "VARCHAR": "a string",
    "VARCHAR[]": "a list of strings",
    "TIMESTAMP": "an ISO 8601 time",
}


def _fits(value: Any, type_: str) -> bool:
    if type_ in ("INTEGER", "BIGINT"):
        return isinstance(value, int) and not isinstance(value, bool)
    if type_ == "DOUBLE":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "BOOLEAN":
        return isinstance(value, bool)
    if type_ == "VARCHAR[]":
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, str)


def _time(value: Any) -> str:
    """An ISO 8601 time as naive UTC text (no offset: UTC); ValueError if it is none."""
    if not isinstance(value, str):
        raise ValueError
    when = datetime.fromisoformat(value)
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(" ", "microseconds")


def normalized(document: Any) -> dict[str, Any]:
    """The event a JSON object describes, as the loader reads it; ValueError saying
    what is wrong."""
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    unknown = sorted(set(document) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (docs/events.md lists them)")
    for name in REQUIRED:
        if document.get(name) is None:
            raise ValueError(f"{name} is missing")
    event = {name: _field(name, value) for name, value in document.items() if value is not None}
    if not event["kind"]:
        raise ValueError("kind is empty")
    if event.get("recipient"):
        event["recipient"] = event["recipient"].strip().lower()
    if "domain" not in event:
        event["domain"] = domain_of(event.get("recipient"))
    if event["kind"] in IN_BAND_KINDS:
        event.setdefault("in_band", True)
    return event


def _field(name: str, value: Any) -> Any:
    """A field's value as loaded; ValueError if it is not of the field's type."""
    if name == "occurred_at":
        try:
            return _time(value)
        except ValueError:
            raise ValueError(f"occurred_at must be an ISO 8601 time, not {value!r}") from None
    if not _fits(value, TYPES[name]):
        raise ValueError(f"{name} must be {_TYPE_NAMES[TYPES[name]]}")
    return value


@dataclass
class Checked:
    """A file found loadable: its events, split into parts to load."""

    rows: int = 0
    parts: list[tuple[str, list[Any], int]] = field(default_factory=list)  # SELECT, args, rows
    directory: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        if self.directory is not None:
            self.directory.cleanup()


def _columns_sql() -> str:
    """The `read_json` columns of a normalised part."""
    types = {name: TYPES[name] for name in FIELDS}
    return "{" + ", ".join(f"'{name}': '{type_}'" for name, type_ in types.items()) + "}"


def check_jsonl(
    path: Path, projects: Collection[int], progress: Progress, scratch: Path | None = None
) -> Checked:
    """Check a JSON-lines file (one event object per line; blank lines are skipped)
    and write it back normalised in parts; ImportRejected at the first bad line."""
    directory = tempfile.TemporaryDirectory(prefix="envoi-import-", dir=scratch)
    checked = Checked(directory=directory)
    try:
        _check_lines(path, projects, progress, checked, Path(directory.name))
    except BaseException:
        checked.close()
        raise
    return checked


def _check_lines(
    path: Path, projects: Collection[int], progress: Progress, checked: Checked, into: Path
) -> None:
    part: IO[str] | None = None
    in_part = 0
    columns = _columns_sql()
    unreported = 0
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            unreported += len(raw)
            if number % 10_000 == 0:
                progress(unreported)
                unreported = 0
            text = raw.strip()
            if not text:
                continue
            try:
                event = normalized(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ImportRejected(f"line {number}: not JSON: {exc.msg}") from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise ImportRejected(f"line {number}: {exc}") from None
            if event["project_id"] not in projects:
                raise ImportRejected(f"line {number}: project {event['project_id']} does not exist")
            if part is None:
                name = into / f"part-{len(checked.parts):05d}.jsonl"
                part = name.open("w", encoding="utf-8")
                select = (
                    f"SELECT {', '.join(FIELDS)} FROM read_json(?, "  # noqa: S608
                    f"format = 'newline_delimited', columns = {columns})"
                )
                checked.parts.append((select, [str(name)], 0))
            part.write(json.dumps(event, ensure_ascii=False) + "\n")
            in_part += 1
            checked.rows += 1
            if in_part == PART_ROWS:
                part.close()
                select, args, _ = checked.parts[-1]
                checked.parts[-1] = (select, args, in_part)
                part, in_part = None, 0
    progress(unreported)
    if part is not None:
        part.close()
        select, args, _ = checked.parts[-1]
        checked.parts[-1] = (select, args, in_part)


def check_parquet(store: DuckDBStore, path: Path, projects: Collection[int]) -> Checked:
    """Check a Parquet file's columns and rows with DuckDB; ImportRejected naming the
    first bad row (counted from 1)."""
    source = "read_parquet(?, file_row_number = true)"
    described = store.query("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)])[1]
    present = {row[0]: str(row[1]) for row in described}
    unknown = sorted(set(present) - set(FIELDS))
    if unknown:
        raise ImportRejected(f"column {unknown[0]!r} is not an event field (docs/events.md)")
    missing = [name for name in REQUIRED if name not in present]
    if missing:
        raise ImportRejected(f"column {missing[0]!r} is missing")
    checks = [f"WHEN {name} IS NULL THEN '{name} is missing'" for name in REQUIRED]
    checks.append("WHEN kind = '' THEN 'kind is empty'")
    checks.append(
        "WHEN TRY_CAST(occurred_at AS TIMESTAMPTZ) IS NULL THEN 'occurred_at must be a time'"
    )
    for name in present:
        if name == "occurred_at":
            continue
        type_ = TYPES[name]
        checks.append(
            f"WHEN {name} IS NOT NULL AND TRY_CAST({name} AS {type_}) IS NULL "
            f"THEN '{name} must be {_TYPE_NAMES[type_]}'"
        )
    known = ", ".join(str(int(p)) for p in projects) or "NULL"
    checks.append(
        f"WHEN project_id NOT IN ({known}) THEN 'project ' || project_id || ' does not exist'"
    )
    found = store.query(
        f"SELECT file_row_number + 1, CASE {' '.join(checks)} END AS reason "  # noqa: S608
        f"FROM {source} WHERE reason IS NOT NULL ORDER BY 1 LIMIT 1",
        [str(path)],
    )[1]
    if found:
        raise ImportRejected(f"row {found[0][0]}: {found[0][1]}")
    (count,) = store.query("SELECT count(*) FROM read_parquet(?)", [str(path)])[1][0]
    checked = Checked(rows=int(count))
    select = _parquet_select(present)
    for start in range(0, checked.rows, PART_ROWS):
        end = min(start + PART_ROWS, checked.rows)
        checked.parts.append((select, [str(path), start, end], end - start))
    return checked


def _parquet_select(present: dict[str, str]) -> str:
    """The `FIELDS` of a Parquet file's rows `$2 <= file_row_number < $3`, normalised
    as `normalized` does for JSON lines."""
    expressions = []
    for name in FIELDS:
        if name not in present:
            expression = "NULL"
        elif name == "occurred_at":
            expression = "timezone('UTC', CAST(occurred_at AS TIMESTAMPTZ))"
        elif name == "recipient":
            expression = "lower(trim(CAST(recipient AS VARCHAR)))"
        else:
            expression = f"CAST({name} AS {TYPES[name]})"
        expressions.append(f"CAST({expression} AS {TYPES[name]}) AS {name}")
    recipient = "lower(trim(CAST(recipient AS VARCHAR)))" if "recipient" in present else "NULL"
    domain = "CAST(domain AS VARCHAR)" if "domain" in present else "NULL"
    in_band = "CAST(in_band AS BOOLEAN)" if "in_band" in present else "NULL"
    kinds = ", ".join(f"'{kind}'" for kind in IN_BAND_KINDS)
    rules = {
        "domain": f"coalesce({domain}, CASE WHEN contains({recipient}, '@') "
        f"THEN nullif(split_part({recipient}, '@', -1), '') END) AS domain",
        "in_band": f"CASE WHEN kind IN ({kinds}) THEN coalesce({in_band}, true) "
        f"ELSE {in_band} END AS in_band",
    }
    columns = [
        rules.get(name, expression) for name, expression in zip(FIELDS, expressions, strict=True)
    ]
    return (
        f"SELECT {', '.join(columns)} FROM read_parquet($1, file_row_number = true) "  # noqa: S608
        "WHERE file_row_number >= $2 AND file_row_number < $3 ORDER BY file_row_number"
    )


def load(
    store: DuckDBStore, checked: Checked, progress: Progress, erasures: Sequence[Erasure] = ()
) -> int:
    """Load a checked file in one transaction; the events added. The GDPR `erasures`
    (the OLTP store's, `erasures_of`) strip the loaded events naming an erased person."""
    added = 0
    with store.importing(erasures):
        for select, arguments, rows in checked.parts:
            added += store.import_rows(select, arguments)
            progress(rows)
    return added


def erasures_of(hashes: Iterable[tuple[int, str]]) -> list[Erasure]:
    """The erasures of (project id, erasure hash) pairs (the OLTP's `Erasure` rows),
    one per project."""
    by_project: dict[int, list[str]] = {}
    for project_id, digest in hashes:
        by_project.setdefault(project_id, []).append(digest)
    return [
        Erasure(project_id, hashes=tuple(sorted(found))) for project_id, found in by_project.items()
    ]
