"""What the delivery worker needs from a router's transport, whatever its kind.

Implementations: `routers.smtp.SmtpTransport` (a relay), `routers.mx.MxTransport`
(direct delivery to the recipient domain's MX), `routers.capture.CaptureTransport`
(kept in the OLTP store, shown at GET /api/v1/captured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SmtpReply:
    """The final answer to one message: the server's, or a synthesised one.

    `code` 0 means no SMTP answer at all (connection refused, dropped, timed out):
    a temporary failure, like a 4xx. `uncertain`: the message was sent whole but its
    answer never came (no reply after the final dot), so the server may have taken
    it; a retry may deliver it twice.
    """

    code: int
    status: str | None  # RFC 3463 enhanced status code, e.g. "5.1.1"
    text: str
    uncertain: bool = False

    @property
    def outcome(self) -> str:
        """delivered, tempfail or permfail."""
        if 200 <= self.code < 300:
            return "delivered"
        if self.code >= 500:
            return "permfail"
        return "tempfail"

    @property
    def slows_down(self) -> bool:
        """421 / 451 4.7.x style answers: the destination asks us to send slower."""
        return self.code == 421 or (self.status or "").startswith("4.7")


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipient: str
    # Recipient domain: the key of per-destination limits, and what an MX router resolves.
    domain: str
    spool_id: int | None = None
    post: str | None = None  # S_12, for captured mail
    project_id: int | None = None


class Transport(Protocol):
    """Sends messages for one router; owns its connections and the router's limits."""

    async def send(self, envelope: Envelope, data: bytes) -> SmtpReply:
        """Deliver one message; never raises for a delivery failure (returns it)."""
        ...

    async def close(self) -> None:
        """Close idle connections (QUIT); called when the worker stops."""
        ...
