"""`POST /api/v1/send` latency over real HTTP: p50 / p99 of N sequential sends.

    .venv/bin/python bench/send.py [--sends 200] [--backend sqlite|postgresql] [--deliver]

Creates a throw-away database, serves envoi on loopback and sends N messages one after
the other, each with inline content, params and a tag (half of them with an
idempotency key); `--deliver` runs the delivery worker in the server meanwhile (into
the `capture` router), as `envoi serve` does. The answer comes once the send is
queued and committed: delivery is not part of it. Figures are printed last, one
`name: value` per line, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
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

HTML = '<p>Hello {{ name }}, your code is {{ code }}.</p><a href="https://example.com/a">a</a>'


def body(index: int) -> dict[str, object]:
    sent: dict[str, object] = {
        "email": f"user{index}@example.com",
        "from_address": "Shop <shop@example.com>",
        "subject": "Your code {{ code }}",
        "text_html": HTML,
        "params": {"name": f"User {index}", "code": index},
        "tags": ["bench"],
    }
    if index % 2:
        sent["idempotency_key"] = f"bench-{index}"
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--deliver", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.backend, Path(tmp)) as url:
        upgrade(url)
        engine = make_engine(url)
        with transaction(make_sessionmaker(engine)) as session:
            creds = create_project(session, "bench", login="bench", secret="bench-secret")  # noqa: S106
        settings = Settings(database_url=url, var_dir=Path(tmp), deliver_in_process=args.deliver)
        with (
            ServerThread(create_app(settings, engine)) as base_url,
            httpx.Client(
                base_url=f"{base_url}/api/v1", auth=(creds.login, creds.secret), timeout=60
            ) as client,
        ):
            client.post("/send", json=body(-1)).raise_for_status()  # first use: stream, email
            times = []
            for index in range(args.sends):
                started = time.perf_counter()
                response = client.post("/send", json=body(index))
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 201, response.text  # noqa: S101
        engine.dispose()
    times.sort()
    print(f"backend: {args.backend}")
    print(f"deliver: {args.deliver}")
    print(f"sends: {args.sends}")
    print(f"p50_ms: {statistics.median(times):.1f}")
    print(f"p99_ms: {times[min(len(times) - 1, int(len(times) * 0.99))]:.1f}")
    print(f"max_ms: {times[-1]:.1f}")


if __name__ == "__main__":
    main()
