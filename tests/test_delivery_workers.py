"""`envoi worker` processes: sharing a campaign on PostgreSQL, stopping gracefully,
serving metrics; and how a worker shares its database thread between building a spool
and sending it."""

from __future__ import annotations

import signal
import socket
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from envoi.config import Settings
from envoi.delivery import workers
from envoi.delivery.commits import DatabaseThread
from envoi.testing.databases import sqlite_url, temporary_postgres_database
from envoi.testing.smtppeer import SmtpPeer
from tests.conftest import POSTGRES_URL
from tests.delivery_support import (
    campaign_state,
    create_email,
    create_smtp_router,
    log_lines,
    running_worker,
    standalone,
    start_campaign,
    start_worker,
    state_counts,
    wait_until,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stopped_counts(path: Path) -> dict[str, int]:
    """The outcome counts a worker logged when it stopped."""
    stopped = [line for line in log_lines(path) if line["msg"] == "delivery worker stopped"]
    assert len(stopped) == 1, path.read_text()[-3000:]
    return {k: stopped[0].get(k, 0) for k in ("delivered", "tempfail", "permfail", "skipped")}


@pytest.mark.slow
def test_two_workers_share_a_campaign_on_postgresql(tmp_path: Path) -> None:
    addresses = [f"ok{i}@example.com" for i in range(5000)]
    settings = {"worker_batch": "200", "worker_poll_seconds": "0.2"}
    with (
        SmtpPeer() as peer,
        temporary_postgres_database(POSTGRES_URL) as url,
        standalone(url, tmp_path, **settings) as envoi,
    ):
        create_smtp_router(envoi.client, peer, max_connections=32)
        email_id = create_email(envoi.client)
        campaign = start_campaign(envoi.client, email_id, addresses)
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        with logs[0].open("w") as log_a, logs[1].open("w") as log_b:
            workers = [
                start_worker(envoi.env, log_a, "--once", "--owner", "worker-a"),
                start_worker(envoi.env, log_b, "--once", "--owner", "worker-b"),
            ]
            codes = [worker.wait(timeout=180) for worker in workers]
        assert codes == [0, 0], [p.read_text()[-3000:] for p in logs]
        assert campaign_state(envoi.client, campaign["id"]) == "finished"
        assert state_counts(envoi.sessions, campaign["id"]) == {"delivered": len(addresses)}
        received = Counter(peer.recipients())
    # Nobody got two messages, and both workers did part of the work.
    assert set(received) == set(addresses)
    assert set(received.values()) == {1}
    sent = [_stopped_counts(path)["delivered"] for path in logs]
    assert sum(sent) == len(addresses)
    assert min(sent) > 0, sent


def test_sigterm_finishes_what_is_in_flight_and_releases_the_rest(tmp_path: Path) -> None:
    addresses = [f"ok{i}@example.com" for i in range(1500)]
    metrics_port = _free_port()
    with SmtpPeer() as peer, standalone(sqlite_url(tmp_path), tmp_path) as envoi:
        # 300 messages a second: five seconds of work, stopped after the first 300.
        create_smtp_router(envoi.client, peer, messages_per_second=300)
        email_id = create_email(envoi.client)
        campaign = start_campaign(envoi.client, email_id, addresses)
        log_path = tmp_path / "worker.log"
        with log_path.open("w") as log:
            worker = start_worker(envoi.env, log, "--metrics-listen", f"127.0.0.1:{metrics_port}")
            peer.wait_for(300, timeout=30)
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, log_path.read_text()[-3000:]
        assert 'envoi_delivery_messages_total{outcome="delivered"}' in metrics
        assert "envoi_spool_claimed_total" in metrics
        assert "envoi_delivery_smtp_seconds_bucket" in metrics
        # Every message that left is recorded; nothing stays claimed by the dead worker.
        counts = state_counts(envoi.sessions, campaign["id"])
        assert counts.get("delivered") == len(peer.messages)
        assert set(counts) == {"delivered", "queued"}
        assert _stopped_counts(log_path)["delivered"] == len(peer.messages)
        # Another worker takes over at once (no lease to wait for) and finishes.
        with log_path.open("a") as log:
            assert start_worker(envoi.env, log, "--once").wait(timeout=60) == 0
        wait_until(lambda: campaign_state(envoi.client, campaign["id"]) == "finished")
        received = Counter(peer.recipients())
    assert set(received) == set(addresses)
    assert set(received.values()) == {1}


def test_building_a_spool_leaves_the_database_thread_to_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Build steps and the sending path's group commits take turns on the worker's one
    database thread. Back to back, build steps would leave one commit between two of
    them, so one message per lane per step while a large spool is built; the spooler
    pauses after each step while rows are being sent, and commits run meanwhile."""
    units: list[str] = []  # the database thread's units of work, in the order they ran
    timed = DatabaseThread._timed

    def recorded(self: DatabaseThread, operation: str, fn: Callable[[Session], Any]) -> Any:
        if fn is not workers.analyze_spool:
            units.append(operation)
        return timed(self, operation, fn)

    monkeypatch.setattr(DatabaseThread, "_timed", recorded)
    addresses = [f"ok{i}@example.com" for i in range(3000)]
    url = sqlite_url(tmp_path)
    with SmtpPeer() as peer, standalone(url, tmp_path) as envoi:
        create_smtp_router(envoi.client, peer, max_connections=8)
        email_id = create_email(envoi.client)
        campaign = start_campaign(envoi.client, email_id, addresses)
        settings = Settings(
            database_url=url,
            var_dir=tmp_path,
            secret_key=envoi.env["ENVOI_SECRET_KEY"],
            public_url=envoi.env["ENVOI_PUBLIC_URL"],
            worker_build_batch=300,
            worker_connections=8,
        )
        with running_worker(settings, envoi.sessions):
            wait_until(lambda: campaign_state(envoi.client, campaign["id"]) == "finished", 120)
        assert state_counts(envoi.sessions, campaign["id"]) == {"delivered": len(addresses)}
    steps = [i for i, unit in enumerate(units) if unit == "build"]
    commits_between = [units[a:b].count("flush") for a, b in pairwise(steps)]
    assert len(steps) >= 9, units
    # Once rows are being sent (the first steps may come before any claim), commits run
    # between two build steps: one only, without the pause.
    assert sorted(commits_between)[len(commits_between) // 2] >= 2, commits_between
