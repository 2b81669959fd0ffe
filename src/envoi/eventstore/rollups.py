"""Counts aggregated ahead of time: the rollup tables, kept by the transactions that
write events, so that a statistics query over a year reads thousands of rows, not
a hundred million events (docs/statistics.md, speed).

A rollup row holds, for one combination of dimensions and one UTC hour, one column
per catalogue measure that can be summed: each `Count` (how many of the group's
events its condition selects) and each `Moment` (the earliest or latest time of
them). Three tables, the smallest first (rows at 100,000,000 events of
`bench/stats.py`: 0.17, about 2 and 2.7 million):
- `rollup_campaigns`: project, hour, campaign, post and its type, message and its
  type, email, language and tags (the list, as events hold it: a campaign's tags
  add no rows, and a tag filter or grouping runs on the rollup as on the events);
  the report builder's usual groupings, seed 001's and seed 004's views;
- `rollup_deliveries`: the same and the recipient's domain and provider, the
  router, the error code, the clicked link and its URL (seeds 000 and 003);
- `rollup_clients`: the same as the first and the hit's client, country, region and
  city (seed 002's other grouping fields). Opens and clicks carry them, which
  multiplies the rows.

Rows are additive partial aggregates: no key, no upsert (DuckDB cannot have NULLs in
a key, and an index costs as much as the insert). A query sums them. Each write adds
a delta: before the write changes any event, the contribution of the events it will
change (stored events of its id range, written again, and events that lose their
first-occurrence flag to an earlier one that came late) is subtracted; after, their
contribution and that of the new events is added. The counts stay equal to those of
the events whatever a write does. A `Moment` cannot be subtracted, so only the
moments of conditions on columns that never change in a stored event are kept (the
subtraction leaves them out, and the events added back put them in again).

A GDPR erasure (`duckdb._erase`) only empties `recipient` and `profile_id`: no rollup
dimension, and no rolled-up measure reads them (checked below), so it changes no
rollup row. `reset` (a rebuild) deletes events: the rollups are made again. Any
other statement that changes stored events must be wrapped the same way
(`before_change` / `after_change`), or the rollups no longer add up to the events.

Times: `occurred_at` is the start of the event's UTC hour (events outside the years
whose local time `timebuckets.local_sql` reads by its offset table keep their own
time, for DuckDB's own conversion), so a dimension's SQL over `occurred_at` runs
unchanged on a rollup, exactly whenever the query's zone is a whole number of hours
ahead of UTC (`statistics.rollups`).

The partial rows of writes accumulate; once the larger table holds twice the rows it
held after its last compaction (and at least COMPACT_FLOOR), both are compacted: each
group re-aggregated into one row, sorted by project, post, message and hour so that a
campaign's rows sit together. An import compacts at its end.

The store's schema version: `projector_state` holds a fingerprint of the rollups'
definition. A store whose fingerprint differs (made before rollups existed, or the
catalogue changed since) has its rollups made again from the events when it is
opened.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass

import duckdb

from envoi.eventstore.schema import COLUMNS, NAMES, TABLE
from envoi.statistics.catalogue import MEASURES
from envoi.statistics.definitions import Count, Measure, Moment
from envoi.statistics.timebuckets import OFFSET_YEARS

log = logging.getLogger(__name__)
TYPES = {column.name: column.type for column in COLUMNS}

# projector_state values: the rollups' fingerprint, rows of the larger rollup now and
# after its last compaction.
VERSION = "rollup_version"
ROWS = "rollup_rows"
COMPACTED = "rollup_compacted"
COMPACT_FLOOR = 200_000  # rows of the larger rollup below which it is never compacted
# Columns a stored event may see change: the first-occurrence flags (a late event
# takes them, `duckdb._insert_chunk`) and what a GDPR erasure empties.
FLAGS = ("is_first", "is_first_human")
ERASED = ("recipient", "profile_id")


@dataclass(frozen=True)
class Rollup:
    table: str
    dimensions: tuple[str, ...]  # event columns; `occurred_at` is the hour


CAMPAIGNS = Rollup(
    "rollup_campaigns",
    (
        "project_id",
        "occurred_at",
        "campaign_id",
        "post",
        "post_type",
        "message",
        "message_type",
        "email_id",
        "language",
        "tags",
    ),
)
DELIVERIES = Rollup(
    "rollup_deliveries",
    (*CAMPAIGNS.dimensions, "domain", "provider", "router", "error_code", "link", "url"),
)
CLIENTS = Rollup(
    "rollup_clients",
    (*CAMPAIGNS.dimensions, "client", "country_name", "region_name", "city_name"),
)
ROLLUPS: tuple[Rollup, ...] = (CAMPAIGNS, DELIVERIES, CLIENTS)  # the smallest first
# A write's delta is summed at the grain of every rollup at once (about 18,000 rows
# for 245,760 events of bench/stats.py), then into each.
DELTA = tuple(dict.fromkeys(d for r in ROLLUPS for d in r.dimensions))
_SORT = ("project_id", "post", "message", "occurred_at")


def columns_of(sql: str) -> frozenset[str]:
    """The event columns an SQL expression of the catalogue reads."""
    code = re.sub(r"'[^']*'", "''", sql)  # not the words inside string literals
    return frozenset(re.findall(r"[a-z_][a-z0-9_]*", code)) & frozenset(NAMES)


def _rolled(measure: Measure) -> bool:
    """Whether the rollups keep a column of `measure` (a base measure, not an alias):
    a `Count` the erasure cannot change, a `Moment` nothing can. A `Sum` is not kept:
    its DOUBLE partial sums would add up in another order than the events' and could
    differ in the last bit."""
    if measure.same_as is not None:
        return False
    if isinstance(measure, Count):
        return not columns_of(measure.where) & set(ERASED)
    if isinstance(measure, Moment):
        return not columns_of(measure.where) & set(ERASED + FLAGS)
    return False


# The rolled-up measures, one column each, named after the measure.
MEASURE_COLUMNS: tuple[Count | Moment, ...] = tuple(
    m for m in MEASURES.values() if isinstance(m, Count | Moment) and _rolled(m)
)
_FIRST, _LAST = (f"TIMESTAMP '{year}-01-01 00:00:00'" for year in OFFSET_YEARS)
HOUR_SQL = (
    f"CASE WHEN occurred_at >= {_FIRST} AND occurred_at < {_LAST} "
    "THEN date_trunc('hour', occurred_at) ELSE occurred_at END"
)


def quoted(name: str) -> str:
    return f'"{name}"'


def _ddl(table: str, dimensions: tuple[str, ...], temporary: bool = False) -> str:
    columns = [f"{name} {TYPES[name]}" for name in dimensions]
    columns += [
        f"{quoted(m.name)} {'BIGINT' if isinstance(m, Count) else 'TIMESTAMP'}"
        for m in MEASURE_COLUMNS
    ]
    kind = "TEMP TABLE" if temporary else "TABLE IF NOT EXISTS"
    return f"CREATE {kind} {table} ({', '.join(columns)})"


def _aggregates(sign: int) -> str:
    """The measures' columns over events, as added (sign 1) or taken off (-1)."""
    parts = []
    for m in MEASURE_COLUMNS:
        if isinstance(m, Count):
            # count_if: the same count as the catalogue's FILTER, a third cheaper here
            parts.append(f"{'-' if sign < 0 else ''}count_if({m.where})")
        elif sign > 0:
            parts.append(f"{m.extreme}(occurred_at) FILTER (WHERE {m.where})")
        else:
            parts.append("CAST(NULL AS TIMESTAMP)")
    return ", ".join(parts)


def _summed(dimensions: tuple[str, ...], source: str) -> str:
    """SELECT the rows of `source` (a rollup's columns) summed per `dimensions`."""
    measures = ", ".join(
        f"{'sum' if isinstance(m, Count) else m.extreme}({quoted(m.name)}) AS {quoted(m.name)}"
        for m in MEASURE_COLUMNS
    )
    keys = ", ".join(dimensions)
    return f"SELECT {keys}, {measures} FROM {source} GROUP BY {keys}"  # noqa: S608 - catalogue SQL


def _delta_sql(
    predicate: str, sign: int, into: str = "rollup_delta", grain: tuple[str, ...] = DELTA
) -> str:
    """Into table `into`: the contribution of the events `predicate` selects, summed
    per `grain` (event columns)."""
    dimensions = ", ".join(f"{HOUR_SQL} AS occurred_at" if d == "occurred_at" else d for d in grain)
    groups = ", ".join(str(i + 1) for i in range(len(grain)))
    return (
        f"INSERT INTO {into} SELECT {dimensions}, {_aggregates(sign)} "  # noqa: S608
        f"FROM {TABLE} WHERE {predicate} GROUP BY {groups}"
    )


def fingerprint() -> int:
    """The rollups' definition as a number (projector_state holds a BIGINT)."""
    definition = "\n".join(
        [_ddl(r.table, r.dimensions) for r in ROLLUPS] + [_delta_sql("true", 1), HOUR_SQL]
    )
    digest = hashlib.sha256(definition.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --- the store's side ------------------------------------------------------------------


def setup(w: duckdb.DuckDBPyConnection) -> None:
    """Create the rollups (and the writer's temporary tables); make them from the
    events when the store's were made by another definition, or none."""
    w.execute(f"CREATE TEMP TABLE rollup_delta AS {_empty()}")
    w.execute("CREATE TEMP TABLE rollup_touched (id BIGINT)")
    w.executemany(
        "INSERT INTO projector_state VALUES (?, 0) ON CONFLICT DO NOTHING",
        [[VERSION], [ROWS], [COMPACTED]],
    )
    (version,) = _value(w, VERSION)
    if version == fingerprint():
        return
    started = time.perf_counter()
    w.execute("BEGIN TRANSACTION")
    try:
        for rollup in ROLLUPS:
            w.execute(f"DROP TABLE IF EXISTS {rollup.table}")
            w.execute(_ddl(rollup.table, rollup.dimensions))
        rebuild(w)
        _set(w, VERSION, fingerprint())
    except BaseException:
        w.execute("ROLLBACK")
        raise
    w.execute("COMMIT")
    log.info(
        "event store rollups made from the events",
        extra={"seconds": round(time.perf_counter() - started, 1), "rows": _value(w, ROWS)[0]},
    )


def _empty() -> str:
    """A SELECT of no row with `rollup_delta`'s columns."""
    dimensions = ", ".join(f"CAST(NULL AS {TYPES[d]}) AS {d}" for d in DELTA)
    measures = ", ".join(
        f"CAST(NULL AS {'BIGINT' if isinstance(m, Count) else 'TIMESTAMP'}) AS {quoted(m.name)}"
        for m in MEASURE_COLUMNS
    )
    return f"SELECT {dimensions}, {measures} LIMIT 0"


@dataclass(frozen=True)
class Change:
    """The events a write changes or adds: ids low..high, and `touched` ones."""

    low: int
    high: int
    touched: bool

    @property
    def predicate(self) -> str:
        among = "id BETWEEN $low AND $high"
        touched = f"({among} OR id IN (SELECT id FROM rollup_touched))"  # noqa: S608 - constant
        return touched if self.touched else among


def before_change(w: duckdb.DuckDBPyConnection, write: int, low: int, high: int) -> Change:
    """Take off the contribution of the stored events that write `write` (`firsts`
    upserted, flags and events not yet written) changes: ids low..high (stored
    already: a write again) and those losing a first-occurrence flag."""
    (touched,) = _one(
        w.execute(
            "INSERT INTO rollup_touched "
            "SELECT lost_first FROM firsts WHERE write = $write AND lost_first IS NOT NULL "
            "UNION SELECT lost_human FROM firsts WHERE write = $write AND lost_human IS NOT NULL",
            {"write": write},
        )
    )
    change = Change(low, high, bool(touched))
    w.execute(_delta_sql(change.predicate, -1), {"low": low, "high": high})
    return change


def after_change(w: duckdb.DuckDBPyConnection, change: Change) -> None:
    """Add the contribution of the events `change` names, as they are now; write the
    delta into the rollups; compact them once grown."""
    w.execute(_delta_sql(change.predicate, 1), {"low": change.low, "high": change.high})
    w.execute("DELETE FROM rollup_touched")
    _flush(w)
    (rows,) = _value(w, ROWS)
    (compacted,) = _value(w, COMPACTED)
    if rows > max(2 * compacted, COMPACT_FLOOR):
        compact(w)


def _flush(w: duckdb.DuckDBPyConnection) -> None:
    """`rollup_delta` summed into each rollup, then emptied; ROWS counts the largest."""
    added = 0
    for rollup in ROLLUPS:
        (inserted,) = _one(
            w.execute(f"INSERT INTO {rollup.table} {_summed(rollup.dimensions, 'rollup_delta')}")
        )
        added = max(added, int(inserted))
    w.execute("DELETE FROM rollup_delta")
    (rows,) = _value(w, ROWS)
    _set(w, ROWS, rows + added)


def compact(w: duckdb.DuckDBPyConnection) -> None:
    """Each rollup's rows re-aggregated, one per group, sorted (inside a transaction)."""
    largest = 0
    order = ", ".join(_SORT)
    for rollup in ROLLUPS:
        summed = _summed(rollup.dimensions, rollup.table)
        w.execute(f"CREATE TEMP TABLE compacting AS {summed} ORDER BY {order}")
        w.execute(f"DELETE FROM {rollup.table}")  # noqa: S608 - the module's own names
        (rows,) = _one(w.execute(f"INSERT INTO {rollup.table} SELECT * FROM compacting"))  # noqa: S608
        w.execute("DROP TABLE compacting")
        largest = max(largest, rows)
    _set(w, ROWS, largest)
    _set(w, COMPACTED, largest)


def compact_if_grown(w: duckdb.DuckDBPyConnection) -> None:
    """Compact when writes added rows since the last compaction (an import's end)."""
    (rows,) = _value(w, ROWS)
    (compacted,) = _value(w, COMPACTED)
    if rows > compacted:
        compact(w)


def rebuild(w: duckdb.DuckDBPyConnection) -> None:
    """The rollups made again from every event (inside a transaction): each from a
    finer one already made, else from the events (`rollup_campaigns` is summed from
    `rollup_deliveries`; the other two read the events)."""
    made: list[Rollup] = []
    largest = 0
    order = ", ".join(_SORT)
    for rollup in sorted(ROLLUPS, key=lambda r: -len(r.dimensions)):
        w.execute(f"DELETE FROM {rollup.table}")  # noqa: S608 - the module's own names
        finer = next((m for m in made if set(rollup.dimensions) <= set(m.dimensions)), None)
        if finer is not None:
            summed = _summed(rollup.dimensions, finer.table)
            (rows,) = _one(w.execute(f"INSERT INTO {rollup.table} {summed} ORDER BY {order}"))
        else:
            fill = _delta_sql("true", 1, rollup.table, rollup.dimensions)
            (rows,) = _one(w.execute(f"{fill} ORDER BY {order}"))
        made.append(rollup)
        largest = max(largest, rows)
    _set(w, ROWS, largest)
    _set(w, COMPACTED, largest)


def _value(w: duckdb.DuckDBPyConnection, name: str) -> tuple[int]:
    (value,) = _one(w.execute("SELECT value FROM projector_state WHERE name = ?", [name]))
    return (int(value),)


def _set(w: duckdb.DuckDBPyConnection, name: str, value: int) -> None:
    w.execute("UPDATE projector_state SET value = ? WHERE name = ?", [value, name])


def _one(result: duckdb.DuckDBPyConnection) -> tuple[int]:
    row = result.fetchone()
    if row is None:  # pragma: no cover - every statement here returns one row
        raise RuntimeError("expected a row")
    return (int(row[0]),)
