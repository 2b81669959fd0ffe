"""Fetch one row of the authenticated project by id: the same rule for every resource."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from envoi.core.errors import NotFound
from envoi.db.base import Base

# Ids are INTEGER columns: a larger number names no row, and PostgreSQL refuses to
# compare one with an INTEGER, so such an id is answered without asking the database.
DB_INT_MAX = 2**31 - 1

RowT = TypeVar("RowT", bound=Base)


def is_db_id(value: int) -> bool:
    return 1 <= value <= DB_INT_MAX


def get_owned(
    session: Session,
    model: type[RowT],
    project_id: int,
    row_id: int,
    noun: str,
    *,
    options: Sequence[Any] = (),
    lock: bool = False,
) -> RowT:
    """The row `row_id` of `model` if it belongs to `project_id`; otherwise NotFound.

    Another project's row answers exactly like a missing one, so ids leak nothing.
    `lock` takes the row lock (SELECT ... FOR UPDATE on PostgreSQL) before reading.
    """
    row = None
    if is_db_id(row_id):
        row = session.get(model, row_id, options=options, with_for_update=lock or None)
    if row is None or getattr(row, "project_id", None) != project_id:
        raise NotFound(f"{noun} {row_id} not found")
    return row
