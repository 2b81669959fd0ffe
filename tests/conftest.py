"""The API suite runs once per OLTP backend: SQLite (embedded) and a real PostgreSQL.

Each backend gets its own migrated database and a real uvicorn server on loopback;
each test makes its own projects, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade
from envoi.projects.services import Credentials, create_project
from envoi.testing.databases import (
    postgres_server_url,
    sqlite_url,
    temporary_postgres_database,
)
from envoi.testing.server import ServerThread
from envoi.web.app import create_app

POSTGRES_URL = postgres_server_url()
# No DNS from the suite's servers: events' providers come from the domain table (the MX
# lookup's tests ask a DNS server of their own, tests/test_providers_mx.py).
os.environ.setdefault("ENVOI_PROVIDER_MX_LOOKUP", "false")


@dataclass
class Backend:
    """One running envoi: its database, its sessions and the base URL of its HTTP server."""

    name: str
    database_url: str
    base_url: str
    sessions: sessionmaker[Session]
    settings: Settings


@contextmanager
def served_backend(name: str, var_dir: Path, **settings: Any) -> Iterator[Backend]:
    """A migrated database of back-end `name` ("sqlite" or "postgresql") and envoi's API
    served over it on loopback; `settings` override the test defaults."""
    with ExitStack() as stack:
        if name == "sqlite":
            url = sqlite_url(var_dir)
        else:
            url = stack.enter_context(temporary_postgres_database(POSTGRES_URL))
        upgrade(url)
        engine = make_engine(url)
        stack.callback(engine.dispose)
        defaults: dict[str, Any] = {
            "secret_key": "test-secret-key",
            "public_url": "http://envoi.test",
            "auth_max_failures": 1_000_000,  # every test client shares 127.0.0.1
            # Delivery tests run their own workers against their own SMTP peer.
            "deliver_in_process": False,
            # Scheduler tests run their own, on a frozen clock.
            "scheduler_in_process": False,
        }
        config = Settings(database_url=url, var_dir=var_dir, **(defaults | settings))
        base_url = stack.enter_context(ServerThread(create_app(config, engine)))
        yield Backend(name, url, base_url, make_sessionmaker(engine), config)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    name: str = request.param
    with served_backend(name, tmp_path_factory.mktemp(f"envoi-{name}")) as served:
        yield served


@dataclass
class ApiProject:
    """A project and an HTTP client authenticated as it."""

    creds: Credentials
    client: httpx.Client

    @property
    def id(self) -> int:
        return self.creds.id


ProjectFactory = Callable[..., ApiProject]


@pytest.fixture
def make_project(backend: Backend) -> Iterator[ProjectFactory]:
    clients: list[httpx.Client] = []

    def factory(allowed_ips: tuple[str, ...] = ()) -> ApiProject:
        with transaction(backend.sessions) as session:
            creds = create_project(
                session, "Test", login=f"t-{secrets.token_hex(6)}", allowed_ips=allowed_ips
            )
        client = httpx.Client(
            base_url=f"{backend.base_url}/api/v1", auth=(creds.login, creds.secret), timeout=60
        )
        clients.append(client)
        return ApiProject(creds, client)

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def project(make_project: ProjectFactory) -> ApiProject:
    """The project a test acts as."""
    return make_project()


@pytest.fixture
def other_project(make_project: ProjectFactory) -> ApiProject:
    """A second project, to prove the first never sees its rows."""
    return make_project()


@pytest.fixture
def anonymous(backend: Backend) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=backend.base_url, timeout=30) as client:
        yield client


ENVOI = Path(sys.executable).parent / "envoi"  # the console script of this venv


@dataclass
class Served:
    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[str]
    var_dir: Path
    smtp_port: int  # the inbound SMTP listener (bounces, complaints)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port, smtp_port = _free_port(), _free_port()
    while smtp_port == port:  # both sockets were closed: the OS may hand one out twice
        smtp_port = _free_port()
    var_dir = tmp_path / "var"
    env = {
        **os.environ,
        "ENVOI_VAR_DIR": str(var_dir),
        "ENVOI_DATABASE_URL": f"sqlite:///{var_dir}/envoi.db",
        "ENVOI_HTTP_LISTEN": f"127.0.0.1:{port}",
        "ENVOI_SMTP_LISTEN": f"127.0.0.1:{smtp_port}",
    }
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [str(ENVOI), "serve"], env=env, stderr=subprocess.PIPE, text=True
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base_url}/api/v1/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"envoi serve did not start: {process.communicate()[1]}")
        time.sleep(0.1)
    yield Served(base_url, env, process, var_dir, smtp_port)
    if process.poll() is None:
        process.terminate()
        process.communicate(timeout=10)
    if process.stderr is not None:
        process.stderr.close()
