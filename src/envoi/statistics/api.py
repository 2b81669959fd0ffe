"""HTTP routes of the compatible statistics surfaces, thin over `messages` and `tags`:

- seed 001: `POST /api/1.5/`, JSON-RPC, method `get_message_stats` with
  `[API_KEY, {conditions}]` (`jsonrpc` holds the envelope);
- seed 004: `GET /v1/stats/{tag}?access_token=...`.

Both authenticate with a project token (`auth`), honour the project's IP allowlist,
and read the event store on `app.state.event_store` through the query layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker

from envoi.core.errors import Invalid, NotFound
from envoi.statistics import jsonrpc
from envoi.statistics.auth import caller_by_access_token, caller_by_api_key
from envoi.statistics.jsonrpc import API_ERROR, INVALID_PARAMS, SERVER_ERROR, RpcError
from envoi.statistics.messages import message_stats, parse_conditions, select_recipients
from envoi.statistics.query import UNAVAILABLE, StatisticsEngine
from envoi.statistics.tags import tag_stats

jsonrpc_router = APIRouter(tags=["statistics (seed 001)"])
tags_router = APIRouter(tags=["statistics (seed 004)"])


def _engine(request: Request) -> StatisticsEngine | None:
    """None when the server runs without its event store (another process holds it)."""
    store = request.app.state.event_store
    return None if store is None else StatisticsEngine(store)


def _client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass(frozen=True)
class RpcContext:
    sessions: sessionmaker[Session]
    engine: StatisticsEngine | None
    client_host: str | None


def get_message_stats(context: RpcContext, params: Any) -> dict[str, dict[str, int]]:
    """`[API_KEY, {"message": ..., "grouping": ..., "created_on": {...}}]` → the seed's
    result; errors in the order the API checks them: params, key, address, message."""
    if not (isinstance(params, list) and len(params) == 2 and isinstance(params[1], dict)):
        raise RpcError(INVALID_PARAMS, "Invalid params")
    api_key, conditions = params
    caller = caller_by_api_key(context.sessions, api_key) if isinstance(api_key, str) else None
    if caller is None:
        raise RpcError(API_ERROR, "API key verification failed")
    if not caller.allows(context.client_host):
        raise RpcError(API_ERROR, "API client IP not allowed")
    try:
        request = parse_conditions(conditions)
        with context.sessions() as session:
            selection = select_recipients(session, caller.project_id, request)
    except NotFound as error:
        raise RpcError(API_ERROR, error.message) from None
    except Invalid:
        raise RpcError(INVALID_PARAMS, "Invalid params") from None
    if context.engine is None:
        raise RpcError(SERVER_ERROR, UNAVAILABLE)
    # The query the mapping builds is always valid: an error past here is a bug.
    return message_stats(context.engine, caller.project_id, selection)


@jsonrpc_router.post("/api/1.5/", response_model=None)
@jsonrpc_router.post("/api/1.5", response_model=None, include_in_schema=False)
async def rpc(request: Request) -> Response:
    """Seed 001's JSON-RPC endpoint (1.0 and 2.0, batches, notifications)."""
    body = await request.body()
    context = RpcContext(request.app.state.sessionmaker, _engine(request), _client_host(request))
    methods = {"get_message_stats": partial(get_message_stats, context)}
    # The OLTP and event store reads block: off the event loop.
    answer = await run_in_threadpool(jsonrpc.handle, body, methods)
    if answer is None:
        return Response(status_code=204)  # notifications only: nothing to answer
    return JSONResponse(answer)


@tags_router.get("/v1/stats/{tag}", response_model=None)
def tag_statistics(
    tag: str,
    request: Request,
    access_token: Annotated[str | None, Query()] = None,
) -> JSONResponse | dict[str, Any]:
    """Seed 004: first, last, opens, clicks, messages and deliveries of a tag."""
    if not access_token:
        return JSONResponse({"error": "access_token is required"}, status_code=401)
    caller = caller_by_access_token(request.app.state.sessionmaker, access_token)
    if caller is None:
        return JSONResponse({"error": "invalid access_token"}, status_code=401)
    if not caller.allows(_client_host(request)):
        return JSONResponse({"error": "API client IP not allowed"}, status_code=403)
    engine = _engine(request)
    if engine is None:
        return JSONResponse({"error": UNAVAILABLE}, status_code=503)
    return tag_stats(engine, caller.project_id, tag)
