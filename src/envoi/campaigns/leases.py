"""A lease in the database: which one of several scheduler instances is the active one.

One row of `scheduler_leases` per lease name. An instance takes the row only once it
has expired (or when there is none), renews it while it holds it, and gives it up when
it stops. The take and the renewal are one conditional UPDATE (or an INSERT that
yields to an existing row), so two instances never both hold it. An instance that
cannot renew in time stops acting as the holder at once.

Times come from the holder's clock: hosts must agree on the time to well within the
lease's length (NTP).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import case, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from envoi.campaigns.models import SchedulerLease
from envoi.db.session import transaction

log = logging.getLogger("envoi.scheduler")


class Lease:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        name: str,
        owner: str,
        seconds: float,
        clock: Callable[[], datetime],
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """`on_change(held)` is called when this instance gains or loses the lease."""
        self.name = name
        self.owner = owner
        self._sessions = sessions
        self._length = timedelta(seconds=seconds)
        self._clock = clock
        self._on_change = on_change
        self._held_until: datetime | None = None
        self._renew_at: datetime | None = None

    def held(self) -> bool:
        """Whether this instance holds the lease, renewing it every third of its length."""
        now = self._clock()
        if self._renew_at is not None and now < self._renew_at:
            return True
        with transaction(self._sessions) as session:
            return self.take(session, now)

    def take(self, session: Session, now: datetime) -> bool:
        """Take the lease if it expired (or never existed), renew it if ours; in the
        caller's transaction, so that work written with it commits only while held."""
        expires = now + self._length
        mine = SchedulerLease.owner == self.owner
        taken = session.execute(
            update(SchedulerLease)
            .where(SchedulerLease.name == self.name, mine | (SchedulerLease.expires_at <= now))
            .values(
                owner=self.owner,
                expires_at=expires,
                acquired_at=case((mine, SchedulerLease.acquired_at), else_=now),
            )
            .execution_options(synchronize_session=False)
        )
        renewed: int = taken.rowcount  # type: ignore[attr-defined]
        held = bool(renewed) or self._create(session, now, expires)
        self._note(held, now)
        return held

    def _create(self, session: Session, now: datetime, expires: datetime) -> bool:
        """Create the row as ours; False if it exists. Told by the row RETURNING gives
        back: the rowcount said 1 on PostgreSQL either way."""
        dialect = session.get_bind().dialect.name
        dialect_insert = pg_insert if dialect == "postgresql" else sqlite_insert
        created = session.execute(
            dialect_insert(SchedulerLease)
            .values(name=self.name, owner=self.owner, expires_at=expires, acquired_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(SchedulerLease.name)
        )
        return created.first() is not None

    def _note(self, held: bool, now: datetime) -> None:
        was_held = self._held_until is not None
        if held:
            self._held_until = now + self._length
            self._renew_at = now + self._length / 3
        else:
            self._held_until = self._renew_at = None
        if held != was_held:
            message = "scheduler lease acquired" if held else "scheduler lease lost"
            log.info(message, extra={"owner": self.owner, "lease": self.name})
            if self._on_change is not None:
                self._on_change(held)

    def release(self) -> None:
        """Give the lease up (it expires now), if this instance holds it."""
        if self._held_until is None:
            return
        with transaction(self._sessions) as session:
            session.execute(
                update(SchedulerLease)
                .where(SchedulerLease.name == self.name, SchedulerLease.owner == self.owner)
                .values(expires_at=self._clock())
                .execution_options(synchronize_session=False)
            )
        self._held_until = self._renew_at = None
        log.info("scheduler lease released", extra={"owner": self.owner, "lease": self.name})
        if self._on_change is not None:
            self._on_change(False)
