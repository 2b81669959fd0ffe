"""A real SMTP server on loopback that answers each recipient the way a test asks.

`SmtpPeer` runs aiosmtpd in a thread of its own, on 127.0.0.1 and a free port, and
records every message it accepts. What it answers a recipient depends on the prefix of
the recipient's local part, so one audience can exercise every outcome at once:

| prefix     | answer                                                                   |
|------------|--------------------------------------------------------------------------|
| `unknown`  | 550 5.1.1 at RCPT                                                        |
| `full`     | 552 5.2.2 at RCPT                                                        |
| `grey`     | 451 4.7.1 at RCPT on the first attempt for the address, then accepted    |
| `busy`     | 421 4.7.0 at RCPT on the first attempt (and the connection closed), then |
|            | accepted                                                                 |
| `drop`     | the connection dropped at RCPT with no answer on the first attempt, then |
|            | accepted                                                                 |
| `slow`     | accepted, after `slow_seconds` (2 s) at RCPT                             |
| `spam`     | 554 5.7.1 after DATA (content rejected)                                  |
| `nodot`    | the message read to its final dot, then the connection dropped with no   |
|            | answer on the first attempt (recorded: taken, its answer lost), then     |
|            | accepted                                                                 |
| otherwise  | 250 (`ok...` by convention)                                              |

PIPELINING is announced unless `pipelining=False`, and SMTPUTF8 unless `smtputf8=False`,
so clients can be tested both ways.

"First attempt" counts RCPT commands per address over the peer's life (`attempts`),
so a retry through a new connection is accepted. STARTTLS (or TLS from the first
byte) and AUTH are offered when the constructor is given a TLS context and users.
The peer is used by tests and benchmarks; its recorded lists are read from the test's
thread while the server thread appends, hence the lock and the snapshot properties.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# RCPT-time answers by local-part prefix (the stateful ones are handled in code).
_REFUSALS = {
    "unknown": "550 5.1.1 <{address}>: user unknown",
    "full": "552 5.2.2 <{address}>: mailbox full",
}
_SPAM = "554 5.7.1 message content rejected as spam"


@dataclass(frozen=True)
class Received:
    """One message the peer accepted (after DATA)."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    received_at: datetime
    # Whether the session was encrypted (STARTTLS or implicit TLS) and who logged in.
    secure: bool = False
    login: str | None = None


def local_part(address: str) -> str:
    return address.rsplit("@", 1)[0].lower()


class _Handler:
    """aiosmtpd hooks: decide per recipient, record accepted messages."""

    def __init__(self, peer: SmtpPeer) -> None:
        self.peer = peer

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        attempt = self.peer._count_attempt(address)
        name = local_part(address)
        for prefix, answer in _REFUSALS.items():
            if name.startswith(prefix):
                return answer.format(address=address)
        transport = server.transport
        if name.startswith("grey") and attempt == 1:
            return "451 4.7.1 greylisted, try again later"
        if name.startswith("busy") and attempt == 1 and transport is not None:
            # Closed once the answer is written (close() flushes the buffer first).
            asyncio.get_running_loop().call_soon(transport.close)
            return "421 4.7.0 too many connections, slow down"
        if name.startswith("drop") and attempt == 1 and transport is not None:
            # The answer that follows is written to a closed transport: the client
            # sees the connection end with no reply.
            if isinstance(transport, asyncio.Transport):
                transport.abort()
            return "250 OK"
        if name.startswith("slow"):
            await asyncio.sleep(self.peer.slow_seconds)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if any(local_part(r).startswith("spam") for r in envelope.rcpt_tos):
            return _SPAM
        transport = server.transport
        lost = self.peer._first_nodot(envelope.rcpt_tos)
        secure = transport is not None and transport.get_extra_info("ssl_object") is not None
        auth = session.auth_data
        received = Received(
            mail_from=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            received_at=datetime.now(UTC),
            secure=secure,
            login=auth.login.decode(errors="replace") if isinstance(auth, LoginPassword) else None,
        )
        self.peer._record(received)
        if lost and isinstance(transport, asyncio.Transport):
            # Like `drop`: the answer goes to a closed transport, the client never
            # learns that the message was taken.
            transport.abort()
        return "250 2.0.0 OK queued"

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.peer.pipelining:
            # aiosmtpd reads commands one by one, so pipelined ones simply queue up.
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RSET(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.peer._count("rsets")
        return "250 OK"


class _Controller(Controller):
    """aiosmtpd's threaded controller, bound to a free port and counting connections."""

    def __init__(self, peer: SmtpPeer, **kwargs: Any) -> None:
        self.peer = peer
        self.sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        super().__init__(_Handler(peer), **kwargs)

    def factory(self) -> SMTP:
        self.peer._count("connections")
        with warnings.catch_warnings():
            # AUTH without TLS is what the plain-text AUTH tests want.
            warnings.simplefilter("ignore")
            server = SMTP(self.handler, **self.SMTP_kwargs)
        self.sessions.add(server)
        return server

    def drop_sessions(self) -> None:
        """Close every client session (from the server's thread)."""

        done = threading.Event()

        def close_all() -> None:
            for server in list(self.sessions):
                if server.transport is not None:
                    server.transport.close()
            done.set()

        self.loop.call_soon_threadsafe(close_all)
        done.wait(5)

    def _trigger_server(self) -> None:
        # Port 0 asks the OS for a free port; read which one before connecting to it.
        server = self.server
        assert isinstance(server, asyncio.Server)  # noqa: S101 - set before the ready event
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpPeer:
    """A context manager running the peer; `host`, `port` are where to connect."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        auth_users: dict[str, str] | None = None,
        slow_seconds: float = 2.0,
        pipelining: bool = True,
        smtputf8: bool = True,
        hostname: str = "peer.envoi.test",
    ) -> None:
        """`tls_context` offers STARTTLS, or TLS from the first byte with `implicit_tls`;
        `auth_users` (login -> password) offers AUTH PLAIN/LOGIN and requires it;
        `pipelining` announces PIPELINING (RFC 2920), `smtputf8` SMTPUTF8 (RFC 6531)."""
        self.host = host
        self.port = port
        self.slow_seconds = slow_seconds
        self.pipelining = pipelining
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._attempts: Counter[str] = Counter()
        self._counters: Counter[str] = Counter()
        self._users = dict(auth_users or {})
        smtp_kwargs: dict[str, Any] = {
            "server_hostname": hostname,
            "data_size_limit": 64 << 20,
            "timeout": 60,
            "enable_SMTPUTF8": smtputf8,
        }
        if tls_context is not None and not implicit_tls:
            smtp_kwargs["tls_context"] = tls_context
        if auth_users is not None:
            smtp_kwargs["authenticator"] = self._authenticate
            smtp_kwargs["auth_required"] = True
            smtp_kwargs["auth_require_tls"] = tls_context is not None and not implicit_tls
        self._smtp_kwargs = smtp_kwargs
        self._ssl_context = tls_context if implicit_tls else None
        self._controller: _Controller | None = None

    # -- life ---------------------------------------------------------------

    def start(self) -> SmtpPeer:
        """Listen (again, on the same port after a `stop`)."""
        self._controller = _Controller(
            self,
            hostname=self.host,
            port=self.port,
            ssl_context=self._ssl_context,
            **self._smtp_kwargs,
        )
        with self._lock:
            connections = self._counters["connections"]
        self._controller.start()
        self.port = self._controller.port
        with self._lock:
            # The controller's own start-up probe is not a client's connection.
            self._counters["connections"] = connections
        return self

    def stop(self) -> None:
        """Close every session and stop listening."""
        if self._controller is not None:
            self._controller.drop_sessions()
            self._controller.stop()
            self._controller = None

    def drop_sessions(self) -> None:
        """Close the clients' sessions, as a server does with idle ones."""
        if self._controller is not None:
            self._controller.drop_sessions()

    def __enter__(self) -> SmtpPeer:
        """Start unless already started (a peer whose port another must share)."""
        return self if self._controller is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what happened --------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        """Accepted messages in arrival order (a snapshot)."""
        with self._lock:
            return list(self._messages)

    @property
    def attempts(self) -> Counter[str]:
        """RCPT commands per recipient address, as sent (a snapshot; missing is 0)."""
        with self._lock:
            return Counter(self._attempts)

    @property
    def connections(self) -> int:
        """SMTP sessions clients opened."""
        with self._lock:
            return self._counters["connections"]

    @property
    def rsets(self) -> int:
        """RSET commands received (a reused connection resets between messages)."""
        with self._lock:
            return self._counters["rsets"]

    def recipients(self) -> list[str]:
        """Every accepted recipient, in arrival order."""
        return [r for message in self.messages for r in message.recipients]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until at least `count` messages were accepted; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(messages)} of {count} messages arrived")
            time.sleep(0.01)

    def clear(self) -> None:
        """Forget recorded messages, attempts and counters."""
        with self._lock:
            self._messages.clear()
            self._attempts.clear()
            self._counters.clear()

    # -- server-thread side ---------------------------------------------------

    def _count_attempt(self, address: str) -> int:
        with self._lock:
            self._attempts[address] += 1
            return self._attempts[address]

    def _first_nodot(self, recipients: list[str]) -> bool:
        """Whether a `nodot` recipient of the message is on its first attempt."""
        with self._lock:
            return any(
                local_part(r).startswith("nodot") and self._attempts[r] == 1 for r in recipients
            )

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def _record(self, received: Received) -> None:
        with self._lock:
            self._messages.append(received)

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode(errors="replace")
        password = auth_data.password.decode(errors="replace")
        ok = login in self._users and self._users[login] == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
