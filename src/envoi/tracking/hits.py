"""What passes between the HTTP edge (`tracking.api`, on the event loop) and the
recorder thread (`tracking.recorder`): a verified hit, and what became of it.

A hit carries only what the request said (its token already verified); everything
read from the database (the send, its message, the visitor's place) is found by
the recorder, many hits per transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Action(enum.Enum):
    """What a hit asks for. The first six are recorded as the outbox event of the same
    name; the two pages only read."""

    OPEN = "open"
    CLICK = "click"
    MIRROR = "mirror"
    UNSUBSCRIBE = "unsubscribe"
    FORWARD = "forward"
    GOAL = "goal"
    UNSUBSCRIBE_PAGE = "unsubscribe_page"  # GET /t/u/: the confirmation page
    FORWARD_PAGE = "forward_page"  # GET /t/f/: the form

    @property
    def kind(self) -> str:
        """The tracking kind it counts under (metrics): `unsubscribe_page` is `unsubscribe`."""
        return self.value.removesuffix("_page")


@dataclass(slots=True)
class Hit:
    action: Action
    send_id: int
    at: datetime  # when the request came (UTC): the event's `occurred_at`
    ip: str | None  # the client address (`tracking.api.client_address`)
    user_agent: str
    method: str  # GET, HEAD or POST
    link: int | None = None  # click: the link's index
    target: str | None = None  # click of a written link: its signed target
    goal: str | None = None
    value: float | None = None  # goal value
    unsubscribe_method: str | None = None  # "one-click" or "page"
    friend: str | None = None  # forward: the friend's address, as typed
    friend_name: str | None = None


class Result(enum.Enum):
    RECORDED = "recorded"  # its event is committed
    UNKNOWN = "unknown"  # a genuine token whose send is gone: nothing recorded
    NONE = "none"  # nothing to record (a page, an unsubscribe already done)
    REFUSED = "refused"  # bad input found against the database, or a limit reached
    FAILED = "failed"  # the database did not take it: answer 503


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    location: str | None = None  # click: where to redirect
    page: str | None = None  # mirror, unsubscribe and forward pages: the HTML to answer
    status: int = 200  # of the page

    @property
    def found(self) -> bool:
        return self.result is not Result.UNKNOWN


UNKNOWN = Outcome(Result.UNKNOWN)
FAILED = Outcome(Result.FAILED)
RECORDED = Outcome(Result.RECORDED)
