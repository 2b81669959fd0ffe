"""The segment generator: crash recovery, exclusive claims, prompt stop, and generate()."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from envoi.db.session import transaction
from envoi.segments import services
from envoi.segments.models import Segment, SegmentMember
from envoi.segments.workers import SegmentGenerator, claim_segment
from tests.conftest import ApiProject, Backend
from tests.test_segments import CITY_IS_PARIS, city_profiles, create, member_uids, wait_generated


def set_status(backend: Backend, segment_id: int, status: str) -> None:
    with transaction(backend.sessions) as session:
        session.execute(update(Segment).where(Segment.id == segment_id).values(status=status))


def test_a_segment_left_running_by_a_crash_is_generated_by_the_next_process(
    backend: Backend, project: ApiProject
) -> None:
    city_profiles(backend, project, count=4)
    segment = create(project, CITY_IS_PARIS)
    # A process claimed it and died: nobody is working on it, and the running
    # generator of this server never takes a "running" segment on its own.
    set_status(backend, segment["id"], "running")
    time.sleep(0.2)
    assert project.client.get(f"/segments/{segment['id']}").json()["status"] == "running"

    restarted = SegmentGenerator(backend.sessions, poll_seconds=0.05)
    restarted.start()
    try:
        done = wait_generated(project.client, segment["id"])
    finally:
        restarted.stop()
    assert (done["status"], done["member_count"]) == ("ready", 2)
    assert member_uids(project, segment["id"]) == ["p0", "p2"]


def test_recover_puts_running_segments_back_to_pending(
    backend: Backend, project: ApiProject
) -> None:
    segment = create(project, {"and": []})
    set_status(backend, segment["id"], "running")
    assert SegmentGenerator(backend.sessions).recover() >= 1
    # Pending now; this server's generator may already have taken it further.
    status = project.client.get(f"/segments/{segment['id']}").json()["status"]
    assert status in ("pending", "running", "ready")


def test_a_pending_segment_is_claimed_once(backend: Backend, project: ApiProject) -> None:
    segment = create(project, {"and": []})
    set_status(backend, segment["id"], "pending")
    with transaction(backend.sessions) as session:
        first = claim_segment(session, segment["id"])
    with transaction(backend.sessions) as session:
        second = claim_segment(session, segment["id"])
    assert second is False  # running now, whoever claimed it first
    # `first` is False only if this server's generator won the race for it.
    assert first or project.client.get(f"/segments/{segment['id']}").json()["status"] != "pending"


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
    backend: Backend, project: ApiProject
) -> None:
    city_profiles(backend, project)
    segment = create(project, CITY_IS_PARIS)
    set_status(backend, segment["id"], "running")
    generator = SegmentGenerator(backend.sessions)
    generator.generate_claimed(segment["id"])
    assert project.client.get(f"/segments/{segment['id']}").json()["member_count"] == 2
    assert project.client.delete(f"/segments/{segment['id']}").status_code == 204
    generator.generate_claimed(segment["id"])  # gone: nothing to do, nothing raised


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
