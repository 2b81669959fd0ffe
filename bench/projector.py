"""The projector's speed: outbox events into a DuckDB event store.

    .venv/bin/python bench/projector.py [--events 1000000] [--batch N]
        [--backend sqlite|postgresql] [--runs 3]

Fills a throw-away outbox with realistic events of campaigns (queued, delivered or
failed, Apple MPP and human opens, clicks, unsubscriptions, bounces, spread over
days, across a mix of mailbox providers), then times
- `append`: the store's part alone, batches already read (the first four batches),
  staged and written one after the other (no overlap);
- the projector: reading the outbox, mapping, first-occurrence flags, writing,
  one batch at a time into a new store, as `envoi events rebuild` does; `--runs`
  times, each into a new store, the best one reported (the machine may be shared:
  the load average before each run is printed with it).
Prints `name: value` lines, `events_per_s` (the projector's best) last. Bar: 200,000
events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.projector import BATCH, Projector, StagingStore
from envoi.eventstore.reading import OutboxReader, Span
from envoi.projects.services import create_project
from envoi.testing.databases import scratch_database

DOMAINS = {  # share of recipients
    "gmail.com": 30,
    "hotmail.com": 8,
    "outlook.com": 5,
    "hotmail.fr": 4,
    "yahoo.com": 6,
    "yahoo.fr": 2,
    "orange.fr": 8,
    "wanadoo.fr": 3,
    "free.fr": 5,
    "sfr.fr": 3,
    "icloud.com": 6,
    "laposte.net": 3,
    "gmx.de": 3,
    "web.de": 2,
    "mail.ru": 2,
    "example-corp.com": 10,
}
CLIENTS = [("Gmail", "Webmail", "Android"), ("Apple Mail", "Desktop", "macOS")]
CLIENTS += [("Outlook", "Desktop", "Windows"), ("iOS Mail", "Mobile", "iOS")]
dumps = json.JSONEncoder().encode
COLUMNS = "id, project_id, kind, occurred_at, campaign_id, email_id, profile_id, recipient, data"


def events(count: int, project_id: int) -> Iterator[tuple[Any, ...]]:
    """Outbox rows of campaigns of 5,000 to 100,000 recipients, until `count`."""
    rnd = random.Random(5)  # noqa: S311 - reproducible test data, not secrets
    domains, weights = list(DOMAINS), list(DOMAINS.values())
    start = datetime(2024, 1, 1, tzinfo=UTC)
    made = 0
    campaign = 0
    while made < count:
        campaign += 1
        size = rnd.randint(5_000, 100_000)
        sent_at = start + timedelta(days=campaign * 3)
        base = {
            "post": f"S_{campaign}",
            "post_type": "S",
            "message": f"L_{campaign}",
            "message_type": "L",
            "router": "relay",
            "tags": ["news", f"wave{campaign % 4}"],
            "language": "fr",
        }
        timed: list[tuple[datetime, str, str, dict[str, Any]]] = []
        for send in range(size):
            domain = rnd.choices(domains, weights)[0]
            recipient = f"user{rnd.randint(1, 2_000_000)}@{domain}"
            data = {**base, "domain": domain, "send_id": campaign * 1_000_000 + send}
            at = sent_at + timedelta(seconds=send / 500)
            timed.append((at, "queued", recipient, data))
            outcome = rnd.random()
            if outcome < 0.02:
                failure = {"smtp_code": 550, "smtp_status": "5.1.1", "bounce_class": "user_unknown"}
                timed.append((at, "permfail", recipient, {**data, **failure, "hard": True}))
                continue
            timed.append((at, "delivered", recipient, {**data, "smtp_code": 250, "attempt": 1}))
            if domain == "icloud.com" and rnd.random() < 0.9:  # Apple's proxy opens at once
                timed.append((at, "open", recipient, {**data, "machine": "apple_mpp"}))
            if rnd.random() < 0.3:
                client, device, os_name = rnd.choice(CLIENTS)
                visitor = {"client": client, "device": device, "os": os_name, "machine": None}
                visitor |= {"country_code": "FR", "country_name": "France", "city_name": "Paris"}
                opened = at + timedelta(hours=rnd.expovariate(1 / 8))
                for again in range(rnd.choice([1, 1, 1, 2, 3])):
                    when = opened + timedelta(hours=again * 5)
                    timed.append((when, "open", recipient, {**data, **visitor}))
                if rnd.random() < 0.15:
                    link = {"link": rnd.randint(0, 4), "url": "https://shop.example.com/p"}
                    click = {**data, **visitor, **link}
                    timed.append((opened + timedelta(minutes=2), "click", recipient, click))
                if rnd.random() < 0.01:
                    leave = {**data, **visitor, "method": "one-click"}
                    timed.append((opened + timedelta(minutes=1), "unsubscribe", recipient, leave))
        # The outbox holds facts in the order they were recorded.
        timed.sort(key=lambda item: item[0])
        for at, kind, recipient, data in timed:
            if made == count:
                return
            made += 1
            text = at.replace(tzinfo=None).isoformat(" ", "microseconds")
            yield (made, project_id, kind, text, campaign, campaign, None, recipient, dumps(data))


def fill(engine: Engine, count: int, project_id: int) -> None:
    """Bulk-insert the outbox rows: sqlite3's executemany, or PostgreSQL's COPY."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY outbox ({COLUMNS}) FROM STDIN") as copy:
                for row in events(count, project_id):
                    copy.write_row(row)
            cursor.execute("SELECT setval('outbox_id_seq', %s)", [count])
        else:
            cursor.execute("BEGIN")
            marks = ", ".join("?" for _ in COLUMNS.split(","))
            sql = f"INSERT INTO outbox ({COLUMNS}) VALUES ({marks})"  # noqa: S608
            cursor.executemany(sql, events(count, project_id))  # type: ignore[arg-type]  # sqlite3 takes any iterable
        raw.commit()
    finally:
        raw.close()


class PeakMemory:
    """The highest resident memory of this process while a block runs (VmRSS, sampled)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_mb = self.rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()


def project(sessions: sessionmaker[Session], path: Path, batch: int) -> dict[str, float]:
    """Run the projector over the whole outbox into a new store at `path`."""
    store = DuckDBStore(path)
    projector = Projector(sessions, store, batch=batch)
    before = PeakMemory.rss_mb()
    with PeakMemory() as memory:
        cpu = time.process_time()
        started = time.perf_counter()
        projected = projector.run_until_idle()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu
    (firsts,) = store.query("SELECT count(*) FROM events WHERE is_first")[1][0]
    store.close()
    return {
        "projected": projected,
        "first_occurrences": firsts,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "memory_mb": memory.peak_mb - before,
    }


def append_only(engine: Engine, path: Path, batch: int) -> tuple[int, float]:
    """(events, seconds) of the store's part alone over the first four batches: staged
    and written (`stage_outbox`, `append_staged`), or `append_outbox` of their rows."""
    reader = OutboxReader(engine)
    store = DuckDBStore(path)
    staging = isinstance(store, StagingStore)
    batches: list[tuple[list[Any], int]] = []  # chunks (or lists of rows), last id
    after = 0
    for _ in range(4):
        span = Span(after, batch)
        ids = reader.ids(span)
        if not ids:
            break
        read = reader.chunks(span, ids) if staging else reader.rows(span, ids[-1])
        batches.append(([*read], ids[-1]))
        after = ids[-1]
    started = time.perf_counter()
    appended = 0
    for chunks, last in batches:
        if isinstance(store, StagingStore):
            appended += store.append_staged(store.stage_outbox(chunks), last)
        else:
            rows = [row for chunk in chunks for row in chunk]
            appended += store.append_outbox(rows, last)
    seconds = time.perf_counter() - started
    store.close()
    return appended, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory() as scratch,
        scratch_database(args.backend, Path(scratch)) as url,
    ):
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            project_id = create_project(session, "Bench", login="bench").id
        started = time.perf_counter()
        fill(engine, args.events, project_id)
        fill_seconds = time.perf_counter() - started
        for number in range(args.runs):
            load = os.getloadavg()[0]
            run = project(sessions, Path(scratch) / f"events{number}.duckdb", args.batch)
            (Path(scratch) / f"events{number}.duckdb").unlink()
            run["load"] = load
            print(f"run_{number + 1}: {args.events / run['seconds']:.0f} events/s, load {load:.2f}")
            runs.append(run)
        appended, append_seconds = append_only(engine, Path(scratch) / "append.duckdb", args.batch)
        engine.dispose()
    best = min(runs, key=lambda run: run["seconds"])
    if best["projected"] != args.events:
        raise SystemExit(f"projected {best['projected']} events of {args.events}")
    print(f"backend: {args.backend}")
    print(f"events: {args.events}")
    print(f"first_occurrences: {best['first_occurrences']}")
    print(f"batch: {args.batch}")
    print(f"fill_seconds: {fill_seconds:.1f}")
    print(f"append_events: {appended}")
    print(f"append_events_per_s: {appended / append_seconds:.0f}")
    print(f"load_average_before: {best['load']:.2f}")
    print(f"projector_seconds: {best['seconds']:.2f}")
    print(f"projector_cpu_seconds: {best['cpu_seconds']:.2f}")
    print(f"projector_memory_mb: {best['memory_mb']:.0f}")
    print(f"events_per_s: {args.events / best['seconds']:.0f}")


if __name__ == "__main__":
    main()
