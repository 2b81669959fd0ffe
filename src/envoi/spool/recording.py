"""Recording what happened to claimed rows, and finishing campaigns.

`record`: 2xx → `delivered`; 4xx or no answer → `deferred` with `retry_delay`
backoff (1, 2, 4 ... minutes, at most one hour) until `GIVE_UP_AFTER` (3 days) from
the first attempt, then `permfail` with reason `expired` and bounce class
`block_timeout` (what a relay's 4.4.7 "delivery time expired" DSN is classed as too);
5xx → `permfail`, reason = bounce class (`core.smtp_replies`), and a nonexistent
address is quarantined unless the email is transactional (`is_urgent`). A skip
before SMTP (the pre-send hook refused) → `blocked` with its reason. A reply that
says the message may have been delivered (`SmtpReply.uncertain`: no answer after the
final dot) flags the row `uncertain` for good, and its events carry `uncertain: true`.

Each row's state change and its outbox event are written together, and only for rows
still leased or sending by the recording worker (`spool.leasing`): a row stopped
meanwhile (a GDPR erasure quarantines leased rows) stays stopped. A row erased while
in an SMTP session has its outcome recorded, but a temporary failure is not retried
(`quarantined`, `gdpr`): it has no address left.

`finish_campaigns`: a running campaign whose spool is built and has no pending row
is finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.campaigns.spec import PostType
from envoi.core import bounces
from envoi.core.campaign_states import Action, State
from envoi.core.smtp_replies import classify
from envoi.delivery.interfaces import SmtpReply
from envoi.emails.models import Email
from envoi.quarantine.models import QuarantineEntry
from envoi.quarantine.services import stronger_reason_update
from envoi.spool.building import Dimensions, advance_all
from envoi.spool.bulk import (
    OUTBOX,
    SPOOL,
    bulk_insert,
    bulk_update,
    execute,
    id_in,
    ids_parameter,
    placeholder,
    result_converter,
)
from envoi.spool.checks import any_of
from envoi.spool.leasing import IN_FLIGHT
from envoi.spool.models import PENDING_STATES, SpoolEntry

log = logging.getLogger("envoi.spool")

# Retries: the first after FIRST_RETRY, each next one twice as late, at most MAX_RETRY
# apart; a row still failing GIVE_UP_AFTER after its first attempt is given up.
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=3)
EXPIRED_REASON = "expired"
EXPIRED_CLASS = "block_timeout"
# A row whose person was erased while it was in flight is not retried.
ERASED_REASON = "gdpr"

# Column sizes of SpoolEntry, for values that come from outside.
SIZES = {"smtp_text": 1000, "smtp_status": 16, "router": 100, "language": 8}


@dataclass(frozen=True)
class Result:
    """What happened to one claimed row."""

    spool_id: int
    reply: SmtpReply | None  # None when skipped before SMTP
    router: str | None = None
    language: str | None = None
    skip_reason: str | None = None  # "external_check" when the pre-send hook refused
    params: dict[str, Any] | None = None  # hook parameters to keep on the row


def retry_delay(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt a row is tried again."""
    doublings = min(max(attempts, 1) - 1, 16)
    delay: timedelta = FIRST_RETRY * 2**doublings
    return min(delay, MAX_RETRY)


def finish_campaigns(session: Session, now: datetime) -> list[int]:  # noqa: ARG001
    """Running campaigns whose spool is built and has no pending row become finished.

    (`now` is the workers' clock, unused: only the rows' states decide.)"""
    pending = exists().where(
        SpoolEntry.campaign_id == Campaign.id, SpoolEntry.state.in_(PENDING_STATES)
    )
    query = (
        select(Campaign)
        .where(
            Campaign.state == State.RUNNING.value,
            Campaign.spool_built_at.is_not(None),
            Campaign.post_type != PostType.AUTOMATED,
            # An A/B test's sample sent is not the end: the winner's send is to come.
            Campaign.ab_phase.is_distinct_from("test"),
            ~pending,
        )
        .order_by(Campaign.id)
        .with_for_update(skip_locked=True)
    )
    return advance_all(session, query, Action.FINISH)


@dataclass
class _Outcome:
    """What `record` writes for one row: its changed columns and its outbox event."""

    values: dict[str, Any]
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    quarantine: bool = False


_RECORD_COLUMNS = (
    SpoolEntry.id,
    SpoolEntry.project_id,
    SpoolEntry.campaign_id,
    SpoolEntry.email_id,
    SpoolEntry.profile_id,
    SpoolEntry.recipient,
    SpoolEntry.domain,
    SpoolEntry.attempts,
    SpoolEntry.first_attempt_at,
    SpoolEntry.router,
    SpoolEntry.language,
    SpoolEntry.uncertain,
)


def record(session: Session, owner: str, results: list[Result], now: datetime) -> None:
    """Write each result whose row `owner` still holds (leased or sending), with its
    outbox event, and quarantine the nonexistent addresses; rows lost to another
    worker (expired lease) are left to it."""
    if not results:
        return
    by_id = {result.spool_id: result for result in results}
    rows, campaigns = _held(session, owner, sorted(by_id))
    if len(rows) < len(by_id):
        lost = sorted(set(by_id) - {row.id for row in rows})
        log.info("results for rows no longer leased to %s are ignored: %s", owner, lost)
    if not rows:
        return
    params = _merged_params(session, [by_id[row.id] for row in rows])
    # Rows changing the same columns share one executemany UPDATE.
    changes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    events, bounced = [], []
    for row in rows:
        outcome = _outcome(row, by_id[row.id], now)
        if row.id in params:
            outcome.values["params"] = params[row.id]
        columns = tuple(sorted(outcome.values))
        changes.setdefault(columns, []).append({"id": row.id, **outcome.values})
        dimensions = campaigns.get(row.campaign_id) or Dimensions.of(None)
        language = outcome.values.get("language", row.language)
        data = dimensions.data(row.email_id, row.domain, language, row.id)
        router = outcome.values.get("router", row.router)
        data |= {"router": router, "uncertain": row.uncertain, **outcome.data}
        events.append(_event(row, outcome.kind, data, now))
        if outcome.quarantine and row.recipient:
            bounced.append((row, outcome))
    released = {"lease_owner": None, "lease_until": None, "updated_at": now}
    for group in changes.values():
        bulk_update(session, SPOOL, group, released)
    bulk_insert(session, OUTBOX, events)
    if bounced:  # transactional emails' addresses are not quarantined
        urgent = _urgent_emails(session, {row.email_id for row, _ in bounced})
        bounced = [(row, outcome) for row, outcome in bounced if row.email_id not in urgent]
        _quarantine_nonexistent(session, bounced, now)


class _Held(NamedTuple):
    """A row `record` writes (the `_RECORD_COLUMNS`)."""

    id: int
    project_id: int
    campaign_id: int | None
    email_id: int
    profile_id: int | None
    recipient: str | None
    domain: str | None
    attempts: int
    first_attempt_at: datetime | None
    router: str | None
    language: str | None
    uncertain: bool


_FIRST_ATTEMPT_AT = _Held._fields.index("first_attempt_at")
_UNCERTAIN = _Held._fields.index("uncertain")


def _held(
    session: Session, owner: str, ids: list[int]
) -> tuple[list[_Held], dict[int | None, Dimensions]]:
    """The rows of `ids` that `owner` still holds, locked, and their campaigns'
    dimensions (which never change once a campaign has left its draft: only drafts
    are rewritten, and only started campaigns have rows), in one statement."""
    dialect = session.get_bind().dialect
    time_of = result_converter(dialect, SPOOL, "first_attempt_at")
    result = execute(
        session, _held_sql(dialect), {"ids": ids_parameter(dialect, ids), "owner": owner}
    )
    rows: list[_Held] = []
    campaigns: dict[int | None, Dimensions] = {}
    for *values, post_type, message_type, tags in result:
        if values[_FIRST_ATTEMPT_AT] is not None:
            values[_FIRST_ATTEMPT_AT] = time_of(values[_FIRST_ATTEMPT_AT])
        values[_UNCERTAIN] = bool(values[_UNCERTAIN])  # SQLite's 0 / 1
        row = _Held._make(values)
        rows.append(row)
        campaign_id = row.campaign_id
        if campaign_id is not None and post_type is not None and campaign_id not in campaigns:
            campaigns[campaign_id] = Dimensions.named(campaign_id, post_type, message_type, tags)
    return rows, campaigns


_HELD_SQL: dict[str, str] = {}


def _held_sql(dialect: Dialect) -> str:
    """`_held`'s SELECT ... FOR UPDATE. The state test is kept off `ix_spool_claim`
    (`+state` on SQLite, `state || ''` on PostgreSQL): both planners otherwise walk
    every leased and sending row of the index and test each against the ids, where
    the primary key finds the few rows asked for (SQLite: 70 µs a row with 10,000
    rows leased)."""
    sql = _HELD_SQL.get(dialect.name)
    if sql is None:
        selected = ", ".join(f"s.{column.key}" for column in _RECORD_COLUMNS)
        states = ", ".join(f"'{name}'" for name in IN_FLIGHT)
        postgres = dialect.name == "postgresql"
        state = "(s.state || '')" if postgres else "+s.state"
        sql = (
            f"SELECT {selected}, c.post_type, c.message_type, c.tags "  # noqa: S608
            f"FROM {SpoolEntry.__tablename__} AS s "
            f"LEFT OUTER JOIN {Campaign.__tablename__} AS c ON c.id = s.campaign_id "
            f"WHERE {id_in(dialect, 's.id')} AND s.lease_owner = {placeholder(dialect, 'owner')} "
            f"AND {state} IN ({states})"
        )
        if postgres:
            sql += " FOR UPDATE OF s"
        _HELD_SQL[dialect.name] = sql
    return sql


def _outcome(row: _Held, result: Result, now: datetime) -> _Outcome:
    """The columns that change (by name) and the event, for one row's result."""
    values: dict[str, Any] = {}
    if result.router:
        values["router"] = _cut(result.router, "router")
    if result.language:
        values["language"] = _cut(result.language, "language")
    reply = result.reply
    if reply is None:
        if result.skip_reason is None:
            raise ValueError(f"result for spool row {row.id} has neither reply nor skip reason")
        values |= {"state": "blocked", "reason": result.skip_reason[:32]}
        return _Outcome(values, "blocked", {"reason": result.skip_reason})
    attempt = row.attempts + 1
    values |= {
        "attempts": attempt,
        "first_attempt_at": row.first_attempt_at or now,
        "smtp_code": reply.code,
        "smtp_status": _cut(reply.status, "smtp_status"),
        "smtp_text": _cut(reply.text, "smtp_text"),
    }
    data: dict[str, Any] = {
        "smtp_code": reply.code,
        "smtp_status": values["smtp_status"],
        "smtp_text": values["smtp_text"],
        "attempt": attempt,
    }
    if reply.uncertain:
        # The message went out whole and its answer never came: the server may have
        # taken it. The row keeps the flag through its retries, which may deliver a
        # second copy.
        values["uncertain"] = data["uncertain"] = True
    return _replied(row, reply, values, data, now)


def _replied(
    row: _Held, reply: SmtpReply, values: dict[str, Any], data: dict[str, Any], now: datetime
) -> _Outcome:
    """`_outcome` for an SMTP answer (or the lack of one)."""
    outcome = reply.outcome
    if outcome == "delivered":
        return _Outcome(values | {"state": "delivered"}, "delivered", data)
    classification = classify(reply.code, reply.status, reply.text)
    data["bounce_class"] = classification.bounce_class
    data["bounce_reason"] = classification.reason
    data["error_code"] = classification.error_code
    data["hard"] = classification.hard
    if outcome == "permfail":
        values |= {"state": "permfail", "reason": classification.bounce_class}
        data["reason"] = classification.bounce_class
        return _Outcome(values, "permfail", data, quarantine=classification.quarantine)
    if row.recipient is None:
        # The person was erased while the message was in flight (`profiles.erasure`
        # keeps a sending row's state, and strips its address): never retried.
        values |= {"state": "quarantined", "reason": ERASED_REASON}
        return _Outcome(values, "tempfail", data | {"reason": ERASED_REASON})
    deadline = values["first_attempt_at"] + GIVE_UP_AFTER
    if now >= deadline:
        values |= {"state": "permfail", "reason": EXPIRED_REASON}
        given_up = bounces.verdict(EXPIRED_REASON, permanent=True)
        data |= {
            "reason": EXPIRED_REASON,
            "bounce_class": EXPIRED_CLASS,
            "bounce_reason": given_up.reason,
            "error_code": given_up.error_code,
            "hard": given_up.hard,
        }
        return _Outcome(values, "permfail", data)
    retry_at = min(now + retry_delay(values["attempts"]), deadline)
    values |= {"state": "deferred", "not_before": retry_at}
    return _Outcome(values, "tempfail", data | {"retry_at": retry_at.isoformat()})


def _cut(value: str | None, column: str) -> str | None:
    return value[: SIZES[column]] if value is not None else None


def _merged_params(session: Session, results: list[Result]) -> dict[int, dict[str, Any]]:
    """spool id → its params with the hook's added, for the results that bring some."""
    extra = {r.spool_id: r.params for r in results if r.params}
    if not extra:
        return {}
    query = select(SpoolEntry.id, SpoolEntry.params).where(
        any_of(session, SpoolEntry.id, sorted(extra))
    )
    return {i: {**(stored or {}), **extra[i]} for i, stored in session.execute(query)}


def _event(row: _Held, kind: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "project_id": row.project_id,
        "kind": kind,
        "occurred_at": now,
        "campaign_id": row.campaign_id,
        "email_id": row.email_id,
        "profile_id": row.profile_id,
        "recipient": row.recipient,
        "data": data,
    }


def _urgent_emails(session: Session, email_ids: set[int]) -> set[int]:
    query = select(Email.id).where(Email.id.in_(sorted(email_ids)), Email.is_urgent.is_(True))
    return set(session.scalars(query))


def _quarantine_nonexistent(
    session: Session, bounced: list[tuple[_Held, _Outcome]], now: datetime
) -> None:
    """Quarantine hard-bounced addresses as `nonexistent`, noting the send and reply.

    One upsert for the batch, rather than `quarantine.services.add` per address, as
    `record` runs for thousands of rows a second, with `add`'s own SET clause
    (`stronger_reason_update`): an unexpired entry of a stronger reason (a complaint,
    an unsubscribe, an erasure) keeps its reason and note, and every entry becomes
    permanent (a nonexistent address never expires)."""
    if not bounced:
        return
    entries: dict[tuple[int, str], dict[str, Any]] = {}
    for row, outcome in bounced:
        if row.recipient is None:  # checked by the caller; keeps the types honest
            continue
        note = (
            f"hard bounce of send {row.id} (campaign {row.campaign_id}): "
            f"{outcome.values['smtp_code']} {outcome.values['smtp_status'] or ''} "
            f"{outcome.values['smtp_text'] or ''}"
        )
        entries[(row.project_id, row.recipient)] = {
            "project_id": row.project_id,
            "address": row.recipient,
            "reason": "nonexistent",
            "note": " ".join(note.split())[:1000],
            "created_at": now,
            "expires_at": None,
        }
    is_postgres = session.get_bind().dialect.name == "postgresql"
    statement = (pg_insert if is_postgres else sqlite_insert)(QuarantineEntry)
    statement = statement.on_conflict_do_update(
        index_elements=["project_id", "address"],
        set_=stronger_reason_update(statement.excluded, now),
    )
    session.execute(statement, list(entries.values()))
