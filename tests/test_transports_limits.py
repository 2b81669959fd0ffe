"""Router limits: rates, pauses, slowing down, and bounded waits for slots and sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from envoi.delivery.interfaces import SmtpReply
from envoi.routers.connection import Endpoint, SmtpConnection
from envoi.routers.limits import Deferred, Limiter, Limits, destination_key
from envoi.routers.network import OPEN
from envoi.routers.pool import ConnectionPool
from envoi.testing.smtppeer import SmtpPeer
from tests.transport_support import MESSAGE, FakeClock, envelope, relay, run, send_all


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer(slow_seconds=0.3) as running:
        yield running


def test_rate_limit_paces_the_router(peer: SmtpPeer) -> None:
    started = time.monotonic()
    recipients = [f"ok{i}@a.test" for i in range(11)]
    replies = run(lambda: send_all(relay(peer, messages_per_second=20), recipients))
    assert {r.code for r in replies} == {250}
    assert time.monotonic() - started >= 0.45  # ten gaps of 50 ms after the first


def test_a_421_pauses_the_router_then_mail_flows(peer: SmtpPeer) -> None:
    transport = relay(peer, pause_seconds=0.4)

    async def scenario() -> tuple[SmtpReply, SmtpReply, float]:
        busy = await transport.send(envelope("busy1@a.test"), MESSAGE)
        started = time.monotonic()
        after = await transport.send(envelope("ok@b.test"), MESSAGE)
        waited = time.monotonic() - started
        await transport.close()
        return busy, after, waited

    busy, after, waited = run(scenario)
    assert busy.code == 421
    assert after.code == 250
    assert waited >= 0.35


def test_a_long_pause_defers_instead_of_holding_the_worker(peer: SmtpPeer) -> None:
    transport = relay(peer, pause_seconds=60)

    async def scenario() -> list[SmtpReply]:
        replies = [
            await transport.send(envelope("grey1@hotmail.fr"), MESSAGE),
            await transport.send(envelope("ok1@outlook.com"), MESSAGE),  # Microsoft too
            await transport.send(envelope("ok2@gmail.com"), MESSAGE),
        ]
        await transport.close()
        return replies

    grey, deferred, other = run(scenario)
    assert (grey.code, grey.status) == (451, "4.7.1")
    assert (deferred.code, deferred.status, deferred.outcome) == (451, "4.4.5", "tempfail")
    assert "slowed down" in deferred.text
    assert other.code == 250
    assert peer.attempts["ok1@outlook.com"] == 0  # never reached the peer
    assert transport.destinations.gate("microsoft").paused_until > time.monotonic() + 50


def test_destination_connections_are_limited(peer: SmtpPeer) -> None:
    transport = relay(peer, max_connections=5, domain_connections=1)

    async def burst() -> float:
        started = time.monotonic()
        sends = [transport.send(envelope(f"slow{i}@a.test"), MESSAGE) for i in range(3)]
        replies = await asyncio.gather(*sends)
        assert {r.code for r in replies} == {250}
        await transport.close()
        return time.monotonic() - started

    assert run(burst) >= 0.85  # one at a time: 3 x 0.3 s
    assert peer.connections == 1


def test_a_slot_held_longer_than_max_wait_defers_the_next_sender() -> None:
    limiter = Limiter(Limits(connections=1, max_wait=0.1))

    async def scenario() -> tuple[float, SmtpReply]:
        async with limiter.slot("slow.test"):
            started = time.monotonic()
            with pytest.raises(Deferred) as deferred:
                async with asyncio.timeout(5), limiter.slot("slow.test"):
                    pass
            waited = time.monotonic() - started
        async with limiter.slot("slow.test"):  # the slot was given back
            pass
        return waited, deferred.value.reply()

    waited, reply = run(scenario)
    assert 0.09 <= waited < 1.0
    assert (reply.code, reply.status, reply.outcome) == (451, "4.4.5", "tempfail")
    assert "busy" in reply.text
    assert limiter.gate("slow.test").in_flight == 0


def test_a_pool_whose_sessions_stay_busy_defers(peer: SmtpPeer) -> None:
    endpoint = Endpoint(peer.host, peer.port, "envoi.test", policy=OPEN)
    pool = ConnectionPool(
        lambda: SmtpConnection.open(endpoint), size=1, messages_per_connection=10, max_wait=0.1
    )

    async def scenario() -> list[SmtpReply | BaseException]:
        sends = [pool.send("b@envoi.test", r, MESSAGE) for r in ("slow1@a.test", "ok@a.test")]
        results = await asyncio.gather(*sends, return_exceptions=True)
        await pool.close()
        return results

    slow, waiting = run(scenario)
    assert isinstance(slow, SmtpReply)
    assert slow.code == 250
    assert isinstance(waiting, Deferred)
    assert waiting.reply().status == "4.4.5"
    assert peer.attempts["ok@a.test"] == 0


def test_gate_pauses_halves_on_a_second_ask_and_recovers() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(per_second=40, pause_seconds=10, recover_seconds=60), clock)
    gate = limiter.gate("microsoft")
    assert not limiter.feedback("microsoft", SmtpReply(451, "4.2.0", "try later"))
    assert limiter.feedback("microsoft", SmtpReply(451, "4.7.1", "greylisted"))
    assert (gate.rate, gate.paused_until) == (40, clock.now + 10)  # one ask: a pause
    clock.now += 20
    limiter.feedback("microsoft", SmtpReply(421, "4.7.0", "too fast"))
    assert gate.rate == 20  # asked again within a minute: half the pace

    async def enter() -> None:
        async with limiter.slot("microsoft"):
            pass

    with pytest.raises(Deferred) as deferred:  # paused 10 s: longer than max_wait
        run(enter)
    assert deferred.value.reply().status == "4.4.5"
    clock.now += 61
    run(enter)
    assert gate.rate == 40  # a calm minute: back to nominal
    assert limiter.gate("other").rate == 40


def test_unlimited_gate_halves_from_the_observed_rate() -> None:
    clock = FakeClock()
    limiter = Limiter(Limits(pause_seconds=0), clock)

    async def burst() -> None:
        for _ in range(30):
            async with limiter.slot("d.test"):
                pass

    run(burst)
    slow = SmtpReply(421, "4.7.0", "slow down")
    limiter.feedback("d.test", slow)
    limiter.feedback("d.test", slow)
    assert limiter.gate("d.test").rate == 15
    assert destination_key("Hotmail.FR") == destination_key("outlook.com") == "microsoft"
    assert destination_key("Shop.Test") == "shop.test"
