"""`/api/v1/routers`: routers and routing rules.

Exported with `/api/v1/captured` (`routers.captured`) as one `router`, so the
application composes the package in one line.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from envoi.routers import services
from envoi.routers.captured import router as captured_router
from envoi.routers.models import Router, RoutingRule
from envoi.routers.schemas import RouterIn, RouterOut, RuleIn, RuleOut, shown_config
from envoi.web.deps import CurrentProject, Db

routers_router = APIRouter(prefix="/routers", tags=["routers"])


def _router_out(router: Router) -> dict[str, Any]:
    shared = router.project_id is None
    return {
        "id": router.id,
        "name": router.name,
        "kind": router.kind,
        # A shared router's settings (internal hosts, logins, server paths) are the
        # operator's: projects see that it exists, not how it is set up.
        "config": {} if shared else shown_config(router.config or {}),
        "is_default": router.is_default,
        "shared": shared,
        "created_at": router.created_at,
        "updated_at": router.updated_at,
    }


def _rule_out(rule: RoutingRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "router_id": rule.router_id,
        "position": rule.position,
        "campaign_id": rule.campaign_id,
        "message_type": rule.message_type,
        "domain": rule.domain,
        "provider": rule.provider,
        "created_at": rule.created_at,
    }


# Rules first: `/routers/rules` must not be taken for a router id.


@routers_router.get("/rules", response_model=list[RuleOut])
def list_rules(project: CurrentProject, db: Db) -> list[dict[str, Any]]:
    """The project's rules in the order they are tried."""
    return [_rule_out(rule) for rule in services.list_rules(db, project.id)]


@routers_router.post("/rules", response_model=RuleOut, status_code=status.HTTP_201_CREATED)
def create_rule(body: RuleIn, project: CurrentProject, db: Db) -> dict[str, Any]:
    rule = services.create_rule(db, project.id, **body.model_dump())
    db.commit()
    return _rule_out(rule)


@routers_router.delete("/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(rule_id: int, project: CurrentProject, db: Db) -> Response:
    services.delete_rule(db, project.id, rule_id)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@routers_router.get("", response_model=list[RouterOut])
def list_routers(project: CurrentProject, db: Db) -> list[dict[str, Any]]:
    """The project's routers and the shared ones (`"shared": true`), oldest first."""
    return [_router_out(router) for router in services.list_routers(db, project.id)]


@routers_router.post("", response_model=RouterOut, status_code=status.HTTP_201_CREATED)
def create_router(body: RouterIn, project: CurrentProject, db: Db) -> dict[str, Any]:
    router = services.create_router(db, project.id, **body.model_dump())
    db.commit()
    return _router_out(router)


@routers_router.get("/{router_id}", response_model=RouterOut)
def get_router(router_id: int, project: CurrentProject, db: Db) -> dict[str, Any]:
    return _router_out(services.get_router(db, project.id, router_id))


@routers_router.put("/{router_id}", response_model=RouterOut)
def update_router(
    router_id: int, body: RouterIn, project: CurrentProject, db: Db
) -> dict[str, Any]:
    router = services.update_router(db, project.id, router_id, **body.model_dump())
    db.commit()
    return _router_out(router)


@routers_router.delete("/{router_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_router(router_id: int, project: CurrentProject, db: Db) -> Response:
    services.delete_router(db, project.id, router_id)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


router = APIRouter()
router.include_router(routers_router)
router.include_router(captured_router)
