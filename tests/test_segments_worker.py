"""The segment generator: crash recovery, exclusive claims, prompt stop, and generate()."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from envoi.db.session import transaction
from envoi.profiles.models import Profile
from envoi.segments import services
from envoi.segments.models import Segment, SegmentMember
from envoi.segments.workers import SegmentGenerator, claim_segment
from tests.conftest import ApiProject, Backend
from tests.test_segments import (
    CITY_IS_PARIS,
    city_profiles,
    create,
    generate,
    member_uids,
    wait_generated,
)


def set_status(backend: Backend, segment_id: int, status: str) -> None:
    with transaction(backend.sessions) as session:
        session.execute(update(Segment).where(Segment.id == segment_id).values(status=status))


def add_parisian(backend: Backend, project: ApiProject, uid: str) -> None:
    with transaction(backend.sessions) as session:
        session.add(Profile(project_id=project.id, uid=uid, fields={"city": "Paris"}))


def generated_at(body: dict[str, Any]) -> datetime:
    assert body["generated_at"] is not None
    return datetime.fromisoformat(body["generated_at"])


def test_a_segment_left_running_by_a_crash_is_generated_by_the_next_process(
    backend: Backend, project: ApiProject
) -> None:
    city_profiles(backend, project, count=4)
    segment = create(project, CITY_IS_PARIS)
    before = generate(project, segment["id"])
    assert member_uids(project, segment["id"]) == ["p0", "p2"]
    add_parisian(backend, project, "late")
    # A process claimed a regeneration and died: the members are stale, nobody works on
    # it, and the running generator of this server never takes a "running" segment.
    set_status(backend, segment["id"], "running")
    time.sleep(0.2)
    stuck = project.client.get(f"/segments/{segment['id']}").json()
    assert (stuck["status"], stuck["member_count"]) == ("running", 2)

    restarted_at = datetime.now(UTC)
    restarted = SegmentGenerator(backend.sessions, poll_seconds=0.05)
    restarted.start()
    try:
        done = wait_generated(project.client, segment["id"])
    finally:
        restarted.stop()
    # Only a new generation, after the restart, can give these.
    assert (done["status"], done["member_count"], done["error"]) == ("ready", 3, None)
    assert member_uids(project, segment["id"]) == ["p0", "p2", "late"]
    assert generated_at(done) > max(generated_at(before), restarted_at)


def test_recover_requeues_only_running_segments(backend: Backend, project: ApiProject) -> None:
    city_profiles(backend, project, count=2)
    crashed = create(project, CITY_IS_PARIS)
    generate(project, crashed["id"])
    add_parisian(backend, project, "late")
    set_status(backend, crashed["id"], "running")
    new = create(project, CITY_IS_PARIS)
    failed = create(project, CITY_IS_PARIS)
    set_status(backend, failed["id"], "failed")

    recovered_at = datetime.now(UTC)
    generator = SegmentGenerator(backend.sessions)
    assert generator.recover() >= 1  # other tests may have left segments running too
    while generator.run_once():  # this server's generator may take some of them first
        pass
    # Left "running", the segment would never be generated again (wait_generated fails).
    done = wait_generated(project.client, crashed["id"])
    assert (done["status"], done["member_count"]) == ("ready", 2)
    assert generated_at(done) > recovered_at
    assert member_uids(project, crashed["id"]) == ["p0", "late"]
    # Nobody asked for these: recovery leaves them alone.
    for segment, status in ((new, "new"), (failed, "failed")):
        got = project.client.get(f"/segments/{segment['id']}").json()
        assert (got["status"], got["member_count"], got["generated_at"]) == (status, None, None)


def test_a_pending_segment_is_claimed_once(backend: Backend, project: ApiProject) -> None:
    segment = create(project, {"and": []})
    with transaction(backend.sessions) as session:
        # Made pending and claimed in one transaction: no other generator sees it pending.
        session.execute(update(Segment).where(Segment.id == segment["id"]).values(status="pending"))
        first = claim_segment(session, segment["id"])
    with transaction(backend.sessions) as session:
        second = claim_segment(session, segment["id"])
    assert (first, second) == (True, False)
    assert project.client.get(f"/segments/{segment['id']}").json()["status"] == "running"
    for status in ("new", "ready", "failed"):
        set_status(backend, segment["id"], status)
        with transaction(backend.sessions) as session:
            assert claim_segment(session, segment["id"]) is False, status
        assert project.client.get(f"/segments/{segment['id']}").json()["status"] == status


def test_stop_is_prompt_and_start_is_idempotent(backend: Backend) -> None:
    generator = SegmentGenerator(backend.sessions, poll_seconds=60)
    generator.start()
    generator.start()
    time.sleep(0.1)
    began = time.monotonic()
    generator.stop()
    assert time.monotonic() - began < 2
    generator.stop()  # a second stop is harmless


def test_an_edit_after_the_claim_cancels_the_generation(
    backend: Backend, project: ApiProject
) -> None:
    city_profiles(backend, project)
    segment = create(project, CITY_IS_PARIS)
    set_status(backend, segment["id"], "running")  # claimed by some generator
    edited = project.client.patch(f"/segments/{segment['id']}", json={"condition": {"and": []}})
    assert edited.json()["status"] == "new"
    SegmentGenerator(backend.sessions).generate_claimed(segment["id"])
    got = project.client.get(f"/segments/{segment['id']}").json()
    assert (got["status"], got["member_count"]) == ("new", None)


def test_a_claimed_segment_generates_and_a_deleted_one_is_skipped(
    backend: Backend, project: ApiProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    city_profiles(backend, project)
    segment = create(project, CITY_IS_PARIS)
    set_status(backend, segment["id"], "running")
    generator = SegmentGenerator(backend.sessions)
    failures: list[Exception] = []
    monkeypatch.setattr(generator, "_fail", lambda _id, exc: failures.append(exc))
    generator.generate_claimed(segment["id"])
    got = project.client.get(f"/segments/{segment['id']}").json()
    assert (got["status"], got["member_count"]) == ("ready", 2)
    assert project.client.delete(f"/segments/{segment['id']}").status_code == 204
    generator.generate_claimed(segment["id"])  # gone: nothing to do
    assert failures == []  # generate_claimed swallows errors: check none was recorded


def test_generate_is_synchronous_for_other_services(backend: Backend, project: ApiProject) -> None:
    ids = city_profiles(backend, project, count=6)
    segment = create(project, CITY_IS_PARIS, segment_limit=2)
    with transaction(backend.sessions) as session:
        row = session.get(Segment, segment["id"])
        assert row is not None
        assert services.generate(session, row) == 2
        assert (row.status, row.member_count, row.error) == ("ready", 2, None)
        assert row.generated_at is not None
    with transaction(backend.sessions) as session:
        members = session.scalars(
            select(SegmentMember.profile_id)
            .where(SegmentMember.segment_id == segment["id"])
            .order_by(SegmentMember.profile_id)
        ).all()
    assert list(members) == [ids["p0"], ids["p2"]]
