"""The `smtp` router: every message goes to one relay, through a pool of sessions.

The session itself is `routers.connection`, the pool `routers.pool`; this module adds
the router's limits and how a relay's answers slow it down.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from envoi.delivery.interfaces import Envelope, SmtpReply
from envoi.routers.connection import Endpoint, SmtpConnection
from envoi.routers.limits import (
    Deferred,
    Limiter,
    Limits,
    destination_key,
    destination_limiter,
)
from envoi.routers.network import PUBLIC_ONLY, AddressPolicy, is_loopback_host
from envoi.routers.pool import ConnectionPool
from envoi.routers.protocol import SessionError, default_helo, internal_error, tls_context
from envoi.routers.schemas import SmtpConfig


class SmtpTransport:
    """A relay router: every message goes to one SMTP server through a pool of sessions.

    Limits: the pool holds at most `max_connections` sessions; `messages_per_second`
    paces the whole router; `domain_connections` / `domain_messages_per_second` pace
    each destination (provider or domain) behind the relay. A 421 from the relay slows
    the whole router down; another 4.7.x answer slows only that destination.

    `policy` says which addresses the relay may have (`routers.network`): a project's
    router may reach public addresses only. Building the transport loads `ca_file`
    (OSError or ssl.SSLError when it cannot: `make_transport` turns that into a
    transport that fails every message temporarily).
    """

    def __init__(
        self,
        config: SmtpConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        policy: AddressPolicy = PUBLIC_ONLY,
    ) -> None:
        context = None
        if config.tls != "none":
            context = tls_context(verify=config.verify_certs, ca_file=config.ca_file)
        self.endpoint = Endpoint(
            host=config.host,
            port=config.effective_port,
            helo=config.helo or default_helo(),
            tls=config.tls,
            tls_context=context,
            username=config.username,
            password=config.password,
            timeout=config.timeout,
            data_timeout=config.data_timeout,
            policy=policy,
            plaintext_auth=config.allow_plaintext_auth or is_loopback_host(config.host),
        )
        self._pool = ConnectionPool(
            self._open,
            size=config.max_connections,
            messages_per_connection=config.messages_per_connection,
            name=self.endpoint.where,
        )
        self._router = Limiter(
            Limits(per_second=config.messages_per_second, pause_seconds=config.pause_seconds),
            clock,
        )
        self._destinations = destination_limiter(config, clock)

    def _open(self) -> Awaitable[SmtpConnection]:
        return SmtpConnection.open(self.endpoint)

    @property
    def router_gate(self) -> Limiter:
        return self._router

    @property
    def destinations(self) -> Limiter:
        return self._destinations

    async def send(self, envelope: Envelope, data: bytes) -> SmtpReply:
        key = destination_key(envelope.domain)
        try:
            # `Limiter.slot` twice, without its generator-based context managers: 4 µs
            # a message instead of 15 (a few percent of the client's time).
            router = self._router.gate("*")
            await router.enter()
            try:
                destination = self._destinations.gate(key)
                await destination.enter()
                try:
                    reply = await self._pool.send(envelope.mail_from, envelope.recipient, data)
                finally:
                    destination.leave()
            finally:
                router.leave()
        except Deferred as exc:
            return exc.reply()
        except SessionError as exc:
            reply = exc.reply
        except Exception as exc:  # the contract: never raise for one message
            return internal_error(exc)
        if reply.code == 421:
            self._router.feedback("*", reply)
        else:
            self._destinations.feedback(key, reply)
        return reply

    async def close(self) -> None:
        await self._pool.close()
