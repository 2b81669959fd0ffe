"""Mailbox providers of custom domains by their MX hosts: the MX table, and
`ProviderDirectory` against a real DNS server on loopback (classification, caching for
the TTL, negative caching, the time bound, the LRU bound), feeding the event store."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.nameserver
import pytest

from envoi.config import Settings
from envoi.core.providers import MX_HOSTS, PROVIDERS, provider_of, provider_of_mx
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.mapping import event_row
from envoi.eventstore.projector import Projector
from envoi.eventstore.providers import MAX_TTL, MIN_TTL, ProviderDirectory, resolver_for
from tests.test_projector import Outbox, outbox
from tests.transport_support import DnsServer, FakeClock, Zone

__all__ = ["outbox"]  # the projector tests' OLTP outbox (SQLite and PostgreSQL)

ZONE: Zone = {
    ("acme-corp.test", "MX"): ["10 aspmx.l.google.com.", "20 alt1.aspmx.l.google.com."],
    ("contoso.test", "MX"): ["0 contoso-test.mail.protection.outlook.com."],
    # The server shuffles records (dnspython does): the lowest preference still wins.
    **{
        (f"switching-{i}.test", "MX"): [
            "30 aspmx.l.google.com.",
            "10 switching-test.mx.microsoft.",
            "20 mta5.am0.yahoodns.net.",
        ]
        for i in range(5)
    },
    # The domain's own primary, OVHcloud as backup: the first host the table knows.
    ("backup.test", "MX"): ["10 mail.backup.test.", "20 mx1.mail.ovh.net."],
    ("own-servers.test", "MX"): ["10 mx1.own-servers.test.", "20 mx2.own-servers.test."],
    ("null-mx.test", "MX"): ["0 ."],
    ("no-mx.test", "A"): ["192.0.2.1"],  # a domain without MX record (NoAnswer)
    ("slow.test", "MX"): ["10 aspmx.l.google.com."],  # silent: the resolver times out
}
SILENT = ("slow.test",)
SWITCHING = [f"switching-{i}.test" for i in range(5)]
TEN_MINUTES = 600.0


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(ZONE, ttl=7200, silent=SILENT) as server:
        yield server


def directory_for(server: DnsServer, **options: Any) -> ProviderDirectory:
    """A directory asking `server` (`resolver_for` parses `ADDRESS:PORT`)."""
    return ProviderDirectory(resolver=resolver_for(f"127.0.0.1:{server.port}"), **options)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def directory(dns_server: DnsServer, clock: FakeClock) -> Iterator[ProviderDirectory]:
    found = directory_for(dns_server, clock=clock, lifetime=1.0)
    yield found
    found.close()


def mx_queries(server: DnsServer, domain: str) -> int:
    return server.queries[(domain, "MX")]


# -- the tables ----------------------------------------------------------------------------


def test_the_domain_table_knows_40_providers_and_their_country_variants() -> None:
    assert len(PROVIDERS) >= 40
    variants = {
        "hotmail.co.uk": "microsoft",
        "outlook.com.br": "microsoft",
        "live.fr": "microsoft",
        "yahoo.co.jp": "yahoo",
        "yahoo.com.ar": "yahoo",
        "gmx.at": "gmx",
        "gmx.ch": "gmx",
        "yandex.kz": "yandex",
        "libero.it": "libero",
        "orange.es": "orange",
        "icloud.com": "apple",
        "protonmail.com": "proton",
        "zoho.eu": "zoho",
    }
    assert {domain: provider_of(domain) for domain in variants} == variants


def test_the_mx_table_is_unique_and_well_formed() -> None:
    suffixes = [suffix for suffix, _ in MX_HOSTS]
    assert len(suffixes) == len(set(suffixes)), "a suffix is listed twice"
    label = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
    for suffix, provider in MX_HOSTS:
        assert provider in PROVIDERS, (suffix, provider)
        labels = suffix.split(".")
        assert len(labels) >= 2, f"{suffix}: a bare top-level domain matches every host"
        assert all(label.fullmatch(part) for part in labels), suffix
    # An entry under a shorter one of the same provider would never change an answer.
    table = dict(MX_HOSTS)
    for suffix, provider in MX_HOSTS:
        labels = suffix.split(".")
        shorter = (".".join(labels[i:]) for i in range(1, len(labels) - 1))
        assert all(table.get(s) != provider for s in shorter), f"{suffix} is redundant"
    expected = {
        "google", "microsoft", "yahoo", "apple", "yandex", "mailru", "zoho", "proton",
        "fastmail", "gmx", "webde", "ionos", "orange", "free", "sfr", "laposte", "ovh",
        "qq", "netease", "comcast", "att", "rackspace",
    }  # fmt: skip
    assert expected <= set(table.values())


def test_mx_hosts_name_their_provider() -> None:
    expected = {
        "aspmx.l.google.com.": "google",
        "ALT1.ASPMX.L.GOOGLE.COM": "google",
        "smtp.google.com": "google",
        "aspmx2.googlemail.com": "google",
        "contoso-com.mail.protection.outlook.com": "microsoft",
        "hotmail-com.olc.protection.outlook.com": "microsoft",
        "contoso-com.o-v1.mx.microsoft": "microsoft",
        "mta5.am0.yahoodns.net": "yahoo",
        "mx01.mail.icloud.com": "apple",
        "mx.yandex.net": "yandex",
        "emx.mail.ru": "mailru",
        "mx.zoho.eu": "zoho",
        "mail.protonmail.ch": "proton",
        "in1-smtp.messagingengine.com": "fastmail",
        "mx00.emig.gmx.net": "gmx",
        "mx-ha03.web.de": "webde",
        "mx00.kundenserver.de": "ionos",
        "mx00.ionos.co.uk": "ionos",
        "smtp-in.orange.fr": "orange",
        "mx1.free.fr": "free",
        "mx1.mail.ovh.net": "ovh",
        "mxbiz1.qq.com": "qq",
        "qiye163mx01.mxmail.netease.com": "netease",
        "mx1a1.comcast.net": "comcast",
        "al-ip4-mx-vip1.prodigy.net": "att",
        "mx1.emailsrvr.com": "rackspace",
    }
    assert {host: provider_of_mx(host) for host in expected} == expected
    # Whole labels only; gateways and a company's own servers say nothing.
    for host in ("mx.notgoogle.com", "google.com.evil.test", "acme.pphosted.com", "mx.acme.fr"):
        assert provider_of_mx(host) is None, host
    for host in (".", "", "com", "ovh.net"):
        assert provider_of_mx(host) is None, host


# -- the directory over DNS ----------------------------------------------------------------


def test_custom_domains_are_classified_by_their_mx_hosts(
    directory: ProviderDirectory, dns_server: DnsServer
) -> None:
    domains = [
        "gmail.com",
        "acme-corp.test",
        "contoso.test",
        *SWITCHING,
        "backup.test",
        "own-servers.test",
        "null-mx.test",
        "no-mx.test",
        "gone.test",
        "acme-corp.test",
    ]
    assert directory.providers(domains) == {
        "gmail.com": "google",  # the domain table: no DNS
        "acme-corp.test": "google",
        "contoso.test": "microsoft",
        **dict.fromkeys(SWITCHING, "microsoft"),
        "backup.test": "ovh",
        "own-servers.test": None,
        "null-mx.test": None,
        "no-mx.test": None,
        "gone.test": None,  # NXDOMAIN
    }
    assert mx_queries(dns_server, "gmail.com") == 0
    assert mx_queries(dns_server, "acme-corp.test") == 1
    # One form of a domain: another spelling is the same cached answer.
    assert directory.provider("Acme-Corp.TEST.") == "google"
    assert mx_queries(dns_server, "acme-corp.test") == 1
    # Not host names: no lookup.
    assert directory.providers(["[192.0.2.1]", "localhost", "a b.test"]) == {
        "[192.0.2.1]": None,
        "localhost": None,
        "a b.test": None,
    }
    assert set(dns_server.queries) <= {(domain, "MX") for domain in domains}


@pytest.mark.parametrize(("dns_ttl", "held"), [(60, MIN_TTL), (7200, 7200.0), (10**6, MAX_TTL)])
def test_an_answer_is_kept_for_its_ttl_within_bounds(
    dns_ttl: int, held: float, clock: FakeClock
) -> None:
    with DnsServer(ZONE, ttl=dns_ttl) as server:
        directory = directory_for(server, clock=clock)
        try:
            assert directory.provider("acme-corp.test") == "google"
            clock.now += held - 1
            assert directory.provider("acme-corp.test") == "google"
            assert mx_queries(server, "acme-corp.test") == 1
            clock.now += 2
            assert directory.provider("acme-corp.test") == "google"
            assert mx_queries(server, "acme-corp.test") == 2
        finally:
            directory.close()


def test_absent_domains_and_failures_are_kept_ten_minutes(
    directory: ProviderDirectory, dns_server: DnsServer, clock: FakeClock
) -> None:
    names = ["gone.test", "no-mx.test", "slow.test"]
    assert directory.providers(names) == dict.fromkeys(names)
    wait_until_cached(directory, 3)  # slow.test's lookup outlives the call's budget
    asked = {name: mx_queries(dns_server, name) for name in names}
    clock.now += TEN_MINUTES - 1
    assert directory.providers(names) == dict.fromkeys(names)
    assert {name: mx_queries(dns_server, name) for name in names} == asked
    clock.now += 2
    directory.providers(["gone.test", "no-mx.test"])
    assert mx_queries(dns_server, "gone.test") == asked["gone.test"] + 1
    assert mx_queries(dns_server, "no-mx.test") == asked["no-mx.test"] + 1


def test_a_silent_dns_server_holds_a_batch_no_longer_than_its_budget(
    dns_server: DnsServer,
) -> None:
    directory = directory_for(dns_server, lifetime=1.5, budget=0.5)
    try:
        started = time.monotonic()
        found = directory.providers(["slow.test", "acme-corp.test", "contoso.test"])
        elapsed = time.monotonic() - started
        assert found == {"slow.test": None, "acme-corp.test": "google", "contoso.test": "microsoft"}
        assert 0.4 < elapsed < 1.2
        late = directory.metrics.registry.get_sample_value("envoi_provider_mx_late_total")
        assert late == 1
        # The lookup went on and failed after its lifetime: answered at once from now on.
        wait_until_cached(directory, 3)
        asked = mx_queries(dns_server, "slow.test")
        started = time.monotonic()
        assert directory.provider("slow.test") is None
        assert time.monotonic() - started < 0.2
        assert mx_queries(dns_server, "slow.test") == asked
        failed = directory.metrics.registry.get_sample_value(
            "envoi_provider_mx_lookups_total", {"result": "failed"}
        )
        assert failed == 1
    finally:
        directory.close()


def test_a_dns_outage_does_not_unlearn_a_provider(clock: FakeClock) -> None:
    with DnsServer(ZONE, ttl=7200) as server:
        directory = directory_for(server, clock=clock, lifetime=0.5)
        try:
            assert directory.provider("acme-corp.test") == "google"
            server.silent = ("acme-corp.test",)
            clock.now += 7201
            assert directory.provider("acme-corp.test") == "google"  # the last answer
            wait_until(lambda: mx_queries(server, "acme-corp.test") >= 2)
            time.sleep(0.7)  # the refresh has failed by now: kept ten minutes
            asked = mx_queries(server, "acme-corp.test")
            assert directory.provider("acme-corp.test") == "google"
            assert mx_queries(server, "acme-corp.test") == asked
        finally:
            directory.close()


def test_the_cache_keeps_the_domains_used_last(dns_server: DnsServer, clock: FakeClock) -> None:
    directory = directory_for(dns_server, clock=clock, max_entries=2)
    try:
        for domain in ("acme-corp.test", "contoso.test", "acme-corp.test", "backup.test"):
            directory.provider(domain)
        assert directory.cached() == 2
        # contoso.test was used least recently: it went, acme-corp.test stayed.
        assert directory.providers(["acme-corp.test", "backup.test", "contoso.test"]) == {
            "acme-corp.test": "google",
            "backup.test": "ovh",
            "contoso.test": "microsoft",
        }
        assert mx_queries(dns_server, "acme-corp.test") == 1
        assert mx_queries(dns_server, "backup.test") == 1
        assert mx_queries(dns_server, "contoso.test") == 2
    finally:
        directory.close()


def test_without_mx_lookup_only_the_domain_table_answers(dns_server: DnsServer) -> None:
    directory = directory_for(dns_server, mx_lookup=False)
    assert directory.providers(["acme-corp.test", "hotmail.fr"]) == {
        "acme-corp.test": None,
        "hotmail.fr": "microsoft",
    }
    assert not dns_server.queries


def test_settings_choose_mx_lookup_and_dns_servers(dns_server: DnsServer) -> None:
    settings = Settings(
        provider_mx_lookup=True, provider_dns_servers=f"127.0.0.1:{dns_server.port}"
    )
    directory = ProviderDirectory.from_settings(settings)
    try:
        assert directory.provider("contoso.test") == "microsoft"
    finally:
        directory.close()
    off = ProviderDirectory.from_settings(Settings(provider_mx_lookup=False))
    assert off.provider("contoso.test") is None
    assert mx_queries(dns_server, "contoso.test") == 1
    assert resolver_for("") is None
    resolver = resolver_for("192.0.2.53, [2001:db8::53]:5353, 2001:db8::1")
    assert resolver is not None
    servers = resolver.nameservers
    assert [
        (s.address, s.port) for s in servers if isinstance(s, dns.nameserver.Do53Nameserver)
    ] == [
        ("192.0.2.53", 53),
        ("2001:db8::53", 5353),
        ("2001:db8::1", 53),
    ]
    for bad in ("dns.example", "127.0.0.1:dns", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="is not ADDRESS"):
            resolver_for(bad)


# -- the event store -----------------------------------------------------------------------


def test_an_event_row_takes_its_provider_from_the_directory(
    directory: ProviderDirectory,
) -> None:
    outbox_row = {
        "id": 1,
        "project_id": 1,
        "kind": "open",
        "occurred_at": "2024-03-01 09:00:00",
        "recipient": "someone@acme-corp.test",
        "data": {"post": "S_1"},
    }
    assert event_row(outbox_row)["provider"] is None  # the domain table alone
    assert event_row(outbox_row, directory)["provider"] == "google"


def test_projected_events_of_a_custom_domain_get_its_mx_provider(
    outbox: Outbox, directory: ProviderDirectory, dns_server: DnsServer, tmp_path: Path
) -> None:
    recipients = [
        "ann@gmail.com",
        "someone@acme-corp.test",
        "bob@contoso.test",
        "cyd@own-servers.test",
        "dan@acme-corp.test",
    ]
    outbox.add(*(outbox.event(recipient=r, domain=None) for r in recipients))
    store = DuckDBStore(tmp_path / "events.duckdb", directory)
    try:
        assert Projector(outbox.sessions, store).run_until_idle() == len(recipients)
        rows = store.query("SELECT recipient, domain, provider FROM events ORDER BY id")[1]
    finally:
        store.close()
    assert rows == [
        ("ann@gmail.com", "gmail.com", "google"),
        ("someone@acme-corp.test", "acme-corp.test", "google"),
        ("bob@contoso.test", "contoso.test", "microsoft"),
        ("cyd@own-servers.test", "own-servers.test", None),
        ("dan@acme-corp.test", "acme-corp.test", "google"),
    ]
    assert mx_queries(dns_server, "acme-corp.test") == 1  # once per distinct domain


# -- helpers -------------------------------------------------------------------------------


def wait_until_cached(directory: ProviderDirectory, count: int) -> None:
    wait_until(lambda: directory.cached() >= count)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
