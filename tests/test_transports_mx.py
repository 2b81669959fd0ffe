"""The mx transport against real SMTP peers and a real DNS server on loopback."""

from __future__ import annotations

import asyncio

import pytest

from envoi.routers import mx
from envoi.routers.schemas import MxConfig
from envoi.testing.smtppeer import SmtpPeer
from tests.transport_support import (
    MESSAGE,
    Certificate,
    DnsServer,
    FakeClock,
    Zone,
    envelope,
    free_port,
    mx_transport,
    run,
    send_all,
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(tmp_path_factory.mktemp("tls"))


def test_mx_delivers_to_the_best_reachable_host(certificate: Certificate) -> None:
    zone: Zone = {
        ("shop.test", "MX"): ["20 backup.shop.test.", "10 mx.shop.test."],
        ("mx.shop.test", "A"): ["127.0.0.1"],
        ("backup.shop.test", "A"): ["127.0.0.3"],
    }
    best = SmtpPeer(tls_context=certificate.server_context()).start()
    backup = SmtpPeer(host="127.0.0.3", port=best.port)
    with best, backup, DnsServer(zone) as server:
        transport = mx_transport(server, best.port)
        replies = run(lambda: send_all(transport, ["ok1@shop.test", "ok2@shop.test"]))
        assert backup.messages == []
    assert [r.code for r in replies] == [250, 250]
    assert best.recipients() == ["ok1@shop.test", "ok2@shop.test"]
    assert best.messages[0].secure  # opportunistic STARTTLS
    assert best.connections == 1
    assert server.queries[("shop.test", "MX")] == 1  # cached
    assert server.queries[("mx.shop.test", "A")] == 1


def test_mx_falls_back_to_the_next_host_and_to_the_domain_address() -> None:
    with SmtpPeer() as peer:
        zone: Zone = {
            ("shop.test", "MX"): ["10 dead.shop.test.", "20 alive.shop.test."],
            ("dead.shop.test", "A"): ["127.0.0.2"],  # nothing listens there
            ("alive.shop.test", "A"): ["127.0.0.1"],
            ("plain.test", "A"): ["127.0.0.1"],  # no MX: the implicit MX
            ("plain.test", "TXT"): ['"v=spf1 -all"'],
        }
        with DnsServer(zone) as server:
            transport = mx_transport(server, peer.port)
            replies = run(lambda: send_all(transport, ["ok@shop.test", "ok@plain.test"]))
        assert [r.code for r in replies] == [250, 250]
        assert peer.recipients() == ["ok@shop.test", "ok@plain.test"]


def test_mx_permanent_and_temporary_dns_failures() -> None:
    zone: Zone = {
        ("nomail.test", "MX"): ["0 ."],
        ("unreachable.test", "MX"): ["10 mx.unreachable.test."],
        ("mx.unreachable.test", "A"): ["127.0.0.2"],
        ("noaddress.test", "TXT"): ['"v=spf1 -all"'],  # exists, with neither MX nor A
    }
    with DnsServer(zone, silent=("slow.test",)) as server:
        transport = mx_transport(server, free_port(), timeout=2)
        recipients = [
            "a@missing.test",
            "a@nomail.test",
            "a@slow.test",
            "a@unreachable.test",
            "a@noaddress.test",
        ]
        missing, null_mx, timeout, refused, no_address = run(
            lambda: send_all(transport, recipients)
        )
    assert (missing.code, missing.status, missing.outcome) == (550, "5.1.2", "permfail")
    assert (null_mx.code, null_mx.status) == (556, "5.1.10")
    assert (timeout.code, timeout.outcome) == (0, "tempfail")
    assert "DNS lookup" in timeout.text
    assert (refused.code, refused.outcome) == (0, "tempfail")
    assert "cannot connect" in refused.text
    # RFC 5321 §5.1: no MX and no address is no mail, for good.
    assert (no_address.code, no_address.status, no_address.outcome) == (556, "5.1.10", "permfail")


def test_mx_looks_up_an_idn_domain_in_its_idna_form() -> None:
    with SmtpPeer(smtputf8=False) as peer:
        zone: Zone = {
            ("xn--exmple-cua.test", "MX"): ["10 mx.xn--exmple-cua.test."],
            ("mx.xn--exmple-cua.test", "A"): ["127.0.0.1"],
        }
        with DnsServer(zone) as server:
            [reply] = run(lambda: send_all(mx_transport(server, peer.port), ["ann@exämple.test"]))
        assert reply.code == 250
        assert peer.recipients() == ["ann@xn--exmple-cua.test"]


def test_mx_cache_follows_the_ttl() -> None:
    with SmtpPeer() as peer:
        zone: Zone = {("ttl.test", "MX"): ["10 mx.ttl.test."], ("mx.ttl.test", "A"): ["127.0.0.1"]}
        with DnsServer(zone, ttl=1) as server:
            transport = mx_transport(server, peer.port)

            async def scenario() -> None:
                await asyncio.gather(
                    *(transport.send(envelope(f"ok{i}@ttl.test"), MESSAGE) for i in range(5))
                )
                await asyncio.sleep(1.2)
                await transport.send(envelope("ok@ttl.test"), MESSAGE)
                await transport.close()

            run(scenario)
        assert len(peer.messages) == 6
        assert server.queries[("ttl.test", "MX")] == 2  # five concurrent sends, one query


def test_mx_slows_a_destination_down() -> None:
    with SmtpPeer() as peer:
        zone: Zone = {
            ("a.test", "MX"): ["10 mx.a.test."],
            ("b.test", "MX"): ["10 mx.a.test."],
            ("mx.a.test", "A"): ["127.0.0.1"],
        }
        with DnsServer(zone) as server:
            transport = mx_transport(server, peer.port, pause_seconds=60)
            grey, deferred, other = run(
                lambda: send_all(transport, ["grey@a.test", "ok@a.test", "ok@b.test"])
            )
        assert grey.slows_down
        assert (deferred.code, deferred.status) == (451, "4.4.5")
        assert other.code == 250
        assert peer.recipients() == ["ok@b.test"]


def test_mx_limits_a_custom_domain_as_its_mx_hosts_provider() -> None:
    """example-corp.test receives its mail at Google: when Gmail asks envoi to slow down,
    the company's domain waits too; a domain with MX hosts of its own does not."""
    with SmtpPeer() as peer:
        zone: Zone = {
            ("gmail.com", "MX"): ["5 gmail-smtp-in.l.google.com."],
            ("example-corp.test", "MX"): ["1 aspmx.l.google.com."],
            ("own.test", "MX"): ["10 mx.own.test."],
            ("gmail-smtp-in.l.google.com", "A"): ["127.0.0.1"],
            ("aspmx.l.google.com", "A"): ["127.0.0.1"],
            ("mx.own.test", "A"): ["127.0.0.1"],
        }
        with DnsServer(zone) as server:
            transport = mx_transport(server, peer.port, pause_seconds=60)
            grey, company, own = run(
                lambda: send_all(
                    transport, ["grey@gmail.com", "ok@example-corp.test", "ok@own.test"]
                )
            )
        assert grey.slows_down
        assert (company.code, company.status) == (451, "4.4.5")
        assert "google" in company.text
        assert own.code == 250
        assert peer.recipients() == ["ok@own.test"]


def test_mx_remembers_a_bounded_number_of_hosts_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mx, "_MAX_DOWN", 3)
    clock = FakeClock()
    with DnsServer({}) as server:
        transport = mx.MxTransport(MxConfig(), resolver=server.resolver(), clock=clock)
        for n in range(3):
            transport._mark_down(f"192.0.2.{n}")
        clock.now += mx.DOWN_SECONDS + 1  # those three are up again
        transport._mark_down("192.0.2.10")
        transport._mark_down("192.0.2.11")
        assert set(transport._down) == {"192.0.2.10", "192.0.2.11"}
