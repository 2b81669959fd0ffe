"""One mail per address per campaign, whatever the audience keys.

Audience keys are unique, addresses are not: `uid:1` (whose profile has
ann@example.com) and `email:ann@example.com` are two members and one mailbox. When
the spool is built, a member whose address an earlier member of the campaign is
mailed at, in the same batch or an earlier one, is `blocked` with reason
`duplicate`. Rows that will not be mailed (blocked, quarantined) leave the address
free for a later member.

The earlier batches are looked up with one query per batch on `ix_spool_recipient`
(project, recipient). On PostgreSQL it probes the index once per address (a LATERAL
subquery, which the planner cannot turn into one scan): a plain `recipient = ANY(...)`
is planned, while the statistics predate the rows being spooled (a new project, a
first big campaign), as a scan of all the project's rows per batch, which makes a
build quadratic in its size (bench/delivery.py, 100,000 members: 5 ms a batch at
the start, 35 ms at the end and growing; the probes take about 2 ms whatever the
size, after a few batches of a nearly empty table that the planner scans instead).
The project is given to the probes beside each address (`checks.probes`), not as a
constant: statistics that predate the project's rows (a new project on a database
that has others) would otherwise make `ix_spool_project_id` look best, and each probe
read all of the project's rows (86 s a batch of 1,000 against 200,000 rows).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, literal, select, true
from sqlalchemy.orm import Session

from envoi.campaigns.models import Campaign
from envoi.spool.checks import BLOCKED, QUARANTINED, QUEUED, Verdict, any_of, probes
from envoi.spool.models import SpoolEntry

DUPLICATE = "duplicate"


def without_duplicates(
    session: Session, campaign: Campaign, verdicts: list[Verdict]
) -> list[Verdict]:
    """The verdicts, each queued one whose address is already mailed by the campaign
    (an earlier verdict, or a row of an earlier batch) blocked as `duplicate`."""
    wanted = sorted({v.address for v in verdicts if v.state == QUEUED and v.address})
    if not wanted:
        return verdicts
    taken = _mailed(session, campaign, wanted)
    result = []
    for verdict in verdicts:
        address = verdict.address
        if verdict.state != QUEUED or not address:
            result.append(verdict)
        elif address in taken:
            result.append(Verdict(BLOCKED, DUPLICATE, address))
        else:
            taken.add(address)
            result.append(verdict)
    return result


def _mailed(session: Session, campaign: Campaign, addresses: list[str]) -> set[str]:
    """The addresses that have a row of the campaign that is or will be mailed."""
    if session.get_bind().dialect.name != "postgresql":
        # SQLite probes ix_spool_recipient for each value of the list by itself.
        query = select(SpoolEntry.recipient).where(
            SpoolEntry.project_id == campaign.project_id,
            any_of(session, SpoolEntry.recipient, addresses),
            _mailed_row_of(campaign),
        )
        return {address for address in session.scalars(query.distinct()) if address}
    wanted = probes(campaign.project_id, addresses)
    hit = (
        select(literal(1))
        .where(
            SpoolEntry.project_id == wanted.c.project_id,
            SpoolEntry.recipient == wanted.c.address,
            _mailed_row_of(campaign),
        )
        .limit(1)
        .lateral("hit")
    )
    query = select(wanted.c.address).select_from(wanted).join(hit, true())
    return set(session.scalars(query))


def _mailed_row_of(campaign: Campaign) -> ColumnElement[bool]:
    # `+ 0`: never on ix_spool_campaign_state, which PostgreSQL picks while its
    # statistics predate the campaign, then reads every row spooled so far.
    return (SpoolEntry.campaign_id + 0 == campaign.id) & SpoolEntry.state.not_in(
        (BLOCKED, QUARANTINED)
    )
