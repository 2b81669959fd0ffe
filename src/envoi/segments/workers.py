"""Segment generation, off the request path."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker


class SegmentGenerator:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def wake(self) -> None:
        pass
