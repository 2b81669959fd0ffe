"""Generation of every op and node kind against real rows, on SQLite and PostgreSQL.

One small world per test: five profiles of the project, and an intruder in another
project that has all of ann's attributes and activity, so any leak across projects
shows up as the uid "intruder" in a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from envoi.categories.models import Category
from envoi.db.session import transaction
from envoi.events.models import ApiEvent
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Subscription
from tests.conftest import ApiProject, Backend
from tests.test_conditions import FIELDS
from tests.test_segments import add_profiles, matches

ANN_FIELDS = {
    "city": "Paris",
    "pole2": 150,
    "score": 1.5,
    "vip": True,
    "birthday": "1990-05-01",
    "last_seen": "2024-05-01T10:00:00Z",
    "interests": ["golf", "tennis"],
}
PROFILES: list[dict[str, Any]] = [
    {
        "uid": "ann",
        "email": "ann@example.com",
        "phone": "+33100000001",
        "language": "fr",
        "created_at": datetime(2020, 1, 1, tzinfo=UTC),
        "fields": ANN_FIELDS,
    },
    {
        "uid": "bob",
        "email": "bob@test.org",
        "language": "en",
        "fields": {
            "city": "berlin",
            "pole2": 9_000_000_000,
            "score": 0.25,
            "vip": False,
            "birthday": "2001-12-31",
            "last_seen": "2024-05-01T09:59:59Z",
            "interests": [],
        },
    },
    {
        "uid": "cid",
        "email": "cid@example.com",
        "fields": {"city": "Paris 50%_off", "pole2": -3, "interests": ["Golf"]},
    },
    {"uid": "dan", "wp_token": "tok-dan"},
    # Values of another JSON type than declared (a field whose type changed): never match.
    {
        "uid": "eve",
        "email": "eve@sub.example.com",
        "fields": {"pole2": "150", "vip": "true", "interests": "golf", "birthday": 19900501},
    },
]
EVERYONE = {"ann", "bob", "cid", "dan", "eve"}


@dataclass
class World:
    ids: dict[str, int]
    category: int
    empty_category: int


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@pytest.fixture
def world(backend: Backend, project: ApiProject, other_project: ApiProject) -> World:
    ids = add_profiles(backend, project.id, FIELDS, PROFILES)
    intruder = add_profiles(
        backend,
        other_project.id,
        FIELDS,
        [{**PROFILES[0], "uid": "intruder", "email": "ann@example.com"}],
    )["intruder"]
    with transaction(backend.sessions) as session:
        category = Category(project_id=project.id, title="News", translations={})
        empty = Category(project_id=project.id, title="Nobody opted out", translations={})
        session.add_all([category, empty])
        session.flush()
        session.add_all(
            [
                Subscription(profile_id=ids["bob"], category_id=category.id, subscribed=False),
                Subscription(profile_id=ids["cid"], category_id=category.id, subscribed=True),
            ]
        )
        outbox = [
            (project.id, ids["ann"], "delivered", 11, days_ago(2)),
            (project.id, ids["ann"], "open", 11, days_ago(2)),
            (project.id, ids["bob"], "delivered", 11, days_ago(40)),
            (project.id, ids["bob"], "click", 12, days_ago(1)),
            (project.id, ids["cid"], "open", 12, days_ago(100)),
            (project.id, ids["dan"], "sent", 11, days_ago(1)),  # sent is not received
            (other_project.id, intruder, "delivered", 11, days_ago(2)),
            (other_project.id, intruder, "open", 11, days_ago(2)),
            (other_project.id, intruder, "click", 11, days_ago(2)),
        ]
        session.add_all(
            OutboxEvent(
                project_id=project_id,
                profile_id=profile_id,
                kind=kind,
                campaign_id=campaign_id,
                occurred_at=at,
            )
            for project_id, profile_id, kind, campaign_id, at in outbox
        )
        events = [
            (project.id, ids["ann"], "login", days_ago(1)),
            (project.id, ids["ann"], "login", days_ago(2)),
            (project.id, ids["ann"], "login", days_ago(10)),
            (project.id, ids["bob"], "login", days_ago(40)),
            (project.id, ids["cid"], "purchase", days_ago(0)),
            (other_project.id, intruder, "login", days_ago(1)),
        ]
        session.add_all(
            ApiEvent(project_id=project_id, profile_id=profile_id, name=name, created_at=at)
            for project_id, profile_id, name, at in events
        )
        return World(ids, category.id, empty.id)


def check(project: ApiProject, cases: dict[str, tuple[Any, set[str]]]) -> None:
    """Every case's members are exactly its expected uids (all differences at once)."""
    got = matches(project, {name: condition for name, (condition, _) in cases.items()})
    wrong = {
        name: {"expected": sorted(expected), "got": sorted(got[name])}
        for name, (_, expected) in cases.items()
        if got[name] != expected
    }
    assert wrong == {}


def field(name: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": name, "op": op, "value": value}


@pytest.mark.usefixtures("world")
def test_string_ops(project: ApiProject) -> None:
    check(
        project,
        {
            "eq": (field("city", "eq", "Paris"), {"ann"}),
            "ne needs a value": (field("city", "ne", "Paris"), {"bob", "cid"}),
            "not eq": ({"not": field("city", "eq", "Paris")}, {"bob", "cid", "dan", "eve"}),
            "lt is byte order": (field("city", "lt", "a"), {"ann", "cid"}),
            "le": (field("city", "le", "Paris"), {"ann"}),
            "gt": (field("city", "gt", "Paris"), {"bob", "cid"}),
            "ge": (field("city", "ge", "b"), {"bob"}),
            "in": (field("city", "in", ["Paris", "berlin", "Rome"]), {"ann", "bob"}),
            "between": (field("city", "between", ["P", "Paris"]), {"ann"}),
            "contains": (field("city", "contains", "ari"), {"ann", "cid"}),
            "contains is case-sensitive": (field("city", "contains", "ARI"), set()),
            "contains takes % and _ literally": (field("city", "contains", "%_"), {"cid"}),
            "contains % alone": (field("city", "contains", "%"), {"cid"}),
            "startswith": (field("city", "startswith", "Paris "), {"cid"}),
            "startswith _": (field("city", "startswith", "_"), set()),
            "exists": (field("city", "exists", True), {"ann", "bob", "cid"}),
            "exists false": (field("city", "exists", False), {"dan", "eve"}),
        },
    )


@pytest.mark.usefixtures("world")
def test_number_ops(project: ApiProject) -> None:
    check(
        project,
        {
            "gt": (field("pole2", "gt", 100), {"ann", "bob"}),
            "ge coerced from text": (field("pole2", "ge", "150"), {"ann", "bob"}),
            "eq beyond 32 bits": (field("pole2", "eq", 9_000_000_000), {"bob"}),
            "lt": (field("pole2", "lt", 0), {"cid"}),
            "le": (field("pole2", "le", 150), {"ann", "cid"}),
            "ne": (field("pole2", "ne", 150), {"bob", "cid"}),
            "in": (field("pole2", "in", [150, -3, 7]), {"ann", "cid"}),
            "between": (field("pole2", "between", [-3, 150]), {"ann", "cid"}),
            "exists": (field("pole2", "exists", True), {"ann", "bob", "cid"}),
            "exists false": (field("pole2", "exists", False), {"dan", "eve"}),
            "float ge": (field("score", "ge", 0.25), {"ann", "bob"}),
            "float lt int": (field("score", "lt", 1), {"bob"}),
            "float eq": (field("score", "eq", 1.5), {"ann"}),
            "float between": (field("score", "between", [0.25, 1.5]), {"ann", "bob"}),
            "float in": (field("score", "in", [0.25]), {"bob"}),
        },
    )


@pytest.mark.usefixtures("world")
def test_bool_and_date_ops(project: ApiProject) -> None:
    check(
        project,
        {
            "bool eq true": (field("vip", "eq", True), {"ann"}),
            "bool eq false": (field("vip", "eq", False), {"bob"}),
            "bool ne": (field("vip", "ne", True), {"bob"}),
            "not bool": ({"not": field("vip", "eq", True)}, {"bob", "cid", "dan", "eve"}),
            "bool exists false": (field("vip", "exists", False), {"cid", "dan", "eve"}),
            "date lt": (field("birthday", "lt", "2000-01-01"), {"ann"}),
            "date ge": (field("birthday", "ge", "2000-01-01"), {"bob"}),
            "date eq": (field("birthday", "eq", "1990-05-01"), {"ann"}),
            "date ne": (field("birthday", "ne", "1990-05-01"), {"bob"}),
            "date in": (field("birthday", "in", ["2001-12-31", "1999-01-01"]), {"bob"}),
            "date between": (
                field("birthday", "between", ["1990-05-01", "2001-12-31"]),
                {"ann", "bob"},
            ),
            "date exists": (field("birthday", "exists", True), {"ann", "bob"}),
            "datetime ge": (field("last_seen", "ge", "2024-05-01T10:00:00Z"), {"ann"}),
            "datetime lt": (field("last_seen", "lt", "2024-05-01T10:00:00Z"), {"bob"}),
            "datetime with offset": (
                field("last_seen", "ge", "2024-05-01T11:59:59+02:00"),
                {"ann", "bob"},
            ),
            "datetime eq": (field("last_seen", "eq", "2024-05-01T09:59:59Z"), {"bob"}),
            "datetime between": (
                field("last_seen", "between", ["2024-05-01T00:00:00Z", "2024-05-01T09:59:59Z"]),
                {"bob"},
            ),
            "datetime exists false": (
                field("last_seen", "exists", False),
                {"cid", "dan", "eve"},
            ),
        },
    )


@pytest.mark.usefixtures("world")
def test_list_ops(project: ApiProject) -> None:
    check(
        project,
        {
            "contains": (field("interests", "contains", "golf"), {"ann"}),
            "contains is case-sensitive": (field("interests", "contains", "Golf"), {"cid"}),
            "contains nothing": (field("interests", "contains", "chess"), set()),
            "not contains": (
                {"not": field("interests", "contains", "golf")},
                {"bob", "cid", "dan", "eve"},
            ),
            "exists (an empty list too)": (
                field("interests", "exists", True),
                {"ann", "bob", "cid"},
            ),
            "exists false": (field("interests", "exists", False), {"dan", "eve"}),
        },
    )


@pytest.mark.usefixtures("world")
def test_system_fields(project: ApiProject) -> None:
    check(
        project,
        {
            "email eq, any case": (field("email", "eq", "ANN@example.com"), {"ann"}),
            "email startswith": (field("email", "startswith", "bob"), {"bob"}),
            "email exists false": (field("email", "exists", False), {"dan"}),
            "email_domain eq": (field("email_domain", "eq", "example.com"), {"ann", "cid"}),
            "email_domain in": (
                field("email_domain", "in", ["test.org", "Sub.Example.com"]),
                {"bob", "eve"},
            ),
            "email_domain startswith": (field("email_domain", "startswith", "sub."), {"eve"}),
            "uid in": (field("uid", "in", ["ann", "dan", "zed"]), {"ann", "dan"}),
            "uid contains": (field("uid", "contains", "a"), {"ann", "dan"}),
            "phone exists": (field("phone", "exists", True), {"ann"}),
            "wp_token eq": (field("wp_token", "eq", "tok-dan"), {"dan"}),
            "language eq": (field("language", "eq", "fr"), {"ann"}),
            "language exists false": (field("language", "exists", False), {"cid", "dan", "eve"}),
            "created_at lt": (field("created_at", "lt", "2021-01-01T00:00:00Z"), {"ann"}),
            "created_at ge": (
                field("created_at", "ge", "2021-01-01T00:00:00Z"),
                EVERYONE - {"ann"},
            ),
            "updated_at exists": (field("updated_at", "exists", True), EVERYONE),
        },
    )


@pytest.mark.usefixtures("world")
def test_junctions(project: ApiProject) -> None:
    paris = field("city", "eq", "Paris")
    check(
        project,
        {
            "and [] is everyone": ({"and": []}, EVERYONE),
            "not and [] is nobody": ({"not": {"and": []}}, set()),
            "and": (
                {"and": [field("email_domain", "eq", "example.com"), {"not": paris}]},
                {"cid"},
            ),
            "or": ({"or": [paris, field("pole2", "lt", 0)]}, {"ann", "cid"}),
            "nested": (
                {"or": [{"and": [paris, {"not": {"not": paris}}]}, {"not": {"or": [paris]}}]},
                EVERYONE,
            ),
            "double negation": ({"not": {"not": paris}}, {"ann"}),
        },
    )


def test_subscriptions(project: ApiProject, world: World) -> None:
    check(
        project,
        {
            "subscribed (no row counts)": (
                {"subscribed": world.category},
                {"ann", "cid", "dan", "eve"},
            ),
            "not subscribed": ({"not": {"subscribed": world.category}}, {"bob"}),
            "nobody opted out": ({"subscribed": world.empty_category}, EVERYONE),
        },
    )


@pytest.mark.usefixtures("world")
def test_activity(project: ApiProject) -> None:
    check(
        project,
        {
            "received any": ({"received": {}}, {"ann", "bob"}),
            "received campaign recently": (
                {"received": {"campaign": 11, "within_days": 30}},
                {"ann"},
            ),
            "opened any": ({"opened": {}}, {"ann", "cid"}),
            "opened recently": ({"opened": {"within_days": 30}}, {"ann"}),
            "opened campaign": ({"opened": {"campaign": 12}}, {"cid"}),
            "clicked any": ({"clicked": {}}, {"bob"}),
            "clicked other campaign": ({"clicked": {"campaign": 11}}, set()),
            "unknown campaign": ({"opened": {"campaign": 999999}}, set()),
            "not opened": ({"not": {"opened": {}}}, {"bob", "dan", "eve"}),
        },
    )


@pytest.mark.usefixtures("world")
def test_events(project: ApiProject) -> None:
    login = {"event": "login"}
    check(
        project,
        {
            "at least once": (login, {"ann", "bob"}),
            "within days": ({**login, "within_days": 7}, {"ann"}),
            "ge within days": ({**login, "within_days": 7, "op": "ge", "value": 2}, {"ann"}),
            "ge": ({**login, "op": "ge", "value": 3}, {"ann"}),
            "gt": ({**login, "op": "gt", "value": 3}, set()),
            "eq": ({**login, "op": "eq", "value": 1}, {"bob"}),
            "le": ({**login, "op": "le", "value": 1}, {"bob", "cid", "dan", "eve"}),
            "ne": ({**login, "op": "ne", "value": 3}, {"bob", "cid", "dan", "eve"}),
            "never": ({**login, "op": "lt", "value": 1}, {"cid", "dan", "eve"}),
            "none recently": (
                {**login, "within_days": 7, "op": "eq", "value": 0},
                {"bob", "cid", "dan", "eve"},
            ),
            "between": ({**login, "op": "between", "value": [1, 2]}, {"bob"}),
            "other name": ({"event": "purchase"}, {"cid"}),
        },
    )


@pytest.mark.usefixtures("world")
def test_the_other_project_sees_only_its_own(other_project: ApiProject) -> None:
    check(
        other_project,
        {
            "everyone": ({"and": []}, {"intruder"}),
            "ann's attributes": (field("email_domain", "eq", "example.com"), {"intruder"}),
            "opened": ({"opened": {"campaign": 11}}, {"intruder"}),
            "clicked": ({"clicked": {}}, {"intruder"}),
            "event": ({"event": "login", "within_days": 7, "op": "eq", "value": 1}, {"intruder"}),
        },
    )
