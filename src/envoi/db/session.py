"""Engines and sessions for the OLTP store, and the migration entry point."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from envoi.db.locking import WriterLock, writer_lock_path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Pick the driver envoi ships with: psycopg 3 for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


# Set on a connection whose owner takes the writer lock itself, around its whole unit of
# work (commit included): the delivery worker's database thread.
OWN_WRITER_LOCK = "envoi.own_writer_lock"
_LOCK = "envoi.writer_lock"


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    lock_path = writer_lock_path(engine)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if lock_path is not None and not conn.info.get(OWN_WRITER_LOCK):
            # `db.locking`: queue on the kernel's lock rather than on SQLite's retries.
            lock = conn.info.get(_LOCK)
            if lock is None:
                lock = conn.info[_LOCK] = WriterLock(lock_path)
            lock.acquire()
        # Take the write lock up front: a deferred transaction that reads and then
        # writes fails with SQLITE_BUSY instead of waiting when another writer won.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    # Released just before the commit (SQLAlchemy's event comes first): a writer woken
    # that early finds SQLite's lock still taken and retries once, a millisecond later.
    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: Any) -> None:
        _release(conn.info)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        _release(record.info)  # never left held by a pooled connection (a failed BEGIN)

    @event.listens_for(engine, "close")
    @event.listens_for(engine, "invalidate")
    def _on_close(_dbapi_connection: Any, record: Any, *_exception: Any) -> None:
        lock: WriterLock | None = record.info.pop(_LOCK, None)
        if lock is not None:
            lock.close()

    return engine


def _release(info: dict[str, Any]) -> None:
    lock: WriterLock | None = info.get(_LOCK)
    if lock is not None:
        lock.release()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (what `envoi serve` and `envoi db upgrade` do)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
