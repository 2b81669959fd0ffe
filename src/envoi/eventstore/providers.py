"""Which mailbox provider hosts a recipient domain, its MX records included (DNS, cached).

The domain table (`core.providers.provider_of`) knows the providers' own domains
(`hotmail.fr`); a company's domain hosted at one (Google Workspace, Microsoft 365,
OVHcloud) is known by its MX hosts (`core.providers.provider_of_mx`). The event store
asks a `ProviderDirectory` for the providers of each batch's distinct domains
(`mapping.ProviderLookup`):

- the domain table first, without I/O;
- else, when MX lookup is on (ENVOI_PROVIDER_MX_LOOKUP), the domain's MX records,
  lowest preference first: the first host the MX table knows gives the provider;
- answers are kept in memory, the `max_entries` domains used last: a DNS answer for
  its TTL held between 1 hour and 1 day (providers change rarely; a short TTL is no
  reason to ask again every minute), no such domain, no MX record or a failed lookup
  for 10 minutes. A failed lookup keeps the provider an earlier answer gave;
- one lookup takes at most `lifetime` (2 s) and a call waits at most `budget` (the
  lifetime) for all of its domains, asked together on a few threads. A domain whose
  lookup is not done by then gets the provider it had last, or none; its lookup goes
  on and the next batch finds the answer. DNS failures never reach the caller.

So the projector is never held up by DNS for more than the budget per batch, at the
price of events of a domain first seen while DNS was slow having no provider (`envoi
events rebuild` gives it to them).
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.nameserver
import dns.rdtypes.mxbase
import dns.resolver
from prometheus_client import CollectorRegistry, Counter

from envoi.core.providers import ascii_domain, provider_of, provider_of_mx

if TYPE_CHECKING:
    from envoi.config import Settings

log = logging.getLogger(__name__)

LIFETIME_SECONDS = 2.0
MIN_TTL = 3_600.0
MAX_TTL = 86_400.0
NEGATIVE_TTL = 600.0
MAX_ENTRIES = 100_000
# Lookups in flight at once: a batch brings few new domains, and a resolver should not
# see a burst from one client.
WORKERS = 8
# Lookups waiting at most: about a minute of work for the threads. Beyond, a domain is
# not asked now but by a later batch (a rebuild's first batches may bring many).
MAX_PENDING = 10_000
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Answer:
    """What a lookup found: the provider (None: none known), and how long it holds."""

    provider: str | None
    ttl: float
    failed: bool = False  # the lookup itself failed (timeout, SERVFAIL, no resolver)


@dataclass(frozen=True)
class _Entry:
    provider: str | None
    expires: float  # on the directory's clock


class ProviderMetrics:
    """Prometheus metrics of a directory, in a registry of its own (like the projector's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lookups = Counter(
            "envoi_provider_mx_lookups",
            "MX lookups of recipient domains the provider table does not know, by result: "
            "provider (a known MX host), other (no known host), absent (no such domain or "
            "no MX record), failed (timeout, SERVFAIL).",
            ["result"],
            registry=self.registry,
        )
        self.late = Counter(
            "envoi_provider_mx_late",
            "Domains given no new answer because their lookup outlasted the batch's budget.",
            registry=self.registry,
        )


class ProviderDirectory:
    """Recipient domain -> provider id: the domain table, then MX hosts (thread-safe)."""

    def __init__(
        self,
        *,
        mx_lookup: bool = True,
        resolver: dns.resolver.Resolver | None = None,
        lifetime: float = LIFETIME_SECONDS,
        budget: float | None = None,
        workers: int = WORKERS,
        max_entries: int = MAX_ENTRIES,
        negative_ttl: float = NEGATIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mx_lookup = mx_lookup
        self.lifetime = lifetime
        self.budget = lifetime if budget is None else budget
        self.max_entries = max_entries
        self.negative_ttl = negative_ttl
        self.metrics = ProviderMetrics()
        self._resolver = resolver
        self._clock = clock
        self._workers = workers
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._pending: dict[str, Future[str | None]] = {}
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ProviderDirectory:
        """The directory ENVOI_PROVIDER_MX_LOOKUP and ENVOI_PROVIDER_DNS_SERVERS describe."""
        return cls(
            mx_lookup=settings.provider_mx_lookup,
            resolver=resolver_for(settings.provider_dns_servers),
        )

    # --- answers ------------------------------------------------------------------------

    def provider(self, domain: str) -> str | None:
        """The provider id of `domain`, None if unknown (or not known in time)."""
        return self.providers((domain,))[domain]

    def providers(self, domains: Iterable[str]) -> dict[str, str | None]:
        """The provider id of each distinct domain (keys as given), looked up together."""
        found: dict[str, str | None] = {}
        unknown: list[str] = []
        for domain in domains:
            if domain not in found:
                found[domain] = provider = provider_of(domain)
                if provider is None and self.mx_lookup:
                    unknown.append(domain)
        if unknown:
            found.update(self._from_mx(unknown))
        return found

    def _from_mx(self, domains: list[str]) -> dict[str, str | None]:
        answers: dict[str, str | None] = {}
        waiting: dict[str, Future[str | None]] = {}
        now = self._clock()
        with self._lock:
            for domain in domains:
                # Most domains come as they are kept (lower case, ASCII): no need to
                # spell them again, which would cost more than the rest of a batch.
                name: str | None = domain
                entry = self._entries.get(domain)
                if entry is None:
                    name = _lookup_name(domain)
                    entry = self._entries.get(name) if name is not None else None
                if name is None:
                    continue  # no host name: no provider
                if entry is not None:
                    self._entries.move_to_end(name)
                    answers[domain] = entry.provider  # also the answer if a refresh is late
                    if entry.expires > now:
                        continue
                if name in self._pending or (len(self._pending) < MAX_PENDING and not self._closed):
                    waiting[domain] = self._submit(name)
        if waiting:
            wait(set(waiting.values()), timeout=self.budget)
            for domain, future in waiting.items():
                if future.done() and not future.cancelled():
                    answers[domain] = future.result()
                else:
                    self.metrics.late.inc()
        return answers

    def cached(self) -> int:
        """How many domains' answers are kept."""
        with self._lock:
            return len(self._entries)

    # --- lookups, on daemon threads (an exiting process does not wait for them) --------

    def _submit(self, name: str) -> Future[str | None]:
        """The lookup of `name`, shared by every caller while it runs (lock held)."""
        future = self._pending.get(name)
        if future is None:
            future = Future()
            self._pending[name] = future
            self._queue.put(name)
            if len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, name="provider-mx", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def _work(self) -> None:
        while (name := self._queue.get()) is not None:
            with self._lock:
                future = self._pending[name]
            if not future.set_running_or_notify_cancel():  # closed meanwhile
                continue
            provider: str | None = None
            try:
                answer = self._lookup(name)
                with self._lock:
                    provider = self._remember(name, answer)
            finally:  # whatever happened, the domain may be asked again
                with self._lock:
                    del self._pending[name]
                future.set_result(provider)

    def _lookup(self, name: str) -> Answer:
        try:
            found = self._get_resolver().resolve(name, "MX", search=False, lifetime=self.lifetime)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self.metrics.lookups.labels("absent").inc()
            return Answer(None, self.negative_ttl)
        except Exception as exc:  # a failed lookup only leaves the provider unknown
            log.debug("MX lookup failed", extra={"domain": name, "error": str(exc)})
            self.metrics.lookups.labels("failed").inc()
            return Answer(None, self.negative_ttl, failed=True)
        ttl = min(max(float(found.rrset.ttl if found.rrset else 0), MIN_TTL), MAX_TTL)
        records = [r for r in found if isinstance(r, dns.rdtypes.mxbase.MXBase)]
        for record in sorted(records, key=lambda r: r.preference):
            provider = provider_of_mx(record.exchange.to_text(omit_final_dot=True))
            if provider is not None:
                self.metrics.lookups.labels("provider").inc()
                return Answer(provider, ttl)
        self.metrics.lookups.labels("other").inc()
        return Answer(None, ttl)

    def _get_resolver(self) -> dns.resolver.Resolver:
        with self._lock:
            if self._resolver is None:
                # Made on first use: reading /etc/resolv.conf is for directories that look up.
                self._resolver = dns.resolver.Resolver()
            return self._resolver

    def _remember(self, name: str, answer: Answer) -> str | None:
        """Keep `answer` for `name` (lock held); the provider it stands for now."""
        previous = self._entries.pop(name, None)
        provider = answer.provider
        if answer.failed and previous is not None:
            provider = previous.provider  # a DNS outage does not unlearn a provider
        self._entries[name] = _Entry(provider, self._clock() + answer.ttl)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return provider

    def close(self) -> None:
        """Stop the lookup threads; lookups not started are dropped."""
        with self._lock:
            self._closed = True
            for future in self._pending.values():
                future.cancel()
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)


def _lookup_name(domain: str) -> str | None:
    """The ASCII name to ask DNS for `domain`'s MX, None if it is no host name."""
    try:
        name = ascii_domain(domain.strip().rstrip(".").lower())
    except ValueError:
        return None
    labels = name.split(".")
    if len(labels) < 2 or len(name) > 253 or not all(_LABEL.fullmatch(x) for x in labels):
        return None
    return name


def resolver_for(servers: str, lifetime: float = LIFETIME_SECONDS) -> dns.resolver.Resolver | None:
    """A resolver asking `servers` (ENVOI_PROVIDER_DNS_SERVERS: comma-separated
    `ADDRESS`, `ADDRESS:PORT` or `[IPV6]:PORT`); None when empty (the system's).
    ValueError names a server that is no address."""
    found = [server.strip() for server in servers.split(",") if server.strip()]
    if not found:
        return None
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [_nameserver(server) for server in found]
    resolver.timeout = resolver.lifetime = lifetime
    return resolver


def _nameserver(server: str) -> dns.nameserver.Nameserver:
    address, port = server, "53"
    if server.startswith("["):
        address, _, rest = server[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif server.count(":") == 1:
        address, port = server.split(":")
    try:
        ipaddress.ip_address(address)
        number = int(port)
    except ValueError:
        number = 0
    if not 0 < number < 65_536:
        raise ValueError(f"DNS server {server!r} is not ADDRESS, ADDRESS:PORT or [IPV6]:PORT")
    return dns.nameserver.Do53Nameserver(address, number)
