"""Bulk profile upserts over real HTTP: seconds for one request of N profiles.

    .venv/bin/python bench/bulk_upsert.py [--profiles 10000] [--backend sqlite|postgresql]

Creates a throw-away database, serves envoi on loopback, declares four fields, then
sends the same N profiles twice in one `POST /api/v1/users/bulk` each: first as new
profiles, then as updates. Figures are printed last, one `name: value` per line.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.projects.services import create_project
from envoi.testing.databases import scratch_database
from envoi.testing.server import ServerThread
from envoi.web.app import create_app

FIELDS = {"first_name": "String", "points": "Int", "vip": "Bool", "birthday": "Date"}


def profiles(count: int, round_: int) -> list[dict[str, object]]:
    return [
        {
            "email": f"user{i}@example.com",
            "uid": f"u{i}",
            "language": "en",
            "fields": {
                "first_name": f"Name{i}-{round_}",
                "points": i + round_,
                "vip": i % 2 == 0,
                "birthday": "1990-01-31",
            },
        }
        for i in range(count)
    ]


def timed_bulk(client: httpx.Client, items: list[dict[str, object]]) -> float:
    started = time.perf_counter()
    response = client.post("/users/bulk", json=items)
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text  # noqa: S101 - a benchmark's sanity check
    assert not any("error" in item for item in response.json())  # noqa: S101
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=10_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.backend, Path(tmp)) as url:
        upgrade(url)
        engine = make_engine(url)
        with transaction(make_sessionmaker(engine)) as session:
            creds = create_project(session, "bench", login="bench", secret="bench-secret")  # noqa: S106
        app = create_app(Settings(database_url=url, var_dir=Path(tmp)), engine)
        with (
            ServerThread(app) as base_url,
            httpx.Client(
                base_url=f"{base_url}/api/v1", auth=(creds.login, creds.secret), timeout=300
            ) as client,
        ):
            for name, kind in FIELDS.items():
                client.post("/fields", json={"name": name, "type": kind}).raise_for_status()
            create_s = timed_bulk(client, profiles(args.profiles, 0))
            update_s = timed_bulk(client, profiles(args.profiles, 1))
        engine.dispose()
    print(f"backend: {args.backend}")
    print(f"profiles: {args.profiles}")
    print(f"create_s: {create_s:.2f}")
    print(f"update_s: {update_s:.2f}")
    print(f"profiles_per_s: {args.profiles / max(create_s, update_s):.0f}")


if __name__ == "__main__":
    main()
