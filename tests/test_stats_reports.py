"""Seed 002's report builder over real HTTP: `GET /api/v1/stats?fields=...&FIELD=op:value`.

The seed's example to the digit, the last-week default, the 100-object cap, the blanked
totals, filters, every error in the seed's shape, projects kept apart, the allowlist,
and the report of a campaign really sent and tracked."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.schema import IMPORT_ID_BASE
from envoi.statistics.reports import AGGREGATED_FIELDS, GROUPING_FIELDS
from tests.delivery_support import (
    campaign_state,
    create_email,
    running_worker,
    start_campaign,
    wait_until,
)
from tests.test_feedback_flow import IPHONE_MAIL
from tests.test_statistics_query import SEED_002_EXAMPLE, seed_002_events
from tests.test_stats_messages import (  # the served app and its event store
    StatsBackend,
    Tenant,
    _tracked,
    make_tenant,
    stats_backend,
    tenant,
)
from tests.test_stats_messages import event as shared_event

__all__ = ["make_tenant", "stats_backend", "tenant"]  # fixtures shared with seed 001's tests


# The seed's example imports a million events, numbered from IMPORT_ID_BASE up by the
# store, where the shared `event()` numbers its rows too: this module's rows take ids
# far above (an id the store holds already is not stored again).
_ids = itertools.count(IMPORT_ID_BASE + (1 << 40))


def event(*args: Any, **columns: Any) -> dict[str, Any]:
    return shared_event(*args, **columns) | {"id": next(_ids)}


def report(client: httpx.Client, *params: tuple[str, str]) -> httpx.Response:
    """`GET /api/v1/stats` with the (name, value) pairs in order (names may repeat)."""
    return client.get("/stats", params=list(params))


def result(client: httpx.Client, *params: tuple[str, str]) -> list[dict[str, Any]]:
    """The `result` of a successful report, after checking the envelope."""
    answer = report(client, *params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["metadata"] == {"ready": True}
    assert body["error"] is None
    objects: list[dict[str, Any]] = body["result"]
    return objects


def fields(*names: str) -> tuple[str, str]:
    return ("fields", ",".join(names))


def refused(client: httpx.Client, *params: tuple[str, str], status: int = 400) -> str:
    """The error message of a refused report, after checking the seed's shape."""
    answer = report(client, *params)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"metadata", "result", "error"}
    assert body["metadata"] == {"ready": True}
    assert body["result"] is None
    message: str = body["error"]
    return message


def served_store(backend: StatsBackend) -> DuckDBStore:
    store = backend.store
    assert isinstance(store, DuckDBStore)
    return store


# -- seed 002's example, to the digit --------------------------------------------------------


EXAMPLE_FIELDS = fields(
    "click_rate_unique",
    "date",
    "sum_delivered",
    "sum_opened",
    "open_rate_unique",
    "message",
    "sum_clicked",
)
EXAMPLE_RANGE = (("date", "ge:2021-01-27"), ("date", "le:2021-01-28"))


def test_the_seeds_example_to_the_digit(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    if stats_backend.settings.database_url.startswith("postgresql"):
        # The report reads the event store (the same DuckDB with either OLTP store) and
        # the OLTP store only to authenticate, which every other test covers on both.
        pytest.skip("a million events once is enough: the event store is the same")
    other = make_tenant()
    seed_002_events(served_store(stats_backend), tenant.creds.id, other.creds.id)
    expected = json.loads(SEED_002_EXAMPLE)

    answer = report(tenant.api, EXAMPLE_FIELDS, *EXAMPLE_RANGE, ("post", "S_9093"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected
    # Each object has the requested fields in the requested order, as the seed shows.
    order = EXAMPLE_FIELDS[1].split(",")
    assert all(list(item) == order for item in answer.json()["result"])
    assert "x-envoi-truncated" not in answer.headers
    # The same report by the message, and with `in` and `message_type`.
    by_message = result(tenant.api, EXAMPLE_FIELDS, *EXAMPLE_RANGE, ("message", "L_7642"))
    assert by_message == expected["result"]
    by_in = result(
        tenant.api,
        EXAMPLE_FIELDS,
        *EXAMPLE_RANGE,
        ("post", "in:S_9093,S_404"),
        ("message_type", "L"),
        ("project_id", str(tenant.creds.id)),
    )
    assert by_in == expected["result"]

    # The other project sees its own events only, and naming this one's id shows nothing.
    theirs = result(other.api, fields("post", "sum_delivered", "sum_opened"), *EXAMPLE_RANGE)
    assert theirs == [
        {"post": "S_9093", "sum_delivered": 1000, "sum_opened": 700},
        {"post": "", "sum_delivered": 1000, "sum_opened": 700},
    ]
    peek = (fields("post", "sum_delivered"), *EXAMPLE_RANGE, ("project_id", str(tenant.creds.id)))
    assert result(other.api, *peek) == [{"post": "", "sum_delivered": 0}]


# -- the last week by default, time zones ------------------------------------------------------


def test_without_a_period_the_last_week_counts(stats_backend: StatsBackend, tenant: Tenant) -> None:
    pid = tenant.creds.id
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    ago = {days: today - timedelta(days=days) for days in (0, 3, 7, 8, 10)}
    stats_backend.store.append(
        [event(pid, 1, "delivered", at, f"r{days}@example.com") for days, at in ago.items()]
    )
    asked = fields("date", "sum_delivered")
    # Today and the 7 days before it: 3 and 7 days ago count, 8 and 10 do not.
    assert result(tenant.api, asked) == [
        {"date": ago[7].date().isoformat(), "sum_delivered": 1},
        {"date": ago[3].date().isoformat(), "sum_delivered": 1},
        {"date": ago[0].date().isoformat(), "sum_delivered": 1},
        {"date": "1970-01-01", "sum_delivered": 3},
    ]
    assert result(tenant.api, fields("sum_delivered")) == [{"sum_delivered": 3}]
    # Any date filter replaces the default, and so do month_year and year.
    old = (ago[10].date() - timedelta(days=1)).isoformat()
    assert result(tenant.api, fields("sum_delivered"), ("date", f"ge:{old}")) == [
        {"sum_delivered": 5}
    ]
    assert result(tenant.api, fields("sum_delivered"), ("date", f"le:{old}")) == [
        {"sum_delivered": 0}
    ]
    years = f"in:{ago[10].year},{today.year}"
    assert result(tenant.api, fields("sum_delivered"), ("year", years)) == [{"sum_delivered": 5}]
    # Other time fields narrow the last week.
    assert result(tenant.api, fields("sum_delivered"), ("hour", "12")) == [{"sum_delivered": 3}]


def test_the_time_zone_moves_an_event_to_another_date(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    late = datetime(2024, 3, 1, 23, 30, tzinfo=UTC)  # 00:30 on the 2nd in Paris
    stats_backend.store.append([event(tenant.creds.id, 1, "delivered", late, "a@example.com")])
    asked = (fields("date", "hour", "sum_delivered"), ("date", "ge:2024-03-01"))
    assert result(tenant.api, *asked)[0] == {"date": "2024-03-01", "hour": 23, "sum_delivered": 1}
    paris = result(tenant.api, *asked, ("timezone", "Europe/Paris"))
    assert paris[0] == {"date": "2024-03-02", "hour": 0, "sum_delivered": 1}
    on_the_2nd = (fields("sum_delivered"), ("date", "2024-03-02"))
    assert result(tenant.api, *on_the_2nd) == [{"sum_delivered": 0}]
    assert result(tenant.api, *on_the_2nd, ("timezone", "Europe/Paris")) == [{"sum_delivered": 1}]


# -- the cap, the order, the totals, the filters ------------------------------------------------

SPRING = datetime(2024, 4, 2, 10, 0, tzinfo=UTC)
SINCE_SPRING = ("date", "ge:2024-04-01")


def test_at_most_100_objects_with_the_totals_last(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    pid = tenant.creds.id
    stats_backend.store.append(
        [event(pid, n, "delivered", SPRING, f"r{n}@example.com") for n in range(1, 151)]
    )
    answer = report(tenant.api, fields("message", "sum_delivered"), SINCE_SPRING)
    assert answer.status_code == 200
    objects = answer.json()["result"]
    assert len(objects) == 100
    assert answer.headers["x-envoi-truncated"] == "true"
    messages = [item["message"] for item in objects[:-1]]
    assert messages == sorted(f"L_{n}" for n in range(1, 151))[:99]  # ascending, as text
    # The totals cover every group, the ones cut off too.
    assert objects[-1] == {"message": "", "sum_delivered": 150}

    # 99 groups fit: nothing is cut, nothing says so.
    some = "in:" + ",".join(f"S_{n}" for n in range(1, 100))
    answer = report(tenant.api, fields("sum_delivered", "message"), SINCE_SPRING, ("post", some))
    assert answer.status_code == 200
    assert len(answer.json()["result"]) == 100
    assert answer.json()["result"][-1] == {"sum_delivered": 99, "message": ""}
    assert "x-envoi-truncated" not in answer.headers


def test_rows_follow_the_grouping_fields_in_the_order_requested(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    pid = tenant.creds.id
    day = timedelta(days=1)
    stats_backend.store.append(
        [
            event(pid, 2, "delivered", SPRING, "a@example.com"),
            event(pid, 1, "delivered", SPRING + day, "b@example.com"),
            event(pid, 1, "delivered", SPRING + day, "c@example.com"),
        ]
    )
    by_message = result(tenant.api, fields("message", "date", "sum_delivered"), SINCE_SPRING)
    assert [(o["message"], o["date"]) for o in by_message] == [
        ("L_1", "2024-04-03"),
        ("L_2", "2024-04-02"),
        ("", "1970-01-01"),
    ]
    by_date = result(tenant.api, fields("sum_delivered", "date", "message"), SINCE_SPRING)
    assert by_date == [
        {"sum_delivered": 1, "date": "2024-04-02", "message": "L_2"},
        {"sum_delivered": 2, "date": "2024-04-03", "message": "L_1"},
        {"sum_delivered": 3, "date": "1970-01-01", "message": ""},
    ]


def test_grouping_fields_in_their_types_and_blanked_in_the_totals(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    pid = tenant.creds.id
    hit = {
        "client": "Apple Mail",
        "language": "fr",
        "city_name": "Paris",
        "region_name": "Île-de-France",
        "country_name": "France",
    }
    opened = SPRING + timedelta(hours=5)  # Tuesday 2 April 2024, 15:00 UTC
    stats_backend.store.append(
        [
            event(pid, 7, "delivered", SPRING, "a@example.com"),
            event(pid, 7, "open", opened, "a@example.com", **hit),
        ]
    )
    common = {
        "project_id": pid,
        "message": "L_7",
        "post": "S_7",
        "message_type": "L",
        "post_type": "S",
        "year": 2024,
        "quarter": 2,
        "month_year": "2024-04",
        "day_of_month": 2,
        "day_of_week": 2,
        "week": 14,
        "date": "2024-04-02",
    }
    objects = result(tenant.api, fields(*GROUPING_FIELDS, "sum_opened", "open_rate"), SINCE_SPRING)
    assert objects == [
        # The delivery has no client, language or place: null.
        common | {"hour": 10} | dict.fromkeys(hit) | {"sum_opened": 0, "open_rate": 0.0},
        # The open, in a group without a delivery: the rate's zero rule.
        common | {"hour": 15} | hit | {"sum_opened": 1, "open_rate": 0.0},
        # The totals: "" for text, 0 for numbers, 1970-01-01 for the date; the rate
        # from the summed counts.
        {
            "project_id": 0,
            "message": "",
            "post": "",
            "message_type": "",
            "post_type": "",
            "year": 0,
            "quarter": 0,
            "month_year": "",
            "day_of_month": 0,
            "day_of_week": 0,
            "week": 0,
            "date": "1970-01-01",
            "hour": 0,
            "client": "",
            "language": "",
            "city_name": "",
            "region_name": "",
            "country_name": "",
            "sum_opened": 1,
            "open_rate": 1.0,
        },
    ]
    # Only grouping fields: the groups, then blanks.
    assert result(tenant.api, fields("client"), SINCE_SPRING) == [
        {"client": "Apple Mail"},
        {"client": None},
        {"client": ""},
    ]


def test_every_aggregated_field_has_its_type(stats_backend: StatsBackend, tenant: Tenant) -> None:
    pid = tenant.creds.id
    stats_backend.store.append(
        [
            event(pid, 3, "queued", SPRING, "a@example.com"),
            event(pid, 3, "blocked", SPRING, "b@example.com", reason="gdpr"),
            event(pid, 3, "delivered", SPRING, "a@example.com"),
            event(pid, 3, "open", SPRING, "a@example.com"),
        ]
    )
    (totals,) = result(tenant.api, fields(*AGGREGATED_FIELDS), SINCE_SPRING)
    assert list(totals) == list(AGGREGATED_FIELDS)
    for name, value in totals.items():
        assert type(value) is (float if "rate" in name or name == "ctor" else int), name
    assert totals["sum_total"] == 2
    assert totals["sum_selected"] == 1
    assert totals["sum_stop_total"] == totals["sum_stop_gdpr"] == 1
    assert totals["sum_delivered"] == totals["sum_opened"] == totals["sum_opened_unique"] == 1
    assert totals["open_rate"] == totals["open_rate_unique"] == 1.0


def test_filters_with_django_modifiers(stats_backend: StatsBackend, tenant: Tenant) -> None:
    pid = tenant.creds.id
    hour = timedelta(hours=1)
    stats_backend.store.append(
        [
            event(pid, n, "delivered", SPRING + n * hour, f"r{n}@example.com", client=client)
            for n, client in ((1, "Gmail"), (2, "Outlook"), (3, "Gmail"), (4, None))
        ]
    )

    def delivered(*filters: tuple[str, str]) -> int:
        (totals,) = result(tenant.api, fields("sum_delivered"), SINCE_SPRING, *filters)
        count: int = totals["sum_delivered"]
        return count

    assert delivered() == 4
    assert delivered(("post", "S_2")) == delivered(("post", "eq:S_2")) == 1
    assert delivered(("post", "in:S_1,S_3,S_9")) == 2
    assert delivered(("post", "ne:S_1")) == 3
    assert delivered(("hour", "ge:12")) == 3  # 10:00 + n hours
    assert delivered(("hour", "gt:12")) == 2
    assert delivered(("hour", "le:12")) == 2
    assert delivered(("hour", "lt:12")) == 1
    assert delivered(("hour", "ge:12"), ("hour", "le:13")) == 2  # repeated: AND
    assert delivered(("client", "Gmail")) == 2
    assert delivered(("client", "ne:Gmail")) == 2  # a missing client is not Gmail
    assert delivered(("message_type", "W")) == 0
    assert delivered(("date", "2024-04-02"), ("post_type", "S")) == 4
    assert delivered(("month_year", "2024-04")) == 4
    assert delivered(("day_of_week", "in:2,3")) == 4


def test_a_project_sees_its_own_events_only(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    other = make_tenant()
    stats_backend.store.append(
        [
            event(tenant.creds.id, 5, "delivered", SPRING, "a@example.com"),
            event(other.creds.id, 5, "delivered", SPRING, "b@example.com"),
            event(other.creds.id, 6, "delivered", SPRING, "c@example.com"),
        ]
    )
    asked = (fields("project_id", "post", "sum_delivered"), SINCE_SPRING)
    assert result(tenant.api, *asked) == [
        {"project_id": tenant.creds.id, "post": "S_5", "sum_delivered": 1},
        {"project_id": 0, "post": "", "sum_delivered": 1},
    ]
    assert result(other.api, *asked)[-1]["sum_delivered"] == 2
    # Naming another project's id finds nothing, without an error.
    peek = ("project_id", str(other.creds.id))
    assert result(tenant.api, *asked, peek) == [{"project_id": 0, "post": "", "sum_delivered": 0}]


# -- errors, in the seed's shape --------------------------------------------------------------


def test_every_error_names_its_field(stats_backend: StatsBackend, tenant: Tenant) -> None:
    stats_backend.store.append([event(tenant.creds.id, 1, "delivered", SPRING, "a@example.com")])
    required = "fields is required: a comma-separated list of grouping and aggregated fields"
    ok = fields("sum_delivered")
    cases: list[tuple[tuple[tuple[str, str], ...], str]] = [
        ((), required),
        ((("fields", ""),), required),
        ((("fields", " , "),), required),
        ((("date", "ge:2024-01-01"),), required),
        ((fields("message", "sum_opens"),), "fields: unknown field 'sum_opens'"),
        ((fields("sum_stop_ xistent"),), "fields: unknown field 'sum_stop_ xistent'"),
        ((fields("date", "date"),), "fields: 'date' is named twice"),
        ((ok, ("dates", "2024-01-01")), "unknown parameter 'dates': filters take grouping fields"),
        (
            (ok, ("sum_delivered", "ge:5")),
            "sum_delivered: an aggregated field cannot filter; filter a grouping field",
        ),
        (
            (ok, ("date", "gte:2024-01-01")),
            "date: unknown operator 'gte' (one of eq, ne, gt, ge, lt, le, in; "
            "a value with a colon is written eq:VALUE)",
        ),
        ((ok, ("date", "ge:2024-13-01")), "date: '2024-13-01' is not a valid date (YYYY-MM-DD)"),
        ((ok, ("date", "yesterday")), "date: 'yesterday' is not a valid date (YYYY-MM-DD)"),
        ((ok, ("project_id", "abc")), "project_id: 'abc' is not a valid project_id (an integer)"),
        ((ok, ("hour", "in:1,x")), "hour: 'x' is not a valid hour (an integer)"),
        (
            (ok, ("month_year", "2024-4")),
            "month_year: '2024-4' is not a valid month_year (YYYY-MM)",
        ),
        ((ok, ("post", "")), "post: a filter needs a value (post=eq:VALUE)"),
        ((ok, ("post", "in:S_1,")), "post: a filter needs a value (post=in:VALUE)"),
        ((ok, ("timezone", "Mars/Olympus")), "timezone: unknown time zone 'Mars/Olympus'"),
        ((ok, ("timezone", "UTC"), ("timezone", "UTC")), "timezone: give one time zone"),
    ]
    for params, message in cases:
        assert refused(tenant.api, *params) == message, params
    # An error changes nothing: the same report still answers.
    assert result(tenant.api, ok, SINCE_SPRING) == [{"sum_delivered": 1}]


def test_without_its_event_store_the_server_says_so(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    # Not monkeypatch: it reads Starlette's `State` attribute as unset, and its undo
    # would delete the store from the app the module's other tests share.
    state = stats_backend.app.state
    state.event_store = None
    try:
        message = refused(tenant.api, fields("sum_delivered"), status=503)
        # A bad request is still told as such.
        unknown = refused(tenant.api, fields("nope"))
    finally:
        state.event_store = stats_backend.store
    assert message == "Statistics unavailable"
    assert unknown == "fields: unknown field 'nope'"


def test_credentials_and_the_allowlist_in_the_native_shape(
    stats_backend: StatsBackend, make_tenant: Any
) -> None:
    url = f"{stats_backend.base_url}/api/v1/stats"
    params = {"fields": "sum_delivered"}
    anonymous = httpx.get(url, params=params, timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Authentication credentials were not provided"}
    open_to_all = make_tenant()
    wrong = httpx.get(url, params=params, auth=(open_to_all.creds.login, "wrong"), timeout=30)
    assert wrong.status_code == 401
    assert wrong.json() == {"detail": "Invalid login or secret"}
    fenced = make_tenant(allowed_ips=("192.0.2.0/24",))
    outside = report(fenced.api, ("fields", "sum_delivered"))
    assert outside.status_code == 403
    assert outside.json() == {"detail": "API client IP not allowed"}
    inside = make_tenant(allowed_ips=("127.0.0.0/8",))
    assert result(inside.api, ("fields", "sum_delivered")) == [{"sum_delivered": 0}]


# -- end to end: a campaign sent, tracked and projected ------------------------------------------


def test_the_report_of_a_campaign_really_sent(stats_backend: StatsBackend, tenant: Tenant) -> None:
    addresses = ["ann@example.com", "bob@example.com"]
    email_id = create_email(tenant.api)
    with running_worker(stats_backend.settings, stats_backend.sessions):
        campaign = start_campaign(tenant.api, email_id, addresses)
        wait_until(lambda: campaign_state(tenant.api, campaign["id"]) == "finished", timeout=60)
    captured = {m["recipient"]: m["raw"] for m in tenant.api.get("/captured").json()}
    ann = _tracked(stats_backend.base_url, captured["ann@example.com"])
    with httpx.Client(timeout=30, follow_redirects=False) as tracking:
        for _ in range(2):  # Ann reads it twice in iPhone Mail
            assert tracking.get(ann["o"][0], headers={"User-Agent": IPHONE_MAIL}).status_code == 200

    post = f"S_{campaign['id']}"
    asked = fields(
        "post",
        "message",
        "sum_total",
        "sum_sended",
        "sum_delivered",
        "sum_opened",
        "sum_opened_unique",
        "open_rate_unique",
    )
    counts = {
        "sum_total": 2,
        "sum_sended": 2,
        "sum_delivered": 2,
        "sum_opened": 2,
        "sum_opened_unique": 1,
        "open_rate_unique": 0.5,
    }
    expected = [
        {"post": post, "message": f"L_{email_id}"} | counts,
        {"post": "", "message": ""} | counts,
    ]

    def today() -> list[dict[str, Any]]:  # the default week holds today
        return result(tenant.api, asked)

    # The server's projector moves the outbox into the event store in the background.
    wait_until(lambda: today() == expected, timeout=30, what="the projection", show=today)
    assert result(tenant.api, ("fields", "client,sum_opened"), ("post", post)) == [
        {"client": "Apple Mail", "sum_opened": 2},
        {"client": None, "sum_opened": 0},  # the build and delivery events: no client
        {"client": "", "sum_opened": 2},
    ]
