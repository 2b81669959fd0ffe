"""One outbound SMTP client session: a pipelining `asyncio.Protocol`.

Why not aiosmtplib for the transactions: it waits for each reply before writing the next
command and re-scans every message, which measured about 2,300 messages/s on loopback with
a whole core busy; the bar is thousands a second on two cores *besides* rendering. The
session below writes `MAIL`, `RCPT` and `DATA` in one packet when the server offers
PIPELINING (RFC 2920), parses replies as they arrive, and stays open for the next message
(`routers.pool` keeps such sessions). It speaks what delivery needs and no more: EHLO
(HELO fallback), STARTTLS, implicit TLS, AUTH PLAIN/LOGIN, SMTPUTF8 and 8BITMIME
announcements, RSET after a failed transaction, QUIT.

Every failure ends as an `SmtpReply`, never an exception: a server's own answer as it
is, and code 0 when there was none (refused, dropped, timed out). Failures to set up a
session (connect, greeting, STARTTLS, AUTH) raise `SessionError` so the pool and the MX
transport can try another connection or host first.

What the session does not trust the server with:
- where it connects: only addresses the endpoint's `AddressPolicy` allows
  (`routers.network`);
- STARTTLS: anything sent after the `220` in plain text ends the session (RFC 3207
  §4.2; the 2021 "STARTTLS injection" attacks), and what the first EHLO said is
  forgotten before the second;
- AUTH without TLS: refused unless the relay is on loopback or the router says
  `allow_plaintext_auth`;
- its output: a reply line longer than `MAX_LINE`, a reply of more than
  `MAX_REPLY_LINES` lines or more than `MAX_EARLY_REPLIES` unasked replies ends the
  session (a hostile MX could otherwise fill memory);
- time: `timeout` bounds the session setup and each command's reply; the reply to the
  final dot gets `data_timeout` (RFC 5321 §4.5.3.2.6 asks for 10 minutes, as content
  scanners take long). When it never comes, the message "may have been delivered".

The session runs for every message at thousands a second, so its CPU time counts: no
`asyncio.timeout` per message (each sets and cancels a timer; with the pool's, three a
message took a tenth of the client's time), but one deadline per session, moved on with
each wait and watched by a single lazy timer (`_arm`, `_watch`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import cast

from envoi.delivery.interfaces import SmtpReply
from envoi.routers.network import PUBLIC_ONLY, AddressPolicy
from envoi.routers.protocol import (
    Lines,
    SessionError,
    dot_stuffed,
    may_have_been_delivered,
    parse_reply,
    tls_context,
    wire_address,
)

log = logging.getLogger("envoi.smtp")

# RFC 5321 §4.5.3.1.5 allows reply lines of 512 octets; these bounds are generous.
MAX_LINE = 4096
MAX_REPLY_LINES = 100
MAX_EARLY_REPLIES = 100

_FORBIDDEN = re.compile(r"[\r\n<>]")  # in an envelope address
_ENVELOPE_VERBS = ("MAIL", "RCPT", "DATA")


class _TlsFailed(Exception):
    """The STARTTLS handshake failed (an opportunistic session goes on in plain text)."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to open a session.

    `tls`: none, starttls (required), implicit (TLS from the first byte), or
    opportunistic (STARTTLS when offered, plain text otherwise or if it fails).
    `plaintext_auth`: AUTH may be sent without TLS (a loopback relay, or the router's
    `allow_plaintext_auth`).
    """

    host: str
    port: int
    helo: str
    tls: str = "none"
    tls_context: ssl.SSLContext | None = None
    server_hostname: str | None = None  # certificate name to check; None: `host`
    username: str | None = None
    password: str | None = None
    timeout: float = 60.0
    data_timeout: float = 600.0
    policy: AddressPolicy = PUBLIC_ONLY
    plaintext_auth: bool = False

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class SmtpConnection(asyncio.Protocol):
    """One SMTP session. Replies are matched to commands in order (a FIFO of waiters)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lines: Lines = []
        self._waiters: deque[asyncio.Future[Lines | None]] = deque()
        self._early: deque[Lines] = deque()
        self.closed = False
        self.violation: str | None = None  # why the session was ended on the server's output
        self.extensions: dict[str, str] = {}
        self.secure = False
        self.sent = 0  # transactions attempted on this session
        self.dirty = False  # the last transaction failed midway: RSET first
        self.last_used = time.monotonic()
        # The loop time by which the replies awaited now must have come (0: none awaited),
        # and the timer that checks it; `timed_out` once it passed.
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0
        self.timed_out = False

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end]).rstrip(b"\r")
            start = end + 1
            if len(line) > MAX_LINE:
                self._violate(f"a reply line longer than {MAX_LINE} bytes")
                return
            self._lines.append(line)
            if line[3:4] != b"-":  # the last line of a reply
                lines, self._lines = self._lines, []
                self._deliver(lines)
            elif len(self._lines) > MAX_REPLY_LINES:
                self._violate(f"a reply of more than {MAX_REPLY_LINES} lines")
                return
        if start:
            del buffer[:start]
        if len(buffer) > MAX_LINE:
            self._violate(f"a reply line longer than {MAX_LINE} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end_waits()

    def _end_waits(self) -> None:
        """Every reply awaited is None: the session is over."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- time limits ---------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        """Give the replies awaited from now on `seconds` to come.

        Moving the deadline costs an assignment: the one timer of the session is only
        re-armed when it would fire too late, and otherwise, when it fires before the
        deadline, sets itself again for the deadline (at most once per `seconds`)."""
        deadline = self._deadline = self._loop.time() + seconds
        watchdog = self._watchdog
        if watchdog is None or self._watchdog_at > deadline:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog_at = deadline
            self._watchdog = self._loop.call_at(deadline, self._watch)

    def _disarm(self) -> None:
        """Nothing awaited any more (the timer, if set, finds no deadline and stops)."""
        self._deadline = 0.0

    def _watch(self) -> None:
        self._watchdog = None
        deadline = self._deadline
        if not deadline or self.closed:
            return
        # Compared with when the timer was set for, not with the clock: the loop may run
        # a timer a little early (uvloop rounds to the millisecond), as asyncio.timeout's.
        if deadline > self._watchdog_at:  # moved on since
            self._watchdog_at = deadline
            self._watchdog = self._loop.call_at(deadline, self._watch)
            return
        # Waiters get None at once, as if the connection had ended; `timed_out` tells
        # them why.
        self.timed_out = True
        self.abort()
        self._end_waits()

    def _deliver(self, lines: Lines) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a waiter given up by a timeout is skipped
                waiter.set_result(lines)
                return
        self._early.append(lines)
        if len(self._early) > MAX_EARLY_REPLIES:
            self._violate(f"more than {MAX_EARLY_REPLIES} replies nothing asked for")

    def _violate(self, what: str) -> None:
        self.violation = f"{self.endpoint.where} sent {what}"
        log.warning("SMTP session ended", extra={"reason": self.violation})
        self.abort()

    def _expect(self) -> asyncio.Future[Lines | None]:
        """The future of the next reply not yet claimed (None if the connection ends)."""
        future: asyncio.Future[Lines | None] = self._loop.create_future()
        if self._early:
            future.set_result(self._early.popleft())
        elif self.closed:
            future.set_result(None)
        else:
            self._waiters.append(future)
        return future

    def _write(self, data: bytes) -> bool:
        transport = self._transport
        if transport is None or self.closed or transport.is_closing():
            return False
        transport.write(data)
        return True

    def _lost(self, what: str) -> str:
        text = f"connection lost {what}"
        return f"{text} ({self.violation})" if self.violation else text

    def _gone(self, when: str) -> SessionError:
        return SessionError(SmtpReply(0, None, self._lost(f"{when} ({self.endpoint.where})")))

    @property
    def reusable(self) -> bool:
        """Open, with nothing unread: a reply no command asked for (a `421` before the
        server closes an idle session, say) means the session is ending or out of step."""
        return not self.closed and not self._early and not self._buffer and not self._lines

    # -- session setup -----------------------------------------------------------

    @classmethod
    async def open(cls, endpoint: Endpoint) -> SmtpConnection:
        """A ready session (greeted, EHLO'd, TLS and AUTH done); SessionError otherwise."""
        connection = cls(endpoint)
        try:
            async with asyncio.timeout(endpoint.timeout):
                await connection._setup()
        except SessionError:
            connection.abort()
            raise
        except _TlsFailed as exc:
            connection.abort()
            if endpoint.tls == "opportunistic":
                # As MTAs do: a failed opportunistic handshake falls back to plain text.
                return await cls.open(replace(endpoint, tls="none"))
            raise SessionError(SmtpReply(0, None, f"{endpoint.where}: TLS failed: {exc}")) from None
        except TimeoutError:
            connection.abort()
            raise SessionError(SmtpReply(0, None, f"{endpoint.where}: timed out")) from None
        except ssl.SSLError as exc:  # implicit TLS
            connection.abort()
            raise SessionError(SmtpReply(0, None, f"{endpoint.where}: TLS failed: {exc}")) from None
        except OSError as exc:
            connection.abort()
            text = f"cannot connect to {endpoint.where}: {exc.strerror or exc}"
            raise SessionError(SmtpReply(0, None, text)) from None
        return connection

    async def _setup(self) -> None:
        endpoint = self.endpoint
        implicit = endpoint.tls == "implicit"
        await self._connect(implicit)
        self.secure = implicit
        await self._check(await self._reply("before the greeting"), 220, "greeting")
        await self._ehlo()
        if endpoint.tls in ("starttls", "opportunistic"):
            await self._starttls()
        if endpoint.username:
            await self._auth(endpoint.username, endpoint.password or "")

    async def _connect(self, implicit: bool) -> None:
        """Connect to the first address of the host that the policy allows and answers."""
        endpoint = self.endpoint
        infos = await self._loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refusals = [endpoint.policy.refusal(endpoint.host, address) for address in addresses]
        allowed = [a for a, refusal in zip(addresses, refusals, strict=True) if refusal is None]
        if not allowed:
            text = next((r for r in refusals if r), f"{endpoint.host} has no address")
            raise SessionError(SmtpReply(0, None, text))
        failure: OSError | None = None
        for address in allowed:
            try:
                await self._loop.create_connection(
                    lambda: self,
                    address,
                    endpoint.port,
                    ssl=self._context() if implicit else None,
                    server_hostname=self._server_hostname() if implicit else None,
                )
            except ssl.SSLError:
                raise
            except OSError as exc:
                failure = exc
            else:
                return
        assert failure is not None  # noqa: S101 - `allowed` is not empty
        raise failure

    def _context(self) -> ssl.SSLContext:
        if self.endpoint.tls_context is not None:
            return self.endpoint.tls_context
        return tls_context(verify=self.endpoint.tls != "opportunistic")

    def _server_hostname(self) -> str:
        return self.endpoint.server_hostname or self.endpoint.host

    async def _reply(self, when: str) -> SmtpReply:
        lines = await self._expect()
        if lines is None:
            raise self._gone(when)
        return parse_reply(lines)

    async def _command(self, line: bytes, when: str) -> SmtpReply:
        self._write(line + b"\r\n")
        return await self._reply(when)

    async def _check(self, reply: SmtpReply, expected: int, stage: str) -> None:
        if reply.code == expected:
            return
        if reply.code == 421:
            # Keep the server's own 421: it asks the destination to be slowed down.
            raise SessionError(reply)
        text = f"{stage} refused by {self.endpoint.where}: {reply.code} {reply.status or ''}"
        raise SessionError(SmtpReply(0, None, f"{text.rstrip()} {reply.text}"))

    async def _ehlo(self) -> None:
        helo = self.endpoint.helo.encode()
        self._write(b"EHLO " + helo + b"\r\n")
        lines = await self._expect()
        if lines is None:
            raise self._gone("after EHLO")
        reply = parse_reply(lines)
        if reply.code == 250:
            self.extensions = {}
            for line in lines[1:]:
                keyword, _, params = line[4:].decode("ascii", "replace").strip().partition(" ")
                self.extensions[keyword.upper()] = params
            return
        if reply.code == 421:
            raise SessionError(reply)
        await self._check(await self._command(b"HELO " + helo, "after HELO"), 250, "HELO")
        self.extensions = {}

    async def _starttls(self) -> None:
        where = self.endpoint.where
        if "STARTTLS" not in self.extensions:
            if self.endpoint.tls == "starttls":
                raise SessionError(SmtpReply(0, None, f"{where} does not offer STARTTLS"))
            return
        reply = await self._command(b"STARTTLS", "after STARTTLS")
        if reply.code != 220 and self.endpoint.tls == "opportunistic":
            return
        await self._check(reply, 220, "STARTTLS")
        if self._early or self._buffer or self._lines:
            # Bytes after the 220 came in plain text, possibly from whoever sits on the
            # path; read as answers on the encrypted session they would shift every
            # reply by one (RFC 3207 §4.2, "STARTTLS injection"). Nothing honest sends them.
            text = f"{where} sent data after its STARTTLS answer: session refused"
            raise SessionError(SmtpReply(0, None, text))
        assert self._transport is not None  # noqa: S101 - connected in _setup
        try:
            transport = await self._loop.start_tls(
                self._transport, self, self._context(), server_hostname=self._server_hostname()
            )
        except OSError as exc:  # ssl.SSLError, or the peer resetting the handshake
            raise _TlsFailed(str(exc)) from None
        if transport is None:
            raise self._gone("during the TLS handshake")
        self._transport = transport
        self.secure = True
        self.extensions = {}  # RFC 3207 §4.2: forget what the server said in plain text
        await self._ehlo()

    async def _auth(self, username: str, password: str) -> None:
        where = self.endpoint.where
        if not self.secure and not self.endpoint.plaintext_auth:
            text = f"{where}: no AUTH without TLS (the password would cross the network in clear)"
            raise SessionError(SmtpReply(0, None, text))
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        user, secret = username.encode(), password.encode()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(b"\0" + user + b"\0" + secret)
            reply = await self._command(b"AUTH PLAIN " + token, "after AUTH")
        elif "LOGIN" in mechanisms:
            await self._check(await self._command(b"AUTH LOGIN", "after AUTH"), 334, "AUTH")
            step = await self._command(base64.b64encode(user), "after AUTH")
            await self._check(step, 334, "AUTH")
            reply = await self._command(base64.b64encode(secret), "after AUTH")
        else:
            text = f"{where} offers no AUTH PLAIN or LOGIN"
            if not self.secure:
                text += " (some servers offer AUTH only after STARTTLS)"
            raise SessionError(SmtpReply(0, None, text))
        await self._check(reply, 235, "AUTH")

    # -- messages ----------------------------------------------------------------

    async def transaction(
        self, mail_from: str, recipient: str, data: bytes
    ) -> tuple[SmtpReply, bool]:
        """Send one message; the final reply, and whether the server answered anything.

        "Nothing answered" on a reused session means it was closed while idle and the
        message can safely go through a new one.
        """
        self.sent += 1
        self.last_used = time.monotonic()
        if _FORBIDDEN.search(mail_from) or _FORBIDDEN.search(recipient):
            return SmtpReply(553, "5.1.3", "address contains a forbidden character"), True
        sender, receiver = wire_address(mail_from), wire_address(recipient)
        if sender is None or receiver is None:
            return SmtpReply(553, "5.1.3", "address domain has no IDNA form"), True
        options = b""
        if sender[1] or receiver[1]:
            if "SMTPUTF8" not in self.extensions:
                text = "non-ASCII local part and the server does not offer SMTPUTF8"
                return SmtpReply(553, "5.6.7", text), True
            options += b" SMTPUTF8"
        if "8BITMIME" in self.extensions and not data.isascii():
            options += b" BODY=8BITMIME"
        commands = [
            b"MAIL FROM:<" + sender[0] + b">" + options + b"\r\n",
            b"RCPT TO:<" + receiver[0] + b">\r\n",
            b"DATA\r\n",
        ]
        verbs: tuple[str, ...] = _ENVELOPE_VERBS
        if self.dirty:
            commands.insert(0, b"RSET\r\n")
            verbs = ("RSET", *verbs)
        self._arm(self.endpoint.timeout)
        try:
            refused = await self._commands(commands, verbs)
            if self.timed_out:
                return SmtpReply(0, None, f"timed out waiting for {self.endpoint.where}"), True
            if refused is not None:
                return refused
            return await self._message(data), True
        finally:
            self._disarm()

    async def _commands(
        self, commands: list[bytes], verbs: tuple[str, ...]
    ) -> tuple[SmtpReply, bool] | None:
        """Send the envelope and DATA; None once the server waits for the message, else
        the refusal (or loss) and whether anything was answered."""
        futures: list[asyncio.Future[Lines | None]] | None = None
        if "PIPELINING" in self.extensions:
            if not self._write(b"".join(commands)):
                return SmtpReply(0, None, self._lost("before MAIL")), False
            futures = [self._expect() for _ in commands]
        answered = False
        for index, verb in enumerate(verbs):
            if futures is None and not self._write(commands[index]):
                return SmtpReply(0, None, self._lost(f"before {verb}")), answered
            lines = await (self._expect() if futures is None else futures[index])
            if lines is None:
                self.abort()
                return SmtpReply(0, None, self._lost(f"after {verb}")), answered
            answered = True
            if verb == "RSET":
                continue
            # Only a refusal is worth parsing (most replies are read by their first bytes).
            if not lines[0].startswith(b"354" if verb == "DATA" else b"2"):
                await self._drain(futures[index + 1 :] if futures else [])
                return self._refused(parse_reply(lines)), True
        return None

    async def _message(self, data: bytes) -> SmtpReply:
        """Send the message itself; the server's final reply."""
        self._write(dot_stuffed(data))
        self._arm(self.endpoint.data_timeout)
        lines = await self._expect()
        if lines is None:
            self.abort()
            if self.timed_out:
                waited = f"{self.endpoint.data_timeout:g} s"
                text = f"no answer from {self.endpoint.where} in {waited}"
                return may_have_been_delivered(text)
            return may_have_been_delivered(self._lost("after the message was sent"))
        final = parse_reply(lines)
        self.dirty = final.code // 100 != 2
        return final

    async def _drain(self, futures: list[asyncio.Future[Lines | None]]) -> None:
        """Read what the pipelined commands after a refused one still answer."""
        for future in futures:
            lines = await future
            if lines is not None and parse_reply(lines).code == 354:
                # DATA accepted with no valid recipient: end it with an empty message.
                self._write(b".\r\n")
                await self._expect()

    def _refused(self, reply: SmtpReply) -> SmtpReply:
        self.dirty = True  # RSET before the next message
        if reply.code == 421:
            self.abort()  # the server is closing the session
        elif reply.code == 530:
            # "Authentication required" is the router's configuration, never the
            # recipient's fault: a temporary failure, not a bounce.
            text = f"{self.endpoint.where} requires AUTH (set username and password)"
            return SmtpReply(0, None, f"{text}: 530 {reply.status or ''} {reply.text}")
        return reply

    async def quit(self) -> None:
        """Say goodbye politely (short wait), then close."""
        if not self.closed and self._write(b"QUIT\r\n"):
            try:
                async with asyncio.timeout(min(5.0, self.endpoint.timeout)):
                    await self._expect()
            except TimeoutError:
                pass
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
