"""The SQLite writer lock: every transaction of envoi queues on one file lock, so a
writer is never starved by busy delivery workers."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from envoi.db.locking import writer_lock_path
from envoi.db.session import make_engine, make_sessionmaker, transaction

# A stand-in for two busy delivery workers: each holds SQLite's write lock through the
# writer lock file for whole units of work (commit included), with the short pause of a
# worker's database thread between two group commits.
HOG = """
import fcntl, sqlite3, sys, time
database, lock_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
connection = sqlite3.connect(database, isolation_level=None, timeout=30)
lock = open(lock_path, "ab")
until = time.monotonic() + seconds
print("ready", flush=True)
while time.monotonic() < until:
    fcntl.flock(lock, fcntl.LOCK_EX)
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO hog (at) VALUES (?)", (time.time(),))
    spin = time.monotonic() + 0.004
    while time.monotonic() < spin:
        pass
    connection.execute("COMMIT")
    fcntl.flock(lock, fcntl.LOCK_UN)
    time.sleep(0.001)
"""


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'envoi.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE hog (at REAL)")
        connection.exec_driver_sql("CREATE TABLE api (n INTEGER)")
    engine.dispose()
    return url


def test_a_transaction_holds_the_writer_lock_until_it_ends(database: str) -> None:
    engine = make_engine(database)
    path = writer_lock_path(engine)
    assert path is not None
    with path.open("ab") as other:
        with transaction(make_sessionmaker(engine)) as session:
            session.execute(text("INSERT INTO api (n) VALUES (1)"))
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again after the commit
        fcntl.flock(other, fcntl.LOCK_UN)
    engine.dispose()


def test_a_writer_gets_in_between_two_busy_workers(database: str) -> None:
    """Two processes keep SQLite's write lock nearly all the time; a writer retrying
    on SQLite's busy handler alone found it free too rarely and failed after its busy
    timeout, one queued on the lock file gets in within a few of their turns."""
    engine = make_engine(database)
    path = writer_lock_path(engine)
    assert path is not None
    database_file = database.removeprefix("sqlite:///")
    hogs = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", HOG, database_file, str(path), "6"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for hog in hogs:
            assert hog.stdout is not None
            assert hog.stdout.readline().strip() == "ready"
        sessions = make_sessionmaker(engine)
        waits = []
        for n in range(20):
            began = time.monotonic()
            with transaction(sessions) as session:
                session.execute(text("INSERT INTO api (n) VALUES (:n)"), {"n": n})
            waits.append(time.monotonic() - began)
    finally:
        for hog in hogs:
            hog.communicate(timeout=30)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM api")) == 20
        assert connection.scalar(text("SELECT count(*) FROM hog")) > 100
    assert max(waits) < 2.0
    engine.dispose()
