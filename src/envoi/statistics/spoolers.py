"""Seed 000's spooler statistics: one campaign's activity, routing and spooling counters,
for the whole campaign or grouped by router, domain, provider, router+domain or
router+provider, mapped onto the query layer.

The spooler is a campaign; its `spooler_token` is the credential (whoever holds it may
read these counters, within the owning project's IP allowlist). Each counter is the
catalogue measure of the same name (`statistics.measures`, seed 000's aliases):

- activity: `open`, `click`, `mirror`: recipients who opened, clicked, viewed the
  online version, each once, people only (machine opens and scanner clicks left out);
- routing: `ok` messages accepted by the receiving server, `tempfail` messages that met
  a temporary failure (deferred for a retry, or reported delayed), each once,
  `permfail` messages refused for good (or given up);
- spooling: `count` messages spooled, `blocked` blocked by the sending policy,
  `quarantine` held back because the address is quarantined.

One query per request: the events of the campaign grouped by the grouping's
dimensions, nested here into `{router: {domain: counters}}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from envoi.campaigns.models import Campaign
from envoi.core.errors import Invalid
from envoi.projects.models import Project
from envoi.statistics.auth import Caller
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery

# The seed's aggregation types → the dimensions they nest, outermost first.
GROUPINGS: dict[str, tuple[str, ...]] = {
    "global": (),
    "router": ("router",),
    "router+domain": ("router", "domain"),
    "router+provider": ("router", "provider"),
    "domain": ("domain",),
    "provider": ("provider",),
}
DEFAULT_GROUPING = "global"
# The answer's sections and their counters, each a catalogue measure of that name.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("activity", ("open", "click", "mirror")),
    ("routing", ("ok", "tempfail", "permfail")),
    ("spooling", ("count", "blocked", "quarantine")),
)
MEASURES: tuple[str, ...] = tuple(name for _, names in SECTIONS for name in names)
# The key of a group without a value: a message not routed yet (every spooling event
# is written before a router is chosen), no address; a domain no known provider hosts.
MISSING_KEYS: dict[str, str] = {"router": "none", "domain": "none", "provider": "other"}
MAX_TOKEN = 64  # Campaign.spooler_token's length: a longer string names no spooler


@dataclass(frozen=True)
class Spooler(Caller):
    """The campaign a spooler token names, with its project and the project's allowlist."""

    campaign_id: int


def find_spooler(sessions: sessionmaker[Session], token: str) -> Spooler | None:
    """The spooler of `token`; None for any other string. A short transaction of its own:
    the statistics come from the event store, not from the OLTP database."""
    if not token or len(token) > MAX_TOKEN:
        return None
    query = (
        select(Campaign.id, Campaign.project_id, Project.allowed_ips)
        .join(Project, Project.id == Campaign.project_id)
        .where(Campaign.spooler_token == token)
    )
    with sessions() as session:
        row = session.execute(query).one_or_none()
    if row is None:
        return None
    return Spooler(row.project_id, tuple(row.allowed_ips or ()), row.id)


def parse_grouping(body: bytes) -> str:
    """The aggregation type a request body asks for: `{"groupBy": "router"}`. An empty
    body, or an object without `groupBy`, is `global`; anything else is Invalid."""
    if not body.strip():
        return DEFAULT_GROUPING
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("The body is not valid JSON", ("body",)) from None
    if not isinstance(request, dict):
        raise Invalid("The body must be a JSON object", ("body",))
    unknown = sorted(set(request) - {"groupBy"})
    if unknown:
        raise Invalid(f"Unknown field {unknown[0]!r}: the body takes groupBy only", ("body",))
    grouping = request.get("groupBy", DEFAULT_GROUPING)
    if not isinstance(grouping, str) or grouping not in GROUPINGS:
        allowed = ", ".join(GROUPINGS)
        raise Invalid(f"groupBy must be one of: {allowed}", ("body", "groupBy"))
    return grouping


def spooler_stats(engine: StatisticsEngine, spooler: Spooler, grouping: str) -> dict[str, Any]:
    """The counters of the spooler: one leaf for `global`, else leaves nested by the
    grouping's dimensions. Groups whose counters are all zero are left out."""
    keys = GROUPINGS[grouping]
    result = engine.run(
        StatsQuery(
            project_id=spooler.project_id,
            group_by=keys,
            measures=MEASURES,
            filters=(Filter("campaign_id", "eq", (spooler.campaign_id,)),),
        )
    )
    if not keys:
        return leaf(result.totals)
    nested: dict[str, Any] = {}
    for row in result.rows:
        if not any(row[name] for name in MEASURES):
            continue
        node = nested
        for key in keys[:-1]:
            node = node.setdefault(_key(key, row[key]), {})
        last = _key(keys[-1], row[keys[-1]])
        node[last] = _add(node[last], leaf(row)) if last in node else leaf(row)
    return nested


def leaf(values: dict[str, Any]) -> dict[str, dict[str, int]]:
    """`{"activity": {...}, "routing": {...}, "spooling": {...}}` of a group's measures."""
    return {
        section: {name: int(values.get(name) or 0) for name in names} for section, names in SECTIONS
    }


def _key(dimension: str, value: Any) -> str:
    return MISSING_KEYS[dimension] if value is None else str(value)


def _add(one: dict[str, dict[str, int]], other: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Two leaves under one key (a router named like the missing-value key): summed."""
    return {
        section: {name: one[section][name] + other[section][name] for name in names}
        for section, names in SECTIONS
    }
