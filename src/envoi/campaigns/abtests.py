"""A/B campaigns' two phases: the test sample at the start, the winner at main time.

The rules (sample size, split, win rates, ties) are `core.abtests`; here they meet the
database and the event store.

Test phase. `draw_sample`, called when the campaign starts, marks a random
`ab_percent` % of its audience with a variant index (`campaign_audience.ab_variant`,
one UPDATE ranked by random()): the draw is made once and stored, so a crash or a
restart never redraws it. The delivery workers spool only those members, each with
its variant's email (`spool.building`); the campaign stays `running` (phase `test`)
and is not finished when the test's messages are all sent.

Main phase. Once its main time has come (`core.abtests.main_start`) and its sample is
all spooled (a late worker delays the decision, never skips a test recipient), `ABDecider`,
called on every scheduler tick, reads each variant's delivered messages and unique
human opens and clicks of the post (`B_<id>`, grouped by message) from the statistics
engine, picks the winner, stores it with every variant's figures, moves the campaign
to phase `main` and resets its spool cursor: the workers then spool the rest of the
audience (members without a variant) with the winner's email.

Only a process that holds the event store can decide (`envoi serve`: DuckDB lets one
process open its file). Hence every scheduler with a store decides, whether or not it
holds the scheduler lease; exactly once is the campaign's row lock and its phase,
checked again under the lock in the deciding transaction. Before deciding, the store
must have projected the outbox as far as it went when the main time was first seen,
so every open and click recorded until then counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from envoi.campaigns.models import AudienceMember, Campaign
from envoi.campaigns.spec import PostType
from envoi.core import abtests as rules
from envoi.core.campaign_states import State
from envoi.db.base import as_utc
from envoi.db.session import transaction
from envoi.eventstore.interfaces import EventStore
from envoi.outbox.models import OutboxEvent
from envoi.statistics.query import Filter, StatisticsEngine, StatsQuery

log = logging.getLogger("envoi.scheduler")

# The event store of this process, or None when it holds none (or not yet / any more).
EventSource = Callable[[], EventStore | None]
Clock = Callable[[], datetime]

WARN_EVERY = timedelta(minutes=1)
MEASURES = ("delivered", "unique_opened", "unique_clicked")


def variant_ids(campaign: Campaign) -> list[int]:
    """The campaign's emails in variant order: message_id, then ab_message_ids."""
    return list(dict.fromkeys([campaign.message_id, *campaign.ab_message_ids]))


def ab_test_start(campaign: Campaign) -> datetime:
    """When the test began sending: its planned time, or the start if later."""
    planned = campaign.test_planned_at or campaign.planned_at
    times = [as_utc(t) for t in (campaign.started_at, planned) if t is not None]
    return max(times) if times else datetime.now(UTC)


def main_start(campaign: Campaign) -> datetime:
    """When the winner is decided: main_planned_at, or the default after the test."""
    planned = campaign.main_planned_at
    return rules.main_start(ab_test_start(campaign), as_utc(planned) if planned else None)


# --- the test: drawn at the start ------------------------------------------------------------


def draw_sample(session: Session, campaign: Campaign) -> list[int]:
    """Mark the test's sample in the started campaign's audience; each variant's size.

    Members are ranked in random order; the first `sample_size` are drawn, rank modulo
    the number of variants being the variant, which deals them evenly."""
    variants = len(variant_ids(campaign))
    summary = dict(campaign.audience_summary or {})
    accepted = session.scalar(
        select(func.count())
        .select_from(AudienceMember)
        .where(AudienceMember.campaign_id == campaign.id)
    )
    size = rules.sample_size(int(accepted or 0), campaign.ab_percent or 0, variants)
    ranked = (
        select(
            AudienceMember.id.label("member_id"),
            (func.row_number().over(order_by=func.random()) - 1).label("rank"),
        )
        .where(AudienceMember.campaign_id == campaign.id)
        .subquery("ranked")
    )
    session.execute(
        update(AudienceMember)
        .where(AudienceMember.id == ranked.c.member_id, ranked.c.rank < size)
        .values(ab_variant=ranked.c.rank % variants)
        .execution_options(synchronize_session=False)
    )
    shares = rules.split(size, variants)
    campaign.audience_summary = summary | {"ab_sample": shares}
    campaign.ab_phase = rules.Phase.TEST.value
    campaign.ab_winner = None
    campaign.ab_decided_at = None
    campaign.ab_figures = None
    return shares


# --- the decision ------------------------------------------------------------------------------


def figures(
    engine: StatisticsEngine, campaign: Campaign, sample: list[int]
) -> list[rules.VariantFigures]:
    """Each variant's test results, people's activity only, from the statistics engine."""
    result = engine.run(
        StatsQuery(
            project_id=campaign.project_id,
            group_by=("message",),
            measures=MEASURES,
            filters=(Filter("post", "eq", (campaign.post,)),),
        )
    )
    by_message = {row["message"]: row for row in result.rows}
    found = []
    for index, email_id in enumerate(variant_ids(campaign)):
        row = by_message.get(f"{campaign.message_type}_{email_id}", {})
        found.append(
            rules.VariantFigures(
                email_id=email_id,
                sample=sample[index] if index < len(sample) else 0,
                delivered=int(row.get("delivered") or 0),
                opened=int(row.get("unique_opened") or 0),
                clicked=int(row.get("unique_clicked") or 0),
            )
        )
    return found


def figures_out(
    campaign: Campaign, found: list[rules.VariantFigures], winner: int | None
) -> list[dict[str, Any]]:
    """The variants as stored in `ab_figures` and shown by the API."""
    parameter = campaign.win_parameter or rules.WinParameter.OPEN_RATE.value
    return [
        {
            "email_id": f.email_id,
            "message": f"{campaign.message_type}_{f.email_id}",
            "sample": f.sample,
            "delivered": f.delivered,
            "opened": f.opened,
            "clicked": f.clicked,
            "rate": f.rate(parameter),
            "winner": f.email_id == winner,
        }
        for f in found
    ]


def variants_view(campaign: Campaign) -> list[dict[str, Any]] | None:
    """`ab_variants` of the API: the frozen figures once decided; before, each
    variant's sample size, its figures null (live ones: the statistics, by message)."""
    if campaign.ab_figures is not None:
        return list(campaign.ab_figures)
    if campaign.ab_phase is None:
        return None
    sample = list((campaign.audience_summary or {}).get("ab_sample") or [])
    return [
        {
            "email_id": email_id,
            "message": f"{campaign.message_type}_{email_id}",
            "sample": int(sample[index]) if index < len(sample) else 0,
            "delivered": None,
            "opened": None,
            "clicked": None,
            "rate": None,
            "winner": False,
        }
        for index, email_id in enumerate(variant_ids(campaign))
    ]


class ABDecider:
    """The scheduler's A/B step: decides every test whose main time has come."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        events: EventSource | None,
        clock: Clock,
        owner: str,
        on_decided: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._events = events
        self._clock = clock
        self._owner = owner
        self._on_decided = on_decided
        # campaign id → the outbox's highest id when its main time was first seen here:
        # the store's cursor must reach it before the figures are read.
        self._horizons: dict[int, int] = {}
        self._warned: dict[int, datetime] = {}

    def decide_due(self) -> list[int]:
        """Decide the tests that are due and can be; the campaigns decided."""
        if self._events is None:
            return []  # this scheduler never holds the store: another process decides
        now = self._clock()
        decided = []
        for campaign_id in self._due(now):
            try:
                if self._decide(campaign_id, now):
                    decided.append(campaign_id)
            except Exception:
                # A store closing under the query, say: the rest of the scheduler's tick
                # (planned starts, automated runs) must not wait for statistics.
                log.exception("A/B decision failed", extra={"campaign_id": campaign_id})
        if decided and self._on_decided is not None:
            self._on_decided()
        return decided

    def _due(self, now: datetime) -> list[int]:
        query = select(Campaign).where(
            Campaign.post_type == PostType.AB,
            Campaign.state == State.RUNNING.value,
            Campaign.ab_phase == rules.Phase.TEST.value,
            # The sample is all spooled (its members would never be otherwise).
            Campaign.spool_built_at.is_not(None),
        )
        with self._sessions() as session:
            running = list(session.scalars(query.order_by(Campaign.id)))
            return [c.id for c in running if main_start(c) <= now]

    def _decide(self, campaign_id: int, now: datetime) -> bool:
        store = self._events() if self._events is not None else None
        if store is None:
            self._warn(campaign_id, now, "the event store is not open in this process")
            return False
        with self._sessions() as session:
            highest = int(session.scalar(select(func.max(OutboxEvent.id))) or 0)
        horizon = self._horizons.setdefault(campaign_id, highest)
        if store.cursor() < horizon:
            return False  # the projector is still catching up: next tick
        engine = StatisticsEngine(store)
        with transaction(self._sessions) as session:
            campaign = session.get(
                Campaign, campaign_id, with_for_update=True, populate_existing=True
            )
            if (
                campaign is None
                or campaign.state != State.RUNNING.value
                or campaign.ab_phase != rules.Phase.TEST.value
            ):
                self._horizons.pop(campaign_id, None)
                return False  # decided by another scheduler meanwhile, or paused
            sample = [int(n) for n in (campaign.audience_summary or {}).get("ab_sample") or []]
            found = figures(engine, campaign, sample)
            parameter = campaign.win_parameter or rules.WinParameter.OPEN_RATE.value
            best = found[rules.winner(found, parameter)]
            campaign.ab_phase = rules.Phase.MAIN.value
            campaign.ab_winner = best.email_id
            campaign.ab_decided_at = now
            campaign.ab_figures = figures_out(campaign, found, best.email_id)
            # The workers now spool the rest of the audience, with the winner.
            campaign.spool_cursor = None
            campaign.spool_built_at = None
            post = campaign.post
        self._horizons.pop(campaign_id, None)
        self._warned.pop(campaign_id, None)
        log.info(
            "A/B test decided",
            extra={
                "campaign_id": campaign_id,
                "post": post,
                "winner": best.email_id,
                "win_parameter": parameter,
                "variants": [asdict(f) for f in found],
                "owner": self._owner,
            },
        )
        return True

    def _warn(self, campaign_id: int, now: datetime, why: str) -> None:
        last = self._warned.get(campaign_id)
        if last is not None and now - last < WARN_EVERY:
            return
        self._warned[campaign_id] = now
        log.warning(
            "A/B test due but not decided",
            extra={"campaign_id": campaign_id, "reason": why, "owner": self._owner},
        )
