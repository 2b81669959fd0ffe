"""What each hit means, for one batch of the recorder, in its transaction.

`Tracker.prepare` enriches the hits before the transaction (`tracking.enrichment`);
`Tracker.apply` loads the batch's sends in one statement, decides each hit's outcome
(the redirect of a click, the page of a web view ...), writes what it causes and
returns the events to append. Opens, clicks, web views and goals only append an
event; unsubscribes and forwards write more (`tracking.services`), each in a
SAVEPOINT of its own so that one failing does not undo the others.

Machine opens and bot clicks are flagged here (`core.robots`, which needs how long
after delivery the hit came and, for clicks, how many distinct links of the send
were clicked within the last ten seconds: the window is kept in memory, per process).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from envoi.core.robots import judge_click, judge_open
from envoi.spool.bulk import OUTBOX, bulk_insert
from envoi.tracking import pages
from envoi.tracking import services as tracking
from envoi.tracking.clients import warm as warm_clients
from envoi.tracking.enrichment import Enricher
from envoi.tracking.hits import RECORDED, UNKNOWN, Action, Hit, Outcome, Result
from envoi.tracking.messages import Messages
from envoi.tracking.services import Forwarded, Send, SendLoader

log = logging.getLogger("envoi.tracking")

WARM_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
RECENT_SECONDS = 10.0  # the window of clicks `judge_click` counts links in
_SWEEP_SECONDS = 30.0  # how often sends without a recent click leave the window


class RecentClicks:
    """The links of each send clicked within the last RECENT_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clicks: dict[int, deque[tuple[float, int]]] = {}
        self._swept = clock()

    def add(self, send_id: int, link: int) -> int:
        """Note a click of `link`; the distinct links of the send in the window, this
        one included."""
        now = self._clock()
        since = now - RECENT_SECONDS
        clicks = self._clicks.get(send_id)
        if clicks is None:
            clicks = self._clicks[send_id] = deque()
        while clicks and clicks[0][0] < since:
            clicks.popleft()
        clicks.append((now, link))
        if now - self._swept > _SWEEP_SECONDS:
            self._sweep(since)
        return len({clicked for _, clicked in clicks})

    def _sweep(self, since: float) -> None:
        self._swept = self._clock()
        stale = [send for send, clicks in self._clicks.items() if clicks[-1][0] < since]
        for send in stale:
            del self._clicks[send]


@dataclass(slots=True)
class Batch:
    hits: list[Hit]
    visitors: list[dict[str, Any]]


class Tracker:
    def __init__(self, messages: Messages, enricher: Enricher) -> None:
        self._messages = messages
        self._enricher = enricher
        self._sends = SendLoader()
        self._recent = RecentClicks()
        self._apply: dict[Action, Callable[[Session, Hit, Send, dict[str, Any]], Outcome]] = {
            Action.MIRROR: self._mirror,
            Action.UNSUBSCRIBE: self._unsubscribe,
            Action.UNSUBSCRIBE_PAGE: self._unsubscribe_page,
            Action.FORWARD: self._forward,
            Action.FORWARD_PAGE: self._forward_page,
        }

    def warm(self) -> None:
        """Load what the first hit would otherwise wait for: ua-parser's rules (a few
        hundred milliseconds), the GeoIP database, the robots' patterns."""
        warm_clients()
        self._enricher.visitor("192.0.2.1", WARM_AGENT)
        judge_open(WARM_AGENT, "192.0.2.1", None)
        judge_click(WARM_AGENT, "192.0.2.1", "GET", None, 1)

    def prepare(self, hits: list[Hit]) -> Batch:
        visitor = self._enricher.visitor
        return Batch(hits, [visitor(hit.ip, hit.user_agent) for hit in hits])

    def apply(self, session: Session, batch: Batch) -> tuple[list[Outcome], list[dict[str, Any]]]:
        """Each hit's outcome, in order, and the events of the opens, clicks, web views
        and goals to append (the other hits wrote theirs)."""
        sends = self._sends.load(session, sorted({hit.send_id for hit in batch.hits}))
        events: list[dict[str, Any]] = []
        outcomes = []
        for hit, visitor in zip(batch.hits, batch.visitors, strict=True):
            send = sends.get(hit.send_id)
            action = hit.action
            if action is Action.OPEN:
                outcome = self._open(hit, send, visitor, events)
            elif action is Action.CLICK:
                outcome = self._click(session, hit, send, visitor, events)
            elif send is None:
                outcome = UNKNOWN
            elif action is Action.GOAL:
                data = send.data() | visitor
                data |= {"machine": None, "goal": hit.goal, "value": hit.value}
                events.append(send.event("goal", hit.at, data))
                outcome = RECORDED
            else:
                outcome = self._isolated(session, hit, send, visitor)
            outcomes.append(outcome)
        return outcomes, events

    def _open(
        self, hit: Hit, send: Send | None, visitor: dict[str, Any], events: list[dict[str, Any]]
    ) -> Outcome:
        if send is None:
            return UNKNOWN
        if not send.track_opens:
            return Outcome(Result.NONE)  # the pixel, no event
        data = send.data() | visitor
        data["machine"] = judge_open(
            hit.user_agent, hit.ip or "", send.seconds_after_delivery(hit.at)
        )
        events.append(send.event("open", hit.at, data))
        return RECORDED

    def _click(
        self,
        session: Session,
        hit: Hit,
        send: Send | None,
        visitor: dict[str, Any],
        events: list[dict[str, Any]],
    ) -> Outcome:
        link = hit.link or 0
        url = hit.target
        if send is None:
            # A written link's target is in its (genuine) token: the recipient still
            # gets there. A literal link's URL was in the send's message.
            return Outcome(Result.UNKNOWN, location=url)
        if url is None:
            url = self._messages.link_url(
                session, send.project_id, send.email_id, send.language, link
            )
            if url is None:
                return UNKNOWN
        if not send.track_clicks:
            return Outcome(Result.NONE, location=url)  # the redirect, no event
        recent = self._recent.add(send.id, link)
        after = send.seconds_after_delivery(hit.at)
        data = send.data() | visitor
        data["link"] = link
        data["url"] = url
        data["machine"] = judge_click(hit.user_agent, hit.ip or "", hit.method, after, recent)
        events.append(send.event("click", hit.at, data))
        return Outcome(Result.RECORDED, location=url)

    def _isolated(self, session: Session, hit: Hit, send: Send, visitor: dict[str, Any]) -> Outcome:
        """A hit that reads or writes more than its event, in a SAVEPOINT: its failure
        is its own (answered 503), the batch's other hits are kept."""
        try:
            with session.begin_nested():
                return self._apply[hit.action](session, hit, send, visitor)
        except Exception:
            log.exception(
                "tracking hit failed", extra={"send_id": send.id, "action": hit.action.value}
            )
            return Outcome(Result.FAILED)

    def _mirror(self, session: Session, hit: Hit, send: Send, visitor: dict[str, Any]) -> Outcome:
        page = tracking.web_view(session, send, self._messages)
        if page is None:
            return UNKNOWN
        data = send.data() | visitor
        data["machine"] = judge_open(
            hit.user_agent, hit.ip or "", send.seconds_after_delivery(hit.at)
        )
        bulk_insert(session, OUTBOX, [send.event("mirror", hit.at, data)])
        return Outcome(Result.RECORDED, page=page)

    def _unsubscribe_page(
        self, session: Session, hit: Hit, send: Send, _visitor: dict[str, Any]
    ) -> Outcome:
        state = tracking.unsubscribe_state(session, send, hit.at)
        if state.unsubscribed:
            return Outcome(Result.NONE, page=pages.already_unsubscribed(state.category))
        return Outcome(Result.NONE, page=pages.unsubscribe_form(send.recipient, state.category))

    def _unsubscribe(
        self, session: Session, hit: Hit, send: Send, visitor: dict[str, Any]
    ) -> Outcome:
        method = hit.unsubscribe_method or "page"
        if tracking.unsubscribe_send(session, send, method, hit.at, visitor):
            state = tracking.unsubscribe_state(session, send, hit.at)
            return Outcome(Result.RECORDED, page=pages.unsubscribed(state.category))
        state = tracking.unsubscribe_state(session, send, hit.at)
        return Outcome(Result.NONE, page=pages.already_unsubscribed(state.category))

    def _forward_page(
        self, session: Session, _hit: Hit, send: Send, _visitor: dict[str, Any]
    ) -> Outcome:
        left = tracking.MAX_FORWARDS - tracking.forwards_of(session, send)
        if left <= 0:
            return Outcome(Result.NONE, page=pages.forward_limited(), status=429)
        return Outcome(Result.NONE, page=pages.forward_form(left))

    def _forward(self, session: Session, hit: Hit, send: Send, visitor: dict[str, Any]) -> Outcome:
        done = tracking.forward(
            session, send, hit.friend or "", name=hit.friend_name, now=hit.at, visitor=visitor
        )
        if done is Forwarded.SENT:
            return Outcome(Result.RECORDED, page=pages.forwarded())
        if done is Forwarded.SKIPPED:
            # Answered as if sent: the page must not tell whether an address is
            # quarantined (unsubscribed, complained) to whoever types it in.
            return Outcome(Result.NONE, page=pages.forwarded())
        if done is Forwarded.LIMITED:
            return Outcome(Result.REFUSED, page=pages.forward_limited(), status=429)
        reason = "That is not a valid email address."
        return Outcome(Result.REFUSED, page=pages.forward_refused(reason), status=400)
