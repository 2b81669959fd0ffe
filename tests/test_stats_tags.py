"""Seed 004's statistics by tag over real HTTP: `GET /v1/stats/{tag}?access_token=...`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.test_stats_messages import (  # the served app and its event store
    StatsBackend,
    Tenant,
    event,
    make_tenant,
    stats_backend,
    tenant,
)

__all__ = ["make_tenant", "stats_backend", "tenant"]  # fixtures shared with seed 001's tests

T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)


def tag_stats(client: httpx.Client, tag: str, token: str | None) -> httpx.Response:
    params = {} if token is None else {"access_token": token}
    return client.get(f"/v1/stats/{tag}", params=params)


def test_a_tag_adds_up_every_message_that_carries_it(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    pid = tenant.creds.id
    at = T0.__add__
    spring = ["spring", "promo"]
    rows = [
        # Email 1, tagged spring: two recipients delivered, one refused; queued at build
        # (not yet sent: neither a message nor activity).
        event(pid, 1, "queued", at(timedelta(minutes=-5)), "a@example.com", tags=spring),
        event(pid, 1, "delivered", at(timedelta()), "a@example.com", tags=spring),
        event(pid, 1, "delivered", at(timedelta(minutes=1)), "b@example.com", tags=spring),
        event(pid, 1, "permfail", at(timedelta(minutes=2)), "c@example.com", tags=spring),
        event(pid, 1, "open", at(timedelta(hours=1)), "a@example.com", tags=spring),
        event(pid, 1, "open", at(timedelta(hours=2)), "a@example.com", tags=spring),
        event(pid, 1, "click", at(timedelta(hours=3)), "a@example.com", tags=spring),
        # An Apple Mail Privacy Protection open: not a person's, and not activity.
        event(
            pid, 1, "open", at(timedelta(days=3)), "b@example.com", tags=spring, machine="apple_mpp"
        ),
        # Email 2, tagged spring only: one delivery, opened once.
        event(pid, 2, "delivered", at(timedelta(days=1)), "d@example.com", tags=["spring"]),
        event(pid, 2, "open", at(timedelta(days=1, hours=5)), "d@example.com", tags=["spring"]),
        # Email 3, another tag: none of it counts.
        event(pid, 3, "delivered", at(timedelta(days=-1)), "e@example.com", tags=["autumn"]),
        event(pid, 3, "open", at(timedelta(days=9)), "e@example.com", tags=["autumn"]),
    ]
    # Another project's messages with the same tag stay its own.
    other = make_tenant()  # its message ids are other ids than this project's
    rows.append(
        event(other.creds.id, 4, "delivered", at(timedelta(days=-9)), "f@example.com", tags=spring)
    )
    rows.append(
        event(other.creds.id, 4, "open", at(timedelta(days=20)), "f@example.com", tags=spring)
    )
    stats_backend.store.append(rows)

    answer = tag_stats(tenant.rpc, "spring", tenant.creds.access_token)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert list(body) == ["first", "last", "opens", "clicks", "messages", "deliveries"]
    assert body == {
        "first": "2024-05-06 08:00:00",
        "last": "2024-05-07 13:00:00",
        "opens": 3,
        "clicks": 1,
        "messages": 4,
        "deliveries": 3,
    }
    promo = tag_stats(tenant.rpc, "promo", tenant.creds.access_token).json()
    assert promo == {
        "first": "2024-05-06 08:00:00",
        "last": "2024-05-06 11:00:00",
        "opens": 2,
        "clicks": 1,
        "messages": 3,
        "deliveries": 2,
    }
    # Tags match exactly.
    assert tag_stats(tenant.rpc, "Spring", tenant.creds.access_token).json()["messages"] == 0
    theirs = tag_stats(other.rpc, "spring", other.creds.access_token).json()
    assert theirs == {
        "first": "2024-04-27 08:00:00",
        "last": "2024-05-26 08:00:00",
        "opens": 1,
        "clicks": 0,
        "messages": 1,
        "deliveries": 1,
    }


def test_a_tag_no_message_carries_is_zeros(tenant: Tenant) -> None:
    answer = tag_stats(tenant.rpc, "never-used", tenant.creds.access_token)
    assert answer.status_code == 200
    assert answer.json() == {
        "first": None,
        "last": None,
        "opens": 0,
        "clicks": 0,
        "messages": 0,
        "deliveries": 0,
    }


def test_the_access_token_is_required_and_checked(tenant: Tenant, make_tenant: Any) -> None:
    for token, message in (
        (None, "access_token is required"),
        ("", "access_token is required"),
        ("not-a-token", "invalid access_token"),
        (tenant.creds.api_key, "invalid access_token"),  # the JSON-RPC key is another secret
    ):
        answer = tag_stats(tenant.rpc, "spring", token)
        assert answer.status_code == 401, token
        assert answer.json() == {"error": message}
    fenced = make_tenant(allowed_ips=("192.0.2.0/24",))
    answer = tag_stats(fenced.rpc, "spring", fenced.creds.access_token)
    assert answer.status_code == 403
    assert answer.json() == {"error": "API client IP not allowed"}
