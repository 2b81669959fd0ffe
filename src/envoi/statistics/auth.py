"""The credentials of the compatible statistics surfaces: a project's API key (seed 001's
JSON-RPC) and its access token (seed 004's `?access_token=`).

Both are long random tokens stored as SHA-256 (`projects.services.token_hash`), so a
request's token is found by its hash through a unique index: no slow hash to verify,
nothing to guess. The project's IP allowlist applies to them exactly as to Basic auth.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from envoi.projects.models import Project
from envoi.projects.services import address_allowed, token_hash


@dataclass(frozen=True)
class Caller:
    """The project a token names, and the client addresses it accepts (CIDRs)."""

    project_id: int
    allowed_ips: tuple[str, ...]

    def allows(self, client_host: str | None) -> bool:
        return address_allowed(list(self.allowed_ips), client_host)


def _find(
    sessions: sessionmaker[Session], column: InstrumentedAttribute[str], token: str
) -> Caller | None:
    # A short transaction of its own: the statistics query that follows reads the event
    # store, not the OLTP database, and must not hold a connection meanwhile.
    with sessions() as session:
        row = session.execute(
            select(Project.id, Project.allowed_ips).where(column == token_hash(token))
        ).one_or_none()
    if row is None:
        return None
    return Caller(row.id, tuple(row.allowed_ips or ()))


def caller_by_api_key(sessions: sessionmaker[Session], api_key: str) -> Caller | None:
    """The project whose API key this is; None for any other string."""
    return _find(sessions, Project.api_key_hash, api_key) if api_key else None


def caller_by_access_token(sessions: sessionmaker[Session], token: str) -> Caller | None:
    """The project whose access token this is; None for any other string."""
    return _find(sessions, Project.access_token_hash, token) if token else None
