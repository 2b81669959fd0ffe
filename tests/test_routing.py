"""Mailbox providers, the one form of domains, and `make_transport` for every stored router."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from envoi.core.providers import PROVIDERS, normalize_domain, provider_name, provider_of
from envoi.delivery.interfaces import Envelope, SmtpReply, Transport
from envoi.routers import routing
from envoi.routers.capture import CaptureTransport
from envoi.routers.mx import MxTransport
from envoi.routers.services import CAPTURE, RouterSpec, UnusableTransport, make_transport
from envoi.routers.smtp import SmtpTransport
from tests.conftest import Backend
from tests.transport_support import Certificate

# -- providers ------------------------------------------------------------------------------


def test_providers_group_domains_by_company() -> None:
    assert len(PROVIDERS) >= 40
    expected = {
        "hotmail.fr": "microsoft",
        "outlook.com": "microsoft",
        "live.co.uk": "microsoft",
        "msn.com": "microsoft",
        "gmail.com": "google",
        "googlemail.com": "google",
        "yahoo.com.br": "yahoo",
        "ymail.com": "yahoo",
        "icloud.com": "apple",
        "me.com": "apple",
        "wanadoo.fr": "orange",
        "orange.fr": "orange",
        "free.fr": "free",
        "sfr.fr": "sfr",
        "laposte.net": "laposte",
        "gmx.de": "gmx",
        "web.de": "webde",
        "mail.ru": "mailru",
        "yandex.com.tr": "yandex",
        "qq.com": "qq",
        "163.com": "netease",
        "t-online.de": "tonline",
        "Comcast.Net.": "comcast",
        "protonmail.ch": "proton",
    }
    assert {domain: provider_of(domain) for domain in expected} == expected
    for unknown in ("example.com", "hotmail.example.com", "live.shop.test", "company.fr"):
        assert provider_of(unknown) is None, unknown
    assert provider_name("microsoft") == "Microsoft"


def test_domains_have_one_form() -> None:
    assert normalize_domain(" Gmail.COM. ") == "gmail.com"
    assert (
        normalize_domain("EXÄMPLE.com") == normalize_domain("xn--exmple-cua.com") == "exämple.com"
    )
    assert normalize_domain("straße.de") == "straße.de"  # IDNA 2008: not strasse.de
    for bad in ("localhost", "a b.com", "-x.com", "x_y.com", ""):
        with pytest.raises(ValueError, match="not a domain name"):
            normalize_domain(bad)


# -- transports ----------------------------------------------------------------------


def test_make_transport_builds_each_kind(backend: Backend) -> None:
    relay = make_transport(RouterSpec(1, "r", "smtp", {"host": "h"}), backend.sessions)
    assert isinstance(relay, SmtpTransport)
    assert relay.endpoint.port == 587
    mx = make_transport(RouterSpec(2, "m", "mx", {"port": 2525}), backend.sessions)
    assert isinstance(mx, MxTransport)
    assert isinstance(make_transport(CAPTURE, backend.sessions), CaptureTransport)


def _send_one(transport: Transport) -> SmtpReply:
    async def send() -> SmtpReply:
        reply = await transport.send(Envelope("b@envoi.test", "ok@a.test", "a.test"), b"x")
        await transport.close()
        return reply

    return asyncio.run(send())


def test_a_stored_router_that_cannot_be_used_fails_its_mail_temporarily(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make_transport` never raises for a stored row: a worker would crash on it."""
    ca_file = tmp_path / "ca.pem"
    stale = [
        (RouterSpec(3, "fax", "fax", {}), "unknown router kind 'fax'"),
        (RouterSpec(4, "old", "smtp", {"host": "h", "retired_key": 1}), "config retired_key"),
        (RouterSpec(5, "ca", "smtp", {"host": "h", "ca_file": str(ca_file)}), "config ca_file"),
        (RouterSpec(6, "mx", "mx", {"port": 0}), "config port"),
    ]
    for spec, why in stale:
        transport = make_transport(spec, backend.sessions)
        assert isinstance(transport, UnusableTransport), spec
        reply = _send_one(transport)
        assert (reply.code, reply.outcome) == (0, "tempfail")
        assert f"router {spec.name!r} cannot send" in reply.text
        assert why in reply.text
    # A router whose file comes back is used again, without a worker restart.
    monkeypatch.setattr(routing, "REBUILD_SECONDS", 0.0)
    transport = make_transport(stale[2][0], backend.sessions)
    assert isinstance(transport, UnusableTransport)
    ca_file.write_text(Certificate(tmp_path).cert_file.read_text())
    reply = _send_one(transport)
    assert "cannot connect to h:587" in reply.text  # built: it tried the relay
