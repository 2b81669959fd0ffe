"""The native metrics API's query: a request body (`schemas.MetricsQuery`) mapped onto
the query layer, and its answer shaped (docs/api-metrics.md).

- `precision` becomes the first group key (a `bucket_*` dimension, named `time` in the
  rows), the `dimensions` the next ones, the `filter` tree the query's `where`.
- A rate comes with its numerator and denominator, the group's summed counts
  (`{"value": 0.25, "numerator": 10, "denominator": 40}`): both are queried with it.
- Zero fill: with a precision and no other dimension, every bucket of [start, end) is a
  row, those without events with zeros; the rows are then sorted and paged here (at
  most `MAX_BUCKETS` of them). With other dimensions, only the combinations that have
  events are rows: a bucket is not filled for every combination.
- Pages: `limit` rows, and an opaque `next_cursor` (signed: `Cursors`) for the next;
  a cursor names the query it was made for, and another query refuses it (400).
- CSV: the same rows, a rate as three columns (`open_rate`, `open_rate.numerator`,
  `open_rate.denominator`).

Every error is an `Invalid` whose `loc` leads into the request body
(`["body", "filter", "and", 1, "value"]`), whatever part of the engine found it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from envoi.core.errors import EnvoiError, Invalid
from envoi.core.tokens import Signer
from envoi.statistics.catalogue import MEASURES
from envoi.statistics.definitions import Measure, Moment, Rate, Sum
from envoi.statistics.plan import Filter, Where
from envoi.statistics.query import StatisticsEngine, StatsQuery, StatsResult
from envoi.statistics.schemas import MetricsQuery, Selection, as_where, filter_loc, parse_filter
from envoi.statistics.timebuckets import PRECISIONS, series, zone

MAX_BUCKETS = 100_000  # rows of a zero-filled series
EXPORT_MAX = 1_000_000  # rows of a CSV export without `limit`
DEFAULT_RANGE = timedelta(days=7)
TIME = "time"  # the rows' key for the bucket start
_CSV_CHUNK = 1_000  # rows per chunk of a streamed CSV
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The range of `start` and `end`: far beyond any event, and far from the ends of
# Python's and DuckDB's calendars, where a bucket or an offset would overflow.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class BadRequest(Invalid):
    """A request the API will not run as it is (a cursor of another query, too many
    rows): a 400, in the shape of a 422."""

    status_code = 400


class Unavailable(EnvoiError):
    """The server runs without its event store (another process holds it)."""

    status_code = 503


# -- the range -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    start: datetime  # aware, in `where`
    end: datetime
    where: ZoneInfo


def resolve_range(body: Selection, now: datetime, saved: tuple[int, int] | None) -> Range:
    """[start, end) of the query: a time without an offset is on the zone's clock; `end`
    defaults to now and `start` to 7 days before `end`. A cursor's `saved` range (its
    query's, in microseconds) wins, so pages of a query ending "now" hold together."""
    where = zone(body.timezone, ("body", "timezone"))
    if saved is not None:
        start, end = (_EPOCH + timedelta(microseconds=us) for us in saved)
        return Range(start.astimezone(where), end.astimezone(where), where)
    end = _in_range(lambda: _aware(body.end, where) if body.end else now.astimezone(where), "end")
    start = _in_range(
        lambda: _aware(body.start, where) if body.start else end - DEFAULT_RANGE, "start"
    )
    if end <= start:
        raise Invalid("end must be after start", ("body", "end"))
    return Range(start, end, where)


def _in_range(make: Callable[[], datetime], name: str) -> datetime:
    """The time `make` gives, if it lies in the years the API takes (EARLIEST, LATEST)."""
    try:
        moment = make()
        inside = EARLIEST <= moment < LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise Invalid(f"{name} must lie in the years 1900 to 2199", ("body", name))
    return moment


def _aware(moment: datetime, where: ZoneInfo) -> datetime:
    return moment.replace(tzinfo=where) if moment.tzinfo is None else moment.astimezone(where)


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


# -- cursors -------------------------------------------------------------------------------


class Cursors:
    """Opaque page cursors: a JSON payload, base64url, signed (HMAC of the server's
    secret key), bound to one query by its digest. Tampered, or made for another
    query: `BadRequest` at `["body", "cursor"]`."""

    PURPOSE = "metrics-cursor"

    def __init__(self, secret: str) -> None:
        self._signer = Signer(secret)

    def encode(self, digest: str, **payload: Any) -> str:
        data = json.dumps({"q": digest, **payload}, separators=(",", ":")).encode()
        value = base64.urlsafe_b64encode(data).decode().rstrip("=")
        return self._signer.sign(self.PURPOSE, value)

    def decode(self, token: str, digest: str) -> dict[str, Any]:
        value = self._signer.unsign(self.PURPOSE, token)
        loc = ("body", "cursor")
        if value is None:
            raise BadRequest("not a cursor this server made", loc)
        try:
            payload = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except ValueError:
            raise BadRequest("not a cursor this server made", loc) from None
        if not isinstance(payload, dict) or payload.get("q") != digest:
            raise BadRequest("the cursor belongs to another query: send the same body", loc)
        return payload


def digest(kind: str, project_id: int, body: Selection) -> str:
    """What a cursor is bound to: the project and the body but its page controls."""
    fields = body.model_dump(mode="json", exclude={"cursor", "limit"})
    text = json.dumps([kind, project_id, fields], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def saved_range(payload: dict[str, Any] | None) -> tuple[int, int] | None:
    if payload is None:
        return None
    start, end = payload.get("s"), payload.get("e")
    if not (isinstance(start, int) and isinstance(end, int)):
        raise BadRequest("not a cursor this server made", ("body", "cursor"))
    return start, end


# -- the query -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A request checked and mapped: the engine's query (without the page), and what
    shaping the answer needs."""

    body: MetricsQuery
    query: StatsQuery
    node: Filter | Where | None  # the body's filter (`query.where` wraps a lone condition)
    range: Range
    bucket: str | None  # the precision's `bucket_*` dimension
    buckets: list[datetime] | None  # zero fill: the starts of every bucket of the range
    offset: int  # rows before this page (from the cursor)
    digest: str

    @property
    def keys(self) -> tuple[str, ...]:
        """The rows' group keys as the body names them."""
        return ((TIME,) if self.bucket else ()) + tuple(self.body.dimensions)


def prepare(body: MetricsQuery, project_id: int, cursors: Cursors, now: datetime) -> Prepared:
    """The body as a query; Invalid (`loc` into the body) for what is wrong in it."""
    query_digest = digest("metrics", project_id, body)
    payload = cursors.decode(body.cursor, query_digest) if body.cursor else None
    offset = payload.get("o") if payload is not None else 0
    if not isinstance(offset, int) or offset < 0:
        raise BadRequest("not a cursor this server made", ("body", "cursor"))
    span = resolve_range(body, now, saved_range(payload))
    bucket = None if body.precision == "none" else PRECISIONS[body.precision]
    node = parse_filter(body.filter)
    query = StatsQuery(
        project_id=project_id,
        group_by=((bucket,) if bucket else ()) + tuple(body.dimensions),
        measures=tuple(body.metrics) + _parts(body),
        start=span.start,
        end=span.end,
        timezone=body.timezone,
        order_by=tuple(_order_name(name, bucket, i) for i, name in enumerate(body.order_by)),
        where=as_where(node),
    )
    filled = bucket is not None and body.zero_fill and not body.dimensions
    buckets = _buckets(bucket, span, body.precision) if filled and bucket else None
    return Prepared(body, query, node, span, bucket, buckets, offset, query_digest)


def _parts(body: MetricsQuery) -> tuple[str, ...]:
    """Measures queried beyond `metrics`: each rate's numerator and denominator, and
    the measures only sorted by (a zero-filled series is sorted here)."""
    wanted: list[str] = []
    for name in body.metrics:
        found = MEASURES.get(name)
        if isinstance(found, Rate):
            wanted += [found.numerator, found.denominator]
    wanted += [name.removeprefix("-") for name in body.order_by]
    parts: list[str] = []
    for name in wanted:
        if name in MEASURES and name not in body.metrics and name not in parts:
            parts.append(name)
    return tuple(parts)


def _order_name(name: str, bucket: str | None, index: int) -> str:
    bare = name.removeprefix("-")
    if bare != TIME:
        return name
    if bucket is None:
        raise Invalid("'time' is not grouped by: set a precision", ("body", "order_by", index))
    return name.replace(TIME, bucket)


def _buckets(bucket: str, span: Range, precision: str) -> list[datetime]:
    """A zero-filled series is made in Python: at most MAX_BUCKETS rows. A cheap upper
    bound first, so a year of minutes is refused before it is listed."""
    message = (
        f"[start, end) holds more than {MAX_BUCKETS} buckets of {precision}: narrow the "
        "range, take a coarser precision, or set zero_fill to false"
    )
    loc = ("body", "precision")
    seconds = (span.end - span.start).total_seconds()
    steps = {"bucket_month": 28 * 86400, "bucket_quarter": 89 * 86400, "bucket_year": 365 * 86400}
    step = steps.get(bucket) or _step_seconds(bucket)
    if seconds / step > MAX_BUCKETS + 100:
        raise BadRequest(message, loc)
    starts = series(bucket, span.start, span.end, span.where)
    if len(starts) > MAX_BUCKETS:
        raise BadRequest(message, loc)
    return starts


def _step_seconds(bucket: str) -> float:
    return {
        "bucket_minute": 60.0,
        "bucket_5min": 300.0,
        "bucket_15min": 900.0,
        "bucket_hour": 3600.0,
        "bucket_day": 86400.0,
        "bucket_week": 7 * 86400.0,
    }[bucket]


def body_loc(error: Invalid, node: Filter | Where | None, body: MetricsQuery | None) -> Invalid:
    """The engine's error with its `loc` leading into the request body (`body` None:
    the recipients' body, whose one measure is `metric`)."""
    head, rest = (error.loc[0], error.loc[1:]) if error.loc else (None, [])
    mapped: tuple[str | int, ...] = tuple(error.loc)
    if head == "where":
        mapped = ("filter", *filter_loc(node, rest))
    elif head == "offset":
        mapped = ("cursor",)
    elif body is None and head == "measures":
        mapped = ("metric",)
    elif body is not None and head == "group_by" and rest:
        index = int(rest[0])
        if body.precision == "none":
            mapped = ("dimensions", index)
        else:
            mapped = ("precision",) if index == 0 else ("dimensions", index - 1)
    elif body is not None and head == "measures" and rest:
        index = int(rest[0])
        mapped = ("metrics", index) if index < len(body.metrics) else ("metrics",)
    return type(error)(error.message, ("body", *mapped))


# -- running and shaping -------------------------------------------------------------------


@dataclass
class Page:
    rows: list[dict[str, Any]]  # JSON-ready
    totals: dict[str, Any] | None
    next_offset: int | None


def run(engine: StatisticsEngine, prepared: Prepared, limit: int | None) -> Page:
    """The page of `limit` rows from the cursor's offset; `limit` None: every row, at
    most EXPORT_MAX (more is a 400)."""
    cap = EXPORT_MAX if limit is None else limit
    if prepared.buckets is not None:
        result = _run(engine, prepared, prepared.query)
        rows = _filled(prepared, prepared.buckets, result)
        _sort(rows, prepared.query.order_by)
        chosen = rows[prepared.offset : prepared.offset + cap + 1]
    else:
        paged = replace(prepared.query, limit=cap + 1, offset=prepared.offset)
        result = _run(engine, prepared, paged)
        chosen = result.rows
    more = len(chosen) > cap
    if more and limit is None:
        raise BadRequest(
            f"the export holds more than {EXPORT_MAX} rows: narrow the query, or page "
            "it with limit and cursor",
            ("body", "limit"),
        )
    return Page(
        rows=[_shape_row(prepared, row) for row in chosen[:cap]],
        totals=_shape_measures(prepared, result.totals) if prepared.body.totals else None,
        next_offset=prepared.offset + cap if more else None,
    )


def _run(engine: StatisticsEngine, prepared: Prepared, query: StatsQuery) -> StatsResult:
    try:
        return engine.run(query)
    except Invalid as error:
        raise body_loc(error, prepared.node, prepared.body) from None


def _filled(
    prepared: Prepared, starts: list[datetime], result: StatsResult
) -> list[dict[str, Any]]:
    """Every bucket of the range, in time order; those without events with zeros. A
    bucket is matched on its wall-clock start, as SQL makes it."""
    bucket = prepared.query.group_by[0]
    found = {row[bucket].replace(tzinfo=None): row for row in result.rows}
    zeros = {name: _zero(MEASURES[name]) for name in prepared.query.measures}
    return [found.get(start.replace(tzinfo=None)) or {bucket: start, **zeros} for start in starts]


def _zero(measure: Measure) -> Any:
    if isinstance(measure, Moment):
        return None
    return 0.0 if isinstance(measure, Rate | Sum) else 0


def _sort(rows: list[dict[str, Any]], order: Sequence[str]) -> None:
    """The engine's order in Python: each name, NULLs last, then the time ascending
    (the rows' order already): stable sorts from the last name to the first."""
    for raw in reversed(order):
        name = raw.removeprefix("-")
        if raw.startswith("-"):
            rows.sort(key=lambda row: (row[name] is not None, row[name]), reverse=True)
        else:
            rows.sort(key=lambda row: (row[name] is None, row[name]))


def _shape_row(prepared: Prepared, row: dict[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {}
    if prepared.bucket is not None:
        shaped[TIME] = json_value(row[prepared.bucket])
    for name in prepared.body.dimensions:
        shaped[name] = json_value(row[name])
    return shaped | _shape_measures(prepared, row)


def _shape_measures(prepared: Prepared, row: dict[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {}
    for name in prepared.body.metrics:
        found = MEASURES[name]
        if isinstance(found, Rate):
            shaped[name] = {
                "value": row[name],
                "numerator": row[found.numerator],
                "denominator": row[found.denominator],
            }
        else:
            shaped[name] = json_value(row[name])
    return shaped


def json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


def answer(prepared: Prepared, page: Page, cursors: Cursors) -> dict[str, Any]:
    """The JSON answer of one page."""
    return {
        "start": prepared.range.start.isoformat(),
        "end": prepared.range.end.isoformat(),
        "timezone": prepared.body.timezone,
        "precision": prepared.body.precision,
        "rows": page.rows,
        "totals": page.totals,
        "next_cursor": next_cursor(prepared, page, cursors),
    }


def next_cursor(prepared: Prepared, page: Page, cursors: Cursors) -> str | None:
    if page.next_offset is None:
        return None
    span = prepared.range
    return cursors.encode(
        prepared.digest, o=page.next_offset, s=micros(span.start), e=micros(span.end)
    )


# -- CSV -----------------------------------------------------------------------------------


def csv_header(prepared: Prepared) -> list[str]:
    header = list(prepared.keys)
    for name in prepared.body.metrics:
        header.append(name)
        if isinstance(MEASURES[name], Rate):
            header += [f"{name}.numerator", f"{name}.denominator"]
    return header


def csv_lines(prepared: Prepared, page: Page) -> Iterator[str]:
    """The page as CSV text, a chunk at a time: the header, the rows, then (asked for,
    and with group keys) the totals, `total` in the first column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(csv_header(prepared))
    rows: list[list[Any]] = [_csv_row(prepared, row) for row in page.rows]
    if page.totals is not None and prepared.keys:
        keys = ["total"] + [""] * (len(prepared.keys) - 1)
        rows.append(keys + _csv_row(prepared, page.totals)[len(prepared.keys) :])
    for at in range(0, len(rows), _CSV_CHUNK):
        writer.writerows(rows[at : at + _CSV_CHUNK])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def _csv_row(prepared: Prepared, row: dict[str, Any]) -> list[Any]:
    cells = [_cell(row.get(key)) for key in prepared.keys]
    for name in prepared.body.metrics:
        value = row[name]
        if isinstance(value, dict):
            cells += [_cell(value["value"]), _cell(value["numerator"]), _cell(value["denominator"])]
        else:
            cells.append(_cell(value))
    return cells


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
