"""The database thread's hand-written statements (`spool.bulk`, `spool.leasing`,
`spool.recording`): they store exactly what SQLAlchemy's own statements store, read
back the same through the ORM, and are planned on the indexes they are written for."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event, insert, select, text
from sqlalchemy.orm import Session

from envoi.db.base import utcnow
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.outbox.models import OutboxEvent
from envoi.projects.services import create_project
from envoi.spool import checks, duplicates, leasing, recording
from envoi.spool.bulk import (
    OUTBOX,
    SPOOL,
    _converter,
    _orm_insert,
    _orm_update,
    bulk_insert,
    bulk_update,
    dumps,
)
from envoi.spool.models import SpoolEntry
from envoi.testing.databases import postgres_server_url, temporary_postgres_database
from tests.conftest import ApiProject, Backend

# Times that exercise the storage format: no microseconds, another time zone, None.
TIMES = (
    datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
    datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
)


def spool_row(project_id: int, index: int) -> dict[str, Any]:
    """A spool row with every column a build writes, and some it does not."""
    time = TIMES[index % len(TIMES)]
    return {
        "project_id": project_id,
        "campaign_id": None,
        "email_id": 1,
        "profile_id": None,
        "recipient": f"fast{index}@example.com",
        "domain": "example.com",
        "params": {"name": "Zoë", "n": index, "nested": [1, None, {"x": True}]},
        "priority": index,
        "state": "blocked",  # never claimable by other tests' workers
        "reason": "external_check",
        "not_before": time,
        "attempts": 0,
        "first_attempt_at": None if index % 2 else time,
        "uncertain": bool(index % 2),
        "language": None,
        "updated_at": time,
    }


def raw(session: Session, table: str, ids: list[int], columns: list[str]) -> list[tuple[Any, ...]]:
    """The rows as the driver reads them (no SQLAlchemy type processing), by id."""
    listed = ", ".join(str(int(i)) for i in ids)
    sql = f"SELECT {', '.join(columns)} FROM {table} WHERE id IN ({listed}) ORDER BY id"  # noqa: S608
    return [tuple(row) for row in session.connection().exec_driver_sql(sql)]


SPOOL_COLUMNS = [c.name for c in SPOOL.c if c.name != "id"]
OUTBOX_COLUMNS = [c.name for c in OUTBOX.c if c.name != "id"]


def test_bulk_writes_store_what_sqlalchemy_stores(backend: Backend, project: ApiProject) -> None:
    rows = [spool_row(project.id, index) for index in range(6)]
    with transaction(backend.sessions) as session:
        fast = bulk_insert(session, SPOOL, rows, return_ids=True)
        slow = _orm_insert(session, SPOOL, rows, return_ids=True)
        assert len(fast) == len(slow) == len(rows)
        assert fast == sorted(fast)
        assert raw(session, "spool", fast, SPOOL_COLUMNS) == raw(
            session, "spool", slow, SPOOL_COLUMNS
        )
        # Each its own values (a delivery's) and fixed ones (the lease given back).
        now = TIMES[1]
        changes = [
            {"id": i, "state": "delivered", "smtp_code": 250, "first_attempt_at": TIMES[n % 3]}
            for n, i in enumerate(fast)
        ]
        fixed = {"lease_owner": None, "lease_until": None, "updated_at": now}
        bulk_update(session, SPOOL, changes, fixed)
        _orm_update(
            session, SPOOL, [c | {"id": s} for c, s in zip(changes, slow, strict=True)], fixed
        )
        assert raw(session, "spool", fast, SPOOL_COLUMNS) == raw(
            session, "spool", slow, SPOOL_COLUMNS
        )
        events = [
            {
                "project_id": project.id,
                "kind": "delivered",
                "occurred_at": TIMES[n % 3],
                "campaign_id": None,
                "email_id": 1,
                "profile_id": None,
                "recipient": f"fast{n}@example.com",
                "data": {"send_id": i, "tags": ["a", "é"], "uncertain": False, "x": None},
            }
            for n, i in enumerate(fast)
        ]
        bulk_insert(session, OUTBOX, events)
        _orm_insert(session, OUTBOX, events, return_ids=False)
        stored = session.scalars(
            select(OutboxEvent.id)
            .where(OutboxEvent.project_id == project.id)
            .order_by(OutboxEvent.id)
        ).all()
        half = len(stored) // 2
        assert raw(session, "outbox", list(stored[:half]), OUTBOX_COLUMNS) == raw(
            session, "outbox", list(stored[half:]), OUTBOX_COLUMNS
        )
    # Read back through the ORM: the same aware times, JSON and booleans.
    with backend.sessions() as session:
        read = session.scalars(
            select(SpoolEntry).where(SpoolEntry.id.in_(fast)).order_by(SpoolEntry.id)
        ).all()
        for entry, row, change in zip(read, rows, changes, strict=True):
            assert entry.not_before == row["not_before"]
            assert entry.first_attempt_at == change["first_attempt_at"]
            assert entry.updated_at == now
            assert entry.params == row["params"]
            assert entry.uncertain is row["uncertain"]
            assert (entry.state, entry.smtp_code, entry.lease_owner) == ("delivered", 250, None)
        event_rows = session.scalars(
            select(OutboxEvent).where(OutboxEvent.project_id == project.id).order_by(OutboxEvent.id)
        ).all()
        assert [e.occurred_at for e in event_rows[:half]] == [e["occurred_at"] for e in events]
        assert [e.data for e in event_rows[:half]] == [e["data"] for e in events]


def test_sqlite_times_are_sqlalchemys_datetime_strings() -> None:
    convert = _converter(create_engine("sqlite://").dialect, SPOOL.c.not_before)
    assert [convert(time) for time in TIMES] == [
        "2030-01-02 03:04:05.000000",
        "2030-01-02 01:04:05.123456",
        "0999-12-31 23:59:59.000001",
    ]


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("not_before", [*TIMES, None]),
        ("params", [{"a": [1, "é", None]}, {}, None]),
        ("uncertain", [True, False, None]),
        ("recipient", ["a@b.example.com", None]),
        ("attempts", [0, 7, None]),
    ],
)
def test_converters_match_sqlalchemy_bind_processors(column: str, values: list[Any]) -> None:
    for url in ("sqlite://", "postgresql+psycopg://"):
        dialect = create_engine(url).dialect  # never connects
        impl = SPOOL.c[column].type.dialect_impl(dialect)
        processor: Callable[[Any], Any] = impl.bind_processor(dialect) or same
        convert = _converter(dialect, SPOOL.c[column])
        for value in values:
            assert plain(convert(value)) == plain(processor(value)), (dialect.name, value)


def same(value: Any) -> Any:
    return value


def plain(value: Any) -> Any:
    """psycopg's `Jsonb` wrapper compares by identity: its content."""
    return getattr(value, "obj", value)


def test_naive_times_are_refused() -> None:
    convert = _converter(create_engine("sqlite://").dialect, SPOOL.c.not_before)
    with pytest.raises(ValueError, match="naive"):
        convert(datetime(2030, 1, 1))  # noqa: DTZ001


def test_a_batch_without_a_defaulted_column_gets_sqlalchemys_default(
    backend: Backend, project: ApiProject
) -> None:
    rows = [spool_row(project.id, index) for index in range(3)]
    for row in rows:
        del row["params"], row["updated_at"]  # both have Python-side defaults
    before = utcnow()
    with transaction(backend.sessions) as session:
        ids = bulk_insert(session, SPOOL, rows, return_ids=True)
        bulk_update(session, SPOOL, [{"id": i, "attempts": 3} for i in ids], {})  # onupdate
    with backend.sessions() as session:
        read = session.scalars(select(SpoolEntry).where(SpoolEntry.id.in_(ids))).all()
        assert [entry.params for entry in read] == [{}, {}, {}]
        assert all(entry.updated_at >= before and entry.attempts == 3 for entry in read)


def plan(session: Session, sql: str, parameters: dict[str, Any]) -> str:
    explain = "EXPLAIN QUERY PLAN " if session.get_bind().dialect.name == "sqlite" else "EXPLAIN "
    rows = session.connection().exec_driver_sql(explain + sql, parameters)
    return "\n".join(str(row[-1]) for row in rows)


def test_lease_statements_find_rows_by_primary_key(backend: Backend) -> None:
    """Not by walking `ix_spool_claim`'s leased rows (see `leasing._statement`)."""
    with transaction(backend.sessions) as session:
        dialect = session.get_bind().dialect
        postgres = dialect.name == "postgresql"
        if postgres:  # a small test table is cheapest read whole: ask for an index
            session.execute(text("SET LOCAL enable_seqscan = off"))
        ids = [1, 2, 3] if postgres else "[1, 2, 3]"
        now = utcnow().replace(tzinfo=None) if postgres else "2030-01-01 00:00:00.000000"
        parameters = {"ids": ids, "owner": "w", "until": now, "now": now}
        for sql in (
            leasing._statement(dialect, "mark"),
            leasing._statement(dialect, "release"),
            recording._held_sql(dialect),
        ):
            found = plan(session, sql, parameters)
            assert ("pk_spool" if postgres else "INTEGER PRIMARY KEY") in found, found
            assert "ix_spool_claim" not in found, found
        session.rollback()


# --- PostgreSQL: the per-address probes --------------------------------------------------


@pytest.fixture(scope="module")
def stale_statistics() -> Iterator[tuple[Any, int]]:
    """A PostgreSQL database whose spool statistics predate a project's 20,000 rows
    (another project's rows were analyzed): (sessions, the project's id)."""
    with temporary_postgres_database(postgres_server_url()) as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        now = utcnow()
        with transaction(sessions) as session:
            session.execute(text("ALTER TABLE spool SET (autovacuum_enabled = false)"))
            other = create_project(session, "other", login=f"o-{secrets.token_hex(4)}").id
            new = create_project(session, "new", login=f"n-{secrets.token_hex(4)}").id
            session.execute(
                insert(SpoolEntry),
                [spool_row(other, i) | {"state": "queued"} for i in range(2000)],
            )
        with transaction(sessions) as session:
            session.execute(text("ANALYZE spool"))
        with transaction(sessions) as session:
            rows = [
                spool_row(new, i)
                | {
                    "recipient": f"user{i % 10_000}@example.com",
                    "state": "delivered" if i % 3 else "queued",
                    "updated_at": now,
                    "campaign_id": None,
                }
                for i in range(20_000)
            ]
            bulk_insert(session, SPOOL, rows)
        try:
            yield sessions, new
        finally:
            engine.dispose()


def captured_plan(sessions: Any, lookup: Any) -> str:
    """The plan of the last statement `lookup(session)` runs."""
    with transaction(sessions) as session:
        statements: list[tuple[str, Any]] = []
        connection = session.connection()

        def keep(*args: Any) -> None:
            statements.append((args[2], args[3]))

        event.listen(connection, "before_cursor_execute", keep)
        lookup(session)
        event.remove(connection, "before_cursor_execute", keep)
        sql, parameters = statements[-1]
        found = plan(session, sql, parameters)
        session.rollback()
        return found


@pytest.mark.parametrize("lookup", ["last_delivered", "mailed"])
def test_postgres_probes_the_recipient_index_with_stale_statistics(
    stale_statistics: tuple[Any, int], lookup: str
) -> None:
    sessions, project_id = stale_statistics
    addresses = [f"user{i}@example.com" for i in range(0, 10_000, 10)]

    def run(session: Session) -> None:
        if lookup == "last_delivered":
            since = utcnow() - timedelta(hours=1)
            found = checks._last_delivered(session, project_id, addresses, since)
            assert len(found) == len(addresses)
        else:
            campaign: Any = type("C", (), {"project_id": project_id, "id": 0})()
            assert duplicates._mailed(session, campaign, addresses) == set()

    found = captured_plan(sessions, run)
    assert "ix_spool_recipient" in found, found
    assert "ix_spool_project_id" not in found, found
    assert "ix_spool_claim" not in found, found


def test_json_columns_are_encoded_as_json_dumps_encodes() -> None:
    values: list[Any] = [
        {"name": "Zoë", "n": [1, 2.5, None, True, float("inf")], "q": 'a"b\\c\u2028'},
        {"nested": {"deep": [{"x": {}}]}},
        [],
        None,
        "text",
        12,
    ]
    for value in values:
        assert dumps(value) == json.dumps(value)
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"when": utcnow()})
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular reference"):
        dumps(circular)
    assert dumps({"after": "errors"}) == '{"after": "errors"}'
