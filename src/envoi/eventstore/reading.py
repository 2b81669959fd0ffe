"""Reading the outbox for the projector: batches of rows in id order, streamed.

The rows are read through the driver itself (sqlite3, psycopg), as plain tuples in
`mapping.OUTBOX_COLUMNS` order plus `data` as JSON text (never decoded in Python): the
store turns them into events in SQL. On SQLite the reads run outside
envoi's transactions, which take the writer lock (`db.locking`): a reader in WAL mode
needs no lock and blocks no writer. On PostgreSQL the rows come through a server-side
cursor, CHUNK at a time.

A `Prefetcher` reads on a thread of its own, ahead of the writer: while the store
writes a batch (DuckDB releases the GIL), the next one is being read.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from envoi.eventstore.interfaces import OutboxRow
from envoi.eventstore.mapping import OUTBOX_COLUMNS

CHUNK = 20_000
# Chunks read ahead of the writer: outbox rows of about 700 bytes, 110 MB at most.
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


class OutboxReader:
    """Reads outbox rows through one pooled driver connection."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._data = "data::text" if self._postgres else "data"
        self._paramstyle = "format" if self._postgres else "qmark"

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
        mark = "%s" if self._postgres else "?"
        sql = f"SELECT id FROM outbox WHERE {where} ORDER BY id LIMIT {mark}"  # noqa: S608
        with self._connection() as raw:
            cursor = raw.cursor()
            cursor.execute(sql, [*parameters, span.limit])
            return [row[0] for row in cursor.fetchall()]

    def rows(self, span: Span, last: int) -> Iterator[list[OutboxRow]]:
        """The rows of `span` up to id `last`, in id order, CHUNK at a time."""
        where, parameters = span.where(self._paramstyle)
        mark = "%s" if self._postgres else "?"
        sql = (
            f"SELECT {_COLUMNS}, {self._data} FROM outbox "  # noqa: S608
            f"WHERE ({where}) AND id <= {mark} ORDER BY id"
        )
        with self._connection() as raw:
            cursor = raw.cursor(name="envoi_projector") if self._postgres else raw.cursor()
            cursor.execute(sql, [*parameters, last])
            while chunk := cursor.fetchmany(CHUNK):
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
        mark = "%s" if self._postgres else "?"
        sql = f"SELECT occurred_at FROM outbox WHERE id > {mark} ORDER BY id LIMIT 1"  # noqa: S608
        with self._connection() as raw:
            cursor = raw.cursor()
            cursor.execute(sql, [cursor_id])
            row = cursor.fetchone()
            return None if row is None else row[0]


@dataclass
class Batch:
    """A batch the prefetcher found: its ids (known before its rows are read)."""

    ids: list[int]


_END = object()


class Prefetcher:
    """Batch after batch from `span.after` on, read on a thread one batch ahead.

    `batches()` yields each `Batch`; `rows()` then gives that batch's rows, which the
    caller consumes before it asks for the next batch."""

    def __init__(self, reader: OutboxReader, span: Span, max_batches: int | None) -> None:
        self._reader = reader
        self._first = span
        self._max_batches = max_batches
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
                self._queue.get(timeout=0.1)
        self._thread.join()

    def _put(self, item: Any) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _run(self) -> None:
        try:
            span = self._first
            count = 0
            while self._max_batches is None or count < self._max_batches:
                ids = self._reader.ids(span)
                if not ids or not self._put(Batch(ids)):
                    break
                for chunk in self._reader.rows(span, ids[-1]):
                    if not self._put(chunk):
                        return
                if not self._put(_END):
                    return
                count += 1
                if len(ids) < span.limit:
                    break
                span = Span(max(ids[-1], span.after), span.limit)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
        self._put(None)

    def _get(self) -> Any:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def batches(self) -> Iterator[Batch]:
        while (item := self._get()) is not None:
            yield item

    def rows(self) -> Iterator[OutboxRow]:
        """The current batch's rows."""
        while (item := self._get()) is not _END:
            yield from item
