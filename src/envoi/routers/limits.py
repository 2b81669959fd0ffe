"""How fast a router may send to one destination, and how it backs off when told to.

A destination (a recipient domain, or a mailbox provider so that hotmail.fr and
outlook.com share Microsoft's limits) gets a `Gate`: at most `connections` messages in
flight at once (a semaphore) and at most `per_second` messages a second (a token
bucket). When the destination answers in a way that asks us to slow down (421, or a
4.7.x status: `SmtpReply.slows_down`), the gate pauses for `pause_seconds`, and if it
is asked again within `recover_seconds` it also halves its rate; the message that got
that answer is a temporary failure the worker retries, and the mail behind it waits
instead of collecting the same answer. After `recover_seconds` without a rate change
the rate doubles back towards its nominal value.

A sender never waits longer than `max_wait` at a gate, whether for the pause, for a
token or for one of the `connections` slots: past that it is told to defer
(`Deferred`, a 451 4.4.5 the worker retries later), so one paused or tarpitting
destination cannot hold every sending slot of a worker. Pure asyncio; no I/O, no
database.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from envoi.core.providers import provider_of
from envoi.delivery.interfaces import SmtpReply

# Rate recovery stops doubling once it is this high: "unlimited" again.
_UNLIMITED_AGAIN = 10_000.0
# Gates kept before idle ones are forgotten (an MX router meets many domains).
_MAX_GATES = 20_000
# The longest a message waits at a gate (or for a pooled session) before it is deferred.
MAX_WAIT = 5.0


@dataclass(frozen=True)
class Limits:
    """One destination's limits. 0 means no limit."""

    connections: int = 0
    per_second: float = 0.0
    pause_seconds: float = 2.0
    recover_seconds: float = 60.0
    min_per_second: float = 1.0
    max_wait: float = MAX_WAIT


class Deferred(Exception):
    """The destination is paused, or all its slots stay busy, for longer than `max_wait`."""

    def __init__(self, key: str, seconds: float, busy: bool = False) -> None:
        if busy:
            text = f"every connection to {key} stayed busy for {seconds:.1f} s"
        else:
            text = f"{key} is slowed down; next send in {seconds:.1f} s"
        super().__init__(text)
        self.key = key
        self.seconds = seconds

    def reply(self) -> SmtpReply:
        """The temporary failure the worker records (4.4.5: system congestion)."""
        return SmtpReply(451, "4.4.5", f"envoi deferred the message: {self}")


def destination_key(domain: str) -> str:
    """Limits apply per mailbox provider when the domain's provider is known."""
    return provider_of(domain) or domain.lower()


class DestinationSettings(Protocol):
    """The per-destination settings a router kind's config has (smtp and mx)."""

    @property
    def domain_connections(self) -> int: ...
    @property
    def domain_messages_per_second(self) -> float: ...
    @property
    def pause_seconds(self) -> float: ...


def destination_limiter(config: DestinationSettings, clock: Callable[[], float]) -> Limiter:
    """The limiter of a router's destinations, from its config."""
    limits = Limits(
        connections=config.domain_connections,
        per_second=config.domain_messages_per_second,
        pause_seconds=config.pause_seconds,
    )
    return Limiter(limits, clock)


class Gate:
    """The limits of one destination, with its current (possibly reduced) rate."""

    def __init__(self, key: str, limits: Limits, clock: Callable[[], float]) -> None:
        self.key = key
        self.limits = limits
        self._clock = clock
        self.nominal = limits.per_second or math.inf
        self.rate = self.nominal
        self._tokens = 1.0
        self._stamp = clock()
        self.paused_until = 0.0
        self._changed_at = 0.0  # when the rate last changed
        self._asked_at: float | None = None  # when the destination last asked to slow down
        self._slots = asyncio.Semaphore(limits.connections) if limits.connections else None
        self.in_flight = 0
        # Messages sent in the current and the previous whole second: the observed rate
        # an unlimited destination is halved from.
        self._window = int(self._stamp)
        self._window_count = 0
        self._last_window_count = 0

    @property
    def idle(self) -> bool:
        return (
            self.in_flight == 0 and self.rate == self.nominal and self._clock() > self.paused_until
        )

    async def enter(self) -> None:
        """Wait for a slot and a token; Deferred if that would take more than max_wait."""
        self._recover(self._clock())
        while (paused := self.paused_until - self._clock()) > 0:
            if paused > self.limits.max_wait:
                raise Deferred(self.key, paused)
            await asyncio.sleep(paused)
        if self._slots is not None:
            await self._acquire_slot(self._slots)
        self.in_flight += 1
        try:
            await self._take_token()
        except BaseException:
            self.leave()
            raise
        self._count(self._clock())

    async def _acquire_slot(self, slots: asyncio.Semaphore) -> None:
        # A cancelled acquire gives its slot back (asyncio.Semaphore handles it).
        if not slots.locked():
            await slots.acquire()  # free: no wait, and no timer to arm and cancel
            return
        try:
            async with asyncio.timeout(self.limits.max_wait):
                await slots.acquire()
        except TimeoutError:
            raise Deferred(self.key, self.limits.max_wait, busy=True) from None

    def leave(self) -> None:
        self.in_flight -= 1
        if self._slots is not None:
            self._slots.release()

    def slow_down(self) -> None:
        """Pause; when the destination asks again within `recover_seconds`, also halve
        the rate (from the rate observed, if it was unlimited).

        One such answer is often about one message (greylisting a new sender); asking
        twice is about the pace.
        """
        now = self._clock()
        if self._asked_at is not None and now - self._asked_at < self.limits.recover_seconds:
            current = self.rate
            if math.isinf(current):
                current = float(max(self._last_window_count, self._window_count, 1))
            self.rate = max(self.limits.min_per_second, current / 2)
            self._tokens = min(self._tokens, 1.0)
            self._changed_at = now
        self._asked_at = now
        self.paused_until = max(self.paused_until, now + self.limits.pause_seconds)

    def _recover(self, now: float) -> None:
        if self.rate >= self.nominal or now - self._changed_at < self.limits.recover_seconds:
            return
        self.rate = self.rate * 2
        if self.rate >= self.nominal or (math.isinf(self.nominal) and self.rate > _UNLIMITED_AGAIN):
            self.rate = self.nominal
        self._changed_at = now

    async def _take_token(self) -> None:
        """Reserve the next token; sleep until it is due. Reservations keep FIFO order."""
        if math.isinf(self.rate):
            return
        now = self._clock()
        capacity = max(1.0, self.rate)  # a burst of at most one second's worth
        self._tokens = min(capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        wait = (1.0 - self._tokens) / self.rate
        if wait > self.limits.max_wait:
            raise Deferred(self.key, wait)
        self._tokens -= 1.0
        if wait > 0:
            await asyncio.sleep(wait)

    def _count(self, now: float) -> None:
        second = int(now)
        if second != self._window:
            self._last_window_count = self._window_count if second == self._window + 1 else 0
            self._window = second
            self._window_count = 0
        self._window_count += 1


class Limiter:
    """Gates by destination key, created on first use with the same limits."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._gates: dict[str, Gate] = {}

    def gate(self, key: str) -> Gate:
        gate = self._gates.get(key)
        if gate is None:
            if len(self._gates) >= _MAX_GATES:
                self._forget_idle()
            gate = self._gates[key] = Gate(key, self.limits, self._clock)
        return gate

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[Gate]:
        """Hold one of the destination's slots for one message (Deferred if paused long)."""
        gate = self.gate(key)
        await gate.enter()
        try:
            yield gate
        finally:
            gate.leave()

    def feedback(self, key: str, reply: SmtpReply) -> bool:
        """Slow the destination down if `reply` asks for it; True if it did."""
        if not reply.slows_down:
            return False
        self.gate(key).slow_down()
        return True

    def _forget_idle(self) -> None:
        for key in [key for key, gate in self._gates.items() if gate.idle]:
            del self._gates[key]
