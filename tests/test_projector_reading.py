"""The projector's reading path: outbox rows read as one string per column
(`mapping.OutboxColumns`) and split by the store must become the very events the same
rows give when handed over one by one, whatever their values (NULLs, an empty or
non-ASCII recipient, a recipient holding the separator, an erasure), on SQLite and
PostgreSQL, across chunk and batch boundaries; a failed write leaves the projector
able to go on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envoi.core.identity import erasure_hash
from envoi.eventstore import reading
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.mapping import SEPARATOR, OutboxColumns
from envoi.eventstore.projector import Projector
from envoi.eventstore.reading import OutboxReader, Span
from envoi.outbox.models import OutboxEvent
from tests.test_projector import Outbox, outbox, postgres

__all__ = ["outbox", "postgres"]  # the projector tests' OLTP outbox (SQLite and PostgreSQL)

ODD_RECIPIENTS = [
    "ann@gmail.com",
    None,
    "",
    "zoë@exemple.fr",
    f"bad{SEPARATOR}name@gmail.com",
    "=eq@gmail.com",
    "bob@example.com",
]


def odd_events(box: Outbox) -> list[dict[str, Any]]:
    events = []
    for i, recipient in enumerate(ODD_RECIPIENTS):
        event = box.event("open" if i % 2 else "delivered", minutes=i, recipient=recipient)
        if i == 1:
            event |= {"campaign_id": None, "email_id": None}
        if i == 3:
            event["data"] = {**event["data"], "city_name": "Zürich", "tags": ["a,b", "c"]}
        events.append(event)
    return events


def events_of(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return store.query("SELECT * FROM events ORDER BY id")[1]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "CHUNK", 2)


@pytest.mark.usefixtures("small_chunks")
def test_odd_values_come_out_as_they_went_in(outbox: Outbox, tmp_path: Path) -> None:
    ids = outbox.add(*odd_events(outbox))
    projected = DuckDBStore(tmp_path / "projected.duckdb")
    one_by_one = DuckDBStore(tmp_path / "one_by_one.duckdb")
    try:
        assert Projector(outbox.sessions, projected, batch=5).run_until_idle() == len(ids)
        reader = OutboxReader(outbox.sessions.kw["bind"])
        rows = [row for chunk in reader.rows(Span(0, len(ids)), ids[-1]) for row in chunk]
        one_by_one.append_outbox(rows, ids[-1])
        assert events_of(projected) == events_of(one_by_one)
        found = projected.query("SELECT recipient, city_name, tags FROM events ORDER BY id")[1]
        assert [row[0] for row in found] == ODD_RECIPIENTS
        assert found[3][1:] == ("Zürich", ["a,b", "c"])
        assert projected.cursor() == ids[-1]
    finally:
        projected.close()
        one_by_one.close()


def test_a_chunk_with_the_separator_in_a_recipient_is_read_as_rows(outbox: Outbox) -> None:
    ids = outbox.add(*odd_events(outbox))
    reader = OutboxReader(outbox.sessions.kw["bind"])
    chunks = list(reader.chunks(Span(0, len(ids)), ids))
    assert len(chunks) == 1
    assert isinstance(chunks[0], list)  # the separator in a recipient: plain rows
    assert [row[7] for row in chunks[0]] == ODD_RECIPIENTS
    clean = outbox.add(outbox.event(recipient="cy@gmail.com"), outbox.event(recipient=None))
    (joined,) = reader.chunks(Span(ids[-1], 10), clean)
    assert isinstance(joined, OutboxColumns)
    assert (joined.size, joined.recipient) == (2, f"=cy@gmail.com{SEPARATOR}")


@pytest.mark.usefixtures("small_chunks")
def test_erasures_among_joined_chunks_are_applied(outbox: Outbox, tmp_path: Path) -> None:
    ann = [outbox.event("open", minutes=i, recipient="ann@gmail.com") for i in range(3)]
    bob = outbox.event("open", minutes=1, recipient="bob@gmail.com")
    order = outbox.event("erasure", minutes=5, recipient=None)
    order["data"] = {"hashes": [erasure_hash("email", "ann@gmail.com")]}
    outbox.add(*ann, bob, order)
    store = DuckDBStore(tmp_path / "events.duckdb")
    try:
        assert Projector(outbox.sessions, store, batch=3).run_until_idle() == 4
        found = store.query("SELECT recipient, count(*) FROM events GROUP BY 1 ORDER BY 1")[1]
        assert found == [("bob@gmail.com", 1), (None, 3)]
    finally:
        store.close()


@pytest.mark.usefixtures("small_chunks")
def test_holes_across_chunks_are_read_once(postgres: Outbox, tmp_path: Path) -> None:
    first = postgres.add(*(postgres.event(minutes=i, recipient=f"u{i}@x.org") for i in range(3)))
    slow = postgres.sessions()
    slow.begin()
    late = OutboxEvent(**postgres.event("click", minutes=9))
    slow.add(late)
    slow.flush()
    later = postgres.add(*(postgres.event(minutes=i, recipient=f"v{i}@x.org") for i in range(5)))
    store = DuckDBStore(tmp_path / "events.duckdb")
    try:
        projector = Projector(postgres.sessions, store, batch=4)
        assert projector.run_until_idle() == 8
        slow.commit()
        assert projector.run_until_idle() == 1
        ids = [row[0] for row in store.query("SELECT id FROM events ORDER BY id")[1]]
        assert ids == sorted([*first, late.id, *later])
        assert store.cursor() == later[-1]
    finally:
        slow.close()
        store.close()


def test_a_failed_write_does_not_stall_the_next_passes(
    outbox: Outbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = outbox.add(*(outbox.event(minutes=i, recipient=f"u{i}@gmail.com") for i in range(9)))
    store = DuckDBStore(tmp_path / "events.duckdb")
    try:
        projector = Projector(outbox.sessions, store, batch=2)

        def crash(*_args: object) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(store, "_set_cursor", crash)
        for _ in range(4):  # more failures than batches staged ahead
            with pytest.raises(OSError, match="disk full"):
                projector.step()
        monkeypatch.undo()
        assert projector.run_until_idle() == 9
        assert store.cursor() == ids[-1]
        (firsts,) = store.query("SELECT count(*) FROM events WHERE is_first")[1][0]
        assert firsts == 9
    finally:
        store.close()
