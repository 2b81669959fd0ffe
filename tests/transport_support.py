"""Helpers shared by the transport tests (no tests here): sending, certificates, a DNS
server and a scripted SMTP server on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from envoi.delivery.interfaces import Envelope, SmtpReply, Transport
from envoi.routers.mx import MxTransport
from envoi.routers.network import OPEN, AddressPolicy
from envoi.routers.schemas import MxConfig, SmtpConfig
from envoi.routers.smtp import SmtpTransport
from envoi.testing.smtppeer import SmtpPeer

T = TypeVar("T")
MESSAGE = b"From: shop@envoi.test\r\nTo: you@example.test\r\nSubject: Hi\r\n\r\nHello.\r\n"


def run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


def envelope(recipient: str) -> Envelope:
    return Envelope("bounces+1@envoi.test", recipient, recipient.rsplit("@", 1)[1])


def relay(
    peer: SmtpPeer | ScriptedServer, *, policy: AddressPolicy = OPEN, **config: Any
) -> SmtpTransport:
    """A relay transport to a loopback server (allowed: the tests' peers are on loopback)."""
    settings: dict[str, Any] = {"host": peer.host, "port": peer.port, "tls": "none"}
    return SmtpTransport(SmtpConfig.model_validate(settings | config), policy=policy)


async def send_all(
    transport: Transport, recipients: list[str], data: bytes = MESSAGE
) -> list[SmtpReply]:
    """Send to each recipient in turn, then close the transport."""
    try:
        return [await transport.send(envelope(r), data) for r in recipients]
    finally:
        await transport.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- certificates ------------------------------------------------------------------------


class Certificate:
    """A self-signed certificate for localhost / 127.0.0.1, with its files."""

    def __init__(self, directory: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.cert_file = directory / "cert.pem"
        self.key_file = directory / "key.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


# -- a DNS server ----------------------------------------------------------------------------

Zone = dict[tuple[str, str], list[str]]


class DnsServer:
    """A UDP DNS server on 127.0.0.1 answering from `zone`; other names are NXDOMAIN.

    A name listed in `silent` gets no answer at all (a resolver timeout).
    """

    def __init__(self, zone: Zone, *, ttl: int = 300, silent: tuple[str, ...] = ()) -> None:
        self.zone = zone
        self.ttl = ttl
        self.silent = silent
        self.queries: Counter[tuple[str, str]] = Counter()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def resolver(self) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 1.0
        return resolver

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            answer = self._answer(dns.message.from_wire(wire))
            if answer is not None:
                self._sock.sendto(answer.to_wire(), client)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rdtype)] += 1
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        records = self.zone.get((name, rdtype))
        if records:
            response.answer.append(
                dns.rrset.from_text_list(question.name, self.ttl, "IN", rdtype, records)
            )
        elif not any(known == name for known, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response


def mx_transport(
    dns_server: DnsServer, port: int, *, policy: AddressPolicy = OPEN, **config: Any
) -> MxTransport:
    settings = MxConfig.model_validate({"port": port, "helo": "envoi.test"} | config)
    return MxTransport(settings, resolver=dns_server.resolver(), policy=policy)


# -- a scripted SMTP server --------------------------------------------------------------------


class Client:
    """One connection to a `ScriptedServer`, read line by line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._file = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """The next line the client sent (b"" once it closed)."""
        return self._file.readline()

    def expect(self, verb: bytes) -> bytes:
        line = self.line()
        if not line.upper().startswith(verb):
            raise AssertionError(f"expected {verb!r}, got {line!r}")
        return line

    def greet(self, extensions: tuple[bytes, ...] = (b"PIPELINING",)) -> None:
        """The greeting and the answer to EHLO."""
        self.send(b"220 scripted ESMTP\r\n")
        self.expect(b"EHLO")
        lines = [b"scripted", *extensions]
        self.send(
            b"".join(b"250-" + x + b"\r\n" for x in lines[:-1]) + b"250 " + lines[-1] + b"\r\n"
        )

    def envelope(self) -> None:
        """Accept MAIL, RCPT and DATA; stop once the message may come."""
        for verb, answer in ((b"MAIL", b"250 ok"), (b"RCPT", b"250 ok"), (b"DATA", b"354 go")):
            self.expect(verb)
            self.send(answer + b"\r\n")

    def message(self) -> bytes:
        """The message, up to its final dot."""
        lines = []
        while (line := self.line()) not in (b".\r\n", b""):
            lines.append(line)
        return b"".join(lines)

    def accept(self) -> None:
        """One whole transaction, accepted."""
        self.envelope()
        self.message()
        self.send(b"250 2.0.0 queued\r\n")

    def wait_closed(self, timeout: float = 10.0) -> None:
        self.sock.settimeout(timeout)
        try:
            while self.line():
                pass
        except OSError:
            pass


Handler = Callable[[Client], None]


class ScriptedServer:
    """A TCP server on 127.0.0.1 that plays `handlers[n]` on its n-th connection (the
    last handler for every later one), each on a thread of its own: for the server
    behaviours aiosmtpd will not produce (injected bytes, stray replies, silences)."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = handlers
        self.host = "127.0.0.1"
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen()
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._accepter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accepter.join()
        self._listener.close()
        for thread in self._threads:
            thread.join(10)
        if self.errors and exc[0] is None:
            raise self.errors[0]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            handler = self.handlers[min(self.connections, len(self.handlers) - 1)]
            self.connections += 1
            thread = threading.Thread(target=self._run, args=(handler, sock), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, handler: Handler, sock: socket.socket) -> None:
        with sock:
            try:
                handler(Client(sock))
            except OSError:
                pass  # the client went away: what several tests want
            except BaseException as exc:
                self.errors.append(exc)
