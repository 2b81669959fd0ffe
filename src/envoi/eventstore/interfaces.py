"""What an event store offers (DuckDB today, ClickHouse later): the projector writes
through `append_outbox`, imports through `append`, the statistics engine reads through
`query`. Both backends keep `schema.COLUMNS` and answer the same SQL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from envoi.core.errors import EnvoiError

# An outbox row as the projector reads it, in `mapping.OUTBOX_COLUMNS` order: id,
# project_id, kind, occurred_at (naive UTC, a datetime or SQLite's text), campaign_id,
# email_id, profile_id, recipient, data (the JSON text).
OutboxRow = Sequence[Any]


class StoreUnavailable(EnvoiError):
    """The store cannot be opened: another process holds it, or the URL is wrong."""


class EventStore(Protocol):
    def append(self, rows: Iterable[Mapping[str, Any]], cursor: int | None = None) -> int:
        """Insert event rows (keys of `schema.NAMES`, missing ones None; ids unique
        within the call), computing `is_first` and `is_first_human`; ids already stored
        are skipped. `cursor` (the last outbox id projected) is stored in the same
        transaction. Rows inserted."""
        ...

    def append_outbox(self, rows: Iterable[OutboxRow], cursor: int | None = None) -> int:
        """`append` of outbox rows as they are read (`mapping` turns them into events
        inside the store, without a Python step per row). A GDPR `erasure` row is not
        stored but applied, in the same transaction (`mapping.Erasure`). Rows inserted."""
        ...

    def cursor(self) -> int:
        """The last outbox id projected (0 at start)."""
        ...

    def query(
        self, sql: str, parameters: Sequence[Any] = ()
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A read-only SQL query over table `events`: (column names, rows); thread-safe."""
        ...

    def reset(self) -> None:
        """Drop the events projected from the outbox (imported ones stay): a rebuild."""
        ...

    def close(self) -> None: ...
