"""Stream campaigns: hidden campaigns that carry single sends through the campaign pipeline.

A single send (`POST /api/v1/send`, post type P) or a test send (`POST
/api/v1/campaigns/{id}/test`, post type T) is one spool row of a *stream*: a campaign
of post type P or T that the project never sees (the campaign paths list and find
only their own post types, so a stream's id is a 404 there). Everything after the
row is the campaign path unchanged: claims, rendering, DKIM, routers, retries,
bounces, tracking, and the events' dimensions, which every writer of events reads
from the row's campaign (`spool.building.Dimensions`): `post` `P_<stream>`,
`post_type` P or T, and the stream's `tags`.

That is why there is one stream per tag set, not one per project: tags are a
campaign's today, and a stream per tag set gives every single send its own tags on
every event, written by code that exists, with no change to the event writers.
Tracking switches are part of the stream too (its `config`): the delivery worker
compiles a message once per campaign, so a stream's messages share their pixel
and their tracked links (`delivery.preparing`). A test send's stream is one per
tested campaign, without tags: its events never count under the campaign's tags;
its rows name the profile their template shows in a parameter (`CHOSEN_PROFILE`),
which the worker reads as it sends.

A stream runs while it has rows to send. The delivery worker finishes a running
campaign with nothing pending (`spool.recording.finish_campaigns`); each new row
`reopen`s its stream in the row's transaction, and marks it unbuilt, so a worker
that was finishing it concurrently sees it changed and leaves it (on PostgreSQL its
re-check of the locked row fails), and the build step (a no-op: a stream has no
audience) marks it built again before it can be finished.

Why not spool rows without a campaign (`SpoolEntry.campaign_id` is nullable, and
the worker sends such rows)? Their events would carry no post, no post type and no
tags, unless the three writers of events (spool recording, tracking, inbound) learnt
per-row dimensions; the streams need no change there.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.core.campaign_states import State
from envoi.core.errors import Conflict
from envoi.sends.models import SendRegistry

SEND: Final = "P"  # seed 002's post type of API sends
TEST: Final = "T"  # and of test sends
STREAM_TYPES: Final = (SEND, TEST)
# Ahead of bulk campaigns: a password reset must not wait behind a newsletter.
STREAM_PRIORITY: Final = 1000
TRACK_OPENS: Final = "track_opens"
TRACK_CLICKS: Final = "track_clicks"
# The parameter of a test send's row that names the profile its template shows (the
# row names none: see `sends.services.send_tests`); always written, so a client's
# parameter of that name never names another profile.
CHOSEN_PROFILE: Final = "_envoi_profile"


@dataclass(frozen=True)
class Tracking:
    """A message's tracking switches (seed 004's `openstracking` / `clicktracking`)."""

    opens: bool = True
    clicks: bool = True


ALWAYS: Final = Tracking()


def tracking_of(post_type: str, config: Mapping[str, Any] | None) -> Tracking:
    """The switches of a campaign's messages: a stream's own, on for every campaign."""
    if post_type not in STREAM_TYPES or not config:
        return ALWAYS
    return Tracking(
        opens=config.get(TRACK_OPENS) is not False, clicks=config.get(TRACK_CLICKS) is not False
    )


def send_stream(
    session: Session,
    project_id: int,
    email_id: int,
    tags: Sequence[str],
    tracking: Tracking,
    *,
    now: datetime,
) -> Campaign:
    """The P stream of this tag set and these switches (made at first use)."""
    switches = f"{int(tracking.opens)}{int(tracking.clicks)}"
    key = f"stream:{SEND}:{switches}:{','.join(tags)}"
    config = {TRACK_OPENS: tracking.opens, TRACK_CLICKS: tracking.clicks}
    return _stream(session, project_id, key, SEND, email_id, tags=tags, config=config, now=now)


def tests_stream(
    session: Session, project_id: int, campaign_id: int, email_id: int, *, now: datetime
) -> Campaign:
    """The T stream of the tested campaign (made at first use)."""
    key = f"stream:{TEST}:{campaign_id}"
    config = {"tests": campaign_id}
    return _stream(session, project_id, key, TEST, email_id, tags=(), config=config, now=now)


def reopen(session: Session, campaign_id: int) -> None:
    """The stream runs until its new row is sent: running again if it was finished,
    and unbuilt, so that no worker finishes it with the row pending (see above).
    Its row lock is held until the caller commits."""
    session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.state.in_((State.RUNNING.value, State.FINISHED.value)),
        )
        .values(state=State.RUNNING.value, spool_built_at=None)
        .execution_options(synchronize_session=False)
    )


def _stream(
    session: Session,
    project_id: int,
    key: str,
    post_type: str,
    email_id: int,
    *,
    tags: Sequence[str],
    config: dict[str, Any],
    now: datetime,
) -> Campaign:
    def make() -> int:
        campaign = Campaign(
            project_id=project_id,
            post_type=post_type,
            message_type="L",
            message_id=email_id,
            ab_message_ids=[],
            source_type="A",  # an API source of its own: the sends API
            config=config,
            tags=",".join(tags) or None,
            priority=STREAM_PRIORITY,
            state=State.RUNNING.value,
            spooler_token=secrets.token_urlsafe(24),
            started_at=now,
            spool_built_at=now,
        )
        session.add(campaign)
        session.flush()
        return campaign.id

    def usable(row_id: int) -> bool:
        found = session.get(Campaign, row_id)
        return found is not None and found.post_type == post_type

    campaign = session.get(Campaign, registered(session, project_id, key, make, usable))
    if campaign is None:  # made or checked just above, in this transaction
        raise RuntimeError(f"stream {key} vanished")
    return campaign


def registered(
    session: Session,
    project_id: int,
    key: str,
    make: Callable[[], int],
    usable: Callable[[int], bool],
) -> int:
    """The id of the row `key` names in the project's registry; `make` makes it (and
    the key is registered) when there is none yet or it is gone (`usable` says no).

    The key is claimed before the row is made, in a SAVEPOINT: of two first uses at
    once, the second waits for the first's commit (PostgreSQL) and then uses its row,
    so no stray row is left behind."""
    for _ in range(2):
        entry = session.get(SendRegistry, (project_id, key))
        if entry is None:
            try:
                with session.begin_nested():
                    entry = SendRegistry(project_id=project_id, key=key, row_id=0)
                    session.add(entry)
                    session.flush()
            except IntegrityError:
                continue  # another transaction registered it first: read theirs
        elif entry.row_id and usable(entry.row_id):
            return entry.row_id
        entry.row_id = make()
        session.flush()
        return entry.row_id
    raise Conflict("a concurrent request changed the same rows; retry")
