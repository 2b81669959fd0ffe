"""Projects and their credentials: creation, rotation, allowlists and authentication."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from envoi.core.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from envoi.projects.models import Project

_LOGIN = re.compile(r"^[A-Za-z0-9_.\-]{3,100}$")
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Credentials:
    """What `envoi project create` prints once: the secrets are not stored in clear."""

    id: int
    name: str
    login: str
    secret: str
    api_key: str
    access_token: str


def token_hash(token: str) -> str:
    """Tokens are random and long, so a plain SHA-256 is a safe, indexable stored form."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_networks(cidrs: Iterable[str]) -> list[str]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            raise Invalid(
                f"not an IP address or CIDR network: {cidr!r}", ("allowed_ips",)
            ) from None
    return networks


def _default_login(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "project"
    return f"{slug}-{secrets.token_hex(3)}"


def create_project(
    session: Session,
    name: str,
    login: str | None = None,
    secret: str | None = None,
    allowed_ips: Iterable[str] = (),
) -> Credentials:
    login = login or _default_login(name)
    if not _LOGIN.match(login):
        raise Invalid("login must be 3-100 letters, digits, '.', '_' or '-'", ("login",))
    if session.scalar(select(Project.id).where(Project.login == login)) is not None:
        raise Conflict(f"login {login!r} is taken")
    secret = secret or secrets.token_urlsafe(24)
    api_key = secrets.token_hex(20)
    access_token = secrets.token_urlsafe(32)
    project = Project(
        name=name,
        login=login,
        secret_hash=_hasher.hash(secret),
        api_key_hash=token_hash(api_key),
        access_token_hash=token_hash(access_token),
        allowed_ips=parse_networks(allowed_ips),
    )
    session.add(project)
    session.flush()
    return Credentials(project.id, name, login, secret, api_key, access_token)


def get_project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.id)))


def rotate_secret(session: Session, project_id: int, secret: str | None = None) -> str:
    project = get_project(session, project_id)
    secret = secret or secrets.token_urlsafe(24)
    project.secret_hash = _hasher.hash(secret)
    return secret


def set_allowed_ips(session: Session, project_id: int, cidrs: Iterable[str]) -> list[str]:
    project = get_project(session, project_id)
    project.allowed_ips = parse_networks(cidrs)
    return project.allowed_ips


# A DNS name of at least two labels (RFC 1035 letters, digits, hyphens; no IP literals).
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def set_bounce_domain(session: Session, project_id: int, domain: str | None) -> str | None:
    """The domain of the project's VERP return paths; None falls back to the operator's."""
    project = get_project(session, project_id)
    if domain is not None:
        domain = domain.strip().lower().rstrip(".")
        if not _DOMAIN.match(domain):
            raise Invalid(f"{domain!r} is not a domain name", ("bounce_domain",))
    project.bounce_domain = domain
    return domain


def address_allowed(allowed_ips: list[str], client_host: str | None) -> bool:
    if not allowed_ips:
        return True
    if client_host is None:
        return False
    try:
        address = ipaddress.ip_address(client_host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(cidr) for cidr in allowed_ips)


class Authenticator:
    """Checks `login:secret` against the stored argon2 hash.

    argon2 is deliberately slow (tens of ms), so a successful check is remembered for
    as long as the stored hash is unchanged: rotating the secret invalidates it at once.
    The caller loads the project in a short transaction of its own and calls
    `authenticate` after it ended, so the slow check never holds a database lock.
    """

    def __init__(
        self,
        max_entries: int = 1024,
        max_failures: int = 30,
        failure_window_s: float = 60.0,
        concurrent_checks: int = 4,
    ) -> None:
        self._verified: dict[tuple[str, str], str] = {}
        self._max_entries = max_entries
        # Each argon2 check takes ~64 MiB and tens of ms: bound how many run at once, and
        # stop checking for a client address that keeps failing.
        self._checks = threading.BoundedSemaphore(concurrent_checks)
        self._failures: dict[str, deque[float]] = {}
        self._max_failures = max_failures
        self._failure_window_s = failure_window_s
        # Verified when the login is unknown, so that answer takes as long as a wrong
        # secret and response times do not tell which logins exist.
        self._decoy_hash = _hasher.hash(secrets.token_urlsafe(24))

    def authenticate(
        self, project: Project | None, login: str, secret: str, client_host: str | None
    ) -> Project:
        """The project if `secret` is its secret and the client address is allowed.

        The allowlist is checked first: a client outside it learns nothing about the
        secret (no 401-versus-403 oracle to guess it with).
        """
        if self._too_many_failures(client_host):
            raise TooManyRequests("Too many failed authentications; retry later")
        if project is None:
            self._verify(self._decoy_hash, secret)
            self._record_failure(client_host)
            raise Unauthorized("Invalid login or secret")
        if not address_allowed(project.allowed_ips, client_host):
            raise Forbidden("API client IP not allowed")
        if not self._secret_matches(project, login, secret):
            self._record_failure(client_host)
            raise Unauthorized("Invalid login or secret")
        return project

    def _too_many_failures(self, client_host: str | None) -> bool:
        failures = self._failures.get(client_host or "")
        if not failures:
            return False
        horizon = time.monotonic() - self._failure_window_s
        while failures and failures[0] < horizon:
            failures.popleft()
        return len(failures) >= self._max_failures

    def _record_failure(self, client_host: str | None) -> None:
        if len(self._failures) >= self._max_entries:
            self._failures.clear()
        self._failures.setdefault(client_host or "", deque()).append(time.monotonic())

    def _secret_matches(self, project: Project, login: str, secret: str) -> bool:
        fingerprint = hashlib.sha256(secret.encode()).hexdigest()
        cached = self._verified.get((login, fingerprint))
        if cached is not None and hmac.compare_digest(cached, project.secret_hash):
            return True
        if not self._verify(project.secret_hash, secret):
            return False
        if len(self._verified) >= self._max_entries:
            self._verified.clear()
        self._verified[(login, fingerprint)] = project.secret_hash
        return True

    def _verify(self, secret_hash: str, secret: str) -> bool:
        with self._checks:
            try:
                return _hasher.verify(secret_hash, secret)
            except (VerificationError, InvalidHashError):
                return False


def find_by_login(session: Session, login: str) -> Project | None:
    return session.scalar(select(Project).where(Project.login == login))
