"""The rollups give the events' answers, exactly: over a real DuckDB store written in
several batches (late events taking first-occurrence flags, a batch written twice, an
import with its GDPR erasures), then compacted, after an erasure, after a rebuild,
and in a store made before rollups existed, many random queries (seed 002's grouping
fields, filters and filter trees, date ranges, tags, time zones with summer time and
half-hour offsets) run through both paths of `statistics.sql.statement` and must
return the same rows and totals, floats to the last bit."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from envoi.core.identity import erasure_hash
from envoi.eventstore import imports
from envoi.eventstore.duckdb import DuckDBStore
from envoi.eventstore.mapping import OUTBOX_COLUMNS
from envoi.eventstore.rollups import (
    CAMPAIGNS,
    CLIENTS,
    COMPACTED,
    DELIVERIES,
    ROLLUPS,
    ROWS,
    VERSION,
)
from envoi.statistics import plan as planning
from envoi.statistics import sql
from envoi.statistics.catalogue import DIMENSIONS, MEASURES
from envoi.statistics.definitions import LOCAL
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery, Where
from envoi.statistics.rollups import HOURLY, hourly_zone


def naive(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, second: int = 0
) -> datetime:
    """A time as the store keeps it: naive UTC."""
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).replace(tzinfo=None)


START = naive(2025, 3, 7, 18)  # New York changes to summer time on 9 March, Paris on 30 March
DAYS = 26
REPORT = tuple(m.name for m in MEASURES.values() if "002" in m.seeds)
OTHER_MEASURES = (
    "first",
    "last",
    "opens",
    "messages",
    "unique_opened_all",
    "opened_machine",
    "machine_open_share",
    "tempfail",
    "deferrals",
    "bounces_user_unknown",
    "hard_bounces",
    "goals",
    "unique_goals",
    "complaints_handled",
    "complaints_unhandled",
    "forwarded",
    "unique_mirrored",
)
GROUPS = (
    "message",
    "post",
    "message_type",
    "post_type",
    "project_id",
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
    "tag",
    "campaign_id",
    "email_id",
    "bucket_hour",
    "bucket_day",
    "bucket_week",
    "bucket_month",
    "domain",
    "provider",
    "router",
    "error_code",
    "link",
    "url",
)
ROLLED_ZONES = ("UTC", "Europe/Paris", "America/New_York")
ZONES = (*ROLLED_ZONES, "Asia/Kolkata", "Australia/Lord_Howe")
CLIENT_NAMES = ("Gmail", "Apple Mail", "Outlook", None)
PLACES = (
    ("France", "Île-de-France", "Paris"),
    ("France", "Occitanie", "Toulouse"),
    ("Belgium", "Brussels Capital", "Brussels"),
    (None, None, None),
)
TAGS: tuple[list[str] | None, ...] = (["news"], ["news", "promo"], ["promo"], [], None, ["x"])
REASONS = ("invalid", "duplicate", "gdpr", "noaddress", "external_check")
DOMAINS = ("example.com", "gmail.com", "orange.fr", "hotmail.fr")
CLASSES = ("user_unknown", "mailbox_full", "block_content", "block_other", "other_hard")


# --- the events ----------------------------------------------------------------------


@dataclass
class Scene:
    store: DuckDBStore
    path: Path
    erased_profile: int  # profile of project 1 an outbox erasure names
    outbox_ids: Iterator[int]


def _moment(rnd: random.Random) -> datetime:
    return START + timedelta(seconds=rnd.randrange(DAYS * 86400), microseconds=rnd.randrange(10**6))


Made = list[tuple[str, datetime, dict[str, Any]]]  # (kind, time, other columns)


def _campaign_events(rnd: random.Random, project: int, campaign: int) -> list[dict[str, Any]]:
    """A campaign's events: per recipient its build event, sending, hits, feedback."""
    emails = [campaign * 10 + 1] + ([campaign * 10 + 2] if campaign % 3 == 0 else [])
    sent_at = _moment(rnd)
    events: list[dict[str, Any]] = []
    for person in range(rnd.randint(25, 45)):
        email = rnd.choice(emails)
        profile = project * 1000 + person
        domain = DOMAINS[profile % len(DOMAINS)]
        common = {
            "project_id": project,
            "campaign_id": campaign,
            "post": f"{'B' if len(emails) > 1 else 'S'}_{campaign}",
            "post_type": "B" if len(emails) > 1 else "S",
            "message": f"L_{email}",
            "message_type": "L",
            "email_id": email,
            "send_id": campaign * 10_000 + person,
            "profile_id": profile,
            "recipient": f"p{profile}@{domain}",
            "domain": domain,
            "router": rnd.choice(("mta-1", "mta-2", None)),
            "language": rnd.choice(("fr", "en", None)),
            "tags": TAGS[campaign % len(TAGS)],
        }
        made: Made = []
        delivered = _sending(rnd, sent_at + timedelta(seconds=rnd.randrange(3600)), made)
        if delivered is not None:
            _hits(rnd, delivered, made)
            _feedback(rnd, delivered, made)
        events += [common | {"kind": k, "occurred_at": at} | v for k, at, v in made]
    return events


def _sending(rnd: random.Random, at: datetime, made: Made) -> datetime | None:
    """Build and send: when it was delivered, or None."""
    build = rnd.random()
    if build < 0.08:
        made.append(("blocked", at, {"reason": rnd.choice(REASONS)}))
        return None
    if build < 0.12:
        reason = rnd.choice(("nonexistent", "spam", "unsubscribed"))
        made.append(("quarantined", at, {"reason": reason}))
        return None
    made.append(("queued", at, {}))
    for _ in range(rnd.choice((0, 0, 0, 1, 2))):
        at += timedelta(minutes=rnd.randrange(5, 90))
        failure = {"bounce_class": "other_soft", "error_code": 46, "in_band": True}
        made.append(("tempfail", at, failure))
    at += timedelta(seconds=rnd.randrange(1, 600))
    if rnd.random() < 0.1:
        bounce_class = rnd.choice(CLASSES)
        failure = {"bounce_class": bounce_class, "hard": bounce_class == "user_unknown"}
        made.append(("permfail", at, failure | {"error_code": CLASSES.index(bounce_class) + 11}))
        return None
    made.append(("delivered", at, {}))
    if rnd.random() < 0.05:
        later = at + timedelta(hours=rnd.randrange(1, 30))
        made.append(("bounce", later, {"bounce_class": "mailbox_full", "error_code": 15}))
    return at


def _hits(rnd: random.Random, at: datetime, made: Made) -> None:
    """Machine and human opens, clicks, web views, goals of a delivered message."""
    if rnd.random() < 0.15:
        made.append(("open", at + timedelta(seconds=rnd.randrange(60)), {"machine": "apple_mpp"}))
    if rnd.random() < 0.06:
        made.append(("click", at + timedelta(seconds=5), {"machine": "scanner", "link": 0}))
    for _ in range(rnd.choice((0, 0, 1, 1, 2, 4))):
        country, region, city = rnd.choice(PLACES)
        hit = {
            "client": rnd.choice(CLIENT_NAMES),
            "country_name": country,
            "region_name": region,
            "city_name": city,
        }
        opened = at + timedelta(seconds=rnd.randrange(5 * 86400))
        made.append(("open", opened, hit))
        if rnd.random() < 0.4:
            made.append(("click", opened + timedelta(seconds=rnd.randrange(600)), hit | _link(rnd)))
        if rnd.random() < 0.1:
            made.append(("mirror", opened + timedelta(seconds=30), hit))
        if rnd.random() < 0.1:
            goal = {"goal": "buy", "value": rnd.randrange(5, 90)}
            made.append(("goal", opened + timedelta(minutes=12), goal))


def _link(rnd: random.Random) -> dict[str, Any]:
    link = rnd.randrange(3)
    return {"link": link, "url": f"https://example.com/{link}"}


def _feedback(rnd: random.Random, at: datetime, made: Made) -> None:
    feedback = rnd.random()
    later = at + timedelta(seconds=rnd.randrange(2 * 86400))
    if feedback < 0.04:
        made.append(("unsubscribe", later, {"method": "one-click"}))
    elif feedback < 0.07:
        made.append(("complaint", later, {"handled": rnd.choice((True, False, None))}))
    elif feedback < 0.09:
        made.append(("forward", later, {}))


def _batches(rnd: random.Random, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Five batches in time order, but a few events each come one or two batches late
    (an earlier open than one stored: it takes the first-occurrence flag)."""
    events.sort(key=lambda e: e["occurred_at"])
    batches: list[list[dict[str, Any]]] = [[] for _ in range(5)]
    for index, event in enumerate(events):
        at = index * 5 // len(events)
        if rnd.random() < 0.04:
            at = min(4, at + rnd.randint(1, 2))
        batches[at].append(event)
    return batches


def _write_history(path: Path, rnd: random.Random) -> Path:
    """A JSON-lines import: a campaign of each project, two events outside the years the
    local time is read by offset table, and an address erased in the OLTP store."""
    history = _campaign_events(rnd, 1, 50) + _campaign_events(rnd, 2, 51)
    history += [
        {
            "project_id": 1,
            "kind": "delivered",
            "occurred_at": naive(1969, 12, 31, 23, 40, second=10),
        },
        {"project_id": 1, "kind": "open", "occurred_at": naive(2100, 1, 1, 0, 20, second=5)},
    ]
    file = path / "history.jsonl"
    with file.open("w") as out:
        for event in history:
            fields = {k: v for k, v in event.items() if v is not None}
            fields["occurred_at"] = event["occurred_at"].isoformat()
            out.write(json.dumps(fields) + "\n")
    return file


def build(path: Path, seed: int = 7) -> Scene:
    """A store written as the projector and an import write it."""
    rnd = random.Random(seed)  # noqa: S311 - test data
    store = DuckDBStore(path / "events.duckdb")
    events = [e for c in range(1, 13) for e in _campaign_events(rnd, 1 + (c % 4 == 0), c)]
    ids = itertools.count(1)
    written = []
    for batch in _batches(rnd, events):
        rows = [event | {"id": next(ids)} for event in batch]
        store.append(rows, cursor=rows[-1]["id"])
        written.append(rows)
    store.append(written[1])  # a batch written again: nothing changes
    file = _write_history(path, rnd)
    checked = imports.check_jsonl(file, {1, 2}, lambda _done: None)
    erased = [(1, erasure_hash("email", f"p1003@{DOMAINS[1003 % len(DOMAINS)]}"))]
    try:
        imports.load(store, checked, lambda _done: None, imports.erasures_of(erased))
    finally:
        checked.close()
    return Scene(store, path, erased_profile=1005, outbox_ids=ids)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    built = build(tmp_path)
    yield built
    built.store.close()


# --- the queries -----------------------------------------------------------------------


def _day(rnd: random.Random) -> date:
    return (START + timedelta(days=rnd.randrange(-1, DAYS + 1))).date()


def _hour(rnd: random.Random) -> datetime:
    return (START + timedelta(hours=rnd.randrange(DAYS * 24))).replace(tzinfo=UTC)


def _filter(rnd: random.Random) -> Filter:
    choices = [
        lambda: Filter("date", rnd.choice(("ge", "le", "gt", "lt", "eq")), (_day(rnd),)),
        lambda: Filter("date", "in", (_day(rnd), _day(rnd))),
        lambda: Filter("date", "ne", (_day(rnd),)),
        lambda: Filter("post", "eq", (f"S_{rnd.randint(1, 13)}",)),
        lambda: Filter("message", "in", tuple(f"L_{rnd.randint(1, 13)}1" for _ in range(3))),
        lambda: Filter("post_type", "eq", (rnd.choice("SB"),)),
        lambda: Filter("language", rnd.choice(("eq", "ne")), (rnd.choice(("fr", None)),)),
        lambda: Filter("client", rnd.choice(("eq", "ne")), (rnd.choice(CLIENT_NAMES),)),
        lambda: Filter("country_name", "in", ("France", "Belgium")),
        lambda: Filter("city_name", "like", ("T%",)),
        lambda: Filter("region_name", "ne", ("Occitanie",)),
        lambda: Filter("tag", rnd.choice(("eq", "ne")), (rnd.choice(("news", "promo", "x")),)),
        lambda: Filter("tag", "in", ("promo", "x")),
        lambda: Filter("tag", "eq", (None,)),
        lambda: Filter("hour", rnd.choice(("ge", "lt")), (rnd.randrange(24),)),
        lambda: Filter("day_of_week", "in", (1, 6, 7)),
        lambda: Filter("month_year", "like", ("2025-03%",)),
        lambda: Filter("bucket_day", "ge", (_hour(rnd).isoformat(),)),
        lambda: Filter("week", "eq", (rnd.choice((10, 11, 12, 13, 14)),)),
        lambda: Filter("campaign_id", "ge", (rnd.randint(1, 12),)),
        lambda: Filter("email_id", "lt", (rnd.randint(10, 130),)),
        lambda: Filter("domain", "eq", ("example.com",)),
        lambda: Filter("router", "in", ("mta-1", "mta-2")),
        lambda: Filter("error_code", "eq", (None,)),
        # dimensions no rollup holds
        lambda: Filter("device", "eq", ("Mobile",)),
        lambda: Filter("human", "eq", (True,)),
        lambda: Filter("bucket_15min", "ge", (_hour(rnd).isoformat(),)),
    ]
    return rnd.choice(choices)()


def _where(rnd: random.Random, depth: int = 0) -> Filter | Where:
    if depth > 1 or rnd.random() < 0.4:
        return _filter(rnd)
    op = rnd.choice(("and", "or", "not"))
    count = 1 if op == "not" else rnd.randint(1, 3)
    return Where(op, tuple(_where(rnd, depth + 1) for _ in range(count)))


def random_query(rnd: random.Random) -> StatsQuery:
    groups = rnd.sample(GROUPS, rnd.choice((0, 1, 1, 2, 2, 3)))
    if rnd.random() < 0.05:
        groups.append(rnd.choice(("bucket_minute", "device", "human")))
    pool = REPORT + OTHER_MEASURES + (("goal_value",) if rnd.random() < 0.05 else ())
    measures = tuple(rnd.sample(pool, rnd.randint(1 if not groups else 0, 8)))
    # A window most of the time, as the report builder's default last 7 days (an
    # unbounded one in a zone with summer time makes a long statement, slower to plan).
    start = end = None
    filters = [_filter(rnd) for _ in range(rnd.choice((0, 1, 1, 2)))]
    window = rnd.random()
    if window < 0.35:
        start = _hour(rnd)
        end = start + timedelta(hours=rnd.randrange(1, 24 * 10))
        if rnd.random() < 0.2:
            start += timedelta(minutes=30)  # not a whole hour: the events answer
    elif window < 0.7:
        first = _day(rnd)
        filters.append(Filter("date", "ge", (first,)))
        filters.append(Filter("date", "le", (first + timedelta(days=rnd.randrange(7)),)))
    order: tuple[str, ...] = ()
    if measures and rnd.random() < 0.5:
        order = (f"-{rnd.choice(measures)}",)
    return StatsQuery(
        project_id=rnd.choice((1, 1, 1, 2)),
        group_by=tuple(groups),
        measures=measures,
        filters=tuple(filters),
        start=start,
        end=end,
        timezone=rnd.choice(ROLLED_ZONES * 3 + ZONES),
        order_by=order,
        limit=rnd.choice((None, None, 5, 100)),
        where=Where("and", (_where(rnd),)) if rnd.random() < 0.3 else None,
        offset=rnd.choice((0, 0, 0, 2)),
    )


def answers(store: DuckDBStore, query: StatsQuery) -> str:
    """Run `query` both ways; the rows must be equal. The table the default read."""
    plan = planning.plan(query)
    rolled, rolled_parameters = sql.statement(plan)
    raw, raw_parameters = sql.statement(plan, rollups=False)
    assert "rollup_" not in raw
    expected = store.query(raw, raw_parameters)[1]
    assert store.query(rolled, rolled_parameters)[1] == expected, query
    return next((r.table for r in ROLLUPS if f"FROM {r.table} " in rolled), "events")


def check_many(store: DuckDBStore, seed: int, count: int = 60) -> dict[str, int]:
    """`count` random queries answered alike both ways; how many each table answered."""
    rnd = random.Random(seed)  # noqa: S311 - test data
    used: dict[str, int] = {}
    for _ in range(count):
        table = answers(store, random_query(rnd))
        used[table] = used.get(table, 0) + 1
    # Most queries are answerable from a rollup: the comparison is not vacuous.
    assert used.get(CAMPAIGNS.table, 0) > count // 8, used
    assert used.get(CLIENTS.table, 0) > count // 20, used
    assert used.get(DELIVERIES.table, 0) > count // 20, used
    assert used.get("events", 0) > count // 20, used
    return used


def rollup_rows(store: DuckDBStore) -> dict[str, int]:
    return {r.table: store.query(f"SELECT count(*) FROM {r.table}")[1][0][0] for r in ROLLUPS}  # noqa: S608


# --- the tests ------------------------------------------------------------------------


def test_random_queries_give_the_events_answer_after_batches_and_an_import(scene: Scene) -> None:
    (late,) = scene.store.query("SELECT count(*) FROM events WHERE NOT is_first")[1][0]
    assert late > 0
    check_many(scene.store, seed=1, count=150)


def test_the_seeds_surfaces_read_a_rollup_and_answer_alike(scene: Scene) -> None:
    """The report builder (all of seed 002's fields, by date and message; its default
    last 7 days; by client and country in Paris), a message's daily counters (seed
    001), a tag's statistics (seed 004)."""
    week = (Filter("date", "ge", ("2025-03-25",)), Filter("date", "le", ("2025-03-31",)))
    cases = {
        StatsQuery(1, ("date", "message"), REPORT, limit=100): CAMPAIGNS.table,
        StatsQuery(1, ("date", "message"), REPORT, week, limit=100): CAMPAIGNS.table,
        StatsQuery(
            1, ("client", "country_name"), REPORT, week, timezone="Europe/Paris"
        ): CLIENTS.table,
        StatsQuery(
            1,
            ("bucket_day",),
            ("sent", "opened", "unique_opened"),
            (Filter("message", "eq", ("L_31",)),),
        ): CAMPAIGNS.table,
        StatsQuery(
            1,
            measures=("first", "last", "opens", "clicks", "messages", "deliveries"),
            filters=(Filter("tag", "eq", ("news",)),),
        ): CAMPAIGNS.table,
        StatsQuery(1, ("tag",), ("opens", "clicks", "first")): CAMPAIGNS.table,
    }
    for query, table in cases.items():
        assert answers(scene.store, query) == table
    engine = StatisticsEngine(scene.store)
    result = engine.run(StatsQuery(1, ("date", "message"), REPORT, limit=100))
    assert result.totals["sum_delivered"] > 100
    assert result.totals["sum_opened_unique"] <= result.totals["sum_opened"]


def test_what_no_rollup_answers_reads_the_events(scene: Scene) -> None:
    """A half-hour zone, a zone whose summer time moves 30 minutes, minutes, a start
    inside an hour, dimensions the rollups lack, a sum of values."""
    week = (Filter("date", "ge", ("2025-03-25",)),)
    at = datetime(2025, 3, 20, 10, tzinfo=UTC)
    cases = (
        StatsQuery(1, ("date",), ("sum_opened",), week, timezone="Asia/Kolkata"),
        StatsQuery(1, ("hour",), ("sum_opened",), timezone="Australia/Lord_Howe"),
        StatsQuery(1, ("bucket_15min",), ("sum_opened",), week),
        StatsQuery(1, ("date",), ("sum_opened",), start=at + timedelta(minutes=30)),
        StatsQuery(1, ("date",), ("sum_opened",), end=at + timedelta(seconds=1)),
        StatsQuery(1, ("device",), ("sum_delivered",)),
        StatsQuery(1, ("domain", "client"), ("sum_delivered",)),
        StatsQuery(1, ("human",), ("opened_all",)),
        StatsQuery(1, ("message",), ("goal_value", "goals")),
        StatsQuery(1, ("message",), ("opened",), where=Where("or", (Filter("os", "eq", ("x",)),))),
    )
    for query in cases:
        assert answers(scene.store, query) == "events"
    # A half-hour zone with no time dimension: the rollup (local time is not read).
    assert (
        answers(scene.store, StatsQuery(1, ("message",), ("first",), timezone="Asia/Kolkata"))
        == CAMPAIGNS.table
    )


def test_compaction_merges_rows_and_changes_no_answer(scene: Scene) -> None:
    rnd = random.Random(3)  # noqa: S311 - test data
    extra = _campaign_events(rnd, 1, 40)
    ids = scene.outbox_ids
    for part in (extra[: len(extra) // 2], extra[len(extra) // 2 :]):
        scene.store.append([e | {"id": next(ids)} for e in part])
    before = rollup_rows(scene.store)
    (rows, compacted) = (scene.store.state(ROWS), scene.store.state(COMPACTED))
    assert rows >= max(before.values()) > compacted
    with scene.store.importing():  # an import compacts at its end
        pass
    after = rollup_rows(scene.store)
    assert scene.store.state(COMPACTED) == max(after.values())
    for rollup in ROLLUPS:
        assert after[rollup.table] < before[rollup.table]
        keys = ", ".join(rollup.dimensions)
        (groups,) = scene.store.query(
            f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {rollup.table})"  # noqa: S608
        )[1][0]
        assert groups == after[rollup.table]  # one row per group
    check_many(scene.store, seed=4)


def test_an_erasure_changes_no_count_and_no_rollup_row(scene: Scene) -> None:
    before = scene.store.query("SELECT * FROM rollup_clients ORDER BY ALL")[1]
    erasure = dict.fromkeys(OUTBOX_COLUMNS) | {
        "id": next(scene.outbox_ids),
        "project_id": 1,
        "kind": "erasure",
        "occurred_at": "2025-04-03 10:00:00",
        "profile_id": scene.erased_profile,
    }
    row = [erasure[c] for c in OUTBOX_COLUMNS] + [json.dumps({"profile_id": scene.erased_profile})]
    anonymous = "SELECT count(*) FROM events WHERE recipient IS NULL AND profile_id IS NULL"
    (before_erasure,) = scene.store.query(anonymous)[1][0]
    scene.store.append_outbox([row])
    (after_erasure,) = scene.store.query(anonymous)[1][0]
    assert after_erasure > before_erasure + 1
    assert scene.store.query("SELECT * FROM rollup_clients ORDER BY ALL")[1] == before
    check_many(scene.store, seed=5)


def test_a_rebuild_makes_the_rollups_again(scene: Scene) -> None:
    scene.store.reset()  # the projected events go, the imported ones stay
    (left,) = scene.store.query("SELECT count(*) FROM events")[1][0]
    assert 0 < left < 1000
    check_many(scene.store, seed=6, count=50)
    rnd = random.Random(9)  # noqa: S311 - test data
    again = _campaign_events(rnd, 1, 60)
    scene.store.append([e | {"id": i} for i, e in enumerate(again, start=1)])
    check_many(scene.store, seed=7, count=50)


@pytest.mark.parametrize("how", ["no rollups", "another definition"])
def test_a_store_without_current_rollups_gets_them_when_opened(scene: Scene, how: str) -> None:
    expected = rollup_rows(scene.store)
    scene.store.close()
    path = str(scene.path / "events.duckdb")
    with duckdb.connect(path) as raw:
        if how == "no rollups":  # a store of an earlier version
            for rollup in ROLLUPS:
                raw.execute(f"DROP TABLE {rollup.table}")
            raw.execute("DELETE FROM projector_state WHERE name LIKE 'rollup%'")
        else:
            raw.execute("UPDATE projector_state SET value = 1 WHERE name = ?", [VERSION])
            raw.execute("DELETE FROM rollup_campaigns WHERE post = 'S_1'")
    scene.store = DuckDBStore(path)
    assert rollup_rows(scene.store) == expected
    check_many(scene.store, seed=8, count=50)


# --- the rules the paths rely on ------------------------------------------------------


def test_the_hourly_time_dimensions_are_those_an_hour_decides() -> None:
    """HOURLY lists every time dimension whose value is the same at any time of an hour
    as at its start, and only those."""
    rnd = random.Random(11)  # noqa: S311 - test data
    times = [START + timedelta(seconds=rnd.randrange(400 * 86400)) for _ in range(300)]
    times += [naive(2025, 3, 30, 23, 59, second=59), naive(2025, 12, 31, 23, 30)]
    with duckdb.connect() as db:
        for dimension in DIMENSIONS.values():
            if not dimension.timed:
                continue
            expression = dimension.sql.replace(LOCAL, "t")
            (differing,) = db.execute(
                f"SELECT count(*) FILTER (WHERE {expression} IS DISTINCT FROM "  # noqa: S608
                f"{dimension.sql.replace(LOCAL, 'h')}) "
                "FROM (SELECT t, date_trunc('hour', t) AS h FROM unnest($1::TIMESTAMP[]) AS u(t))",
                [times],
            ).fetchone() or (None,)
            assert (differing == 0) == (dimension.name in HOURLY), dimension.name


@pytest.mark.parametrize(
    ("zone", "hourly"),
    [
        ("UTC", True),
        ("Europe/Paris", True),
        ("America/New_York", True),
        ("Asia/Kolkata", False),  # +05:30
        ("America/St_Johns", False),  # -03:30
        ("Australia/Lord_Howe", False),  # +10:30, +11 in summer
    ],
)
def test_zones_whose_local_hour_is_a_utc_hour(zone: str, hourly: bool) -> None:
    assert hourly_zone(zone, None, None) is hourly
    assert hourly_zone(zone, naive(2025, 3, 1), naive(2025, 5, 1)) is hourly


def test_a_zone_is_judged_over_the_window_only() -> None:
    """Asia/Tehran was +03:30 until 2022 and +04:30 in summers before; Europe/Moscow
    changed by whole hours. Over a window Paris keeps one offset, any zone does."""
    assert hourly_zone("Europe/Moscow", naive(2015, 1, 1), naive(2025, 1, 1))
    assert not hourly_zone("Asia/Tehran", naive(2015, 1, 1), naive(2025, 1, 1))
    assert hourly_zone("Europe/Paris", naive(1980, 1, 1), None)
