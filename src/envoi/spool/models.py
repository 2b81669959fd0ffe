"""The spool: one row per (campaign, recipient) and its delivery state.

    queued ──claim──► leased ──handed to SMTP──► sending ──► delivered | permfail
       ▲                 │                          │
       └──── deferred ◄──┴──────── 4xx / no answer ─┘   (retry at `not_before`)
    blocked | quarantined: skipped when the spool was built (or by the pre-send hook),
    with `reason`.

`leased` rows are claimed by a worker but not handed to an SMTP session yet: a lost
lease puts them back silently. `sending` rows whose lease expired were in flight
when their worker died: they are sent again with `uncertain` set and reported.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, true
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, UTCDateTime, project_fk, updated_at

# States a worker may still act on; a campaign is finished when none of its rows is in one.
PENDING_STATES = ("queued", "leased", "sending", "deferred")
FINAL_STATES = ("delivered", "permfail", "blocked", "quarantined")


class SpoolEntry(Base):
    __tablename__ = "spool"
    __table_args__ = (
        # The claim query: due rows by priority.
        Index("ix_spool_claim", "state", "not_before", "priority"),
        Index("ix_spool_campaign_state", "campaign_id", "state"),
        Index("ix_spool_recipient", "project_id", "recipient"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    project_id: Mapped[project_fk]
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    # The email sent (an A/B campaign's rows name their variant).
    email_id: Mapped[int] = mapped_column(Integer)
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id", ondelete="SET NULL"))
    recipient: Mapped[str | None] = mapped_column(String(320))
    domain: Mapped[str | None] = mapped_column(String(255))
    # Template parameters: CSV columns, additional file, hook answer.
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    # blocked / quarantined: noaddress, invalid, nonexistent, spam, unsubscribed, gdpr,
    # category_unsubscribed, sent_quarantine, external_check; permfail: the bounce class.
    reason: Mapped[str | None] = mapped_column(String(32))
    # Not before this time: planned start, send_during_hours spread, retry backoff.
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Was in flight when its worker died: may have been delivered twice.
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False)
    router: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(8))
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    smtp_status: Mapped[str | None] = mapped_column(String(16))
    smtp_text: Mapped[str | None] = mapped_column(String(1000))
    updated_at: Mapped[updated_at]
    # Tracking switches of a single send (`sends`): off, its message has no open pixel
    # or no tracked links. Campaign rows leave them to the database: always on. No
    # Python-side default, so the spool's batch inserts stay on their fast path.
    track_opens: Mapped[bool] = mapped_column(Boolean, server_default=true())
    track_clicks: Mapped[bool] = mapped_column(Boolean, server_default=true())
