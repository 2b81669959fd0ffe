"""The query layer over a real DuckDB event store: seed 002's example to the digit, the
first-occurrence rule, time zones, filters, totals, people and machines, errors,
and projects kept apart."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from envoi.core.errors import Invalid
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.mapping import GIVEN, TYPES
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery
from envoi.statistics.timebuckets import local_sql


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A time as the store keeps it: naive UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC).replace(tzinfo=None)


T0 = utc(2021, 1, 27, 10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    opened = DuckDBStore(tmp_path / "events.duckdb")
    yield opened
    opened.close()


_ids = itertools.count(1)


def event(kind: str, at: datetime, **values: Any) -> dict[str, Any]:
    """One event of project 1, post S_1, message L_1, recipient ann@example.com."""
    return {
        "id": next(_ids),
        "project_id": 1,
        "kind": kind,
        "occurred_at": at,
        "campaign_id": 1,
        "post": "S_1",
        "post_type": "S",
        "message": "L_1",
        "message_type": "L",
        "email_id": 1,
        "send_id": 1,
        "recipient": "ann@example.com",
        "domain": "example.com",
        "tags": [],
    } | values


def run(
    store: DuckDBStore, *group_by: str, **options: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    query = StatsQuery(project_id=options.pop("project_id", 1), group_by=group_by, **options)
    result = StatisticsEngine(store).run(query)
    return result.rows, result.totals


# --- seed 002's example -----------------------------------------------------------------

SEED_002_EXAMPLE = """
{
    "metadata": {"ready": true},
    "result": [
        {"click_rate_unique": 0.0015847994310759965, "date": "2021-01-27",
         "sum_delivered": 947754, "sum_opened": 63470,
         "open_rate_unique": 0.06451146605553762, "message": "L_7642", "sum_clicked": 1942},
        {"click_rate_unique": 0.0, "date": "2021-01-28", "sum_delivered": 0,
         "sum_opened": 45486, "open_rate_unique": 0.0, "message": "L_7642",
         "sum_clicked": 876},
        {"click_rate_unique": 0.002313891579460493, "date": "1970-01-01",
         "sum_delivered": 947754, "sum_opened": 108956,
         "open_rate_unique": 0.10805335561759698, "message": "", "sum_clicked": 2818}
    ],
    "error": null
}
"""


class Campaign:
    """Imports one campaign's events into the store, many per statement (the store
    marks first occurrences as it does for any batch)."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store = store

    def add(
        self,
        kind: str,
        count: int,
        *,
        first_recipient: int,
        at: str,
        every_ms: int,
        project_id: int = 110,
        post: str = "S_9093",
        message: str = "L_7642",
        machine: str | None = None,
    ) -> None:
        """`count` events `kind`, for recipients first_recipient, first_recipient + 1 ...,
        from `at` (UTC) one every `every_ms` milliseconds."""
        given = {
            "project_id": "$1",
            "kind": "$2",
            "occurred_at": "CAST($3 AS TIMESTAMP) + to_milliseconds(i * $4)",
            "campaign_id": "CAST(substr($5, 3) AS INTEGER)",
            "post": "$5",
            "post_type": "'S'",
            "message": "$6",
            "message_type": "'L'",
            "email_id": "CAST(substr($6, 3) AS INTEGER)",
            "send_id": "$7 + i",
            "recipient": "'r' || ($7 + i) || '@example.com'",
            "domain": "'example.com'",
            "tags": "['news']",
            "machine": "$8",
        }
        columns = ", ".join(
            f"CAST({given.get(name, 'NULL')} AS {TYPES[name]}) AS {name}"
            for name in GIVEN
            if name != "id"
        )
        self.store.import_rows(
            f"SELECT {columns} FROM range($9) AS t(i)",  # noqa: S608 - test SQL
            [project_id, kind, at, every_ms, post, message, first_recipient, machine, count],
        )


# Campaign 9093's events that make seed 002's example: 947,754 messages delivered on
# the 27th; opens 63,470 then 45,486, of which 61,141 then 41,267 are first opens;
# clicks 1,942 then 876, of which 1,502 then 691 are first clicks.
# (kind, count, first recipient, from, every ms, machine, project, post)
THIS, OTHER = "this", "other"
SEED_002_BATCHES: tuple[tuple[str, int, int, str, int, str | None, str, str], ...] = (
    ("delivered", 947_754, 0, "2021-01-27 00:00", 91, None, THIS, "S_9093"),
    ("open", 61_141, 0, "2021-01-27 06:00", 250, None, THIS, "S_9093"),
    ("open", 2_329, 0, "2021-01-27 20:00", 1000, None, THIS, "S_9093"),
    ("open", 41_267, 61_141, "2021-01-28 00:00", 1000, None, THIS, "S_9093"),
    ("open", 4_219, 0, "2021-01-28 13:00", 1000, None, THIS, "S_9093"),
    ("click", 1_502, 0, "2021-01-27 08:00", 1000, None, THIS, "S_9093"),
    ("click", 440, 0, "2021-01-27 21:00", 1000, None, THIS, "S_9093"),
    ("click", 691, 1_502, "2021-01-28 09:00", 1000, None, THIS, "S_9093"),
    ("click", 185, 0, "2021-01-28 22:00", 1000, None, THIS, "S_9093"),
    # Machines: Apple's proxy opens, a scanner clicks: neither counts.
    ("open", 5_000, 500_000, "2021-01-27 12:00", 10, "apple_mpp", THIS, "S_9093"),
    ("click", 300, 0, "2021-01-27 10:00", 10, "scanner", THIS, "S_9093"),
    # Another project, another campaign, and the day after the range.
    ("delivered", 1_000, 0, "2021-01-27 00:00", 10, None, OTHER, "S_9093"),
    ("open", 700, 0, "2021-01-27 09:00", 10, None, OTHER, "S_9093"),
    ("delivered", 2_000, 0, "2021-01-27 00:00", 10, None, THIS, "S_1"),
    ("open", 800, 200_000, "2021-01-29 09:00", 10, None, THIS, "S_9093"),
)


def seed_002_events(store: DuckDBStore, project_id: int = 110, other_project_id: int = 111) -> None:
    """Campaign 9093's events that make seed 002's example (947,754 deliveries, first
    opens and clicks on both days), with machines, another project and another
    campaign around them, imported in one transaction."""
    projects = {THIS: project_id, OTHER: other_project_id}
    campaign = Campaign(store)
    with store.importing():
        for kind, count, first, at, every_ms, machine, project, post in SEED_002_BATCHES:
            campaign.add(
                kind,
                count,
                first_recipient=first,
                at=at,
                every_ms=every_ms,
                project_id=projects[project],
                post=post,
                message="L_7642" if post == "S_9093" else "L_1",
                machine=machine,
            )


def test_seed_002_example_comes_out_to_the_digit(store: DuckDBStore) -> None:
    seed_002_events(store)
    expected = json.loads(SEED_002_EXAMPLE)["result"]
    measures = (
        "click_rate_unique",
        "sum_delivered",
        "sum_opened",
        "open_rate_unique",
        "sum_clicked",
    )

    result = StatisticsEngine(store).run(
        StatsQuery(
            project_id=110,
            group_by=("date", "message"),
            measures=measures,
            filters=(
                Filter("post", "eq", ("S_9093",)),
                Filter("date", "ge", ("2021-01-27",)),
                Filter("date", "le", ("2021-01-28",)),
            ),
        )
    )

    rows = [row | {"date": row["date"].isoformat()} for row in result.rows]
    assert rows == expected[:2]
    assert result.totals == {name: expected[2][name] for name in measures}
    # Exactly as Python divides the summed counts (61,141 + 41,267 unique opens).
    assert result.totals["open_rate_unique"] == (61_141 + 41_267) / 947_754


# --- the first-occurrence rule -----------------------------------------------------------


def test_unique_actions_count_in_the_period_they_first_occurred(store: DuckDBStore) -> None:
    day_a, day_b = T0, T0 + timedelta(days=1)
    store.append(
        [
            event("delivered", day_a - timedelta(hours=1)),
            event("open", day_a),
            event("open", day_a + timedelta(hours=2)),
            event("open", day_b),
            event("click", day_b),
            event("open", day_b, recipient="bob@example.com", send_id=2),
        ]
    )
    measures = ("opened", "unique_opened", "clicked", "unique_clicked")
    rows, totals = run(store, "date", measures=measures)

    assert rows == [
        {
            "date": date(2021, 1, 27),
            "opened": 2,
            "unique_opened": 1,
            "clicked": 0,
            "unique_clicked": 0,
        },
        {
            "date": date(2021, 1, 28),
            "opened": 2,
            "unique_opened": 1,
            "clicked": 1,
            "unique_clicked": 1,
        },
    ]
    assert totals == {"opened": 4, "unique_opened": 2, "clicked": 1, "unique_clicked": 1}
    # A range that starts after Ann's first open: her later opens are not unique.
    rows, totals = run(store, measures=measures, start=day_b.replace(tzinfo=UTC))
    assert totals == {"opened": 2, "unique_opened": 1, "clicked": 1, "unique_clicked": 1}


# --- time zones ----------------------------------------------------------------------------


def test_the_time_zone_moves_an_event_across_a_date(store: DuckDBStore) -> None:
    late = utc(2021, 1, 27, 23, 30)  # UTC: the 28th in Paris, the 27th in Los Angeles
    store.append([event("open", late), event("open", late - timedelta(hours=12))])

    def dates(zone: str) -> list[tuple[date, int]]:
        rows, _ = run(store, "date", measures=("opened",), timezone=zone)
        return [(row["date"], row["opened"]) for row in rows]

    assert dates("UTC") == [(date(2021, 1, 27), 2)]
    assert dates("Europe/Paris") == [(date(2021, 1, 27), 1), (date(2021, 1, 28), 1)]
    assert dates("America/Los_Angeles") == [(date(2021, 1, 27), 2)]

    rows, _ = run(store, "bucket_day", "hour", measures=("opened",), timezone="Asia/Kolkata")
    kolkata = ZoneInfo("Asia/Kolkata")
    assert rows == [
        {"bucket_day": datetime(2021, 1, 27, tzinfo=kolkata), "hour": 17, "opened": 1},
        {"bucket_day": datetime(2021, 1, 28, tzinfo=kolkata), "hour": 5, "opened": 1},
    ]
    # The date filter is on the local date too.
    only = (Filter("date", "eq", ("2021-01-28",)),)
    assert run(store, measures=("opened",), filters=only, timezone="Europe/Paris")[1] == {
        "opened": 1
    }
    assert run(store, measures=("opened",), filters=only)[1] == {"opened": 0}


def test_time_parts_and_buckets(store: DuckDBStore) -> None:
    at = utc(2021, 5, 16, 13, 47)  # a Sunday, ISO week 19
    store.append([event("open", at)])
    parts = ("year", "quarter", "month_year", "day_of_month", "day_of_week", "week", "hour")
    rows, _ = run(store, *parts, measures=("opened",))
    assert rows == [
        {
            "year": 2021,
            "quarter": 2,
            "month_year": "2021-05",
            "day_of_month": 16,
            "day_of_week": 7,
            "week": 19,
            "hour": 13,
            "opened": 1,
        }
    ]
    buckets = {
        "bucket_minute": datetime(2021, 5, 16, 13, 47, tzinfo=UTC),
        "bucket_5min": datetime(2021, 5, 16, 13, 45, tzinfo=UTC),
        "bucket_15min": datetime(2021, 5, 16, 13, 45, tzinfo=UTC),
        "bucket_hour": datetime(2021, 5, 16, 13, tzinfo=UTC),
        "bucket_day": datetime(2021, 5, 16, tzinfo=UTC),
        "bucket_week": datetime(2021, 5, 10, tzinfo=UTC),
        "bucket_month": datetime(2021, 5, 1, tzinfo=UTC),
        "bucket_quarter": datetime(2021, 4, 1, tzinfo=UTC),
        "bucket_year": datetime(2021, 1, 1, tzinfo=UTC),
    }
    rows, _ = run(store, *buckets, measures=())
    assert rows == [buckets]


# --- filters ------------------------------------------------------------------------------


@pytest.fixture
def routed(store: DuckDBStore) -> DuckDBStore:
    """Five delivered messages on three domains and two routers, one without a router."""
    rows = [
        ("a@gmail.com", "gmail.com", "r1", 250),
        ("b@gmail.com", "gmail.com", "r2", 250),
        ("c@orange.fr", "orange.fr", "r1", 251),
        ("d@free.fr", "free.fr", "r2", 252),
        ("e@free.fr", "free.fr", None, 253),
    ]
    store.append(
        [
            event("delivered", T0, recipient=r, domain=d, router=router, smtp_code=code, send_id=i)
            for i, (r, d, router, code) in enumerate(rows)
        ]
    )
    return store


@pytest.mark.parametrize(
    ("op", "values", "delivered"),
    [
        ("eq", ("gmail.com",), 2),
        ("ne", ("gmail.com",), 3),
        ("in", ("gmail.com", "free.fr"), 4),
        ("ge", ("gmail.com",), 3),  # text compares as text: gmail, gmail, orange.fr
        ("gt", ("gmail.com",), 1),
        ("le", ("gmail.com",), 4),
        ("lt", ("gmail.com",), 2),
        ("like", ("%.fr",), 3),
    ],
)
def test_each_filter_operator(
    routed: DuckDBStore, op: str, values: tuple[str, ...], delivered: int
) -> None:
    _, totals = run(routed, measures=("delivered",), filters=(Filter("domain", op, values),))
    assert totals == {"delivered": delivered}


def test_filters_on_numbers_and_missing_values(routed: DuckDBStore) -> None:
    def delivered(*filters: Filter) -> int:
        return int(run(routed, measures=("delivered",), filters=filters)[1]["delivered"])

    assert delivered(Filter("smtp_code", "ge", ("251",))) == 3  # a query string's "251"
    assert delivered(Filter("smtp_code", "lt", (252,))) == 3
    assert delivered(Filter("router", "eq", (None,))) == 1
    assert delivered(Filter("router", "ne", (None,))) == 4
    assert delivered(Filter("router", "ne", ("r1",))) == 3  # the one without a router too
    assert delivered(Filter("domain", "eq", ("free.fr",)), Filter("router", "eq", ("r2",))) == 1


def test_values_are_never_read_as_sql(routed: DuckDBStore) -> None:
    hostile = Filter("domain", "eq", ("x' OR 1=1 --",))
    assert run(routed, measures=("delivered",), filters=(hostile,))[1] == {"delivered": 0}


# --- groups, order, limit and totals -----------------------------------------------------


def test_totals_cover_every_group_whatever_the_limit(routed: DuckDBStore) -> None:
    rows, totals = run(
        routed, "domain", measures=("delivered", "sent"), order_by=("-delivered",), limit=2
    )
    assert rows == [
        {"domain": "free.fr", "delivered": 2, "sent": 2},  # ties: by the key
        {"domain": "gmail.com", "delivered": 2, "sent": 2},
    ]
    assert totals == {"delivered": 5, "sent": 5}
    # Order by a measure not asked for: sorted by it, not shown.
    rows, _ = run(routed, "router", measures=("sent",), order_by=("-delivered", "-router"))
    assert [row["router"] for row in rows] == ["r2", "r1", None]
    assert all(set(row) == {"router", "sent"} for row in rows)


def test_tags_group_each_event_under_each_tag_and_total_it_once(store: DuckDBStore) -> None:
    store.append(
        [
            event("delivered", T0, tags=["news", "promo"]),
            event("delivered", T0, tags=["news"], send_id=2, recipient="b@example.com"),
            event("delivered", T0, tags=[], send_id=3, recipient="c@example.com"),
        ]
    )
    rows, totals = run(store, "tag", measures=("delivered",))
    assert rows == [{"tag": "news", "delivered": 2}, {"tag": "promo", "delivered": 1}]
    assert totals == {"delivered": 2}
    only = (Filter("tag", "eq", ("promo",)),)
    assert run(store, "tag", measures=("delivered",), filters=only) == (
        [{"tag": "promo", "delivered": 1}],
        {"delivered": 1},
    )
    assert run(store, measures=("delivered",), filters=only)[1] == {"delivered": 1}
    without = (Filter("tag", "ne", ("promo",)),)
    assert run(store, measures=("delivered",), filters=without)[1] == {"delivered": 2}


# --- what each measure counts ------------------------------------------------------------


def test_people_and_machines_are_counted_apart(store: DuckDBStore) -> None:
    store.append(
        [
            event("delivered", T0),
            event("open", T0 + timedelta(seconds=5), machine="apple_mpp"),
            event("open", T0 + timedelta(hours=3)),
            event("click", T0 + timedelta(seconds=6), machine="scanner", link=0),
            event("click", T0 + timedelta(seconds=7), machine="scanner", link=1),
            event("click", T0 + timedelta(hours=3), link=0),
        ]
    )
    measures = (
        "opened",
        "opened_machine",
        "opened_all",
        "unique_opened",
        "unique_opened_all",
        "clicked",
        "clicked_machine",
        "unique_clicked",
        "machine_click_share",
        "open_rate",
        "ctor",
    )
    _, totals = run(store, measures=measures)
    assert totals == {
        "opened": 1,
        "opened_machine": 1,
        "opened_all": 2,
        "unique_opened": 1,
        "unique_opened_all": 1,
        "clicked": 1,
        "clicked_machine": 2,
        "unique_clicked": 1,
        "machine_click_share": 2 / 3,
        "open_rate": 1.0,
        "ctor": 1.0,
    }
    rows, _ = run(store, "human", measures=("opened_all", "clicked_all"))
    assert rows == [
        {"human": False, "opened_all": 1, "clicked_all": 2},
        {"human": True, "opened_all": 1, "clicked_all": 1},
    ]


def test_spooling_and_delivery_counts(store: DuckDBStore) -> None:
    sends = [
        ("queued", None),  # 1: deferred twice, then delivered, then bounced
        ("queued", None),  # 2: refused for good
        ("queued", None),  # 3: refused by the pre-send hook
        ("blocked", "noaddress"),  # 4
        ("quarantined", "spam"),  # 5
        ("blocked", "duplicate"),  # 6
    ]
    rows = [
        event(kind, T0, send_id=i, recipient=f"r{i}@example.com", reason=reason)
        for i, (kind, reason) in enumerate(sends, start=1)
    ]
    later = T0 + timedelta(minutes=5)
    one = {"send_id": 1, "recipient": "r1@example.com"}
    rows += [
        event("tempfail", later, **one, bounce_class="other_soft", in_band=True),
        event("tempfail", later + timedelta(minutes=1), **one, bounce_class="other_soft"),
        event("delivered", later + timedelta(minutes=3), **one),
        event(
            "bounce", later + timedelta(hours=1), **one, bounce_class="mailbox_full", in_band=False
        ),
        event(
            "permfail",
            later,
            send_id=2,
            recipient="r2@example.com",
            bounce_class="user_unknown",
            hard=True,
        ),
        event("blocked", later, send_id=3, recipient="r3@example.com", reason="external_check"),
        event("complaint", later + timedelta(hours=2), **one, handled=True),
        event("unsubscribe", later + timedelta(hours=2), **one),
    ]
    store.append(rows)
    expected = {
        "sum_total": 6,
        "sum_selected": 3,
        "sum_stop_total": 4,
        "sum_stop_noaddress": 1,
        "sum_stop_spam_added": 1,
        "sum_stop_letter_single_quarantine": 1,
        "sum_stop_external_check": 1,
        "blocked": 3,
        "quarantine": 1,
        "sent": 2,
        "delivered": 1,
        "permfail": 1,
        "tempfail": 1,
        "deferrals": 2,
        "bounced": 2,
        "bounced_late": 1,
        "hard_bounces": 1,
        "bounces_user_unknown": 1,
        "bounces_mailbox_full": 1,
        "bounces_other_soft": 0,
        "sum_bounce_nonexistent": 1,
        "sum_bounce_temp_unavailable": 1,
        "sum_bounce_other": 0,
        "complaints_handled": 1,
        "complaints_unhandled": 0,
        "sum_churn": 4,
        "delivery_rate": 0.5,
        "bounce_rate": 1.0,
        "churn_rate": 2.0,
        "unsub_rate": 1.0,
    }
    assert run(store, measures=tuple(expected))[1] == expected


def test_rates_are_zero_without_a_denominator(store: DuckDBStore) -> None:
    store.append([event("open", T0)])
    rates = ("open_rate", "open_rate_unique", "ctor", "delivery_rate", "churn_rate")
    assert run(store, measures=rates)[1] == dict.fromkeys(rates, 0.0)
    assert run(store, "date", measures=rates, project_id=2) == ([], dict.fromkeys(rates, 0.0))


def test_first_and_last_activity_in_the_query_zone(store: DuckDBStore) -> None:
    store.append(
        [
            event("queued", T0 - timedelta(hours=1)),
            event("delivered", T0),
            event("open", T0 + timedelta(hours=5), machine="apple_mpp"),
            event("click", T0 + timedelta(hours=2)),
        ]
    )
    _, totals = run(store, measures=("first", "last"), timezone="Europe/Paris")
    paris = ZoneInfo("Europe/Paris")
    assert totals == {
        "first": datetime(2021, 1, 27, 11, tzinfo=paris),
        "last": datetime(2021, 1, 27, 13, tzinfo=paris),
    }


# --- projects and errors --------------------------------------------------------------------


def test_a_query_sees_its_own_project_only(store: DuckDBStore) -> None:
    store.append([event("delivered", T0), event("delivered", T0, project_id=2, send_id=2)])
    assert run(store, "project_id", measures=("delivered",)) == (
        [{"project_id": 1, "delivered": 1}],
        {"delivered": 1},
    )
    other = (Filter("project_id", "eq", (2,)),)
    assert run(store, measures=("delivered",), filters=other)[1] == {"delivered": 0}


AWARE = datetime(2021, 1, 27, tzinfo=UTC)


@pytest.mark.parametrize(
    ("options", "loc", "words"),
    [
        ({"group_by": ("nope",)}, ["group_by", 0], "unknown dimension"),
        ({"group_by": ("date", "date")}, ["group_by", 1], "named twice"),
        ({"measures": ("sent", "nope")}, ["measures", 1], "unknown measure"),
        (
            {"filters": (Filter("nope", "eq", ("x",)),)},
            ["filters", 0, "field"],
            "unknown dimension",
        ),
        (
            {"filters": (Filter("domain", "regex", ("x",)),)},
            ["filters", 0, "op"],
            "unknown operator",
        ),
        ({"filters": (Filter("domain", "eq", ("x", "y")),)}, ["filters", 0, "values"], "one value"),
        ({"filters": (Filter("domain", "in", ()),)}, ["filters", 0, "values"], "1 to"),
        (
            {"filters": (Filter("smtp_code", "eq", ("abc",)),)},
            ["filters", 0, "values", 0],
            "integer",
        ),
        ({"filters": (Filter("smtp_code", "like", ("5%",)),)}, ["filters", 0, "op"], "text"),
        (
            {"filters": (Filter("date", "ge", ("27/01/2021",)),)},
            ["filters", 0, "values", 0],
            "YYYY-MM-DD",
        ),
        ({"filters": (Filter("domain", "eq", (3,)),)}, ["filters", 0, "values", 0], "text"),
        ({"timezone": "Mars/Olympus"}, ["timezone"], "unknown time zone"),
        ({"start": datetime(2021, 1, 27)}, ["start"], "time zone"),  # noqa: DTZ001 - naive on purpose
        ({"start": AWARE, "end": AWARE}, ["end"], "after start"),
        ({"order_by": ("nope",)}, ["order_by", 0], "unknown measure"),
        ({"order_by": ("domain",)}, ["order_by", 0], "not grouped"),
        ({"limit": 0}, ["limit"], "positive"),
        ({"measures": ()}, ["measures"], "at least one measure"),
        ({"group_by": ("date;DROP TABLE events",)}, ["group_by", 0], "unknown dimension"),
    ],
)
def test_a_bad_query_is_invalid_with_its_field(
    store: DuckDBStore, options: dict[str, Any], loc: list[str | int], words: str
) -> None:
    query = StatsQuery(project_id=1, measures=options.pop("measures", ("sent",)), **options)
    with pytest.raises(Invalid) as raised:
        StatisticsEngine(store).run(query)
    assert raised.value.loc == loc
    assert words in raised.value.message


@pytest.mark.parametrize(
    "zone",
    [
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
    ],
)
def test_local_time_by_offset_table_agrees_with_icu(zone: str) -> None:
    """The offsets SQL adds by table are the ones DuckDB's ICU conversion gives, across
    every change of two years, and before and after the tabulated years."""
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t (occurred_at TIMESTAMP)")
    connection.execute(
        "INSERT INTO t SELECT TIMESTAMP '2018-06-01' + to_minutes(i * 7) "
        "FROM range(2 * 365 * 24 * 60 // 7) AS r(i)"
    )
    connection.execute("INSERT INTO t VALUES ('1950-07-01 12:00'), ('2150-01-01 03:00')")
    values: list[Any] = []

    def add(value: object) -> str:
        values.append(value)
        return f"${len(values)}"

    table = local_sql(zone, add)
    values.append(zone)
    icu = f"timezone(${len(values)}, timezone('UTC', occurred_at))"
    differing = connection.execute(
        f"SELECT count(*) FROM t WHERE ({table}) <> ({icu})",  # noqa: S608 - test SQL
        values,
    ).fetchall()
    assert differing == [(0,)]
