"""The web UI's session cookie (seed 002: "client-server communication via a session
cookie", for the report builder).

The cookie is stateless: `PROJECT-ISSUED-FRAGMENT.MAC`, made with the tokens' `Signer`
(HMAC-SHA256 under the server's secret key, its own purpose `ui-session`). PROJECT is
the project's id, ISSUED the login time (Unix seconds), FRAGMENT 16 hex digits of the
SHA-256 of the project's stored secret hash. Every rotation of the secret stores a new
argon2 hash (a new salt even for the same secret), so it ends every session of the
project at once; nothing else can end a session early, since the server keeps no
session table: logging out removes the cookie from the browser.

A session lasts `LIFETIME_S` (12 hours) from the login, whatever the activity, and the
project's IP allowlist applies to its requests as it does to Basic auth.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.core.errors import EnvoiError, Forbidden
from envoi.core.tokens import Signer
from envoi.projects.models import Project
from envoi.projects.services import address_allowed

COOKIE_NAME = "envoi_session"
LIFETIME_S = 12 * 3600
PURPOSE = "ui-session"
# A cookie issued by another node of a cluster whose clock is ahead is still accepted.
CLOCK_SKEW_S = 60
_FRAGMENT_HEX = 16


class SessionInvalid(EnvoiError):
    """401 in the native error shape, without `WWW-Authenticate: Basic`: a browser
    answers that header with its own login dialog, which the UI's scripts never want."""

    status_code = 401


@dataclass(frozen=True)
class Claim:
    """What a genuine cookie says; whether it still holds is `SessionCookies.check`'s."""

    project_id: int
    issued_at: int
    fragment: str


def secret_fragment(secret_hash: str) -> str:
    """The part of the cookie that ties it to the project's current secret."""
    return hashlib.sha256(secret_hash.encode()).hexdigest()[:_FRAGMENT_HEX]


class SessionCookies:
    """Issues and reads session cookies. `clock` (Unix seconds) is injectable so a
    test can make a cookie issued in the past."""

    def __init__(
        self,
        signer: Signer,
        lifetime_s: int = LIFETIME_S,
        clock: Callable[[], float] = time.time,
        secure: bool = False,
    ) -> None:
        self._signer = signer
        self.lifetime_s = lifetime_s
        self._clock = clock
        self.secure = secure

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionCookies:
        # `Secure` when envoi is reached over https: the browser then never sends the
        # cookie in clear. Over plain http (a local install) it could not be sent at all.
        secure = urlsplit(settings.public_url).scheme == "https"
        return cls(Signer(settings.resolved_secret_key()), secure=secure)

    def issue(self, project: Project) -> str:
        issued_at = int(self._clock())
        value = f"{project.id}-{issued_at}-{secret_fragment(project.secret_hash)}"
        return self._signer.sign(PURPOSE, value)

    def read(self, cookie: str) -> Claim:
        """The claim of a genuine, unexpired cookie; SessionInvalid otherwise."""
        value = self._signer.unsign(PURPOSE, cookie)
        parts = value.split("-") if value is not None else []
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise SessionInvalid("Invalid session; log in again")
        claim = Claim(int(parts[0]), int(parts[1]), parts[2])
        age = self._clock() - claim.issued_at
        if age > self.lifetime_s or age < -CLOCK_SKEW_S:
            raise SessionInvalid("Session expired; log in again")
        return claim

    def check(self, claim: Claim, project: Project | None, client_host: str | None) -> Project:
        """The claim's project, if the session still holds for it from this address.

        The allowlist is checked before the secret, as Basic auth does: a client outside
        it learns nothing about the session."""
        if project is None:
            raise SessionInvalid("Invalid session; log in again")
        if not address_allowed(project.allowed_ips, client_host):
            raise Forbidden("API client IP not allowed")
        if not hmac.compare_digest(claim.fragment, secret_fragment(project.secret_hash)):
            raise SessionInvalid("Session ended: the project's secret changed; log in again")
        return project

    def set(self, response: Response, cookie: str) -> None:
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            max_age=self.lifetime_s,
            path="/",
            secure=self.secure,
            httponly=True,  # out of reach of scripts, so of an injected one too
            samesite="strict",  # never sent with a request another site starts (CSRF)
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE_NAME, path="/", secure=self.secure, httponly=True, samesite="strict"
        )


def session_cookies(app: FastAPI) -> SessionCookies:
    """The app's `SessionCookies`, made from its settings on first use and kept on
    `app.state.ui_sessions` (where a test may put its own beforehand)."""
    cookies: SessionCookies | None = getattr(app.state, "ui_sessions", None)
    if cookies is None:
        settings: Settings = app.state.settings
        cookies = SessionCookies.from_settings(settings)
        app.state.ui_sessions = cookies
    return cookies


def session_project(request: Request) -> Project:
    """The project of the request's session cookie; SessionInvalid (401) when there is
    none or it does not hold, Forbidden (403) from an address outside the allowlist."""
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie is None:
        raise SessionInvalid("Not logged in")
    cookies = session_cookies(request.app)
    claim = cookies.read(cookie)
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        project = session.get(Project, claim.project_id)
    client_host = request.client.host if request.client else None
    return cookies.check(claim, project, client_host)


def from_script(request: Request) -> bool:
    """Whether a page's script (fetch) made the request rather than a navigation or a
    non-browser client: browsers set `Sec-Fetch-Mode`, and no script can change it."""
    mode = request.headers.get("sec-fetch-mode")
    return mode is not None and mode != "navigate"
