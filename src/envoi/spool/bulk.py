"""Batch writes of spool rows and outbox events, one statement a batch on either back-end.

On PostgreSQL a batch's rows are written in one statement, sent as one JSON document
read back as a table (`jsonb_to_recordset`). psycopg's executemany sends a statement
per row, SQLAlchemy's multi-row VALUES has thirteen thousand parameters for a
thousand spool rows (which the driver parses in Python), and text-format arrays are
escaped element by element: all cost more than the database's own work. SQLite runs
an executemany in its own process, which is cheap.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    Integer,
    Row,
    Table,
    Text,
    bindparam,
    cast,
    column,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from envoi.outbox.models import OutboxEvent
from envoi.spool.models import SpoolEntry

AnyRow = Row[*tuple[Any, ...]]

# The tables themselves, for Core executemany (the ORM's bulk paths cost more per row).
SPOOL = typed(Table, SpoolEntry.__table__)
OUTBOX = typed(Table, OutboxEvent.__table__)


def bulk_insert(
    session: Session, table: Table, rows: list[dict[str, Any]], *, return_ids: bool = False
) -> list[int]:
    """Insert rows that all have the same keys; their ids in order if `return_ids`."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        names = list(rows[0])
        source = as_table(table, names, rows)
        statement = insert(table).from_select(
            names, select(*(source.c[name] for name in names)).order_by(source.c.n)
        )
        if not return_ids:
            session.execute(statement)
            return []
        # The id sequence numbers the rows in the order the SELECT gives them, so the
        # ids sorted are the rows' ids in order (a concurrent insert may take numbers
        # in between, never reorder them).
        return sorted(session.scalars(statement.returning(table.c.id)))
    if not return_ids:
        session.execute(insert(table), rows)
        return []
    # SQLite runs an ordered RETURNING one statement per row. None is needed: the
    # transaction holds the database's write lock (BEGIN IMMEDIATE), so nobody else
    # inserts, and a rowid table numbers each new row one past its largest id.
    before = session.scalar(select(func.max(table.c.id))) or 0
    session.execute(insert(table), rows)
    ids = list(session.scalars(select(table.c.id).where(table.c.id > before).order_by("id")))
    if len(ids) != len(rows):
        raise RuntimeError(f"expected {len(rows)} new rows after id {before}, found {len(ids)}")
    return ids


def bulk_update(
    session: Session, table: Table, rows: list[dict[str, Any]], fixed: dict[str, Any]
) -> None:
    """Update rows by `id`, each with its own values (same keys in every row), and the
    `fixed` values for all."""
    if not rows:
        return
    names = [name for name in rows[0] if name != "id"]
    if session.get_bind().dialect.name == "postgresql":
        source = as_table(table, ["id", *names], rows)
        values = {name: source.c[name] for name in names}
        session.execute(update(table).where(table.c.id == source.c.id).values(values | fixed))
        return
    values = {name: bindparam(f"v_{name}") for name in names}
    statement = update(table).where(table.c.id == bindparam("v_id")).values(values | fixed)
    session.execute(statement, [{f"v_{k}": v for k, v in row.items()} for row in rows])


def as_table(table: Table, names: list[str], rows: list[dict[str, Any]]) -> Any:
    """`jsonb_to_recordset(:rows) AS v(name type, ..., n int)`: the rows as a table
    typed like `table`'s columns, `n` their position (PostgreSQL)."""
    document = [
        {"n": index, **{name: json_value(row[name]) for name in names}}
        for index, row in enumerate(rows)
    ]
    parameter = cast(bindparam(None, json.dumps(document), type_=Text()), JSONB)
    columns = [column(name, table.c[name].type) for name in names] + [column("n", Integer())]
    source = func.jsonb_to_recordset(parameter).table_valued(*columns)
    return source.render_derived(name="v", with_types=True)


def json_value(value: Any) -> Any:
    # UTCDateTime columns hold naive UTC; JSON columns take the nested value as it is.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return value
