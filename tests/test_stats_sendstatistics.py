"""Seed 003's SendStatistics over real HTTP: the list of mailings and one mailing's
`common`, `open_time`, `click_statistic`, `domain_statistic` and `errors`, the
`fields` parameter in its three spellings, every error in its shape, isolation, the IP
allowlist, and a campaign really sent and tracked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.delivery_support import (
    campaign_state,
    create_email,
    running_worker,
    start_campaign,
    wait_until,
)
from tests.test_feedback_flow import IPHONE_MAIL
from tests.test_stats_messages import (  # the served app and its event store
    StatsBackend,
    Tenant,
    _tracked,
    make_tenant,
    stats_backend,
    tenant,
)
from tests.test_stats_spooler import (
    T0,
    URL_A,
    URL_B,
    campaign_events,
    create_campaign,
    documented,
    fence,
    without_event_store,
)

__all__ = ["make_tenant", "stats_backend", "tenant"]  # fixtures shared with seed 001's tests

PAGE = "api-sendstatistics.md"
EVERY_FIELD = ["id", "common", "open_time", "click_statistic", "domain_statistic", "errors"]
FIELDS_ERROR = {"code": 20620, "message": "Invalid fields. Wrong parameters of string fields"}
NOT_FOUND = {"code": 404, "message": "Not found"}


def hour(at: datetime) -> str:
    return str(int(at.replace(minute=0).timestamp()))


# `campaign_events`: delivered from T0 (10:20 UTC), so the two days run from 10:00.
# Ann opens at 10:50 and 12:20, Eve the next day at 10:20 and three days later (out of
# the two days); Bob's copy is opened by Apple's proxy only.
OPEN_TIME = {
    hour(T0): 1,
    hour(T0 + timedelta(hours=2)): 1,
    hour(T0 + timedelta(days=1)): 1,
}
COMMON = {
    "count": 7,  # five queued, one blocked, one quarantined
    "delivered": 3,  # Ann, Bob, Eve
    "bounce": 2,  # Cyd refused, Eve's mailbox bounced later
    "opened": 4,  # by people: Ann twice, Eve twice
    "clicked": 3,  # by people: Ann twice on A, Eve on B (not the scanner)
    "spam": 1,
    "unsubs": 1,
}
STATISTICS: dict[str, Any] = {
    "common": COMMON,
    "open_time": OPEN_TIME,
    "click_statistic": {URL_A: 2, URL_B: 1},
    "domain_statistic": {
        "example.com": {"delivered": 1, "bounce": 1},
        "gmail.com": {"delivered": 2, "bounce": 0},
        "hotmail.fr": {"delivered": 0, "bounce": 1},
    },
    # Bob's two deferrals (53), Cyd's refusal (11), Dan's deferral (46), Eve's bounce (15).
    "errors": {"11": 1, "15": 1, "46": 1, "53": 2},
}
EMPTY = {
    "common": dict.fromkeys(COMMON, 0),
    "open_time": [],
    "click_statistic": [],
    "domain_statistic": [],
    "errors": [],
}


def bearer(tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.creds.api_key}"}


def view(
    tenant: Tenant, mailing: Any, params: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return tenant.rpc.get(
        f"/mailer/sendstatistics/{mailing}",
        params=params,
        headers=bearer(tenant) if headers is None else headers,
    )


def statistics(tenant: Tenant, mailing: Any, params: Any = None) -> Any:
    answer = view(tenant, mailing, params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return answer.json()


def every_field(mailing_id: int, values: dict[str, Any]) -> dict[str, Any]:
    return {"id": mailing_id} | values


def test_one_mailing_field_by_field(stats_backend: StatsBackend, tenant: Tenant) -> None:
    campaign = create_campaign(tenant)
    mailing = campaign["id"]
    stats_backend.store.append(campaign_events(tenant.creds.id, campaign))

    answer = statistics(
        tenant,
        mailing,
        {"fields": '["id","common","open_time","click_statistic","domain_statistic","errors"]'},
    )
    assert answer == every_field(mailing, STATISTICS)
    assert list(answer) == EVERY_FIELD  # the seed's order
    assert answer | {"id": 12} in documented(PAGE)  # the page's example is this answer
    assert list(answer["common"]) == list(COMMON)
    # Each field alone.
    for field in EVERY_FIELD[1:]:
        assert statistics(tenant, mailing, {"fields": f'["{field}"]'}) == {field: STATISTICS[field]}
    # The default is ["id"].
    assert statistics(tenant, mailing) == {"id": mailing}


def test_the_three_spellings_of_fields(stats_backend: StatsBackend, tenant: Tenant) -> None:
    campaign = create_campaign(tenant)
    mailing = campaign["id"]
    stats_backend.store.append(campaign_events(tenant.creds.id, campaign))
    expected = {"id": mailing, "common": STATISTICS["common"], "errors": STATISTICS["errors"]}
    spellings: list[Any] = [
        {"fields": '["errors", "id", "common"]'},  # a JSON array, in any order
        {"fields": "errors,id,common"},  # comma-separated
        {"fields": "errors, id ,common"},
        [("fields[]", "errors"), ("fields[]", "id"), ("fields[]", "common")],  # PHP's array
        [("fields[0]", "id"), ("fields[1]", "common"), ("fields[2]", "errors")],
        [("fields", "errors"), ("fields", "id,common")],  # repeated
        {"fields": '["id","common","errors","common"]'},  # twice is once
    ]
    for params in spellings:
        assert statistics(tenant, mailing, params) == expected, params
    # Answered in the seed's order whatever the request's order.
    assert list(statistics(tenant, mailing, spellings[0])) == ["id", "common", "errors"]


def test_empty_mappings_are_php_empty_arrays(tenant: Tenant) -> None:
    mailing = create_campaign(tenant)["id"]
    answer = statistics(tenant, mailing, {"fields": ",".join(EVERY_FIELD)})
    assert answer == every_field(mailing, EMPTY)
    assert answer | {"id": 15} in documented(PAGE)


def test_the_list_of_mailings(tenant: Tenant, make_tenant: Any) -> None:
    assert list_mailings(tenant).json() == {"statistics": []}
    first = create_campaign(tenant)
    untitled = create_campaign(tenant, subject=None)
    third = create_campaign(tenant, subject="Spring sale", subject_fr="Soldes")
    make_tenant_campaign = create_campaign(make_tenant())  # another project's
    expected = {
        "statistics": [
            {"id": first["id"], "letter_title": "Hi {{ first_name }}"},
            {"id": untitled["id"], "letter_title": ""},
            {"id": third["id"], "letter_title": "Spring sale"},
        ]
    }
    answer = list_mailings(tenant)
    assert answer.status_code == 200
    assert answer.json() == expected
    assert list_mailings(tenant, {"sort_field": "id"}).json() == expected
    ids = iter((12, 13, 14))
    page = {"statistics": [m | {"id": next(ids)} for m in answer.json()["statistics"]]}
    assert page in documented(PAGE)
    assert make_tenant_campaign["id"] not in [m["id"] for m in answer.json()["statistics"]]
    for wrong in ("title", "-id", "", "ID"):
        refused = list_mailings(tenant, {"sort_field": wrong})
        assert refused.status_code == 400, wrong
        assert refused.json() == {"code": 400, "message": "Invalid sort_field. Allowed values: id"}


def list_mailings(
    tenant: Tenant, params: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return tenant.rpc.get(
        "/mailer/sendstatistics",
        params=params,
        headers=bearer(tenant) if headers is None else headers,
    )


BAD_FIELDS = (
    "",
    "[]",
    '["id", "nope"]',
    '["id",',
    '{"id": 1}',
    "[1]",
    '"id"',
    "id,,common",
    "id,title",
    "ID",
    "common;errors",
)


def test_bad_fields_are_the_seeds_error(tenant: Tenant) -> None:
    mailing = create_campaign(tenant)["id"]
    for fields in BAD_FIELDS:
        answer = view(tenant, mailing, {"fields": fields})
        assert answer.status_code == 400, fields
        assert answer.json() == FIELDS_ERROR, fields
        # Checked before the mailing: the same for an id that does not exist.
        assert view(tenant, 10**9, {"fields": fields}).json() == FIELDS_ERROR
    # One bad value among good ones spoils the request.
    answer = view(tenant, mailing, [("fields[]", "id"), ("fields[]", "title")])
    assert answer.json() == FIELDS_ERROR


def test_unknown_mailings_and_other_projects_mailings_are_not_found(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    campaign = create_campaign(tenant)
    stats_backend.store.append(campaign_events(tenant.creds.id, campaign))
    other = make_tenant()
    # Events filed under the other project with this campaign's id do not leak in.
    stats_backend.store.append(campaign_events(other.creds.id, campaign))
    everything = {"fields": ",".join(EVERY_FIELD)}
    assert statistics(tenant, campaign["id"], everything) == every_field(campaign["id"], STATISTICS)
    for mailing in (campaign["id"], campaign["id"] + 10_000, 0, -1, "abc", 2**31, "1e3", "٣"):
        answer = view(other, mailing, everything)
        assert answer.status_code == 404, mailing
        assert answer.json() == NOT_FOUND
    theirs = create_campaign(other)
    assert statistics(other, theirs["id"], everything) == every_field(theirs["id"], EMPTY)


def test_the_api_key_is_a_bearer_token(stats_backend: StatsBackend, tenant: Tenant) -> None:
    mailing = create_campaign(tenant)["id"]
    required = {"code": 401, "message": "API key is required: Authorization: Bearer KEY"}
    invalid = {"code": 401, "message": "Invalid API key"}
    key = tenant.creds.api_key
    for headers, body in (
        ({}, required),
        ({"Authorization": "Bearer"}, required),
        ({"Authorization": f"Basic {key}"}, required),
        ({"Authorization": key}, required),
        ({"Authorization": "Bearer not-a-key"}, invalid),
        ({"Authorization": f"Bearer {tenant.creds.access_token}"}, invalid),  # another secret
    ):
        for answer in (
            list_mailings(tenant, headers=headers),
            view(tenant, mailing, None, headers),
        ):
            assert answer.status_code == 401, headers
            assert answer.json() == body
            assert answer.headers["www-authenticate"] == 'Bearer realm="envoi"'
    # The scheme is case-insensitive.
    assert view(tenant, mailing, None, {"Authorization": f"bearer {key}"}).status_code == 200

    fence(stats_backend, tenant.creds.id, ["10.0.0.0/8"])
    not_allowed = {"code": 403, "message": "API client IP not allowed"}
    for answer in (list_mailings(tenant), view(tenant, mailing), view(tenant, mailing, "fields=x")):
        assert answer.status_code == 403
        assert answer.json() == not_allowed
    fence(stats_backend, tenant.creds.id, ["127.0.0.1/32"])
    assert statistics(tenant, mailing) == {"id": mailing}


def test_without_its_event_store_the_server_says_so(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    mailing = create_campaign(tenant)["id"]
    with without_event_store(stats_backend):
        answer = view(tenant, mailing, {"fields": "id,common"})
        assert answer.status_code == 503
        assert answer.json() == {"code": 503, "message": "Statistics unavailable"}
        # The id and the list come from the OLTP store.
        assert statistics(tenant, mailing) == {"id": mailing}
        assert list_mailings(tenant).status_code == 200


def test_a_campaign_sent_tracked_and_projected(stats_backend: StatsBackend, tenant: Tenant) -> None:
    addresses = ["ann@example.com", "bob@example.org", "cyd@example.com"]
    email_id = create_email(tenant.api)
    with running_worker(stats_backend.settings, stats_backend.sessions):
        campaign = start_campaign(tenant.api, email_id, addresses)
        wait_until(lambda: campaign_state(tenant.api, campaign["id"]) == "finished", timeout=60)
    captured = {m["recipient"]: m["raw"] for m in tenant.api.get("/captured").json()}
    with httpx.Client(timeout=30, follow_redirects=False) as tracking:
        # Ann reads it twice in iPhone Mail; Bob's copy is fetched by a machine; Ann's
        # click a second after delivery is a link scanner's, Cyd's later one a person's.
        ann = _tracked(stats_backend.base_url, captured["ann@example.com"])
        for _ in range(2):
            assert tracking.get(ann["o"][0], headers={"User-Agent": IPHONE_MAIL}).status_code == 200
        bob = _tracked(stats_backend.base_url, captured["bob@example.org"])
        assert tracking.get(bob["o"][0], headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
        assert tracking.get(ann["c"][0], headers={"User-Agent": IPHONE_MAIL}).status_code == 302

    mailing = campaign["id"]
    everything = {"fields": ",".join(EVERY_FIELD)}
    common = {
        "count": 3,
        "delivered": 3,
        "bounce": 0,
        "opened": 2,
        "clicked": 0,
        "spam": 0,
        "unsubs": 0,
    }
    # The server's projector moves the outbox into the event store in the background.
    wait_until(
        lambda: statistics(tenant, mailing, {"fields": "common"}) == {"common": common},
        timeout=30,
        what="the projection",
        show=lambda: statistics(tenant, mailing, {"fields": "common"}),
    )
    answer = statistics(tenant, mailing, everything)
    # Both of Ann's opens fall in the hour the campaign was sent, or the next one.
    open_time = answer.pop("open_time")
    assert isinstance(open_time, dict)
    assert sum(open_time.values()) == 2
    sent_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hours = {sent_hour - timedelta(hours=1), sent_hour}
    assert {int(key) for key in open_time} <= {int(h.timestamp()) for h in hours}
    assert answer == {
        "id": mailing,
        "common": common,
        "click_statistic": [],
        "domain_statistic": {
            "example.com": {"delivered": 2, "bounce": 0},
            "example.org": {"delivered": 1, "bounce": 0},
        },
        "errors": [],
    }
    assert list_mailings(tenant).json() == {
        "statistics": [{"id": mailing, "letter_title": "Hi {{ first_name }}"}]
    }
