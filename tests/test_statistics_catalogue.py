"""The statistics catalogue: every name the seeds use is in it, every entry runs, the
documentation lists them all, and time buckets tile a range."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pytest

from envoi.eventstore.schema import NAMES, create_table_sql
from envoi.statistics import reports
from envoi.statistics.catalogue import DIMENSIONS, MEASURES, describe
from envoi.statistics.definitions import Count, Rate
from envoi.statistics.plan import plan
from envoi.statistics.query import StatsQuery
from envoi.statistics.sql import statement
from envoi.statistics.timebuckets import PRECISIONS, series

DOCS = Path(__file__).resolve().parents[1] / "docs" / "statistics.md"

SEED_002_GROUPING = [
    "project_id",
    "message",
    "post",
    "message_type",
    "post_type",
    "year",
    "quarter",
    "month_year",
    "day_of_month",
    "day_of_week",
    "week",
    "date",
    "hour",
    "client",
    "language",
    "city_name",
    "region_name",
    "country_name",
]
SEED_002_AGGREGATED = [
    "sum_total",
    "sum_selected",
    "sum_sended",
    "sum_delivered",
    "sum_opened",
    "sum_opened_unique",
    "sum_clicked",
    "sum_clicked_unique",
    "sum_unsubscribed",
    "sum_spam_reports",
    "sum_churn",
    "open_rate",
    "open_rate_unique",
    "click_rate",
    "click_rate_unique",
    "ctor",
    "delivery_rate",
    "bounce_rate",
    "unsub_rate",
    "abuse_rate",
    "churn_rate",
    "sum_stop_total",
    "sum_stop_invalid",
    "sum_stop_nonexistent",
    "sum_stop_spam_added",
    "sum_stop_gdpr",
    "sum_stop_unsubscr",
    "sum_bounce_total",
    "sum_bounce_nonexistent",
    "sum_bounce_temp_unavailable",
    "sum_bounce_spam",
    "sum_bounce_other",
    "sum_stop_sendlog_added",
    "sum_stop_letter_single_quarantine",
    "sum_stop_inactive",
    "sum_stop_noaddress",
    "sum_stop_send_policy",
    "sum_stop_external_check",
]
SEED_001_COUNTERS = [
    "sent",
    "opened",
    "unique_opened",
    "clicked",
    "unique_clicked",
    "goals",
    "unique_goals",
    "forwarded",
    "unsubscribes",
    "bounces_user_unknown",
    "bounces_user_recycled",
    "bounces_mailbox_full",
    "bounces_block_content",
    "bounces_block_timeout",
    "bounces_block_other",
    "bounces_other_soft",
    "bounces_other_hard",
    "complaints_handled",
    "complaints_unhandled",
]
SEED_000_COUNTERS = [
    "open",
    "click",
    "mirror",
    "ok",
    "tempfail",
    "permfail",
    "count",
    "blocked",
    "quarantine",
]
SEED_003_COUNTERS = ["count", "delivered", "bounce", "opened", "clicked", "spam", "unsubs"]
SEED_004_COUNTERS = ["first", "last", "opens", "clicks", "messages", "deliveries"]
NATIVE_DIMENSIONS = [
    "router",
    "domain",
    "provider",
    "tag",
    "link",
    "url",
    "bounce_class",
    "bounce_reason",
    "smtp_code",
    "smtp_status",
    "error_code",
    "device",
    "os",
    "country_code",
    "machine",
    "human",
    "kind",
    "send_id",
]


def test_every_seed_name_is_in_the_catalogue() -> None:
    assert set(SEED_002_GROUPING + NATIVE_DIMENSIONS) <= set(DIMENSIONS)
    measures = (
        SEED_002_AGGREGATED
        + SEED_001_COUNTERS
        + SEED_000_COUNTERS
        + SEED_003_COUNTERS
        + SEED_004_COUNTERS
    )
    assert [name for name in measures if name not in MEASURES] == []
    assert {f"bucket_{p}" for p in ("5min", "15min", "hour", "day", "week", "month")} <= set(
        DIMENSIONS
    )
    assert set(PRECISIONS.values()) <= set(DIMENSIONS)
    # The report builder takes exactly the seed's fields, in the seed's order.
    assert list(reports.GROUPING_FIELDS) == SEED_002_GROUPING
    assert list(reports.AGGREGATED_FIELDS) == SEED_002_AGGREGATED


def test_seed_names_mean_what_the_seeds_say() -> None:
    # Seed 000 counts recipients who opened or clicked: unique people.
    assert MEASURES["open"].same_as == "unique_opened"
    assert MEASURES["click"].same_as == "unique_clicked"
    # Seed 002's rates and their denominators.
    rates = {name: m for name, m in MEASURES.items() if isinstance(m, Rate)}
    assert (rates["open_rate_unique"].numerator, rates["open_rate_unique"].denominator) == (
        "unique_opened",
        "delivered",
    )
    assert (rates["ctor"].numerator, rates["ctor"].denominator) == (
        "unique_clicked",
        "unique_opened",
    )
    assert (rates["churn_rate"].numerator, rates["churn_rate"].denominator) == ("churn", "sent")


def test_every_entry_is_documented_and_rates_divide_counts() -> None:
    for item in [*DIMENSIONS.values(), *MEASURES.values()]:
        assert item.doc, item.name
    for item in MEASURES.values():
        if item.same_as is not None:
            assert MEASURES[item.same_as].same_as is None
        if isinstance(item, Rate):
            assert isinstance(MEASURES[item.numerator], Count)
            assert isinstance(MEASURES[item.denominator], Count)
    listed = describe()
    json.dumps(listed)  # served as JSON as it is
    ctor = next(m for m in listed["measures"] if m["name"] == "ctor")
    assert ctor["numerator"] == "unique_clicked"
    assert ctor["denominator"] == "unique_opened"
    assert ctor["kind"] == "rate"


@pytest.fixture(scope="module")
def empty_events() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute(create_table_sql())
    return connection


@pytest.mark.parametrize("name", sorted(DIMENSIONS))
def test_every_dimension_and_measure_runs(
    empty_events: duckdb.DuckDBPyConnection, name: str
) -> None:
    query = StatsQuery(
        project_id=1, group_by=(name,), measures=tuple(MEASURES), timezone="Europe/Paris"
    )
    sql, parameters = statement(plan(query))
    rows = empty_events.execute(sql, parameters).fetchall()
    assert len(rows) == 1  # the totals alone
    assert len(rows[0]) == 1 + len(MEASURES) + 1


def test_the_documentation_lists_the_whole_catalogue() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.MULTILINE))
    assert set(DIMENSIONS) - documented == set()
    assert set(MEASURES) - documented == set()
    assert "[statistics](statistics.md)" in (DOCS.parent / "index.md").read_text()


def test_the_event_table_has_every_column_a_dimension_reads() -> None:
    for item in DIMENSIONS.values():
        words = set(re.findall(r"[a-z_]+", item.sql.replace("{local}", "occurred_at")))
        assert words & set(NAMES), item.name


def test_time_buckets_tile_a_range_on_the_zones_wall_clock() -> None:
    paris = ZoneInfo("Europe/Paris")
    # The night clocks went forward: 02:00 does not exist in Paris.
    start = datetime(2021, 3, 28, 0, 30, tzinfo=paris)
    hours = series("bucket_hour", start, datetime(2021, 3, 28, 4, tzinfo=paris), paris)
    assert [h.hour for h in hours] == [0, 1, 3]
    months = series(
        "bucket_quarter",
        datetime(2021, 2, 10, tzinfo=UTC),
        datetime(2022, 1, 1, tzinfo=UTC),
        ZoneInfo("UTC"),
    )
    assert [(m.year, m.month) for m in months] == [(2021, 1), (2021, 4), (2021, 7), (2021, 10)]
    weeks = series(
        "bucket_week",
        datetime(2021, 5, 16, tzinfo=UTC),
        datetime(2021, 5, 18, tzinfo=UTC),
        ZoneInfo("UTC"),
    )
    assert [w.day for w in weeks] == [10, 17]
