"""The writer lock of a SQLite database: one exclusive `flock` on a file beside it, that
every envoi transaction takes before SQLite's own write lock (`BEGIN IMMEDIATE`).

SQLite lets one writer in at a time and makes the others retry with sleeps of 1, 2,
5 ... 100 ms. Busy delivery workers hold its lock nearly all the time, handing it to
each other at once: a writer that only retried found it free too rarely, and an API
request failed after the 30 s busy timeout ("database is locked"); the workers
themselves lost nearly half their database time in those sleeps. Waiting on the
kernel's lock instead, a writer is woken as soon as the holder is done.

flock locks belong to an open file description, not to a process: each connection
(and the delivery worker's database thread) opens the file for itself, or two
connections of one process would not exclude each other.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import Engine


def writer_lock_path(engine: Engine | None) -> Path | None:
    """`NAME-writers.lock` beside a SQLite database file; None for other stores."""
    if engine is None or engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).with_name(Path(database).name + "-writers.lock")


class WriterLock:
    """The lock file opened once, locked and unlocked many times."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.held = False

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Closing the file releases the lock too."""
        fd, self._fd = self._fd, -1
        self.held = False
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        # A connection dropped without its pool closing it (an engine never disposed):
        # its lock file goes with it, quietly, as SQLite's own handle does.
        self.close()
