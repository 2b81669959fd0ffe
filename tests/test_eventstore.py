"""The event store over a real DuckDB file: what each outbox event becomes, the first
occurrence flags, idempotence, the cursor written with the rows, a store held by
another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from envoi.eventstore.duckdb import DuckDBStore, open_store
from envoi.eventstore.interfaces import StoreUnavailable
from envoi.eventstore.mapping import GIVEN, OUTBOX_COLUMNS, event_row
from envoi.eventstore.schema import COLUMNS, IMPORT_ID_BASE

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
NAIVE_T0 = T0.replace(tzinfo=None)
SEND = {
    "post": "S_12",
    "post_type": "S",
    "message": "L_34",
    "message_type": "L",
    "domain": "hotmail.fr",
    "router": "relay",
    "tags": ["spring", "sale"],
    "language": "fr",
    "send_id": 501,
}
VISITOR = {
    "client": "Gmail",
    "device": "Webmail",
    "os": "Windows",
    "country_code": "FR",
    "country_name": "France",
    "region_name": "Île-de-France",
    "city_name": "Paris",
    "ip": "81.2.69.160",
    "user_agent": "Mozilla/5.0",
    "machine": None,
}
REPLY = {"smtp_code": 550, "smtp_status": "5.1.1", "smtp_text": "user unknown", "attempt": 1}
BOUNCE = {"bounce_class": "user_unknown", "bounce_reason": "user_unknown", "error_code": 11}
# Each kind with the data its writer gives it (spool, tracking, inbound).
KINDS: dict[str, dict[str, Any]] = {
    "queued": {},
    "blocked": {"reason": "external_check"},
    "quarantined": {"reason": "unsubscribed"},
    "delivered": {"smtp_code": 250, "smtp_status": "2.0.0", "smtp_text": "ok", "attempt": 1},
    "tempfail": {**REPLY, "smtp_code": 451, "retry_at": "2024-03-01T09:05:00+00:00"},
    "permfail": {**REPLY, **BOUNCE, "hard": True, "reason": "user_unknown", "uncertain": True},
    "bounce": {**REPLY, **BOUNCE, "hard": True, "reporting_mta": "mx.x", "in_band": False},
    "complaint": {"handled": True, "feedback_type": "abuse"},
    "open": {**VISITOR, "machine": "apple_mpp"},  # Apple Mail Privacy Protection
    "click": {**VISITOR, "link": 2, "url": "https://example.com/b"},
    "mirror": VISITOR,
    "unsubscribe": {**VISITOR, "method": "one-click"},
    "forward": {**VISITOR, "friend_domain": "example.org"},
    "goal": {**VISITOR, "goal": "purchase", "value": 49.9},
    "survey": {"answer": 3},  # a kind this version does not know
}


def outbox_row(
    event_id: int,
    kind: str,
    at: datetime = T0,
    recipient: str | None = "ann@hotmail.fr",
    project_id: int = 1,
    **data: Any,
) -> tuple[Any, ...]:
    """An outbox row as the projector reads it from SQLite."""
    document = {**SEND, **KINDS.get(kind, {}), **data}
    when = at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return (event_id, project_id, kind, when, 12, 34, 7, recipient, json.dumps(document))


def as_outbox(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip((*OUTBOX_COLUMNS, "data"), row, strict=True))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "events.duckdb")
    yield opened
    opened.close()


def events(store: DuckDBStore, where: str = "true") -> list[dict[str, Any]]:
    names, rows = store.query(f"SELECT * FROM events WHERE {where} ORDER BY id")  # noqa: S608
    return [dict(zip(names, row, strict=True)) for row in rows]


def flags(store: DuckDBStore) -> dict[int, tuple[bool, bool]]:
    return {e["id"]: (e["is_first"], e["is_first_human"]) for e in events(store)}


def test_every_kind_becomes_an_event_with_its_dimensions(store: DuckDBStore) -> None:
    rows = [outbox_row(i, kind) for i, kind in enumerate(KINDS, start=1)]
    assert store.append_outbox(rows, cursor=len(rows)) == len(rows)
    stored = {e["kind"]: e for e in events(store)}
    assert list(stored) == list(KINDS)
    for event in stored.values():
        assert event["post"] == "S_12"
        assert event["message"] == "L_34"
        assert event["tags"] == ["spring", "sale"]
        assert event["provider"] == "microsoft"  # hotmail.fr
        assert event["occurred_at"] == NAIVE_T0  # naive UTC
        assert event["send_id"] == 501
        assert event["router"] == "relay"
    assert stored["blocked"]["reason"] == "external_check"
    assert stored["permfail"]["bounce_class"] == "user_unknown"
    assert stored["permfail"]["error_code"] == 11
    assert stored["permfail"]["hard"] is True
    assert stored["permfail"]["uncertain"] is True
    assert stored["permfail"]["in_band"] is True  # refused in the SMTP session
    assert stored["tempfail"]["in_band"] is True
    assert stored["tempfail"]["smtp_code"] == 451
    assert stored["bounce"]["in_band"] is False  # a DSN, later
    assert stored["complaint"]["handled"] is True
    assert stored["open"]["machine"] == "apple_mpp"
    assert stored["open"]["city_name"] == "Paris"
    assert stored["click"]["link"] == 2
    assert stored["click"]["url"] == "https://example.com/b"
    assert stored["unsubscribe"]["method"] == "one-click"
    assert stored["goal"]["goal"] == "purchase"
    assert stored["goal"]["value"] == 49.9
    assert stored["survey"]["post"] == "S_12"  # unknown kinds are kept
    # The Python mapping (imports, readers of one row) gives the same events.
    for row in rows:
        mapped = event_row(as_outbox(row))
        assert {k: mapped[k] for k in GIVEN} == {k: stored[row[2]][k] for k in GIVEN}


def test_missing_values_and_odd_types_become_null() -> None:
    row = as_outbox(outbox_row(1, "click", link="two", hard="yes", domain=None))
    event = event_row(row)
    assert event["link"] is None
    assert event["hard"] is None
    assert event["domain"] == "hotmail.fr"  # from the recipient
    assert (
        event_row(as_outbox(outbox_row(2, "open", recipient=None, domain=None)))["domain"] is None
    )


def test_first_occurrence_within_a_batch_and_across_batches(store: DuckDBStore) -> None:
    # One batch, out of time order: the earliest open is the first one.
    store.append_outbox(
        [
            outbox_row(1, "open", T0 + timedelta(hours=2), machine=None),
            outbox_row(2, "open", T0 + timedelta(hours=1), machine=None),
            outbox_row(3, "click", T0 + timedelta(hours=3), machine=None),
            outbox_row(4, "open", T0, recipient="bob@gmail.com", machine="apple_mpp"),
        ],
        cursor=4,
    )
    assert flags(store) == {1: (False, False), 2: (True, True), 3: (True, True), 4: (True, False)}
    # Later batches: a person's open after Apple's prefetch is the first human one;
    # an open that happened earlier but arrived late takes the flag over.
    store.append_outbox(
        [
            outbox_row(5, "open", T0 + timedelta(hours=5), recipient="bob@gmail.com", machine=None),
            outbox_row(6, "open", T0 - timedelta(hours=1), machine=None),
            outbox_row(7, "open", T0 + timedelta(hours=6), recipient="bob@gmail.com", machine=None),
        ],
        cursor=7,
    )
    assert flags(store) == {
        1: (False, False),
        2: (False, False),  # lost the flag to 6
        3: (True, True),
        4: (True, False),
        5: (False, True),
        6: (True, True),
        7: (False, False),
    }
    # Another post, another project: firsts of their own.
    store.append_outbox(
        [outbox_row(8, "click", post="S_13"), outbox_row(9, "click", project_id=2)], cursor=9
    )
    assert flags(store)[8] == (True, True)
    assert flags(store)[9] == (True, True)


def test_the_same_batch_twice_counts_once(store: DuckDBStore) -> None:
    rows = [outbox_row(i, "open", T0 + timedelta(minutes=i)) for i in range(1, 6)]
    assert store.append_outbox(rows, cursor=5) == 5
    assert store.append_outbox(rows, cursor=5) == 0
    assert store.append_outbox([*rows[2:], outbox_row(6, "click")], cursor=6) == 1
    assert [e["id"] for e in events(store)] == [1, 2, 3, 4, 5, 6]
    assert [e["id"] for e in events(store, "is_first")] == [1, 6]
    assert store.cursor() == 6


def test_rows_and_cursor_are_written_together(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append_outbox([outbox_row(1, "queued")], cursor=1)

    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "_set_cursor", fail)
    with pytest.raises(OSError, match="disk full"):
        store.append_outbox([outbox_row(2, "delivered"), outbox_row(3, "open")], cursor=3)
    monkeypatch.undo()
    # Nothing of the failed batch, flags included: sent again, it counts as new.
    assert [e["id"] for e in events(store)] == [1]
    assert store.cursor() == 1
    assert store.append_outbox([outbox_row(2, "delivered"), outbox_row(3, "open")], cursor=3) == 2
    assert [e["id"] for e in events(store, "is_first")] == [1, 2, 3]


def test_a_store_reopened_keeps_rows_cursor_and_firsts(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    first = DuckDBStore(path)
    first.append_outbox([outbox_row(1, "click")], cursor=1)
    first.close()
    again = open_store(f"duckdb:///{path}")
    assert again.cursor() == 1
    again.append_outbox([outbox_row(2, "click", T0 + timedelta(minutes=1))], cursor=2)
    assert flags(again) == {1: (True, True), 2: (False, False)}
    again.close()


def test_event_rows_are_appended_like_outbox_rows(store: DuckDBStore) -> None:
    row = event_row(as_outbox(outbox_row(1, "open", machine=None)))
    assert store.append([row, {**row, "id": 2, "occurred_at": T0 - timedelta(minutes=5)}]) == 2
    assert flags(store) == {1: (False, False), 2: (True, True)}
    assert events(store)[1]["occurred_at"] == NAIVE_T0 - timedelta(minutes=5)
    assert store.cursor() == 0  # no cursor given, none written


def test_reset_drops_projected_events_and_gives_imported_ones_their_flags_back(
    store: DuckDBStore,
) -> None:
    imported = event_row(as_outbox(outbox_row(IMPORT_ID_BASE, "open", T0, machine=None)))
    store.append([imported])
    store.append_outbox([outbox_row(1, "open", T0 - timedelta(days=1), machine=None)], cursor=1)
    assert flags(store) == {1: (True, True), IMPORT_ID_BASE: (False, False)}
    store.reset()
    assert flags(store) == {IMPORT_ID_BASE: (True, True)}
    assert store.cursor() == 0
    again = outbox_row(1, "open", T0 - timedelta(days=1), machine=None)
    assert store.append_outbox([again], cursor=1) == 1
    assert flags(store) == {1: (True, True), IMPORT_ID_BASE: (False, False)}


def test_queries_only_read(store: DuckDBStore) -> None:
    store.append_outbox([outbox_row(1, "open")], cursor=1)
    names, rows = store.query(
        "SELECT kind, count(*) AS n FROM events WHERE project_id = ? GROUP BY kind", [1]
    )
    assert (names, rows) == (["kind", "n"], [("open", 1)])
    for statement in ("DELETE FROM events", "SELECT 1; DROP TABLE events", "CHECKPOINT"):
        with pytest.raises(ValueError, match="one SELECT"):
            store.query(statement)
    assert len(events(store)) == 1


def test_a_store_held_by_another_process_is_refused_with_its_pid(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    holder = subprocess.Popen(  # noqa: S603 - this interpreter
        [
            sys.executable,
            "-c",
            "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreUnavailable, match=f"in use by process {holder.pid}"):
            DuckDBStore(path)
    finally:
        holder.communicate("")
    store = DuckDBStore(path)  # free again
    store.close()


def test_events_url_must_be_duckdb() -> None:
    for url in ("sqlite:///x.db", "duckdb:///", "clickhouse://host/db"):
        with pytest.raises(StoreUnavailable, match="duckdb:///PATH"):
            open_store(url)
    memory = open_store("duckdb:///:memory:")
    assert memory.cursor() == 0
    memory.close()


def test_appending_a_large_batch_keeps_up(store: DuckDBStore) -> None:
    """Not a benchmark (bench/projector.py is): a smoke check that a batch of 50,000
    rows goes through chunking in one call, in well under the time of a Python loop."""
    rows = (
        outbox_row(i, "open", T0 + timedelta(seconds=i), recipient=f"u{i % 7000}@gmail.com")
        for i in range(1, 50_001)
    )
    started = time.perf_counter()
    assert store.append_outbox(rows, cursor=50_000) == 50_000
    assert time.perf_counter() - started < 30
    (firsts,) = store.query("SELECT count(*) FROM events WHERE is_first")[1][0]
    assert firsts == 7000


def test_the_documented_table_is_the_schema() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "events.md").read_text()
    documented = [
        tuple(cell.strip().strip("`") for cell in line.strip("|").split("|"))
        for line in page.splitlines()
        if line.startswith("| `") and line.count("|") == 4 and line.split("|")[2].strip().isupper()
    ]
    assert documented == [(c.name, c.type, c.doc) for c in COLUMNS]
