"""Throw-away databases for tests: a SQLite file, or a PostgreSQL database created and dropped."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url


@contextmanager
def temporary_postgres_database(server_url: str) -> Iterator[str]:
    """Create `envoi_test_<random>` on the server of `server_url`, yield its URL, drop it."""
    base = make_url(server_url)
    name = f"envoi_test_{secrets.token_hex(4)}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'envoi.db'}"


def postgres_server_url() -> str:
    """The server on which tests and benchmarks create their throw-away databases."""
    return os.environ.get("ENVOI_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_database(backend: str, directory: Path) -> Iterator[str]:
    """A new, empty database of `backend` ("sqlite" or "postgresql"), removed afterwards."""
    if backend == "sqlite":
        yield sqlite_url(directory)
    else:
        with temporary_postgres_database(postgres_server_url()) as url:
            yield url
