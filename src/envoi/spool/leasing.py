"""Leasing spool rows to workers: claim, hand to SMTP, give back.

`claim` takes due rows by priority (highest first), then `not_before`. Ties in
`not_before` go in index order, which is insertion (id) order on a fresh spool: an
explicit `id` sort key would make PostgreSQL sort every row of a campaign whose rows
share one `not_before` on each claim. Rows are taken per priority level, so each
query walks `ix_spool_claim` in order and stops at `limit`. `leased` rows whose lease
expired go back silently; `sending` ones were in flight when their worker died and
come back `uncertain` (logged on `envoi.spool`), unless their person was erased
meanwhile: those are stopped.

A row's lease names its owner: `mark_sending`, `release` and `spool.recording.record`
act only on rows still leased (or sending) by the caller, so a worker whose lease
expired, or whose row was stopped meanwhile (a GDPR erasure), changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.core.campaign_states import State
from envoi.db.base import UTCDateTime
from envoi.spool.bulk import AnyRow
from envoi.spool.checks import any_of
from envoi.spool.models import PENDING_STATES, SpoolEntry

log = logging.getLogger("envoi.spool")

WAITING = ("queued", "deferred")  # due once `not_before` has passed
IN_FLIGHT = ("leased", "sending")  # due once `lease_until` has passed


@dataclass(frozen=True)
class Claim:
    """A spool row handed to a worker."""

    id: int
    project_id: int
    campaign_id: int | None
    email_id: int
    profile_id: int | None
    recipient: str
    domain: str
    params: dict[str, Any]
    attempts: int
    uncertain: bool
    priority: int


CLAIM_COLUMNS = (
    SpoolEntry.id,
    SpoolEntry.project_id,
    SpoolEntry.campaign_id,
    SpoolEntry.email_id,
    SpoolEntry.profile_id,
    SpoolEntry.recipient,
    SpoolEntry.domain,
    SpoolEntry.params,
    SpoolEntry.attempts,
    SpoolEntry.uncertain,
    SpoolEntry.priority,
    SpoolEntry.state,
    SpoolEntry.not_before,
)


def claim(
    session: Session, owner: str, now: datetime, limit: int, lease_seconds: float = 60
) -> list[Claim]:
    """Lease up to `limit` due rows to `owner` until now + `lease_seconds`."""
    check_owner(owner)
    if limit <= 0:
        return []
    levels = _running_levels(session)
    for priority in _loose_levels(session):
        levels.setdefault(priority, []).append(None)
    if not levels:
        return []
    taken = _expired_leases(session, now, levels, limit)
    for priority in sorted(levels, reverse=True):
        if len(taken) >= limit:
            break
        taken += _due_at_level(session, now, priority, levels[priority], limit - len(taken))
    taken = _without_erased(session, taken, now)
    if not taken:
        return []
    ids = [row.id for row in taken]
    in_flight = [row.id for row in taken if row.state == "sending"]
    session.execute(
        update(SpoolEntry)
        .where(any_of(session, SpoolEntry.id, ids))
        .values(
            state="leased",
            lease_owner=owner,
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if in_flight:
        log.warning(
            "taking over %d rows that were in flight when their worker stopped; they are "
            "sent again and flagged uncertain (their recipients may get the message "
            "twice): spool ids %s",
            len(in_flight),
            in_flight,
        )
        session.execute(
            update(SpoolEntry)
            .where(any_of(session, SpoolEntry.id, in_flight))
            .values(uncertain=True)
            .execution_options(synchronize_session=False)
        )
    return [claim_of(row, row.state == "sending") for row in taken]


def _without_erased(session: Session, rows: list[AnyRow], now: datetime) -> list[AnyRow]:
    """The rows that still have a recipient; the others are stopped (`quarantined`,
    `gdpr`, no event: the erasure took the person out of the outbox too).

    A claimable row without a recipient was `sending` when its person was erased
    (`profiles.erasure` strips the address but leaves rows in an SMTP session to
    their worker) and its worker then died: there is nobody to send it again to."""
    erased = [row.id for row in rows if row.recipient is None]
    if not erased:
        return rows
    session.execute(
        update(SpoolEntry)
        .where(any_of(session, SpoolEntry.id, erased))
        .values(
            state="quarantined", reason="gdpr", lease_owner=None, lease_until=None, updated_at=now
        )
        .execution_options(synchronize_session=False)
    )
    return [row for row in rows if row.recipient is not None]


def check_owner(owner: str) -> None:
    if not owner or len(owner) > 64:
        raise ValueError("a lease owner is 1 to 64 characters")


def _running_levels(session: Session) -> dict[int, list[int | None]]:
    """priority → ids of the running campaigns with that priority."""
    query = select(Campaign.priority, Campaign.id).where(Campaign.state == State.RUNNING.value)
    levels: dict[int, list[int | None]] = {}
    for priority, campaign_id in session.execute(query):
        levels.setdefault(priority, []).append(campaign_id)
    return levels


def _loose_levels(session: Session) -> list[int]:
    """Priorities of pending rows outside campaigns (always claimable)."""
    query = (
        select(SpoolEntry.priority)
        .where(SpoolEntry.campaign_id.is_(None), SpoolEntry.state.in_(PENDING_STATES))
        .distinct()
    )
    return list(session.scalars(query))


def _of_campaigns(campaign_ids: Sequence[int | None]) -> Any:
    """Rows of these campaigns (None: rows outside campaigns).

    `campaign_id + 0` keeps the condition off `ix_spool_campaign_state`: PostgreSQL
    would otherwise pick that index whenever its statistics predate the campaign (a
    new campaign id looks rare), then sort every queued row of the campaign on each
    claim, where `ix_spool_claim` gives the rows in order and stops at the limit."""
    ids = sorted({i for i in campaign_ids if i is not None})
    loose = any(i is None for i in campaign_ids)
    clauses = []
    if ids:
        clauses.append((SpoolEntry.campaign_id + 0).in_(ids))
    if loose:
        clauses.append(SpoolEntry.campaign_id.is_(None))
    return or_(*clauses)


def _expired_leases(
    session: Session, now: datetime, levels: dict[int, list[int | None]], limit: int
) -> list[AnyRow]:
    # Few rows are ever leased or sending (what workers hold), so sorting them is cheap.
    every = [i for ids in levels.values() for i in ids]
    query = (
        select(*CLAIM_COLUMNS)
        .where(SpoolEntry.state.in_(IN_FLIGHT), SpoolEntry.lease_until < now, _of_campaigns(every))
        .order_by(SpoolEntry.priority.desc(), SpoolEntry.not_before, SpoolEntry.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.execute(query).all())


def _due_at_level(
    session: Session, now: datetime, priority: int, campaign_ids: list[int | None], limit: int
) -> list[AnyRow]:
    # One query per waiting state: each walks ix_spool_claim (state, not_before,
    # priority) in order and stops at `limit`; the two are merged here.
    rows: list[AnyRow] = []
    for state in WAITING:
        query = (
            select(*CLAIM_COLUMNS)
            .where(
                SpoolEntry.state == state,
                SpoolEntry.not_before <= now,
                SpoolEntry.priority == priority,
                _of_campaigns(campaign_ids),
            )
            .order_by(SpoolEntry.not_before)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows += session.execute(query).all()
    rows.sort(key=lambda row: (row.not_before, row.id))
    return rows[:limit]


def claim_of(row: AnyRow, uncertain: bool) -> Claim:
    return Claim(
        id=row.id,
        project_id=row.project_id,
        campaign_id=row.campaign_id,
        email_id=row.email_id,
        profile_id=row.profile_id,
        recipient=row.recipient or "",
        domain=row.domain or "",
        params=dict(row.params or {}),
        attempts=row.attempts,
        uncertain=uncertain or row.uncertain,
        priority=row.priority,
    )


def mark_sending(
    session: Session, owner: str, ids: list[int], now: datetime, lease_seconds: float = 60
) -> list[int]:
    """The rows are handed to SMTP now: `sending`, lease renewed. Returns the ids still
    leased by `owner` (a row whose lease expired may belong to another worker now, and
    must not be sent)."""
    if not ids:
        return []
    statement = (
        update(SpoolEntry)
        .where(
            any_of(session, SpoolEntry.id, ids),
            SpoolEntry.lease_owner == owner,
            SpoolEntry.state.in_(IN_FLIGHT),
        )
        .values(
            state="sending",
            lease_until=now + timedelta(seconds=lease_seconds),
            first_attempt_at=func.coalesce(
                SpoolEntry.first_attempt_at, bindparam("now", now, type_=UTCDateTime())
            ),
            updated_at=now,
        )
        .returning(SpoolEntry.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(session.scalars(statement))


def release(session: Session, owner: str, ids: list[int]) -> None:
    """Leased rows the worker will not send (their campaign was paused) go back to queued."""
    if not ids:
        return
    session.execute(
        update(SpoolEntry)
        .where(
            any_of(session, SpoolEntry.id, ids),
            SpoolEntry.lease_owner == owner,
            SpoolEntry.state == "leased",
        )
        .values(state="queued", lease_owner=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def campaign_states(session: Session, ids: list[int]) -> dict[int, str]:
    """campaign id → state, for the workers to drop claims of paused campaigns."""
    if not ids:
        return {}
    query = select(Campaign.id, Campaign.state).where(Campaign.id.in_(sorted(set(ids))))
    return dict(session.execute(query).all())
