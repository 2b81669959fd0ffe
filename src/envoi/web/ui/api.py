"""HTTP routes of the web UI, under `/ui/`: login and logout (the session cookie of
`sessions`), the report builder page (seed 002) and the files it loads.

The pages are server-rendered Jinja templates (`templates/`) with one small script
and one style sheet (`static/`), all served from here: the UI needs no build step and
loads nothing from elsewhere. Their Content-Security-Policy allows only this origin.

CSRF: the cookie is `SameSite=Strict`, so another site's page cannot make the browser
send it; the two POSTs (login, logout) also refuse an `Origin` (else `Referer`) that is
not envoi's own, so another site cannot log a browser in or out either.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy.orm import Session, sessionmaker

from envoi.config import Settings
from envoi.core.errors import EnvoiError, Forbidden, TooManyRequests, Unauthorized
from envoi.projects.models import Project
from envoi.projects.services import Authenticator, find_by_login
from envoi.statistics.catalogue import DIMENSIONS, MEASURES
from envoi.statistics.definitions import Rate
from envoi.statistics.reports import AGGREGATED_FIELDS, GROUPING_FIELDS
from envoi.web.deps import SessionOrProject
from envoi.web.ui.sessions import SessionInvalid, session_cookies, session_project

router = APIRouter(tags=["web UI"], include_in_schema=False)

MAX_LOGIN, MAX_SECRET = 100, 4096  # longer is no login or secret of a project
REPORT_SEED = "002"  # the report builder's fields are seed 002's, from the catalogue

_templates = Environment(
    loader=PackageLoader("envoi.web.ui", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# Nothing but envoi itself: no inline script or style, no frame around the pages.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; object-src 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_STATIC_TYPES = {
    "reports.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
_STATIC = {
    name: resources.files("envoi.web.ui").joinpath("static", name).read_bytes()
    for name in _STATIC_TYPES
}


@dataclass(frozen=True)
class Field:
    """A checkbox of the report page: a catalogue name and what it means."""

    name: str
    doc: str
    kind: str  # "group", "count" or "rate": how the page shows its values


def _in_seed_order(names: list[str], order: tuple[str, ...]) -> list[str]:
    """`names` in the order of the seed's tables (`statistics.reports`), others last."""
    return sorted(names, key=lambda name: order.index(name) if name in order else len(order))


def report_fields() -> dict[str, list[Field]]:
    """Seed 002's grouping and aggregated fields: the catalogue's entries of the seed,
    in the order the seed lists them."""
    dimensions = [name for name, d in DIMENSIONS.items() if REPORT_SEED in d.seeds]
    groups = [
        Field(name, DIMENSIONS[name].doc, "group")
        for name in _in_seed_order(dimensions, GROUPING_FIELDS)
    ]
    names = [name for name, m in MEASURES.items() if REPORT_SEED in m.seeds]
    measures = [MEASURES[name] for name in _in_seed_order(names, AGGREGATED_FIELDS)]
    counts = [Field(m.name, m.doc, "count") for m in measures if not isinstance(m, Rate)]
    rates = [Field(m.name, m.doc, "rate") for m in measures if isinstance(m, Rate)]
    return {"groups": groups, "counts": counts, "rates": rates}


def render(template: str, status_code: int = 200, /, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=_PAGE_HEADERS)


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def _client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


def _logged_in(request: Request) -> Project | None:
    """The project of a session that holds, else None (the page sends to the login,
    whose form says so when the address is outside the project's allowlist)."""
    try:
        return session_project(request)
    except (SessionInvalid, Forbidden):
        return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request) -> bool:
    """Whether the POST comes from a page of envoi: its `Origin` (else its `Referer`)
    is the public URL's, or the host the request was sent to."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return False
    settings: Settings = request.app.state.settings
    host = request.headers.get("host", "").lower()
    own = {_origin(settings.public_url), f"http://{host}", f"https://{host}"}
    return _origin(origin) in own


def _cross_site() -> HTMLResponse:
    return render(
        "message.html",
        403,
        title="Request refused",
        text="This form can only be sent from envoi's own pages.",
    )


@router.get("/ui/")
def home(request: Request) -> RedirectResponse:
    return _redirect("/ui/reports" if _logged_in(request) else "/ui/login")


@router.get("/ui/login")
def login_form(request: Request) -> Response:
    if _logged_in(request):
        return _redirect("/ui/reports")
    return render("login.html", login="", error=None)


@router.post("/ui/login")
def login(
    request: Request,
    login: Annotated[str, Form()] = "",
    secret: Annotated[str, Form()] = "",
) -> Response:
    """Checks `login` and `secret` as Basic auth does (same throttle of failures per
    client address, same allowlist) and starts a session; the form again otherwise."""
    if not same_origin(request):
        return _cross_site()
    if len(login) > MAX_LOGIN or len(secret) > MAX_SECRET:
        # No project has them: refused as an unknown login is (same time, a failure
        # counted), without hashing megabytes.
        login, secret = "", ""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with factory() as session:
        project = find_by_login(session, login)
    authenticator: Authenticator = request.app.state.authenticator
    try:
        project = authenticator.authenticate(project, login, secret, _client_host(request))
    except (Unauthorized, Forbidden, TooManyRequests) as exc:
        return _login_failed(login, exc)
    cookies = session_cookies(request.app)
    response = _redirect("/ui/reports")
    cookies.set(response, cookies.issue(project))
    return response


def _login_failed(login: str, exc: EnvoiError) -> HTMLResponse:
    return render("login.html", exc.status_code, login=login, error=exc.message)


@router.post("/ui/logout")
def logout(request: Request) -> Response:
    if not same_origin(request):
        return _cross_site()
    response = _redirect("/ui/login")
    session_cookies(request.app).clear(response)
    return response


@router.get("/ui/whoami")
def whoami(project: SessionOrProject) -> dict[str, object]:
    """The project the request acts as (by its session or Basic credentials)."""
    return {"id": project.id, "login": project.login, "name": project.name}


@router.get("/ui/reports")
def reports_page(request: Request) -> Response:
    """Seed 002's report builder: fields to tick, filters, the table of the answer of
    `GET /api/v1/stats` (fetched by the page's script with the session cookie)."""
    try:
        project = session_project(request)
    except SessionInvalid:
        return _redirect("/ui/login")
    except Forbidden as exc:
        return render("message.html", 403, title="Not allowed", text=exc.message)
    return render("reports.html", project=project, **report_fields())


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    body = _STATIC.get(name)
    if body is None:
        return Response("not found", status_code=404, media_type="text/plain")
    # Revalidated on each load (a few KiB): a new version of envoi is seen at once.
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response(body, media_type=_STATIC_TYPES[name], headers=headers)
