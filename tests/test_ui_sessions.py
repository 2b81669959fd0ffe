"""The web UI's session cookie over real HTTP, on SQLite and PostgreSQL: login through
the form (Basic auth's checks, throttle and allowlist), the cookie's attributes, the
cookie in place of Basic credentials (`SessionOrProject`), every way a cookie stops
holding (tampered, forged, expired, secret rotated, address no longer allowed), logout
and the Origin check of the two POSTs."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from envoi.core.tokens import Signer
from envoi.db.session import transaction
from envoi.projects.models import Project
from envoi.projects.services import create_project, rotate_secret, set_allowed_ips
from envoi.web.ui.api import report_fields
from envoi.web.ui.sessions import COOKIE_NAME, LIFETIME_S, SessionCookies
from tests.conftest import ApiProject, Backend, ProjectFactory, served_backend


@pytest.fixture
def browser(backend: Backend) -> Iterator[httpx.Client]:
    """A client that keeps cookies, as a browser does, and follows no redirect."""
    with httpx.Client(base_url=backend.base_url, timeout=60) as client:
        yield client


def log_in(
    client: httpx.Client, login: str, secret: str, origin: str | None = None
) -> httpx.Response:
    """The login form sent as a browser sends it (`Origin`: the page's own)."""
    origin = str(client.base_url).rstrip("/") if origin is None else origin
    headers = {"Origin": origin} if origin else {}
    return client.post("/ui/login", data={"login": login, "secret": secret}, headers=headers)


def session_cookie(response: httpx.Response) -> str:
    """The Set-Cookie header of the session, whole (value and attributes)."""
    headers = [h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE_NAME)]
    assert len(headers) == 1, response.headers
    return headers[0]


def attributes(set_cookie: str) -> dict[str, str]:
    """The attributes of a Set-Cookie header by lower-case name ('' for flags)."""
    pairs = (part.strip().partition("=") for part in set_cookie.split(";")[1:])
    return {name.lower(): value for name, _, value in pairs}


def forged(project: Project | ApiProject, backend: Backend, issued_at: float) -> str:
    """A genuine cookie of `project` issued at `issued_at`: the server's own key."""
    cookies = SessionCookies(
        Signer(backend.settings.resolved_secret_key()), clock=lambda: issued_at
    )
    with backend.sessions() as session:
        row = session.get(Project, project.id)
    assert row is not None
    return cookies.issue(row)


def whoami(client: httpx.Client, cookie: str | None = None) -> httpx.Response:
    """`GET /ui/whoami` (its project is `SessionOrProject`'s) with the client's own
    cookies, or with `cookie` alone as the session."""
    if cookie is None:
        return client.get("/ui/whoami")
    with httpx.Client(base_url=client.base_url, timeout=60) as fresh:
        return fresh.get("/ui/whoami", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})


def refused_session(response: httpx.Response, detail: str) -> None:
    """401 in the native shape, without a Basic challenge (no browser dialog)."""
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": detail}
    assert "www-authenticate" not in response.headers


# -- login ----------------------------------------------------------------------------------


def test_login_sets_an_http_only_strict_cookie_for_twelve_hours(
    browser: httpx.Client, project: ApiProject
) -> None:
    form = browser.get("/ui/login")
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("text/html")
    assert 'name="login"' in form.text
    assert 'name="secret"' in form.text
    assert 'type="password"' in form.text
    assert "default-src 'self'" in form.headers["content-security-policy"]

    response = log_in(browser, project.creds.login, project.creds.secret)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/reports"
    header = session_cookie(response)
    assert attributes(header) == {
        "httponly": "",
        "samesite": "strict",
        "path": "/",
        "max-age": str(LIFETIME_S),
    }
    assert LIFETIME_S == 12 * 3600
    # The value is the project, the time of login, a fragment of the secret's hash and
    # a MAC: nothing of the secret itself.
    value = header.split(";")[0].partition("=")[2]
    assert re.fullmatch(rf"{project.id}-\d{{10}}-[0-9a-f]{{16}}\.[0-9a-f]{{20}}", value)
    assert project.creds.secret not in value

    me = whoami(browser)
    assert me.status_code == 200
    assert me.json() == {"id": project.id, "login": project.creds.login, "name": "Test"}


def test_logged_in_the_ui_leads_to_the_report_page_and_out_to_the_login(
    browser: httpx.Client, project: ApiProject
) -> None:
    assert browser.get("/ui/").headers["location"] == "/ui/login"
    assert browser.get("/ui/reports").headers["location"] == "/ui/login"
    log_in(browser, project.creds.login, project.creds.secret)
    assert browser.get("/ui/").headers["location"] == "/ui/reports"
    assert browser.get("/ui/login").headers["location"] == "/ui/reports"
    page = browser.get("/ui/reports")
    assert page.status_code == 200
    assert project.creds.login in page.text
    # One checkbox per seed 002 field of the catalogue, and the page's own files.
    boxes = re.findall(r'<input type="checkbox" value="([a-z_]+)" data-kind="(\w+)">', page.text)
    fields = report_fields()
    assert boxes == [(f.name, f.kind) for group in fields.values() for f in group]
    assert len(fields["groups"]) == 18
    assert {"date", "message", "sum_delivered", "open_rate"} <= {name for name, _ in boxes}
    for asset in re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text):
        assert browser.get(asset).status_code == 200
    assert browser.get("/ui/static/api.py").status_code == 404  # only the page's files


def test_wrong_credentials_show_the_form_again_with_401_and_no_cookie(
    browser: httpx.Client, project: ApiProject
) -> None:
    for login, secret in (
        (project.creds.login, "not-the-secret"),
        ("no-such-login", project.creds.secret),
        ("", ""),
        (project.creds.login, "x" * 100_000),  # refused before any hashing
    ):
        response = log_in(browser, login, secret)
        assert response.status_code == 401
        assert "Invalid login or secret" in response.text
        assert 'name="secret"' in response.text
        assert not response.headers.get_list("set-cookie")
    assert project.creds.login in log_in(browser, project.creds.login, "wrong").text
    assert "Invalid login or secret" not in browser.get("/ui/login").text
    assert whoami(browser).status_code == 401


def test_failed_logins_and_failed_basic_auth_share_one_throttle(tmp_path: Path) -> None:
    with served_backend("sqlite", tmp_path, auth_max_failures=3) as backend:
        with transaction(backend.sessions) as session:
            creds = create_project(session, "Throttled", login="throttled")
        api = f"{backend.base_url}/api/v1/categories"
        with httpx.Client(base_url=backend.base_url, timeout=60) as browser:
            assert httpx.get(api, auth=("throttled", "wrong")).status_code == 401
            assert log_in(browser, "throttled", "wrong").status_code == 401
            assert httpx.get(api, auth=("nobody", "wrong")).status_code == 401
            # Three failures from this address: even the right secret is refused, by
            # either door, until the minute has passed.
            refused = log_in(browser, "throttled", creds.secret)
            assert refused.status_code == 429
            assert "Too many failed authentications" in refused.text
            assert not refused.headers.get_list("set-cookie")
            assert httpx.get(api, auth=("throttled", creds.secret)).status_code == 429


# -- the cookie as the credentials of SessionOrProject --------------------------------------


def test_the_cookie_authenticates_the_report_api_in_place_of_basic_auth(
    browser: httpx.Client, project: ApiProject, other_project: ApiProject
) -> None:
    log_in(browser, project.creds.login, project.creds.secret)
    # The report builder's endpoint takes the session: its answer, not a 401.
    report = browser.get("/api/v1/stats", params={"fields": "date,sum_delivered"})
    assert report.status_code == 200, report.text
    assert report.json()["error"] is None
    # Routes of plain Basic auth (CurrentProject) do not take the cookie.
    assert browser.get("/api/v1/categories").status_code == 401
    # An Authorization header decides alone, whatever the cookie says.
    other = browser.get("/ui/whoami", auth=(other_project.creds.login, other_project.creds.secret))
    assert other.json()["id"] == other_project.id
    assert browser.get("/ui/whoami", auth=(project.creds.login, "wrong")).status_code == 401
    assert whoami(browser).json()["id"] == project.id


def test_without_credentials_a_script_gets_401_without_a_basic_challenge(
    browser: httpx.Client,
) -> None:
    plain = browser.get("/ui/whoami")
    assert plain.status_code == 401
    assert plain.headers["www-authenticate"] == 'Basic realm="envoi"'
    refused_session(browser.get("/ui/whoami", headers={"Sec-Fetch-Mode": "cors"}), "Not logged in")


def test_a_tampered_or_forged_cookie_is_401(
    browser: httpx.Client, project: ApiProject, other_project: ApiProject, backend: Backend
) -> None:
    log_in(browser, project.creds.login, project.creds.secret)
    cookie = browser.cookies[COOKIE_NAME]
    value, _, mac = cookie.rpartition(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    _, issued, fragment = value.split("-")
    invalid = "Invalid session; log in again"
    for bad in (
        f"{value}.{flipped}",  # the MAC changed
        f"{other_project.id}-{issued}-{fragment}.{mac}",  # another project's id
        f"{project.id}-{int(issued) + 3600}-{fragment}.{mac}",  # a later login time
        value,  # no MAC
        "",
        "garbage",
        "1-2-3.4",
    ):
        refused_session(whoami(browser, bad), invalid)
    # Made with another key (another envoi's, a guess): not genuine.
    elsewhere = SessionCookies(Signer("another-key"))
    with backend.sessions() as session:
        row = session.get(Project, project.id)
    assert row is not None
    refused_session(whoami(browser, elsewhere.issue(row)), invalid)
    # Each project's genuine cookie stands for that project only.
    assert whoami(browser, cookie).json()["id"] == project.id
    theirs = forged(other_project, backend, time.time())
    assert whoami(browser, theirs).json()["id"] == other_project.id


def test_a_session_expires_twelve_hours_after_the_login(
    browser: httpx.Client, project: ApiProject, backend: Backend
) -> None:
    now = time.time()
    assert whoami(browser, forged(project, backend, now - LIFETIME_S + 60)).status_code == 200
    expired = forged(project, backend, now - LIFETIME_S - 1)
    refused_session(whoami(browser, expired), "Session expired; log in again")
    # A login time ahead of the server's clock (beyond a minute's skew) is no session.
    ahead = forged(project, backend, now + 3600)
    refused_session(whoami(browser, ahead), "Session expired; log in again")
    # The expired one sends the browser to the login page.
    browser.cookies.set(COOKIE_NAME, expired)
    assert browser.get("/ui/reports").headers["location"] == "/ui/login"


def test_rotating_the_secret_ends_every_session_of_the_project(
    browser: httpx.Client, project: ApiProject, other_project: ApiProject, backend: Backend
) -> None:
    log_in(browser, project.creds.login, project.creds.secret)
    before = browser.cookies[COOKIE_NAME]
    theirs = forged(other_project, backend, time.time())
    with transaction(backend.sessions) as session:
        # The same secret again: a new hash all the same, so the sessions end too.
        rotate_secret(session, project.id, project.creds.secret)
    ended = "Session ended: the project's secret changed; log in again"
    refused_session(whoami(browser), ended)
    assert whoami(browser, theirs).status_code == 200  # other projects keep theirs
    assert browser.get("/ui/reports").headers["location"] == "/ui/login"
    assert log_in(browser, project.creds.login, project.creds.secret).status_code == 303
    assert browser.cookies[COOKIE_NAME] != before
    assert whoami(browser).json()["id"] == project.id


def test_the_allowlist_applies_to_the_login_and_to_the_cookie(
    browser: httpx.Client, make_project: ProjectFactory, backend: Backend
) -> None:
    outside = make_project(allowed_ips=("10.0.0.0/8",))
    response = log_in(browser, outside.creds.login, outside.creds.secret)
    assert response.status_code == 403
    assert "API client IP not allowed" in response.text
    assert not response.headers.get_list("set-cookie")
    # Not even a genuine cookie works from outside the list.
    cookie = forged(outside, backend, time.time())
    response = whoami(browser, cookie)
    assert response.status_code == 403
    assert response.json() == {"detail": "API client IP not allowed"}

    inside = make_project(allowed_ips=("10.0.0.0/8", "127.0.0.1/32"))
    assert log_in(browser, inside.creds.login, inside.creds.secret).status_code == 303
    assert whoami(browser).json()["id"] == inside.id
    # The list changes under a running session: the next request is refused.
    with transaction(backend.sessions) as session:
        set_allowed_ips(session, inside.id, ["10.0.0.0/8"])
    assert whoami(browser).status_code == 403
    page = browser.get("/ui/reports")
    assert page.status_code == 403
    assert "API client IP not allowed" in page.text


# -- logout and the Origin check ------------------------------------------------------------


def test_logout_clears_the_cookie(browser: httpx.Client, project: ApiProject) -> None:
    log_in(browser, project.creds.login, project.creds.secret)
    assert whoami(browser).status_code == 200
    response = browser.post("/ui/logout", headers={"Origin": str(browser.base_url)})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    cleared = attributes(session_cookie(response))
    assert cleared["max-age"] == "0"
    assert (cleared["path"], cleared["samesite"]) == ("/", "strict")
    assert COOKIE_NAME not in browser.cookies
    assert whoami(browser).status_code == 401
    assert browser.get("/ui/").headers["location"] == "/ui/login"


def test_posts_from_another_origin_are_refused(browser: httpx.Client, project: ApiProject) -> None:
    login, secret = project.creds.login, project.creds.secret
    for origin in ("http://evil.test", "null", ""):
        response = log_in(browser, login, secret, origin=origin)
        assert response.status_code == 403
        assert "can only be sent from envoi" in response.text
        assert not response.headers.get_list("set-cookie")
    # A Referer stands for a missing Origin; the public URL's origin is envoi's too.
    own_page = f"{browser.base_url}/ui/login"
    response = browser.post(
        "/ui/login", data={"login": login, "secret": secret}, headers={"Referer": own_page}
    )
    assert response.status_code == 303
    assert log_in(browser, login, secret, origin="http://envoi.test").status_code == 303
    # Another site cannot log the browser out either.
    response = browser.post("/ui/logout", headers={"Origin": "http://evil.test"})
    assert response.status_code == 403
    assert not response.headers.get_list("set-cookie")
    assert whoami(browser).status_code == 200


def test_over_https_the_cookie_is_secure(tmp_path: Path) -> None:
    with served_backend("sqlite", tmp_path, public_url="https://envoi.example") as backend:
        with transaction(backend.sessions) as session:
            creds = create_project(session, "Secure", login="secure")
        with httpx.Client(base_url=backend.base_url, timeout=60) as client:
            response = log_in(client, "secure", creds.secret, origin="https://envoi.example")
            assert response.status_code == 303
            assert attributes(session_cookie(response))["secure"] == ""
            refused = log_in(client, "secure", creds.secret, origin="https://evil.example")
            assert refused.status_code == 403
