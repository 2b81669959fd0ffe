"""Reading the outbox for the projector: batches of rows in id order.

A store that maps a batch ahead (`projector.StagingStore`: DuckDB) is handed each
chunk of CHUNK rows as one string per column (`mapping.OutboxColumns`): the database
joins the values itself (SQLite's `group_concat`, PostgreSQL's `string_agg`), so a
chunk costs Python ten objects rather than ten per row, the driver spends its time
outside the GIL, and the store splits the strings in SQL (`mapping.split_sql`). A
chunk whose kinds or recipients hold the separator is read again as plain rows.
Another store is handed plain rows (`OutboxRow` tuples), streamed.

The chunks of a batch are bounded by the batch's own ids, read first: with a LIMIT
instead, PostgreSQL sorted the whole rest of the batch for every chunk, and SQLite
seeks by one bound of the rowid only, so there are no others.

On SQLite the reads run outside envoi's transactions, which take the writer lock
(`db.locking`): a reader in WAL mode needs no lock and blocks no writer.

A `Prefetcher` reads on a thread of its own, a batch ahead of the writer, and stages
it into the store there (DuckDB releases the GIL): reading and mapping the next batch
overlap writing this one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from envoi.eventstore.interfaces import OutboxRow
from envoi.eventstore.mapping import OUTBOX_COLUMNS, OutboxChunk, OutboxColumns

CHUNK = 5_000  # rows joined at a time
FETCH = 20_000  # rows fetched at a time (as rows)
# Fetches read ahead of a writer that takes rows: about 300 bytes a row, 50 MB.
AHEAD = 8
_COLUMNS = ", ".join(OUTBOX_COLUMNS)


@dataclass(frozen=True)
class Span:
    """Outbox ids to read: those above `after` (up to `limit` of them), and those in
    the `holes` (inclusive id ranges below it that may still fill)."""

    after: int
    limit: int
    holes: tuple[tuple[int, int], ...] = ()

    def where(self, paramstyle: str) -> tuple[str, list[Any]]:
        mark = "%s" if paramstyle == "format" else "?"
        clauses = [f"id > {mark}"]
        parameters: list[Any] = [self.after]
        for low, high in self.holes:
            clauses.append(f"id BETWEEN {mark} AND {mark}")
            parameters += [low, high]
        return " OR ".join(clauses), parameters

    def lowest(self) -> int:
        """The id below every id of the span."""
        return min([self.after, *(low - 1 for low, _ in self.holes)])


def joined_sql(postgres: bool) -> str:
    """The SELECT list that makes `OutboxColumns` of a chunk's rows."""
    if postgres:
        separator, join = "E'\\x1f'", "string_agg"
        # Not the session's DateStyle: the format the store reads.
        when = "to_char(occurred_at, 'YYYY-MM-DD HH24:MI:SS.US')"
        as_text = "::text"
    else:
        separator, join, when, as_text = "x'1f'", "group_concat", "occurred_at", ""
    return ", ".join(
        [
            "count(*)",
            f"{join}(id{as_text}, ',')",
            f"{join}(project_id{as_text}, ',')",
            f"{join}(kind, {separator})",
            f"{join}({when}, {separator})",
            *(f"{join}(coalesce({name}{as_text}, ''), ',')" for name in OUTBOX_COLUMNS[4:7]),
            f"{join}(coalesce('=' || recipient, ''), {separator})",
            f"{join}(data{as_text}, {separator})",
        ]
    )


class OutboxReader:
    """Reads outbox rows through one pooled driver connection."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._data = "data::text" if self._postgres else "data"
        self._paramstyle = "format" if self._postgres else "qmark"
        self._mark = "%s" if self._postgres else "?"
        self._joined = joined_sql(self._postgres)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        raw = self._engine.raw_connection()
        try:
            yield raw
        finally:
            if self._postgres:
                raw.rollback()  # a read: end its transaction, whatever happened
            raw.close()

    def ids(self, span: Span) -> list[int]:
        """The ids of `span`, in order."""
        where, parameters = span.where(self._paramstyle)
        sql = f"SELECT id FROM outbox WHERE {where} ORDER BY id LIMIT {self._mark}"  # noqa: S608
        with self._connection() as raw:
            cursor = raw.cursor()
            cursor.execute(sql, [*parameters, span.limit])
            return [row[0] for row in cursor.fetchall()]

    def _range_sql(self, span: Span) -> tuple[str, list[Any]]:
        """The rows of `span` with ids in (?, ?], in order; the span's own condition
        after the two bounds, and only when it has holes (see the module doc)."""
        m = self._mark
        sql = (
            f"SELECT {_COLUMNS}, {self._data} FROM outbox "  # noqa: S608
            f"WHERE id > {m} AND id <= {m}"
        )
        parameters: list[Any] = []
        if span.holes:
            where, parameters = span.where(self._paramstyle)
            sql += f" AND ({where})"
        return f"{sql} ORDER BY id", parameters

    def chunks(self, span: Span, ids: list[int]) -> Iterator[OutboxChunk]:
        """The rows of `span` up to the last of `ids` (the batch's, in order), CHUNK
        ids at a time, each as `OutboxColumns`, or as rows if it does not align."""
        rows_sql, parameters = self._range_sql(span)
        sql = f"SELECT {self._joined} FROM ({rows_sql}) chunk"  # noqa: S608
        after = span.lowest()
        with self._connection() as raw:
            cursor = raw.cursor()
            for start in range(0, len(ids), CHUNK):
                last = ids[min(start + CHUNK, len(ids)) - 1]
                cursor.execute(sql, [after, last, *parameters])
                found = cursor.fetchone()
                if found is not None and found[0]:
                    joined = OutboxColumns(*found)
                    if joined.aligned():
                        yield joined
                    else:
                        cursor.execute(rows_sql, [after, last, *parameters])
                        yield list(cursor.fetchall())
                after = last

    def rows(self, span: Span, last: int) -> Iterator[list[OutboxRow]]:
        """The rows of `span` up to id `last`, in id order, FETCH at a time (on
        PostgreSQL through a server-side cursor)."""
        where, parameters = span.where(self._paramstyle)
        sql = (
            f"SELECT {_COLUMNS}, {self._data} FROM outbox "  # noqa: S608
            f"WHERE ({where}) AND id <= {self._mark} ORDER BY id"
        )
        with self._connection() as raw:
            cursor = raw.cursor(name="envoi_projector") if self._postgres else raw.cursor()
            cursor.execute(sql, [*parameters, last])
            while chunk := cursor.fetchmany(FETCH):
                yield chunk
            cursor.close()

    def newest(self) -> tuple[int, Any] | None:
        """(id, occurred_at) of the newest outbox row, or None."""
        with self._connection() as raw:
            cursor = raw.cursor()
            cursor.execute("SELECT id, occurred_at FROM outbox ORDER BY id DESC LIMIT 1")
            row = cursor.fetchone()
            return None if row is None else (row[0], row[1])

    def oldest_after(self, cursor_id: int) -> Any:
        """occurred_at of the first outbox row after `cursor_id`, or None."""
        sql = f"SELECT occurred_at FROM outbox WHERE id > {self._mark} ORDER BY id LIMIT 1"  # noqa: S608
        with self._connection() as raw:
            cursor = raw.cursor()
            cursor.execute(sql, [cursor_id])
            row = cursor.fetchone()
            return None if row is None else row[0]


@dataclass
class Batch:
    """A batch the prefetcher found: its ids (known before its rows are read), and
    what the store's `stage` made of its rows (None without a `stage`: then
    `Prefetcher.rows` gives them)."""

    ids: list[int]
    staged: Any = None


# The store's side of a prefetcher (`projector.StagingStore`): map a batch's chunks
# ahead (on the prefetcher's thread), and give up a staged batch nobody will write.
Stage = Callable[[Iterator[OutboxChunk]], Any]
Discard = Callable[[Any], None]

_END = object()


class Prefetcher:
    """Batch after batch from `span.after` on, read on a thread ahead of the writer.

    With `stage`, each batch is read as joined columns and staged on that thread:
    `batches()` yields it with what `stage` returned, while the next one is read and
    staged. Without, `batches()` yields each `Batch`, and `rows()` then gives its rows,
    read as the writer takes them."""

    def __init__(
        self,
        reader: OutboxReader,
        span: Span,
        max_batches: int | None,
        stage: Stage | None = None,
        discard: Discard | None = None,
    ) -> None:
        self._reader = reader
        self._first = span
        self._max_batches = max_batches
        self._stage = stage
        self._discard = discard
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=AHEAD)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-reader", daemon=True)

    def __enter__(self) -> Prefetcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        while self._thread.is_alive():  # unblock a reader waiting on a full queue
            with suppress(queue.Empty):
                self._give_up(self._queue.get(timeout=0.1))
        self._thread.join()
        with suppress(queue.Empty):
            while True:
                self._give_up(self._queue.get_nowait())

    def _give_up(self, item: Any) -> None:
        """Hand back to the store a staged batch that will not be written."""
        if isinstance(item, Batch) and item.staged is not None and self._discard is not None:
            self._discard(item.staged)

    def _put(self, item: Any) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        self._give_up(item)
        return False

    def _run(self) -> None:
        try:
            span = self._first
            count = 0
            while self._max_batches is None or count < self._max_batches:
                ids = self._reader.ids(span)
                if not ids or not self._read(span, ids):
                    break
                count += 1
                if len(ids) < span.limit:
                    break
                span = Span(max(ids[-1], span.after), span.limit)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
        self._put(None)

    def _read(self, span: Span, ids: list[int]) -> bool:
        """Read (and stage) one batch into the queue; False once stopping."""
        if self._stage is not None:
            return self._put(Batch(ids, self._stage(self._reader.chunks(span, ids))))
        if not self._put(Batch(ids)):
            return False
        for chunk in self._reader.rows(span, ids[-1]):
            if not self._put(chunk):
                return False
        return self._put(_END)

    def _get(self) -> Any:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def batches(self) -> Iterator[Batch]:
        while (item := self._get()) is not None:
            yield item

    def rows(self) -> Iterator[OutboxRow]:
        """The current batch's rows (without a `stage`)."""
        while (item := self._get()) is not _END:
            yield from item
