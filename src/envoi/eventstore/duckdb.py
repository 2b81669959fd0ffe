"""The event store in an embedded DuckDB file (`ENVOI_EVENTS_URL=duckdb:///PATH`).

One connection; readers each take a cursor of their own (a DuckDB connection is not
shared between threads), writers queue on a lock and write through one cursor, whose
temporary tables hold the rows in hand. A call is one transaction, its rows taken
CHUNK at a time:
1. the rows are appended to a temporary table (DuckDB's appender), CHUNK at a time:
   outbox rows as they were read, turned into events in SQL (`mapping.select_sql`:
   no Python step per event), or event rows;
2. what an event's flags and provider depend on (`mapping.KEY_COLUMNS`) is read into
   `chunk_keys`; the store's `ProviderLookup` gives the provider of each distinct
   domain (it keeps its own cache: MX answers expire);
3. `firsts` (per (project, post, recipient, kind): the earliest event, and the
   earliest one by a person) is upserted with the chunk's earliest events of each
   key, through its primary key index; the rows it changed name the chunk's first
   occurrences, and the events they displaced (an earlier event came late), which
   lose their flag;
4. the chunk is inserted into `events`, but for the ids stored already;
5. the rollups (`rollups`: counts per hour, ahead of the statistics) get the
   write's delta: what the events it changed (a flag lost) or added count;
6. a GDPR erasure among the outbox rows (kind `erasure`, see below) is applied;
7. the cursor is written to `projector_state`; commit.

The projector's batches come in two steps, so that mapping the next batch overlaps
writing this one (DuckDB releases the GIL): on the projector's reader thread,
`stage_outbox` loads a batch's chunks (`mapping.OutboxColumns`: one string per column,
no Python object per row) into an in-memory database attached as `envoi_stage_N` and
maps them there: split (`mapping.split_sql`), turned into events with their
first-occurrence key (`select_sql`, KEY), the earliest event of each key (sorted by
key, the order of `firsts`' index), the providers of the domains. `append_staged` then
runs steps 3 to 7 from those tables. The staging connection writes only to
its stage, the writer only reads it; SLOTS batches are staged at most.

An erasure (`profiles.erasure`, `mapping.Erasure`) is not stored as an event: it is
taken out of the batch (one scan of its `kind` column: a batch without one pays
nothing more), and once the batch's events are in, every event of its project linked
to the erased profile, or to one of its sends, or whose recipient has one of its
identifiers' hashes (DuckDB's `sha256`, computed once per distinct recipient of the
project) loses its `recipient` and `profile_id`. The other columns and the
first-occurrence flags stay, so every count stays the same; `firsts` keeps its keys
(an md5 of project, post, address and kind: one-way, like the OLTP's erasure
hashes). Applied twice, it changes nothing more: a rebuild, which projects the outbox
again, applies it to the imported events again. An import applies the erasures it is
given (`envoi events import`: those of the OLTP store) to its own events.

`events` has no primary key: DuckDB's index on it tripled the cost of an insert, and
an id already stored is found as cheaply without it. Ids grow with the outbox (and
imported ones sit above IMPORT_ID_BASE), so a chunk's ids fall in the last row groups
and the anti-join's range filter skips the others by their min/max.

DuckDB lets one process open a file for writing: a second one (an `envoi events`
command while `envoi serve` runs) gets `StoreUnavailable`.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count, islice
from pathlib import Path
from typing import Any

import duckdb

from envoi.eventstore import rollups
from envoi.eventstore.interfaces import OutboxRow, StoreUnavailable
from envoi.eventstore.mapping import (
    DOMAIN_TABLE,
    ERASURE_KIND,
    GIVEN,
    KEY_COLUMNS,
    OUTBOX_COLUMNS,
    TYPES,
    Erasure,
    OutboxChunk,
    ProviderLookup,
    joined_columns_sql,
    keys_sql,
    naive_utc,
    select_sql,
    split_sql,
)
from envoi.eventstore.schema import IMPORT_ID_BASE, NAMES, TABLE, create_table_sql

log = logging.getLogger(__name__)

URL_PREFIX = "duckdb:///"
# Values of projector_state: the outbox cursor, how many import ids were used, and
# how many chunks were written (each marks the `firsts` rows it changed).
CURSOR = "cursor"
IMPORTED = "imported"
WRITES = "writes"
# Rows of a call that are Python objects at once; a call may bring more (a DuckDB row
# group, 122,880 rows, is written straight to the file, without the write-ahead log).
CHUNK = 20_000

# The staging database (in memory) and how many batches it holds at most: the one
# being written and the next one. Each store attaches its own (the name ends with a
# number): DuckDB shares one instance between the connections of a process to the
# same file, and two stores on one file (the server's, a command's) must not meet.
STAGE = "envoi_stage"
SLOTS = 2
_stages = count()

_EVENTS = create_table_sql()
_STATE = "CREATE TABLE IF NOT EXISTS projector_state (name VARCHAR PRIMARY KEY, value BIGINT)"
# One row per (project, post, recipient, kind) (`key`: its md5_number, 128 bits, so
# two keys never collide in practice, and a small index): its earliest event, and its
# earliest event by a person; `write` is the write that changed the row last, and
# `lost_first` / `lost_human` the events that lost their flag in it.
_FIRSTS = """CREATE TABLE IF NOT EXISTS firsts (
    key UHUGEINT PRIMARY KEY,
    first_at TIMESTAMP NOT NULL,
    first_id BIGINT NOT NULL,
    human_at TIMESTAMP,
    human_id BIGINT,
    write BIGINT NOT NULL,
    lost_first BIGINT,
    lost_human BIGINT
)"""


# An event's first-occurrence key (see `earliest`): the md5 of its parts, 128 bits.
KEY = (
    "md5_number(concat_ws(chr(31), project_id, coalesce(post, message, ''), "
    "coalesce(recipient, '#' || send_id, '#' || id), kind))"
)


def earliest(source: str, key: str = KEY) -> str:
    """(key, first, human) of the events of `source`: per key, the earliest event and
    the earliest one made by a person (`machine` None), each {occurred_at, id}.
    Without a post (a message outside campaigns) the message stands for it; without a
    recipient (erased) the send does. `key`: a column of `source` that holds it."""
    event = "{'occurred_at': occurred_at, 'id': id}"
    return (
        f"SELECT {key} AS key, min({event}) AS first, "  # noqa: S608
        f"min({event}) FILTER (WHERE machine IS NULL) AS human FROM {source} GROUP BY 1"
    )


_EARLIER_FIRST = "(excluded.first_at, excluded.first_id) < (f.first_at, f.first_id)"
_EARLIER_HUMAN = (
    "(excluded.human_id IS NOT NULL AND (f.human_id IS NULL "
    "OR (excluded.human_at, excluded.human_id) < (f.human_at, f.human_id)))"
)
_UPSERT_FIRSTS = f"""INSERT INTO firsts AS f (key, first_at, first_id, human_at, human_id, write)
SELECT key, first.occurred_at, first.id, human.occurred_at, human.id, $write
FROM {{earliest}}
ON CONFLICT (key) DO UPDATE SET
    first_at = CASE WHEN {_EARLIER_FIRST} THEN excluded.first_at ELSE f.first_at END,
    first_id = CASE WHEN {_EARLIER_FIRST} THEN excluded.first_id ELSE f.first_id END,
    lost_first = CASE WHEN {_EARLIER_FIRST} THEN f.first_id END,
    human_at = CASE WHEN {_EARLIER_HUMAN} THEN excluded.human_at ELSE f.human_at END,
    human_id = CASE WHEN {_EARLIER_HUMAN} THEN excluded.human_id ELSE f.human_id END,
    lost_human = CASE WHEN {_EARLIER_HUMAN} THEN f.human_id END,
    write = excluded.write
    WHERE {_EARLIER_FIRST} OR {_EARLIER_HUMAN}"""  # noqa: S608
_UPSERT_CHUNK = _UPSERT_FIRSTS.replace("{earliest}", f"({earliest('chunk_keys')} ORDER BY key)")
# The rows this write changed: new ones at the end of the table, so the filter on
# `write` skips the others by their min/max.
_CHANGED = "FROM firsts WHERE write = $write"
_COMPUTED_SQL = {
    "provider": "coalesce(s.provider, p.provider)",
    "is_first": f"s.id IN (SELECT first_id {_CHANGED})",
    "is_first_human": f"s.id IN (SELECT human_id {_CHANGED} AND human_id IS NOT NULL)",
}


def _insert_events(source: str) -> str:
    """Insert the events of SELECT `source` (`GIVEN` columns) but for stored ids."""
    return f"""INSERT INTO {TABLE} ({", ".join(NAMES)})
SELECT {", ".join(_COMPUTED_SQL.get(name, f"s.{name}") for name in NAMES)}
FROM ({source}) s
LEFT JOIN domain_providers p ON p.domain = s.domain
WHERE s.id NOT IN (SELECT id FROM {TABLE} WHERE id BETWEEN $low AND $high)"""  # noqa: S608


def _columns(names: Sequence[str]) -> str:
    return ", ".join(f"{name} {TYPES[name]}" for name in names)


# A GDPR erasure (see the module doc), from temporary table `erasures`: one row per
# (project, profile), (project, send) or (project, hash). The recipients of the
# projects concerned are hashed once each, with an identity key's own hash for a
# recipient written as one (`email:ann@example.com`).
_ERASED_RECIPIENTS = f"""INSERT INTO erased_recipients
SELECT project_id, recipient FROM (
    SELECT DISTINCT project_id, recipient FROM {TABLE}
    WHERE id >= $since AND recipient IS NOT NULL
    AND project_id IN (SELECT project_id FROM erasures WHERE hash IS NOT NULL)
) r
WHERE (project_id, sha256('email:' || recipient))
    IN (SELECT project_id, hash FROM erasures WHERE hash IS NOT NULL)
OR (contains(recipient, ':') AND (project_id, sha256(recipient))
    IN (SELECT project_id, hash FROM erasures WHERE hash IS NOT NULL))"""  # noqa: S608
_ERASE = f"""UPDATE {TABLE} SET recipient = NULL, profile_id = NULL
WHERE id >= $since AND (recipient IS NOT NULL OR profile_id IS NOT NULL)
AND project_id IN (SELECT project_id FROM erasures)
AND ((project_id, profile_id)
        IN (SELECT project_id, profile_id FROM erasures WHERE profile_id IS NOT NULL)
    OR (project_id, send_id)
        IN (SELECT project_id, send_id FROM erasures WHERE send_id IS NOT NULL)
    OR (project_id, recipient) IN (SELECT project_id, recipient FROM erased_recipients))"""  # noqa: S608
# Events whose first-occurrence key a rebuild can compute again: an erased event
# without a send (an imported one) has lost what grouped it with the person's others,
# so it keeps the flags it had.
_REGROUPABLE = "recipient IS NOT NULL OR send_id IS NOT NULL"

# An outbox row as read (`interfaces.OutboxRow`): SQLite gives its time as text.
_OUTBOX_ROW = (
    _columns(OUTBOX_COLUMNS).replace("occurred_at TIMESTAMP", "occurred_at VARCHAR")
    + ", data VARCHAR"
)


@dataclass(frozen=True)
class Staged:
    """A batch `stage_outbox` mapped: its slot's tables, its erasures, its id range."""

    slot: int
    erasures: tuple[Erasure, ...]
    low: int | None
    high: int | None


@dataclass(frozen=True)
class _SlotTables:
    """A slot's tables: the chunks as loaded (joined columns, rows that were not), the
    batch's events with their `key`, the earliest event per key, the providers."""

    joined: str
    rows: str
    events: str
    earliest: str
    providers: str


def _slot_tables(stage: str, slot: int) -> _SlotTables:
    names = ("joined", "rows", "events", "earliest", "providers")
    return _SlotTables(*(f"{stage}.{name}_{slot}" for name in names))


class DuckDBStore:
    """`EventStore` over a DuckDB file (or `:memory:`); `providers` gives the events'
    `provider` from their domain."""

    def __init__(self, path: str | Path, providers: ProviderLookup = DOMAIN_TABLE) -> None:
        self.path = str(path)
        self.providers = providers
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(self.path)
        except duckdb.IOException as exc:
            raise StoreUnavailable(busy_message(self.path, str(exc))) from None
        self._lock = threading.Lock()
        self._closed = False
        self._writer = self._db.cursor()
        self._setup()
        # Batches mapped ahead by `stage_outbox`, in memory, SLOTS at most.
        self._stage_db = f"{STAGE}_{next(_stages)}"
        self._writer.execute(f"ATTACH ':memory:' AS {self._stage_db}")
        self._stager = self._db.cursor()
        self._staging = threading.Lock()
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(SLOTS):
            self._slots.put(slot)

    def _setup(self) -> None:
        w = self._writer
        # Times without a zone (import files, statistics' parameters) are UTC.
        w.execute("SET GLOBAL TimeZone = 'UTC'")
        for ddl in (_EVENTS, _FIRSTS, _STATE):
            w.execute(ddl)
        w.executemany(
            "INSERT INTO projector_state VALUES (?, 0) ON CONFLICT DO NOTHING",
            [[CURSOR], [IMPORTED], [WRITES]],
        )
        # The rows in hand, on the writer's connection only.
        w.execute(f"CREATE TEMP TABLE outbox_batch ({_OUTBOX_ROW})")
        w.execute(f"CREATE TEMP TABLE staged ({_columns(GIVEN)})")
        w.execute(f"CREATE TEMP TABLE chunk_keys ({_columns(KEY_COLUMNS)})")
        w.execute(
            "CREATE TEMP TABLE domain_providers (domain VARCHAR PRIMARY KEY, provider VARCHAR)"
        )
        w.execute(
            "CREATE TEMP TABLE erasures "
            "(project_id INTEGER, profile_id INTEGER, send_id BIGINT, hash VARCHAR)"
        )
        w.execute("CREATE TEMP TABLE erased_recipients (project_id INTEGER, recipient VARCHAR)")
        # Made from the events here when the store has none yet, or older ones.
        rollups.setup(w)

    # --- writing ------------------------------------------------------------------------

    def append(self, rows: Iterable[Mapping[str, Any]], cursor: int | None = None) -> int:
        with self._transaction():
            for chunk in _chunks(rows):
                self._appender("staged", [_given(row) for row in chunk])
            inserted = self._insert_staged()
            self._set_cursor(cursor)
            return inserted

    def append_outbox(self, rows: Iterable[OutboxRow], cursor: int | None = None) -> int:
        with self._transaction():
            appender = self._writer.appender("outbox_batch")
            for chunk in _chunks(rows):
                appender.append_rows(chunk)
                appender.flush()
            erasures = self._take_erasures()
            self._writer.execute(f"INSERT INTO chunk_keys {keys_sql('outbox_batch')}")
            inserted = self._insert_chunk(select_sql("outbox_batch"))
            if erasures:
                self._erase(erasures)
            self._set_cursor(cursor)
            return inserted

    # --- staging: a batch mapped ahead, on the reader's thread -----------------------

    def stage_outbox(self, chunks: Iterable[OutboxChunk]) -> Staged:
        """Map a batch of outbox chunks (`mapping.OutboxColumns`, or lists of rows) in
        the staging database, for `append_staged` (see the module doc). Runs on the
        caller's thread, beside the writer; waits while SLOTS batches are staged."""
        slot = self._slots.get()
        try:
            with self._staging:  # one staging connection
                return self._stage(slot, chunks)
        except BaseException:
            self._slots.put(slot)
            raise

    def _stage(self, slot: int, chunks: Iterable[OutboxChunk]) -> Staged:
        s = self._stager
        names = _slot_tables(self._stage_db, slot)
        s.execute(f"CREATE OR REPLACE TABLE {names.joined} ({joined_columns_sql()})")
        s.execute(f"CREATE OR REPLACE TABLE {names.rows} ({_OUTBOX_ROW})")
        joined, rows = s.appender(names.joined), s.appender(names.rows)
        expected = 0
        erasing = False
        for chunk in chunks:
            if isinstance(chunk, list):
                rows.append_rows(chunk)
                expected += len(chunk)
                erasing = erasing or any(row[2] == ERASURE_KIND for row in chunk)
            else:
                erasing = erasing or chunk.holds_kind(ERASURE_KIND)
                joined.append_rows([chunk])
                expected += chunk.size
        joined.flush()
        rows.flush()
        # Split into a table first: splitting runs on one thread (the joined rows fit
        # in one row group), the mapping below then runs on all of DuckDB's.
        s.execute(f"INSERT INTO {names.rows} {split_sql(names.joined)}")
        batch = names.rows
        erasures: list[Erasure] = []
        if erasing:  # rare: read the batch's erasures out
            found = s.execute(
                f"SELECT project_id, data FROM {batch} WHERE kind = ? ORDER BY id",  # noqa: S608
                [ERASURE_KIND],
            ).fetchall()
            erasures = [Erasure.from_outbox(project_id, data) for project_id, data in found]
        events = f"(SELECT * FROM {batch} WHERE kind <> '{ERASURE_KIND}')"  # noqa: S608
        s.execute(
            f"CREATE OR REPLACE TABLE {names.events} AS "  # noqa: S608 - names of this module
            f"SELECT *, {KEY} AS key FROM ({select_sql(events)})"
        )
        s.execute(f"DROP TABLE {names.joined}")
        s.execute(f"DROP TABLE {names.rows}")
        summary = s.execute(f"SELECT min(id), max(id), count(*) FROM {names.events}")  # noqa: S608
        low, high, count = _one(summary)
        # A column that split into more values than rows (a value holding the
        # separator: `OutboxColumns.aligned` let it through) would add rows.
        if count + len(erasures) != expected:  # pragma: no cover
            raise RuntimeError(f"outbox batch split into {count} rows, not {expected}")
        # In key order: the upsert walks `firsts`' index in order.
        s.execute(
            f"CREATE OR REPLACE TABLE {names.earliest} AS "
            f"{earliest(names.events, 'key')} ORDER BY key"
        )
        domains = s.execute(
            f"SELECT DISTINCT domain FROM {names.events} WHERE domain IS NOT NULL"  # noqa: S608
        ).fetchall()
        known = self.providers.providers([domain for (domain,) in domains])
        s.execute(f"CREATE OR REPLACE TABLE {names.providers} (domain VARCHAR, provider VARCHAR)")
        if known:
            appender = s.appender(names.providers)
            appender.append_rows(list(known.items()))
            appender.flush()
        return Staged(slot, tuple(erasures), low, high)

    def append_staged(self, staged: Staged, cursor: int | None = None) -> int:
        """`append_outbox` of a batch `stage_outbox` made (one transaction with the
        cursor); rows inserted. The slot is free again afterwards, whatever happened."""
        names = _slot_tables(self._stage_db, staged.slot)
        try:
            with self._transaction():
                w = self._writer
                w.execute(f"INSERT INTO domain_providers SELECT * FROM {names.providers}")  # noqa: S608
                upsert = _UPSERT_FIRSTS.replace("{earliest}", names.earliest)
                source = f"SELECT * EXCLUDE (key) FROM {names.events}"  # noqa: S608
                inserted = self._write_events(source, upsert, staged.low, staged.high)
                self._clear()
                if staged.erasures:
                    self._erase(staged.erasures)
                self._set_cursor(cursor)
                return inserted
        finally:
            self.discard(staged)

    def discard(self, staged: Staged) -> None:
        """Give a staged batch's slot back (written, or never to be)."""
        self._slots.put(staged.slot)

    def import_rows(self, select: str, parameters: Sequence[Any] = ()) -> int:
        """Insert the rows of a DuckDB SELECT of the `GIVEN` columns but `id` (in that
        order) as imported events, ids from IMPORT_ID_BASE up. Inside `importing()`."""
        if not self._lock.locked():
            raise RuntimeError("import_rows runs inside `with store.importing():`")
        w = self._writer
        used = self._state(IMPORTED)
        w.execute(
            f"INSERT INTO staged SELECT {IMPORT_ID_BASE + used} + row_number() OVER () - 1, * "  # noqa: S608
            f"FROM ({select})",
            list(parameters),
        )
        (count,) = _one(w.execute("SELECT count(*) FROM staged"))
        self._set_state(IMPORTED, used + count)
        return self._insert_staged()

    @contextmanager
    def importing(self, erasures: Sequence[Erasure] = ()) -> Iterator[DuckDBStore]:
        """One transaction for several `import_rows`: all of them are kept, or none.
        `erasures` are applied to the events imported, before the commit."""
        with self._transaction():
            since = IMPORT_ID_BASE + self._state(IMPORTED)
            yield self
            if erasures:
                self._erase(erasures, since)
            rollups.compact_if_grown(self._writer)

    def reset(self) -> None:
        with self._transaction():
            w = self._writer
            w.execute(f"DELETE FROM {TABLE} WHERE id < {IMPORT_ID_BASE}")  # noqa: S608
            w.execute("DELETE FROM firsts")
            regroupable = f"(SELECT * FROM {TABLE} WHERE {_REGROUPABLE})"  # noqa: S608
            w.execute(
                "INSERT INTO firsts (key, first_at, first_id, human_at, human_id, write) "  # noqa: S608
                "SELECT key, first.occurred_at, first.id, human.occurred_at, human.id, 0 "
                f"FROM ({earliest(regroupable)})"
            )
            # An imported event may have lost its flag to a projected one, gone now.
            w.execute(
                f"UPDATE {TABLE} SET "  # noqa: S608
                "is_first = id IN (SELECT first_id FROM firsts), "
                "is_first_human = id IN (SELECT human_id FROM firsts WHERE human_id IS NOT NULL) "
                f"WHERE {_REGROUPABLE}"
            )
            rollups.rebuild(w)
            self._set_state(CURSOR, 0)

    def _take_erasures(self) -> list[Erasure]:
        """The erasures among the outbox rows in hand, taken out of them."""
        w = self._writer
        found = w.execute(
            "SELECT project_id, data FROM outbox_batch WHERE kind = ? ORDER BY id", [ERASURE_KIND]
        ).fetchall()
        if found:
            w.execute("DELETE FROM outbox_batch WHERE kind = ?", [ERASURE_KIND])
        return [Erasure.from_outbox(project_id, data) for project_id, data in found]

    def _erase(self, erasures: Sequence[Erasure], since: int = 0) -> int:
        """Apply GDPR erasures to the events of ids `since` and up; how many changed.
        The rollups stay as they are: no rollup reads these columns (see `rollups`)."""
        rows: list[tuple[int, int | None, int | None, str | None]] = []
        for erasure in erasures:
            project = erasure.project_id
            if erasure.profile_id is not None:
                rows.append((project, erasure.profile_id, None, None))
            rows += [(project, None, send_id, None) for send_id in erasure.send_ids]
            rows += [(project, None, None, digest) for digest in erasure.hashes]
        if not rows:
            return 0
        w = self._writer
        self._appender("erasures", rows)
        w.execute(_ERASED_RECIPIENTS, {"since": since})
        (changed,) = _one(w.execute(_ERASE, {"since": since}))
        w.execute("DELETE FROM erasures")
        w.execute("DELETE FROM erased_recipients")
        log.info(
            "GDPR erasures applied to the event store",
            extra={"erasures": len(erasures), "events": int(changed)},
        )
        return int(changed)

    def _insert_staged(self) -> int:
        columns = ", ".join(KEY_COLUMNS)
        self._writer.execute(f"INSERT INTO chunk_keys SELECT {columns} FROM staged")  # noqa: S608
        return self._insert_chunk("SELECT * FROM staged")

    def _insert_chunk(self, source: str) -> int:
        """Insert the events of `source` whose keys are in `chunk_keys`; how many."""
        w = self._writer
        domains = w.execute(
            "SELECT DISTINCT domain FROM chunk_keys WHERE domain IS NOT NULL"
        ).fetchall()
        if domains:
            known = self.providers.providers([domain for (domain,) in domains])
            self._appender("domain_providers", list(known.items()))
        low, high = _one(w.execute("SELECT min(id), max(id) FROM chunk_keys"))
        inserted = self._write_events(source, _UPSERT_CHUNK, low, high)
        self._clear()
        return inserted

    def _write_events(self, source: str, upsert: str, low: int | None, high: int | None) -> int:
        """Upsert `firsts` (statement `upsert`), then insert the events of `source`
        (ids `low`..`high`) with their flags and providers (in `domain_providers`)."""
        w = self._writer
        write = self._state(WRITES) + 1
        self._set_state(WRITES, write)
        w.execute(upsert, {"write": write})
        if low is None or high is None:
            return 0
        # The rollups' delta: what the events changed below counted before, then after.
        change = rollups.before_change(w, write, low, high)
        for flag, lost in (("is_first", "lost_first"), ("is_first_human", "lost_human")):
            w.execute(
                f"UPDATE {TABLE} SET {flag} = false WHERE id IN "  # noqa: S608
                f"(SELECT {lost} {_CHANGED} AND {lost} IS NOT NULL)",
                {"write": write},
            )
        found = w.execute(_insert_events(source), {"low": low, "high": high, "write": write})
        (inserted,) = _one(found)
        rollups.after_change(w, change)
        return int(inserted)

    def _appender(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        appender = self._writer.appender(table)
        appender.append_rows(rows)
        appender.flush()

    def _clear(self) -> None:
        for table in ("outbox_batch", "staged", "chunk_keys", "domain_providers"):
            self._writer.execute(f"DELETE FROM {table}")  # noqa: S608

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            w = self._writer
            w.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                w.execute("ROLLBACK")
                self._clear()  # temporary tables are transactional too: already empty
                raise
            w.execute("COMMIT")

    def _state(self, name: str) -> int:
        found = self._writer.execute("SELECT value FROM projector_state WHERE name = ?", [name])
        (value,) = _one(found)
        return int(value)

    def _set_state(self, name: str, value: int) -> None:
        self._writer.execute("UPDATE projector_state SET value = ? WHERE name = ?", [value, name])

    def _set_cursor(self, cursor: int | None) -> None:
        if cursor is not None:
            self._set_state(CURSOR, cursor)

    # --- reading ------------------------------------------------------------------------

    def cursor(self) -> int:
        return self.state(CURSOR)

    def state(self, name: str) -> int:
        """A value of `projector_state` (CURSOR, IMPORTED)."""
        (value,) = self.query("SELECT value FROM projector_state WHERE name = ?", [name])[1][0]
        return int(value)

    def query(
        self, sql: str, parameters: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        reader = self._db.cursor()  # a connection of this thread's own
        try:
            statements = reader.extract_statements(sql)
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise ValueError("the event store answers one SELECT statement at a time")
            reader.execute(sql, list(parameters))
            names = [column[0] for column in reader.description or ()]
            return names, reader.fetchall()
        finally:
            reader.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stager.close()
            # Another store of this process may still use the file's shared instance.
            self._writer.execute(f"DETACH {self._stage_db}")
            self._writer.close()
            self._db.close()


def _given(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """An event row as `staged` takes it (`GIVEN` order, the time naive UTC)."""
    return tuple(naive_utc(row.get(n)) if n == "occurred_at" else row.get(n) for n in GIVEN)


def _chunks(rows: Iterable[Any]) -> Iterator[list[Any]]:
    """`rows` CHUNK at a time."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, CHUNK)):
        yield chunk


def _one(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...]:
    row = result.fetchone()
    if row is None:  # pragma: no cover - every caller's statement returns one row
        raise RuntimeError("expected a row")
    return row


def busy_message(path: str, error: str) -> str:
    """What to tell someone whose store is held by another process."""
    holder = re.search(r"\(PID (\d+)\)", error)
    who = f"process {holder.group(1)}" if holder else "another process"
    return (
        f"the event store {path} is in use by {who} (`envoi serve`?); DuckDB lets one "
        "process write it: stop that process first"
    )


def open_store(events_url: str, providers: ProviderLookup = DOMAIN_TABLE) -> DuckDBStore:
    """The store of `ENVOI_EVENTS_URL`: `duckdb:///PATH` (`duckdb:///:memory:` for tests;
    a relative PATH is from the working directory, `duckdb:////abs/path` absolute)."""
    if not events_url.startswith(URL_PREFIX) or events_url == URL_PREFIX:
        raise StoreUnavailable(f"ENVOI_EVENTS_URL must be duckdb:///PATH, not {events_url!r}")
    return DuckDBStore(events_url.removeprefix(URL_PREFIX), providers)
