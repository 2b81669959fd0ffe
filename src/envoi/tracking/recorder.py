"""The recorder thread: tracking hits group-committed, each answered once durable.

The event loop verifies a hit's token and queues it (`record`); this thread takes
every queued hit (up to MAX_BATCH; those that came while the previous batch
committed), enriches them (`Tracker.prepare`), then in ONE transaction loads their sends,
decides and writes (`Tracker.apply`), appends the events in one statement, and
commits. Only then are the waiting requests woken, with one
`loop.call_soon_threadsafe` for the whole batch: an answered hit is a committed hit,
and the commit's cost (an fsync on PostgreSQL, SQLite's writer lock) is shared by
hundreds of hits.

A batch whose transaction fails is tried again hit by hit, so one bad hit costs only
its own answer (503); the others are still recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from envoi.spool.bulk import OUTBOX, bulk_insert
from envoi.tracking.hits import FAILED, Hit, Outcome
from envoi.tracking.metrics import TrackingMetrics
from envoi.tracking.tracker import Tracker

log = logging.getLogger("envoi.tracking")

MAX_BATCH = 500  # hits per transaction
# How long a batch waits for more hits after its first. No wait by default: the hits that
# come while a batch commits make the next batch (group commit regulates itself: the
# slower the commit, the larger the batch). Measured with bench/tracking.py (SQLite, 64
# connections): waiting 2 ms gave 5,700 hits/s (p99 22 ms), 0.5 ms 6,400 (p99 20 ms),
# not waiting 9,400 (p99 13 ms): each wait lengthens every batch's cycle, and a hit
# queued while the thread waits wakes it only to be appended.
LINGER_SECONDS = 0.0
# Hits waiting beyond this are answered 503 at once: the database is not keeping up,
# and a client waiting longer than this queue takes to drain is better told so.
MAX_PENDING = 50_000


class Unavailable(Exception):
    """The recorder is stopped or overwhelmed: the hit was not taken."""


@dataclass(slots=True)
class _Pending:
    hit: Hit
    future: asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop


_STOP = object()


class Recorder:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        tracker: Tracker,
        metrics: TrackingMetrics,
        *,
        max_batch: int = MAX_BATCH,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._sessions = sessions
        self._tracker = tracker
        self._metrics = metrics
        self._max_batch = max_batch
        self._linger = linger
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="envoi-tracking", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Record what is queued, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping = True
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    async def record(self, hit: Hit) -> Outcome:
        """Queue `hit` and wait until its batch committed; its outcome. Raises
        Unavailable when the recorder is stopped or too far behind."""
        if self._thread is None:
            if self._stopping:
                raise Unavailable("the tracking recorder is stopped")
            self.start()  # an app served without its lifespan (a bare ASGI host)
        if self._queue.qsize() > MAX_PENDING:
            raise Unavailable("the tracking recorder is too far behind")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put(_Pending(hit, future, loop))
        return await future

    # -- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                self._process(batch)
            if stop:
                break
        # Hits that slipped in behind the stop: answered, not left waiting forever.
        late: list[_Pending] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Pending):
                late.append(item)
        self._wake(late, [FAILED] * len(late))

    def _take(self) -> tuple[list[_Pending], bool]:
        """The next batch (blocking for its first hit), and whether to stop after it."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, _Pending)  # noqa: S101 - the queue holds nothing else
        batch = [first]
        deadline = time.monotonic() + self._linger
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while len(batch) < self._max_batch:
            try:
                item = get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Pending)  # noqa: S101
            batch.append(item)
        return batch, False

    def _process(self, batch: list[_Pending]) -> None:
        hits = [pending.hit for pending in batch]
        started = time.perf_counter()
        try:
            outcomes = self._commit(hits)
        except Exception:
            log.exception("tracking batch failed", extra={"hits": len(hits)})
            outcomes = self._one_by_one(hits) if len(hits) > 1 else [FAILED]
        else:
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
            self._metrics.batch_hits.observe(len(hits))
        self._count(hits, outcomes)
        self._wake(batch, outcomes)

    def _commit(self, hits: list[Hit]) -> list[Outcome]:
        prepared = self._tracker.prepare(hits)
        with self._sessions() as session, session.begin():
            outcomes, events = self._tracker.apply(session, prepared)
            bulk_insert(session, OUTBOX, events)
        return outcomes

    def _one_by_one(self, hits: list[Hit]) -> list[Outcome]:
        outcomes = []
        for hit in hits:
            try:
                [outcome] = self._commit([hit])
            except Exception:
                log.exception("tracking hit failed", extra={"send_id": hit.send_id})
                outcome = FAILED
            outcomes.append(outcome)
        return outcomes

    def _count(self, hits: list[Hit], outcomes: list[Outcome]) -> None:
        counts = Counter(
            (hit.action.kind, o.result.value) for hit, o in zip(hits, outcomes, strict=True)
        )
        for (kind, result), count in counts.items():
            self._metrics.hits.labels(kind, result).inc(count)

    @staticmethod
    def _wake(batch: list[_Pending], outcomes: list[Outcome]) -> None:
        """One call into each waiting event loop (there is one: the server's) for the
        whole batch, rather than one per hit."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Outcome]]]
        by_loop = {}
        for pending, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, outcome))
        for loop, settled in by_loop.items():
            # A loop closed meanwhile (RuntimeError) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Outcome], Outcome]]) -> None:
    for future, outcome in settled:
        if not future.done():  # a request cancelled meanwhile
            future.set_result(outcome)
