"""`envoi events import | rebuild | status` through the real console script."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from envoi.db.session import make_engine, make_sessionmaker, transaction
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.schema import IMPORT_ID_BASE
from envoi.spool.bulk import OUTBOX, bulk_insert
from tests.conftest import ENVOI


@dataclass
class Setup:
    env: dict[str, str]
    database_url: str
    store_path: Path
    project_id: int

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own console script
            [str(ENVOI), *args], env=self.env, capture_output=True, text=True, check=False
        )

    def stored(self, sql: str = "SELECT * FROM events ORDER BY id") -> list[dict[str, Any]]:
        store = DuckDBStore(self.store_path)
        try:
            names, rows = store.query(sql)
        finally:
            store.close()
        return [dict(zip(names, row, strict=True)) for row in rows]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    env = {
        **os.environ,
        "ENVOI_VAR_DIR": str(tmp_path),
        "ENVOI_DATABASE_URL": f"sqlite:///{tmp_path}/envoi.db",
        "ENVOI_EVENTS_URL": f"duckdb:///{tmp_path}/events.duckdb",
        "ENVOI_SECRET_KEY": "test-secret-key",
    }
    created = subprocess.run(  # noqa: S603 - our own console script
        [str(ENVOI), "project", "create", "Shop"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    project_id = json.loads(created.stdout)["id"]
    return Setup(env, env["ENVOI_DATABASE_URL"], tmp_path / "events.duckdb", project_id)


def jsonl(path: Path, *lines: Any) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def event(project_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "kind": "open",
        "occurred_at": "2021-01-27T10:15:00+01:00",
        "project_id": project_id,
        "post": "S_9093",
        "message": "L_9093",
        "recipient": "Ann@Gmail.com",
        **fields,
    }


def test_a_jsonl_file_is_imported(setup: Setup, tmp_path: Path) -> None:
    file = jsonl(
        tmp_path / "history.jsonl",
        event(setup.project_id),
        "",  # blank lines are skipped
        event(setup.project_id, occurred_at="2021-01-27T08:00:00", tags=["old"]),
        event(setup.project_id, kind="click", link=1, url="https://example.com", machine=None),
        event(setup.project_id, kind="permfail", bounce_class="user_unknown", smtp_code=550),
    )
    done = setup.run("events", "import", str(file))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"file": str(file), "events": 4}
    rows = setup.stored()
    assert [row["id"] - IMPORT_ID_BASE for row in rows] == [0, 1, 2, 3]
    first, second, click, permfail = rows
    assert first["occurred_at"] == datetime(2021, 1, 27, 9, 15)  # noqa: DTZ001 - naive UTC
    assert first["recipient"] == "ann@gmail.com"
    assert first["domain"] == "gmail.com"
    assert first["provider"] == "google"
    assert (first["is_first"], second["is_first"]) == (False, True)  # 08:00 came first
    assert second["tags"] == ["old"]
    assert (click["link"], click["is_first_human"]) == (1, True)
    assert (permfail["smtp_code"], permfail["in_band"]) == (550, True)
    status = setup.run("events", "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) | {"lag_seconds": 0} == {
        "store": setup.env["ENVOI_EVENTS_URL"],
        "cursor": 0,
        "outbox_max_id": 0,
        "pending": 0,
        "lag_seconds": 0,
        "events": 4,
        "imported": 4,
    }
    # A second import takes the next ids.
    more = jsonl(tmp_path / "more.ndjson", event(setup.project_id))
    again = setup.run("events", "import", str(more))
    assert again.returncode == 0, again.stderr
    assert setup.stored("SELECT max(id) AS n FROM events") == [{"n": IMPORT_ID_BASE + 4}]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "line 3: not JSON: Expecting property name enclosed in double quotes"),
        ('["open"]', "line 3: not a JSON object"),
        (
            {"occurred_at": "yesterday"},
            "line 3: occurred_at must be an ISO 8601 time, not 'yesterday'",
        ),
        ({"kind": None}, "line 3: kind is missing"),
        ({"recipent": "x@y.z"}, "line 3: unknown field 'recipent' (docs/events.md lists them)"),
        ({"smtp_code": "550"}, "line 3: smtp_code must be an integer"),
        ({"tags": "a,b"}, "line 3: tags must be a list of strings"),
        ({"project_id": 999}, "line 3: project 999 does not exist"),
        ({"id": 5}, "line 3: unknown field 'id' (docs/events.md lists them)"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_loaded(
    setup: Setup, tmp_path: Path, bad: Any, message: str
) -> None:
    line = json.dumps(event(setup.project_id) | bad) if isinstance(bad, dict) else bad
    file = jsonl(tmp_path / "bad.jsonl", event(setup.project_id), event(setup.project_id), line)
    done = setup.run("events", "import", str(file))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert setup.stored() == []


def test_a_parquet_file_is_imported_and_a_bad_row_named(setup: Setup, tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    bad = tmp_path / "bad.parquet"
    connection = duckdb.connect()
    project = setup.project_id
    connection.execute(
        "CREATE TABLE good AS SELECT * FROM (VALUES "
        "('delivered', TIMESTAMPTZ '2021-01-27 10:00:00+01', ?, 'S_1', 'ann@free.fr', ['a']), "
        "('open', TIMESTAMPTZ '2021-01-28 10:00:00+00', ?, 'S_1', 'ann@free.fr', [])) "
        "t(kind, occurred_at, project_id, post, recipient, tags)",
        [project, project],
    )
    connection.execute(
        "CREATE TABLE bad AS SELECT * FROM (VALUES "
        "('open', '2021-01-27 10:00:00', ?), ('open', 'soon', ?)) t(kind, occurred_at, project_id)",
        [project, project],
    )
    for table, path in (("good", good), ("bad", bad)):
        connection.execute(f"COPY {table} TO '{path}' (FORMAT parquet)")
    connection.close()
    rejected = setup.run("events", "import", str(bad))
    assert rejected.returncode == 1
    assert rejected.stderr.strip().splitlines()[-1] == "error: row 2: occurred_at must be a time"
    done = setup.run("events", "import", str(good))
    assert done.returncode == 0, done.stderr
    rows = setup.stored()
    assert [(r["kind"], r["occurred_at"], r["provider"], r["tags"]) for r in rows] == [
        ("delivered", datetime(2021, 1, 27, 9, 0), "free", ["a"]),  # noqa: DTZ001
        ("open", datetime(2021, 1, 28, 10, 0), "free", []),  # noqa: DTZ001
    ]


def test_rebuild_projects_the_outbox_again_and_keeps_imported_events(
    setup: Setup, tmp_path: Path
) -> None:
    history = jsonl(tmp_path / "h.jsonl", event(setup.project_id))
    imported = setup.run("events", "import", str(history))
    assert imported.returncode == 0, imported.stderr
    engine = make_engine(setup.database_url)
    at = datetime(2024, 3, 1, tzinfo=UTC)
    rows = [
        {
            "project_id": setup.project_id,
            "kind": kind,
            "occurred_at": at + timedelta(minutes=i),
            "campaign_id": 1,
            "email_id": 1,
            "profile_id": None,
            "recipient": f"u{i}@gmail.com",
            "data": {"post": "S_1", "message": "L_1", "domain": "gmail.com", "send_id": i},
        }
        for i, kind in enumerate(["delivered", "delivered", "open"])
    ]
    with transaction(make_sessionmaker(engine)) as session:
        ids = bulk_insert(session, OUTBOX, rows, return_ids=True)
    engine.dispose()
    for _ in range(2):  # twice: the same store
        done = setup.run("events", "rebuild")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"events": 3, "cursor": ids[-1]}
        stored = setup.stored("SELECT id, kind FROM events ORDER BY id")
        assert [row["id"] for row in stored] == [*ids, IMPORT_ID_BASE]
    status = json.loads(setup.run("events", "status").stdout)
    assert (status["events"], status["imported"], status["pending"]) == (4, 1, 0)
    assert (status["cursor"], status["outbox_max_id"]) == (ids[-1], ids[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serving(setup: Setup) -> Iterator[subprocess.Popen[str]]:
    """`envoi serve` on the same store."""
    port = _free_port()
    env = setup.env | {
        "ENVOI_HTTP_LISTEN": f"127.0.0.1:{port}",
        "ENVOI_SMTP_LISTEN": f"127.0.0.1:{_free_port()}",
    }
    process = subprocess.Popen(  # noqa: S603 - our own console script
        [str(ENVOI), "serve"], env=env, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, "envoi serve stopped"
        assert time.monotonic() < deadline, "envoi serve did not start"
        time.sleep(0.1)
    yield process
    process.terminate()
    process.wait(timeout=10)


def test_commands_refuse_the_store_while_envoi_serve_holds_it(
    setup: Setup, serving: subprocess.Popen[str], tmp_path: Path
) -> None:
    file = jsonl(tmp_path / "h.jsonl", event(setup.project_id))
    for args in (("status",), ("rebuild",), ("import", str(file))):
        done = setup.run("events", *args)
        assert done.returncode == 1
        assert done.stderr.strip() == (
            f"error: the event store {setup.store_path} is in use by process {serving.pid} "
            "(`envoi serve`?); DuckDB lets one process write it: stop that process first"
        )
