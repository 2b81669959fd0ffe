"""`/api/v1/campaigns`, `/api/v1/ab-campaigns`, `/api/v1/automated-campaigns`.

One router, three path families built from one table: each family lists, creates,
reads and rewrites its own type and runs the start / pause / resume / archive
actions. A campaign of another type is a 404 under a family's path.
"""

# No `from __future__ import annotations`: the handlers are closures, and FastAPI must
# evaluate their annotations (which name closure variables) where they are defined.

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from starlette.types import Scope

from envoi.automation import api as automation_api
from envoi.campaigns import abtests, services
from envoi.campaigns.forms import body_reader, openapi_body
from envoi.campaigns.models import Campaign
from envoi.campaigns.schemas import (
    INPUT_MODELS,
    OUTPUT_MODELS,
    ABCampaignOut,
    AutomatedCampaignOut,
    CampaignConfig,
    CampaignIn,
    RegularCampaignOut,
    to_spec,
)
from envoi.campaigns.spec import PostType
from envoi.core.campaign_states import Action
from envoi.db.base import utcnow
from envoi.sends import services as sends
from envoi.sends.schemas import CampaignTestIn, CampaignTestOut
from envoi.web.deps import CurrentProject, Db

_WRITE_PATH = re.compile(r"^/api/v1/(campaigns|ab-campaigns|automated-campaigns)(/[^/]+)?$")


def is_campaign_write(scope: Scope) -> bool:
    """A create or rewrite, whose body may carry files up to forms.MAX_UPLOAD_BYTES."""
    return scope["method"] in {"POST", "PUT"} and bool(_WRITE_PATH.match(scope["path"]))


router = APIRouter()

FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("/campaigns", PostType.REGULAR, "campaigns"),
    ("/ab-campaigns", PostType.AB, "ab-campaigns"),
    ("/automated-campaigns", PostType.AUTOMATED, "automated-campaigns"),
)
# `list[model]` built statically: mypy accepts no type made from a variable.
LIST_MODELS: dict[str, Any] = {
    PostType.REGULAR: list[RegularCampaignOut],
    PostType.AB: list[ABCampaignOut],
    PostType.AUTOMATED: list[AutomatedCampaignOut],
}
ACTIONS = (Action.START, Action.PAUSE, Action.RESUME, Action.ARCHIVE)

_COMMON = (
    "id",
    "project_id",
    "post",
    "post_type",
    "message_type",
    "message_id",
    "source_type",
    "source_id",
    "config",
    "tags",
    "priority",
    "start_immediately",
    "state",
    "spooler_token",
    "created_at",
    "updated_at",
    "started_at",
)
_TYPED: dict[str, tuple[str, ...]] = {
    PostType.REGULAR: ("planned_at", "send_during_hours"),
    PostType.AB: (
        "planned_at",
        "send_during_hours",
        "ab_message_ids",
        "ab_percent",
        "win_parameter",
        "test_planned_at",
        "main_planned_at",
        "ab_phase",
        "ab_winner",
        "ab_decided_at",
    ),
    PostType.AUTOMATED: ("active", "trigger", "crontab", "run_from", "run_to"),
}


def _out(campaign: Campaign, view: dict[str, Any]) -> dict[str, Any]:
    body = {key: getattr(campaign, key) for key in (*_COMMON, *_TYPED[campaign.post_type])}
    # Defaults first: a key added to the config table later shows on older campaigns too.
    body["config"] = CampaignConfig().model_dump() | campaign.config
    body["audience"] = view["audience"]
    if campaign.post_type == PostType.AB:
        body["ab_variants"] = abtests.variants_view(campaign)
        body["ab_main_at"] = abtests.main_start(campaign) if campaign.ab_phase else None
    if campaign.post_type != PostType.AUTOMATED:
        for name, stored in view["files"].items():
            body[name] = (
                None if stored is None else {"filename": stored.filename, "size": stored.size}
            )
    return body


def _answer(db: Db, campaigns: list[Campaign]) -> list[dict[str, Any]]:
    return [
        _out(c, v) for c, v in zip(campaigns, services.campaign_view(db, campaigns), strict=True)
    ]


def _add_family(prefix: str, post_type: str, tag: str) -> None:
    in_model = INPUT_MODELS[post_type]
    out_model = OUTPUT_MODELS[post_type]
    read_body = Depends(body_reader(in_model))
    extra = openapi_body(in_model)

    def list_campaigns(project: CurrentProject, db: Db) -> list[dict[str, Any]]:
        return _answer(db, services.list_campaigns(db, project.id, post_type))

    def create_campaign(
        project: CurrentProject, db: Db, body: Annotated[CampaignIn, read_body]
    ) -> dict[str, Any]:
        campaign = services.create_campaign(db, project.id, to_spec(body, post_type))
        db.commit()
        return _answer(db, [campaign])[0]

    def get_campaign(campaign_id: int, project: CurrentProject, db: Db) -> dict[str, Any]:
        return _answer(db, [services.get_campaign(db, project.id, post_type, campaign_id)])[0]

    def rewrite_campaign(
        campaign_id: int, project: CurrentProject, db: Db, body: Annotated[CampaignIn, read_body]
    ) -> dict[str, Any]:
        spec = to_spec(body, post_type, rewrite=True)
        campaign = services.rewrite_campaign(db, project.id, campaign_id, spec)
        db.commit()
        return _answer(db, [campaign])[0]

    router.add_api_route(
        prefix,
        list_campaigns,
        methods=["GET"],
        response_model=LIST_MODELS[post_type],
        tags=[tag],
        name=f"list_{tag}",
    )
    router.add_api_route(
        prefix,
        create_campaign,
        methods=["POST"],
        response_model=out_model,
        tags=[tag],
        status_code=status.HTTP_201_CREATED,
        openapi_extra=extra,
        name=f"create_{tag}",
    )
    router.add_api_route(
        prefix + "/{campaign_id}",
        get_campaign,
        methods=["GET"],
        response_model=out_model,
        tags=[tag],
        name=f"get_{tag}",
    )
    router.add_api_route(
        prefix + "/{campaign_id}",
        rewrite_campaign,
        methods=["PUT"],
        response_model=out_model,
        tags=[tag],
        openapi_extra=extra,
        name=f"rewrite_{tag}",
    )
    for action in ACTIONS:
        router.add_api_route(
            f"{prefix}/{{campaign_id}}/{action.value}",
            _action_handler(post_type, action),
            methods=["POST"],
            response_model=out_model,
            tags=[tag],
            name=f"{action.value}_{tag}",
        )


def _action_handler(
    post_type: str, action: Action
) -> Callable[[int, CurrentProject, Db], dict[str, Any]]:
    def run_action(campaign_id: int, project: CurrentProject, db: Db) -> dict[str, Any]:
        campaign = services.act(db, project.id, post_type, campaign_id, action=action)
        db.commit()
        return _answer(db, [campaign])[0]

    run_action.__doc__ = f"{action.value.capitalize()} the campaign (409 if its state forbids it)."
    return run_action


def _add_test_route(prefix: str, post_type: str, tag: str) -> None:
    """`POST {prefix}/{id}/test`: the campaign's email to a few addresses now, as post
    type T (docs/api-send.md), in any state of the campaign."""

    def send_tests(
        campaign_id: int, body: CampaignTestIn, project: CurrentProject, db: Db
    ) -> dict[str, Any]:
        spec = body.to_spec()
        answer = sends.send_tests(db, project.id, post_type, campaign_id, spec, now=utcnow())
        db.commit()
        return answer

    router.add_api_route(
        f"{prefix}/{{campaign_id}}/test",
        send_tests,
        methods=["POST"],
        response_model=CampaignTestOut,
        status_code=status.HTTP_201_CREATED,
        tags=[tag],
        name=f"test_{tag}",
    )


for _prefix, _post_type, _tag in FAMILIES:
    _add_family(_prefix, _post_type, _tag)
    _add_test_route(_prefix, _post_type, _tag)

# A triggered automated campaign's firings (docs/campaigns-automated.md).
router.include_router(automation_api.router)
