"""The native metrics API over real HTTP (`/api/v1/metrics...`): every precision on a
time zone's clock (summer time included), up to five dimensions, the boolean filter
against a reference evaluation, ordering, pages walked by cursor, totals, zero fill,
rates with their parts, CSV, the recipients behind a count, every error with its
`loc`, the catalogue, the documented answers, and projects kept apart."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from envoi.statistics.catalogue import DIMENSIONS, MEASURES
from envoi.testing.docs import mismatches
from tests.test_stats_messages import (  # the served app and its event store
    StatsBackend,
    Tenant,
    event,
    make_tenant,
    stats_backend,
    tenant,
)

__all__ = ["make_tenant", "stats_backend", "tenant"]  # fixtures shared with seed 001's tests

# The event store's logic does not depend on the OLTP database: SQLite only.
SQLITE = pytest.mark.parametrize("stats_backend", ["sqlite"], indirect=True)
DOC = Path(__file__).resolve().parents[1] / "docs" / "api-metrics.md"

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)  # a Monday
RANGE = {"start": "2024-03-01T00:00:00Z", "end": "2024-03-11T00:00:00Z"}
PEOPLE = ("ann@example.com", "bob@example.com", "cyd@mail.test", "dan@other.org", "eve@mail.test")


def activity(project_id: int) -> list[dict[str, Any]]:
    """Two campaigns' events over four days (the dataset of docs/api-metrics.md)."""
    rows: list[dict[str, Any]] = []

    def add(email: int, kind: str, day: int, hhmm: str, who: str, **columns: Any) -> None:
        hour, minute = (int(part) for part in hhmm.split(":"))
        when = T0.replace(hour=hour, minute=minute) + timedelta(days=day)
        address = next(p for p in PEOPLE if p.startswith(who))
        person = PEOPLE.index(address)
        router = "r1" if person < 2 else "r2"
        columns.setdefault("tags", ["news"] if email == 1 else ["promo", "spring"])
        rows.append(
            event(
                project_id,
                email,
                kind,
                when,
                address,
                send_id=email * 100 + person,
                profile_id=person + 1,
                router=router,
                **columns,
            )
        )

    for minute, who in enumerate(("ann", "bob", "cyd", "dan")):
        add(1, "delivered", 0, f"10:0{minute}", who)
    add(1, "permfail", 0, "10:04", "eve", bounce_class="user_unknown", hard=True, smtp_code=550)
    add(1, "open", 0, "11:00", "ann", client="Gmail", device="Webmail")
    add(1, "open", 0, "10:30", "bob", machine="apple_mpp")
    add(1, "click", 0, "11:05", "ann", link=0, url="https://example.com/a")
    add(1, "open", 1, "09:00", "ann", client="Apple Mail", device="Mobile")
    add(1, "unsubscribe", 1, "08:00", "dan", method="one-click")
    add(1, "open", 2, "12:00", "cyd", client="Outlook", device="Desktop")
    add(1, "click", 2, "12:01", "cyd", link=1, url="https://example.com/b")
    add(1, "click", 2, "12:02", "cyd", link=1, url="https://example.com/b", machine="scanner")
    add(2, "delivered", 3, "09:00", "ann")
    add(2, "delivered", 3, "09:01", "cyd")
    add(2, "open", 3, "10:00", "ann", client="Gmail", device="Webmail")
    add(2, "complaint", 3, "11:00", "cyd", handled=True)
    return rows


def post(client: httpx.Client, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def query(tenant: Tenant, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = post(tenant.api, "/metrics", body)
    return answer


def loc_of(response: httpx.Response) -> list[Any]:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    loc: list[Any] = detail[0]["loc"]
    return loc


# -- a reference evaluation of the filter, over the rows in Python -------------------------


def column(row: dict[str, Any], name: str, zone: tzinfo) -> Any:
    local = row["occurred_at"].replace(tzinfo=UTC).astimezone(zone)
    if name == "hour":
        return local.hour
    if name == "date":
        return local.date().isoformat()
    if name == "human":
        return row.get("machine") is None
    return row.get(name)


def holds(node: dict[str, Any], row: dict[str, Any], zone: tzinfo) -> bool:
    """The filter as the API documents it: `not` is the exact complement."""
    if "and" in node:
        return all(holds(item, row, zone) for item in node["and"])
    if "or" in node:
        return any(holds(item, row, zone) for item in node["or"])
    if "not" in node:
        return not holds(node["not"], row, zone)
    return passes(column(row, node["field"], zone), node["op"], node["value"])


def passes(value: Any, op: str, wanted: Any) -> bool:
    """One condition: a comparison with a missing value fails, but `eq` / `ne` null
    test for one, and `ne` is IS DISTINCT FROM."""
    if op in ("eq", "ne"):
        same = value is None if wanted is None else value == wanted
        return same if op == "eq" else not same
    if value is None:
        return False
    if op == "like":
        pattern = "".join(
            ".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(wanted)
        )
        return re.fullmatch(pattern, value, re.DOTALL) is not None
    compare: dict[str, Callable[[], bool]] = {
        "in": lambda: value in wanted,
        "ge": lambda: value >= wanted,
        "le": lambda: value <= wanted,
        "gt": lambda: value > wanted,
        "lt": lambda: value < wanted,
    }
    return compare[op]()


def counts(rows: list[dict[str, Any]], node: dict[str, Any] | None, zone: tzinfo) -> Any:
    kept = [row for row in rows if node is None or holds(node, row, zone)]
    return {
        "delivered": sum(row["kind"] == "delivered" for row in kept),
        "opened_all": sum(row["kind"] == "open" for row in kept),
        "clicked_all": sum(row["kind"] == "click" for row in kept),
        "permfail": sum(row["kind"] == "permfail" for row in kept),
    }


def leaf(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


FILTERS: list[dict[str, Any]] = [
    leaf("domain", "eq", "example.com"),
    leaf("domain", "ne", "example.com"),
    leaf("machine", "eq", None),
    leaf("machine", "ne", None),
    leaf("domain", "in", ["mail.test", "other.org"]),
    leaf("recipient", "like", "%y%@%"),
    leaf("link", "ge", 1),
    leaf("link", "le", 0),
    leaf("link", "gt", 0),
    leaf("recipient", "lt", "c"),
    leaf("client", "ne", "Gmail"),
    {"not": leaf("link", "eq", 1)},
    {"and": [leaf("router", "eq", "r1"), {"not": leaf("kind", "in", ["open", "click"])}]},
    {
        "or": [
            {"and": [leaf("domain", "eq", "mail.test"), leaf("kind", "eq", "click")]},
            {"not": {"or": [leaf("hour", "lt", 11), leaf("human", "eq", False)]}},
        ]
    },
    {"and": [leaf("date", "ge", "2024-03-05"), {"or": [leaf("hour", "ge", 12)]}]},
    {"and": []},
    {"not": {"and": [leaf("smtp_code", "eq", 550), {"not": leaf("hard", "eq", False)}]}},
]


# -- the catalogue, isolation, availability ------------------------------------------------


def test_the_catalogue_lists_every_measure_and_dimension(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    response = tenant.api.get("/metrics/catalogue")
    assert response.status_code == 200, response.text
    listed = response.json()
    assert [d["name"] for d in listed["dimensions"]] == list(DIMENSIONS)
    assert [m["name"] for m in listed["measures"]] == list(MEASURES)
    measures = {m["name"]: m for m in listed["measures"]}
    assert measures["open_rate"] | {"doc": "", "seeds": []} == {
        "name": "open_rate",
        "kind": "rate",
        "doc": "",
        "definition": "opened / delivered (0 when delivered is 0)",
        "same_as": None,
        "seeds": [],
        "numerator": "opened",
        "denominator": "delivered",
    }
    assert measures["opened_machine"]["variants"] == {
        "human": "opened",
        "machine": "opened_machine",
        "all": "opened_all",
    }
    assert measures["unique_clicked"]["variants"] == {
        "human": "unique_clicked",
        "all": "unique_clicked_all",
    }
    assert measures["sum_opened"]["same_as"] == "opened"
    assert measures["unique_opened"]["definition"] == (
        "count of the events where kind = 'open' AND is_first_human"
    )
    assert listed["precisions"]["day"] == "bucket_day"
    assert listed["precisions"]["none"] is None
    assert listed["operators"] == ["eq", "ge", "gt", "in", "le", "like", "lt", "ne"]
    assert listed["limits"]["dimensions"] == 5
    anonymous = httpx.get(f"{stats_backend.base_url}/api/v1/metrics/catalogue")
    assert anonymous.status_code == 401


def test_each_project_sees_its_own_events_only(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    stats_backend.store.append(activity(tenant.creds.id))
    other = make_tenant()
    body = {"metrics": ["delivered", "opened"], "dimensions": ["domain"], "totals": True, **RANGE}
    mine = query(tenant, **body)
    assert mine["totals"] == {"delivered": 6, "opened": 4}
    assert [row["domain"] for row in mine["rows"]] == ["example.com", "mail.test", "other.org"]
    theirs = query(other, **body)
    assert theirs["rows"] == []
    assert theirs["totals"] == {"delivered": 0, "opened": 0}
    recipients = post(other.api, "/metrics/recipients", {"metric": "delivered", **RANGE})
    assert recipients["recipients"] == []
    # A cursor of one project's query is not another's, even for the same body.
    page = query(tenant, **(body | {"limit": 1}))
    response = other.api.post("/metrics", json=body | {"limit": 1, "cursor": page["next_cursor"]})
    assert response.status_code == 400
    assert loc_of(response) == ["body", "cursor"]
    # Basic auth and the allowlist, as for the whole native API.
    wrong = httpx.post(
        f"{stats_backend.base_url}/api/v1/metrics", json=body, auth=(tenant.creds.login, "nope")
    )
    assert wrong.status_code == 401
    fenced = make_tenant(allowed_ips=("10.0.0.0/8",))
    assert fenced.api.post("/metrics", json=body).status_code == 403


def test_without_its_event_store_the_api_says_so(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    # Restored by hand: pytest's monkeypatch would delete the attribute from Starlette's
    # `State` on undo (it looks for the old value in the instance `__dict__`).
    state = stats_backend.app.state
    state.event_store = None
    try:
        for path, body in (
            ("/metrics", {"metrics": ["delivered"]}),
            ("/metrics/export", {"metrics": ["delivered"]}),
            ("/metrics/recipients", {"metric": "delivered"}),
        ):
            response = tenant.api.post(path, json=body)
            assert response.status_code == 503, path
            assert response.json() == {"detail": "Statistics unavailable"}
        assert tenant.api.get("/metrics/catalogue").status_code == 200
    finally:
        state.event_store = stats_backend.store


# -- time ----------------------------------------------------------------------------------

PRECISION_TIMES = [
    datetime(2023, 12, 31, 23, 59, 30, tzinfo=UTC),
    datetime(2024, 1, 1, 0, 4, 59, tzinfo=UTC),
    datetime(2024, 1, 1, 0, 5, tzinfo=UTC),
    datetime(2024, 2, 29, 13, 14, tzinfo=UTC),
    datetime(2024, 3, 31, 0, 10, tzinfo=UTC),  # 01:10 in Paris, before summer time
    datetime(2024, 3, 31, 1, 20, tzinfo=UTC),  # 03:20 in Paris, after it
    datetime(2024, 6, 30, 22, 30, tzinfo=UTC),
    datetime(2024, 10, 27, 0, 30, tzinfo=UTC),  # 02:30 in Paris, summer time
    datetime(2024, 10, 27, 1, 30, tzinfo=UTC),  # 02:30 in Paris again, winter time
]
PRECISIONS = ("1min", "5min", "15min", "hour", "day", "week", "month", "quarter", "year")


def bucket_start(wall: datetime, precision: str) -> datetime:
    """The start of `wall`'s bucket, on the same clock."""
    day = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = {"1min": 1, "5min": 5, "15min": 15, "hour": 60}
    if precision in minutes:
        step = minutes[precision]
        return wall.replace(minute=wall.minute // step * step, second=0, microsecond=0)
    if precision == "day":
        return day
    if precision == "week":
        return day - timedelta(days=wall.weekday())
    month = {"month": wall.month, "quarter": (wall.month - 1) // 3 * 3 + 1, "year": 1}[precision]
    return day.replace(month=month, day=1)


@SQLITE
def test_every_precision_buckets_on_the_zones_clock(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    pid = tenant.creds.id
    stats_backend.store.append(
        [
            event(pid, 1, "delivered", at, f"p{i}@example.com")
            for i, at in enumerate(PRECISION_TIMES)
        ]
    )
    span = {"start": "2023-12-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}
    for name in ("UTC", "Europe/Paris", "America/New_York"):
        where = ZoneInfo(name)
        for precision in PRECISIONS:
            answer = query(
                tenant,
                metrics=["delivered"],
                precision=precision,
                timezone=name,
                zero_fill=False,
                **span,
            )
            expected = Counter(
                bucket_start(at.astimezone(where).replace(tzinfo=None, fold=0), precision)
                .replace(tzinfo=where)
                .isoformat()
                for at in PRECISION_TIMES
            )
            got = {row["time"]: row["delivered"] for row in answer["rows"]}
            assert got == dict(expected), (name, precision)
            starts = [datetime.fromisoformat(row["time"]) for row in answer["rows"]]
            assert starts == sorted(starts)
    # Paris, the night the clocks go back: 02:30 twice is one hour bucket.
    autumn = query(
        tenant,
        metrics=["delivered"],
        precision="hour",
        timezone="Europe/Paris",
        start="2024-10-27T00:00:00",
        end="2024-10-28T00:00:00",
    )
    assert len(autumn["rows"]) == 24
    assert {"time": "2024-10-27T02:00:00+02:00", "delivered": 2} in autumn["rows"]


@SQLITE
def test_the_day_summer_time_starts_has_23_hours(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    pid = tenant.creds.id
    stats_backend.store.append(
        [
            event(pid, 1, "delivered", at, f"p{i}@example.com")
            for i, at in enumerate(PRECISION_TIMES)
        ]
    )
    # Times without an offset are on the query zone's clock.
    answer = query(
        tenant,
        metrics=["delivered"],
        precision="hour",
        timezone="Europe/Paris",
        start="2024-03-31T00:00:00",
        end="2024-04-01T00:00:00",
    )
    assert answer["start"] == "2024-03-31T00:00:00+01:00"
    assert answer["end"] == "2024-04-01T00:00:00+02:00"
    times = [row["time"] for row in answer["rows"]]
    assert len(times) == 23
    assert times[:4] == [
        "2024-03-31T00:00:00+01:00",
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T04:00:00+02:00",
    ]
    delivered = {row["time"]: row["delivered"] for row in answer["rows"] if row["delivered"]}
    assert delivered == {"2024-03-31T01:00:00+01:00": 1, "2024-03-31T03:00:00+02:00": 1}
    # The same day by day: one row, both events.
    days = query(
        tenant,
        metrics=["delivered"],
        precision="day",
        timezone="Europe/Paris",
        start="2024-03-30T00:00:00",
        end="2024-04-02T00:00:00",
    )
    assert days["rows"] == [
        {"time": "2024-03-30T00:00:00+01:00", "delivered": 0},
        {"time": "2024-03-31T00:00:00+01:00", "delivered": 2},
        {"time": "2024-04-01T00:00:00+02:00", "delivered": 0},
    ]


# -- grouping, filtering, ordering ---------------------------------------------------------


def key_order(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The engine's order of group keys: ascending, missing values last."""
    return tuple((value is None, value) for value in values)


@SQLITE
def test_up_to_five_dimensions(stats_backend: StatsBackend, tenant: Tenant) -> None:
    rows = activity(tenant.creds.id)
    stats_backend.store.append(rows)
    dimensions = ["domain", "router", "kind", "link", "machine"]
    answer = query(
        tenant, dimensions=dimensions, metrics=["opened_all", "clicked_all", "delivered"], **RANGE
    )
    groups: dict[tuple[Any, ...], Counter[str]] = {}
    for row in rows:
        group = groups.setdefault(tuple(row.get(d) for d in dimensions), Counter())
        group.update({"opened_all": row["kind"] == "open", "clicked_all": row["kind"] == "click"})
        group.update({"delivered": row["kind"] == "delivered"})
    expected = [
        dict(zip(dimensions, key, strict=True))
        | {name: groups[key][name] for name in ("opened_all", "clicked_all", "delivered")}
        for key in sorted(groups, key=key_order)
    ]
    assert answer["rows"] == expected
    # With a precision, five dimensions still (the time is not one of them).
    daily = query(tenant, precision="day", dimensions=dimensions, metrics=["delivered"], **RANGE)
    assert sum(row["delivered"] for row in daily["rows"]) == 6
    assert list(daily["rows"][0]) == ["time", *dimensions, "delivered"]


@SQLITE
def test_the_filter_tree_against_a_reference(stats_backend: StatsBackend, tenant: Tenant) -> None:
    rows = activity(tenant.creds.id)
    stats_backend.store.append(rows)
    metrics = ["delivered", "opened_all", "clicked_all", "permfail"]
    for zone_name in ("UTC", "Asia/Tokyo"):
        where = ZoneInfo(zone_name)
        for node in FILTERS:
            answer = query(tenant, metrics=metrics, filter=node, timezone=zone_name, **RANGE)
            assert answer["rows"] == [counts(rows, node, where)], (zone_name, node)
    # Grouped, the filter keeps the same events in each group.
    node = FILTERS[13]
    grouped = query(tenant, dimensions=["domain"], metrics=metrics, filter=node, **RANGE)
    for row in grouped["rows"]:
        mine = [r for r in rows if r["domain"] == row["domain"]]
        assert {m: row[m] for m in metrics} == counts(mine, node, UTC)
    # Every filter is exercised: each keeps some events and leaves out others.
    everything = counts(rows, None, UTC)
    for node in FILTERS[:-2]:
        assert counts(rows, node, UTC) != everything or node == {"and": []}, node
    # Tags conditions at the top also pick the groups of a grouping by tag.
    tags = query(
        tenant,
        dimensions=["tag"],
        metrics=["delivered"],
        filter=leaf("tag", "eq", "promo"),
        **RANGE,
    )
    assert tags["rows"] == [{"tag": "promo", "delivered": 2}]


@SQLITE
def test_rows_ordered_by_a_metric_or_a_dimension(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    stats_backend.store.append(activity(tenant.creds.id))
    base = {"dimensions": ["recipient"], "metrics": ["opened_all", "delivered"], **RANGE}
    by_opens = query(tenant, **base, order_by=["-opened_all", "-recipient"])["rows"]
    assert [(r["recipient"], r["opened_all"]) for r in by_opens] == [
        ("ann@example.com", 3),
        ("cyd@mail.test", 1),
        ("bob@example.com", 1),
        ("eve@mail.test", 0),
        ("dan@other.org", 0),
    ]
    backwards = query(tenant, **base, order_by=["-recipient"])["rows"]
    assert [r["recipient"] for r in backwards] == sorted(PEOPLE, reverse=True)
    # A metric only sorted by is not shown; ties follow the group keys.
    by_clicks = query(tenant, **base, order_by=["-clicked_all"])["rows"]
    assert [r["recipient"] for r in by_clicks][:2] == ["cyd@mail.test", "ann@example.com"]
    assert list(by_clicks[0]) == ["recipient", "opened_all", "delivered"]
    # A zero-filled series sorts the same way: the busiest day first.
    days = query(tenant, precision="day", metrics=["opened"], order_by=["-opened"], **RANGE)
    assert [r["opened"] for r in days["rows"]] == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert days["rows"][0]["time"] == "2024-03-04T00:00:00+00:00"
    assert [r["time"] for r in days["rows"][4:6]] == [
        "2024-03-01T00:00:00+00:00",
        "2024-03-02T00:00:00+00:00",
    ]


# -- pages ---------------------------------------------------------------------------------


def walk(tenant: Tenant, path: str, body: dict[str, Any], key: str) -> list[list[Any]]:
    """Every page of a query, following next_cursor."""
    pages = []
    cursor = None
    while True:
        answer = post(tenant.api, path, body | ({"cursor": cursor} if cursor else {}))
        pages.append(answer[key])
        cursor = answer["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


@SQLITE
def test_pages_walked_by_cursor(stats_backend: StatsBackend, tenant: Tenant) -> None:
    pid = tenant.creds.id
    now = datetime.now(UTC)
    stats_backend.store.append(
        [
            event(pid, 1, "delivered", T0 + timedelta(minutes=7 * i), f"p{i:02}@d{i % 4}.test")
            for i in range(57)
        ]
        + [event(pid, 1, "delivered", now - timedelta(hours=1), f"now{i}@x.test") for i in range(3)]
    )
    body = {"dimensions": ["recipient"], "metrics": ["delivered"], "totals": True, **RANGE}
    everything = query(tenant, **body)
    assert len(everything["rows"]) == 57
    assert everything["next_cursor"] is None
    pages = walk(tenant, "/metrics", body | {"limit": 10}, "rows")
    assert [len(page) for page in pages] == [10, 10, 10, 10, 10, 7]
    assert [row for page in pages for row in page] == everything["rows"]
    # A zero-filled series pages the same way, in its own order.
    hourly = {"precision": "hour", "metrics": ["delivered"], "order_by": ["-delivered"]}
    hourly |= {"start": "2024-03-04T00:00:00Z", "end": "2024-03-06T00:00:00Z"}
    whole = query(tenant, **hourly)["rows"]
    assert len(whole) == 48
    walked = walk(tenant, "/metrics", hourly | {"limit": 7}, "rows")
    assert [len(page) for page in walked] == [7] * 6 + [6]
    assert [row for page in walked for row in page] == whole
    # The default range ends "now": its pages keep the range of the first.
    recent = walk(
        tenant,
        "/metrics",
        {"dimensions": ["recipient"], "metrics": ["delivered"], "limit": 1},
        "rows",
    )
    assert [page[0]["recipient"] for page in recent] == [
        "now0@x.test",
        "now1@x.test",
        "now2@x.test",
    ]
    # The limit may change from page to page; anything else may not.
    first = query(tenant, **body, limit=20)
    second = query(tenant, **body, limit=30, cursor=first["next_cursor"])
    assert first["rows"] + second["rows"] == everything["rows"][:50]
    cursor = first["next_cursor"]
    for changed in (
        body | {"metrics": ["delivered", "sent"]},
        body | {"end": "2024-03-12T00:00:00Z"},
        body | {"totals": False},
    ):
        response = tenant.api.post("/metrics", json=changed | {"cursor": cursor})
        assert response.status_code == 400, changed
        assert response.json()["detail"][0]["msg"] == (
            "the cursor belongs to another query: send the same body"
        )
    forged = cursor[:-1] + ("0" if cursor[-1] != "0" else "1")
    for bad in (forged, "abc", "x.y", cursor.split(".")[0]):
        response = tenant.api.post("/metrics", json=body | {"cursor": bad})
        assert response.status_code == 400
        assert loc_of(response) == ["body", "cursor"]


@SQLITE
def test_totals_on_request_and_rates_from_summed_counts(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    stats_backend.store.append(activity(tenant.creds.id))
    span = {"start": "2024-03-04T00:00:00Z", "end": "2024-03-08T00:00:00Z"}
    body = {"precision": "day", "metrics": ["delivered", "open_rate", "ctor"], **span}
    answer = query(tenant, **body, totals=True)

    def rate(numerator: int, denominator: int) -> dict[str, Any]:
        value = numerator / denominator if denominator else 0.0
        return {"value": value, "numerator": numerator, "denominator": denominator}

    assert answer["rows"] == [
        {
            "time": "2024-03-04T00:00:00+00:00",
            "delivered": 4,
            "open_rate": rate(1, 4),
            "ctor": rate(1, 1),
        },
        {
            "time": "2024-03-05T00:00:00+00:00",
            "delivered": 0,
            "open_rate": rate(1, 0),
            "ctor": rate(0, 0),
        },
        {
            "time": "2024-03-06T00:00:00+00:00",
            "delivered": 0,
            "open_rate": rate(1, 0),
            "ctor": rate(1, 1),
        },
        {
            "time": "2024-03-07T00:00:00+00:00",
            "delivered": 2,
            "open_rate": rate(1, 2),
            "ctor": rate(0, 1),
        },
    ]
    # The totals' rates come from the totals' counts, not from the days' rates.
    assert answer["totals"] == {"delivered": 6, "open_rate": rate(4, 6), "ctor": rate(2, 3)}
    assert query(tenant, **body)["totals"] is None
    assert query(tenant, **body, totals=False)["totals"] is None
    # A rate's parts asked for as metrics too are shown as such.
    both = query(tenant, metrics=["opened", "open_rate", "delivered"], **span)
    assert both["rows"] == [{"opened": 4, "open_rate": rate(4, 6), "delivered": 6}]


@SQLITE
def test_zero_fill(stats_backend: StatsBackend, tenant: Tenant) -> None:
    stats_backend.store.append(activity(tenant.creds.id))
    body = {"precision": "day", "metrics": ["delivered", "click_rate", "first", "goal_value"]}
    filled = query(tenant, **body, **RANGE)["rows"]
    assert [row["time"][:10] for row in filled] == [f"2024-03-{d:02}" for d in range(1, 11)]
    assert filled[0] == {
        "time": "2024-03-01T00:00:00+00:00",
        "delivered": 0,
        "click_rate": {"value": 0.0, "numerator": 0, "denominator": 0},
        "first": None,
        "goal_value": 0.0,
    }
    assert filled[3]["first"] == "2024-03-04T10:00:00+00:00"
    sparse = query(tenant, **body, zero_fill=False, **RANGE)["rows"]
    assert sparse == [row for row in filled if row["first"] is not None]
    # With another dimension, only the combinations that have events are rows.
    by_domain = query(
        tenant, precision="day", dimensions=["domain"], metrics=["delivered"], **RANGE
    )
    assert len(by_domain["rows"]) == 8
    # A zero-filled series has at most 100,000 buckets.
    minutes = {"precision": "1min", "metrics": ["delivered"], "start": "2024-01-01T00:00:00Z"}
    minutes |= {"end": "2024-04-10T00:00:00Z"}
    response = tenant.api.post("/metrics", json=minutes)
    assert response.status_code == 400
    assert loc_of(response) == ["body", "precision"]
    assert query(tenant, **minutes, zero_fill=False)["rows"][0]["delivered"] == 1
    short = minutes | {"end": "2024-03-09T10:00:00Z"}  # 98,520 minutes
    assert len(query(tenant, **short, limit=10)["rows"]) == 10


# -- CSV -----------------------------------------------------------------------------------


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flat(row: dict[str, Any]) -> list[str]:
    cells = []
    for value in row.values():
        if isinstance(value, dict):
            cells += [cell(value["value"]), cell(value["numerator"]), cell(value["denominator"])]
        else:
            cells.append(cell(value))
    return cells


@SQLITE
def test_csv_export_holds_the_json_rows(stats_backend: StatsBackend, tenant: Tenant) -> None:
    stats_backend.store.append(activity(tenant.creds.id))
    body = {
        "precision": "day",
        "dimensions": ["domain", "human"],
        "metrics": ["delivered", "open_rate", "first"],
        "totals": True,
        "timezone": "America/New_York",
        **RANGE,
    }
    answer = query(tenant, **body, limit=10_000)
    export = tenant.api.post("/metrics/export", json=body)
    assert export.status_code == 200, export.text
    assert export.headers["content-type"] == "text/csv; charset=utf-8"
    assert export.headers["content-disposition"] == 'attachment; filename="metrics.csv"'
    lines = list(csv.reader(io.StringIO(export.text)))
    assert lines[0] == [
        "time",
        "domain",
        "human",
        "delivered",
        "open_rate",
        "open_rate.numerator",
        "open_rate.denominator",
        "first",
    ]
    assert lines[1:-1] == [flat(row) for row in answer["rows"]]
    totals = answer["totals"]
    assert lines[-1] == ["total", "", "", *flat(totals)]
    # `Accept: text/csv` on the query itself: the page asked for, the next cursor aside.
    page = tenant.api.post(
        "/metrics", json=body | {"limit": 2, "totals": False}, headers={"Accept": "text/csv"}
    )
    assert page.status_code == 200
    assert "content-disposition" not in page.headers
    assert list(csv.reader(io.StringIO(page.text)))[1:] == [flat(r) for r in answer["rows"][:2]]
    rest = tenant.api.post(
        "/metrics/export",
        json=body | {"totals": False, "cursor": page.headers["x-next-cursor"]},
    )
    assert list(csv.reader(io.StringIO(rest.text)))[1:] == [flat(r) for r in answer["rows"][2:]]
    # Without a precision or dimension: one row, no totals line.
    single = tenant.api.post(
        "/metrics/export", json={"metrics": ["delivered"], "totals": True, **RANGE}
    )
    assert single.text == "delivered\r\n6\r\n"


# -- who did what --------------------------------------------------------------------------


@SQLITE
def test_the_recipients_behind_a_count(stats_backend: StatsBackend, tenant: Tenant) -> None:
    rows = activity(tenant.creds.id)
    # An erased person's open: counted, named by nobody.
    erased = event(tenant.creds.id, 1, "open", T0 + timedelta(hours=3), "x@example.com")
    rows.append(erased | {"recipient": None, "profile_id": None, "send_id": 999})
    stats_backend.store.append(rows)
    body = {"metric": "opened", "limit": 2, **RANGE}
    pages = walk(tenant, "/metrics/recipients", body, "recipients")
    assert pages == [
        [
            {
                "recipient": "ann@example.com",
                "send_id": 100,
                "profile_id": 1,
                "first_at": "2024-03-04T11:00:00+00:00",
                "last_at": "2024-03-05T09:00:00+00:00",
                "events": 2,
            },
            {
                "recipient": "ann@example.com",
                "send_id": 200,
                "profile_id": 1,
                "first_at": "2024-03-07T10:00:00+00:00",
                "last_at": "2024-03-07T10:00:00+00:00",
                "events": 1,
            },
        ],
        [
            {
                "recipient": "cyd@mail.test",
                "send_id": 102,
                "profile_id": 3,
                "first_at": "2024-03-06T12:00:00+00:00",
                "last_at": "2024-03-06T12:00:00+00:00",
                "events": 1,
            }
        ],
    ]
    assert query(tenant, metrics=["opened"], **RANGE)["rows"] == [{"opened": 5}]
    # A unique count: each recipient once, at the first open; in the query's zone.
    unique = post(
        tenant.api,
        "/metrics/recipients",
        {"metric": "unique_opened_all", "timezone": "Europe/Paris", **RANGE},
    )
    assert [(r["recipient"], r["send_id"], r["events"]) for r in unique["recipients"]] == [
        ("ann@example.com", 100, 1),
        ("ann@example.com", 200, 1),
        ("bob@example.com", 101, 1),
        ("cyd@mail.test", 102, 1),
    ]
    assert unique["recipients"][2]["first_at"] == "2024-03-04T11:30:00+01:00"
    # With a filter and a range.
    narrowed = post(
        tenant.api,
        "/metrics/recipients",
        {
            "metric": "delivered",
            "filter": {"or": [leaf("domain", "eq", "mail.test"), leaf("hour", "ge", 12)]},
            "start": "2024-03-04T00:00:00Z",
            "end": "2024-03-05T00:00:00Z",
        },
    )
    assert [r["recipient"] for r in narrowed["recipients"]] == ["cyd@mail.test"]
    # Errors: only a count has recipients; locs into the body.
    for wrong, loc in (
        ({"metric": "open_rate"}, ["body", "metric"]),
        ({"metric": "first"}, ["body", "metric"]),
        ({"metric": "nope"}, ["body", "metric"]),
        (
            {"metric": "opened", "filter": {"not": leaf("nope", "eq", 1)}},
            ["body", "filter", "not", "field"],
        ),
        ({"metric": "opened", "limit": 10_001}, ["body", "limit"]),
        ({"metrics": ["opened"]}, ["body", "metric"]),
    ):
        response = tenant.api.post("/metrics/recipients", json=wrong)
        assert response.status_code == 422, wrong
        assert loc in [e["loc"] for e in response.json()["detail"]], response.text
    first = post(tenant.api, "/metrics/recipients", body)
    response = tenant.api.post(
        "/metrics/recipients", json=body | {"metric": "clicked", "cursor": first["next_cursor"]}
    )
    assert response.status_code == 400
    assert loc_of(response) == ["body", "cursor"]


# -- errors --------------------------------------------------------------------------------

DEEP: dict[str, Any] = leaf("domain", "eq", "x")
for _ in range(21):
    DEEP = {"not": DEEP}

ERRORS: list[tuple[dict[str, Any], int, list[Any]]] = [
    ({}, 422, ["body", "metrics"]),
    ({"metrics": []}, 422, ["body", "metrics"]),
    ({"metrics": ["delivered"] * 51}, 422, ["body", "metrics"]),
    ({"metrics": ["delivered", "nope"]}, 422, ["body", "metrics", 1]),
    ({"metrics": ["delivered", "delivered"]}, 422, ["body", "metrics", 1]),
    ({"metrics": ["delivered"], "dimensions": ["nope"]}, 422, ["body", "dimensions", 0]),
    (
        {"metrics": ["delivered"], "precision": "day", "dimensions": ["domain", "nope"]},
        422,
        ["body", "dimensions", 1],
    ),
    ({"metrics": ["delivered"], "dimensions": ["domain"] * 6}, 422, ["body", "dimensions"]),
    ({"metrics": ["delivered"], "precision": "weekly"}, 422, ["body", "precision"]),
    ({"metrics": ["delivered"], "timezone": "Mars/Olympus"}, 422, ["body", "timezone"]),
    ({"metrics": ["delivered"], "start": "yesterday"}, 422, ["body", "start"]),
    ({"metrics": ["delivered"], "end": "0001-01-02T00:00:00Z"}, 422, ["body", "end"]),
    ({"metrics": ["delivered"], "start": "1899-12-31T23:00:00Z"}, 422, ["body", "start"]),
    (
        {"metrics": ["delivered"], "filter": {"or": [leaf("date", "ge", "0001-01-01")]}},
        422,
        ["body", "filter", "or", 0, "value"],
    ),
    (
        {"metrics": ["delivered"], "start": "2024-03-02T00:00:00Z", "end": "2024-03-01T00:00:00Z"},
        422,
        ["body", "end"],
    ),
    ({"metrics": ["delivered"], "limit": 0}, 422, ["body", "limit"]),
    ({"metrics": ["delivered"], "limit": 10_001}, 422, ["body", "limit"]),
    ({"metrics": ["delivered"], "limit": "5"}, 422, ["body", "limit"]),
    ({"metrics": ["delivered"], "totals": "yes"}, 422, ["body", "totals"]),
    ({"metrics": ["delivered"], "order_by": ["domain"]}, 422, ["body", "order_by", 0]),
    ({"metrics": ["delivered"], "order_by": ["delivered", "-time"]}, 422, ["body", "order_by", 1]),
    ({"metrics": ["delivered"], "order_by": ["-nope"]}, 422, ["body", "order_by", 0]),
    ({"metrics": ["delivered"], "metric": "x"}, 422, ["body", "metric"]),
    ({"metrics": ["delivered"], "cursor": "nope"}, 400, ["body", "cursor"]),
    ({"metrics": ["delivered"], "filter": "domain = x"}, 422, ["body", "filter"]),
    ({"metrics": ["delivered"], "filter": {"xor": []}}, 422, ["body", "filter", "xor"]),
    ({"metrics": ["delivered"], "filter": {"or": []}}, 422, ["body", "filter", "or"]),
    ({"metrics": ["delivered"], "filter": {"and": "x"}}, 422, ["body", "filter", "and"]),
    ({"metrics": ["delivered"], "filter": {"and": [], "or": []}}, 422, ["body", "filter", "or"]),
    ({"metrics": ["delivered"], "filter": {"and": [1]}}, 422, ["body", "filter", "and", 0]),
    (
        {"metrics": ["delivered"], "filter": {"field": "domain", "op": "eq"}},
        422,
        ["body", "filter", "value"],
    ),
    (
        {"metrics": ["delivered"], "filter": leaf("domain", "eq", "x") | {"values": ["x"]}},
        422,
        ["body", "filter", "values"],
    ),
    (
        {"metrics": ["delivered"], "filter": leaf("nope", "eq", "x")},
        422,
        ["body", "filter", "field"],
    ),
    (
        {"metrics": ["delivered"], "filter": leaf("domain", "regex", "x")},
        422,
        ["body", "filter", "op"],
    ),
    (
        {"metrics": ["delivered"], "filter": leaf("domain", "in", "x")},
        422,
        ["body", "filter", "value"],
    ),
    (
        {"metrics": ["delivered"], "filter": leaf("domain", "in", [])},
        422,
        ["body", "filter", "value"],
    ),
    (
        {"metrics": ["delivered"], "filter": leaf("domain", "eq", 5)},
        422,
        ["body", "filter", "value"],
    ),
    (
        {"metrics": ["delivered"], "filter": leaf("link", "in", [1, "b"])},
        422,
        ["body", "filter", "value", 1],
    ),
    (
        {
            "metrics": ["delivered"],
            "filter": {"and": [leaf("domain", "eq", "a"), leaf("smtp_code", "eq", "abc")]},
        },
        422,
        ["body", "filter", "and", 1, "value"],
    ),
    (
        {
            "metrics": ["delivered"],
            "filter": {"or": [{"and": [leaf("x", "eq", 1)]}, leaf("domain", "eq", "a")]},
        },
        422,
        ["body", "filter", "or", 0, "and", 0, "field"],
    ),
    (
        {"metrics": ["delivered"], "filter": {"not": leaf("link", "like", "1%")}},
        422,
        ["body", "filter", "not", "op"],
    ),
    (
        {"metrics": ["delivered"], "filter": {"not": {"not": leaf("date", "ge", "2024-02-30")}}},
        422,
        ["body", "filter", "not", "not", "value"],
    ),
    ({"metrics": ["delivered"], "filter": DEEP}, 422, ["body", "filter", *["not"] * 20]),
]


@SQLITE
def test_every_error_points_into_the_body(tenant: Tenant) -> None:
    for body, status, loc in ERRORS:
        response = tenant.api.post("/metrics", json=body)
        assert response.status_code == status, (body, response.text)
        detail = response.json()["detail"]
        assert loc in [error["loc"] for error in detail], (body, detail)
        assert all(error["msg"] for error in detail)


@SQLITE
def test_invalid_errors_have_the_native_shape(tenant: Tenant) -> None:
    response = tenant.api.post(
        "/metrics",
        json={"metrics": ["delivered"], "filter": {"and": [leaf("smtp_code", "ge", "abc")]}},
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "filter", "and", 0, "value"],
                "msg": "'abc' is not a valid smtp_code (an integer)",
                "type": "value_error",
            }
        ]
    }


# -- the documented answers ---------------------------------------------------------------

_EXAMPLE = re.compile(
    r"<!-- example (request|answer|csv): ([\w-]+) -->\s*```(?:json|csv)\n(.*?)^```", re.M | re.S
)


def documented() -> dict[str, dict[str, Any]]:
    """The page's examples by name: request and answer (JSON), csv (text)."""
    examples: dict[str, dict[str, Any]] = {}
    for part, name, text in _EXAMPLE.findall(DOC.read_text()):
        examples.setdefault(name, {})[part] = text if part == "csv" else json.loads(text)
    return examples


@SQLITE
def test_the_documented_answers(stats_backend: StatsBackend, tenant: Tenant) -> None:
    stats_backend.store.append(activity(tenant.creds.id))
    examples = documented()
    assert sorted(examples) == ["daily", "domains", "recipients"]
    for name, example in examples.items():
        path = "/metrics/recipients" if "metric" in example["request"] else "/metrics"
        answer = post(tenant.api, path, example["request"])
        assert mismatches(example["answer"], answer) == [], name
        if "csv" in example:
            export = tenant.api.post("/metrics/export", json=example["request"])
            assert export.text.replace("\r\n", "\n") == example["csv"], name
