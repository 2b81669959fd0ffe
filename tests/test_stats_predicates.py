"""The query layer's boolean filter (`StatsQuery.where`) over a real DuckDB store: how
the plan resolves it (and where its errors point), its SQL, `not` as the exact
complement of what it holds, and `offset` for pages."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from envoi.core.errors import Invalid
from envoi.eventstore.duckdb import DuckDBStore
from envoi.statistics.plan import MAX_TREE_DEPTH, MAX_TREE_NODES, Branch, Condition, plan
from envoi.statistics.predicates import Parameters, timed, tree_sql
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery, Where

T0 = datetime(2024, 3, 4, 22, 30, tzinfo=UTC).replace(tzinfo=None)  # naive UTC, as stored
_ids = itertools.count(1)


def row(kind: str, minutes: int, **values: Any) -> dict[str, Any]:
    return {
        "id": next(_ids),
        "project_id": 1,
        "kind": kind,
        "occurred_at": T0 + timedelta(minutes=minutes),
        "post": "S_1",
        "recipient": f"r{minutes}@example.com",
        "tags": [],
    } | values


ROWS = [
    row("delivered", 0, domain="a.test", smtp_code=250),
    row("delivered", 10, domain="b.test", smtp_code=250),
    row("delivered", 20, domain=None),
    row("permfail", 30, domain="a.test", smtp_code=550, hard=True),
    row("permfail", 40, domain="b.test", smtp_code=421, hard=False),
    row("open", 50, domain="a.test", machine="apple_mpp"),
    row("open", 60, domain="a.test"),
    row("click", 70, domain="b.test", link=0),
    row("click", 80, domain=None, link=None),
    row("click", 90, domain="b.test", link=2),
]
MEASURES = ("delivered", "permfail", "opened_all", "clicked_all")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatisticsEngine]:
    store = DuckDBStore(tmp_path_factory.mktemp("predicates") / "events.duckdb")
    store.append(ROWS)
    yield StatisticsEngine(store)
    store.close()


def where(op: str, *items: Filter | Where) -> Where:
    return Where(op, items)


def f(field: str, op: str, *values: Any) -> Filter:
    return Filter(field, op, values)


def total(engine: StatisticsEngine, tree: Where | None, zone: str = "UTC") -> int:
    result = engine.run(StatsQuery(project_id=1, measures=MEASURES, where=tree, timezone=zone))
    return sum(result.totals.values())


TREES = [
    where("and", f("domain", "eq", "a.test")),
    where("and", f("domain", "ne", "a.test")),
    where("and", f("domain", "eq", None)),
    where("and", f("link", "ge", 1)),
    where("or", f("smtp_code", "in", 250, 550), f("link", "le", 0)),
    where("or", where("and", f("hard", "eq", False)), f("domain", "like", "b%")),
    where("or", f("hour", "eq", 4), f("date", "eq", "2024-03-04")),
    where("and", where("not", f("human", "eq", False)), f("kind", "ne", "delivered")),
]


@pytest.mark.parametrize("tree", TREES, ids=[str(i) for i in range(len(TREES))])
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_not_is_the_exact_complement(engine: StatisticsEngine, tree: Where, zone: str) -> None:
    kept, everything = total(engine, tree, zone), total(engine, None)
    assert 0 < kept < everything
    assert total(engine, where("not", tree), zone) == everything - kept
    assert total(engine, where("not", where("not", tree)), zone) == kept


def test_and_or_of_nothing(engine: StatisticsEngine) -> None:
    assert total(engine, where("and")) == total(engine, None) == len(ROWS)
    assert total(engine, where("not", where("and"))) == 0


def test_the_tree_reads_the_zones_clock(engine: StatisticsEngine) -> None:
    # From 22:30 UTC, every 10 minutes: 04:00 to 05:30 the next day in Kolkata (+05:30).
    late = where("or", f("hour", "ge", 23), f("kind", "eq", "nothing"))
    assert total(engine, late) == 6
    assert total(engine, late, "Asia/Kolkata") == 0
    early = where("or", f("hour", "lt", 5), f("kind", "eq", "nothing"))
    assert total(engine, early, "Asia/Kolkata") == 6


def test_offset_skips_groups(engine: StatisticsEngine) -> None:
    def page(offset: int) -> list[Any]:
        result = engine.run(
            StatsQuery(
                project_id=1,
                group_by=("recipient",),
                measures=("clicked_all",),
                order_by=("-clicked_all",),
                limit=3,
                offset=offset,
            )
        )
        return [r["recipient"] for r in result.rows]

    whole = [
        r["recipient"]
        for r in engine.run(
            StatsQuery(
                project_id=1,
                group_by=("recipient",),
                measures=("clicked_all",),
                order_by=("-clicked_all",),
            )
        ).rows
    ]
    assert page(0) + page(3) + page(6) + page(9) == whole
    assert page(10) == []


def test_the_plan_resolves_the_tree_and_hoists_its_top_conditions() -> None:
    tree = where(
        "and",
        f("domain", "eq", "a.test"),
        where("and", f("link", "in", "1", 2)),
        where("or", f("hour", "eq", "3"), where("not", f("machine", "eq", None))),
    )
    planned = plan(StatsQuery(project_id=1, measures=("delivered",), where=tree))
    assert [(c.dimension.name, c.op, c.values) for c in planned.conditions] == [
        ("domain", "eq", ("a.test",)),
        ("link", "in", (1, 2)),
    ]
    assert isinstance(planned.tree, Branch)
    assert planned.tree.op == "or"
    assert timed(planned.tree)
    assert not timed(Branch("and", planned.conditions))
    parameters = Parameters()
    assert tree_sql(planned.tree, parameters, "LOCAL") == (
        "((hour(LOCAL) = $1) OR (NOT coalesce((machine IS NULL), false)))"
    )
    assert parameters.values == [3]
    only = plan(StatsQuery(project_id=1, measures=("delivered",), where=where("and")))
    assert only.tree is None
    assert only.conditions == ()
    lone = plan(StatsQuery(project_id=1, measures=("sent",), where=where("not", tree)))
    assert isinstance(lone.tree, Branch)
    assert lone.tree.op == "not"
    assert isinstance(lone.tree.items[0], Branch)
    assert isinstance(lone.tree.items[0].items[0], Condition)


def deep(levels: int) -> Where:
    tree = where("and", f("domain", "eq", "x"))
    for _ in range(levels - 1):
        tree = where("not", tree)
    return tree


@pytest.mark.parametrize(
    ("tree", "loc", "message"),
    [
        (
            where("and", f("domain", "eq", "a"), where("or", f("link", "eq", "x"))),
            ["where", "and", 1, "or", 0, "values", 0],
            "'x' is not a valid link (an integer)",
        ),
        (where("not", f("nope", "eq", 1)), ["where", "not", "field"], "unknown dimension 'nope'"),
        (
            where("and", f("smtp_code", "like", "5%")),
            ["where", "and", 0, "op"],
            "like applies to text, not to smtp_code",
        ),
        (where("and", f("domain", "eq")), ["where", "and", 0, "values"], "eq takes one value"),
        (where("xor"), ["where"], "unknown branch 'xor': one of and, or, not"),
        (where("not"), ["where", "not"], "not takes one filter"),
        (where("or"), ["where", "or"], "or takes at least one filter"),
        (
            deep(MAX_TREE_DEPTH + 1),
            ["where", *["not"] * MAX_TREE_DEPTH],
            f"filters nest at most {MAX_TREE_DEPTH} levels deep",
        ),
        (
            where("or", *[f("domain", "eq", "x")] * MAX_TREE_NODES),
            ["where", "or", MAX_TREE_NODES - 1],
            f"a filter has at most {MAX_TREE_NODES} nodes",
        ),
    ],
)
def test_errors_point_into_the_tree(tree: Where, loc: list[Any], message: str) -> None:
    with pytest.raises(Invalid) as caught:
        plan(StatsQuery(project_id=1, measures=("delivered",), where=tree))
    assert (caught.value.loc, caught.value.message) == (loc, message)


def test_offset_must_be_a_count() -> None:
    with pytest.raises(Invalid) as caught:
        plan(StatsQuery(project_id=1, measures=("delivered",), offset=-1))
    assert caught.value.loc == ["offset"]
    assert plan(StatsQuery(project_id=1, measures=("delivered",), offset=5)).offset == 5
