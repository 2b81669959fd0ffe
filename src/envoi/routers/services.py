"""Rules for routers: definitions, routing rules, and captured mail.

A project sees its own routers and the shared ones (`project_id` NULL). Through the
API it may route through a shared router but not see its settings nor change it; the
operator manages every router from the command line (`envoi router add|set|remove`,
the `operator_*` functions below).

Two settings outlive a project's `PUT` only while the route stays the same (host,
port, TLS and certificate checks, login): the password, which clients never see to
send back, and `allow_private_network`, which only the operator can set. Pointing a
router elsewhere therefore needs the password again, so that whoever holds the
project's API key cannot send the relay's secret to a server of their choosing.

The routing table and the transports are in `routers.routing`; the delivery contract
names them here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from envoi.core.errors import Conflict, Forbidden, Invalid, NotFound
from envoi.core.identity import IdentityError, normalize_email
from envoi.core.providers import PROVIDERS, normalize_domain
from envoi.db.base import utcnow
from envoi.db.lookup import get_owned, is_db_id
from envoi.routers.models import CapturedMessage, Router, RoutingRule
from envoi.routers.routing import (
    CAPTURE,
    RouterSpec,
    RoutingTable,
    UnusableTransport,
    make_transport,
    spec_of,
    visible_routers,
)
from envoi.routers.schemas import MxConfig, SmtpConfig, parse_config, stored_config

__all__ = [
    "CAPTURE",
    "RouterSpec",
    "RoutingTable",
    "UnusableTransport",
    "make_transport",
    "spec_of",
]

_CONFIG = ("body", "config")
_OPERATOR_ONLY = "allow_private_network"

# -- routers (the project's side: the API) ---------------------------------------------------


def list_routers(session: Session, project_id: int) -> list[Router]:
    return visible_routers(session, project_id)


def get_router(session: Session, project_id: int, router_id: int) -> Router:
    """A router the project may use: its own or a shared one."""
    router = session.get(Router, router_id) if is_db_id(router_id) else None
    if router is None or router.project_id not in (project_id, None):
        raise NotFound(f"router {router_id} not found")
    return router


def _own_router(session: Session, project_id: int, router_id: int) -> Router:
    router = get_router(session, project_id, router_id)
    if router.project_id is None:
        raise Forbidden(f"router {router_id} is shared; the operator manages it (envoi router)")
    return router


def create_router(
    session: Session,
    project_id: int | None,
    *,
    name: str,
    kind: str,
    config: dict[str, Any],
    is_default: bool = False,
    operator: bool = False,
) -> Router:
    """A new router of `project_id` (None: shared), its config checked for its kind.

    Only the operator (`operator=True`: the command line) may set `allow_private_network`.
    """
    parsed = parse_config(kind, config, _CONFIG)
    if not operator:
        _refuse_operator_only(config)
    _check_name(session, project_id, name)
    if is_default and project_id is None:
        raise Invalid("a shared router cannot be a project's default", ("body", "is_default"))
    if is_default:
        _clear_default(session, project_id)
    router = Router(
        project_id=project_id,
        name=name,
        kind=kind,
        config=stored_config(parsed),
        is_default=is_default,
    )
    session.add(router)
    session.flush()
    return router


def update_router(
    session: Session,
    project_id: int,
    router_id: int,
    *,
    name: str,
    kind: str,
    config: dict[str, Any],
    is_default: bool = False,
) -> Router:
    """Replace a project's router definition (the API's `PUT`).

    An omitted `password` keeps the stored one while the route is unchanged, and is
    required again (422) when it changed; `"password": null` removes it. The same
    goes for the operator's `allow_private_network`, which a project cannot set.
    """
    router = _own_router(session, project_id, router_id)
    parse_config(kind, config, _CONFIG)  # the request's own mistakes first
    parsed = parse_config(kind, _carried_over(router, kind, config), _CONFIG)
    if name != router.name:
        _check_name(session, project_id, name)
    if is_default and not router.is_default:
        _clear_default(session, project_id)
    router.name = name
    router.kind = kind
    router.config = stored_config(parsed)
    router.is_default = is_default
    router.updated_at = utcnow()
    session.flush()
    return router


def delete_router(session: Session, project_id: int, router_id: int) -> None:
    """Delete a router and the rules that use it."""
    _delete(session, _own_router(session, project_id, router_id))


def _carried_over(router: Router, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """`config` plus the stored settings a client cannot send back, as long as the
    route is the same; Invalid where the request cannot stand."""
    old: dict[str, Any] = dict(router.config or {})
    same_route = kind == router.kind and _route(kind, old) == _route(kind, config)
    new = dict(config)
    if "password" not in new and old.get("password") and new.get("username"):
        if not same_route:
            text = "give the password again: the host, port, TLS settings or username changed"
            raise Invalid(text, (*_CONFIG, "password"))
        new["password"] = old["password"]
    trusted = bool(old.get(_OPERATOR_ONLY)) and same_route
    if new.get(_OPERATOR_ONLY) and not trusted:
        _refuse_operator_only(new)
    if _OPERATOR_ONLY not in new and trusted:
        new[_OPERATOR_ONLY] = True
    return new


def _route(kind: str, config: dict[str, Any]) -> tuple[object, ...] | None:
    """Where and how a router's mail (and password) goes; None if it cannot be read."""
    try:
        parsed = parse_config(kind, config, _CONFIG)
    except Invalid:
        return None
    if isinstance(parsed, SmtpConfig):
        return (
            parsed.host.lower(),
            parsed.effective_port,
            parsed.tls,
            parsed.verify_certs,
            parsed.ca_file,
            parsed.username,
        )
    if isinstance(parsed, MxConfig):
        return (parsed.port,)
    return ()


def _refuse_operator_only(config: Mapping[str, Any]) -> None:
    if config.get(_OPERATOR_ONLY):
        text = (
            "only the operator may allow private addresses "
            "(envoi router set ID --allow-private-network)"
        )
        raise Invalid(text, (*_CONFIG, _OPERATOR_ONLY))


def _check_name(session: Session, project_id: int | None, name: str) -> None:
    scope = Router.project_id.is_(None) if project_id is None else Router.project_id == project_id
    taken = session.scalar(select(Router.id).where(scope, Router.name == name))
    if taken is not None:
        raise Conflict(f"a router named {name!r} already exists")


def _clear_default(session: Session, project_id: int | None) -> None:
    session.execute(
        update(Router)
        .where(Router.project_id == project_id, Router.is_default.is_(True))
        .values(is_default=False)
    )


def _delete(session: Session, router: Router) -> None:
    # Every project's rules: a shared router's are in other projects.
    session.execute(delete(RoutingRule).where(RoutingRule.router_id == router.id))
    session.delete(router)
    session.flush()


# -- routers (the operator's side: the command line) -----------------------------------------


def operator_router(session: Session, router_id: int) -> Router:
    """Any router, shared or a project's."""
    router = session.get(Router, router_id) if is_db_id(router_id) else None
    if router is None:
        raise NotFound(f"router {router_id} not found")
    return router


def operator_update(
    session: Session,
    router_id: int,
    *,
    name: str | None = None,
    changes: Mapping[str, Any] | None = None,
    is_default: bool | None = None,
) -> Router:
    """Change part of any router (`envoi router set`): the keys of `changes` replace
    the stored ones (None removes one, back to its default); the rest, password
    included, stays."""
    router = operator_router(session, router_id)
    config = {**(router.config or {}), **(changes or {})}
    config = {key: value for key, value in config.items() if value is not None}
    parsed = parse_config(router.kind, config, ("config",))
    if name is not None and name != router.name:
        _check_name(session, router.project_id, name)
        router.name = name
    if is_default is not None and is_default != router.is_default:
        if is_default and router.project_id is None:
            raise Invalid("a shared router cannot be a project's default", ("is_default",))
        if is_default:
            _clear_default(session, router.project_id)
        router.is_default = is_default
    router.config = stored_config(parsed)
    router.updated_at = utcnow()
    session.flush()
    return router


def operator_remove(session: Session, router_id: int) -> None:
    """Delete any router and every rule that uses it (`envoi router remove`)."""
    _delete(session, operator_router(session, router_id))


# -- rules -----------------------------------------------------------------------------


def list_rules(session: Session, project_id: int) -> list[RoutingRule]:
    query = (
        select(RoutingRule)
        .where(RoutingRule.project_id == project_id)
        .order_by(RoutingRule.position, RoutingRule.id)
    )
    return list(session.scalars(query))


def create_rule(
    session: Session,
    project_id: int,
    *,
    router_id: int,
    position: int = 0,
    campaign_id: int | None = None,
    message_type: str | None = None,
    domain: str | None = None,
    provider: str | None = None,
) -> RoutingRule:
    try:
        get_router(session, project_id, router_id)
    except NotFound as exc:
        raise Invalid(exc.message, ("body", "router_id")) from None
    if domain is not None:
        try:
            domain = normalize_domain(domain)  # the form recipients' domains have
        except ValueError:
            raise Invalid(f"{domain!r} is not a domain name", ("body", "domain")) from None
    if provider is not None and provider not in PROVIDERS:
        raise Invalid(f"unknown provider {provider!r}", ("body", "provider"))
    rule = RoutingRule(
        project_id=project_id,
        router_id=router_id,
        position=position,
        campaign_id=campaign_id,
        message_type=message_type,
        domain=domain,
        provider=provider,
    )
    session.add(rule)
    session.flush()
    return rule


def delete_rule(session: Session, project_id: int, rule_id: int) -> None:
    session.delete(get_owned(session, RoutingRule, project_id, rule_id, "routing rule"))
    session.flush()


# -- captured mail -----------------------------------------------------------------------


def list_captured(
    session: Session,
    project_id: int | None,
    *,
    limit: int,
    after_id: int | None = None,
    post: str | None = None,
    recipient: str | None = None,
) -> list[CapturedMessage]:
    """Newest first; pass the last id received as `after_id` for the next (older) page.

    `project_id` None lists every project's (the operator's `envoi captured`).
    """
    query = select(CapturedMessage)
    if project_id is not None:
        query = query.where(CapturedMessage.project_id == project_id)
    if after_id is not None:
        query = query.where(CapturedMessage.id < after_id)
    if post is not None:
        query = query.where(CapturedMessage.post == post)
    if recipient is not None:
        query = query.where(CapturedMessage.recipient == _address_form(recipient))
    return list(session.scalars(query.order_by(CapturedMessage.id.desc()).limit(limit)))


def _address_form(address: str) -> str:
    """An address as envelopes carry it (`core.identity`), or lower-cased if invalid."""
    try:
        return normalize_email(address)
    except IdentityError:
        return address.strip().lower()


def delete_captured(session: Session, project_id: int) -> int:
    """Forget every captured message of the project; how many there were."""
    count = session.scalar(select(func.count()).where(CapturedMessage.project_id == project_id))
    session.execute(delete(CapturedMessage).where(CapturedMessage.project_id == project_id))
    return int(count or 0)
