"""Segment generation time on 100,000 profiles with 200,000 API events and outbox rows.

    .venv/bin/python bench/segments.py [--backend sqlite|postgresql]

Creates a throw-away database, fills one project, then generates one segment per
condition below and prints `name: seconds` lines (and the member count), last.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.events.models import ApiEvent
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Profile, ProfileField
from envoi.projects.services import create_project
from envoi.segments import services
from envoi.segments.models import Segment
from envoi.testing.databases import scratch_database

PROFILES = 100_000
FACTS = 200_000
CONDITIONS: dict[str, Any] = {
    "everyone": {"and": []},
    "string eq": {"field": "city", "op": "eq", "value": "Paris"},
    "int between + bool": {
        "and": [
            {"field": "pole2", "op": "between", "value": [100, 500]},
            {"field": "vip", "op": "eq", "value": False},
        ]
    },
    "list contains": {"field": "interests", "op": "contains", "value": "golf"},
    "email_domain": {"field": "email_domain", "op": "eq", "value": "example.com"},
    "opened in 30 days": {"opened": {"within_days": 30}},
    "event count in 7 days": {"event": "login", "within_days": 7, "op": "ge", "value": 3},
    "mixed": {
        "and": [
            {"field": "city", "op": "in", "value": ["Paris", "Rome"]},
            {"or": [{"clicked": {"campaign": 2}}, {"event": "login", "within_days": 14}]},
            {"not": {"field": "interests", "op": "contains", "value": "chess"}},
        ]
    },
}


def fill(sessions: sessionmaker[Session], project_id: int) -> None:
    rnd = random.Random(1)  # noqa: S311 - reproducible test data, not secrets
    now = datetime.now(UTC)
    fields = {"city": "String", "pole2": "Int", "interests": "List of String", "vip": "Bool"}
    with transaction(sessions) as session:
        session.add_all(
            ProfileField(project_id=project_id, name=n, type=t) for n, t in fields.items()
        )
        session.execute(
            insert(Profile),
            [
                {
                    "project_id": project_id,
                    "uid": f"u{i}",
                    "email": f"u{i}@{rnd.choice(['a.com', 'b.org', 'example.com'])}",
                    "fields": {
                        "city": rnd.choice(["Paris", "Lyon", "Berlin", "Rome"]),
                        "pole2": rnd.randint(0, 1000),
                        "interests": rnd.sample(["golf", "tennis", "chess", "ski"], 2),
                        "vip": rnd.random() < 0.1,
                    },
                }
                for i in range(PROFILES)
            ],
        )
        ids = list(session.scalars(select(Profile.id).where(Profile.project_id == project_id)))
        session.execute(
            insert(ApiEvent),
            [
                {
                    "project_id": project_id,
                    "profile_id": rnd.choice(ids),
                    "name": "login",
                    "created_at": now - timedelta(days=rnd.randint(0, 30)),
                }
                for _ in range(FACTS)
            ],
        )
        session.execute(
            insert(OutboxEvent),
            [
                {
                    "project_id": project_id,
                    "profile_id": rnd.choice(ids),
                    "kind": rnd.choice(["delivered", "open", "click"]),
                    "campaign_id": rnd.randint(1, 5),
                    "occurred_at": now - timedelta(days=rnd.randint(0, 60)),
                }
                for _ in range(FACTS)
            ],
        )


def generate(sessions: sessionmaker[Session], project_id: int, condition: Any) -> tuple[int, float]:
    with transaction(sessions) as session:
        definition = services.Definition("bench", None, condition, None)
        segment_id = services.create_segment(session, project_id, definition).id
    began = time.perf_counter()
    with transaction(sessions) as session:
        segment = session.get(Segment, segment_id)
        assert segment is not None  # noqa: S101 - created just above
        count = services.generate(session, segment)
    return count, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.backend, Path(tmp)) as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            project_id = create_project(session, "bench").id
        fill(sessions, project_id)
        results = {name: generate(sessions, project_id, c) for name, c in CONDITIONS.items()}
        engine.dispose()
    print(f"backend: {args.backend}")
    print(f"profiles: {PROFILES}")
    for name, (count, seconds) in results.items():
        key = name.replace(" ", "_").replace("+", "and")
        print(f"{key}_s: {seconds:.2f}  # {count} members")


if __name__ == "__main__":
    main()
