"""kill -9 of `envoi worker` in the middle of a 20,000-recipient campaign.

After a restart every recipient has received exactly one message, except the rows
that were in flight (state `sending`) at the kill: those are sent again, flagged
`uncertain` and logged, and there are at most `worker_connections` of them.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from envoi.spool.models import SpoolEntry
from envoi.testing.databases import sqlite_url
from envoi.testing.smtppeer import SmtpPeer
from tests.delivery_support import (
    campaign_state,
    create_email,
    create_smtp_router,
    log_lines,
    standalone,
    start_campaign,
    start_worker,
    state_counts,
)

RECIPIENTS = 20_000
CONNECTIONS = 16  # the in-flight bound
LEASE_SECONDS = 3  # how long the restarted worker waits for the dead one's rows


@pytest.mark.slow
def test_kill_9_sends_nobody_twice_beyond_the_rows_in_flight(tmp_path: Path) -> None:
    addresses = [f"ok{i}@example.com" for i in range(RECIPIENTS)]
    settings = {
        "worker_connections": str(CONNECTIONS),
        "worker_lease_seconds": str(LEASE_SECONDS),
        "worker_poll_seconds": "0.2",
    }
    with SmtpPeer() as peer, standalone(sqlite_url(tmp_path), tmp_path, **settings) as envoi:
        create_smtp_router(envoi.client, peer)
        email_id = create_email(envoi.client)
        campaign = start_campaign(envoi.client, email_id, addresses)
        first_log = tmp_path / "first.log"
        with first_log.open("w") as log:
            first = start_worker(envoi.env, log)
            try:
                peer.wait_for(RECIPIENTS // 4, timeout=60)
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=10)
        killed_at = len(peer.messages)
        at_kill = state_counts(envoi.sessions, campaign["id"])
        assert killed_at < RECIPIENTS, "the campaign finished before the kill"
        in_flight_at_kill = at_kill.get("sending", 0)
        assert in_flight_at_kill <= CONNECTIONS

        began = time.monotonic()
        second_log = tmp_path / "second.log"
        with second_log.open("w") as log:
            second = start_worker(envoi.env, log, "--once")
            assert second.wait(timeout=120) == 0, second_log.read_text()[-3000:]
        restart_seconds = time.monotonic() - began
        assert campaign_state(envoi.client, campaign["id"]) == "finished"
        received = Counter(peer.recipients())
        with envoi.sessions() as session:
            uncertain = {
                row.recipient: row.id
                for row in session.scalars(
                    select(SpoolEntry).where(
                        SpoolEntry.campaign_id == campaign["id"], SpoolEntry.uncertain
                    )
                )
            }
    assert state_counts(envoi.sessions, campaign["id"]) == {"delivered": RECIPIENTS}
    # Everyone got the message; only rows reported uncertain may have got it twice.
    assert set(received) == set(addresses)
    twice = {address for address, count in received.items() if count > 1}
    assert twice <= set(uncertain)
    assert max(received.values()) <= 2
    # The uncertain rows are exactly those in flight at the kill, and they are reported.
    assert len(uncertain) == in_flight_at_kill <= CONNECTIONS
    warned = {
        line["spool_id"]
        for line in log_lines(second_log)
        if line["level"] == "warning" and "spool_id" in line and "in flight" in line["msg"]
    }
    assert warned == set(uncertain.values())
    assert restart_seconds < 60
