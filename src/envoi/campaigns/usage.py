"""Which campaign still reads a segment or an API source: the one rule for deleting them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.core.campaign_states import DONE_WITH_SOURCE


def campaign_using(
    session: Session, project_id: int, source_type: str, source_id: int
) -> Campaign | None:
    """The oldest campaign of the project that reads this source and is neither
    finished nor archived (`DONE_WITH_SOURCE`), or None if the source may go."""
    query = (
        select(Campaign)
        .where(
            Campaign.project_id == project_id,
            Campaign.source_type == source_type,
            Campaign.source_id == source_id,
            Campaign.state.not_in([state.value for state in DONE_WITH_SOURCE]),
        )
        .order_by(Campaign.id)
        .limit(1)
    )
    return session.scalar(query)
