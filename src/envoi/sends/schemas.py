"""Request and response bodies of `POST /api/v1/send`, `GET /api/v1/send/{id}` and
`POST /api/v1/campaigns/{id}/test`.

Per-field rules live here; the rules between fields (a recipient, one kind of content)
are the services' (`sends.services`), answered in the same 422 shape at the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from envoi.core.identity import IDENTIFIERS
from envoi.db.lookup import DB_INT_MAX
from envoi.sends.models import IDEMPOTENCY_KEY_MAX
from envoi.sends.services import CampaignTestSpec, SendSpec
from envoi.sends.streams import Tracking
from envoi.web.schemas import StrictModel

MAX_TAGS = 10
TAG_MAX = 64
MAX_TEST_ADDRESSES = 10
SEND_ID_MAX = 2**63 - 1

DbId = Annotated[int, Field(ge=1, le=DB_INT_MAX)]
# One line, no comma (a stream campaign keeps its tags comma-separated), no blank
# around it (tags match exactly, and a campaign's tags are trimmed).
Tag = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=TAG_MAX, pattern=r"^[^,\s](?:[^,\x00-\x1f\x7f]*[^,\s])?$"
    ),
]
Address = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class SendIn(StrictModel):
    """One message to one recipient: an email of the project, or inline content."""

    email: Address | None = None
    uid: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    message_id: DbId | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    from_address: Annotated[str, StringConstraints(max_length=320)] | None = None
    subject: str | None = None
    text_html: str | None = None
    text_plain: str | None = None
    category: DbId | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    track_opens: bool = True
    track_clicks: bool = True
    idempotency_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=IDEMPOTENCY_KEY_MAX)] | None
    ) = None

    def to_spec(self) -> SendSpec:
        return SendSpec(
            email=self.email,
            uid=self.uid,
            message_id=self.message_id,
            params=self.params,
            from_address=self.from_address,
            subject=self.subject,
            text_html=self.text_html,
            text_plain=self.text_plain,
            category=self.category,
            tags=tuple(sorted(set(self.tags))),
            tracking=Tracking(self.track_opens, self.track_clicks),
            idempotency_key=self.idempotency_key,
        )


class ProfileRef(StrictModel):
    """A profile by one of its identifiers, as `GET /api/v1/users?...` names it."""

    uid: str | int | None = None
    email: str | None = None
    phone: str | int | None = None
    wp_token: str | None = None

    def identifiers(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in IDENTIFIERS}


class CampaignTestIn(StrictModel):
    """A campaign's email to a few addresses, with a chosen profile's data."""

    emails: list[Address] = Field(min_length=1, max_length=MAX_TEST_ADDRESSES)
    profile: DbId | ProfileRef | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    message_id: DbId | None = None

    def to_spec(self) -> CampaignTestSpec:
        profile: int | dict[str, object] | None
        if isinstance(self.profile, ProfileRef):
            profile = self.profile.identifiers()
        else:
            profile = self.profile
        return CampaignTestSpec(
            emails=tuple(self.emails),
            profile=profile,
            params=self.params,
            message_id=self.message_id,
        )


class SendOut(BaseModel):
    id: int
    state: str
    reason: str | None
    email: str | None
    post: str | None
    post_type: str | None
    message_id: int
    profile_id: int | None
    tags: list[str]
    track_opens: bool
    track_clicks: bool


class EventOut(BaseModel):
    id: int
    kind: str
    occurred_at: datetime
    data: dict[str, Any]


class SendView(SendOut):
    attempts: int
    smtp_code: int | None
    smtp_status: str | None
    smtp_text: str | None
    updated_at: datetime
    events: list[EventOut] | None


class CampaignTestOut(BaseModel):
    campaign_id: int
    sends: list[SendOut]
