"""`GET /api/v1/automated-campaigns/{id}/triggers`: a triggered campaign's firings.

What each API event or profile change that fired the campaign became: `pending`
(waiting for its delay, or for the paused campaign to resume), `spooled` (its
message's `send_id`, readable at `GET /api/v1/send/{send_id}`), or `skipped` with the
reason. Newest first. Mounted on the campaigns' router (`campaigns.api`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from envoi.automation.models import CampaignTrigger
from envoi.campaigns.services import get_campaign
from envoi.campaigns.spec import PostType
from envoi.web.deps import CurrentProject, Db

MAX_LIST = 1000

router = APIRouter(tags=["automated-campaigns"])


class FiringOut(BaseModel):
    id: int
    event_id: int | None
    profile_id: int
    payload: dict[str, Any]
    fired_at: datetime
    due_at: datetime
    state: str
    reason: str | None
    send_id: int | None
    processed_at: datetime | None


@router.get("/automated-campaigns/{campaign_id}/triggers", response_model=list[FiringOut])
def list_firings(
    campaign_id: int,
    project: CurrentProject,
    db: Db,
    state: Literal["pending", "spooled", "skipped"] | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> list[CampaignTrigger]:
    campaign = get_campaign(db, project.id, PostType.AUTOMATED, campaign_id)
    query = select(CampaignTrigger).where(CampaignTrigger.campaign_id == campaign.id)
    if state is not None:
        query = query.where(CampaignTrigger.state == state)
    return list(db.scalars(query.order_by(CampaignTrigger.id.desc()).limit(limit)))
