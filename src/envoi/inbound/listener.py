"""The inbound SMTP listener: bounces, complaints and mailto unsubscribes come in here.

`envoi serve` runs a `FeedbackListener` on ENVOI_SMTP_LISTEN (aiosmtpd, on a thread
and event loop of its own). The edge is thin:

- At RCPT, only three kinds of address are taken, at any domain (the MX of each
  project's bounce domain points here): `bounces+TOKEN` (a VERP return path, TOKEN a
  genuine `bounce` token), `unsubscribe+TOKEN` (a mailto List-Unsubscribe, TOKEN a
  genuine `unsubscribe` token) and ENVOI_FEEDBACK_ADDRESS (ARF complaints). Anything
  else, a forged token included, is `550 5.1.1`: refused before the data is sent.
- After DATA (at most ENVOI_INBOUND_MAX_MESSAGE_BYTES, else aiosmtpd's 552), the
  message is parsed (`inbound.parsing`) and its reports applied
  (`inbound.services`) in one transaction, on a small pool of threads: parsing and
  the database never block the event loop, so a bounce storm queues for the
  threads while other sessions carry on. The answer is `250` only once that
  transaction committed (the reports are durable), `451 4.3.0` when it failed (the
  sender keeps the message and retries; idempotence makes the retry safe).

A message that reads as nothing envoi knows (garbage, a human reply) is accepted and
dropped: refusing it would only send a bounce of the bounce back to its sender.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.core.tokens import Signer
from envoi.db.base import utcnow
from envoi.db.session import transaction
from envoi.inbound import parsing, services
from envoi.inbound.metrics import InboundMetrics

log = logging.getLogger("envoi.inbound")

# A report names one send; a message to more of our addresses than this is no report.
MAX_RECIPIENTS = 100
# Idle time after which a session is closed (aiosmtpd's default is 5 minutes).
SESSION_TIMEOUT = 60.0
# Threads that parse and apply messages: enough to overlap parsing with a commit,
# few enough that a storm cannot exhaust the database's connections.
THREADS = 4

# Local-part prefixes of the addresses that carry a token, and the token's purpose
# (`core.tokens.MessageLinks`: the VERP return path and the mailto unsubscribe).
_TOKEN_ADDRESSES: tuple[tuple[str, Literal["bounce", "unsubscribe"]], ...] = (
    ("bounces+", "bounce"),
    ("unsubscribe+", "unsubscribe"),
)


@dataclass(frozen=True)
class Target:
    """What one accepted recipient address stands for."""

    kind: Literal["bounce", "unsubscribe", "feedback"]
    send_id: int | None = None


class Addresses:
    """Which recipient addresses the listener takes (the module docstring)."""

    def __init__(self, signer: Signer, feedback_local_part: str) -> None:
        self._signer = signer
        self._feedback = feedback_local_part.lower()

    def target(self, address: str) -> Target | Literal["unknown", "forged"]:
        local = address.rpartition("@")[0].strip('"').lower() if "@" in address else ""
        for prefix, purpose in _TOKEN_ADDRESSES:
            if local.startswith(prefix):
                send_id = services.send_id_of(self._signer, purpose, local[len(prefix) :])
                return "forged" if send_id is None else Target(purpose, send_id)
        if local and local == self._feedback:
            return Target("feedback")
        return "unknown"


class Processor:
    """Parses one received message and applies it, in one transaction (a thread's
    work: blocking, no event loop here)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        metrics: InboundMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self.clock = clock
        self.signer = Signer(settings.resolved_secret_key())

    def process(self, raw: bytes, targets: list[Target]) -> list[services.Applied]:
        """Apply the message for each target; commits, or raises (nothing written)."""
        reports = parsing.parse(raw) if any(t.kind != "unsubscribe" for t in targets) else []
        key = services.message_key(raw)
        now = self.clock()
        applied: list[services.Applied] = []
        with transaction(self.sessions) as session:
            for target in targets:
                if target.kind == "unsubscribe" and target.send_id is not None:
                    done = services.apply_unsubscribe(
                        session, target.send_id, now=now, message_key=key
                    )
                    applied.append(done)
                    continue
                applied.extend(
                    services.apply(
                        session,
                        report,
                        send_id_hint=target.send_id,
                        now=now,
                        settings=self.settings,
                        message_key=key,
                        signer=self.signer,
                    )
                    for report in reports
                )
        # Committed: now the facts may be counted and told.
        for done in applied:
            self.metrics.reports.labels(done.kind, done.outcome).inc()
            if done.quarantined:
                self.metrics.quarantined.labels(done.quarantined).inc()
            log.info(
                "report",
                extra={
                    "kind": done.kind,
                    "outcome": done.outcome,
                    "send_id": done.send_id,
                    "project_id": done.project_id,
                    "quarantined": done.quarantined,
                    "handled": done.handled,
                },
            )
        return applied


class _Handler:
    """aiosmtpd's hooks: refuse at RCPT, hand DATA to a thread, answer after commit."""

    def __init__(self, listener: FeedbackListener) -> None:
        self.listener = listener

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        metrics = self.listener.metrics
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            metrics.refused.labels("too_many").inc()
            return "452 4.5.3 Too many recipients"
        target = self.listener.addresses.target(address)
        if not isinstance(target, Target):
            metrics.refused.labels(target).inc()
            log.info(
                "recipient refused",
                extra={"recipient": address[:320], "why": target, "peer": _peer(session)},
            )
            return f"550 5.1.1 <{address}>: no such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: SmtpSession, envelope: Envelope
    ) -> str:
        listener = self.listener
        raw = envelope.original_content or b""
        targets = [
            target
            for address in envelope.rcpt_tos
            if isinstance(target := listener.addresses.target(address), Target)
        ]
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(listener.executor, listener.processor.process, raw, targets)
        except Exception as exc:
            # The database failed (or, a bug of ours, anything else): nothing was
            # committed, the sender keeps the message and retries, the log says why.
            listener.metrics.messages.labels("tempfail").inc()
            database = isinstance(exc, SQLAlchemyError)
            extra = _about(session, raw) | {"database": database}
            log.exception("a received message could not be applied", extra=extra)
            return "451 4.3.0 Temporary failure, please try again later"
        finally:
            listener.metrics.seconds.observe(time.perf_counter() - started)
        listener.metrics.messages.labels("accepted").inc()
        log.info("message received", extra=_about(session, raw) | {"recipients": len(targets)})
        return "250 2.0.0 OK"


def _peer(session: SmtpSession) -> str | None:
    peer: Any = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _about(session: SmtpSession, raw: bytes) -> dict[str, Any]:
    return {"peer": _peer(session), "bytes": len(raw)}


class FeedbackListener:
    """The listener's life: `start()`, then `stop()` (or use it as a context manager).

    `clock` is the time reports are recorded at (tests move it)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.metrics = InboundMetrics()
        self.processor = Processor(settings, sessions, self.metrics, clock)
        self.addresses = Addresses(self.processor.signer, settings.feedback_address)
        self.executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="envoi-inbound")
        self._controller = Controller(
            _Handler(self),
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            # Named explicitly: aiosmtpd would otherwise ask the resolver for the FQDN.
            server_hostname=settings.bounce_domain,
            ident="envoi",
            data_size_limit=settings.inbound_max_message_bytes,
            enable_SMTPUTF8=True,
            timeout=SESSION_TIMEOUT,
        )

    @property
    def host(self) -> str:
        return self.settings.smtp_host

    @property
    def port(self) -> int:
        return self.settings.smtp_port

    def start(self) -> None:
        # aiosmtpd logs every command line at INFO: a bounce storm would flood the log.
        # The listener writes its own line per message and per refused recipient.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller.start()
        log.info("listening for feedback", extra={"smtp": self.settings.smtp_listen})

    def stop(self) -> None:
        """Stop taking connections, then let the messages being applied finish."""
        self._controller.stop()
        self.executor.shutdown(wait=True)

    def __enter__(self) -> FeedbackListener:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
