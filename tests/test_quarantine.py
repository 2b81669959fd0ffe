"""`/api/v1/quarantine` and the services delivery uses to skip quarantined addresses."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from envoi.db.session import transaction
from envoi.quarantine import services
from tests.conftest import ApiProject, Backend


def _add(project: ApiProject, status: int = 201, **body: Any) -> dict[str, Any]:
    response = project.client.post("/quarantine", json=body)
    assert response.status_code == status, response.text
    entry: dict[str, Any] = response.json()
    return entry


def test_add_list_remove(project: ApiProject) -> None:
    entry = _add(project, address="Ann@Example.COM", reason="manual", note="asked by phone")
    assert set(entry) == {"id", "address", "reason", "note", "created_at", "expires_at", "active"}
    assert entry["address"] == "ann@example.com"
    assert (entry["reason"], entry["note"], entry["expires_at"], entry["active"]) == (
        "manual",
        "asked by phone",
        None,
        True,
    )
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    bob = _add(project, address="bob@example.com", reason="nonexistent", expires_at=later)
    assert bob["expires_at"] is not None
    assert project.client.get("/quarantine").json() == [entry, bob]

    assert project.client.delete("/quarantine/ANN@example.com").status_code == 204
    assert project.client.get("/quarantine").json() == [bob]
    missing = project.client.delete("/quarantine/ann@example.com")
    assert missing.status_code == 404
    assert "not quarantined" in missing.json()["detail"]


def test_filters_and_pages(project: ApiProject) -> None:
    reasons = ["spam", "unsubscribed", "spam", "invalid", "spam"]
    for i, reason in enumerate(reasons):
        _add(project, address=f"user{i}@example.com", reason=reason)
    spam = project.client.get("/quarantine", params={"reason": "spam"}).json()
    assert [e["address"] for e in spam] == [
        "user0@example.com",
        "user2@example.com",
        "user4@example.com",
    ]
    one = project.client.get("/quarantine", params={"address": "USER3@example.com"}).json()
    assert [e["reason"] for e in one] == ["invalid"]
    first = project.client.get("/quarantine", params={"limit": 2}).json()
    rest = project.client.get("/quarantine", params={"after": first[-1]["id"]}).json()
    assert [e["address"] for e in first + rest] == [f"user{i}@example.com" for i in range(5)]
    for bad in (
        {"limit": 0},
        {"limit": 1001},
        {"after": -1},
        {"after": 2**70},
        {"reason": "bored"},
        {"address": "not-an-address"},
    ):
        response = project.client.get("/quarantine", params=bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"][0] == "query"


def test_addresses_are_found_in_any_form_they_were_given(project: ApiProject) -> None:
    entry = _add(project, address="Ann@xn--exmple-cua.com", reason="manual")
    assert entry["address"] == "ann@exämple.com"  # as delivery compares it
    for form in ("ann@xn--exmple-cua.com", "ANN@EXÄMPLE.com", " ann@exämple.com "):
        found = project.client.get("/quarantine", params={"address": form}).json()
        assert [e["id"] for e in found] == [entry["id"]], form
    assert project.client.delete("/quarantine/ANN@xn--exmple-cua.com").status_code == 204
    assert project.client.get("/quarantine").json() == []
    gone = project.client.delete("/quarantine/not-an-address")
    assert (gone.status_code, gone.json()["detail"]) == (404, "not-an-address is not quarantined")


def test_concurrent_adds_of_one_address_never_conflict(project: ApiProject) -> None:
    """Importers in parallel: each add answers 201 (the first) or 200, none 409, and the
    strongest reason wins whatever the order."""
    reasons = ["manual", "invalid", "nonexistent", "unsubscribed", "spam", "manual"]
    jobs = [(f"user{n}@example.com", reason) for n in range(12) for reason in reasons]

    def add(job: tuple[str, str]) -> tuple[str, int]:
        address, reason = job
        response = project.client.post("/quarantine", json={"address": address, "reason": reason})
        return address, response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(add, jobs))
    assert {status for _, status in statuses} <= {200, 201}, statuses
    created = Counter(address for address, status in statuses if status == 201)
    assert created == {f"user{n}@example.com": 1 for n in range(12)}
    entries = project.client.get("/quarantine").json()
    assert len(entries) == 12
    assert {e["reason"] for e in entries} == {"spam"}


def test_the_stronger_reason_is_kept(project: ApiProject) -> None:
    _add(project, address="ann@example.com", reason="nonexistent", note="bounce")
    complaint = _add(project, 200, address="ann@example.com", reason="spam", note="complaint")
    assert (complaint["reason"], complaint["note"]) == ("spam", "complaint")
    weaker = _add(project, 200, address="ann@example.com", reason="manual", note="by hand")
    assert (weaker["reason"], weaker["note"]) == ("spam", "complaint")
    assert len(project.client.get("/quarantine").json()) == 1


def test_bad_input_writes_nothing(project: ApiProject) -> None:
    for body in (
        {"address": "not-an-address", "reason": "manual"},
        {"address": "a@b.co", "reason": "bored"},
        {"address": "a@b.co"},
        {"reason": "manual"},
        {"address": "a@b.co", "reason": "manual", "colour": "red"},
        {"address": "a@b.co", "reason": "manual", "expires_at": "2030-01-01T00:00:00"},
        {"address": "a@b.co", "reason": "manual", "note": "x" * 1001},
        {"address": 5, "reason": "manual"},
    ):
        response = project.client.post("/quarantine", json=body)
        assert response.status_code == 422, body
        assert isinstance(response.json()["detail"], list)
    bad = project.client.post("/quarantine", json={"address": "nope", "reason": "manual"})
    assert bad.json()["detail"][0]["loc"] == ["body", "address"]
    assert project.client.get("/quarantine").json() == []


def test_projects_do_not_see_each_other(project: ApiProject, other_project: ApiProject) -> None:
    _add(project, address="ann@example.com", reason="spam")
    assert other_project.client.get("/quarantine").json() == []
    assert other_project.client.delete("/quarantine/ann@example.com").status_code == 404
    theirs = _add(other_project, address="ann@example.com", reason="manual")
    assert theirs["reason"] == "manual"
    assert [e["reason"] for e in project.client.get("/quarantine").json()] == ["spam"]


def test_quarantined_ignores_expired_entries(backend: Backend, project: ApiProject) -> None:
    now = datetime.now(UTC)
    with transaction(backend.sessions) as session:
        services.add(session, project.id, "ann@example.com", "spam", now=now)
        services.add(
            session,
            project.id,
            "bob@example.com",
            "nonexistent",
            expires_at=now + timedelta(days=1),
            now=now,
        )
        services.add(
            session, project.id, "old@example.com", "manual", expires_at=now - timedelta(1), now=now
        )
    with transaction(backend.sessions) as session:
        found = services.quarantined(
            session,
            project.id,
            ["ann@example.com", "bob@example.com", "old@example.com", "new@example.com"],
            now,
        )
        later = services.quarantined(
            session, project.id, ["bob@example.com"], now + timedelta(days=2)
        )
    assert found == {"ann@example.com": "spam", "bob@example.com": "nonexistent"}
    assert later == {}
    listed = {e["address"]: e["active"] for e in project.client.get("/quarantine").json()}
    assert listed == {"ann@example.com": True, "bob@example.com": True, "old@example.com": False}


def test_an_expired_entry_is_replaced_and_expiry_only_extends(
    backend: Backend, project: ApiProject
) -> None:
    now = datetime.now(UTC)
    with transaction(backend.sessions) as session:
        services.add(session, project.id, "ann@example.com", "spam", expires_at=now - timedelta(1))
        revived = services.add(session, project.id, "ann@example.com", "manual", now=now)
        assert (revived.reason, revived.expires_at) == ("manual", None)
        services.add(
            session, project.id, "bob@example.com", "spam", expires_at=now + timedelta(days=1)
        )
        kept = services.add(
            session,
            project.id,
            "bob@example.com",
            "invalid",
            expires_at=now + timedelta(days=9),
            now=now,
        )
        assert kept.reason == "spam"
        assert kept.expires_at == now + timedelta(days=9)
