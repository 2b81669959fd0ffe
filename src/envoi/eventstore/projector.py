"""The projector: outbox events into the event store, in batches, in id order.

Each batch is one store transaction holding its rows and the new cursor (the last
outbox id projected), so a crash loses nothing and repeats nothing: the next start
reads the cursor back and goes on from there; rows projected beyond it (see below)
are read again and skipped, the store ignoring ids it holds.

PostgreSQL hands out sequence ids when rows are inserted, not when they commit: id
101 may be visible before id 100, whose transaction is still running. An id missing
between two seen ones is awaited: the cursor stops below it while rows beyond it are
projected anyway, and each pass looks for it again. Once it has been missing for
`patience` seconds (60) its transaction is taken for rolled back and the cursor moves
on; a transaction that commits later than that is only seen by `envoi events
rebuild`. On SQLite writers take turns, so ids appear in order.

Each batch is read, and mapped by a store that can (`StagingStore`), on a thread of
its own while the previous one is written (`reading.Prefetcher`).

`envoi serve` runs one on a thread (`start`, `stop`), passing every
ENVOI_WORKER_POLL_SECONDS; `envoi events rebuild` calls `run_until_idle`.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from envoi.eventstore.interfaces import EventStore
from envoi.eventstore.mapping import OutboxChunk, naive_utc
from envoi.eventstore.metrics import ProjectorMetrics
from envoi.eventstore.reading import Batch, OutboxReader, Prefetcher, Span

log = logging.getLogger(__name__)

# Two DuckDB row groups (122,880 rows each): a full row group is written straight to
# the store's file rather than through its write-ahead log, and the two are inserted in
# parallel; 20,000-row batches went at half the speed (docs/benchmarks.md, projector).
BATCH = 2 * 122_880
PATIENCE_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Hole:
    """Ids `low`..`high` missing from the outbox since `since` (monotonic seconds)."""

    low: int
    high: int
    since: float


class Awaited:
    """The holes below the highest id seen, each with the time it was first missed."""

    def __init__(self, patience: float, clock: Callable[[], float]) -> None:
        self.patience = patience
        self.clock = clock
        self.holes: list[Hole] = []

    def see(self, ids: list[int], seen: int) -> int:
        """Take in a batch's ids (in order): fill holes, find new ones above `seen`;
        the new highest id seen."""
        now = self.clock()
        filled = [i for i in ids if i <= seen]
        if filled and self.holes:
            self.holes = [part for hole in self.holes for part in _without(hole, filled)]
        previous = seen
        for found in ids:
            if found <= seen:
                continue
            if found > previous + 1:
                self.holes.append(Hole(previous + 1, found - 1, now))
            previous = found
        return previous

    def expire(self) -> list[Hole]:
        """Give up the holes missing for `patience` seconds; those given up."""
        now = self.clock()
        expired = [hole for hole in self.holes if now - hole.since >= self.patience]
        if expired:
            self.holes = [hole for hole in self.holes if now - hole.since < self.patience]
        return expired

    def cursor(self, seen: int) -> int:
        """The last id below which nothing is awaited."""
        return min(hole.low for hole in self.holes) - 1 if self.holes else seen

    def ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple((hole.low, hole.high) for hole in self.holes)

    def count(self) -> int:
        return sum(hole.high - hole.low + 1 for hole in self.holes)


def _without(hole: Hole, ids: list[int]) -> list[Hole]:
    """What is left of `hole` once `ids` (sorted) are found."""
    start = bisect.bisect_left(ids, hole.low)
    end = bisect.bisect_right(ids, hole.high)
    if start == end:
        return [hole]
    parts = []
    low = hole.low
    for found in ids[start:end]:
        if found > low:
            parts.append(Hole(low, found - 1, hole.since))
        low = found + 1
    if low <= hole.high:
        parts.append(Hole(low, hole.high, hole.since))
    return parts


@runtime_checkable
class StagingStore(Protocol):
    """A store that maps a batch ahead of writing it (`DuckDBStore`): the projector's
    reader thread stages the next batch (`stage_outbox`, from joined columns) while
    the writer writes this one (`append_staged`, the batch's rows and the cursor in one
    transaction, as `append_outbox`). `discard` hands back a staged batch that will not
    be written."""

    def stage_outbox(self, chunks: Iterable[OutboxChunk]) -> Any: ...

    def append_staged(self, staged: Any, cursor: int | None = None) -> int: ...

    def discard(self, staged: Any) -> None: ...


class Projector:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: EventStore,
        batch: int = BATCH,
        *,
        poll_seconds: float = 0.5,
        patience: float = PATIENCE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        engine = sessions.kw.get("bind")
        if not isinstance(engine, Engine):
            raise TypeError("the projector reads the outbox through an engine-bound sessionmaker")
        self.reader = OutboxReader(engine)
        self.store = store
        self.batch = batch
        self.metrics = ProjectorMetrics()
        self._poll_seconds = poll_seconds
        self._awaited = Awaited(patience, clock)
        self._seen: int | None = None  # the highest outbox id projected; None: ask the store
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- passes -------------------------------------------------------------------------

    def step(self) -> int:
        """Project one batch; the events it added to the store."""
        return self._pass(max_batches=1)

    def run_until_idle(self, on_batch: Callable[[int], object] | None = None) -> int:
        """Project batches until the outbox has nothing new; the events added.
        `on_batch` is called with the cursor after each batch (a progress bar)."""
        return self._pass(max_batches=None, on_batch=on_batch)

    def _pass(
        self, max_batches: int | None, on_batch: Callable[[int], object] | None = None
    ) -> int:
        try:
            return self._project(max_batches, on_batch)
        except BaseException:
            # What this process remembers may be ahead of the store: start again from
            # the cursor the store holds (holes are found again).
            self._seen = None
            self._awaited.holes = []
            raise

    def _project(self, max_batches: int | None, on_batch: Callable[[int], object] | None) -> int:
        if self._seen is None:
            self._seen = self.store.cursor()
        expired = self._awaited.expire()
        for hole in expired:
            log.warning(
                "outbox ids given up: never committed (rolled back)",
                extra={"from_id": hole.low, "to_id": hole.high},
            )
        projected = 0
        unsaved = bool(expired)  # the cursor moves past ids given up
        started = time.perf_counter()
        span = Span(self._seen, self.batch, self._awaited.ranges())
        staging = self.store if isinstance(self.store, StagingStore) else None
        with Prefetcher(
            self.reader,
            span,
            max_batches,
            stage=staging.stage_outbox if staging is not None else None,
            discard=staging.discard if staging is not None else None,
        ) as prefetcher:
            for batch in prefetcher.batches():
                with self.metrics.seconds.time():
                    if staging is not None:
                        added = self._append_staged(staging, batch)
                    else:
                        added = self.store.append_outbox(prefetcher.rows(), self._next(batch))
                projected += added
                self.metrics.projected.inc(added)
                unsaved = False
                if on_batch is not None:
                    on_batch(self._awaited.cursor(self._seen))
                if self._stopping.is_set():
                    break
        if unsaved:
            self.store.append_outbox((), self._awaited.cursor(self._seen))
        self._observe()
        if projected:
            log.log(
                logging.INFO if projected >= self.batch else logging.DEBUG,
                "events projected",
                extra={
                    "events": projected,
                    "cursor": self._awaited.cursor(self._seen),
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
        return projected

    def _next(self, batch: Batch) -> int:
        """Take in a batch's ids; the cursor to write with it."""
        self._seen = self._awaited.see(batch.ids, self._seen or 0)
        return self._awaited.cursor(self._seen)

    def _append_staged(self, staging: StagingStore, batch: Batch) -> int:
        try:
            cursor = self._next(batch)
        except BaseException:
            staging.discard(batch.staged)  # its slot, for the next pass
            raise
        return staging.append_staged(batch.staged, cursor)

    def _observe(self) -> None:
        seen = self._seen or 0
        self.metrics.cursor.set(self._awaited.cursor(seen))
        self.metrics.holes.set(self._awaited.count())
        oldest = self.reader.oldest_after(seen)  # rows past an awaited id are projected
        lag = 0.0
        if oldest is not None:
            waiting = naive_utc(oldest)
            if waiting is not None:
                now = datetime.now(UTC).replace(tzinfo=None)
                lag = max(0.0, (now - waiting).total_seconds())
        self.metrics.lag.set(lag)

    # --- the thread of `envoi serve` -----------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="projector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in hand (one transaction), then end the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_until_idle()
            except Exception:
                # The thread outlives an outage of the outbox or the store.
                log.exception("projector pass failed")
                self.metrics.errors.inc()
            self._stopping.wait(self._poll_seconds)
