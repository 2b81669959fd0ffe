"""Which router sends a message (`RoutingTable`), and the transport of a router (`make_transport`).

`RoutingTable` answers, for one message, which router sends it: the first rule (by
position) whose every set condition matches, else the project's default router, else
the operator's `ENVOI_DEFAULT_ROUTER` (a shared router of that name, or the built-in
capture router). Rules and recipients' domains are compared in one form,
`core.providers.normalize_domain` (lower case, Unicode).

`make_transport` never raises for a stored definition: one it cannot use (a config a
later version rejects, a `ca_file` gone, an unknown kind) gives an `UnusableTransport`
that fails every message temporarily, saying why, so the worker records a retry
rather than crashing on the row. It also decides where the transport may connect
(`routers.network`): anywhere for a router the operator trusts (a shared one, or one
with `allow_private_network`, which only the operator can set), public addresses and
the operator's `trusted_hosts` for the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from envoi.core.providers import normalize_domain, provider_of
from envoi.delivery.interfaces import Envelope, SmtpReply, Transport
from envoi.routers.capture import CaptureTransport
from envoi.routers.models import Router, RoutingRule
from envoi.routers.mx import MxTransport
from envoi.routers.network import OPEN, AddressPolicy
from envoi.routers.schemas import MxConfig, SmtpConfig
from envoi.routers.smtp import SmtpTransport

log = logging.getLogger("envoi.routers")

# How often an unusable router tries to build its transport again (a ca_file restored).
REBUILD_SECONDS = 60.0


@dataclass(frozen=True)
class RouterSpec:
    """What a worker needs to build a router's transport (`id` None: built-in capture).

    `trusted`: the operator vouches for the router (a shared one), so it may connect to
    private addresses; a project router is trusted through its config's
    `allow_private_network`, which only the operator can set.
    """

    id: int | None
    name: str
    kind: str
    config: dict[str, Any]
    trusted: bool = False


CAPTURE = RouterSpec(None, "capture", "capture", {})


def spec_of(router: Router) -> RouterSpec:
    config = dict(router.config or {})
    return RouterSpec(router.id, router.name, router.kind, config, router.project_id is None)


# -- transports ----------------------------------------------------------------------------


class UnusableTransport:
    """A router whose transport cannot be built: every message fails temporarily
    (code 0) with the reason. Every `REBUILD_SECONDS` a send tries to build it again
    (the file it lacked may be back); once that works, it sends through it."""

    def __init__(
        self,
        reason: str,
        rebuild: Callable[[], Transport] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reason = reason
        self._rebuild = rebuild
        self._clock = clock
        self._retry_at = clock() + REBUILD_SECONDS
        self._built: Transport | None = None

    async def send(self, envelope: Envelope, data: bytes) -> SmtpReply:
        if self._built is None and self._rebuild is not None and self._clock() >= self._retry_at:
            self._retry_at = self._clock() + REBUILD_SECONDS
            try:
                self._built = self._rebuild()
            except Exception as exc:
                log.warning("router still unusable", extra={"error": _why(exc)})
        if self._built is not None:
            return await self._built.send(envelope, data)
        return SmtpReply(0, None, self.reason)

    async def close(self) -> None:
        if self._built is not None:
            await self._built.close()


def make_transport(
    spec: RouterSpec,
    sessions: sessionmaker[Session],
    *,
    resolver: dns.asyncresolver.Resolver | None = None,
    trusted_hosts: Collection[str] = (),
) -> Transport:
    """The transport of one router definition; never raises (see the module docstring).

    `trusted_hosts`: the operator's allowlist of relay or MX hosts a project's router
    may reach although they are private (names, addresses or networks).
    """

    def build() -> Transport:
        return _build(spec, sessions, resolver, trusted_hosts)

    try:
        return build()
    except Exception as exc:
        reason = f"router {spec.name!r} cannot send: {_why(exc)}"
        # A configuration to fix, not a bug: no traceback.
        log.error("router unusable", extra={"router": spec.name, "error": reason})
        return UnusableTransport(reason, build)


def _build(
    spec: RouterSpec,
    sessions: sessionmaker[Session],
    resolver: dns.asyncresolver.Resolver | None,
    trusted_hosts: Collection[str],
) -> Transport:
    if spec.kind == "capture":
        return CaptureTransport(sessions, router_id=spec.id)
    trusted = spec.trusted or spec.config.get("allow_private_network") is True
    policy = OPEN if trusted else AddressPolicy.of(trusted_hosts=trusted_hosts)
    if spec.kind == "smtp":
        return SmtpTransport(SmtpConfig.model_validate(spec.config), policy=policy)
    if spec.kind == "mx":
        config = MxConfig.model_validate(spec.config)
        return MxTransport(config, resolver=resolver, policy=policy)
    raise ValueError(f"unknown router kind {spec.kind!r}")


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        return f"config {where}: {first['msg']}" if where else f"config: {first['msg']}"
    return f"{type(exc).__name__}: {exc}"


# -- routing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    router: RouterSpec
    campaign_id: int | None
    message_type: str | None
    domain: str | None
    provider: str | None

    def matches(self, campaign_id: int | None, message_type: str, domain: str) -> bool:
        return (
            (self.campaign_id is None or self.campaign_id == campaign_id)
            and (self.message_type is None or self.message_type == message_type)
            and (self.domain is None or self.domain == domain)
            and (self.provider is None or self.provider == provider_of(domain))
        )


def _comparable(domain: str) -> str:
    """A recipient's domain in the rules' form. Addresses are stored normalised
    already (U-labels); only an `xn--` form, or an invalid name, needs the full path."""
    lowered = domain.lower().rstrip(".")
    if "xn--" in lowered:
        try:
            return normalize_domain(lowered)
        except ValueError:
            return lowered
    return lowered


class RoutingTable:
    """A project's rules and fallback, loaded once and consulted per message."""

    def __init__(self, rules: Sequence[_Rule], default: RouterSpec) -> None:
        self.rules = tuple(rules)
        self.default = default

    @classmethod
    def load(cls, session: Session, project_id: int, default_router: str) -> RoutingTable:
        rows = visible_routers(session, project_id)
        routers = {row.id: spec_of(row) for row in rows}
        rules = session.scalars(
            select(RoutingRule)
            .where(RoutingRule.project_id == project_id)
            .order_by(RoutingRule.position, RoutingRule.id)
        )
        table = [
            _Rule(routers[r.router_id], r.campaign_id, r.message_type, r.domain, r.provider)
            for r in rules
            if r.router_id in routers
        ]
        return cls(table, _fallback(rows, project_id, default_router))

    def choose(self, campaign_id: int | None, message_type: str, domain: str) -> RouterSpec:
        domain = _comparable(domain)
        for rule in self.rules:
            if rule.matches(campaign_id, message_type, domain):
                return rule.router
        return self.default


def _fallback(rows: list[Router], project_id: int, default_router: str) -> RouterSpec:
    """The project's default router, else the operator's shared one, else capture."""
    for row in rows:
        if row.project_id == project_id and row.is_default:
            return spec_of(row)
    for row in rows:
        if row.project_id is None and row.name == default_router:
            return spec_of(row)
    if default_router != CAPTURE.name:
        # Capturing is safer than failing every message; the operator is told.
        log.warning("ENVOI_DEFAULT_ROUTER names no shared router", extra={"router": default_router})
    return CAPTURE


def visible_routers(session: Session, project_id: int) -> list[Router]:
    """The project's routers and the shared ones, oldest first."""
    query = (
        select(Router)
        .where(or_(Router.project_id == project_id, Router.project_id.is_(None)))
        .order_by(Router.id)
    )
    return list(session.scalars(query))
