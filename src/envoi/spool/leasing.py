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
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.core.campaign_states import State
from envoi.spool.bulk import (
    SPOOL,
    datetime_value,
    execute,
    id_in,
    ids_parameter,
    placeholder,
    result_converter,
)
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
    # The variant's language when the row names one (a forwarded copy: the friend has
    # no profile, and reads the language the original recipient read).
    language: str | None = None


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
    SpoolEntry.language,
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
    dialect = session.get_bind().dialect
    parameters = _lease_parameters(dialect, ids, owner, now, lease_seconds)
    execute(session, _statement(dialect, "claim"), parameters)
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


def _without_erased(session: Session, rows: list[_Claimed], now: datetime) -> list[_Claimed]:
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


def _of_campaigns(campaign_ids: Sequence[int | None]) -> str:
    """SQL text: rows of these campaigns (None: rows outside campaigns). The ids are
    the database's own integers, written into the text.

    `campaign_id + 0` keeps the condition off `ix_spool_campaign_state`: PostgreSQL
    would otherwise pick that index whenever its statistics predate the campaign (a
    new campaign id looks rare), then sort every queued row of the campaign on each
    claim, where `ix_spool_claim` gives the rows in order and stops at the limit."""
    ids = sorted({int(i) for i in campaign_ids if i is not None})
    clauses = []
    if ids:
        clauses.append(f"(campaign_id + 0) IN ({', '.join(map(str, ids))})")
    if any(i is None for i in campaign_ids):
        clauses.append("campaign_id IS NULL")
    return f"({' OR '.join(clauses)})" if clauses else "(1 = 0)"


class _Claimed(NamedTuple):
    """A row `claim` takes (`CLAIM_COLUMNS`); `not_before` as the driver gives it,
    only sorted (SQLite's text sorts as the times it holds)."""

    id: int
    project_id: int
    campaign_id: int | None
    email_id: int
    profile_id: int | None
    recipient: str | None
    domain: str | None
    params: dict[str, Any] | None
    attempts: int
    uncertain: bool
    priority: int
    state: str
    not_before: Any
    language: str | None


_PARAMS = _Claimed._fields.index("params")
_UNCERTAIN = _Claimed._fields.index("uncertain")


def _claimable(
    session: Session, where: str, order: str, parameters: dict[str, Any]
) -> list[_Claimed]:
    """`CLAIM_COLUMNS` of the rows `where` in `order`, at most `:limit`, locked (SKIP
    LOCKED: rows another worker is taking are left to it), as SQL text (`spool.bulk`)."""
    dialect = session.get_bind().dialect
    postgres = dialect.name == "postgresql"
    columns = ", ".join(column.key for column in CLAIM_COLUMNS)
    sql = (
        f"SELECT {columns} FROM {SpoolEntry.__tablename__} WHERE {where} "  # noqa: S608
        f"ORDER BY {order} LIMIT {placeholder(dialect, 'limit')}"
    )
    if postgres:
        sql += " FOR UPDATE SKIP LOCKED"
    params_of = result_converter(dialect, SPOOL, "params")
    rows = []
    for row in execute(session, sql, parameters):
        values = list(row)
        values[_PARAMS] = params_of(values[_PARAMS])
        values[_UNCERTAIN] = bool(values[_UNCERTAIN])  # SQLite's 0 / 1
        rows.append(_Claimed._make(values))
    return rows


def _time(dialect: Dialect, name: str) -> str:
    """The placeholder of a `UTCDateTime` parameter (see `spool.bulk.datetime_value`)."""
    cast = "::TIMESTAMP WITHOUT TIME ZONE" if dialect.name == "postgresql" else ""
    return placeholder(dialect, name) + cast


def _expired_leases(
    session: Session, now: datetime, levels: dict[int, list[int | None]], limit: int
) -> list[_Claimed]:
    # Few rows are ever leased or sending (what workers hold), so sorting them is cheap.
    dialect = session.get_bind().dialect
    every = [i for ids in levels.values() for i in ids]
    states = ", ".join(f"'{name}'" for name in IN_FLIGHT)
    where = (
        f"state IN ({states}) AND lease_until < {_time(dialect, 'now')} AND {_of_campaigns(every)}"
    )
    parameters = {"now": datetime_value(dialect, now), "limit": limit}
    return _claimable(session, where, "priority DESC, not_before, id", parameters)


def _due_at_level(
    session: Session, now: datetime, priority: int, campaign_ids: list[int | None], limit: int
) -> list[_Claimed]:
    # One query per waiting state: each walks ix_spool_claim (state, not_before,
    # priority) in order and stops at `limit`; the two are merged here.
    dialect = session.get_bind().dialect
    parameters = {
        "now": datetime_value(dialect, now),
        "priority": priority,
        "limit": limit,
    }
    rows: list[_Claimed] = []
    for state in WAITING:
        where = (
            f"state = '{state}' AND not_before <= {_time(dialect, 'now')} "
            f"AND priority = {placeholder(dialect, 'priority')} AND {_of_campaigns(campaign_ids)}"
        )
        rows += _claimable(session, where, "not_before", parameters)
    rows.sort(key=lambda row: (row.not_before, row.id))
    return rows[:limit]


def claim_of(row: _Claimed, uncertain: bool) -> Claim:
    return Claim(
        row.id,
        row.project_id,
        row.campaign_id,
        row.email_id,
        row.profile_id,
        row.recipient or "",
        row.domain or "",
        dict(row.params or {}),
        row.attempts,
        uncertain or row.uncertain,
        row.priority,
        row.language,
    )


def mark_sending(
    session: Session, owner: str, ids: list[int], now: datetime, lease_seconds: float = 60
) -> list[int]:
    """The rows are handed to SMTP now: `sending`, lease renewed. Returns the ids still
    leased by `owner` (a row whose lease expired may belong to another worker now, and
    must not be sent)."""
    if not ids:
        return []
    dialect = session.get_bind().dialect
    parameters = _lease_parameters(dialect, ids, owner, now, lease_seconds)
    return sorted(row[0] for row in execute(session, _statement(dialect, "mark"), parameters))


def release(session: Session, owner: str, ids: list[int]) -> None:
    """Leased rows the worker will not send (their campaign was paused) go back to queued."""
    if not ids:
        return
    dialect = session.get_bind().dialect
    parameters = {"ids": ids_parameter(dialect, ids), "owner": owner}
    execute(session, _statement(dialect, "release"), parameters)


_STATEMENTS: dict[tuple[str, str], str] = {}


def _statement(dialect: Dialect, name: str) -> str:
    """The SQL text of the sending path's updates, built once per back-end and sent to
    the driver (`spool.bulk`): SQLAlchemy's statement building and parameter
    processing cost more than the database's work in a delivery worker.

    The tests of the state are kept off `ix_spool_claim` (`+state` on SQLite,
    `state || ''` on PostgreSQL): both planners otherwise walk every leased (and
    sending) row of the index, testing each against the ids, where the primary key
    finds the few rows asked for (SQLite: 70 µs a row with 10,000 rows leased)."""
    key = (dialect.name, name)
    sql = _STATEMENTS.get(key)
    if sql is None:
        sql = _STATEMENTS[key] = _statement_text(dialect, name)
    return sql


def _statement_text(dialect: Dialect, name: str) -> str:
    postgres = dialect.name == "postgresql"
    table = SpoolEntry.__tablename__
    timestamp = "::TIMESTAMP WITHOUT TIME ZONE" if postgres else ""
    owner = placeholder(dialect, "owner")
    until = placeholder(dialect, "until") + timestamp
    now = placeholder(dialect, "now") + timestamp
    state = "(state || '')" if postgres else "+state"
    in_flight = ", ".join(f"'{name}'" for name in IN_FLIGHT)
    if name == "claim":
        return (
            f"UPDATE {table} SET state = 'leased', lease_owner = {owner}, "  # noqa: S608
            f"lease_until = {until}, updated_at = {now} WHERE {id_in(dialect)}"
        )
    if name == "mark":
        return (
            f"UPDATE {table} SET state = 'sending', lease_until = {until}, "  # noqa: S608
            f"first_attempt_at = coalesce(first_attempt_at, {now}), updated_at = {now} "
            f"WHERE {id_in(dialect)} AND lease_owner = {owner} AND {state} IN ({in_flight}) "
            "RETURNING id"
        )
    if name == "release":
        return (
            f"UPDATE {table} SET state = 'queued', lease_owner = NULL, lease_until = NULL "  # noqa: S608
            f"WHERE {id_in(dialect)} AND lease_owner = {owner} AND {state} = 'leased'"
        )
    raise ValueError(name)


def campaign_states(session: Session, ids: list[int]) -> dict[int, str]:
    """campaign id → state, for the workers to drop claims of paused campaigns."""
    if not ids:
        return {}
    query = select(Campaign.id, Campaign.state).where(Campaign.id.in_(sorted(set(ids))))
    return dict(session.execute(query).all())


def _lease_parameters(
    dialect: Dialect, ids: list[int], owner: str, now: datetime, lease_seconds: float
) -> dict[str, Any]:
    """The parameters of the claim and mark statements: rows, owner, lease end, now."""
    return {
        "ids": ids_parameter(dialect, ids),
        "owner": owner,
        "until": datetime_value(dialect, now + timedelta(seconds=lease_seconds)),
        "now": datetime_value(dialect, now),
    }
