"""Batch writes of spool rows and outbox events, one statement a batch on either back-end,
and what the sending path's hand-written statements share.

On PostgreSQL a batch's rows are written in one statement, sent as one JSON document
read back as a table (`jsonb_to_recordset`). psycopg's executemany sends a statement
per row, SQLAlchemy's multi-row VALUES has thirteen thousand parameters for a
thousand spool rows (which the driver parses in Python), and text-format arrays are
escaped element by element: all cost more than the database's own work. SQLite runs
an executemany in its own process, which is cheap.

The statements are SQL text built once per shape (table, columns), sent to the driver
with `Connection.exec_driver_sql`, their values converted here as SQLAlchemy's bind
processors of the columns' types would (`sqlite_datetime` is `UTCDateTime` then
SQLite's DATETIME string, JSON is `json.dumps`, booleans 0 / 1): SQLAlchemy's own
executemany builds and processes each row's parameters in Python (`construct_params`,
a processor call per value), which cost more than SQLite's work on the database
thread of a delivery worker. A batch that leaves out a column with a Python-side
default (or, for an update, an `onupdate`), or sets one to a SQL expression, takes
SQLAlchemy's path, which fills them in.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    Boolean,
    ColumnElement,
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
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import JSON

from envoi.db.base import UTCDateTime
from envoi.outbox.models import OutboxEvent
from envoi.spool.models import SpoolEntry

AnyRow = Row[*tuple[Any, ...]]
Converter = Callable[[Any], Any]

# The tables themselves, for Core executemany (the ORM's bulk paths cost more per row).
SPOOL = typed(Table, SpoolEntry.__table__)
OUTBOX = typed(Table, OutboxEvent.__table__)


def bulk_insert(
    session: Session, table: Table, rows: list[dict[str, Any]], *, return_ids: bool = False
) -> list[int]:
    """Insert rows that all have the same keys; their ids in order if `return_ids`."""
    if not rows:
        return []
    connection = session.connection()
    names = tuple(rows[0])
    if not _direct(table, names, insert=True):
        return _orm_insert(session, table, rows, return_ids=return_ids)
    if connection.dialect.name == "postgresql":
        sql = _pg_insert_sql(connection.dialect, table, names, return_ids)
        result = connection.exec_driver_sql(sql, {"rows": _document(table, names, rows, True)})
        if not return_ids:
            return []
        # The id sequence numbers the rows in the order the SELECT gives them, so the
        # ids sorted are the rows' ids in order (a concurrent insert may take numbers
        # in between, never reorder them).
        return sorted(row[0] for row in result)
    plan = _sqlite_insert_plan(connection.dialect, table, names)
    if not return_ids:
        connection.exec_driver_sql(plan.sql, plan.parameters(rows))
        return []
    # SQLite runs an ordered RETURNING one statement per row. None is needed: the
    # transaction holds the database's write lock (BEGIN IMMEDIATE), so nobody else
    # inserts, and a rowid table numbers each new row one past its largest id.
    quoted = _quoted(connection.dialect, table)
    before = connection.exec_driver_sql(f"SELECT max(id) FROM {quoted}").scalar() or 0  # noqa: S608
    connection.exec_driver_sql(plan.sql, plan.parameters(rows))
    count, last = connection.exec_driver_sql(
        f"SELECT count(*), max(id) FROM {quoted} WHERE id > ?",  # noqa: S608
        (before,),
    ).one()
    if count != len(rows) or last != before + len(rows):
        raise RuntimeError(f"expected {len(rows)} new rows after id {before}, found {count}")
    return list(range(before + 1, before + len(rows) + 1))


def bulk_update(
    session: Session, table: Table, rows: list[dict[str, Any]], fixed: dict[str, Any]
) -> None:
    """Update rows by `id`, each with its own values (same keys in every row), and the
    `fixed` values for all."""
    if not rows:
        return
    names = tuple(name for name in rows[0] if name != "id" and name not in fixed)
    connection = session.connection()
    if not _direct(table, (*names, *fixed), insert=False) or any(
        isinstance(value, ColumnElement) for value in fixed.values()
    ):
        _orm_update(session, table, rows, fixed)
        return
    dialect = connection.dialect
    fixed_names = tuple(fixed)
    fixed_values = [_converter(dialect, table.c[name])(value) for name, value in fixed.items()]
    if dialect.name == "postgresql":
        sql = _pg_update_sql(dialect, table, names, fixed_names)
        parameters = {f"f{index}": value for index, value in enumerate(fixed_values)}
        parameters["rows"] = _document(table, ("id", *names), rows, False)
        connection.exec_driver_sql(sql, parameters)
        return
    plan = _sqlite_update_plan(dialect, table, names, fixed_names)
    columns = plan.columns(rows)
    count = len(rows)
    every = [repeat(value, count) for value in fixed_values]
    ids = [row["id"] for row in rows]
    connection.exec_driver_sql(plan.sql, list(zip(*columns, *every, ids, strict=True)))


def _direct(table: Table, names: tuple[str, ...], *, insert: bool) -> bool:
    """Whether the written columns leave no Python-side default for SQLAlchemy to fill."""
    given = set(names)
    for col in table.c:
        default = col.default if insert else col.onupdate
        if default is not None and col.name not in given:
            return False
    return True


def _orm_insert(
    session: Session, table: Table, rows: list[dict[str, Any]], *, return_ids: bool
) -> list[int]:
    """`bulk_insert` through SQLAlchemy, which fills in Python-side defaults."""
    if session.get_bind().dialect.name == "postgresql":
        names = list(rows[0])
        source = as_table(table, names, rows)
        statement = insert(table).from_select(
            names, select(*(source.c[name] for name in names)).order_by(source.c.n)
        )
        if not return_ids:
            session.execute(statement)
            return []
        return sorted(session.scalars(statement.returning(table.c.id)))
    if not return_ids:
        session.execute(insert(table), rows)
        return []
    before = session.scalar(select(func.max(table.c.id))) or 0
    session.execute(insert(table), rows)
    ids = list(session.scalars(select(table.c.id).where(table.c.id > before).order_by("id")))
    if len(ids) != len(rows):
        raise RuntimeError(f"expected {len(rows)} new rows after id {before}, found {len(ids)}")
    return ids


def _orm_update(
    session: Session, table: Table, rows: list[dict[str, Any]], fixed: dict[str, Any]
) -> None:
    """`bulk_update` through SQLAlchemy, which fills in `onupdate` values."""
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


def _json_times(values: list[Any]) -> list[Any]:
    """`json_value` of each, a batch's repeated time (`now`) converted once."""
    converted: list[Any] = []
    last: Any = None
    done: Any = None
    for value in values:
        if value is not last:
            last = value
            if isinstance(value, datetime) and value.tzinfo is UTC:
                done = value.isoformat()[:-6]  # without its "+00:00"
            else:
                done = json_value(value)
        converted.append(done)
    return converted


def json_value(value: Any) -> Any:
    # UTCDateTime columns hold naive UTC; JSON columns take the nested value as it is.
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return value


# --- statements sent to the driver ----------------------------------------------------------


def execute(session: Session, sql: str, parameters: dict[str, Any]) -> Any:
    """Run SQL text on the session's connection, in its transaction; the cursor result."""
    return session.connection().exec_driver_sql(sql, parameters)


def ids_parameter(dialect: Dialect, ids: list[int]) -> Any:
    """The value of the `ids` placeholder of `id_in` (`checks.any_of`'s, by hand)."""
    return list(ids) if dialect.name == "postgresql" else json.dumps(list(ids))


def id_in(dialect: Dialect, qualified: str = "id") -> str:
    """`qualified IN :ids`, one parameter however many ids (see `ids_parameter`)."""
    if dialect.name == "postgresql":
        return f"{qualified} = ANY(%(ids)s::BIGINT[])"
    return f"{qualified} IN (SELECT value FROM json_each(:ids))"  # noqa: S608


def placeholder(dialect: Dialect, name: str) -> str:
    """`:name` (sqlite3's named style) or `%(name)s` (psycopg's)."""
    return f"%({name})s" if dialect.name == "postgresql" else f":{name}"


def sqlite_datetime(value: datetime | None) -> str | None:
    """A `UTCDateTime` as SQLite stores it: SQLAlchemy's DATETIME string of naive UTC,
    `YYYY-MM-DD HH:MM:SS.ffffff` (microseconds always written)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # `YYYY-MM-DD HH:MM:SS.ffffff+00:00` without its offset.
    return value.isoformat(" ", "microseconds")[:26]


def datetime_value(dialect: Dialect, value: datetime) -> Any:
    """A `UTCDateTime` parameter of SQL text: naive UTC for psycopg, a string for SQLite."""
    if dialect.name == "postgresql":
        return value.astimezone(UTC).replace(tzinfo=None)
    return sqlite_datetime(value)


def result_converter(dialect: Dialect, table: Table, name: str) -> Converter:
    """What SQLAlchemy does to a value of column `name` it reads (identity if nothing)."""
    key = ("result", dialect.name, table.name, name)
    converter = _CONVERTERS.get(key)
    if converter is None:
        impl = table.c[name].type.dialect_impl(dialect)
        processor = impl.result_processor(dialect, None)
        converter = _CONVERTERS[key] = processor or _same
    return converter


def _same(value: Any) -> Any:
    return value


def _json_dumps() -> Converter:
    """`json.dumps` with its default arguments, for many small values a batch.

    `json.dumps` builds its C encoder (`c_make_encoder`, with the same arguments) anew
    on every call, a third of the time it takes on a spool row's parameters or an
    event's data; this one is built once, and again after a failed call (its
    circular-reference markers may be left dirty). Checked against `json.dumps`
    here: where the C encoder is missing or encodes differently, `json.dumps` itself."""
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:
        return json.dumps

    def build() -> Any:
        encoder = json.JSONEncoder()
        return make_encoder(
            {},
            encoder.default,
            json.encoder.encode_basestring_ascii,
            None,  # indent
            encoder.key_separator,
            encoder.item_separator,
            False,  # sort_keys
            False,  # skipkeys
            True,  # allow_nan
        )

    encode = build()

    def dumps(value: Any) -> str:
        nonlocal encode
        try:
            return "".join(encode(value, 0))
        except BaseException:
            encode = build()
            raise

    samples: list[Any] = [
        {"a": [1, 2.5, None, True, 'é\n"x\u2028'], "b": {"c": -1e300, "d": ""}},
        [],
        {},
        None,
        "s",
    ]
    try:
        same = all(dumps(value) == json.dumps(value) for value in samples)
    except Exception:  # a C encoder of another Python version, say
        same = False
    return dumps if same else json.dumps


dumps = _json_dumps()


def _sqlite_bool(value: Any) -> Any:
    return None if value is None else int(value)


def _converter(dialect: Dialect, col: Any) -> Converter:
    """What SQLAlchemy's bind processor does to a value of `col` (identity if nothing)."""
    key = ("bind", dialect.name, col.table.name, col.name)
    converter = _CONVERTERS.get(key)
    if converter is not None:
        return converter
    type_ = col.type
    impl = type_.dialect_impl(dialect)
    if dialect.name == "sqlite" and isinstance(type_, UTCDateTime):
        converter = sqlite_datetime
    elif dialect.name == "sqlite" and isinstance(impl, JSON):
        converter = getattr(dialect, "_json_serializer", None) or dumps
    elif dialect.name == "sqlite" and isinstance(impl, Boolean):
        converter = _sqlite_bool
    else:
        converter = impl.bind_processor(dialect) or _same
    _CONVERTERS[key] = converter
    return converter


_CONVERTERS: dict[tuple[str, ...], Converter] = {}


@dataclass(frozen=True)
class _Plan:
    """SQLite: SQL text and the converters of its per-row columns, in order."""

    sql: str
    names: tuple[str, ...]
    converters: tuple[Converter | None, ...]

    def columns(self, rows: list[dict[str, Any]]) -> list[list[Any]]:
        columns = []
        for name, converter in zip(self.names, self.converters, strict=True):
            values = [row[name] for row in rows]
            columns.append(values if converter is None else _convert(converter, values))
        return columns

    def parameters(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return list(zip(*self.columns(rows), strict=True))


def _convert(converter: Converter, values: list[Any]) -> list[Any]:
    if converter is not sqlite_datetime:
        return list(map(converter, values))
    # A batch's times are mostly one value (`now`): each is converted once.
    converted: list[Any] = []
    last: Any = None
    done: Any = None
    for value in values:
        if value is not last:
            last, done = value, sqlite_datetime(value)
        converted.append(done)
    return converted


_PLANS: dict[tuple[Any, ...], _Plan] = {}
_SQL: dict[tuple[Any, ...], str] = {}


def _quoted(dialect: Dialect, table: Table) -> str:
    return dialect.identifier_preparer.format_table(table)


def _column_list(dialect: Dialect, names: tuple[str, ...]) -> str:
    return ", ".join(dialect.identifier_preparer.quote(name) for name in names)


def _converters(dialect: Dialect, table: Table, names: tuple[str, ...]) -> tuple[Any, ...]:
    found = []
    for name in names:
        converter = _converter(dialect, table.c[name])
        found.append(None if converter is _same else converter)
    return tuple(found)


def _sqlite_insert_plan(dialect: Dialect, table: Table, names: tuple[str, ...]) -> _Plan:
    key = ("insert", table.name, names)
    plan = _PLANS.get(key)
    if plan is None:
        marks = ", ".join("?" for _ in names)
        sql = (
            f"INSERT INTO {_quoted(dialect, table)} ({_column_list(dialect, names)}) "  # noqa: S608
            f"VALUES ({marks})"
        )
        plan = _PLANS[key] = _Plan(sql, names, _converters(dialect, table, names))
    return plan


def _sqlite_update_plan(
    dialect: Dialect, table: Table, names: tuple[str, ...], fixed: tuple[str, ...]
) -> _Plan:
    key = ("update", table.name, names, fixed)
    plan = _PLANS.get(key)
    if plan is None:
        quote = dialect.identifier_preparer.quote
        sets = ", ".join(f"{quote(name)} = ?" for name in (*names, *fixed))
        sql = f"UPDATE {_quoted(dialect, table)} SET {sets} WHERE id = ?"  # noqa: S608
        plan = _PLANS[key] = _Plan(sql, names, _converters(dialect, table, names))
    return plan


def _pg_recordset(dialect: Dialect, table: Table, names: tuple[str, ...], numbered: bool) -> str:
    """`jsonb_to_recordset(%(rows)s::jsonb) AS v(name type, ...[, n INTEGER])`."""
    quote = dialect.identifier_preparer.quote
    typed_names = [f"{quote(name)} {table.c[name].type.compile(dialect)}" for name in names]
    if numbered:
        typed_names.append("n INTEGER")
    return f"jsonb_to_recordset(%(rows)s::jsonb) AS v({', '.join(typed_names)})"


def _pg_insert_sql(dialect: Dialect, table: Table, names: tuple[str, ...], return_ids: bool) -> str:
    key = ("pg-insert", table.name, names, return_ids)
    sql = _SQL.get(key)
    if sql is None:
        quote = dialect.identifier_preparer.quote
        selected = ", ".join(f"v.{quote(name)}" for name in names)
        sql = (
            f"INSERT INTO {_quoted(dialect, table)} ({_column_list(dialect, names)}) "  # noqa: S608
            f"SELECT {selected} FROM {_pg_recordset(dialect, table, names, True)} ORDER BY v.n"
        )
        if return_ids:
            sql += " RETURNING id"
        _SQL[key] = sql
    return sql


def _pg_update_sql(
    dialect: Dialect, table: Table, names: tuple[str, ...], fixed: tuple[str, ...]
) -> str:
    key = ("pg-update", table.name, names, fixed)
    sql = _SQL.get(key)
    if sql is None:
        quote = dialect.identifier_preparer.quote
        sets = [f"{quote(name)} = v.{quote(name)}" for name in names]
        # Each fixed value's placeholder with the cast SQLAlchemy gives it
        # (`%(f0)s::VARCHAR`: no length, which would truncate instead of failing).
        sets += [
            f"{quote(name)} = "
            + str(bindparam(f"f{index}", type_=table.c[name].type).compile(dialect=dialect))
            for index, name in enumerate(fixed)
        ]
        recordset = _pg_recordset(dialect, table, ("id", *names), False)
        sql = (
            f"UPDATE {_quoted(dialect, table)} SET {', '.join(sets)} "  # noqa: S608
            f"FROM {recordset} WHERE {_quoted(dialect, table)}.id = v.id"
        )
        _SQL[key] = sql
    return sql


def _document(
    table: Table, names: tuple[str, ...], rows: list[dict[str, Any]], numbered: bool
) -> str:
    """The rows as a JSON array of objects for `jsonb_to_recordset` (PostgreSQL);
    `n`, their position, when `numbered`."""
    columns = []
    for name in names:
        values = [row[name] for row in rows]
        if isinstance(table.c[name].type, UTCDateTime):
            values = _json_times(values)
        columns.append(values)
    keys = (*names, "n") if numbered else names
    if numbered:
        columns.append(list(range(len(rows))))
    return json.dumps(
        [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]
    )
