"""The public tracking endpoints, `/t/...`, answered by a pure ASGI middleware.

    GET|HEAD  /t/o/TOKEN              open pixel (1x1 GIF)
    GET|HEAD  /t/c/TOKEN[?u=TARGET]   click: 302 to the link
    GET       /t/m/TOKEN              web view ("mirror")
    GET|POST  /t/u/TOKEN              unsubscribe: confirmation page | at once (RFC 8058)
    GET|POST  /t/f/TOKEN              forward to a friend: form | send
    GET|POST  /t/g/TOKEN              goal: pixel (query) | JSON, 204

`TrackingMiddleware` is the app's outermost middleware (`web.app` adds it last): it
answers every `/t/` path itself, so a hit never goes through FastAPI's routing,
dependency injection or the other middlewares, whose cost per request is several
times the work of a hit. On the event loop a hit's token is verified (one HMAC,
microseconds); a genuine hit is handed to the recorder thread (`tracking.recorder`),
and answered once its batch has committed. A token that does not verify is never
recorded (counted in `envoi_tracking_forged_total`): a click or a page answers 404
(never a redirect), an open pixel still gets its GIF (an image that fails to load
tells nobody anything, and a mail client shows none broken).

docs/tracking.md says what each endpoint answers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from envoi.config import Settings
from envoi.core.tokens import MessageLinks, Signer, read_click
from envoi.tracking import http, pages
from envoi.tracking.enrichment import Enricher
from envoi.tracking.geo import open_locator
from envoi.tracking.hits import FAILED, Action, Hit, Outcome, Result
from envoi.tracking.messages import Messages
from envoi.tracking.metrics import TrackingMetrics
from envoi.tracking.recorder import Recorder, Unavailable
from envoi.tracking.tracker import Tracker

PREFIX = "/t/"
# A goal's name: what the customer's site calls its conversions ("purchase", "signup").
GOAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
GOAL_VALUE_MAX = 1e12
FRIEND_NAME_MAX = 100
ADDRESS_MAX = 254
_SEND_ID_DIGITS = 18  # a spool id fits a BIGINT
# The goal endpoint is called by the customer's site, from its pages' scripts too.
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-max-age", b"86400"),
]

Endpoint = Callable[[Scope, Receive, Send, str], Awaitable[None]]


class Tracking:
    """The tracking endpoints of one app and their recorder."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        metrics: TrackingMetrics,
    ) -> None:
        signer = Signer(settings.resolved_secret_key())
        links = MessageLinks(settings.public_url, signer)
        tracker = Tracker(
            Messages(links, settings.bounce_domain),
            Enricher(open_locator(settings.geoip_database)),
        )
        self.metrics = metrics
        self.recorder = Recorder(sessions, tracker, metrics)
        self._tracker = tracker
        self._signer = signer
        self._endpoints: dict[str, Endpoint] = {
            "o": self._open,
            "c": self._click,
            "m": self._mirror,
            "u": self._unsubscribe,
            "f": self._forward,
            "g": self._goal,
        }

    def start(self) -> None:
        """Before the server takes requests (the app's lifespan): ready to answer the
        first hit as fast as the others."""
        self._tracker.warm()
        self.recorder.start()

    def stop(self) -> None:
        self.recorder.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, slash, token = scope["path"][len(PREFIX) :].partition("/")
        endpoint = self._endpoints.get(kind)
        if endpoint is None or not slash or "/" in token:
            await http.not_found(send, scope["method"])
            return
        try:
            await endpoint(scope, receive, send, token)
        except ClientDisconnect:
            return

    # -- endpoints ---------------------------------------------------------------------

    async def _open(self, scope: Scope, _receive: Receive, send: Send, token: str) -> None:
        method = scope["method"]
        if method not in {"GET", "HEAD"}:
            await http.not_allowed(send, b"GET, HEAD")
            return
        send_id = self._verify("open", token)
        # A HEAD fetches no image: it is no open.
        if send_id is not None and method == "GET":
            outcome = await self._record(_hit(Action.OPEN, send_id, scope))
            if outcome.result is Result.FAILED:
                await http.unavailable(send)
                return
        await http.pixel(send, method)

    async def _click(self, scope: Scope, _receive: Receive, send: Send, token: str) -> None:
        method = scope["method"]
        if method not in {"GET", "HEAD"}:
            await http.not_allowed(send, b"GET, HEAD")
            return
        targets = [
            value
            for name, value in parse_qsl(scope["query_string"].decode("latin-1"))
            if name == "u"
        ]
        # Two targets: which one would the MAC cover? Neither is followed.
        click = None
        if len(targets) <= 1:
            click = read_click(self._signer, token, targets[0] if targets else None)
        if click is None:
            self.metrics.forged_hit("click")
            await http.not_found(send, method)
            return
        hit = _hit(Action.CLICK, click.send_id, scope)
        hit.link, hit.target = click.link, click.target
        outcome = await self._record(hit)
        if outcome.result is Result.FAILED:
            await http.unavailable(send)
        elif outcome.location is None:
            await http.not_found(send, method)
        else:
            await http.redirect(send, outcome.location)

    async def _mirror(self, scope: Scope, _receive: Receive, send: Send, token: str) -> None:
        send_id = await self._page_request(scope, send, "mirror", token, b"GET, HEAD")
        if send_id is None:
            return
        await self._page(send, await self._record(_hit(Action.MIRROR, send_id, scope)))

    async def _unsubscribe(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        send_id = await self._page_request(scope, send, "unsubscribe", token, b"GET, HEAD, POST")
        if send_id is None:
            return
        if scope["method"] == "GET":
            # RFC 8058: a GET (a link scanner's, a prefetch's) never unsubscribes.
            outcome = await self._record(_hit(Action.UNSUBSCRIBE_PAGE, send_id, scope))
            await self._page(send, outcome)
            return
        form = await self._form(scope, receive, send)
        if form is None:
            return
        if form.get("List-Unsubscribe") == "One-Click":
            how = "one-click"  # RFC 8058: the mailbox provider's unsubscribe button
        elif form.get("unsubscribe"):
            how = "page"  # the confirmation page's button
        else:
            reason = "Send List-Unsubscribe=One-Click, or use the unsubscribe page."
            await http.html(send, 400, pages.bad_request(reason))
            return
        hit = _hit(Action.UNSUBSCRIBE, send_id, scope)
        hit.unsubscribe_method = how
        await self._page(send, await self._record(hit))

    async def _forward(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        send_id = await self._page_request(scope, send, "forward", token, b"GET, HEAD, POST")
        if send_id is None:
            return
        if scope["method"] == "GET":
            await self._page(send, await self._record(_hit(Action.FORWARD_PAGE, send_id, scope)))
            return
        form = await self._form(scope, receive, send)
        if form is None:
            return
        friend = _friend(form)
        if isinstance(friend, str):
            await http.html(send, 400, pages.forward_refused(friend))
            return
        hit = _hit(Action.FORWARD, send_id, scope)
        hit.friend, hit.friend_name = friend
        await self._page(send, await self._record(hit))

    async def _goal(self, scope: Scope, receive: Receive, send: Send, token: str) -> None:
        method = scope["method"]
        if method == "OPTIONS":  # a browser's preflight before a script's JSON POST
            await http.answer(send, 204, _CORS)
            return
        if method not in {"GET", "POST"}:
            await http.not_allowed(send, b"GET, POST, OPTIONS")
            return
        send_id = self._verify("goal", token)
        if send_id is None:
            await http.json_answer(send, 404, {"detail": "no such goal token"}, _CORS)
            return
        if method == "GET":
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            goal: tuple[str, float | None] | str = _goal_of(query.get("goal"), query.get("value"))
        else:
            goal = await self._goal_body(receive)
        if isinstance(goal, str):
            await http.json_answer(send, 400, {"detail": goal}, _CORS)
            return
        hit = _hit(Action.GOAL, send_id, scope)
        hit.goal, hit.value = goal
        outcome = await self._record(hit)
        if outcome.result is Result.FAILED:
            await http.json_answer(send, 503, {"detail": "try again later"}, _CORS)
        elif not outcome.found:
            await http.json_answer(send, 404, {"detail": "the message is gone"}, _CORS)
        elif method == "GET":
            await http.pixel(send, method)
        else:
            await http.json_answer(send, 204, None, _CORS)

    # -- helpers -----------------------------------------------------------------------

    def _verify(self, purpose: str, token: str) -> int | None:
        """The send id of a genuine token of `purpose`, else None (counted as forged)."""
        value = self._signer.unsign(purpose, token)
        if (
            value is None
            or len(value) > _SEND_ID_DIGITS
            or not (value.isascii() and value.isdigit())
        ):
            self.metrics.forged_hit(purpose)
            return None
        return int(value)

    async def _page_request(
        self, scope: Scope, send: Send, purpose: str, token: str, allowed: bytes
    ) -> int | None:
        """The send id of a request for a page (`allowed` methods) with a genuine token
        of `purpose`; None when it is already answered: a method not allowed, a forged
        token (404), or a HEAD (a link checker's: nothing shown, nothing recorded)."""
        method = scope["method"]
        if method.encode() not in allowed.split(b", "):
            await http.not_allowed(send, allowed)
            return None
        send_id = self._verify(purpose, token)
        if send_id is None:
            await http.not_found(send, method)
            return None
        if method == "HEAD":
            await http.html(send, 200, "", method)
            return None
        return send_id

    async def _record(self, hit: Hit) -> Outcome:
        try:
            return await self.recorder.record(hit)
        except Unavailable:
            self.metrics.hits.labels(hit.action.kind, Result.FAILED.value).inc()
            return FAILED

    @staticmethod
    async def _page(send: Send, outcome: Outcome) -> None:
        if outcome.result is Result.FAILED:
            await http.unavailable(send)
        elif outcome.page is None:
            await http.not_found(send)
        else:
            await http.html(send, outcome.status, outcome.page)

    @staticmethod
    async def _form(scope: Scope, receive: Receive, send: Send) -> dict[str, str] | None:
        """The POSTed form's text fields; None when already answered (too big, unreadable)."""
        try:
            body = await http.read_body(receive)
        except http.BodyTooLarge:
            await http.html(send, 413, pages.bad_request("The request is too large."))
            return None
        form = await http.read_form(scope, body)
        if form is None:
            await http.html(send, 400, pages.bad_request("The form could not be read."))
        return form

    @staticmethod
    async def _goal_body(receive: Receive) -> tuple[str, float | None] | str:
        """(goal, value) from a JSON body `{"goal": ..., "value": ...}`, or what is wrong."""
        try:
            body = await http.read_body(receive)
        except http.BodyTooLarge:
            return "the body is too large"
        try:
            document = json.loads(body)
        except ValueError:
            return 'the body must be JSON: {"goal": "NAME", "value": NUMBER}'
        if not isinstance(document, dict):
            return 'the body must be a JSON object: {"goal": "NAME", "value": NUMBER}'
        unknown = set(document) - {"goal", "value"}
        if unknown:
            return f"unknown field(s): {', '.join(sorted(unknown))}"
        value = document.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            return "value must be a number"
        return _goal_of(document.get("goal"), value)


def _goal_of(name: object, value: object) -> tuple[str, float | None] | str:
    """The checked (goal, value), or what is wrong with them."""
    if not isinstance(name, str) or not GOAL_NAME.fullmatch(name):
        return (
            "goal must be 1 to 64 letters, digits, '_', '.', ':' or '-', starting with a "
            "letter or digit"
        )
    if value is None or value == "":
        return name, None
    try:
        number = float(value)  # type: ignore[arg-type]  # str or number, both checked
    except (TypeError, ValueError):
        return "value must be a number"
    if not math.isfinite(number) or abs(number) > GOAL_VALUE_MAX:
        return f"value must be a finite number of at most {GOAL_VALUE_MAX:.0e} in size"
    return name, number


def _friend(form: dict[str, str]) -> tuple[str, str | None] | str:
    """(address, name or None) from the forward form, or what is wrong with it (the
    address itself is checked by the recorder, with the spool's rules)."""
    address = form.get("email", "").strip()
    name = form.get("name", "").strip() or None
    if not address or len(address) > ADDRESS_MAX:
        return "Give your friend's email address."
    if name is not None and len(name) > FRIEND_NAME_MAX:
        return "That name is too long."
    return address, name


def _hit(action: Action, send_id: int, scope: Scope) -> Hit:
    return Hit(
        action,
        send_id,
        datetime.now(UTC),
        http.client_address(scope),
        http.header(scope, b"user-agent"),
        scope["method"],
    )


class TrackingMiddleware:
    """Answers `/t/` paths with `tracking`; passes everything else to the app."""

    def __init__(self, app: ASGIApp, tracking: Tracking) -> None:
        self.app = app
        self.tracking = tracking

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await self.tracking(scope, receive, send)
        else:
            await self.app(scope, receive, send)
