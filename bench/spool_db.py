"""CPU per spool row of the delivery worker's database thread: build, claim, mark, record.

    .venv/bin/python bench/spool_db.py [--database sqlite|postgresql] [--recipients 20000]
        [--group 40] [--claim 500] [--build-batch 1000] [--repeat 3] [--failures 0.0]

Builds a throw-away database (a SQLite file in WAL mode, as in production, or a
PostgreSQL database), a project, an email and a running campaign of N members
written straight into its audience, then runs the database thread's units of work
as a worker runs them, each in a transaction of its own on one kept connection:

- `build_step` a batch of `--build-batch` members at a time until the spool is built
  (the statistics are refreshed after the first batch, as a worker does);
- `claim` of `--claim` rows at a time, until every row is claimed;
- the group commits: for each `--group` claimed rows, one transaction that records the
  results of the previous group (`record`, delivered, or a 4xx for a `--failures`
  share of them) and marks this group `sending` (`mark_sending`), as `GroupCommit`
  does.

CPU is this process's (time.process_time): the Python side of the work, and SQLite's
own (PostgreSQL's server is another process, not counted). Each figure is µs of CPU
per spool row, the best of `--repeat` campaigns (a new campaign each time, in the same
growing spool); `group_commit_us_per_row` is a whole group transaction (record, mark,
BEGIN and COMMIT) per row recorded. Figures are printed last, one `name: value` a line.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from envoi.campaigns.models import AudienceMember, Campaign
from envoi.categories.models import Category
from envoi.db.base import utcnow
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.delivery.interfaces import SmtpReply
from envoi.delivery.workers import analyze_spool
from envoi.emails.models import Email
from envoi.projects.services import create_project
from envoi.spool import services as spool
from envoi.spool.services import Result
from envoi.testing.databases import scratch_database

T = TypeVar("T")
OWNER = "bench-worker"
OK = SmtpReply(250, "2.0.0", "Ok: queued as 4F2A9B")
LATER = SmtpReply(451, "4.3.0", "Try again later")


@dataclass
class Figures:
    """CPU seconds and rows of each phase, for one campaign."""

    cpu: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    def add(self, phase: str, seconds: float, rows: int) -> None:
        self.cpu[phase] = self.cpu.get(phase, 0.0) + seconds
        self.rows[phase] = self.rows.get(phase, 0) + rows

    def per_row_us(self, phase: str) -> float:
        return self.cpu[phase] / max(self.rows[phase], 1) * 1e6


class Thread:
    """One kept connection, a transaction a unit of work (as `DatabaseThread`)."""

    def __init__(self, sessions: sessionmaker[Session], connection: Connection) -> None:
        self._sessions = sessions
        self._connection = connection

    @contextmanager
    def unit(self) -> Iterator[Session]:
        with self._sessions(bind=self._connection) as session, session.begin():
            yield session


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    began = time.process_time()
    value = fn()
    return value, time.process_time() - began


def campaign(sessions: sessionmaker[Session], project_id: int, email_id: int, size: int) -> int:
    """A running campaign of `size` members, its audience written directly."""
    now = utcnow()
    with transaction(sessions) as session:
        row = Campaign(
            project_id=project_id,
            post_type="S",
            message_type="L",
            message_id=email_id,
            source_type="U",
            tags="bench, weekly",
            state="running",
            spooler_token=secrets.token_urlsafe(24),
            audience_summary={"accepted": size, "rejected": 0},
            started_at=now,
        )
        session.add(row)
        session.flush()
        members = [
            {
                "campaign_id": row.id,
                "recipient_key": f"email:user{i}@d{i % 997}.example.com",
                "email": f"user{i}@d{i % 997}.example.com",
                "params": {"first_name": f"Name{i}", "city": "Paris"},
                "line": i + 2,
            }
            for i in range(size)
        ]
        for start in range(0, size, 5000):
            session.execute(insert(AudienceMember), members[start : start + 5000])
        return row.id


def run_campaign(thread: Thread, args: argparse.Namespace, first: bool) -> Figures:
    figures = Figures()
    while True:
        with thread.unit() as session:
            built, cpu = timed(lambda: spool.build_step(session, utcnow(), args.build_batch))
        figures.add("build", cpu, 0)
        if not built:
            break
        if first:  # as a worker does after its first batch (`analyze_spool`)
            with thread.unit() as session:
                analyze_spool(session)
            first = False
    figures.rows["build"] = args.recipients
    pending: list[int] = []
    failures = round(args.failures * args.group)
    while True:
        with thread.unit() as session:
            claims, cpu = timed(lambda: spool.claim(session, OWNER, utcnow(), args.claim))
        figures.add("claim", cpu, len(claims))
        if not claims and not pending:
            break
        ids = [c.id for c in claims]
        groups = [ids[i : i + args.group] for i in range(0, len(ids), args.group)] or [[]]
        for group in groups:
            results = [
                Result(i, LATER if n < failures else OK, router="sink", language="en")
                for n, i in enumerate(pending)
            ]
            began = time.process_time()
            with thread.unit() as session:
                record_cpu, mark_cpu, marked = write(session, results, group)
            figures.add("group_commit", time.process_time() - began, len(results))
            figures.add("record", record_cpu, len(results))
            figures.add("mark_sending", mark_cpu, len(group))
            if len(marked) != len(group):
                raise RuntimeError(f"marked {len(marked)} of {len(group)}")
            pending = group
        if not claims:
            break
    return figures


def write(
    session: Session, results: list[Result], group: list[int]
) -> tuple[float, float, list[int]]:
    """One group commit's work, as `GroupCommit` does it: (record CPU, mark CPU, marked)."""
    now = utcnow()
    began = time.process_time()
    spool.record(session, OWNER, results, now)
    recorded = time.process_time()
    marked = spool.mark_sending(session, OWNER, group, now)
    return recorded - began, time.process_time() - recorded, marked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--recipients", type=int, default=20_000, help="per campaign")
    parser.add_argument("--group", type=int, default=40, help="rows per group commit")
    parser.add_argument("--claim", type=int, default=500, help="rows per claim")
    parser.add_argument("--build-batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="campaigns; the best is shown")
    parser.add_argument("--failures", type=float, default=0.0, help="share of 4xx replies")
    args = parser.parse_args()
    best: dict[str, float] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(scratch_database(args.database, tmp))
        upgrade(url)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        with transaction(sessions) as session:
            project_id = create_project(session, "bench").id
            category = Category(project_id=project_id, title="Bench")
            session.add(category)
            session.flush()
            email = Email(
                project_id=project_id,
                category_id=category.id,
                from_address="news@bench.example.com",
                asset_key=secrets.token_hex(16),
            )
            session.add(email)
            session.flush()
            email_id = email.id
        connection = stack.enter_context(engine.connect())
        thread = Thread(sessions, connection)
        for index in range(args.repeat):
            campaign(sessions, project_id, email_id, args.recipients)
            figures = run_campaign(thread, args, first=index == 0)
            if figures.rows["record"] != args.recipients:
                raise RuntimeError(f"recorded {figures.rows['record']} of {args.recipients}")
            for phase in figures.cpu:
                value = figures.per_row_us(phase)
                best[phase] = min(best.get(phase, value), value)
    print(f"database: {args.database}")
    print(f"recipients: {args.recipients}")
    print(f"group: {args.group}")
    print(f"claim_batch: {args.claim}")
    print(f"build_batch: {args.build_batch}")
    print(f"failures: {args.failures}")
    for phase in ("build", "claim", "mark_sending", "record", "group_commit"):
        print(f"{phase}_us_per_row: {best[phase]:.1f}")


if __name__ == "__main__":
    main()
