"""SMTP submission: mail a project's application hands over SMTP, sent as single sends.

`envoi serve` runs a `SubmissionListener` on ENVOI_SUBMISSION_LISTEN (off when empty;
aiosmtpd, on a thread and event loop of its own, like the inbound listener). What a
client may do, in order:

- AUTH PLAIN or LOGIN with the project's `login:secret`, checked by the same
  `projects.services.Authenticator` rules as the native API's Basic auth (argon2 on a
  thread, failures throttled per client address, the project's IP allowlist against
  the peer address). Nothing else is taken before it: `530 5.7.0`. A wrong secret is
  `535 5.7.8`, an address outside the allowlist `535 5.7.1`, a throttled client
  `454 4.7.0`. With a certificate (ENVOI_SUBMISSION_TLS_CERT/KEY) STARTTLS is offered
  and AUTH waits for it; without one the listener must be on loopback (or
  ENVOI_SUBMISSION_ALLOW_PLAINTEXT_AUTH says otherwise), else it does not start.
- MAIL FROM: any reverse path. Every send's return path is its own VERP address
  (bounces come back to the inbound listener), so the envelope sender is never used;
  the message's `From:` header is the sender, checked as the API's `from_address`.
- RCPT TO: each distinct recipient becomes one single send of its own (own spool row,
  tracking tokens, VERP), at most ENVOI_SUBMISSION_MAX_RECIPIENTS (`452 4.5.3`).
- DATA (at most ENVOI_SUBMISSION_MAX_MESSAGE_BYTES, else aiosmtpd's 552): the message
  is read (`sends.mime.read_message`): From, Subject, the text/plain and text/html bodies, and
  the `X-Envoi-*` headers (tags, tracking switches, idempotency key). It is sent as it
  is written: its text is not a template (escaped for the sandbox), other headers
  are not carried, attachments are refused (`554 5.6.1`: a single send carries text
  only). Then `sends.services.send`, once per recipient, in one transaction; the
  answer is `250` only once it committed, one line per send with its id and state;
  `554 5.6.0` for a message the API would refuse (422), `451 4.3.0` when the
  database failed (the client keeps the message and retries).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.core.errors import Conflict, Forbidden, Invalid, TooManyRequests, Unauthorized
from envoi.core.identity import IdentityError, normalize_email
from envoi.db.base import utcnow
from envoi.db.session import transaction
from envoi.projects.services import Authenticator, find_by_login
from envoi.sends import services
from envoi.sends.metrics import SubmissionMetrics
from envoi.sends.mime import IDEMPOTENCY_HEADER, Refused, one_line, read_message

log = logging.getLogger("envoi.submission")

# Idle time after which a session is closed (aiosmtpd's default is 5 minutes).
SESSION_TIMEOUT = 60.0
# Threads for the argon2 checks and the transactions: the event loop never waits on them.
THREADS = 4


@dataclass(frozen=True)
class Submitter:
    """Who authenticated in an SMTP session (aiosmtpd's `session.auth_data`)."""

    project_id: int
    login: str


# -- the work of the threads ----------------------------------------------------------------


class Processor:
    """Authentication and sends: blocking work, run on the listener's threads."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        metrics: SubmissionMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self.clock = clock
        self.authenticator = Authenticator(max_failures=settings.auth_max_failures)

    def authenticate(self, credentials: LoginPassword, peer: str | None) -> AuthResult:
        login = credentials.login.decode(errors="replace")
        secret = credentials.password.decode(errors="replace")
        # Read in a transaction of its own that ends before the slow check (web.deps).
        try:
            with self.sessions() as session:
                project = find_by_login(session, login)
        except SQLAlchemyError:
            log.exception("the submission listener could not read a project")
            return AuthResult(
                success=False, handled=False, message="454 4.7.0 Temporary authentication failure"
            )
        try:
            found = self.authenticator.authenticate(project, login, secret, peer)
        except TooManyRequests:
            return self._failed(
                "throttled", login, peer, "454 4.7.0 Too many failed AUTH; retry later"
            )
        except Forbidden:
            return self._failed(
                "forbidden", login, peer, "535 5.7.1 Client address not allowed for this login"
            )
        except Unauthorized:
            return self._failed(
                "invalid", login, peer, "535 5.7.8 Authentication credentials invalid"
            )
        self.metrics.auth.labels("ok").inc()
        return AuthResult(success=True, auth_data=Submitter(found.id, login))

    def _failed(self, outcome: str, login: str, peer: str | None, reply: str) -> AuthResult:
        self.metrics.auth.labels(outcome).inc()
        log.info(
            "submission auth failed", extra={"why": outcome, "login": login[:100], "peer": peer}
        )
        return AuthResult(success=False, handled=False, message=reply)

    def submit(
        self, submitter: Submitter, raw: bytes, recipients: list[str], sender: str | None
    ) -> list[dict[str, Any]]:
        """Queue the message to each recipient in one transaction; the sends' answers
        once it committed. Refused when the message cannot be sent (nothing written)."""
        submission = read_message(raw, sender)
        now = self.clock()
        try:
            with transaction(self.sessions) as session:
                answers = [
                    services.send(
                        session,
                        submitter.project_id,
                        submission.spec(recipient),
                        public_url=self.settings.public_url,
                        now=now,
                    ).answer
                    for recipient in recipients
                ]
        except Invalid as exc:
            raise Refused(f"554 5.6.0 {_refusal(exc)}") from None
        except Conflict:
            raise Refused("451 4.3.0 A concurrent message changed the same rows; retry") from None
        return answers


def _refusal(exc: Invalid) -> str:
    """The API's 422 message in the words of the message's headers."""
    field = exc.loc[-1] if exc.loc else None
    if field == "idempotency_key":
        return f"{IDEMPOTENCY_HEADER} was used with another message; a new message needs a new key"
    if field == "from_address":
        return f"From: {one_line(exc.message)}"
    return one_line(exc.message)


def _reply(answers: list[dict[str, Any]]) -> str:
    """One line per send: `250 2.0.0 send ID <address> state[ (reason)]`."""
    lines = []
    for answer in answers:
        reason = f" ({answer['reason']})" if answer.get("reason") else ""
        lines.append(f"2.0.0 send {answer['id']} <{answer['email']}> {answer['state']}{reason}")
    return "\r\n".join(
        f"250{' ' if index == len(lines) - 1 else '-'}{line}" for index, line in enumerate(lines)
    )


# -- the SMTP edge --------------------------------------------------------------------------


def _capture(
    server: SMTP,  # noqa: ARG001 - aiosmtpd's authenticator signature
    session: SmtpSession,  # noqa: ARG001
    envelope: Envelope,  # noqa: ARG001
    mechanism: str,  # noqa: ARG001
    auth_data: Any,
) -> AuthResult:
    """aiosmtpd's (synchronous) authenticator, given to its built-in PLAIN and LOGIN only
    to decode the credentials: it accepts nothing; `_Handler._check` decides, off the
    event loop."""
    return AuthResult(success=False, handled=False, auth_data=auth_data)


class _Handler:
    """aiosmtpd's hooks: AUTH checked on a thread, RCPT limits, DATA answered after commit."""

    def __init__(self, listener: SubmissionListener) -> None:
        self.listener = listener

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._check(server, await SMTP.auth_PLAIN(server, None, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        return await self._check(server, await SMTP.auth_LOGIN(server, None, args))

    async def _check(self, server: SMTP, decoded: AuthResult) -> AuthResult:
        credentials = decoded.auth_data
        if not isinstance(credentials, LoginPassword):
            return decoded  # malformed or aborted: aiosmtpd answered (or answers 535)
        loop = asyncio.get_running_loop()
        peer = _peer(server.session) if server.session is not None else None
        listener = self.listener
        return await loop.run_in_executor(
            listener.executor, listener.processor.authenticate, credentials, peer
        )

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        metrics = self.listener.metrics
        try:
            recipient = normalize_email(address)
        except IdentityError:
            metrics.refused_recipients.labels("invalid").inc()
            return f"553 5.1.3 <{one_line(address)}>: not a valid address"
        if recipient in envelope.rcpt_tos:
            return "250 2.1.5 OK (already a recipient)"
        if len(envelope.rcpt_tos) >= self.listener.settings.submission_max_recipients:
            metrics.refused_recipients.labels("too_many").inc()
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(recipient)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: SmtpSession, envelope: Envelope
    ) -> str:
        listener = self.listener
        submitter = session.auth_data
        if not isinstance(submitter, Submitter):  # aiosmtpd asks for AUTH before DATA
            return "530 5.7.0 Authentication required"
        raw = envelope.original_content or b""
        about = {"peer": _peer(session), "project_id": submitter.project_id, "bytes": len(raw)}
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            answers = await loop.run_in_executor(
                listener.executor,
                listener.processor.submit,
                submitter,
                raw,
                list(envelope.rcpt_tos),
                envelope.mail_from or None,
            )
        except Refused as exc:
            outcome = "tempfail" if exc.reply.startswith("4") else "refused"
            listener.metrics.messages.labels(outcome).inc()
            log.info("submitted message refused", extra=about | {"reply": exc.reply})
            return exc.reply
        except Exception as exc:
            # The database failed (or, a bug of ours, anything else): nothing was
            # committed, the client keeps the message and retries, the log says why.
            listener.metrics.messages.labels("tempfail").inc()
            extra = about | {"database": isinstance(exc, SQLAlchemyError)}
            log.exception("a submitted message could not be queued", extra=extra)
            return "451 4.3.0 Temporary failure, please try again later"
        finally:
            listener.metrics.seconds.observe(time.perf_counter() - started)
        listener.metrics.messages.labels("accepted").inc()
        for answer in answers:
            listener.metrics.sends.labels(answer["state"]).inc()
        ids = [answer["id"] for answer in answers]
        log.info("message submitted", extra=about | {"send_ids": ids})
        return _reply(answers)


def _peer(session: SmtpSession) -> str | None:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


class _ExpectedWarnings(logging.Filter):
    """aiosmtpd warns at every connection when AUTH is required without TLS (here the
    operator's documented choice: loopback, or the explicit setting) and at every AUTH
    that it sets its own deprecated `login_data`: noise in envoi's log."""

    _EXPECTED = ("auth_require_tls == False", "login_data is deprecated")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(expected in message for expected in self._EXPECTED)


_EXPECTED_WARNINGS = _ExpectedWarnings()


class _Controller(Controller):
    """aiosmtpd's threaded controller; `port` 0 binds a free port (read after start)."""

    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same plaintext AUTH warning, see above
            return SMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        server = self.server
        if isinstance(server, asyncio.Server) and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The STARTTLS context of the configured certificate, or None without one."""
    cert, key = settings.submission_tls_cert, settings.submission_tls_key
    if not cert and not key:
        return None
    if not (cert and key):
        raise ValueError("set both ENVOI_SUBMISSION_TLS_CERT and ENVOI_SUBMISSION_TLS_KEY")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def plaintext_auth_allowed(settings: Settings, tls: ssl.SSLContext | None) -> bool:
    """Whether AUTH may come before TLS; ValueError for a listener that would take
    secrets in clear over the network (no certificate, not loopback, no opt-in)."""
    if settings.submission_allow_plaintext_auth:
        return True
    if tls is not None:
        return False
    if _loopback(settings.submission_host):
        return True
    raise ValueError(
        f"ENVOI_SUBMISSION_LISTEN={settings.submission_listen} is not a loopback address: "
        "set ENVOI_SUBMISSION_TLS_CERT and ENVOI_SUBMISSION_TLS_KEY (or, behind a "
        "TLS-terminating proxy, ENVOI_SUBMISSION_ALLOW_PLAINTEXT_AUTH=true)"
    )


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SubmissionListener:
    """The listener's life: `start()`, then `stop()` (or use it as a context manager).

    ValueError at construction for a configuration that must not run (see
    `plaintext_auth_allowed`); `clock` is the time sends are queued at."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        tls = tls_context(settings)
        plaintext = plaintext_auth_allowed(settings, tls)
        self.metrics = SubmissionMetrics()
        self.processor = Processor(settings, sessions, self.metrics, clock)
        self.executor = ThreadPoolExecutor(
            max_workers=THREADS, thread_name_prefix="envoi-submission"
        )
        self._controller = _Controller(
            _Handler(self),
            hostname=settings.submission_host,
            port=settings.submission_port,
            server_hostname=urlsplit(settings.public_url).hostname or "localhost",
            ident="envoi",
            data_size_limit=settings.submission_max_message_bytes,
            enable_SMTPUTF8=True,
            timeout=SESSION_TIMEOUT,
            tls_context=tls,
            authenticator=_capture,
            auth_required=True,
            auth_require_tls=not plaintext,
        )

    @property
    def host(self) -> str:
        return self.settings.submission_host

    @property
    def port(self) -> int:
        """The port listened on (the bound one when the setting says 0)."""
        port: int = self._controller.port
        return port

    def start(self) -> None:
        mail_log = logging.getLogger("mail.log")
        # aiosmtpd logs every command line at INFO (see `inbound.listener`).
        mail_log.setLevel(logging.WARNING)
        mail_log.addFilter(_EXPECTED_WARNINGS)
        self._controller.start()
        log.info("listening for submissions", extra={"submission": self.settings.submission_listen})

    def stop(self) -> None:
        """Stop taking connections, then let the messages being queued finish."""
        self._controller.stop()
        self.executor.shutdown(wait=True)

    def __enter__(self) -> SubmissionListener:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
