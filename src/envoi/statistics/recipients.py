"""Who did what: the recipients behind a count (`POST /api/v1/metrics/recipients`).

A count measure counts the events its `where` selects; the recipients behind it are
those events grouped by recipient and message (send): one row per recipient of each
message, with the profile, the first and last time and the number of events. The
rows' `events` add up to the count over the same range and filter, but for the
erased: a GDPR erasure strips the address and the profile off a person's events
(`eventstore.mapping.Erasure`), so they are left out (counted in the measure, named
by nobody).

One statement of its own over the event table, made of the plan's predicates
(`sql.where_clauses`) and the count's catalogue SQL; every value a parameter. Pages
follow the order (recipient, send) by keyset: a cursor holds the last row's key, so a
page costs the same wherever it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from envoi.core.errors import Invalid
from envoi.eventstore.interfaces import EventStore
from envoi.eventstore.schema import TABLE
from envoi.statistics import predicates
from envoi.statistics import sql as statements
from envoi.statistics.definitions import Count
from envoi.statistics.metrics import (
    BadRequest,
    Cursors,
    Range,
    body_loc,
    digest,
    micros,
    resolve_range,
    saved_range,
)
from envoi.statistics.plan import Plan, plan
from envoi.statistics.predicates import Parameters
from envoi.statistics.query import StatsQuery
from envoi.statistics.schemas import RecipientsQuery, as_where, parse_filter
from envoi.statistics.timebuckets import from_utc, local_sql

NO_SEND = -1  # the key of events without a send (imported ones may lack it)


@dataclass(frozen=True)
class Prepared:
    body: RecipientsQuery
    plan: Plan
    count: Count
    range: Range
    after: tuple[str, int] | None  # the last (recipient, send) of the previous page
    digest: str


def prepare(body: RecipientsQuery, project_id: int, cursors: Cursors, now: datetime) -> Prepared:
    """The body checked against the catalogue; Invalid with a `loc` into the body."""
    query_digest = digest("recipients", project_id, body)
    payload = cursors.decode(body.cursor, query_digest) if body.cursor else None
    after = _after(payload)
    span = resolve_range(body, now, saved_range(payload))
    node = parse_filter(body.filter)
    query = StatsQuery(
        project_id=project_id,
        measures=(body.metric,),
        start=span.start,
        end=span.end,
        timezone=body.timezone,
        where=as_where(node),
    )
    try:
        planned = plan(query)
    except Invalid as error:
        raise body_loc(error, node, None) from None
    count = planned.shown[0]
    if not isinstance(count, Count):
        raise Invalid(
            f"{count.name} is no count: the recipients are behind a count, such as "
            "opened, unique_clicked or bounced",
            ("body", "metric"),
        )
    return Prepared(body, planned, count, span, after, query_digest)


def _after(payload: dict[str, Any] | None) -> tuple[str, int] | None:
    if payload is None:
        return None
    recipient, send = payload.get("r"), payload.get("n")
    if not (isinstance(recipient, str) and isinstance(send, int)):
        raise BadRequest("not a cursor this server made", ("body", "cursor"))
    return recipient, send


def statement(prepared: Prepared, limit: int) -> tuple[str, list[Any]]:
    """Rows (recipient, send or NO_SEND, profile, first, last, events), in key order,
    after the cursor's key."""
    planned = prepared.plan
    parameters = Parameters()
    timed = any(c.dimension.timed for c in planned.conditions) or (
        planned.tree is not None and predicates.timed(planned.tree)
    )
    local = (
        local_sql(planned.zone_name, parameters.add, planned.start, planned.end) if timed else ""
    )
    where = statements.where_clauses(planned, parameters, local)
    where += [f"({prepared.count.where})", "recipient IS NOT NULL"]
    if prepared.after is not None:
        recipient, send = (parameters.add(value) for value in prepared.after)
        where.append(
            f"(recipient > {recipient} OR "
            f"(recipient = {recipient} AND coalesce(send_id, {NO_SEND}) > {send}))"
        )
    sql = (
        f"SELECT recipient, coalesce(send_id, {NO_SEND}) AS _send, max(profile_id), "  # noqa: S608 - catalogue SQL and placeholders only
        f"min(occurred_at), max(occurred_at), count(*) FROM {TABLE} "
        f"WHERE {' AND '.join(where)} GROUP BY recipient, _send "
        f"ORDER BY recipient, _send LIMIT {parameters.add(limit + 1)}"
    )
    return sql, parameters.values


def run(store: EventStore, prepared: Prepared, cursors: Cursors) -> dict[str, Any]:
    """One page of recipients, and the cursor of the next (None on the last)."""
    limit = prepared.body.limit
    sql, parameters = statement(prepared, limit)
    _columns, rows = store.query(sql, parameters)
    where = prepared.range.where
    recipients = [
        {
            "recipient": recipient,
            "send_id": None if send == NO_SEND else send,
            "profile_id": profile_id,
            "first_at": from_utc(first, where).isoformat(),
            "last_at": from_utc(last, where).isoformat(),
            "events": events,
        }
        for recipient, send, profile_id, first, last, events in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        recipient, send = rows[limit - 1][0], rows[limit - 1][1]
        span = prepared.range
        next_cursor = cursors.encode(
            prepared.digest, r=recipient, n=send, s=micros(span.start), e=micros(span.end)
        )
    return {
        "metric": prepared.body.metric,
        "start": prepared.range.start.isoformat(),
        "end": prepared.range.end.isoformat(),
        "timezone": prepared.body.timezone,
        "recipients": recipients,
        "next_cursor": next_cursor,
    }
