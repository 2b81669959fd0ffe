"""Segment generation, off the request path: one daemon thread per process.

The API marks a segment "pending", commits, then calls `wake()`. The thread claims
pending segments one at a time with a conditional UPDATE (pending -> running), so
several processes sharing one database never take the same one, and generates each
in its own transaction. It also polls, to pick up segments queued by other processes.
At start it hands segments left "running" by a crashed process back to "pending";
generation replaces the members under a row lock, so running one twice is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from envoi.core.errors import Invalid
from envoi.db.session import transaction
from envoi.segments.models import Segment
from envoi.segments.services import generate

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 30.0
MAX_ERROR_LENGTH = 2000


class SegmentGenerator:
    def __init__(self, sessions: sessionmaker[Session], poll_seconds: float = POLL_SECONDS) -> None:
        self._sessions = sessions
        self._poll_seconds = poll_seconds
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="segment-generator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the segment in hand (a single transaction), then end the thread."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
            self._thread = None

    def wake(self) -> None:
        """Look for pending segments now (called after the request's commit)."""
        self._wakeup.set()

    def _run(self) -> None:
        self._guarded(self.recover)
        while not self._stopping.is_set():
            if self._guarded(self.run_once):
                continue  # there may be more: look again before sleeping
            self._wakeup.wait(self._poll_seconds)
            self._wakeup.clear()

    def _guarded(self, step: Callable[[], object]) -> bool:
        # The thread must outlive a database outage: log, sleep, try again.
        try:
            return bool(step())
        except Exception:
            log.exception("segment generator step failed")
            return False

    def recover(self) -> int:
        """Put back segments a crashed process left "running"; returns how many."""
        with transaction(self._sessions) as session:
            result = session.execute(
                update(Segment).where(Segment.status == "running").values(status="pending")
            )
            count: int = result.rowcount  # type: ignore[attr-defined]
        if count:
            log.info("requeued %d segment(s) left running", count)
        return count

    def run_once(self) -> bool:
        """Claim and generate one pending segment; False when there was none."""
        segment_id = self.claim()
        if segment_id is None:
            return False
        self.generate_claimed(segment_id)
        return True

    def generate_claimed(self, segment_id: int) -> None:
        """Generate a segment this generator claimed, or record why it failed."""
        try:
            with transaction(self._sessions) as session:
                # Locked, so the status read here holds until the members are written.
                segment = session.get(Segment, segment_id, with_for_update=True)
                # Edited (back to "new"), re-queued or deleted since the claim: not ours.
                if segment is not None and segment.status == "running":
                    generate(session, segment)
        except Exception as exc:
            self._fail(segment_id, exc)

    def claim(self) -> int | None:
        """Take the oldest pending segment, or None; the UPDATE's condition makes a
        segment go to exactly one claimer even when several processes race."""
        while True:
            with transaction(self._sessions) as session:
                segment_id = session.scalar(
                    select(Segment.id)
                    .where(Segment.status == "pending")
                    .order_by(Segment.id)
                    .limit(1)
                )
                if segment_id is None:
                    return None
                if claim_segment(session, segment_id):
                    return segment_id

    def _fail(self, segment_id: int, exc: Exception) -> None:
        if isinstance(exc, Invalid):
            where = ".".join(str(part) for part in exc.loc if part != "body")
            message = f"{where}: {exc.message}"
        else:
            log.exception("segment %d failed to generate", segment_id)
            message = f"generation failed: {type(exc).__name__} (see the server log)"
        with transaction(self._sessions) as session:
            session.execute(
                update(Segment)
                .where(Segment.id == segment_id, Segment.status == "running")
                .values(status="failed", error=message[:MAX_ERROR_LENGTH])
            )


def claim_segment(session: Session, segment_id: int) -> bool:
    """pending -> running, if it still is pending; True when this session took it."""
    result = session.execute(
        update(Segment)
        .where(Segment.id == segment_id, Segment.status == "pending")
        .values(status="running")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
