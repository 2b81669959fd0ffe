"""Who a campaign's spool skips, and why: every skip reason, the config switches, and
transactional email. Each recipient ends as one spool row and one outbox event."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from envoi.core.identity import IdentityError, normalize_email
from envoi.db.base import utcnow
from envoi.emails.models import Email
from envoi.profiles.models import Profile, Subscription
from envoi.quarantine.models import QuarantineEntry
from envoi.spool import services as spool
from envoi.spool.checks import Policy, check_address
from envoi.spool.models import SpoolEntry
from envoi.spool.services import Result
from tests.campaign_support import make_email
from tests.conftest import ApiProject, Backend
from tests.test_spool import (
    OK,
    build_all,
    outbox,
    quiet,
    record,
    run,
    send,
    set_email,
    spool_rows,
    start,
)

__all__ = ["quiet"]  # the autouse fixture: other tests' campaigns stay out of the way


def verdicts(backend: Backend, campaign_id: int) -> dict[str, tuple[str, str | None]]:
    """recipient (or audience key) → (state, reason), checked against the outbox."""
    rows = spool_rows(backend, campaign_id)
    events = {e.data["send_id"]: e for e in outbox(backend, campaign_id)}
    assert len(events) == len(rows)
    result = {}
    for row in rows:
        event = events[row.id]
        assert event.kind == row.state
        assert event.data.get("reason") == row.reason
        assert event.recipient is not None
        result[event.recipient] = (row.state, row.reason)
    return result


def add_quarantine(backend: Backend, project_id: int, **entries: Any) -> None:
    """`add_quarantine(b, p, address=reason or (reason, expires_at))`."""

    def add(session: Session) -> None:
        for address, value in entries.items():
            reason, expires = value if isinstance(value, tuple) else (value, None)
            session.add(
                QuarantineEntry(
                    project_id=project_id,
                    address=address.replace("_", "@") + ".com",
                    reason=reason,
                    expires_at=expires,
                )
            )

    run(backend, add)


def delivered(backend: Backend, project_id: int, address: str, at: datetime) -> None:
    """A mail delivered to `address` at `at` (a row of an earlier send)."""

    def add(session: Session) -> None:
        session.add(
            SpoolEntry(
                project_id=project_id,
                email_id=1,
                recipient=address,
                domain=address.rpartition("@")[2],
                state="delivered",
                not_before=at,
                updated_at=at,
            )
        )

    run(backend, add)


def category_of(backend: Backend, email_id: int) -> int:
    with backend.sessions() as session:
        category = session.scalar(select(Email.category_id).where(Email.id == email_id))
        assert category is not None
        return category


def profiles(backend: Backend, project_id: int, **values: dict[str, Any]) -> dict[str, int]:
    """`profiles(b, p, ann={"email": ...})` → name → profile id."""

    def add(session: Session) -> dict[str, int]:
        made = {name: Profile(project_id=project_id, fields={}, **v) for name, v in values.items()}
        session.add_all(made.values())
        session.flush()
        return {name: p.id for name, p in made.items()}

    return run(backend, add)


# --- no address, bad address -----------------------------------------------------------------


def test_no_address_and_invalid_address(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    profiles(
        backend,
        project.id,
        quiet={"uid": "u-quiet"},
        broken={"uid": "u-broken", "email": "broken@@example.com"},
    )
    csv = "uid,email\nnobody,\nu-quiet,\nu-broken,\n,ok@example.com\n"
    campaign = start(project, email_id, csv)
    build_all(backend)
    assert verdicts(backend, campaign["id"]) == {
        "uid:nobody": ("blocked", "noaddress"),
        "uid:u-quiet": ("blocked", "noaddress"),
        "broken@@example.com": ("blocked", "invalid"),
        "ok@example.com": ("queued", None),
    }
    rows = spool_rows(backend, campaign["id"])
    assert [(r.recipient, r.profile_id is not None) for r in rows if r.reason == "noaddress"] == [
        (None, False),  # a CSV line naming nobody known
        (None, True),  # a profile without an address
    ]
    [broken] = [r for r in rows if r.reason == "invalid"]
    assert (broken.recipient, broken.domain) == ("broken@@example.com", "example.com")


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.com",
        "Ann.Lee+tag@Example.COM",
        "o'neil@example.co.uk",
        "x@sub-domain.example.museum",
        "ann@exämple.com",
        "ann@xn--exmple-cua.com",
        "user@example.xn--p1ai",
    ],
)
def test_valid_addresses_are_normalised_like_stored_ones(address: str) -> None:
    assert check_address(address) == normalize_email(address)
    assert check_address(f"  {address} ") == normalize_email(address)


@pytest.mark.parametrize(
    "address",
    [
        None,
        "",
        "   ",
        "plain",
        "@example.com",
        "ann@",
        "ann@@example.com",
        "ann @example.com",
        "ann@exa mple.com",
        "a..b@example.com",
        ".a@example.com",
        "a.@example.com",
        "ann@localhost",
        "ann@example.local",
        "ann@example.test",
        "ann@-example.com",
        "ann@example-.com",
        "ann@example.123",
        "ann@1.2.3.4",
        "ann@ex_ample.com",
        "ann@xn--bad.com",
        "ann\x00@example.com",
        "ann@" + "a" * 250 + ".com",
    ],
)
def test_invalid_addresses(address: str | None) -> None:
    assert check_address(address) is None


def test_the_fast_path_agrees_with_email_validator() -> None:
    """The regex shortcut must never accept what email-validator refuses, nor differ in
    the normalised form: checked on random strings near the edge of validity."""
    rng = random.Random(3463)  # noqa: S311 - reproducible test data, not secrets
    pieces = ["a", "B", "z9", ".", "..", "-", "_", "+", "'", "@", "xn--", "é", " ", "1"]
    tlds = ["com", "local", "c0m", "x", "123", "museum", "test", "COM", "-com", "xn--p1ai"]
    for _ in range(4000):
        local = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))
        labels = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 3)))]
        labels += [rng.choice(tlds)] if rng.random() < 0.9 else []
        address = f"{local}@{'.'.join(labels)}"
        try:
            expected: str | None = normalize_email(address)
        except IdentityError:
            expected = None
        assert check_address(address) == expected, address


# --- the quarantine ----------------------------------------------------------------------------


QUARANTINE_CSV = (
    "email\ngone@q.com\nspam@q.com\nunsub@q.com\nbad@q.com\nmanual@q.com\n"
    "later@q.com\nexpired@q.com\nclean@q.com\ntired@q.com\n"
)


def _quarantined(backend: Backend, project: ApiProject, other: ApiProject) -> None:
    past, future = utcnow() - timedelta(hours=1), utcnow() + timedelta(days=1)
    add_quarantine(
        backend,
        project.id,
        gone_q="nonexistent",
        spam_q="spam",
        unsub_q="unsubscribed",
        tired_q="inactive",  # repeated soft bounces (inbound.services)
        bad_q="invalid",
        manual_q="manual",
        later_q=("manual", future),
        expired_q=("manual", past),
    )
    add_quarantine(backend, other.id, clean_q="nonexistent")  # another project's entry


def test_quarantined_addresses(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    _quarantined(backend, project, other_project)
    email_id = make_email(backend, project)
    campaign = start(project, email_id, QUARANTINE_CSV)
    build_all(backend)
    assert verdicts(backend, campaign["id"]) == {
        "gone@q.com": ("quarantined", "nonexistent"),
        "spam@q.com": ("quarantined", "spam"),
        "unsub@q.com": ("quarantined", "unsubscribed"),
        "bad@q.com": ("quarantined", "invalid"),
        "manual@q.com": ("quarantined", "manual"),
        "later@q.com": ("quarantined", "manual"),
        "expired@q.com": ("queued", None),
        "clean@q.com": ("queued", None),
        "tired@q.com": ("quarantined", "inactive"),
    }


def test_not_check_spam_quarantine_lets_complainers_through(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    _quarantined(backend, project, other_project)
    email_id = make_email(backend, project)
    config = {"not_check_spam_quarantine": True}
    campaign = start(project, email_id, QUARANTINE_CSV, config=config)
    build_all(backend)
    got = verdicts(backend, campaign["id"])
    assert got["spam@q.com"] == ("queued", None)
    assert got["unsub@q.com"] == ("quarantined", "unsubscribed")
    assert got["gone@q.com"] == ("quarantined", "nonexistent")


def test_erased_people_are_never_mailed(backend: Backend, project: ApiProject) -> None:
    profiles(backend, project.id, eve={"uid": "eve-1", "email": "eve@example.com"})
    assert project.client.delete("/users", params={"uid": "eve-1"}).status_code == 204
    email_id = make_email(backend, project)
    # By address, and by uid under a new address: either identifier was erased.
    csv = "uid,email\n,eve@example.com\neve-1,eve.new@example.com\n,ok@example.com\n"
    campaign = start(project, email_id, csv)
    build_all(backend)
    assert verdicts(backend, campaign["id"]) == {
        "eve@example.com": ("quarantined", "gdpr"),
        "eve.new@example.com": ("quarantined", "gdpr"),
        "ok@example.com": ("queued", None),
    }


# --- category subscription ----------------------------------------------------------------------


def test_category_unsubscribed(backend: Backend, project: ApiProject) -> None:
    email_id = make_email(backend, project)
    other_email = make_email(backend, project)  # another category
    ids = profiles(
        backend,
        project.id,
        ann={"email": "ann@example.com"},
        bob={"email": "bob@example.com"},
        cid={"email": "cid@example.com"},
    )

    def subscriptions(session: Session) -> None:
        category, other = category_of(backend, email_id), category_of(backend, other_email)
        session.add_all(
            [
                Subscription(profile_id=ids["ann"], category_id=category, subscribed=False),
                Subscription(profile_id=ids["bob"], category_id=category, subscribed=True),
                Subscription(profile_id=ids["cid"], category_id=other, subscribed=False),
            ]
        )

    run(backend, subscriptions)
    csv = "email\nann@example.com\nbob@example.com\ncid@example.com\n"
    campaign = start(project, email_id, csv)
    ignoring = start(project, email_id, csv, config={"not_check_subscription": True})
    build_all(backend)
    assert verdicts(backend, campaign["id"]) == {
        "ann@example.com": ("blocked", "category_unsubscribed"),
        "bob@example.com": ("queued", None),
        "cid@example.com": ("queued", None),
    }
    assert set(verdicts(backend, ignoring["id"]).values()) == {("queued", None)}


# --- sent quarantine ---------------------------------------------------------------------------

SENT_CSV = "email\nrecent@example.com\nolder@example.com\nfresh@example.com\n"


def _sent_before(backend: Backend, project: ApiProject, other: ApiProject, now: datetime) -> None:
    delivered(backend, project.id, "recent@example.com", now - timedelta(minutes=10))
    delivered(backend, project.id, "older@example.com", now - timedelta(hours=2))
    delivered(backend, other.id, "fresh@example.com", now - timedelta(minutes=1))


def test_sent_quarantine_drops_recent_recipients(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    now = utcnow()
    _sent_before(backend, project, other_project, now)
    email_id = make_email(backend, project)
    campaign = start(project, email_id, SENT_CSV, config={"min_send_interval": 3600})
    off = start(
        project,
        email_id,
        SENT_CSV,
        config={"min_send_interval": 3600, "not_check_sent_quarantine": True},
    )
    no_interval = start(project, email_id, SENT_CSV)
    build_all(backend, now)
    assert verdicts(backend, campaign["id"]) == {
        "recent@example.com": ("blocked", "sent_quarantine"),
        "older@example.com": ("queued", None),
        "fresh@example.com": ("queued", None),  # mailed by another project
    }
    for other in (off, no_interval):
        assert set(verdicts(backend, other["id"]).values()) == {("queued", None)}


def test_sent_quarantine_retry_queues_for_later(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    now = utcnow()
    _sent_before(backend, project, other_project, now)
    email_id = make_email(backend, project)
    exact = start(
        project,
        email_id,
        SENT_CSV,
        config={"min_send_interval": 3600, "retry_sent_quarantine_rejected": True},
    )
    stepped = start(
        project,
        email_id,
        SENT_CSV,
        config={
            "min_send_interval": 3600,
            "retry_sent_quarantine_rejected": True,
            "retry_sent_quarantine_rejected_interval": 900,
        },
    )
    build_all(backend, now)
    free_at = now - timedelta(minutes=10) + timedelta(hours=1)
    for campaign, expected in ((exact, free_at), (stepped, now + timedelta(minutes=60))):
        assert set(verdicts(backend, campaign["id"]).values()) == {("queued", None)}
        rows = {r.recipient: r for r in spool_rows(backend, campaign["id"])}
        assert rows["recent@example.com"].not_before == expected
        assert rows["older@example.com"].not_before < now + timedelta(minutes=1)  # at once
        events = {e.recipient: e.data for e in outbox(backend, campaign["id"])}
        assert events["recent@example.com"]["delayed_by"] == "sent_quarantine"
        assert "delayed_by" not in events["older@example.com"]


def test_policy_from_config() -> None:
    assert Policy.from_config({}) == Policy()
    assert Policy.from_config({}).sent_quarantine is None
    policy = Policy.from_config(
        {
            "not_check_subscription": True,
            "not_check_spam_quarantine": True,
            "min_send_interval": 60,
            "retry_sent_quarantine_rejected": True,
            "retry_sent_quarantine_rejected_interval": 0,
            "hook_url_template": "https://example.com",
        }
    )
    assert policy == Policy(
        check_subscription=False,
        check_sent_quarantine=True,
        check_spam_quarantine=False,
        min_send_interval=timedelta(seconds=60),
        retry_sent_quarantine=True,
        retry_interval=None,
    )
    assert policy.sent_quarantine == timedelta(seconds=60)
    off = Policy.from_config({"min_send_interval": 60, "not_check_sent_quarantine": True})
    assert off == Policy(check_sent_quarantine=False, min_send_interval=timedelta(seconds=60))
    assert off.sent_quarantine is None


# --- one mail per address ----------------------------------------------------------------------

# Four audience keys, two mailboxes: uid:u-1 (whose profile has uma@example.com),
# email:uma@example.com, uid:u-9 (a line giving uma@example.com) and email:ok@example.com.
SAME_ADDRESS_CSV = "uid,email\nu-1,\n,uma@example.com\nu-9,uma@example.com\n,ok@example.com\n"


def rows_and_events(backend: Backend, campaign_id: int) -> list[tuple[str | None, str, str | None]]:
    """(recipient, state, reason) of each row in audience order, checked against its event."""
    rows = spool_rows(backend, campaign_id)
    events = {e.data["send_id"]: e for e in outbox(backend, campaign_id)}
    assert len(events) == len(rows)
    for row in rows:
        event = events[row.id]
        assert (event.kind, event.recipient) == (row.state, row.recipient)
        assert event.data.get("reason") == row.reason
    return [(row.recipient, row.state, row.reason) for row in rows]


@pytest.mark.parametrize("batch", [1000, 1], ids=["one batch", "a batch each"])
def test_an_address_is_mailed_once_per_campaign(
    backend: Backend, project: ApiProject, batch: int
) -> None:
    profiles(backend, project.id, uma={"uid": "u-1", "email": "uma@example.com"})
    email_id = make_email(backend, project)
    campaign = start(project, email_id, SAME_ADDRESS_CSV)
    build_all(backend, batch=batch)
    assert rows_and_events(backend, campaign["id"]) == [
        ("uma@example.com", "queued", None),
        ("uma@example.com", "blocked", "duplicate"),
        ("uma@example.com", "blocked", "duplicate"),
        ("ok@example.com", "queued", None),
    ]


def test_an_address_already_mailed_by_the_campaign_is_a_duplicate(
    backend: Backend, project: ApiProject
) -> None:
    """The first member was delivered before the rest was spooled; another campaign
    mailing the same address is not a duplicate (the sent quarantine's business)."""
    profiles(backend, project.id, uma={"uid": "u-1", "email": "uma@example.com"})
    email_id = make_email(backend, project)
    campaign = start(project, email_id, SAME_ADDRESS_CSV)
    now = utcnow()
    assert run(backend, lambda s: spool.build_step(s, now, 1))
    [sent] = send(backend, now)
    record(backend, [Result(sent.id, OK)], now)
    build_all(backend, batch=2)
    other = start(project, email_id, "email\numa@example.com\n")
    build_all(backend)
    assert rows_and_events(backend, campaign["id"]) == [
        ("uma@example.com", "delivered", None),
        ("uma@example.com", "blocked", "duplicate"),
        ("uma@example.com", "blocked", "duplicate"),
        ("ok@example.com", "queued", None),
    ]
    assert rows_and_events(backend, other["id"]) == [("uma@example.com", "queued", None)]


# --- transactional email -----------------------------------------------------------------------


def test_transactional_email_skips_only_the_marketing_checks(
    backend: Backend, project: ApiProject, other_project: ApiProject
) -> None:
    now = utcnow()
    _quarantined(backend, project, other_project)
    email_id = make_email(backend, project)
    set_email(backend, email_id, is_urgent=True)
    ids = profiles(backend, project.id, ann={"email": "ann@example.com"})
    category = category_of(backend, email_id)
    run(
        backend,
        lambda s: s.add(
            Subscription(profile_id=ids["ann"], category_id=category, subscribed=False)
        ),
    )
    delivered(backend, project.id, "recent@example.com", now - timedelta(minutes=10))
    profiles(backend, project.id, eve={"uid": "eve-2", "email": "eve2@example.com"})
    assert project.client.delete("/users", params={"uid": "eve-2"}).status_code == 204
    csv = QUARANTINE_CSV + "ann@example.com\nrecent@example.com\neve2@example.com\n"
    campaign = start(project, email_id, csv, config={"min_send_interval": 3600})
    build_all(backend, now)
    assert verdicts(backend, campaign["id"]) == {
        # Never mailed, even transactionally:
        "gone@q.com": ("quarantined", "nonexistent"),
        "bad@q.com": ("quarantined", "invalid"),
        "manual@q.com": ("quarantined", "manual"),
        "later@q.com": ("quarantined", "manual"),
        "eve2@example.com": ("quarantined", "gdpr"),
        # Marketing checks a transactional email skips:
        "spam@q.com": ("queued", None),
        "unsub@q.com": ("queued", None),
        "tired@q.com": ("queued", None),  # inactive: repeated soft bounces
        "ann@example.com": ("queued", None),  # unsubscribed from the category
        "recent@example.com": ("queued", None),  # mailed ten minutes ago
        "expired@q.com": ("queued", None),
        "clean@q.com": ("queued", None),
    }
