"""A pool of reusable SMTP sessions to one server (`routers.connection`)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from envoi.delivery.interfaces import SmtpReply
from envoi.routers.connection import SmtpConnection
from envoi.routers.limits import MAX_WAIT, Deferred

Opener = Callable[[], Awaitable[SmtpConnection]]


class ConnectionPool:
    """At most `size` sessions to one server, reused for `messages_per_connection` messages.

    Idle sessions are kept most-recently-used first, so a quiet period lets the extra
    ones age out (`idle_seconds`) while the busy ones stay warm. A sender waits at most
    `max_wait` for a session: past that it gets `Deferred` (the worker retries the
    message later) rather than holding a worker's sending slot behind a slow server.
    """

    def __init__(
        self,
        opener: Opener,
        *,
        size: int,
        messages_per_connection: int,
        idle_seconds: float = 30.0,
        max_wait: float = MAX_WAIT,
        name: str = "the server",
    ) -> None:
        self._opener = opener
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[SmtpConnection] = deque()
        self._per_connection = messages_per_connection
        self._idle_seconds = idle_seconds
        self._max_wait = max_wait
        self._name = name
        self._quitting: set[asyncio.Task[None]] = set()
        self.in_use = 0
        self.closing = False

    @property
    def unused(self) -> bool:
        return self.in_use == 0 and not self._idle

    async def send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        """Send through an idle session or a new one; SessionError if none can be opened,
        Deferred if every session stays busy for `max_wait`."""
        if not self._slots.locked():
            await self._slots.acquire()  # free: no wait, and no timer to arm and cancel
        else:
            try:
                async with asyncio.timeout(self._max_wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise Deferred(self._name, self._max_wait, busy=True) from None
        self.in_use += 1
        try:
            return await self._send(mail_from, recipient, data)
        finally:
            self.in_use -= 1
            self._slots.release()

    async def _send(self, mail_from: str, recipient: str, data: bytes) -> SmtpReply:
        idle = self._take_idle()
        if idle is not None:
            reply, answered = await idle.transaction(mail_from, recipient, data)
            self._give_back(idle)
            if answered:
                return reply
        connection = await self._opener()
        reply, _ = await connection.transaction(mail_from, recipient, data)
        self._give_back(connection)
        return reply

    def _take_idle(self) -> SmtpConnection | None:
        stale = time.monotonic() - self._idle_seconds
        while self._idle and self._idle[0].last_used < stale:
            self._quit(self._idle.popleft())
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            connection.abort()  # closed, or the server said something unasked (a 421)
        return None

    def _give_back(self, connection: SmtpConnection) -> None:
        if not connection.reusable:
            connection.abort()
        elif self.closing or connection.sent >= self._per_connection:
            self._quit(connection)
        else:
            self._idle.append(connection)

    def _quit(self, connection: SmtpConnection) -> None:
        task = asyncio.get_running_loop().create_task(connection.quit())
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    async def close(self) -> None:
        """QUIT every idle session; sessions in use quit when they are given back."""
        self.closing = True
        while self._idle:
            self._quit(self._idle.pop())
        if self._quitting:
            await asyncio.gather(*self._quitting, return_exceptions=True)
