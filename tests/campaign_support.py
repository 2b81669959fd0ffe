"""Helpers shared by the campaign tests (no tests here).

Emails, profiles and segments are written through the ORM: their APIs belong to
other packages, and a campaign test should fail only for a campaign reason.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from sqlalchemy import func, select

from envoi.campaigns.models import AudienceMember, Campaign, CampaignFile
from envoi.categories.models import Category
from envoi.emails.models import Email
from envoi.profiles.models import Profile
from envoi.segments.models import Segment
from tests.conftest import ApiProject, Backend

LIST_CSV = "email,first_name\nann@example.com,Ann\nbob@example.com,Bob\n"
CONFIG_KEYS = {
    "not_check_subscription",
    "not_check_sent_quarantine",
    "retry_sent_quarantine_rejected",
    "retry_sent_quarantine_rejected_interval",
    "min_send_interval",
    "hook_url_template",
    "hook_use_auth",
    "hook_pre_post",
    "not_check_spam_quarantine",
    "send_to_corp",
    "send_by_uid",
    "resend",
}


def data_url(text: str | bytes, media_type: str = "text/csv") -> str:
    raw = text.encode() if isinstance(text, str) else text
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def make_email(backend: Backend, project: ApiProject) -> int:
    with backend.sessions() as session, session.begin():
        category = Category(project_id=project.id, title="News", translations={})
        session.add(category)
        session.flush()
        email = Email(
            project_id=project.id,
            category_id=category.id,
            from_address="news@example.com",
            asset_key=secrets.token_hex(16),
        )
        session.add(email)
        session.flush()
        return email.id


def make_profiles(backend: Backend, project: ApiProject, **identities: list[str]) -> list[int]:
    """`make_profiles(b, p, email=[...])`: one profile per value."""
    with backend.sessions() as session, session.begin():
        profiles = [
            Profile(project_id=project.id, fields={}, **{name: value})
            for name, values in identities.items()
            for value in values
        ]
        session.add_all(profiles)
        session.flush()
        return [p.id for p in profiles]


def make_segment(backend: Backend, project: ApiProject) -> int:
    """A segment of every profile that has an email."""
    with backend.sessions() as session, session.begin():
        segment = Segment(
            project_id=project.id,
            name="With email",
            condition={"field": "email", "op": "exists", "value": True},
        )
        session.add(segment)
        session.flush()
        return segment.id


def regular_body(email_id: int, csv: str = LIST_CSV, **extra: Any) -> dict[str, Any]:
    return {
        "message_type": "L",
        "message_id": email_id,
        "source_type": "U",
        "source_uploaded_csv": data_url(csv),
        **extra,
    }


def create_regular(project: ApiProject, email_id: int, **extra: Any) -> dict[str, Any]:
    response = project.client.post("/campaigns", json=regular_body(email_id, **extra))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def audience(backend: Backend, campaign_id: int) -> dict[str, AudienceMember]:
    """The stored audience by recipient key."""
    with backend.sessions() as session:
        members = session.scalars(
            select(AudienceMember).where(AudienceMember.campaign_id == campaign_id)
        )
        return {m.recipient_key: m for m in members}


def stored_rows(backend: Backend, project: ApiProject) -> tuple[int, int]:
    """How many campaigns and campaign files the project has in the database."""
    with backend.sessions() as session:
        campaigns = session.scalar(
            select(func.count()).select_from(Campaign).where(Campaign.project_id == project.id)
        )
        files = session.scalar(
            select(func.count())
            .select_from(CampaignFile)
            .join(Campaign, Campaign.id == CampaignFile.campaign_id)
            .where(Campaign.project_id == project.id)
        )
        return campaigns or 0, files or 0
