"""A burst of API events firing an automated campaign: every event queued, then spooled.

    .venv/bin/python bench/triggers.py [--events 10000] [--clients 16]
        [--backend sqlite|postgresql] [--no-campaign]

Creates a throw-away database, serves envoi on loopback, starts an automated campaign
triggered by the `visit` event (unless `--no-campaign`, the baseline), and posts
`--events` events for as many new people from `--clients` concurrent HTTP clients.
Each answer (201) comes once the event and its firing are committed, never after a
delivery. Then the scheduler's step spools the queue (`automation.workers.fire_due`,
1,000 firings a transaction) and the bench checks that every event was queued and
spooled exactly once. Figures are printed last, one `name: value` per line.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from envoi.automation.models import CampaignTrigger
from envoi.automation.workers import fire_due
from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.projects.services import create_project
from envoi.spool.models import SpoolEntry
from envoi.testing.databases import scratch_database
from envoi.testing.server import ServerThread
from envoi.web.app import create_app


def _campaign(client: httpx.Client) -> int:
    category = client.post("/categories", json={"title": "Bench"}).json()["category"]
    email = client.post(
        "/emails",
        json={
            "category": category,
            "from_address": "Shop <shop@example.com>",
            "subject": "Welcome",
            "text_html": "<p>Visit {{ event.n }}</p>",
        },
    )
    email.raise_for_status()
    body = {
        "message_type": "L",
        "message_id": email.json()["id"],
        "trigger": {"event": "visit"},
        "active": True,
    }
    response = client.post("/automated-campaigns", json=body)
    response.raise_for_status()
    campaign_id: int = response.json()["id"]
    return campaign_id


def _post_all(
    base_url: str, auth: tuple[str, str], events: int, clients: int
) -> tuple[Counter[int], list[float]]:
    def send(numbers: range) -> tuple[Counter[int], list[float]]:
        codes: Counter[int] = Counter()
        times = []
        with httpx.Client(base_url=base_url, auth=auth, timeout=120) as client:
            for i in numbers:
                payload = {"email": f"visitor{i}@example.com", "n": i}
                started = time.perf_counter()
                response = client.post("/events", json={"name": "visit", "payload": payload})
                times.append((time.perf_counter() - started) * 1000)
                codes[response.status_code] += 1
        return codes, times

    codes: Counter[int] = Counter()
    times: list[float] = []
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for got, took in pool.map(send, (range(k, events, clients) for k in range(clients))):
            codes += got
            times += took
    return codes, sorted(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--no-campaign", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.backend, Path(tmp)) as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            creds = create_project(session, "bench", login="bench", secret="bench-secret")  # noqa: S106
        settings = Settings(
            database_url=url,
            var_dir=Path(tmp),
            deliver_in_process=False,
            scheduler_in_process=False,
        )
        auth = (creds.login, creds.secret)
        with ServerThread(create_app(settings, engine)) as base_url:
            api = f"{base_url}/api/v1"
            with httpx.Client(base_url=api, auth=auth, timeout=60) as client:
                campaign_id = None if args.no_campaign else _campaign(client)
            started = time.perf_counter()
            codes, times = _post_all(api, auth, args.events, args.clients)
            posting = time.perf_counter() - started
        with sessions() as session:
            queued = session.scalar(select(func.count()).select_from(CampaignTrigger)) or 0
        started = time.perf_counter()
        fired = fire_due(sessions, datetime.now(UTC) + timedelta(seconds=1))
        spooling = time.perf_counter() - started
        with sessions() as session:
            spooled = session.scalar(
                select(func.count())
                .select_from(SpoolEntry)
                .where(SpoolEntry.campaign_id == campaign_id)
            )
        engine.dispose()
    assert codes == Counter({201: args.events}), codes  # noqa: S101
    expected = 0 if args.no_campaign else args.events
    assert queued == fired.spooled == spooled == expected, (queued, fired, spooled)  # noqa: S101
    print(f"backend: {args.backend}")
    print(f"campaign: {not args.no_campaign}")
    print(f"events: {args.events}")
    print(f"clients: {args.clients}")
    print(f"events_per_s: {args.events / posting:.0f}")
    print(f"p50_ms: {statistics.median(times):.1f}")
    print(f"p99_ms: {times[min(len(times) - 1, int(len(times) * 0.99))]:.1f}")
    print(f"queued: {queued}")
    print(f"spooled: {spooled}")
    print(f"spool_per_s: {(spooled or 0) / spooling:.0f}" if spooled else "spool_per_s: -")


if __name__ == "__main__":
    main()
