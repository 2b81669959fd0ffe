"""Rules for an automated campaign's trigger, checked before the campaign is written.

A campaign runs on a crontab (its source's audience, `campaigns.scheduler`) or on a
trigger (the one profile an API event or a profile change names), never both. A
triggered campaign has no source: it is stored with `source_type` "E" (the event's
profile) and no `source_id`. Its conditions are checked against the project's
declared fields now, so a typo is a 422 at write time rather than a silent skip.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.orm import Session

from envoi.automation.payloads import parse_payload_condition
from envoi.automation.triggers import FIELD, Trigger
from envoi.campaigns.spec import CampaignSpec
from envoi.core.conditions import parse_condition
from envoi.core.errors import Invalid
from envoi.profiles.fields import declared_types

# `source_type` of a triggered campaign: its recipient is the profile the event names.
EVENT_SOURCE: Final = "E"
_ROOT = ("body", "trigger")


def check_automated(session: Session, project_id: int, spec: CampaignSpec) -> bool:
    """Check an automated campaign's trigger and its absence of source and crontab; True
    when it has a trigger (its source is then not checked: it has none)."""
    if spec.trigger is None:
        if spec.source_type == EVENT_SOURCE:  # what to_spec makes of a missing source_type
            raise Invalid(
                "source_type is required (S or A) unless the campaign has a trigger",
                ("body", "source_type"),
            )
        return False
    if spec.crontab is not None:
        raise Invalid("an automated campaign runs on a crontab or on a trigger, not both", _ROOT)
    if spec.source_type != EVENT_SOURCE:
        raise Invalid(
            "a triggered campaign mails the profile its event names: leave source_type out"
            f" (or send {EVENT_SOURCE!r})",
            ("body", "source_type"),
        )
    if spec.source_id is not None:
        raise Invalid("a triggered campaign has no source_id", ("body", "source_id"))
    check_trigger(session, project_id, Trigger.of(spec.trigger))
    return True


def check_trigger(session: Session, project_id: int, trigger: Trigger) -> None:
    declared = declared_types(session, project_id)
    if trigger.kind == FIELD and trigger.name not in declared:
        raise Invalid(
            f"field {trigger.name!r} is not a declared profile field (see /api/v1/fields)",
            (*_ROOT, "field"),
        )
    if trigger.condition is not None:
        parse_condition(trigger.condition, declared, (*_ROOT, "condition"))
    if trigger.payload_condition is not None:
        parse_payload_condition(trigger.payload_condition, (*_ROOT, "payload_condition"))
