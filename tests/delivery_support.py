"""Helpers shared by the delivery tests (no tests here).

Everything a user would do goes through the HTTP API (routers, emails, campaigns,
start, pause); the tests then read the spool and the outbox through the ORM to check
what the worker wrote.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.delivery.workers import DeliveryService
from envoi.outbox.models import OutboxEvent
from envoi.projects.services import create_project
from envoi.spool.models import SpoolEntry
from envoi.testing.server import ServerThread
from envoi.testing.smtppeer import SmtpPeer
from envoi.web.app import create_app
from tests.conftest import ENVOI

HTML = (
    "<html><head><style>p { color: #333333 }</style></head><body>"
    "<p>Hello {{ first_name }} from {{ city }}!</p>"
    '<p><a href="https://example.com/a?c={{ city }}">first</a></p>'
    '<p><a href="https://example.com/b">second</a></p>'
    "</body></html>"
)
TEXT = "Hello {{ first_name }}, see https://example.com/a"


class WorkerClock:
    """The time a test's worker sees: real time plus an offset the test moves forward
    (a retry due in a minute is due at once after `advance(minutes=2)`)."""

    def __init__(self) -> None:
        self._offset = timedelta()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self._offset += timedelta(**delta)


def wait_until(
    check: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    show: Callable[[], Any] | None = None,
) -> Any:
    """Poll `check` until it returns something truthy; its value. On time-out the
    error says what `show` returns then (the state the test was waiting on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f"; last seen: {show()!r}" if show is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{seen}")
        time.sleep(0.05)


@contextmanager
def running_worker(
    settings: Settings,
    sessions: sessionmaker[Session],
    clock: Callable[[], datetime] | None = None,
    **overrides: Any,
) -> Iterator[DeliveryService]:
    """A delivery worker on its own thread, as `envoi serve` runs it, stopped after."""
    tuned = settings.model_copy(
        update={
            "worker_poll_seconds": 0.05,
            "worker_lease_seconds": 30,
            "router_trusted_hosts": "127.0.0.1",  # the test SMTP peer
            **overrides,
        }
    )
    service = DeliveryService(tuned, sessions, clock=clock or WorkerClock())
    service.start()
    try:
        yield service
    finally:
        service.stop(timeout=30)


def data_url(text: str, media_type: str = "text/csv") -> str:
    return f"data:{media_type};base64,{base64.b64encode(text.encode()).decode()}"


def create_smtp_router(
    client: httpx.Client, peer: SmtpPeer, name: str = "peer", **config: Any
) -> dict[str, Any]:
    """The project's default router: plain SMTP to the test peer, no slow-down pause."""
    body = {
        "name": name,
        "kind": "smtp",
        "config": {
            "host": peer.host,
            "port": peer.port,
            "tls": "none",
            "pause_seconds": 0,
            "timeout": 10,
            **config,
        },
        "is_default": True,
    }
    response = client.post("/routers", json=body)
    assert response.status_code == 201, response.text
    router: dict[str, Any] = response.json()
    return router


def create_email(client: httpx.Client, **fields: Any) -> int:
    category = client.post("/categories", json={"title": "News"})
    assert category.status_code == 201, category.text
    body = {
        "category": category.json()["category"],
        "from_address": "Envoi News <news@example.com>",
        "subject": "Hi {{ first_name }}",
        "text_html": HTML,
        "text_plain": TEXT,
        **fields,
    }
    response = client.post("/emails", json=body)
    assert response.status_code == 201, response.text
    email_id: int = response.json()["id"]
    return email_id


def csv_of(addresses: list[str], city: str = "Paris") -> str:
    lines = [f"{address},{address.split('@')[0].capitalize()},{city}" for address in addresses]
    return "email,first_name,city\n" + "\n".join(lines) + "\n"


def start_campaign(
    client: httpx.Client, email_id: int, addresses: list[str], **extra: Any
) -> dict[str, Any]:
    """Create a regular campaign of `addresses` (a CSV upload) and start it."""
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "U",
        "source_uploaded_csv": data_url(csv_of(addresses)),
        **extra,
    }
    created = client.post("/campaigns", json=body)
    assert created.status_code == 201, created.text
    started = client.post(f"/campaigns/{created.json()['id']}/start")
    assert started.status_code == 200, started.text
    campaign: dict[str, Any] = started.json()
    return campaign


def campaign_state(client: httpx.Client, campaign_id: int) -> str:
    state: str = client.get(f"/campaigns/{campaign_id}").json()["state"]
    return state


def spool_rows(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, SpoolEntry]:
    """The campaign's spool rows by recipient address."""
    with sessions() as session:
        rows = session.scalars(select(SpoolEntry).where(SpoolEntry.campaign_id == campaign_id))
        return {row.recipient or "": row for row in rows}


def states(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, str]:
    return {address: row.state for address, row in spool_rows(sessions, campaign_id).items()}


def outbox(sessions: sessionmaker[Session], campaign_id: int) -> list[OutboxEvent]:
    with sessions() as session:
        query = (
            select(OutboxEvent)
            .where(OutboxEvent.campaign_id == campaign_id)
            .order_by(OutboxEvent.id)
        )
        return list(session.scalars(query))


def state_counts(sessions: sessionmaker[Session], campaign_id: int) -> dict[str, int]:
    with sessions() as session:
        query = (
            select(SpoolEntry.state, func.count())
            .where(SpoolEntry.campaign_id == campaign_id)
            .group_by(SpoolEntry.state)
        )
        counts: dict[str, int] = dict(session.execute(query).all())
        return counts


# -- `envoi worker` processes -------------------------------------------------------------

WORKER = [str(ENVOI), "worker"]


@dataclass
class Standalone:
    """A database with an API server in this process, for `envoi worker` subprocesses."""

    sessions: sessionmaker[Session]
    client: httpx.Client
    env: dict[str, str]


@contextmanager
def standalone(url: str, var_dir: Path, **worker_settings: str) -> Iterator[Standalone]:
    """Migrate `url`, serve its API on loopback (no worker in process), make a project;
    `env` is the environment an `envoi worker` of the same database runs with."""
    upgrade(url)
    settings = Settings(
        database_url=url,
        var_dir=var_dir,
        secret_key="test-secret-key",
        public_url="http://envoi.test",
        deliver_in_process=False,
    )
    with ExitStack() as stack:
        engine = make_engine(url)
        stack.callback(engine.dispose)
        sessions = make_sessionmaker(engine)
        base_url = stack.enter_context(ServerThread(create_app(settings, engine)))
        with transaction(sessions) as session:
            creds = create_project(session, "Workers", login=f"w-{secrets.token_hex(6)}")
        client = stack.enter_context(
            httpx.Client(
                base_url=f"{base_url}/api/v1", auth=(creds.login, creds.secret), timeout=120
            )
        )
        env = {
            **os.environ,
            "ENVOI_DATABASE_URL": url,
            "ENVOI_VAR_DIR": str(var_dir),
            "ENVOI_SECRET_KEY": settings.secret_key,
            "ENVOI_PUBLIC_URL": settings.public_url,
            "ENVOI_ROUTER_TRUSTED_HOSTS": "127.0.0.1",  # the test SMTP peer
            **{f"ENVOI_{name.upper()}": value for name, value in worker_settings.items()},
        }
        yield Standalone(sessions, client, env)


def start_worker(env: dict[str, str], log: IO[str], *args: str) -> subprocess.Popen[str]:
    """`envoi worker ARGS`, its JSON log lines written to `log`."""
    return subprocess.Popen(  # noqa: S603 - our own console script
        [*WORKER, *args], env=env, stdout=log, stderr=log, text=True
    )


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a worker's output (other lines are skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines
