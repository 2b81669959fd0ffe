"""TLS and AUTH of the smtp transport (and its sessions) against real servers on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from envoi.routers.connection import Endpoint, SmtpConnection
from envoi.routers.network import OPEN
from envoi.routers.protocol import SessionError
from envoi.routers.schemas import SmtpConfig
from envoi.testing.smtppeer import SmtpPeer
from tests.transport_support import (
    Certificate,
    Client,
    ScriptedServer,
    relay,
    run,
    send_all,
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return Certificate(tmp_path_factory.mktemp("tls"))


def test_starttls_checks_the_certificate(certificate: Certificate) -> None:
    with SmtpPeer(tls_context=certificate.server_context()) as peer:
        trusted = relay(peer, tls="starttls", ca_file=str(certificate.cert_file))
        [ok] = run(lambda: send_all(trusted, ["ok@a.test"]))
        [untrusted] = run(lambda: send_all(relay(peer, tls="starttls"), ["ok@a.test"]))
        unchecked = relay(peer, tls="starttls", verify_certs=False)
        [accepted] = run(lambda: send_all(unchecked, ["ok2@a.test"]))
        assert ok.code == 250
        assert (untrusted.code, untrusted.outcome) == (0, "tempfail")
        assert "TLS failed" in untrusted.text
        assert accepted.code == 250
        assert [m.secure for m in peer.messages] == [True, True]


def test_starttls_required_but_not_offered() -> None:
    with SmtpPeer() as peer:
        [reply] = run(lambda: send_all(relay(peer, tls="starttls"), ["ok@a.test"]))
        assert reply.code == 0
        assert "does not offer STARTTLS" in reply.text
        assert peer.messages == []


def test_implicit_tls(certificate: Certificate) -> None:
    with SmtpPeer(tls_context=certificate.server_context(), implicit_tls=True) as peer:
        transport = relay(peer, tls="implicit", ca_file=str(certificate.cert_file))
        [reply] = run(lambda: send_all(transport, ["ok@a.test"]))
        assert reply.code == 250
        assert peer.messages[0].secure


def test_data_after_the_starttls_answer_ends_the_session() -> None:
    """RFC 3207 §4.2: bytes queued behind the 220 came in plain text (an attacker's
    injection, typically a fake EHLO answer); they must never be read as TLS answers."""

    def injects(client: Client) -> None:
        client.greet((b"STARTTLS", b"AUTH PLAIN", b"PIPELINING"))
        client.expect(b"STARTTLS")
        client.send(b"220 go ahead\r\n250 INJECTED-EHLO\r\n")
        client.wait_closed()

    with ScriptedServer(injects) as server:
        transport = relay(server, tls="starttls", verify_certs=False, timeout=5)
        [reply] = run(lambda: send_all(transport, ["ok@a.test"]))
    assert (reply.code, reply.outcome) == (0, "tempfail")
    assert "sent data after its STARTTLS answer" in reply.text


def test_opportunistic_tls_falls_back_to_plain_text_when_the_handshake_is_cut() -> None:
    def cuts_the_handshake(client: Client) -> None:
        client.greet((b"STARTTLS",))
        client.expect(b"STARTTLS")
        client.send(b"220 go ahead\r\n")
        client.sock.recv(1)  # the ClientHello starts ...
        client.sock.close()  # ... and the connection is cut

    def plain(client: Client) -> None:
        client.greet()
        client.expect(b"QUIT")
        client.send(b"221 bye\r\n")

    with ScriptedServer(cuts_the_handshake, plain) as server:
        endpoint = Endpoint(
            server.host, server.port, "envoi.test", tls="opportunistic", timeout=5, policy=OPEN
        )

        async def scenario() -> bool:
            connection = await SmtpConnection.open(endpoint)
            secure = connection.secure
            await connection.quit()
            return secure

        assert run(scenario) is False
        assert server.connections == 2


def test_auth_after_starttls(certificate: Certificate) -> None:
    users = {"shop": "s3cret"}
    with SmtpPeer(tls_context=certificate.server_context(), auth_users=users) as peer:
        tls: dict[str, Any] = {"tls": "starttls", "ca_file": str(certificate.cert_file)}
        good = relay(peer, username="shop", password="s3cret", **tls)
        bad = relay(peer, username="shop", password="wrong", **tls)
        anonymous = relay(peer, **tls)
        [ok] = run(lambda: send_all(good, ["ok@a.test"]))
        [refused] = run(lambda: send_all(bad, ["ok@a.test"]))
        [unauthenticated] = run(lambda: send_all(anonymous, ["ok@a.test"]))
        assert ok.code == 250
        assert peer.messages[0].login == "shop"
        assert (refused.code, refused.outcome) == (0, "tempfail")
        assert "AUTH refused" in refused.text
        assert "535" in refused.text
        # A relay that wants AUTH is the router's configuration, never a bounce.
        assert (unauthenticated.code, unauthenticated.outcome) == (0, "tempfail")
        assert "requires AUTH" in unauthenticated.text
        assert len(peer.messages) == 1


def test_auth_over_plain_text_only_on_loopback_or_when_allowed() -> None:
    with SmtpPeer(auth_users={"shop": "pw"}) as peer:
        # 127.0.0.1: the password does not cross a network.
        [reply] = run(lambda: send_all(relay(peer, username="shop", password="pw"), ["ok@a.test"]))
        assert reply.code == 250
        assert peer.messages[0].login == "shop"

    def offers_auth(client: Client) -> None:
        client.greet((b"AUTH PLAIN LOGIN",))
        client.wait_closed()

    # A relay elsewhere, as a config stored before the rule could have it: no AUTH.
    with ScriptedServer(offers_auth) as server:
        endpoint = Endpoint(
            server.host, server.port, "envoi.test", username="shop", password="pw", policy=OPEN
        )
        with pytest.raises(SessionError, match="no AUTH without TLS"):
            run(lambda: SmtpConnection.open(endpoint))
    with pytest.raises(ValidationError, match="allow_plaintext_auth"):
        SmtpConfig(host="relay.example.net", tls="none", username="shop")
    allowed = SmtpConfig(
        host="relay.example.net", tls="none", username="u", allow_plaintext_auth=True
    )
    assert allowed.username == "u"


def test_a_ca_file_that_cannot_be_loaded_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    for path in (str(garbage), str(tmp_path / "missing.pem"), str(tmp_path)):
        with pytest.raises(ValidationError, match="cannot be loaded as a PEM file"):
            SmtpConfig(host="relay.example.net", ca_file=path)
