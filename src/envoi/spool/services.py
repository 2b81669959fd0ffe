"""The spool's public face: what workers, the CLI and the benchmarks call.

Every function takes the caller's session and writes in the caller's transaction; the
caller commits. A spool state change and its outbox event are always written together.

What lives where (import from here; the modules are the package's own layout):

    spool/building.py   promote_planned, build_step: planned campaigns become running;
                        a running campaign's audience becomes spool rows, a batch a
                        call, through the sending-policy checks; Dimensions, what
                        every outbox event says about its campaign
    spool/checks.py     check_batch: who of a batch is mailed, and why the others not
    spool/duplicates.py without_duplicates: one mail per address per campaign
    spool/leasing.py    Claim, claim, mark_sending, release, campaign_states: rows
                        leased to a worker, handed to SMTP, given back
    spool/recording.py  Result, record, retry_delay, finish_campaigns: outcomes with
                        their outbox events, the retry schedule, nonexistent addresses
                        quarantined, campaigns finished
    spool/bulk.py       batch INSERT / UPDATE, one statement a batch on either back-end
    spool/hooks.py      the campaign's pre- and post-send HTTP hooks
    spool/models.py     SpoolEntry and its states

The names after `__all__` are the helpers' and imports' names from before the module
was split: kept importable for code written against it, not to be used by new code.
"""

from __future__ import annotations

from envoi.spool import building, bulk, leasing, recording
from envoi.spool.building import build_step, promote_planned
from envoi.spool.leasing import (
    IN_FLIGHT,
    WAITING,
    Claim,
    campaign_states,
    claim,
    mark_sending,
    release,
)
from envoi.spool.recording import (
    EXPIRED_CLASS,
    EXPIRED_REASON,
    FIRST_RETRY,
    GIVE_UP_AFTER,
    MAX_RETRY,
    Result,
    finish_campaigns,
    record,
    retry_delay,
)

__all__ = [
    "EXPIRED_CLASS",
    "EXPIRED_REASON",
    "FIRST_RETRY",
    "GIVE_UP_AFTER",
    "IN_FLIGHT",
    "MAX_RETRY",
    "WAITING",
    "Claim",
    "Result",
    "build_step",
    "campaign_states",
    "claim",
    "finish_campaigns",
    "mark_sending",
    "promote_planned",
    "record",
    "release",
    "retry_delay",
]

# --- names from before the split -----------------------------------------------------------
# The one module imported these; envoi code written against it may still name them here.
from envoi.campaigns.models import AudienceMember, Campaign  # noqa: F401
from envoi.campaigns.spec import PostType  # noqa: F401
from envoi.core.campaign_states import Action, State, next_state  # noqa: F401
from envoi.core.smtp_replies import classify  # noqa: F401
from envoi.db.base import UTCDateTime  # noqa: F401
from envoi.delivery.interfaces import SmtpReply  # noqa: F401
from envoi.emails.models import Email  # noqa: F401
from envoi.outbox.models import OutboxEvent  # noqa: F401
from envoi.profiles.models import Profile  # noqa: F401
from envoi.quarantine.models import QuarantineEntry  # noqa: F401
from envoi.quarantine.services import STRENGTH  # noqa: F401
from envoi.spool.checks import Candidate, Policy, Verdict, any_of, check_batch  # noqa: F401
from envoi.spool.models import PENDING_STATES, SpoolEntry  # noqa: F401

# Its helpers, now in the modules above.
log = recording.log
_AnyRow = bulk.AnyRow
_SPOOL = bulk.SPOOL
_OUTBOX = bulk.OUTBOX
_bulk_insert = bulk.bulk_insert
_bulk_update = bulk.bulk_update
_as_table = bulk.as_table
_json_value = bulk.json_value
_Dimensions = building.Dimensions
_Variant = building._Variant
_next = building.advance
_campaign_to_build = building._campaign_to_build
_spool = building._spool
_variants = building._variants
_profiles = building._profiles
_key_pair = building._key_pair
_send_start = building._send_start
_spread = building._spread
_spool_row = building._spool_row
_spool_event = building._spool_event
_CLAIM_COLUMNS = leasing.CLAIM_COLUMNS
_check_owner = leasing.check_owner
_claim_of = leasing.claim_of
_running_levels = leasing._running_levels
_loose_levels = leasing._loose_levels
_of_campaigns = leasing._of_campaigns
_expired_leases = leasing._expired_leases
_due_at_level = leasing._due_at_level
_SIZES = recording.SIZES
_Outcome = recording._Outcome
_RECORD_COLUMNS = recording._RECORD_COLUMNS
_outcome = recording._outcome
_cut = recording._cut
_merged_params = recording._merged_params
_event = recording._event
_urgent_emails = recording._urgent_emails
_quarantine_nonexistent = recording._quarantine_nonexistent
