"""Request dependencies shared by every native API router: the session and the project."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.core.errors import Unauthorized
from envoi.projects.models import Project
from envoi.projects.services import Authenticator, find_by_login
from envoi.web.ui.sessions import COOKIE_NAME, SessionInvalid, from_script, session_project


def get_session(request: Request) -> Iterator[Session]:
    """A session per request. Handlers commit explicitly before they answer, so an
    acknowledged write is durable; anything left uncommitted is rolled back here."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        yield session


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _basic_credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("Authentication credentials were not provided")
    try:
        login, sep, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("Malformed Basic authorization header") from None
    if not sep:
        raise Unauthorized("Malformed Basic authorization header")
    return login, secret


def get_project(request: Request) -> Project:
    """The project whose `login:secret` the request carries, from an allowed address.

    The project is read in a transaction of its own that ends before the (slow) secret
    check, so a flood of wrong secrets never holds SQLite's write lock.
    """
    login, secret = _basic_credentials(request)
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        project = find_by_login(session, login)
    authenticator: Authenticator = request.app.state.authenticator
    client_host = request.client.host if request.client else None
    return authenticator.authenticate(project, login, secret, client_host)


def get_project_or_session(request: Request) -> Project:
    """The project of the request's Basic credentials or, for the web UI, of its
    session cookie (seed 002: the report builder answers both).

    An Authorization header decides alone when there is one; else the cookie does
    (`web.ui.sessions`: 401 when it is tampered with, expired, or its project's secret
    changed; the IP allowlist applies). A page's script without either gets its 401
    without the Basic challenge, so the browser shows no login dialog over the page.
    """
    if "authorization" in request.headers:
        return get_project(request)
    if COOKIE_NAME in request.cookies:
        return session_project(request)
    if from_script(request):
        raise SessionInvalid("Not logged in")
    return get_project(request)


Db = Annotated[Session, Depends(get_session)]
CurrentProject = Annotated[Project, Depends(get_project)]
AppSettings = Annotated[Settings, Depends(get_settings)]
SessionOrProject = Annotated[Project, Depends(get_project_or_session)]
