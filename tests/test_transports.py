"""The smtp transport against a real SMTP peer on loopback: replies, sessions, envelopes,
what a server may not do, where a router may connect; and every transport against the
`Transport` contract. TLS and AUTH: test_transports_tls.py; limits:
test_transports_limits.py; mx: test_transports_mx.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy.orm import sessionmaker

from envoi.delivery.interfaces import Envelope, SmtpReply, Transport
from envoi.routers.network import PUBLIC_ONLY, AddressPolicy
from envoi.routers.protocol import dot_stuffed, parse_reply
from envoi.routers.routing import RouterSpec, make_transport
from envoi.routers.schemas import SmtpConfig
from envoi.routers.smtp import SmtpTransport
from envoi.testing.smtppeer import SmtpPeer
from tests.conftest import ApiProject, Backend
from tests.transport_support import (
    MESSAGE,
    Client,
    DnsServer,
    ScriptedServer,
    Zone,
    envelope,
    free_port,
    mx_transport,
    relay,
    run,
    send_all,
)


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    with SmtpPeer(slow_seconds=0.3) as running:
        yield running


# -- replies and payloads ----------------------------------------------------------------


def test_reply_parsing() -> None:
    assert parse_reply([b"250 2.0.0 Ok: queued as X"]) == SmtpReply(250, "2.0.0", "Ok: queued as X")
    assert parse_reply([b"550-5.1.1 The email account", b"550 5.1.1 does not exist"]) == (
        SmtpReply(550, "5.1.1", "The email account does not exist")
    )
    assert parse_reply([b"451 greylisted"]) == SmtpReply(451, None, "greylisted")
    assert parse_reply([b"250 5.1.1 wrong class"]).status is None
    assert parse_reply([b"garbage"]).code == 0


def test_dot_stuffing_and_line_ends() -> None:
    assert dot_stuffed(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert dot_stuffed(b".top\nbare lf\rbare cr") == b"..top\r\nbare lf\r\nbare cr\r\n.\r\n"
    assert dot_stuffed(b"") == b".\r\n"
    # Every bare CR or LF is found, wherever it is (first and last bytes included).
    for data, normalised in [
        (b"\n", b"\r\n"),
        (b"\r", b"\r\n"),
        (b"\na\r\n", b"\r\na\r\n"),
        (b"a\r\nb\r", b"a\r\nb\r\n"),
        (b"a\n\rb\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\r\r\nb\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\r\n\nb\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n..\r\n"),
    ]:
        assert dot_stuffed(data) == normalised + b".\r\n", data


# -- the peer's behaviours through the relay transport ------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_each_peer_behaviour_gives_its_reply(pipelining: bool) -> None:
    with SmtpPeer(pipelining=pipelining) as peer:
        check_each_behaviour(peer)


def check_each_behaviour(peer: SmtpPeer) -> None:
    recipients = [
        "ok@a.test",
        "unknown1@a.test",
        "full1@a.test",
        "grey1@a.test",
        "grey1@a.test",
        "spam1@a.test",
        "drop1@a.test",
        "drop1@a.test",
        "busy1@b.test",
        "busy1@b.test",
    ]
    replies = run(lambda: send_all(relay(peer, pause_seconds=0), recipients))
    got = [(r.code, r.status) for r in replies]
    assert got == [
        (250, "2.0.0"),
        (550, "5.1.1"),
        (552, "5.2.2"),
        (451, "4.7.1"),
        (250, "2.0.0"),
        (554, "5.7.1"),
        (0, None),
        (250, "2.0.0"),
        (421, "4.7.0"),
        (250, "2.0.0"),
    ]
    assert [r.outcome for r in replies[:4]] == ["delivered", "permfail", "permfail", "tempfail"]
    assert "connection lost" in replies[6].text
    assert replies[8].slows_down
    assert peer.recipients() == ["ok@a.test", "grey1@a.test", "drop1@a.test", "busy1@b.test"]
    assert peer.attempts["grey1@a.test"] == 2
    # Refusals reuse the session (RSET first); the drop and the 421 each cost one.
    assert peer.connections == 3
    assert peer.rsets >= 4


def test_slow_answers_are_waited_for(peer: SmtpPeer) -> None:
    started = time.monotonic()
    [reply] = run(lambda: send_all(relay(peer), ["slow1@a.test"]))
    assert reply.code == 250
    assert time.monotonic() - started >= 0.3


def test_message_arrives_as_sent(peer: SmtpPeer) -> None:
    data = b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nend"
    run(lambda: send_all(relay(peer), ["ok@a.test"], data))
    [received] = peer.messages
    assert received.mail_from == "bounces+1@envoi.test"
    assert received.recipients == ("ok@a.test",)
    assert received.data == data + b"\r\n"
    assert not received.secure


# -- internationalised addresses -------------------------------------------------------------


def test_non_ascii_local_part_uses_smtputf8(peer: SmtpPeer) -> None:
    [reply] = run(lambda: send_all(relay(peer), ["jürgen@exämple.test"]))
    assert reply.code == 250
    assert peer.recipients() == ["jürgen@xn--exmple-cua.test"]


def test_idn_domain_goes_as_idna_to_a_server_without_smtputf8() -> None:
    with SmtpPeer(smtputf8=False) as peer:
        ascii_local, utf8_local = run(
            lambda: send_all(relay(peer), ["ann@exämple.test", "jürgen@exämple.test"])
        )
    assert (ascii_local.code, ascii_local.outcome) == (250, "delivered")
    assert peer.recipients() == ["ann@xn--exmple-cua.test"]
    # Only a non-ASCII local part needs SMTPUTF8; without it that address cannot go.
    assert (utf8_local.code, utf8_local.status) == (553, "5.6.7")


# -- sessions ------------------------------------------------------------------------------


def test_connections_are_reused_and_bounded(peer: SmtpPeer) -> None:
    transport = relay(peer, max_connections=3, messages_per_connection=10)

    async def burst() -> list[SmtpReply]:
        try:
            sends = [transport.send(envelope(f"ok{i}@a.test"), MESSAGE) for i in range(60)]
            return await asyncio.gather(*sends)
        finally:
            await transport.close()

    replies = run(burst)
    assert {r.code for r in replies} == {250}
    assert len(peer.messages) == 60
    # 60 messages, 10 per session, 3 sessions at a time: 6 sessions, each used fully.
    assert 6 <= peer.connections <= 9


def test_one_session_carries_many_messages(peer: SmtpPeer) -> None:
    replies = run(
        lambda: send_all(relay(peer, max_connections=1), [f"ok{i}@a.test" for i in range(50)])
    )
    assert {r.code for r in replies} == {250}
    assert peer.connections == 1


def test_a_session_closed_while_idle_is_replaced(peer: SmtpPeer) -> None:
    transport = relay(peer, max_connections=1)

    async def scenario() -> list[SmtpReply]:
        first = await transport.send(envelope("ok1@a.test"), MESSAGE)
        peer.drop_sessions()  # as a server does with idle sessions
        await asyncio.sleep(0.05)  # the client sees the session end
        second = await transport.send(envelope("ok2@a.test"), MESSAGE)
        peer.drop_sessions()
        # No pause: the client writes into the closed session before it notices; no
        # reply came, so nothing was delivered and the message goes through a new one.
        third = await transport.send(envelope("ok3@a.test"), MESSAGE)
        await transport.close()
        return [first, second, third]

    assert [r.code for r in run(scenario)] == [250, 250, 250]
    assert peer.recipients() == ["ok1@a.test", "ok2@a.test", "ok3@a.test"]
    assert peer.connections == 3


def test_a_stray_reply_on_an_idle_session_is_not_taken_for_the_next_answer() -> None:
    def says_goodbye_while_idle(client: Client) -> None:
        client.greet()
        client.accept()
        client.send(b"421 4.4.2 idle too long, closing\r\n")  # and leaves the socket open
        client.wait_closed()

    def serves(client: Client) -> None:
        client.greet()
        client.accept()
        client.expect(b"QUIT")
        client.send(b"221 bye\r\n")

    with ScriptedServer(says_goodbye_while_idle, serves) as server:
        transport = relay(server, max_connections=1)

        async def scenario() -> list[SmtpReply]:
            first = await transport.send(envelope("ok1@a.test"), MESSAGE)
            await asyncio.sleep(0.1)  # the 421 arrives while the session is idle
            second = await transport.send(envelope("ok2@a.test"), MESSAGE)
            await transport.close()
            return [first, second]

        replies = run(scenario)
    # The second message went through a new session; the router was not slowed down.
    assert [r.code for r in replies] == [250, 250]
    assert server.connections == 2
    assert transport.router_gate.gate("*").paused_until == 0


def test_unreachable_relay_is_a_temporary_failure() -> None:
    config = SmtpConfig(host="127.0.0.1", port=free_port(), tls="none", timeout=2)
    transport = SmtpTransport(config, policy=AddressPolicy(allow_private=True))
    [reply] = run(lambda: send_all(transport, ["ok@a.test"]))
    assert reply.code == 0
    assert reply.outcome == "tempfail"
    assert "cannot connect" in reply.text


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = SmtpConfig(host="127.0.0.1", port=silent.getsockname()[1], tls="none", timeout=0.5)
        transport = SmtpTransport(config, policy=AddressPolicy(allow_private=True))
        [reply] = run(lambda: send_all(transport, ["ok@a.test"]))
    assert (reply.code, reply.outcome) == (0, "tempfail")
    assert "timed out" in reply.text


def test_the_answer_to_the_message_has_its_own_timeout() -> None:
    def never_answers_the_message(client: Client) -> None:
        client.greet()
        client.envelope()
        client.message()
        client.wait_closed()  # the message is in, the answer never comes

    with ScriptedServer(never_answers_the_message) as server:
        transport = relay(server, timeout=5, data_timeout=0.3)
        started = time.monotonic()
        [reply] = run(lambda: send_all(transport, ["ok@a.test"]))
    assert time.monotonic() - started < 3
    assert (reply.code, reply.outcome) == (0, "tempfail")
    assert "may have been delivered" in reply.text


def test_a_server_silent_after_the_greeting_times_out() -> None:
    def never_answers_mail(client: Client) -> None:
        client.greet()
        client.expect(b"MAIL")
        client.wait_closed()

    with ScriptedServer(never_answers_mail) as server:
        started = time.monotonic()
        [reply] = run(lambda: send_all(relay(server, timeout=0.3), ["ok@a.test"]))
    assert time.monotonic() - started < 3
    assert (reply.code, reply.outcome) == (0, "tempfail")
    assert reply.text == f"timed out waiting for {server.host}:{server.port}"
    assert not reply.uncertain


def test_each_wait_of_a_session_has_its_own_deadline() -> None:
    """One session, three messages: the answer to the first message comes after longer
    than `timeout` but within `data_timeout`; the second is answered at once; the envelope
    of the third never is, and times out after `timeout`, not `data_timeout`."""

    def answers(client: Client) -> None:
        client.greet()
        client.envelope()
        client.message()
        time.sleep(1.0)
        client.send(b"250 2.0.0 queued late\r\n")
        client.accept()
        client.expect(b"MAIL")
        client.wait_closed()

    with ScriptedServer(answers) as server:
        transport = relay(server, timeout=0.5, data_timeout=20)

        async def timed() -> list[tuple[SmtpReply, float]]:
            results = []
            try:
                for recipient in ["a@a.test", "b@a.test", "c@a.test"]:
                    started = time.monotonic()
                    reply = await transport.send(envelope(recipient), MESSAGE)
                    results.append((reply, time.monotonic() - started))
            finally:
                await transport.close()
            return results

        (late, late_s), (prompt, _), (silent, silent_s) = run(timed)
    assert server.connections == 1
    assert (late.code, late.text, late_s > 0.9) == (250, "queued late", True)
    assert prompt.code == 250
    assert silent.code == 0
    assert "timed out" in silent.text
    assert silent_s < 10


# -- what a server may not send --------------------------------------------------------------


def test_a_reply_line_too_long_ends_the_session() -> None:
    def floods(client: Client) -> None:
        client.send(b"220-" + b"x" * 10_000)
        client.wait_closed()

    with ScriptedServer(floods) as server:
        [reply] = run(lambda: send_all(relay(server, timeout=5), ["ok@a.test"]))
    assert reply.code == 0
    assert "longer than 4096 bytes" in reply.text


def test_a_reply_of_too_many_lines_ends_the_session() -> None:
    def rambles(client: Client) -> None:
        client.send(b"220-hello\r\n" * 1000)
        client.wait_closed()

    with ScriptedServer(rambles) as server:
        [reply] = run(lambda: send_all(relay(server, timeout=5), ["ok@a.test"]))
    assert reply.code == 0
    assert "more than 100 lines" in reply.text


# -- where a router may connect ----------------------------------------------------------------


def test_a_project_router_reaches_public_addresses_only(peer: SmtpPeer) -> None:
    refused, *_ = run(lambda: send_all(relay(peer, policy=PUBLIC_ONLY), ["ok@a.test"]))
    assert (refused.code, refused.outcome) == (0, "tempfail")
    assert "127.0.0.1, a private address" in refused.text
    assert peer.connections == 0
    for trusted in (["127.0.0.1"], ["127.0.0.0/8"], ["relay.test", "127.0.0.1/32"]):
        transport = relay(peer, policy=AddressPolicy.of(trusted_hosts=trusted))
        [allowed] = run(partial(send_all, transport, ["ok@a.test"]))
        assert allowed.code == 250, trusted
    with pytest.raises(ValueError, match="not a host name"):
        AddressPolicy.of(trusted_hosts=["a b"])


def test_make_transport_applies_the_policy_by_who_defined_the_router(peer: SmtpPeer) -> None:
    config = {"host": peer.host, "port": peer.port, "tls": "none"}
    sessions = sessionmaker()  # no capture router here: never used

    def send(spec: RouterSpec, trusted_hosts: tuple[str, ...] = ()) -> SmtpReply:
        transport = make_transport(spec, sessions, trusted_hosts=trusted_hosts)
        [reply] = run(lambda: send_all(transport, ["ok@a.test"]))
        return reply

    project_router = RouterSpec(1, "mine", "smtp", config)
    assert "private address" in send(project_router).text
    assert send(project_router, trusted_hosts=("127.0.0.1",)).code == 250
    assert send(RouterSpec(2, "shared", "smtp", config, trusted=True)).code == 250
    vouched = RouterSpec(3, "vouched", "smtp", config | {"allow_private_network": True})
    assert send(vouched).code == 250


def test_an_mx_router_refuses_mx_hosts_with_private_addresses(peer: SmtpPeer) -> None:
    zone: Zone = {("shop.test", "MX"): ["10 mx.shop.test."], ("mx.shop.test", "A"): ["127.0.0.1"]}
    with DnsServer(zone) as server:
        transport = mx_transport(server, peer.port, policy=PUBLIC_ONLY)
        [reply] = run(lambda: send_all(transport, ["ok@shop.test"]))
    assert (reply.code, reply.outcome) == (0, "tempfail")
    assert "mx.shop.test resolves to 127.0.0.1, a private address" in reply.text
    assert peer.connections == 0


# -- the Transport contract, for every kind ---------------------------------------------------


@pytest.mark.parametrize("kind", ["smtp", "mx", "capture", "unusable"])
def test_every_transport_keeps_the_contract(
    kind: str, backend: Backend, project: ApiProject, peer: SmtpPeer
) -> None:
    """Every kind answers each message with an SmtpReply (never an exception), delivers
    what it can, and closes, twice if need be."""
    zone: Zone = {("a.test", "MX"): ["10 mx.a.test."], ("mx.a.test", "A"): ["127.0.0.1"]}
    configs: dict[str, dict[str, Any]] = {
        "smtp": {"host": peer.host, "port": peer.port, "tls": "none"},
        "mx": {"port": peer.port, "tls": "none"},
        "capture": {},
        "unusable": {"host": "relay.test", "colour": "red"},
    }
    config = configs[kind]
    spec = RouterSpec(None, kind, "smtp" if kind == "unusable" else kind, config, trusted=True)

    def sent(recipient: str) -> Envelope:
        return Envelope("bounces+1@envoi.test", recipient, "a.test", project_id=project.id)

    async def scenario(transport: Transport) -> list[SmtpReply]:
        replies = [
            await transport.send(sent("ok@a.test"), MESSAGE),
            await transport.send(sent("unknown@a.test"), MESSAGE),
            await transport.send(sent("bad<address>@a.test"), MESSAGE),
        ]
        await transport.close()
        await transport.close()
        return replies

    with DnsServer(zone) as server:
        transport = make_transport(spec, backend.sessions, resolver=server.resolver())
        replies = run(lambda: scenario(transport))
    assert all(isinstance(reply, SmtpReply) for reply in replies)
    ok, unknown, bad = replies
    if kind == "unusable":
        assert {r.outcome for r in replies} == {"tempfail"}
        assert "config colour" in ok.text
        return
    assert ok.outcome == "delivered"
    if kind != "capture":  # capture keeps everything it is given
        assert (unknown.code, unknown.outcome) == (550, "permfail")
        assert (bad.code, bad.status) == (553, "5.1.3")
