"""The `capture` router: keep each message in the OLTP store instead of sending it.

For development and demos (and the default when the operator configured no real
route): the bytes that would have left are stored as `CapturedMessage` rows and shown
at `GET /api/v1/captured`.

Writes are group-committed: `send` queues its row and waits; one background task
inserts every row queued meanwhile in a single transaction (on a worker thread, as the
database driver blocks), then answers all their senders. A send therefore returns only
once its row is durable, while a busy worker pays one commit per batch, not per message.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from envoi.db.session import transaction
from envoi.delivery.interfaces import Envelope, SmtpReply
from envoi.routers.models import CapturedMessage

log = logging.getLogger("envoi.capture")

_Pending = tuple[dict[str, Any], "asyncio.Future[SmtpReply]"]
_HEADERS = BytesHeaderParser(policy=default_policy)


def subject_of(raw: bytes) -> str | None:
    """The decoded Subject header of a captured message, if it has one."""
    subject = _HEADERS.parsebytes(raw).get("subject")
    return None if subject is None else str(subject)


class CaptureTransport:
    def __init__(
        self, sessions: sessionmaker[Session], *, router_id: int | None = None, batch: int = 500
    ) -> None:
        self._sessions = sessions
        self._router_id = router_id
        self._batch = batch
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def send(self, envelope: Envelope, data: bytes) -> SmtpReply:
        if envelope.project_id is None:
            return SmtpReply(0, None, "a captured message needs the envelope's project_id")
        row = {
            "project_id": envelope.project_id,
            "router_id": self._router_id,
            "post": envelope.post,
            "spool_id": envelope.spool_id,
            "mail_from": envelope.mail_from,
            "recipient": envelope.recipient,
            "received_at": datetime.now(UTC),
            "raw": data,
        }
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SmtpReply] = loop.create_future()
        self._pending.append((row, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        """Commit what is queued, batch after batch, until nothing is left."""
        while self._pending:
            batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            try:
                ids = await asyncio.to_thread(self._insert, [row for row, _ in batch])
            except Exception as exc:
                log.exception("captured messages could not be stored")
                failed = SmtpReply(451, "4.3.0", f"envoi could not store the message: {exc}")
                replies = [failed] * len(batch)
            else:
                replies = [SmtpReply(250, "2.0.0", f"captured as {id_}") for id_ in ids]
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    future.set_result(reply)

    def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        statement = insert(CapturedMessage).returning(
            CapturedMessage.id, sort_by_parameter_order=True
        )
        with transaction(self._sessions) as session:
            return list(session.scalars(statement, rows))

    async def close(self) -> None:
        """Wait for the rows already queued to be stored."""
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
