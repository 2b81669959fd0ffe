"""Every model, imported in one place so Alembic and tests see the whole metadata."""

from envoi.automation.models import CampaignTrigger
from envoi.campaigns.models import (
    AudienceMember,
    Campaign,
    CampaignFile,
    CampaignOccurrence,
    SchedulerLease,
)
from envoi.categories.models import Category
from envoi.db.base import Base
from envoi.delivery.models import DkimKey
from envoi.emails.models import Email, EmailAsset, EmailContent
from envoi.events.models import ApiEvent
from envoi.inbound.models import ReceivedReport
from envoi.outbox.models import OutboxEvent
from envoi.profiles.models import Erasure, Profile, ProfileField, Subscription
from envoi.projects.models import Project
from envoi.quarantine.models import QuarantineEntry
from envoi.routers.models import CapturedMessage, Router, RoutingRule
from envoi.segments.models import Segment, SegmentMember
from envoi.sends.models import IdempotencyKey, SendRegistry
from envoi.sources.models import Source, SourceRecipient
from envoi.spool.models import SpoolEntry

__all__ = [
    "ApiEvent",
    "AudienceMember",
    "Base",
    "Campaign",
    "CampaignFile",
    "CampaignOccurrence",
    "CampaignTrigger",
    "CapturedMessage",
    "Category",
    "DkimKey",
    "Email",
    "EmailAsset",
    "EmailContent",
    "Erasure",
    "IdempotencyKey",
    "OutboxEvent",
    "Profile",
    "ProfileField",
    "Project",
    "QuarantineEntry",
    "ReceivedReport",
    "Router",
    "RoutingRule",
    "SchedulerLease",
    "Segment",
    "SegmentMember",
    "SendRegistry",
    "Source",
    "SourceRecipient",
    "SpoolEntry",
    "Subscription",
]
