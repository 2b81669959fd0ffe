"""The delivery service: spooler and sender loops (filled in by the delivery issue)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings


class DeliveryService:
    """Runs the delivery worker on a thread of its own, for as long as `envoi serve` runs."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._settings = settings
        self._sessions = sessions

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
