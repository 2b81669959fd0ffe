"""`POST /api/v1/campaigns/{id}/test` over real HTTP and real SMTP: a campaign's email to
a few addresses now, with a chosen profile's data, counted apart (post type T).

A test never touches the campaign's own statistics, its tags' or the chosen profile,
and never quarantines an address (its email is a transactional copy).
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import func, select

from envoi.campaigns.models import Campaign
from envoi.outbox.models import OutboxEvent
from envoi.spool.models import SpoolEntry
from envoi.testing.smtppeer import SmtpPeer
from tests.delivery_support import (
    campaign_state,
    create_email,
    create_smtp_router,
    csv_of,
    data_url,
    running_worker,
    states,
    wait_until,
)
from tests.test_stats_messages import (  # a served app with its event store and projector
    StatsBackend,
    Tenant,
    make_tenant,
    stats_backend,
    tenant,
)

__all__ = ["make_tenant", "stats_backend", "tenant"]


def draft_campaign(api: httpx.Client, email_id: int, **extra: Any) -> dict[str, Any]:
    body = {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "U",
        "source_uploaded_csv": data_url(csv_of(["real@example.com"])),
        "tags": "spring",
        **extra,
    }
    created = api.post("/campaigns", json=body)
    assert created.status_code == 201, created.text
    campaign: dict[str, Any] = created.json()
    return campaign


def report(api: httpx.Client, fields: str, **filters: str) -> list[dict[str, Any]]:
    """The report builder's groups (its last object, the totals, left out)."""
    answer = api.get("/stats", params={"fields": fields, **filters})
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["result"][:-1]
    return rows


def projected(stats_backend: StatsBackend) -> bool:
    with stats_backend.sessions() as session:
        last = session.scalar(select(func.max(OutboxEvent.id))) or 0
    return stats_backend.store.cursor() >= last


def test_a_test_send_shows_the_profile_and_counts_apart(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    api = tenant.api
    assert api.post("/fields", json={"name": "first_name", "type": "String"}).status_code == 201
    user = {"uid": "u-ann", "email": "ann@example.com", "fields": {"first_name": "Ann"}}
    assert api.post("/users", json=user).status_code == 201
    email_id = create_email(api)  # "Hi {{ first_name }}", "... from {{ city }}"
    campaign = draft_campaign(api, email_id)
    with SmtpPeer() as peer:
        create_smtp_router(api, peer)
        answer = api.post(
            f"/campaigns/{campaign['id']}/test",
            json={
                "emails": ["QA@example.com", "unknown-qa@example.com", "qa@example.com"],
                "profile": {"uid": "u-ann"},
                "params": {"city": "Oslo"},
            },
        )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert body["campaign_id"] == campaign["id"]
        sends = body["sends"]
        assert [s["email"] for s in sends] == ["qa@example.com", "unknown-qa@example.com"]
        assert {(s["state"], s["post_type"], s["profile_id"]) for s in sends} == {
            ("queued", "T", None)
        }
        assert all(s["tags"] == [] for s in sends)
        with running_worker(stats_backend.settings, stats_backend.sessions):
            [received] = peer.wait_for(1, timeout=30)
            wait_until(
                lambda: api.get(f"/send/{sends[1]['id']}").json()["state"] == "permfail",
                what="the bounce",
            )
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert received.recipients == ("qa@example.com",)
    assert message["Subject"] == "Hi Ann"  # the chosen profile's data
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    assert "Hello Ann from Oslo!" in html.get_content()
    assert message["X-Envoi-Tags"] is None  # not the campaign's tags
    # The campaign is untouched: still a draft, and its tags count nothing.
    assert api.get(f"/campaigns/{campaign['id']}").json()["state"] == "draft"
    # A hard bounce of a test quarantines nothing.
    assert api.get("/quarantine", params={"address": "unknown-qa@example.com"}).json() == []

    wait_until(lambda: projected(stats_backend), what="the projection")
    by_type = report(api, "post_type,sum_sended,sum_delivered")
    assert by_type == [{"post_type": "T", "sum_sended": 2, "sum_delivered": 1}]
    test_post = sends[0]["post"]
    assert report(api, "post,sum_sended", post=f"S_{campaign['id']}") == []
    assert report(api, "post,sum_sended", post=test_post) == [{"post": test_post, "sum_sended": 2}]
    spring = tenant.rpc.get("/v1/stats/spring", params={"access_token": tenant.creds.access_token})
    assert spring.json()["messages"] == 0
    # The profile whose data was shown got nothing, in the rows or their events.
    with stats_backend.sessions() as session:
        rows = session.scalars(select(SpoolEntry).where(SpoolEntry.campaign_id != campaign["id"]))
        assert {row.profile_id for row in rows if row.project_id == tenant.creds.id} == {None}
    # Sent again later: the same T stream (one post for the campaign's tests).
    again = api.post(f"/campaigns/{campaign['id']}/test", json={"emails": ["qa2@example.com"]})
    assert again.status_code == 201, again.text
    assert again.json()["sends"][0]["post"] == test_post


def test_a_test_send_does_not_count_towards_the_frequency_cap(
    stats_backend: StatsBackend, tenant: Tenant
) -> None:
    api = tenant.api
    email_id = create_email(api)
    campaign = draft_campaign(api, email_id, config={"min_send_interval": 3600})
    with SmtpPeer() as peer:
        create_smtp_router(api, peer)
        tested = api.post(
            f"/campaigns/{campaign['id']}/test", json={"emails": ["real@example.com"]}
        )
        assert tested.status_code == 201, tested.text
        send_id = tested.json()["sends"][0]["id"]
        with running_worker(stats_backend.settings, stats_backend.sessions):
            wait_until(lambda: api.get(f"/send/{send_id}").json()["state"] == "delivered")
            assert api.post(f"/campaigns/{campaign['id']}/start").status_code == 200
            wait_until(lambda: campaign_state(api, campaign["id"]) == "finished")
    # The campaign's recipient was tested a moment ago, and still gets the campaign.
    assert states(stats_backend.sessions, campaign["id"]) == {"real@example.com": "delivered"}


def count_rows(stats_backend: StatsBackend, project_id: int) -> dict[str, int]:
    with stats_backend.sessions() as session:
        return {
            model.__tablename__: session.scalar(
                select(func.count()).select_from(model).where(model.project_id == project_id)
            )
            or 0
            for model in (SpoolEntry, OutboxEvent, Campaign)
        }


def test_a_bad_test_request_is_refused_and_writes_nothing(
    stats_backend: StatsBackend, tenant: Tenant, make_tenant: Any
) -> None:
    api = tenant.api
    email_id = create_email(api)
    campaign_id = draft_campaign(api, email_id)["id"]
    other = make_tenant()
    foreign_profile = other.api.post("/users", json={"uid": "x"})
    assert foreign_profile.status_code == 201, foreign_profile.text
    foreign_id = other.api.get("/users", params={"uid": "x"}).json()["id"]
    path = f"/campaigns/{campaign_id}/test"
    before = count_rows(stats_backend, tenant.creds.id)
    cases: list[tuple[str, dict[str, Any], int, Any]] = [
        (path, {"emails": []}, 422, ["body", "emails"]),
        (path, {"emails": [f"a{i}@example.com" for i in range(11)]}, 422, ["body", "emails"]),
        (path, {"emails": ["a@example.com", "not an address"]}, 422, ["body", "emails", 1]),
        (path, {"emails": ["a@example.com"], "message_id": email_id + 1000}, 422, None),
        (path, {"emails": ["a@example.com"], "profile": {"uid": "nobody"}}, 404, None),
        (path, {"emails": ["a@example.com"], "profile": foreign_id}, 422, ["body", "profile"]),
        (path, {"emails": ["a@example.com"], "profile": {}}, 422, ["body", "profile"]),
        (path, {"emails": ["a@example.com"], "bcc": "x"}, 422, ["body", "bcc"]),
        # Another kind's path, another project's campaign: 404 like any unknown id.
        (f"/ab-campaigns/{campaign_id}/test", {"emails": ["a@example.com"]}, 404, None),
        (path, {"emails": ["a@example.com"]}, 404, "other"),
    ]
    for where, body, status, loc in cases:
        client = other.api if loc == "other" else api
        answer = client.post(where, json=body)
        assert answer.status_code == status, (body, answer.text)
        if isinstance(loc, list):
            assert answer.json()["detail"][0]["loc"] == loc, answer.text
    assert count_rows(stats_backend, tenant.creds.id) == before
