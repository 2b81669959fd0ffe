"""Seed 003's routes, thin over `statistics.sendstatistics`:

- `GET /mailer/sendstatistics?sort_field=id`: the project's mailings;
- `GET /mailer/sendstatistics/{id}?fields=...`: one mailing's statistics.

The credential is the project's API key as a bearer token (`Authorization: Bearer
KEY`), within the project's IP allowlist. Every error is `{"code": ..., "message":
"..."}`: the seed's own code where it gives one (20620), else the HTTP status.
Checked in this order: the key (401), the client's address (403), the query (400), the
mailing (404), the event store (503).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from envoi.core.errors import Invalid
from envoi.statistics.auth import Caller, caller_by_api_key
from envoi.statistics.query import UNAVAILABLE, StatisticsEngine
from envoi.statistics.sendstatistics import (
    FIELDS_ERROR,
    check_sort_field,
    fields_values,
    mailing_stats,
    mailings,
    owned_mailing,
    parse_fields,
)

router = APIRouter(tags=["statistics (seed 003)"])

FIELDS_CODE = 20620  # the seed's code for bad `fields`
NOT_FOUND = "Not found"


def error(status: int, message: str, code: int | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="envoi"'} if status == 401 else None
    return JSONResponse(
        {"code": status if code is None else code, "message": message},
        status_code=status,
        headers=headers,
    )


class Refused(Exception):
    """The request stops here with `answer`."""

    def __init__(self, answer: JSONResponse) -> None:
        super().__init__(answer.status_code)
        self.answer = answer


def bearer_key(request: Request) -> str | None:
    """The token of `Authorization: Bearer TOKEN`, None without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(request: Request) -> Caller:
    """The project of the request's API key, from an allowed address; else Refused."""
    key = bearer_key(request)
    if key is None:
        raise Refused(error(401, "API key is required: Authorization: Bearer KEY"))
    caller = caller_by_api_key(_sessions(request), key)
    if caller is None:
        raise Refused(error(401, "Invalid API key"))
    if not caller.allows(request.client.host if request.client else None):
        raise Refused(error(403, "API client IP not allowed"))
    return caller


def _sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessionmaker
    return sessions


@router.get("/mailer/sendstatistics", response_model=None)
def list_mailings(request: Request) -> JSONResponse | dict[str, Any]:
    """The project's mailings by id, each with its email's subject."""
    try:
        caller = authenticate(request)
        check_sort_field(request.query_params.getlist("sort_field"))
    except Refused as refused:
        return refused.answer
    except Invalid as invalid:
        return error(400, invalid.message)
    with _sessions(request)() as session:
        return {"statistics": mailings(session, caller.project_id)}


@router.get("/mailer/sendstatistics/{mailing_id}", response_model=None)
def view_mailing(mailing_id: str, request: Request) -> JSONResponse | dict[str, Any]:
    """One mailing's statistics, the `fields` asked for (default `["id"]`)."""
    try:
        caller = authenticate(request)
        fields = parse_fields(fields_values(request.query_params.multi_items()))
    except Refused as refused:
        return refused.answer
    except Invalid:
        return error(400, FIELDS_ERROR, FIELDS_CODE)
    with _sessions(request)() as session:
        campaign_id = owned_mailing(session, caller.project_id, mailing_id)
    if campaign_id is None:
        return error(404, NOT_FOUND)
    store = request.app.state.event_store
    if store is None:  # the id alone needs no statistics
        return {"id": campaign_id} if fields == ("id",) else error(503, UNAVAILABLE)
    return mailing_stats(StatisticsEngine(store), caller.project_id, campaign_id, fields)
