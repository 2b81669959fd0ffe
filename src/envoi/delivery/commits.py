"""The worker's database thread and its group commit.

Every database unit of work of a delivery worker runs on ONE thread: SQLite allows one
writer at a time, so a process that wrote from several threads would only make them
wait on each other's locks, and the event loop, which runs the SMTP sessions, must
never block on the database.

`GroupCommit` batches the small writes the sending lanes ask for (mark a row as being
sent, record a result, release a row) into one transaction: while one commit runs,
the next requests pile up and go together, so a worker pays one commit for many
messages. Callers that must not go on before their write is durable (a lane about to
hand its row to SMTP) await the future they get.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from envoi.db.locking import WriterLock, writer_lock_path
from envoi.db.session import OWN_WRITER_LOCK, transaction
from envoi.delivery.metrics import DeliveryMetrics
from envoi.spool import services as spool
from envoi.spool.services import Result

log = logging.getLogger("envoi.delivery")

T = TypeVar("T")

# A failed commit is retried after these pauses (a database restart, a deadlock victim);
# then each request is tried alone, so one bad row cannot hold back the others.
RETRY_PAUSES = (0.1, 0.5, 2.0)


class DatabaseThread:
    """Runs `fn(session)` in a transaction of its own on the single database thread.

    The thread keeps one connection for its life rather than checking one out of the
    pool per unit of work: a checkout pings PostgreSQL first (`pool_pre_ping`), a round
    trip that cost a tenth of the thread's time. A connection that broke is replaced at
    the next unit of work.

    On a SQLite file, the thread takes the database's writer lock (`db.locking`, the
    `flock` every envoi transaction queues on) around each whole unit of work, commit
    included, so that the next worker waiting on it finds SQLite's lock free at once.
    """

    def __init__(self, sessions: sessionmaker[Session], metrics: DeliveryMetrics) -> None:
        self._sessions = sessions
        self._engine: Engine | None = sessions.kw.get("bind")
        self._connection: Connection | None = None
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="envoi-delivery-db")
        lock_path = writer_lock_path(self._engine)
        self._lock = WriterLock(lock_path) if lock_path is not None else None

    async def run(self, operation: str, fn: Callable[[Session], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, operation, fn)

    def _timed(self, operation: str, fn: Callable[[Session], T]) -> T:
        began = time.perf_counter()
        try:
            return self._unit(fn)
        finally:
            self._metrics.db_seconds.labels(operation).observe(time.perf_counter() - began)

    def _unit(self, fn: Callable[[Session], T]) -> T:
        if self._engine is None:  # a sessionmaker without an engine: plain transactions
            with transaction(self._sessions) as session:
                return fn(session)
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self._connection = self._engine.connect()
            connection.info[OWN_WRITER_LOCK] = True  # taken here, around the whole unit
        try:
            with self._writer_lock(), self._sessions(bind=connection) as session, session.begin():
                return fn(session)
        except DBAPIError as error:
            if error.connection_invalidated:
                self._drop_connection()
            raise

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        self._lock.acquire()
        try:
            yield
        finally:
            self._lock.release()

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                # Back in the pool, the connection takes the writer lock itself again.
                connection.info.pop(OWN_WRITER_LOCK, None)
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        self._executor.submit(self._drop_connection).result()
        self._executor.shutdown(wait=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


@dataclass
class _Request:
    results: list[Result] = field(default_factory=list)
    mark: int | None = None
    releases: list[int] = field(default_factory=list)
    future: asyncio.Future[bool] | None = None

    @property
    def size(self) -> int:
        return len(self.results) + len(self.releases) + (self.mark is not None)


class GroupCommit:
    """Collects writes from the lanes and commits them together, as soon as it can."""

    def __init__(
        self,
        database: DatabaseThread,
        owner: str,
        clock: Callable[[], datetime],
        lease_seconds: float,
        metrics: DeliveryMetrics,
    ) -> None:
        self._database = database
        self._owner = owner
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._metrics = metrics
        self._pending: list[_Request] = []
        self._ready = asyncio.Event()
        self._closing = False

    def submit(
        self,
        *,
        results: list[Result] | None = None,
        mark: int | None = None,
        releases: list[int] | None = None,
    ) -> asyncio.Future[bool]:
        """Queue writes for the next commit; the future is done once they are durable.

        Its value says whether `mark` was put in `sending`: False when the row's lease
        expired and another worker may hold it now (it must not be sent)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(results or [], mark, releases or [], future))
        self._ready.set()
        return future

    @property
    def idle(self) -> bool:
        return not self._pending

    def close(self) -> None:
        """Commit what is queued, then let `run` return."""
        self._closing = True
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._commit(batch)
            elif self._closing:
                return

    async def _commit(self, batch: list[_Request]) -> None:
        for pause in (*RETRY_PAUSES, None):
            try:
                marked = await self._write(batch)
            except Exception:
                if pause is None:
                    break
                log.exception("delivery commit failed; retrying", extra={"rows": len(batch)})
                await asyncio.sleep(pause)
            else:
                _settle(batch, marked)
                return
        await self._one_by_one(batch)

    async def _one_by_one(self, batch: list[_Request]) -> None:
        for request in batch:
            try:
                marked = await self._write([request])
            except Exception as exc:
                log.exception(
                    "delivery write given up (the row's lease will expire)",
                    extra={"mark": request.mark, "results": [r.spool_id for r in request.results]},
                )
                _settle([request], set(), exc)
            else:
                _settle([request], marked)

    async def _write(self, batch: list[_Request]) -> set[int]:
        """One transaction for the whole batch; the ids it put in `sending`."""
        results = [r for request in batch for r in request.results]
        marks = [request.mark for request in batch if request.mark is not None]
        releases = [i for request in batch for i in request.releases]
        now = self._clock()

        def write(session: Session) -> set[int]:
            # Results first: a lane's previous row leaves `sending` in the same commit
            # that puts its next row there, so a lane never holds two rows in flight.
            if results:
                spool.record(session, self._owner, results, now)
            if releases:
                spool.release(session, self._owner, releases)
            if not marks:
                return set()
            return set(spool.mark_sending(session, self._owner, marks, now, self._lease_seconds))

        marked = await self._database.run("flush", write)
        self._metrics.flush_rows.observe(sum(request.size for request in batch))
        return marked


def _settle(batch: list[_Request], marked: set[int], exc: BaseException | None = None) -> None:
    for request in batch:
        future = request.future
        if future is None or future.done():
            continue
        if exc is None:
            future.set_result(request.mark is None or request.mark in marked)
        else:
            future.set_exception(exc)
