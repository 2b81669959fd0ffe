"""The `mx` router: direct delivery to each recipient domain's MX hosts (RFC 5321 §5).

For a domain: its MX records by preference (equal preferences in random order), or the
domain itself when it has none (the implicit MX); a null MX (`0 .`, RFC 7505), a
domain that does not exist, or one with neither MX nor address (RFC 5321 §5.1) is a
permanent failure; a DNS error is a temporary one. Internationalised domains are
looked up in their IDNA (`xn--`) form.
Each MX host's addresses (A, then AAAA) are tried in turn until one gives an SMTP
session; a host that cannot be reached is remembered as down for a while and tried
last. Answers are cached for their TTL and concurrent lookups of one name share one
query.

Sessions use opportunistic STARTTLS (certificates unchecked, as between MTAs) and are
pooled per MX address; per-destination limits (`routers.limits`) cap the connections
and rate per provider or domain and slow a destination down when it asks to. A
project's mx router connects to public addresses only (`routers.network`): a
recipient domain whose MX points into the operator's network is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from envoi.core.providers import ascii_domain, provider_of_mx
from envoi.delivery.interfaces import Envelope, SmtpReply
from envoi.routers.connection import Endpoint, SmtpConnection
from envoi.routers.limits import Deferred, destination_key, destination_limiter
from envoi.routers.network import OPEN, PUBLIC_ONLY, AddressPolicy
from envoi.routers.pool import ConnectionPool
from envoi.routers.protocol import SessionError, default_helo, internal_error, tls_context
from envoi.routers.schemas import MxConfig

log = logging.getLogger("envoi.mx")

NEGATIVE_TTL = 60.0  # how long "no such domain / no record" is believed
MAX_TTL = 86_400.0
DOWN_SECONDS = 30.0  # an unreachable MX address is tried last for this long
_MAX_POOLS = 1_000
_MAX_ENTRIES = 100_000  # cached DNS answers kept before expired ones are swept
_MAX_DOWN = 10_000  # addresses remembered as down before the expired ones are swept


class DnsTemporary(Exception):
    """The lookup failed (timeout, SERVFAIL): try again later."""

    def reply(self) -> SmtpReply:
        return SmtpReply(0, None, str(self))


@dataclass(frozen=True)
class Route:
    """The hosts to try for one domain, best first; `implicit`: the domain has no MX
    record, so its own name is the host."""

    hosts: tuple[str, ...]
    implicit: bool = False


class DnsCache:
    """MX routes and host addresses, cached for their TTL."""

    def __init__(
        self, resolver: dns.asyncresolver.Resolver | None, clock: Callable[[], float]
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self.queries = 0  # lookups sent (for tests and metrics)

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        # Made on first use: reading /etc/resolv.conf is for routers that really send.
        if self._resolver is None:
            self._resolver = dns.asyncresolver.Resolver()
        return self._resolver

    async def route(self, domain: str) -> Route | SmtpReply:
        """The MX hosts of `domain`, or the permanent failure that no host will fix."""
        result: Route | SmtpReply = await self._cached(("MX", domain), self._lookup_mx)
        return result

    async def addresses(self, host: str) -> tuple[str, ...]:
        """The IPv4 then IPv6 addresses of `host` (none if it has none)."""
        try:
            return (str(ipaddress.ip_address(host)),)
        except ValueError:
            pass
        result: tuple[str, ...] = await self._cached(("A", host), self._lookup_addresses)
        return result

    async def _cached(self, key: tuple[str, str], lookup: Callable[[str], Any]) -> Any:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value, ttl = await lookup(key[1])
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a lookup nobody else waited for is not an error
            raise
        finally:
            del self._inflight[key]
        if len(self._entries) >= _MAX_ENTRIES:
            self._forget_expired()
        self._entries[key] = (self._clock() + min(max(ttl, 1.0), MAX_TTL), value)
        future.set_result(value)
        return value

    def _forget_expired(self) -> None:
        now = self._clock()
        for key in [key for key, (until, _) in self._entries.items() if until <= now]:
            del self._entries[key]
        if len(self._entries) >= _MAX_ENTRIES:  # all fresh: start over rather than grow
            self._entries.clear()

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer, None when the name has no such record; DnsTemporary on failure."""
        self.queries += 1
        try:
            return await self._get_resolver().resolve(name, rdtype, search=False)
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NXDOMAIN:
            raise
        except dns.exception.DNSException as exc:
            raise DnsTemporary(f"DNS lookup of {name} {rdtype} failed: {exc}") from None

    async def _lookup_mx(self, domain: str) -> tuple[Route | SmtpReply, float]:
        try:
            answer = await self._query(domain, "MX")
        except dns.resolver.NXDOMAIN:
            return SmtpReply(550, "5.1.2", f"domain {domain} does not exist"), NEGATIVE_TTL
        if answer is None or answer.rrset is None:
            return Route((domain,), implicit=True), NEGATIVE_TTL  # no MX: the domain itself
        records = list(answer)
        if len(records) == 1 and records[0].exchange == dns.name.root:
            return SmtpReply(556, "5.1.10", f"{domain} accepts no mail (null MX)"), answer.rrset.ttl
        records.sort(key=lambda record: (record.preference, random.random()))  # noqa: S311
        hosts = tuple(
            record.exchange.to_text(omit_final_dot=True).lower()
            for record in records
            if record.exchange != dns.name.root
        )
        return Route(hosts), float(answer.rrset.ttl)

    async def _lookup_addresses(self, host: str) -> tuple[tuple[str, ...], float]:
        found: list[str] = []
        ttls = [NEGATIVE_TTL]
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._query(host, rdtype)
            except dns.resolver.NXDOMAIN:
                break
            if answer is not None and answer.rrset is not None:
                found += [record.address for record in answer]
                ttls.append(float(answer.rrset.ttl))
        return tuple(found), min(ttls) if found else NEGATIVE_TTL


def _route_key(domain: str, key: str, route: Route) -> str:
    """The destination whose limits apply: a domain the provider table does not know
    (a company's own, hosted by Google or Microsoft) shares its provider's limits when
    one of its MX hosts is the provider's (the first known, as in docs/providers.md),
    since that provider is who counts our connections."""
    if key != domain or route.implicit:
        return key
    return next((p for host in route.hosts if (p := provider_of_mx(host))), key)


class MxTransport:
    def __init__(
        self,
        config: MxConfig,
        *,
        resolver: dns.asyncresolver.Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        policy: AddressPolicy = PUBLIC_ONLY,
    ) -> None:
        self.config = config
        self.policy = policy
        self.dns = DnsCache(resolver, clock)
        self._clock = clock
        self._helo = config.helo or default_helo()
        self._pools: dict[tuple[str, str], ConnectionPool] = {}
        # One context for every session: building one loads the CA store (milliseconds).
        self._tls = tls_context(verify=False) if config.tls == "opportunistic" else None
        self._down: dict[str, float] = {}
        self.limiter = destination_limiter(config, clock)

    async def send(self, envelope: Envelope, data: bytes) -> SmtpReply:
        domain = envelope.domain.lower().rstrip(".")
        key = destination_key(domain)
        try:
            lookup = ascii_domain(domain)
        except ValueError as exc:
            return SmtpReply(553, "5.1.3", str(exc))
        try:
            route = await self.dns.route(lookup)
            if isinstance(route, SmtpReply):
                return route
            key = _route_key(domain, key, route)
            async with self.limiter.slot(key):
                reply = await self._deliver(domain, route, envelope, data)
        except DnsTemporary as exc:
            return exc.reply()
        except Deferred as exc:
            return exc.reply()
        except Exception as exc:  # the contract: never raise for one message
            return internal_error(exc)
        self.limiter.feedback(key, reply)
        return reply

    async def _deliver(
        self, domain: str, route: Route, envelope: Envelope, data: bytes
    ) -> SmtpReply:
        pairs, refusal = await self._candidates(route)
        if not pairs:
            if refusal is not None:
                return SmtpReply(0, None, refusal)
            if route.implicit:
                text = f"{domain} has neither MX record nor address: it accepts no mail"
                return SmtpReply(556, "5.1.10", text)
            return SmtpReply(0, None, f"no MX host of {domain} has an address")
        last = SmtpReply(0, None, f"no MX host of {domain} answered")
        for host, address in pairs:
            try:
                return await self._pool(host, address).send(
                    envelope.mail_from, envelope.recipient, data
                )
            except SessionError as exc:
                log.info("MX host unusable", extra={"host": host, "error": exc.reply.text})
                self._mark_down(address)
                last = exc.reply
        return last

    async def _candidates(self, route: Route) -> tuple[list[tuple[str, str]], str | None]:
        """(host, address) pairs the policy allows, in order, addresses recently down
        moved to the end; and why addresses were refused, if some were."""
        pairs: list[tuple[str, str]] = []
        failure: DnsTemporary | None = None
        refusal: str | None = None
        for host in route.hosts:
            try:
                addresses = await self.dns.addresses(host)
            except DnsTemporary as exc:
                failure = exc
                continue
            for address in addresses:
                refused = self.policy.refusal(host, address)
                if refused is None:
                    pairs.append((host, address))
                else:
                    refusal = refusal or refused
        if not pairs and failure is not None:
            raise failure
        now = self._clock()
        return sorted(pairs, key=lambda pair: self._down.get(pair[1], 0.0) > now), refusal

    def _mark_down(self, address: str) -> None:
        now = self._clock()
        if len(self._down) >= _MAX_DOWN:
            self._down = {key: until for key, until in self._down.items() if until > now}
            if len(self._down) >= _MAX_DOWN:  # all recent: start over rather than grow
                self._down.clear()
        self._down[address] = now + DOWN_SECONDS

    def _pool(self, host: str, address: str) -> ConnectionPool:
        pool = self._pools.get((host, address))
        if pool is None:
            if len(self._pools) >= _MAX_POOLS:
                self._forget_unused()
            endpoint = Endpoint(
                host=address,
                port=self.config.port,
                helo=self._helo,
                tls=self.config.tls,
                tls_context=self._tls,
                server_hostname=host,
                timeout=self.config.timeout,
                data_timeout=self.config.data_timeout,
                # `address` passed the policy in `_candidates`, with the MX host's name.
                policy=OPEN,
            )
            pool = ConnectionPool(
                lambda: SmtpConnection.open(endpoint),
                size=self.config.domain_connections,
                messages_per_connection=self.config.messages_per_connection,
                name=f"{host} ({address})",
            )
            self._pools[(host, address)] = pool
        return pool

    def _forget_unused(self) -> None:
        for key, pool in list(self._pools.items()):
            if pool.unused:
                del self._pools[key]

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.close() for pool in pools), return_exceptions=True)
