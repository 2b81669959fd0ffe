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
"""

from __future__ import annotations

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
