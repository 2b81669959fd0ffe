"""Where the projector's time goes, statement by statement.

    .venv/bin/python bench/projector_profile.py [--events 1000000] [--batches 4]
        [--outbox $TMPDIR/envoi-profile/outbox.db] [--set "SET checkpoint_threshold='1GB'"]

Fills a SQLite outbox with `bench/projector.py`'s events (kept at `--outbox`, and
reused by the next run), reads `--batches` batches, then stages and writes them one
after the other (no overlap, unlike the projector), timing each DuckDB statement and
appender call of the store's staging (S) and writing (W) connections: wall and
process CPU seconds (DuckDB's own threads included), summed over the batches. `--set`
runs a statement on the store first (a DuckDB setting to try). Prints the read, stage
and write totals, then the statements, the costliest first. Read the figures with
docs/benchmarks.md (projector).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from projector import fill  # bench/projector.py, beside this script

from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.mapping import OutboxChunk
from envoi.eventstore.projector import BATCH
from envoi.eventstore.reading import OutboxReader, Span
from envoi.projects.services import create_project

T = TypeVar("T")
# (connection, statement) -> [wall seconds, CPU seconds, calls]
Times = defaultdict[tuple[str, str], list[float]]


def timed(times: Times, key: tuple[str, str], call: Callable[[], T]) -> T:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    entry = times[key]
    entry[0] += time.perf_counter() - wall
    entry[1] += time.process_time() - cpu
    entry[2] += 1
    return result


class TimedAppender:
    def __init__(self, inner: Any, times: Times, tag: str, table: str) -> None:
        self._inner, self._times, self._key = inner, times, (tag, f"appender {table}")

    def append_rows(self, rows: Sequence[Any]) -> None:
        timed(self._times, self._key, lambda: self._inner.append_rows(rows))

    def flush(self) -> None:
        timed(self._times, self._key, self._inner.flush)


class TimedCursor:
    """A DuckDB cursor whose statements and appenders are timed into `times`."""

    def __init__(self, inner: Any, times: Times, tag: str) -> None:
        self._inner, self._times, self._tag = inner, times, tag

    def execute(self, sql: str, *args: Any) -> Any:
        key = (self._tag, " ".join(sql.split())[:100])
        return timed(self._times, key, lambda: self._inner.execute(sql, *args))

    def appender(self, table: str) -> TimedAppender:
        return TimedAppender(self._inner.appender(table), self._times, self._tag, table)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def outbox(path: Path, events: int) -> str:
    """The URL of a SQLite outbox of `events` events at `path` (filled if new)."""
    url = f"sqlite:///{path}"
    if path.exists():
        return url
    path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    engine = make_engine(url)
    with transaction(make_sessionmaker(engine)) as session:
        project_id = create_project(session, "Bench", login="bench").id
    print(f"filling {path} with {events} events")
    fill(engine, events, project_id)
    engine.dispose()
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=4)
    default_outbox = Path(tempfile.gettempdir()) / "envoi-profile" / "outbox.db"
    parser.add_argument("--outbox", type=Path, default=default_outbox)
    parser.add_argument("--set", action="append", default=[], dest="settings")
    args = parser.parse_args()
    engine = make_engine(outbox(args.outbox, args.events))
    reader = OutboxReader(engine)
    batches: list[tuple[list[OutboxChunk], int]] = []
    wall, cpu = time.perf_counter(), time.process_time()
    after = 0
    for _ in range(args.batches):
        span = Span(after, BATCH)
        ids = reader.ids(span)
        if not ids:
            break
        batches.append((list(reader.chunks(span, ids)), ids[-1]))
        after = ids[-1]
    print(f"read: wall {time.perf_counter() - wall:.2f} s, cpu {time.process_time() - cpu:.2f} s")
    engine.dispose()

    store_path = args.outbox.with_name("events.duckdb")
    for old in store_path.parent.glob("events.duckdb*"):
        old.unlink()
    store = DuckDBStore(store_path)
    for setting in args.settings:
        store._writer.execute(setting)
    times: Times = defaultdict(lambda: [0.0, 0.0, 0])
    # The store's two connections, timed (a profiler's privilege).
    store._writer = TimedCursor(store._writer, times, "W")  # type: ignore[assignment]
    store._stager = TimedCursor(store._stager, times, "S")  # type: ignore[assignment]
    totals = {"stage": [0.0, 0.0], "write": [0.0, 0.0]}
    events = 0
    for chunks, last in batches:
        wall, cpu = time.perf_counter(), time.process_time()
        staged = store.stage_outbox(chunks)
        totals["stage"][0] += time.perf_counter() - wall
        totals["stage"][1] += time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        events += store.append_staged(staged, last)
        totals["write"][0] += time.perf_counter() - wall
        totals["write"][1] += time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    store.close()
    print(f"events: {events}")
    for name, (seconds, cpu_seconds) in totals.items():
        print(f"{name}: wall {seconds:.2f} s, cpu {cpu_seconds:.2f} s")
    print(f"close: wall {time.perf_counter() - wall:.2f} s, cpu {time.process_time() - cpu:.2f} s")
    print("conn   wall    cpu  calls  statement")
    for (tag, label), (seconds, cpu_seconds, calls) in sorted(
        times.items(), key=lambda item: -item[1][0]
    ):
        if seconds >= 0.01:
            print(f"{tag:4s} {seconds:6.2f} {cpu_seconds:6.2f} {calls:6.0f}  {label}")


if __name__ == "__main__":
    main()
