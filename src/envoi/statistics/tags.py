"""Seed 004's statistics by tag: first, last, opens, clicks, messages and deliveries over
every message carrying the tag, mapped onto the query layer.

Each key is the catalogue measure of the same name, over events whose `tags` hold the
tag (exactly, case included). Opens and clicks count people: machine opens (Apple Mail
Privacy Protection, prefetchers) and scanner clicks are left out, and do not move
`first` / `last` either. A message sent without open or click tracking has no open or
click events, so it adds none and moves nothing, as the seed says.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery

# The seed's keys in the seed's order; each is the catalogue measure of that name.
KEYS: tuple[str, ...] = ("first", "last", "opens", "clicks", "messages", "deliveries")
TIMES = ("first", "last")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # UTC


def tag_stats(engine: StatisticsEngine, project_id: int, tag: str) -> dict[str, Any]:
    """The seed's object; a tag no message carries gives zeros and null times."""
    result = engine.run(
        StatsQuery(project_id=project_id, measures=KEYS, filters=(Filter("tag", "eq", (tag,)),))
    )
    totals = result.totals
    answer: dict[str, Any] = {}
    for key in KEYS:
        value = totals.get(key)
        if key in TIMES:
            answer[key] = value.strftime(TIME_FORMAT) if isinstance(value, datetime) else None
        else:
            answer[key] = int(value or 0)
    return answer
