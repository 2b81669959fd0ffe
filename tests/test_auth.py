"""Basic auth, the IP allowlist and the health probe, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from envoi.core.errors import TooManyRequests, Unauthorized
from envoi.db.session import transaction
from envoi.projects.services import Authenticator, rotate_secret
from tests.conftest import ApiProject, Backend, ProjectFactory


def test_health_needs_no_credentials(anonymous: httpx.Client) -> None:
    response = anonymous.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_missing_credentials_are_401_with_json(anonymous: httpx.Client) -> None:
    response = anonymous.get("/api/v1/categories")
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided"}
    assert response.headers["www-authenticate"].startswith("Basic")


def test_wrong_secret_is_401(project: ApiProject, backend: Backend) -> None:
    response = httpx.get(
        f"{backend.base_url}/api/v1/categories", auth=(project.creds.login, "wrong")
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid login or secret"}


def test_unknown_login_is_401(backend: Backend) -> None:
    response = httpx.get(f"{backend.base_url}/api/v1/categories", auth=("nobody", "x"))
    assert response.status_code == 401


def test_malformed_header_is_401(anonymous: httpx.Client) -> None:
    response = anonymous.get("/api/v1/categories", headers={"Authorization": "Basic !!!"})
    assert response.status_code == 401
    assert response.json() == {"detail": "Malformed Basic authorization header"}


def test_right_credentials_pass(project: ApiProject) -> None:
    assert project.client.get("/categories").status_code == 200


def test_address_outside_allowlist_is_403(make_project: ProjectFactory) -> None:
    project = make_project(allowed_ips=("10.0.0.0/8",))
    response = project.client.get("/categories")
    assert response.status_code == 403
    assert response.json() == {"detail": "API client IP not allowed"}


def test_address_inside_allowlist_passes(make_project: ProjectFactory) -> None:
    project = make_project(allowed_ips=("10.0.0.0/8", "127.0.0.1/32"))
    assert project.client.get("/categories").status_code == 200


def test_rotated_secret_replaces_the_old_one_at_once(project: ApiProject, backend: Backend) -> None:
    assert project.client.get("/categories").status_code == 200  # now cached as verified
    with transaction(backend.sessions) as session:
        new_secret = rotate_secret(session, project.id)
    assert project.client.get("/categories").status_code == 401
    response = httpx.get(
        f"{backend.base_url}/api/v1/categories", auth=(project.creds.login, new_secret)
    )
    assert response.status_code == 200


def test_openapi_is_served(anonymous: httpx.Client) -> None:
    spec = anonymous.get("/api/v1/openapi.json").json()
    assert "/api/v1/categories" in spec["paths"]


def test_outside_the_allowlist_the_secret_is_not_even_checked(
    make_project: ProjectFactory, backend: Backend
) -> None:
    # A 401 for a wrong secret and a 403 for the right one would let a client outside
    # the allowlist guess the secret: both answers are the same 403.
    project = make_project(allowed_ips=("10.0.0.0/8",))
    wrong = httpx.get(f"{backend.base_url}/api/v1/categories", auth=(project.creds.login, "no"))
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "API client IP not allowed"}


def test_unknown_logins_cost_as_much_as_wrong_secrets(
    project: ApiProject, backend: Backend
) -> None:
    # The secret check is argon2 (tens of ms); an unknown login runs it on a decoy hash,
    # so response times do not reveal which logins exist.
    def slowest_of_three(login: str) -> float:
        times = []
        for _ in range(3):
            response = httpx.get(f"{backend.base_url}/api/v1/categories", auth=(login, "no"))
            assert response.status_code == 401
            times.append(response.elapsed.total_seconds())
        return sorted(times)[1]

    wrong_secret = slowest_of_three(project.creds.login)
    unknown_login = slowest_of_three("no-such-login")
    assert unknown_login > wrong_secret / 4


def test_a_client_that_keeps_failing_is_throttled() -> None:
    # Unit-level: 30 failures a minute from one address, then 429 without any check.
    authenticator = Authenticator(max_failures=3, failure_window_s=60)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            authenticator.authenticate(None, "nobody", "x", "192.0.2.1")
    with pytest.raises(TooManyRequests):
        authenticator.authenticate(None, "nobody", "x", "192.0.2.1")
    with pytest.raises(Unauthorized):  # another address is not affected
        authenticator.authenticate(None, "nobody", "x", "192.0.2.2")
